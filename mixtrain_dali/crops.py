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

A window that does not fit the image keeps its aspect ratio and shrinks until it fits (not
torchvision's ten rejection draws). Windows are relative (fractions of the image's height
and width), turned into pixels inside the DALI graph from each file's header
(`pipelines.crop_window`). The draws are a pure function of (seed, epoch, batch index), so
a resumed or recovered epoch decodes exactly the same windows.
"""

from __future__ import annotations

import math

import numpy as np

_SALT_CROP = 0x43524F50  # separates the crops' stream from the plan's


class CropPlanner:
    """Draws `(n_slots, 4)` float32 windows `[area, ratio, u_y, u_x]` for a batch's slots:
    area as a fraction of the image, ratio = window width / height in pixels, and the
    window's position as a fraction of the free space above and left of it."""

    def __init__(self, scale, ratio, canvas: tuple[int, int], seed: int = 0,
                 tile_aspect: bool = True, tile_scale: float = 1.0):
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.canvas = (int(canvas[0]), int(canvas[1]))
        self.seed = int(seed)
        self.tile_aspect = bool(tile_aspect)
        self.tile_scale = float(tile_scale)

    def draw(self, epoch: int, batch: int, tile_hw: np.ndarray) -> np.ndarray:
        """Windows for slots whose tiles are `tile_hw` (n, 2) pixels, in batch `batch` of `epoch`."""
        tile_hw = np.asarray(tile_hw, np.float64).reshape(-1, 2)
        n = len(tile_hw)
        rng = np.random.default_rng([self.seed, epoch, batch, _SALT_CROP])
        u = rng.random((n, 4))
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        ratio = np.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u[:, 1])
        share = tile_hw[:, 0] * tile_hw[:, 1] / (self.canvas[0] * self.canvas[1])
        tiled = share < 1.0
        if self.tile_aspect:
            ratio = np.where(tiled, tile_hw[:, 1] / np.maximum(tile_hw[:, 0], 1), ratio)
        if self.tile_scale:
            area = np.where(tiled, area * share ** self.tile_scale, area)
        return np.stack([area, ratio, u[:, 2], u[:, 3]], axis=1).astype(np.float32)


def relative_window(window: np.ndarray, image_hw) -> tuple[np.ndarray, np.ndarray]:
    """(rel_start, rel_shape), each (n, 2) (y, x), of windows on images of (n, 2) pixels:
    the numpy twin of the DALI graph's `pipelines.crop_window`, for tests and tools."""
    window = np.asarray(window, np.float64)
    h, w = (np.asarray(image_hw, np.float64).reshape(-1, 2)[:, i] for i in (0, 1))
    area, ratio, uy, ux = window.T
    rh = np.sqrt(area * w / (ratio * h))
    rw = np.sqrt(area * ratio * h / w)
    fit = np.maximum(np.maximum(rh, rw), 1.0)
    rh, rw = rh / fit, rw / fit
    return np.stack([uy * (1 - rh), ux * (1 - rw)], 1), np.stack([rh, rw], 1)
