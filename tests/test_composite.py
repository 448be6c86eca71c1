"""Composites built by the real DALI graph, checked pixel by pixel against a reference.

Constituents are 64x64 PNGs with known content (red = horizontal ramp, green = vertical
ramp, blue = the constituent's identity). The random crop is pinned to the whole image
(area 1, aspect 1 on square images), so each tile must equal PIL's bilinear (antialiased)
resize of its source to the tile size, mirrored when the plan says so, at its rectangle.
Tolerance: at most 2 grey levels (of 255) per pixel; DALI's linear antialiased resize and
PIL's bilinear agree within 1 level on such images.
"""

import numpy as np
import pytest
from PIL import Image

from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD
from mixtrain_dali.crops import CropPlanner, relative_window
from mixtrain_dali.dataset import PathList
from mixtrain_dali.layout import layout
from mixtrain_dali.pipelines import train_pipeline
from mixtrain_dali.plan import EpochPlan
from mixtrain_dali.source import PlanSource

TOL = 2.0
CANVAS = 96
N_IMAGES = 8


@pytest.fixture(scope="module")
def ramp_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("ramps")
    yy, xx = np.mgrid[0:64, 0:64]
    paths, arrays = [], []
    for i in range(N_IMAGES):
        img = np.stack([xx * 3 + i, yy * 3 + 2 * i, np.full_like(xx, 20 + 28 * i)], -1)  # no wrap-around
        img = img.astype(np.uint8)
        path = str(root / f"c{i}.png")
        Image.fromarray(img).save(path)
        paths.append(path)
        arrays.append(img)
    return paths, arrays


def _path_list(paths):
    return PathList.from_strings("", paths)


def _plan(groups, share_sets, flips):
    """One composite per group; shares per group; flips per (group, constituent)."""
    k_max = max(len(g) for g in groups)
    n = len(groups)
    members = np.full((n, k_max), -1, np.int64)
    boxes = np.zeros((n, k_max, 4), np.int32)
    shares = np.zeros((n, k_max), np.float32)
    fl = np.zeros((n, k_max), np.uint8)
    for c, (g, s, f) in enumerate(zip(groups, share_sets, flips)):
        members[c, :len(g)] = g
        boxes[c, :len(g)] = layout(np.array(s, float), CANVAS, CANVAS, CANVAS // 8)
        shares[c, :len(g)] = s
        fl[c, :len(g)] = f
    return EpochPlan(0, (CANVAS, CANVAS), members, boxes, shares, fl)


WHOLE = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))


def _run(plan, paths, device, crops=None):
    source = PlanSource(_path_list(paths), mixing=True, crops=crops or CropPlanner(**WHOLE))
    source.start(plan, [np.arange(plan.n_composites)])
    pipe = train_pipeline(source=source, device=device, image_size=CANVAS,
                          mixing=True, batch_size=plan.n_composites * plan.k_max,
                          num_threads=2, device_id=0 if device == "gpu" else None, seed=1)
    pipe.build()
    (out,) = pipe.run()
    if device == "gpu":
        out = out.as_cpu()
    canvases = np.array(out.as_tensor())[:plan.n_composites]
    return canvases * (255 * np.array(IMAGENET_STD)) + 255 * np.array(IMAGENET_MEAN)


def _expected(plan, arrays):
    ref = np.full((plan.n_composites, CANVAS, CANVAS, 3), np.nan)
    for c in range(plan.n_composites):
        for j in np.flatnonzero(plan.members[c] >= 0):
            y, x, h, w = plan.boxes[c, j]
            tile = np.asarray(Image.fromarray(arrays[plan.members[c, j]]).resize((int(w), int(h)), Image.BILINEAR))
            if plan.flips[c, j]:
                tile = tile[:, ::-1]
            assert np.isnan(ref[c, y:y + h, x:x + w]).all(), "layout overlaps"
            ref[c, y:y + h, x:x + w] = tile
    assert not np.isnan(ref).any(), "layout leaves canvas pixels uncovered"
    return ref


CASES = {
    "k1": ([[3]], [[1.0]], [[0]]),
    "k1_flipped": ([[5]], [[1.0]], [[1]]),
    "k2_equal": ([[0, 1]], [[0.5, 0.5]], [[0, 1]]),
    "k2_uneven": ([[2, 6]], [[0.7, 0.3]], [[1, 0]]),
    "k3_uneven": ([[1, 4, 7]], [[0.5, 0.3, 0.2]], [[1, 1, 0]]),
    "k4_equal": ([[0, 1, 2, 3]], [[0.25] * 4], [[0, 1, 0, 1]]),
    "k4_uneven": ([[7, 5, 3, 1]], [[0.4, 0.1, 0.3, 0.2]], [[1, 0, 0, 1]]),
    # a batch mixing composites of 1..4 constituents, heads first, donors after
    "batch_mixed_k": ([[0], [1, 2], [3, 4, 5], [6, 7, 0, 1]],
                      [[1.0], [0.6, 0.4], [0.2, 0.5, 0.3], [0.1, 0.2, 0.3, 0.4]],
                      [[1], [0, 1], [1, 0, 1], [0, 0, 1, 1]]),
}


def _check(device, case, ramp_images):
    paths, arrays = ramp_images
    plan = _plan(*CASES[case])
    got = _run(plan, paths, device)
    ref = _expected(plan, arrays)
    err = np.abs(got - ref)
    assert err.max() <= TOL, f"max error {err.max():.2f} grey levels (mean {err.mean():.3f})"


@pytest.mark.parametrize("case", sorted(CASES))
def test_composite_tiles_match_reference_cpu(case, ramp_images):
    _check("cpu", case, ramp_images)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_composite_tiles_match_reference_gpu(case, ramp_images):
    _check("gpu", case, ramp_images)


def test_flipping_a_tile_never_moves_it(ramp_images):
    """Same plan with and without flips: each tile stays in its rectangle (blue channel,
    the identity, is unchanged everywhere); only the red ramp inside a flipped tile reverses."""
    paths, _ = ramp_images
    groups, shares, _ = CASES["k4_uneven"]
    plain = _run(_plan(groups, shares, [[0, 0, 0, 0]]), paths, "cpu")
    flipped_plan = _plan(groups, shares, [[1, 1, 1, 1]])
    flipped = _run(flipped_plan, paths, "cpu")
    assert np.abs(plain[..., 2] - flipped[..., 2]).max() <= TOL
    for y, x, h, w in flipped_plan.boxes[0]:
        np.testing.assert_allclose(flipped[0, y:y + h, x:x + w, 0], plain[0, y:y + h, x:x + w, 0][:, ::-1],
                                   atol=TOL)


def test_unmixed_composite_equals_plain_pipeline(ramp_images):
    """A composite of one takes exactly the baseline path (the paste is an exact copy)."""
    paths, _ = ramp_images
    plan = _plan([[2], [4]], [[1.0], [1.0]], [[1], [0]])
    mixed = _run(plan, paths, "cpu")
    source = PlanSource(_path_list(paths), mixing=False, crops=CropPlanner(**WHOLE))
    source.start(plan, [np.arange(2)])
    pipe = train_pipeline(source=source, device="cpu", image_size=CANVAS,
                          mixing=False, batch_size=2, num_threads=1, device_id=None, seed=1)
    pipe.build()
    (out,) = pipe.run()
    plain = np.array(out.as_tensor()) * (255 * np.array(IMAGENET_STD)) + 255 * np.array(IMAGENET_MEAN)
    np.testing.assert_array_equal(mixed, plain)


def test_each_tile_shows_the_window_drawn_for_it(ramp_images):
    """Each tile shows the window CropPlanner drew for it, squashed into the tile: on the
    ramps (red = 3 x source column, green = 3 x source row) a tile's mean colour gives the
    window's centre and its red/green span the window's width/height, each within about a
    pixel (3 grey levels)."""
    paths, _ = ramp_images
    groups, shares, flips = CASES["k4_uneven"]
    plan = _plan(groups, shares, [[0, 0, 0, 0]])
    crops = CropPlanner((0.3, 1.0), (3 / 4, 4 / 3), seed=3)
    got = _run(plan, paths, "cpu", crops)
    tiles = plan.boxes[0]
    windows = crops.draw(0, 0, len(tiles))
    start, shape = relative_window(windows, np.full((4, 2), 64))
    for j, (y, x, h, w) in enumerate(tiles):
        i = plan.members[0, j]
        tile = got[0, y:y + h, x:x + w]
        (y0, x0), (wh, ww) = start[j] * 64, shape[j] * 64
        assert abs(tile[..., 0].mean() - (3 * (x0 + ww / 2 - 0.5) + i)) <= 3.5
        assert abs(tile[..., 1].mean() - (3 * (y0 + wh / 2 - 0.5) + 2 * i)) <= 3.5
        span_x, span_y = np.ptp(tile[..., 0].mean(0)) / 3, np.ptp(tile[..., 1].mean(1)) / 3
        assert abs(span_x - ww * (1 - 1 / w)) <= 1.5 and abs(span_y - wh * (1 - 1 / h)) <= 1.5
