"""Crop planning (crops.py): each slot's source window, drawn on the host per batch."""

import math

import numpy as np
import pytest

from mixtrain_dali.crops import CropPlanner, relative_window

CANVAS = (64, 64)


def _planner(**kw):
    args = dict(scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), canvas=CANVAS, seed=0)
    args.update(kw)
    return CropPlanner(**args)


def test_unmixed_windows_follow_random_resized_crop_ranges():
    tiles = np.tile([64, 64], (4000, 1))
    w = _planner().draw(0, 0, tiles)
    area, ratio, uy, ux = w.T
    assert w.dtype == np.float32 and w.shape == (4000, 4)
    assert area.min() >= 0.35 and area.max() <= 1.0 and abs(area.mean() - 0.675) < 0.02
    assert ratio.min() >= 3 / 4 - 1e-6 and ratio.max() <= 4 / 3 + 1e-6
    assert abs(np.log(ratio).mean()) < 0.02  # log-uniform, symmetric around 1
    assert 0 <= uy.min() and uy.max() <= 1 and 0 <= ux.min() and ux.max() <= 1


def test_draws_are_a_pure_function_of_seed_epoch_and_batch():
    tiles = np.array([[32, 32], [64, 64], [32, 16]])
    a = _planner().draw(3, 7, tiles)
    np.testing.assert_array_equal(a, _planner().draw(3, 7, tiles))
    assert not np.array_equal(a, _planner().draw(3, 8, tiles))
    assert not np.array_equal(a, _planner().draw(4, 7, tiles))
    assert not np.array_equal(a, _planner(seed=1).draw(3, 7, tiles))


@pytest.mark.parametrize("tile_scale", [0.0, 0.5, 1.0])
def test_tile_windows_take_the_tile_shape_and_scaled_area(tile_scale):
    tiles = np.array([[64, 64], [48, 16], [16, 48], [32, 32]] * 500)
    share = tiles[:, 0] * tiles[:, 1] / (64 * 64)
    plain = _planner(tile_aspect=False, tile_scale=0.0).draw(0, 0, tiles)
    w = _planner(tile_aspect=True, tile_scale=tile_scale).draw(0, 0, tiles)
    full = share == 1
    np.testing.assert_array_equal(w[full], plain[full])  # unmixed slots are unchanged
    np.testing.assert_allclose(w[~full, 1], tiles[~full, 1] / tiles[~full, 0], rtol=1e-6)
    np.testing.assert_allclose(w[~full, 0], plain[~full, 0] * share[~full] ** tile_scale, rtol=1e-5)


def test_without_tile_aspect_tiles_keep_the_random_ratio():
    tiles = np.array([[48, 16]] * 100)
    w = _planner(tile_aspect=False, tile_scale=1.0).draw(0, 0, tiles)
    assert (w[:, 1] <= 4 / 3 + 1e-6).all()  # a 3:1 tile still gets a near-square window


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
