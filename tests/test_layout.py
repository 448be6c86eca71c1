"""Slice-and-dice layout: exact cover, min_side, documented area bound, vectorised == per row."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixtrain_dali.errors import UserError
from mixtrain_dali.layout import layout, layout_batch, tile_depths

SETTINGS = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------------ independent reference

def _reference(shares, height, width, min_side):
    """Plain recursive per-row implementation of the documented rule.

    Returns (rects, clamped): rects[j] = (y, x, h, w); clamped[j] is True when a min_side clamp
    moved a cut on the path to tile j (the area bound is only promised otherwise).
    """
    shares = [float(s) for s in shares]
    rects, clamped = [None] * len(shares), [False] * len(shares)

    def need(group, other):
        return min_side if group == 1 or other >= 2 * min_side else 2 * min_side

    def split(rect, idx, was_clamped):
        if len(idx) == 1:
            rects[idx[0]], clamped[idx[0]] = rect, was_clamped
            return
        y, x, h, w = rect
        half = (len(idx) + 1) // 2
        a, b = idx[:half], idx[half:]
        # Same float operations as the implementation, so exact .5 ties round alike.
        share_a = sum(shares[j] for j in a)
        frac = share_a / (share_a + sum(shares[j] for j in b))
        cut_w = w >= h
        length, other = (w, h) if cut_w else (h, w)
        raw = int(np.floor(length * frac + 0.5))
        pos = min(max(raw, need(len(a), other)), length - need(len(b), other))
        now = was_clamped or pos != raw
        if cut_w:
            split((y, x, h, pos), a, now)
            split((y, x + pos, h, w - pos), b, now)
        else:
            split((y, x, pos, w), a, now)
            split((y + pos, x, h - pos, w), b, now)

    split((0, 0, height, width), list(range(len(shares))), False)
    return np.array(rects), clamped


# ------------------------------------------------------------------ strategies

@st.composite
def canvases(draw, max_rows: int = 1):
    """(shares (n, k), H, W, min_side) with shares in [0.05, 1] and min_side <= min(H, W) // 4."""
    k = draw(st.integers(1, 4))
    height = draw(st.integers(32, 512))
    width = draw(st.integers(32, 512))
    short = min(height, width)
    min_side = draw(st.one_of(st.just(short // 8), st.integers(1, short // 4)))
    n = draw(st.integers(1, max_rows))
    shares = draw(st.lists(st.lists(st.floats(0.05, 1.0), min_size=k, max_size=k),
                           min_size=n, max_size=n))
    return np.array(shares, dtype=np.float64), height, width, min_side


def _paint(rects, height, width):
    counts = np.zeros((height, width), dtype=np.int32)
    for y, x, h, w in rects:
        counts[y:y + h, x:x + w] += 1
    return counts


# ------------------------------------------------------------------ properties

@SETTINGS
@given(canvases(max_rows=4))
def test_tiles_cover_every_pixel_exactly_once(case):
    shares, height, width, min_side = case
    for rects in layout_batch(shares, height, width, min_side):
        assert np.all(rects[:, 0] >= 0) and np.all(rects[:, 1] >= 0)
        assert np.all(rects[:, 0] + rects[:, 2] <= height)
        assert np.all(rects[:, 1] + rects[:, 3] <= width)
        # Every pixel painted exactly once means full cover and no overlap.
        assert np.all(_paint(rects, height, width) == 1)


@SETTINGS
@given(canvases(max_rows=4))
def test_every_tile_side_is_at_least_min_side(case):
    shares, height, width, min_side = case
    out = layout_batch(shares, height, width, min_side)
    assert np.all(out[..., 2:] >= min_side)


@SETTINGS
@given(canvases(max_rows=4))
def test_unclamped_tile_area_within_depth_times_half_short_side(case):
    shares, height, width, min_side = case
    out = layout_batch(shares, height, width, min_side)
    depths = tile_depths(shares.shape[1])
    for row, rects in zip(shares, out):
        _, clamped = _reference(row, height, width, min_side)
        target = row / row.sum() * height * width
        areas = rects[:, 2].astype(np.int64) * rects[:, 3]
        for j, (area, goal) in enumerate(zip(areas, target)):
            if not clamped[j]:
                assert abs(area - goal) <= depths[j] * min(height, width) / 2 + 1e-6


@SETTINGS
@given(k=st.integers(1, 4), height=st.integers(32, 512), width=st.integers(32, 512),
       jitter=st.lists(st.floats(0.8, 1.0), min_size=4, max_size=4))
def test_balanced_shares_never_clamp_and_meet_area_bound(k, height, width, jitter):
    shares = np.array(jitter[:k])
    min_side = min(height, width) // 8
    rects = layout(shares, height, width)
    ref, clamped = _reference(shares, height, width, min_side)
    assert not any(clamped)
    np.testing.assert_array_equal(rects, ref)
    areas = rects[:, 2].astype(np.int64) * rects[:, 3]
    bound = np.array(tile_depths(k)) * min(height, width) / 2
    assert np.all(np.abs(areas - shares / shares.sum() * height * width) <= bound + 1e-6)


@SETTINGS
@given(canvases(max_rows=6))
def test_vectorised_batch_equals_per_row_layout_and_reference(case):
    shares, height, width, min_side = case
    out = layout_batch(shares, height, width, min_side)
    assert out.shape == (*shares.shape, 4) and out.dtype == np.int32
    for row, rects in zip(shares, out):
        np.testing.assert_array_equal(rects, layout(row, height, width, min_side))
        np.testing.assert_array_equal(rects, _reference(row, height, width, min_side)[0])


@SETTINGS
@given(canvases(), st.integers(-8, 8))
def test_scaling_shares_does_not_change_layout(case, exponent):
    # Powers of two scale exactly in floating point, so even exact .5 ties must agree.
    shares, height, width, min_side = case
    np.testing.assert_array_equal(layout_batch(shares, height, width, min_side),
                                  layout_batch(shares * 2.0 ** exponent, height, width, min_side))


def test_unnormalised_shares_are_normalised():
    np.testing.assert_array_equal(layout([3.0, 1.0], 64, 128), layout([0.75, 0.25], 64, 128))


# ------------------------------------------------------------------ examples

def test_single_constituent_gets_whole_canvas():
    np.testing.assert_array_equal(layout([0.3], 100, 60), [[0, 0, 100, 60]])


def test_square_tie_cuts_width_so_tiles_sit_side_by_side():
    np.testing.assert_array_equal(layout([1, 1], 64, 64), [[0, 0, 64, 32], [0, 32, 64, 32]])


def test_tall_canvas_is_cut_across_its_height():
    np.testing.assert_array_equal(layout([1, 3], 200, 50), [[0, 0, 50, 50], [50, 0, 150, 50]])


def test_equal_four_way_split_gives_quadrants():
    np.testing.assert_array_equal(layout([1, 1, 1, 1], 224, 224),
                                  [[0, 0, 112, 112], [112, 0, 112, 112],
                                   [0, 112, 112, 112], [112, 112, 112, 112]])


def test_small_share_is_clamped_to_min_side():
    rects = layout([0.05, 1.0], 64, 256, min_side=16)
    np.testing.assert_array_equal(rects, [[0, 0, 64, 16], [0, 16, 64, 240]])


def test_two_tile_part_on_thin_canvas_gets_twice_min_side():
    # Height 10 < 2*6 cannot hold two stacked tiles, so the two-tile part needs width 12.
    rects = layout([0.05, 0.05, 1.0], 10, 100, min_side=6)
    np.testing.assert_array_equal(rects, [[0, 0, 10, 6], [0, 6, 10, 6], [0, 12, 10, 88]])


def test_default_min_side_is_one_eighth_of_short_side():
    rects = layout([0.01, 1.0], 64, 256)  # unclamped width 3; min_side = 64 // 8 = 8
    assert rects[0, 3] == 8


def test_tile_depths_follow_the_recursion():
    assert [tile_depths(k) for k in (1, 2, 3, 4)] == [(0,), (1, 1), (2, 2, 1), (2, 2, 2, 2)]


def test_empty_batch_returns_empty_array():
    out = layout_batch(np.ones((0, 3)), 64, 64, 8)
    assert out.shape == (0, 3, 4) and out.dtype == np.int32


def test_full_epoch_of_layouts_is_planned_quickly():
    # ~160k composites per epoch; a per-row Python loop would take seconds.
    shares = np.random.default_rng(0).uniform(0.05, 1.0, (160_000, 4))
    start = time.perf_counter()
    out = layout_batch(shares, 224, 224, 28)
    assert time.perf_counter() - start < 1.0
    assert out.shape == (160_000, 4, 4)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("shares, height, width, min_side, words", [
    (np.ones((2, 5)), 64, 64, 4, ["k=5", "1..4"]),
    (np.ones((2, 0)), 64, 64, 4, ["k=0", "1..4"]),
    (np.ones((1, 4)), 20, 20, 11, ["H=20", "W=20", "k=4", "min_side=11", "min_side <= 10"]),
    (np.ones((1, 2)), 8, 100, 10, ["H=8", "W=100", "k=2", "min_side=10", "min_side <= 8"]),
    (np.ones((1, 2)), 64, 64, 0, ["min_side=0"]),
    (np.ones((1, 2)), 0, 64, 4, ["height=0"]),
    (np.ones((1, 2)), 64, 64.5, 4, ["width=64.5"]),
])
def test_bad_canvas_raises_user_error_naming_values(shares, height, width, min_side, words):
    with pytest.raises(UserError) as info:
        layout_batch(shares, height, width, min_side)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("shares", [
    np.array([[1.0, 0.0]]),
    np.array([[1.0, -0.5]]),
    np.array([[1.0, np.nan]]),
    np.array([[1.0, np.inf]]),
    np.ones(3),
])
def test_bad_shares_raise_value_error(shares):
    with pytest.raises(ValueError):
        layout_batch(shares, 64, 64, 4)


def test_layout_rejects_a_batch_of_shares():
    with pytest.raises(ValueError):
        layout(np.ones((2, 2)), 64, 64)
