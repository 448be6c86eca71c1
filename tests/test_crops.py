"""Crop planning (crops.py): each slot's source window, drawn on the host per batch."""

import math

import numpy as np
import pytest

from mixtrain_dali.crops import CropPlanner, relative_window

def _planner(**kw):
    args = dict(scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), seed=0)
    args.update(kw)
    return CropPlanner(**args)


def test_unmixed_windows_follow_random_resized_crop_ranges():
    w = _planner().draw(0, 0, 4000)
    area, ratio, uy, ux = w.T
    assert w.dtype == np.float32 and w.shape == (4000, 4)
    assert area.min() >= 0.35 and area.max() <= 1.0 and abs(area.mean() - 0.675) < 0.02
    assert ratio.min() >= 3 / 4 - 1e-6 and ratio.max() <= 4 / 3 + 1e-6
    assert abs(np.log(ratio).mean()) < 0.02  # log-uniform, symmetric around 1
    assert 0 <= uy.min() and uy.max() <= 1 and 0 <= ux.min() and ux.max() <= 1


def test_draws_are_a_pure_function_of_seed_epoch_and_batch():
    a = _planner().draw(3, 7, 3)
    np.testing.assert_array_equal(a, _planner().draw(3, 7, 3))
    assert not np.array_equal(a, _planner().draw(3, 8, 3))
    assert not np.array_equal(a, _planner().draw(4, 7, 3))
    assert not np.array_equal(a, _planner(seed=1).draw(3, 7, 3))


def test_relative_window_has_the_asked_area_and_pixel_ratio():
    window = np.array([[0.25, 2.0, 0.5, 0.5], [0.5, 0.75, 0.0, 1.0]])
    hw = np.array([[300, 400], [100, 50]])
    start, shape = relative_window(window, hw)
    px = shape * hw
    np.testing.assert_allclose(px[:, 0] * px[:, 1], window[:, 0] * hw[:, 0] * hw[:, 1], rtol=1e-9)
    np.testing.assert_allclose(px[:, 1] / px[:, 0], window[:, 1], rtol=1e-9)
    assert (start >= 0).all() and (start + shape <= 1 + 1e-12).all()
    np.testing.assert_allclose(start[0], (1 - shape[0]) / 2)  # u = 0.5: centred
    assert start[1, 0] == 0 and math.isclose(start[1, 1] + shape[1, 1], 1.0)


def test_a_window_too_large_for_the_image_shrinks_and_keeps_its_ratio():
    # area 1 at ratio 3 on a square image cannot fit: it becomes the widest 3:1 strip
    start, shape = relative_window(np.array([[1.0, 3.0, 0.5, 0.5]]), np.array([[90, 90]]))
    np.testing.assert_allclose(shape[0], [1 / 3, 1.0])
    np.testing.assert_allclose(start[0], [1 / 3, 0.0])


# -- tries > 1: torchvision's rule (the first of N draws that fits) ---------------------------
def test_tries_draw_candidates_whose_first_is_the_single_draw():
    one = _planner().draw(2, 5, 3)
    many = _planner(tries=10).draw(2, 5, 3)
    assert one.shape == (3, 4) and many.shape == (3, 10, 4)
    np.testing.assert_array_equal(many[:, 0], one)            # same first draw, same position
    assert (many[:, :, 2:] == many[:, :1, 2:]).all()          # one position per slot
    assert len(np.unique(many[0, :, 0])) == 10                # ten different areas


def test_relative_window_takes_the_first_candidate_that_fits_else_shrinks_the_first():
    hw = np.array([[100, 100]])
    too_big, fits, also_fits = [1.0, 3.0, 0.5, 0.5], [0.25, 1.0, 0.5, 0.5], [0.5, 1.0, 0.5, 0.5]
    start, shape = relative_window(np.array([[too_big, fits, also_fits]]), hw)
    np.testing.assert_allclose(shape[0], [0.5, 0.5])          # `fits`, not the later one
    np.testing.assert_allclose(start[0], [0.25, 0.25])
    start, shape = relative_window(np.array([[too_big, too_big]]), hw)
    np.testing.assert_allclose(shape[0], [1 / 3, 1.0])        # none fits: the first, shrunk
    # a single candidate is the shrink rule itself
    np.testing.assert_allclose(relative_window(np.array([too_big]), hw)[1], shape)


def test_the_graph_picks_the_same_windows_as_its_numpy_twin(tmp_path):
    """Within 1e-6 in float64; equal in float32."""
    from nvidia.dali import fn, pipeline_def
    from PIL import Image

    from mixtrain_dali.crops import window_rows
    from mixtrain_dali.pipelines import crop_window

    sizes = [(40, 200), (200, 40), (120, 120), (90, 60), (33, 47), (300, 100)]
    files = []
    for i, (h, w) in enumerate(sizes):
        files.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (w, h), (i * 30, 80, 160)).save(files[-1])
    for tries in (1, 10):
        windows = CropPlanner((0.08, 1.0), (3 / 4, 4 / 3), seed=3, tries=tries).draw(0, 0, len(files))
        rows = window_rows(windows)

        @pipeline_def
        def graph(known):
            encoded = fn.io.file.read(fn.external_source(
                source=lambda: [np.frombuffer(f.encode(), np.uint8) for f in files], batch=True))
            return crop_window(encoded, fn.external_source(source=lambda: rows, batch=True), known)

        outs = []
        for known in (None, tries):  # the general graph, and the one made for `tries` candidates
            pipe = graph(known, batch_size=len(files), num_threads=1, device_id=None)
            pipe.build()
            outs.append([np.stack([np.array(t[i]) for i in range(len(files))]) for t in pipe.run()])
        np.testing.assert_array_equal(outs[0][0], outs[1][0])
        np.testing.assert_array_equal(outs[0][1], outs[1][1])
        start, shape = outs[0]
        want_start, want_shape = relative_window(windows, np.array(sizes))
        np.testing.assert_allclose(shape, want_shape, atol=1e-6)
        np.testing.assert_allclose(start, want_start, atol=1e-6)
        # in float32 the twin is the graph bit for bit: the loader's host windows (source.py)
        host_start, host_shape = relative_window(windows, np.array(sizes), np.float32)
        assert host_start.dtype == host_shape.dtype == np.float32
        np.testing.assert_array_equal(host_shape, shape)
        np.testing.assert_array_equal(host_start, start)
        assert (shape <= 1 + 1e-6).all() and (start + shape <= 1 + 1e-6).all()


def test_more_tries_keep_fewer_large_windows():
    # on a square image a window of area a fits only if a <= min(r, 1 / r): shrinking keeps the
    # large draws large, rejection draws again (torchvision), so the mean area drops
    windows = {t: _planner(scale=(0.08, 1.0), tries=t).draw(0, 0, 4000) for t in (1, 10)}
    hw = np.tile([100, 100], (4000, 1))
    area = {t: np.prod(relative_window(w, hw)[1], axis=1).mean() for t, w in windows.items()}
    assert area[10] < area[1] - 0.02
