"""Crop planning: which window of each source image a slot decodes (host side, per batch).

Every slot (a constituent image) is decoded from a random window of its file, drawn here on
the host rather than by DALI's random-resized-crop operator, so that a resumed or recovered
epoch decodes the same windows and the graph draws nothing: torchvision's RandomResizedCrop
window, area a ~ U(scale) of the image, aspect ratio r ~ logU(ratio), uniform position. A
mixed tile gets the same kind of window as an unmixed slot, the whole crop shrunk into the
tile (tile-shaped windows, and windows at the tile's scale, measured no gain: research log,
rounds 3 and 18).

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

    def __init__(self, scale, ratio, seed: int = 0, tries: int = 1):
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.seed = int(seed)
        self.tries = int(tries)

    def draw(self, epoch: int, batch: int, n: int) -> np.ndarray:
        """Windows for the `n` slots of batch `batch` of `epoch`."""
        rng = np.random.default_rng([self.seed, epoch, batch, _SALT_CROP])
        u = rng.random((n, 4))  # the first candidate: the same draws whatever `tries` is
        more = rng.random((n, self.tries - 1, 2))  # the other candidates' (none with one try)
        u_area = np.concatenate([u[:, None, 0], more[..., 0]], axis=1)
        u_ratio = np.concatenate([u[:, None, 1], more[..., 1]], axis=1)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u_area
        ratio = np.exp(self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * u_ratio)
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
