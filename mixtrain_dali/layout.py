"""Slice-and-dice tiling of an H x W composite into k = 1..4 rectangles, vectorised over composites.

A rectangle is ``(y, x, h, w)`` in integer pixels. Constituent ``j`` of a composite gets a tile
whose area follows its share ``shares[j]``; the controller plans ~160k composites per epoch with
one :func:`layout_batch` call, so everything here is whole-array numpy with no per-row Python.

Algorithm (same for every row, because k is fixed per call): split the constituents into two
groups, the first ``ceil(m/2)`` and the rest; cut the current rectangle across its LONGER side
(ties: cut the width, i.e. place the parts side by side) at the integer position where the two
parts' areas best match the groups' share sums; recurse into each part. With k <= 4 a group has
at most 2 constituents, so a tile lies under at most ``depth(k, j)`` cuts: 0 for k = 1, 1 for
k = 2, (2, 2, 1) for k = 3 and 2 for k = 4.
"""

from __future__ import annotations

import numbers

import numpy as np

from mixtrain_dali.errors import UserError

__all__ = ["MAX_K", "layout", "layout_batch", "tile_depths"]

MAX_K = 4


def tile_depths(k: int) -> tuple[int, ...]:
    """Number of cuts above each of the k tiles (the recursion depth of constituent j)."""
    if not 1 <= k <= MAX_K:
        raise UserError(f"k={k} constituents per composite is not supported; valid: 1..{MAX_K}")
    depths = [0] * k

    def visit(idx: list[int], depth: int) -> None:
        if len(idx) == 1:
            depths[idx[0]] = depth
            return
        half = (len(idx) + 1) // 2
        visit(idx[:half], depth + 1)
        visit(idx[half:], depth + 1)

    visit(list(range(k)), 0)
    return tuple(depths)


def layout_batch(shares: np.ndarray, height: int, width: int, min_side: int) -> np.ndarray:
    """Tile n composites of ``height x width`` pixels, one row of ``shares`` per composite.

    Args:
        shares: ``(n, k)`` float, k in 1..4 (the same k for every row). Each row is normalised
            to sum 1; entries must be finite and > 0 (``ValueError`` otherwise).
        height, width: canvas size in pixels.
        min_side: smallest allowed tile side in pixels (>= 1).

    Returns:
        ``(n, k, 4)`` int32 rectangles ``(y, x, h, w)``; ``out[i, j]`` is constituent j's tile.

    Guarantees (every row):
        * Exact cover: the k tiles partition the canvas; every pixel lies in exactly one tile.
        * Every tile side (h and w) is >= ``min_side``.
        * Cut position: a cut across a side of length L at fraction f (the first group's share
          of the rectangle being cut) lands at ``c = floor(L*f + 0.5)`` clamped to
          ``[need_a, L - need_b]``. ``need`` is ``min_side`` for a one-tile part, and also for a
          two-tile part whose other side is >= 2*min_side; otherwise ``2*min_side`` (so that
          part can be cut again). When the other side is >= 2*min_side, the usual case, this
          is exactly the clamp ``[min_side, L - min_side]``.
        * Area accuracy: when no clamp moves a cut on the path to tile j,
          ``|h_j*w_j - shares[j]*H*W| <= depth_j * min(H, W) / 2``, where ``depth_j`` is
          :func:`tile_depths` ``(k)[j]`` (0, 1 or 2). Why: rounding moves a cut by at most half
          a pixel, which changes a part's area by at most half the cut line's length (the
          shorter side of the rectangle being cut, <= min(H, W)); a part inherits a fraction
          <= 1 of its parent's area error and adds its own.
          For k = 1 the tile is the whole canvas (error 0). A clamped cut is as close to the
          target as ``min_side`` allows.

    Raises:
        UserError: k outside 1..4, a non-positive canvas or ``min_side``, or a canvas that cannot
            hold k tiles of ``min_side`` under this cut order (the message names H, W, k,
            min_side and the largest min_side that would fit).
        ValueError: shares not 2-D, not finite, or not > 0.
    """
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 2:
        raise ValueError(f"shares must be a 2-D (n, k) array, got shape {shares.shape}")
    n, k = shares.shape
    height, width, min_side = _check_canvas(height, width, k, min_side)
    out = np.empty((n, k, 4), dtype=np.int32)
    if n == 0:
        return out
    # min/max are fast whole-array reductions; a NaN makes both comparisons False.
    if not (shares.min() > 0 and shares.max() < np.inf):
        bad = shares[~(np.isfinite(shares) & (shares > 0))]
        raise ValueError(f"shares must be finite and > 0; got e.g. {bad[:4].tolist()}")
    # Rows of the (k, n) transpose are contiguous, which makes the partial sums below cheap.
    # Cut fractions are ratios of partial sums, so they already equal those of the normalised
    # shares and no explicit division by the row total is needed.
    columns = np.ascontiguousarray(shares.T)
    _split((0, 0, height, width), columns, list(range(k)), min_side, out)
    return out


def layout(shares, height: int, width: int, min_side: int | None = None) -> np.ndarray:
    """Tile one composite: ``shares`` is ``(k,)``; returns ``(k, 4)`` int32 ``(y, x, h, w)``.

    ``min_side`` defaults to ``max(1, min(height, width) // 8)``. Same guarantees as
    :func:`layout_batch`, which this calls with one row.
    """
    if min_side is None:
        min_side = max(1, min(int(height), int(width)) // 8)
    row = np.asarray(shares, dtype=np.float64)
    if row.ndim != 1:
        raise ValueError(f"shares must be a 1-D (k,) array, got shape {row.shape}")
    return layout_batch(row[None, :], height, width, min_side)[0]


def _check_canvas(height, width, k: int, min_side) -> tuple[int, int, int]:
    """Validate canvas parameters; raise UserError naming H, W, k, min_side when tiling fails."""
    if not 1 <= k <= MAX_K:
        raise UserError(f"k={k} constituents per composite is not supported; valid: 1..{MAX_K}")
    for name, value in (("height", height), ("width", width), ("min_side", min_side)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise UserError(f"{name}={value!r} is invalid; it must be a positive integer")
    height, width, min_side = int(height), int(width), int(min_side)
    if not _fits(height, width, k, min_side):
        best = max((s for s in range(1, min(height, width) + 1) if _fits(height, width, k, s)),
                   default=0)
        hint = (f"use min_side <= {best} or a larger canvas" if best
                else "use a larger canvas or a smaller k")
        raise UserError(f"canvas H={height} x W={width} cannot hold k={k} tiles with every side "
                        f">= min_side={min_side}; {hint}")
    return height, width, min_side


def _need(group: int, other_side, min_side: int):
    """Least length a part of ``group`` tiles needs along the cut side (see the docstring)."""
    # A two-tile part whose other side is too short for two tiles must be cut along this side.
    if group == 1:
        return min_side
    return _pick(other_side >= 2 * min_side, min_side, 2 * min_side)


def _fits(height: int, width: int, k: int, min_side: int) -> bool:
    """Whether this cut order can tile H x W with k tiles of side >= min_side (k <= 4)."""
    long_side, other = max(height, width), min(height, width)
    if other < min_side:
        return False
    if k == 1:
        return True
    a = (k + 1) // 2
    # Groups hold <= 2 tiles, and a part meeting _need can always be split again (cut order
    # follows the longer side), so checking the first cut is exact.
    return _need(a, other, min_side) + _need(k - a, other, min_side) <= long_side


def _pick(cond, a, b):
    """``np.where`` that skips the array pass when ``cond`` is one bool (the first cut)."""
    if np.ndim(cond) == 0:
        return a if cond else b
    return np.where(cond, a, b)


def _split(rect, columns: np.ndarray, idx: list[int], min_side: int, out: np.ndarray) -> None:
    """Tile ``rect`` among constituents ``idx`` for every row at once, writing into ``out``.

    ``rect`` is ``(y, x, h, w)``, each an int or an (n,) int array; ``columns`` is the (k, n)
    transposed shares.
    """
    if len(idx) == 1:
        for axis, value in enumerate(rect):
            out[:, idx[0], axis] = value
        return
    half = (len(idx) + 1) // 2
    first, second = idx[:half], idx[half:]
    share_a = sum(columns[j] for j in first)
    frac = share_a / (share_a + sum(columns[j] for j in second))
    y, x, h, w = rect
    cut_w = w >= h  # longer side is cut; ties cut the width (parts side by side)
    length, other = _pick(cut_w, w, h), _pick(cut_w, h, w)
    # Round half up (not numpy's half-to-even) so the rule is easy to state and reproduce.
    pos = np.floor(length * frac + 0.5).astype(np.int64)
    low = _need(len(first), other, min_side)
    high = length - _need(len(second), other, min_side)
    pos = np.minimum(np.maximum(pos, low), high)
    part_a = (y, x, _pick(cut_w, h, pos), _pick(cut_w, pos, w))
    part_b = (_pick(cut_w, y, y + pos), _pick(cut_w, x + pos, x),
              _pick(cut_w, h, h - pos), _pick(cut_w, w - pos, w))
    _split(part_a, columns, first, min_side, out)
    _split(part_b, columns, second, min_side, out)
