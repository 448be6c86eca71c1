"""Crop planning: which window of each source image a slot decodes (host side, per batch).

Every slot (a constituent image) is decoded from a random window of its file, drawn here on
the host rather than by DALI's random-resized-crop operator, because a mixed tile's window
depends on its tile:

- an unmixed slot (its tile is the whole canvas) gets torchvision's RandomResizedCrop
  window: area a ~ U(scale) of the image, aspect ratio r ~ logU(ratio), uniform position;
- a mixed slot with `tile_aspect` gets the tile's own aspect ratio (w / h), so the content
  is not squashed into a strip, and with `tile_scale` = p an area a * share ** p, where
  share is the tile's part of the canvas: p = 1 keeps objects at the pixel size an unmixed
  view shows them (a quarter tile shows a quarter of the crop, at full resolution), p = 0
  shows the whole crop shrunk into the tile.

By default (`tries=1`) a window that does not fit the image keeps its aspect ratio and
shrinks until it fits (not torchvision's ten rejection draws). Windows are relative (fractions of the image's height
and width; handed to DALI as `window_rows`), turned into pixels inside the DALI graph
from each file's header (`pipelines.crop_window`). With `tries` > 1 the planner draws that
many candidates and the graph keeps the first that fits, torchvision's rule (its ten draws),
which keeps fewer large windows (so decodes and resizes fewer pixels) than shrinking. The draws are a pure function of (seed, epoch, batch index), so
a resumed or recovered epoch decodes exactly the same windows.
"""

from __future__ import annotations

import math

import numpy as np

_SALT_CROP = 0x43524F50  # separates the crops' stream from the plan's


class CropPlanner:
    """Draws `(n_slots, 4)` float32 windows `[area, ratio, u_y, u_x]` for a batch's slots:
    area as a fraction of the image, ratio = window width / height in pixels, and the
    window's position as a fraction of the free space above and left of it.

    `tries` > 1: `(n_slots, tries, 4)`, candidate windows in order (the first is the one
    `tries=1` draws; the position is shared); the graph takes the first that fits the image,
    torchvision's RandomResizedCrop rule, and shrinks the first to fit when none does."""

    def __init__(self, scale, ratio, canvas: tuple[int, int], seed: int = 0,
                 tile_aspect: bool = True, tile_scale: float = 1.0, tries: int = 1):
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.canvas = (int(canvas[0]), int(canvas[1]))
        self.seed = int(seed)
        self.tile_aspect = bool(tile_aspect)
        self.tile_scale = float(tile_scale)
        self.tries = int(tries)

    def draw(self, epoch: int, batch: int, tile_hw: np.ndarray) -> np.ndarray:
        """Windows for slots whose tiles are `tile_hw` (n, 2) pixels, in batch `batch` of `epoch`."""
        tile_hw = np.asarray(tile_hw, np.float64).reshape(-1, 2)
        n = len(tile_hw)
        rng = np.random.default_rng([self.seed, epoch, batch, _SALT_CROP])
        u = rng.random((n, 4))  # the first candidate: the same draws whatever `tries` is
        more = rng.random((n, self.tries - 1, 2))  # the other candidates' (none with one try)
        u_area = np.concatenate([u[:, None, 0], more[..., 0]], axis=1)
        u_ratio = np.concatenate([u[:, None, 1], more[..., 1]], axis=1)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u_area
        ratio = np.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u_ratio)
        share = (tile_hw[:, 0] * tile_hw[:, 1] / (self.canvas[0] * self.canvas[1]))[:, None]
        tiled = share < 1.0
        if self.tile_aspect:
            ratio = np.where(tiled, (tile_hw[:, 1] / np.maximum(tile_hw[:, 0], 1))[:, None], ratio)
        if self.tile_scale:
            area = np.where(tiled, area * share ** self.tile_scale, area)
        t = area.shape[1]
        out = np.stack([area, ratio, np.repeat(u[:, None, 2], t, 1), np.repeat(u[:, None, 3], t, 1)], axis=2)
        return (out[:, 0] if self.tries == 1 else out).astype(np.float32)


def window_rows(windows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """What the DALI graph takes for `windows` ((n, 4) or (n, tries, 4), from CropPlanner):
    per slot a (tries + 1, 3) float32 array, one row per candidate, [sqrt(area / ratio),
    sqrt(area * ratio), its index], and a last row [u_y, u_x, 0]. A candidate's relative
    height and width on an h x w image are its first two values times sqrt(w / h) and
    sqrt(h / w)."""
    w = np.asarray(windows, np.float64)
    if w.ndim == 2:
        w = w[:, None, :]
    n, t = w.shape[:2]
    out = np.zeros((n, t + 1, 3), dtype)
    out[:, :t, 0] = np.sqrt(w[..., 0] / w[..., 1])
    out[:, :t, 1] = np.sqrt(w[..., 0] * w[..., 1])
    out[:, :t, 2] = np.arange(t)
    out[:, t, :2] = w[:, 0, 2:4]
    return out


def relative_window(window: np.ndarray, image_hw, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """(rel_start, rel_shape), each (n, 2) (y, x), of windows ((n, 4), or (n, tries, 4)
    candidates) on images of (n, 2) pixels: the first candidate that fits, else the first
    shrunk to fit, keeping its aspect ratio. The numpy twin of the DALI graph's
    `pipelines.crop_window`: with `dtype=np.float32` the same float32 operations in the same
    order, so the same numbers (the loader's host windows, source.py); float64 for tools."""
    rows = window_rows(window, dtype)
    hw = np.asarray(image_hw).reshape(-1, 2).astype(dtype)
    rel = rows[:, :-1, :2] * np.sqrt(hw[:, None, ::-1] / hw[:, None, :])  # (n, tries, 2)
    fits = rel.max(2) <= 1.0
    first = np.where(fits.any(1), fits.argmax(1), 0)
    chosen = rel[np.arange(len(rel)), first]
    shape = chosen / np.maximum(chosen.max(1, keepdims=True), dtype(1.0))
    return rows[:, -1, :2] * (dtype(1.0) - shape), shape
