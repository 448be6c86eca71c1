"""Deterministic synthetic ImageFolder dataset of JPEGs: the project's embedded default data.

No dataset can be downloaded where this project runs, so the demo, the tests and the benchmarks
all use images drawn here. The images are built to make *input mixing* a real trade-off:

* Every class is a shape or a pattern drawn on a varied, textured background (gradients,
  low-frequency colour blobs, noise), at a random position, scale, rotation, colour and contrast,
  in an image whose sides are drawn independently (so sizes *and* aspect ratios vary) and saved at
  a random JPEG quality. Contrast is set in luma, modest to strong but never invisible, and the
  colours are random, so colour carries no class information. A small CNN needs a few epochs.
* Some classes differ from another class only in fine detail (``stripes`` vs ``fine_stripes``,
  ``dots`` vs ``fine_dots``, ``checker`` vs ``fine_checker``). Their pattern period is tied to the
  image size, so after the usual resize to a small square input the fine patterns are a few pixels
  per period: visible at full resolution, mostly averaged away when an image is shrunk to a quarter
  of its area -- which is exactly what mixing does to each tile. Accuracy therefore drops
  measurably at reduced resolution, as it does on real data.

Determinism: each image draws from its own RNG seeded with (seed, split, class, index), so the
same arguments give byte-identical files whatever the number of worker processes and in whatever
order they finish. JPEGs are written by PIL without EXIF or timestamps and with ``optimize=False``.
(Identical across machines as long as numpy's RNG streams and Pillow's libjpeg are the same; bump
GENERATOR_VERSION when the drawing changes, so cached copies are redrawn.)

A ``.complete.json`` marker holding the arguments is written last; :func:`synthetic_is_complete`
lets a caller skip regeneration, and an interrupted run (no marker) is simply regenerated.

``python -m mixtrain_dali.synthetic DIR`` writes the default dataset into DIR.
"""

from __future__ import annotations

import inspect
import json
import math
import multiprocessing
import operator
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from mixtrain_dali.errors import UserError

__all__ = [
    "CLASS_DESCRIPTIONS",
    "CLASS_NAMES",
    "make_synthetic",
    "synthetic_is_complete",
    "make_benchmark_jpegs",
    "benchmark_jpegs_is_complete",
]

# Bump whenever the drawing changes, so cached datasets written by an older version are redrawn.
GENERATOR_VERSION = 1

MARKER_NAME = ".complete.json"
# Present while a run is writing. Together with MARKER_NAME it proves a directory is ours, which
# is the only case in which we delete existing content (never someone else's ImageFolder).
_BUSY_NAME = ".generating"

# RNG stream ids: one per split, so train and val never share an image.
_SPLIT_IDS = {"train": 0, "val": 1, "benchmark": 2}

_MIN_SIDE = 16  # smaller images cannot hold a recognisable pattern
_MAX_ASPECT = 2.0  # sides are independent but no more than 2:1 (extreme strips are rare in photos)

# Pattern periods as fractions of the image's geometric-mean side. Tied to the image (not the
# object) so that after resizing to a square input a period is a fixed number of input pixels:
# at 64 px input, "coarse" is about 12-15 px and "fine" about 4-5 px, which a 2x downscale
# (to 32 px, a quarter of the area) brings close to the Nyquist limit of 2 px, where a resize
# filter averages it away. (The 2:1 aspect ratio and crops move these by up to ~1.5x.)
_FINE = (0.06, 0.075)
_COARSE = (0.18, 0.24)


# --------------------------------------------------------------------------------------------
# Geometry helpers. Everything is a signed distance or a coverage in [0, 1] computed with
# vectorised numpy over the whole image; the 1-pixel soft edges keep shapes anti-aliased so the
# fine classes do not carry aliasing artefacts that would survive a downscale.
# --------------------------------------------------------------------------------------------

@dataclass
class _Geom:
    """Pixel grid of one image, in the object's rotated frame."""

    x: np.ndarray  # rotated pixel offsets from the object centre (float32, H x W)
    y: np.ndarray
    a: np.ndarray  # the same, normalised by the object radius and stretch (object ~ [-1, 1])
    b: np.ndarray
    r: float  # object radius in pixels
    unit: float  # geometric-mean image side in pixels (sets pattern periods)

    @property
    def rho(self) -> np.ndarray:
        return np.hypot(self.a, self.b)

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.b, self.a)


def _coverage(sd_px: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) -> anti-aliased coverage in [0, 1]."""
    return np.clip(0.5 - sd_px, 0.0, 1.0)


def _bands(coord_px: np.ndarray, period: float, duty: float = 0.5) -> np.ndarray:
    """Soft periodic bands along a pixel coordinate: 1 on a band of width duty*period."""
    f = coord_px / period
    dist = np.abs(f - np.round(f))  # distance to the nearest band centre, in periods
    return _coverage((dist - duty / 2) * period)


def _period(g: _Geom, rng: np.random.Generator, frac: tuple[float, float]) -> float:
    return float(rng.uniform(*frac)) * g.unit


def _container(g: _Geom, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the patch that holds a pattern: a disc/ellipse or a (rounded) rectangle."""
    if rng.random() < 0.5:
        return _coverage((g.rho - 1.0) * g.r)
    corner = rng.uniform(0.0, 0.4)
    qa = np.maximum(np.abs(g.a) - (0.85 - corner), 0.0)
    qb = np.maximum(np.abs(g.b) - (0.85 - corner), 0.0)
    return _coverage((np.hypot(qa, qb) - corner) * g.r)


# --------------------------------------------------------------------------------------------
# One drawing function per class kind. Each returns (alpha, pattern): alpha is the object's
# coverage; pattern is None for a solid shape, or a [0, 1] map choosing between the object's two
# colours. Pattern classes sit inside a container patch; shape classes are solid.
# --------------------------------------------------------------------------------------------

_Drawn = tuple[np.ndarray, "np.ndarray | None"]


def _stripes(g: _Geom, rng: np.random.Generator, frac=_COARSE) -> _Drawn:
    return _container(g, rng), _bands(g.x, _period(g, rng, frac))


def _fine_stripes(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _stripes(g, rng, _FINE)


def _checker(g: _Geom, rng: np.random.Generator, frac=_COARSE) -> _Drawn:
    p = _period(g, rng, frac)  # one period = two squares
    s, t = _bands(g.x, p), _bands(g.y, p)
    return _container(g, rng), s + t - 2 * s * t  # soft XOR


def _fine_checker(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _checker(g, rng, (0.075, 0.09))


def _dots(g: _Geom, rng: np.random.Generator, frac=_COARSE) -> _Drawn:
    p = _period(g, rng, frac)
    fx, fy = g.x / p, g.y / p
    dist = np.hypot(fx - np.round(fx), fy - np.round(fy)) * p  # to the nearest lattice point
    return _container(g, rng), _coverage(dist - 0.3 * p)


def _fine_dots(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _dots(g, rng, _FINE)


def _rings(g: _Geom, rng: np.random.Generator, frac=(0.13, 0.17)) -> _Drawn:
    # a little denser than _COARSE: with only two rings a bullseye reads as stripes in a disc
    p = _period(g, rng, frac)
    return _coverage((g.rho - 1.0) * g.r), _bands(np.hypot(g.x, g.y), p)


def _fine_rings(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _rings(g, rng, _FINE)


def _hatch(g: _Geom, rng: np.random.Generator) -> _Drawn:
    p = _period(g, rng, (0.1, 0.14))
    ang = rng.uniform(np.pi / 4, np.pi / 2)  # angle between the two line families
    s = _bands(g.x, p, 0.25)
    t = _bands(g.x * math.cos(ang) + g.y * math.sin(ang), p, 0.25)
    return _container(g, rng), np.maximum(s, t)


def _waves(g: _Geom, rng: np.random.Generator) -> _Drawn:
    p = _period(g, rng, _COARSE)
    amp, wavelength = rng.uniform(0.3, 0.6) * p, rng.uniform(2.0, 3.0) * p
    return _container(g, rng), _bands(g.y + amp * np.sin(2 * np.pi * g.x / wavelength), p)


def _texture(g: _Geom, rng: np.random.Generator, cell: float) -> np.ndarray:
    """Binary random blotches with a feature size of `cell` pixels (thresholded smooth noise)."""
    h, w = g.x.shape
    gh, gw = max(2, round(h / cell)), max(2, round(w / cell))
    small = (rng.random((gh, gw)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
    return np.clip((smooth - 127.5) / 12.0 + 0.5, 0.0, 1.0)


def _speckle(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _container(g, rng), _texture(g, rng, _period(g, rng, (0.02, 0.026)))


def _mottled(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _container(g, rng), _texture(g, rng, _period(g, rng, (0.12, 0.16)))


def _spiral(g: _Geom, rng: np.random.Generator) -> _Drawn:
    arms = 3
    p = _period(g, rng, _COARSE) * arms  # spacing between neighbouring arms ~ a coarse period
    along = np.hypot(g.x, g.y) + g.phi * (p / (2 * np.pi))
    return _coverage((g.rho - 1.0) * g.r), _bands(along, p / arms, 0.5)


def _triangle(g: _Geom, rng: np.random.Generator) -> _Drawn:
    normals = [math.radians(d) for d in (90.0, 210.0, 330.0)]
    sd = np.max([g.a * math.cos(t) + g.b * math.sin(t) for t in normals], axis=0) - 0.5
    return _coverage(sd * g.r), None


def _cross(g: _Geom, rng: np.random.Generator) -> _Drawn:
    w = rng.uniform(0.16, 0.26)
    aa, bb = np.abs(g.a), np.abs(g.b)
    sd = np.minimum(np.maximum(aa - w, bb - 1.0), np.maximum(bb - w, aa - 1.0))
    return _coverage(sd * g.r), None


def _star(g: _Geom, rng: np.random.Generator) -> _Drawn:
    t = (g.phi * (5 / (2 * np.pi))) % 1.0
    tip = np.abs(2 * t - 1)  # 1 at a point, 0 between points
    inner = rng.uniform(0.35, 0.5)
    sd = (g.rho - (inner + (1 - inner) * tip)) * 0.6  # 0.6: rough slope correction of the edge
    return _coverage(sd * g.r), None


def _zigzag(g: _Geom, rng: np.random.Generator) -> _Drawn:
    lam = rng.uniform(0.45, 0.7)
    f = g.a / lam
    tri = 2 * np.abs(2 * (f - np.floor(f + 0.5))) - 1  # triangle wave in [-1, 1]
    sd = np.maximum(np.abs(g.b - 0.35 * tri) - 0.16, np.abs(g.a) - 1.0)
    return _coverage(sd * g.r * 0.8), None


def _annulus(g: _Geom, rng: np.random.Generator) -> _Drawn:
    return _coverage((np.abs(g.rho - 0.72) - rng.uniform(0.14, 0.24)) * g.r), None


def _crescent(g: _Geom, rng: np.random.Generator) -> _Drawn:
    inner = np.hypot(g.a - rng.uniform(0.35, 0.55), g.b)
    return _coverage(np.maximum(g.rho - 1.0, 0.85 - inner) * g.r), None


def _hexagon(g: _Geom, rng: np.random.Generator) -> _Drawn:
    s3 = math.sqrt(3) / 2
    sd = np.maximum.reduce([np.abs(g.b), np.abs(s3 * g.a + 0.5 * g.b),
                            np.abs(s3 * g.a - 0.5 * g.b)])
    return _coverage((sd - 0.85) * g.r), None


def _frame(g: _Geom, rng: np.random.Generator) -> _Drawn:
    box = np.maximum(np.abs(g.a), np.abs(g.b))
    return _coverage((np.abs(box - 0.78) - rng.uniform(0.1, 0.17)) * g.r), None


def _pacman(g: _Geom, rng: np.random.Generator) -> _Drawn:
    half_mouth = rng.uniform(0.4, 0.7)
    sd = np.maximum(g.rho - 1.0, (half_mouth - np.abs(g.phi)) * g.rho)
    return _coverage(sd * g.r), None


def _dumbbell(g: _Geom, rng: np.random.Generator) -> _Drawn:
    ends = np.minimum(np.hypot(g.a - 0.62, g.b), np.hypot(g.a + 0.62, g.b)) - 0.36
    bar = np.maximum(np.abs(g.b) - 0.11, np.abs(g.a) - 0.62)
    return _coverage(np.minimum(ends, bar) * g.r), None


# name -> (short description, drawing function). Order fixes the class indices; the first ten
# form the default dataset and include three coarse/fine pairs; the rest allow up to 23 classes.
_CLASSES: dict[str, tuple[str, Callable[[_Geom, np.random.Generator], _Drawn]]] = {
    "00_stripes": ("coarse parallel stripes filling a disc or rectangle", _stripes),
    "01_fine_stripes": ("the same stripes at ~3x the frequency (fine detail only)", _fine_stripes),
    "02_checker": ("coarse checkerboard patch", _checker),
    "03_fine_dots": ("dense grid of small dots (fine detail only)", _fine_dots),
    "04_dots": ("sparse grid of large dots", _dots),
    "05_rings": ("concentric rings (bullseye)", _rings),
    "06_triangle": ("solid triangle", _triangle),
    "07_cross": ("solid plus sign", _cross),
    "08_fine_checker": ("fine checkerboard (fine detail only)", _fine_checker),
    "09_frame": ("hollow square outline", _frame),
    "10_star": ("solid five-pointed star", _star),
    "11_zigzag": ("thick zigzag line", _zigzag),
    "12_hatch": ("cross-hatching of thin lines", _hatch),
    "13_waves": ("wavy stripes", _waves),
    "14_annulus": ("single thick ring", _annulus),
    "15_crescent": ("crescent moon", _crescent),
    "16_hexagon": ("solid hexagon", _hexagon),
    "17_fine_rings": ("concentric rings at high frequency (fine detail only)", _fine_rings),
    "18_speckle": ("fine random speckle texture patch (fine detail only)", _speckle),
    "19_mottled": ("coarse blotchy texture patch", _mottled),
    "20_spiral": ("three-arm spiral in a disc", _spiral),
    "21_pacman": ("disc with a wedge cut out", _pacman),
    "22_dumbbell": ("two discs joined by a bar", _dumbbell),
}

#: Class name -> one-line description, in class-index order (for the README and the demo).
CLASS_DESCRIPTIONS: dict[str, str] = {name: desc for name, (desc, _) in _CLASSES.items()}
#: All available class names in class-index order; a dataset with k classes uses the first k.
CLASS_NAMES: tuple[str, ...] = tuple(_CLASSES)
_DRAW = tuple(fn for _, fn in _CLASSES.values())
_MIN_CLASSES = 2


# --------------------------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------------------------

def _sample_size(rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int]:
    """Height and width, each uniform in [lo, hi], rejected until the aspect ratio is <= 2:1."""
    for _ in range(64):
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        if max(h, w) <= _MAX_ASPECT * min(h, w):
            return h, w
    return h, int(np.clip(w, max(lo, math.ceil(h / _MAX_ASPECT)), min(hi, int(h * _MAX_ASPECT))))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 luma weights


def _colour(rng: np.random.Generator, luma: float) -> np.ndarray:
    """A random RGB colour with exactly the given luma: a random hue/saturation, scaled towards
    black or white. Contrast is controlled through luma because that is what edges are made of."""
    c = rng.random(3, dtype=np.float32)
    now = float(c @ _LUMA)
    if now > luma:
        return c * np.float32(luma / max(now, 1e-6))
    return np.float32(1) - (1 - c) * np.float32((1 - luma) / max(1 - now, 1e-6))


def _background(rng: np.random.Generator, h: int, w: int, luma: float) -> np.ndarray:
    """A textured background around a base luma: a linear gradient, low-frequency colour blobs,
    or a flat colour with coarse-grained noise. Its variation stays below the object contrast."""
    kind = rng.integers(3)
    if kind == 0:  # two-colour linear gradient in a random direction
        c1, c2 = (_colour(rng, float(np.clip(luma + d, 0, 1))) for d in rng.uniform(-0.15, 0.15, 2))
        t = rng.uniform(0, 2 * np.pi)
        ramp = (np.arange(w, dtype=np.float32) * np.float32(np.cos(t) / w)
                + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(t) / h))
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        return c1 + (c2 - c1) * ramp[..., None]
    base = _colour(rng, luma)
    if kind == 1:  # smooth colour blobs: a tiny random grid upsampled bicubically
        gh, gw = (int(v) for v in rng.integers(2, 6, size=2))
        cells = np.clip(base + rng.uniform(0.15, 0.4) * (rng.random((gh, gw, 3)) - 0.5), 0, 1)
        small = (cells * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32) / 255
    # flat colour with coarse-grained noise (blocks of 2-6 px), like a rough surface
    cell = int(rng.integers(2, 7))
    noise = rng.standard_normal((h // cell + 1, w // cell + 1, 3), dtype=np.float32)
    noise = np.repeat(np.repeat(noise, cell, 0), cell, 1)[:h, :w]
    return base + rng.uniform(0.02, 0.08) * noise


def _draw(cls: int, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Draw one image of class `cls`: HxWx3 uint8."""
    unit = math.sqrt(h * w)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    r = rng.uniform(0.28, 0.45) * min(h, w)
    theta = rng.uniform(0, 2 * np.pi)
    sa, sb = rng.uniform(0.8, 1.25, size=2)  # mild anisotropic stretch of the object
    # 1-D coordinates broadcast into the full grid only once, in the rotation
    dx = np.arange(w, dtype=np.float32) - np.float32(cx)
    dy = np.arange(h, dtype=np.float32)[:, None] - np.float32(cy)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    x, y = dx * c + dy * s, dy * c - dx * s
    g = _Geom(x=x, y=y, a=x / np.float32(r * sa), b=y / np.float32(r * sb), r=float(r), unit=unit)

    bg_luma = float(rng.uniform(0.1, 0.9))
    bg = _background(rng, h, w, bg_luma)
    alpha, pattern = _DRAW[cls](g, rng)
    # Contrast (in luma) varies from modest to strong but never vanishes: an invisible object or
    # pattern would only add label noise. Colours are otherwise random, so colour says nothing.
    if pattern is None:  # solid shape, set off from the background, with gentle shading
        d = float(rng.uniform(0.25, 0.6))
        up = bg_luma + d <= 1 and (bg_luma - d < 0 or rng.random() < 0.5)
        c1 = _colour(rng, float(np.clip(bg_luma + d if up else bg_luma - d, 0, 1)))
        shade = 1.0 + rng.uniform(-0.15, 0.15) * np.clip(g.a, -1, 1)
        fg = c1 * shade[..., None]
    else:  # two colours for the pattern, whose mean may be close to the background
        d = float(rng.uniform(0.3, 0.8))
        lo = float(rng.uniform(0, 1 - d))
        c1, c2 = _colour(rng, lo), _colour(rng, lo + d)
        if rng.random() < 0.5:
            c1, c2 = c2, c1
        fg = c2 + (c1 - c2) * pattern[..., None]
    img = bg + (fg - bg) * alpha[..., None]
    # Sensor-like pixel noise; kept weak so it does not drown the fine classes.
    img += rng.uniform(0.0, 0.03) * rng.standard_normal((h, w, 3), dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class _Job:
    path: str
    entropy: tuple[int, ...]  # seeds this image's RNG: (seed, split id, class, index)
    cls: int
    size_range: tuple[int, int]
    quality_range: tuple[int, int]


def _write(job: _Job) -> None:
    rng = np.random.default_rng(list(job.entropy))
    h, w = _sample_size(rng, *job.size_range)
    quality = int(rng.integers(job.quality_range[0], job.quality_range[1] + 1))
    pixels = _draw(job.cls, rng, h, w)
    # No exif/icc and optimize=False: the bytes depend only on the pixels and the quality.
    Image.fromarray(pixels, "RGB").save(
        job.path, format="JPEG", quality=quality, optimize=False, progressive=False,
        subsampling="4:2:0")


def _run_jobs(jobs: list[_Job], workers: int | None, progress: bool, desc: str) -> None:
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress) as bar:
        if workers == 1:  # no pool: cheaper for tiny runs and easier to debug
            for job in jobs:
                _write(job)
                bar.update()
            return
        chunk = max(1, min(16, len(jobs) // (workers * 8)))
        # fork where there is one: workers start at once, and unlike spawn/forkserver it does not
        # re-import the caller's __main__ (a script without a main guard would run again).
        # The workers only use numpy and PIL, never the parent's threads (torch, DALI).
        ctx = (multiprocessing.get_context("fork")
               if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for _ in pool.map(_write, jobs, chunksize=chunk):
                bar.update()


# --------------------------------------------------------------------------------------------
# Argument checks, output directory handling and the completion marker
# --------------------------------------------------------------------------------------------

def _int(name: str, value, lo: int, hi: int | None = None) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise UserError(f"{name}={value!r} is not an integer") from None
    if v < lo or (hi is not None and v > hi):
        valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise UserError(f"{name}={v} is out of range; valid: {valid}")
    return v


def _check_classes(classes) -> int:
    return _int("classes", classes, _MIN_CLASSES, len(CLASS_NAMES))


def _check_workers(workers) -> int | None:
    return None if workers is None else _int("workers", workers, 1)


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _claim(root: Path, kind: str, ours: list[Path]) -> None:
    """Prepare `root` for writing: delete `ours` (a previous run's output) only if a marker proves
    this module wrote it, as the same kind of dataset; refuse to write into anything else."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a directory; choose an empty or new directory")
    root.mkdir(parents=True, exist_ok=True)
    marker = _read_marker(root)
    try:
        busy = (root / _BUSY_NAME).read_text().strip()
    except OSError:
        busy = None
    owner = busy or (marker or {}).get("kind")
    if owner != kind and any(root.iterdir()):
        what = f"holds a {owner} dataset" if owner else "was not written by mixtrain_dali.synthetic"
        raise UserError(f"{root} is not empty and {what}; choose an empty or new directory")
    (root / _BUSY_NAME).write_text(kind + "\n")
    (root / MARKER_NAME).unlink(missing_ok=True)  # an interrupted run must not look complete
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p)


def _finish(root: Path, record: dict) -> None:
    tmp = root / (MARKER_NAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / MARKER_NAME)  # atomic: the marker is either absent or complete
    (root / _BUSY_NAME).unlink(missing_ok=True)


def _record(kind: str, args: dict) -> dict:
    return {"kind": kind, "version": GENERATOR_VERSION, "args": args}


def _bound_args(fn: Callable, root, kwargs: dict, drop: tuple[str, ...]) -> dict:
    """fn's output-determining arguments with defaults filled in, as stored in the marker.
    An unknown keyword is a TypeError, as in a call of fn."""
    bound = inspect.signature(fn).bind(root, **kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k not in drop and k != "root"}
    # tuples -> lists, as they come back from the file; odd types (numpy ints) simply won't match
    return json.loads(json.dumps(args, default=repr))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def make_synthetic(root, classes: int = 10, train_per_class: int = 100, val_per_class: int = 25,
                   seed: int = 0, min_size: int = 64, max_size: int = 512, progress: bool = True,
                   workers: int | None = None) -> Path:
    """Write a synthetic ImageFolder dataset: ``root/{train,val}/<class>/<index>.jpg``.

    Classes are the first `classes` entries of :data:`CLASS_NAMES`. Image sides are drawn
    independently from [min_size, max_size] (aspect ratio at most 2:1), JPEG quality from 60..95.
    The same arguments give byte-identical files for any `workers` (default: all CPUs).
    Raises :class:`UserError` for out-of-range arguments or a non-empty foreign `root`.
    """
    classes = _check_classes(classes)
    train_per_class = _int("train_per_class", train_per_class, 1)
    val_per_class = _int("val_per_class", val_per_class, 1)
    seed = _int("seed", seed, 0)
    min_size = _int("min_size", min_size, _MIN_SIDE)
    max_size = _int("max_size", max_size, 1)
    if min_size > max_size:
        raise UserError(f"min_size={min_size} is larger than max_size={max_size}; "
                        "need min_size <= max_size")
    workers = _check_workers(workers)

    root = Path(root)
    _claim(root, "synthetic", [root / "train", root / "val"])
    jobs = []
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for cls, name in enumerate(CLASS_NAMES[:classes]):
            d = root / split / name
            d.mkdir(parents=True)
            jobs += [_Job(str(d / f"{i:05d}.jpg"), (seed, _SPLIT_IDS[split], cls, i), cls,
                          (min_size, max_size), (60, 95)) for i in range(per_class)]
    _run_jobs(jobs, workers, progress, "synthetic data")
    args = dict(classes=classes, train_per_class=train_per_class, val_per_class=val_per_class,
                seed=seed, min_size=min_size, max_size=max_size)
    _finish(root, _record("synthetic", args))
    return root


def synthetic_is_complete(root, **same_kwargs) -> bool:
    """True if `root` holds a finished :func:`make_synthetic` run with these arguments (defaults
    filled in; `progress` and `workers` do not matter). False for a missing or interrupted run or
    different arguments, so a caller can skip regeneration safely."""
    args = _bound_args(make_synthetic, root, same_kwargs, ("progress", "workers"))
    root = Path(root)
    return (_read_marker(root) == _record("synthetic", args)
            and (root / "train").is_dir() and (root / "val").is_dir())


def make_benchmark_jpegs(root, n: int, size_range=(400, 500), quality: int = 90,
                         classes: int = 10, seed: int = 0, progress=True) -> Path:
    """Write `n` JPEGs as a train-style ImageFolder, ``root/<class>/<index>.jpg``, for loader
    throughput benchmarks: the same drawings at ImageNet-like size (sides uniform in `size_range`,
    ~400-500 px like a typical ImageNet photo) and compression (fixed `quality`).

    Images are dealt to classes round-robin. Deterministic like :func:`make_synthetic`.
    """
    n = _int("n", n, 1)
    classes = _check_classes(classes)
    try:
        lo, hi = size_range
    except (TypeError, ValueError):
        raise UserError(f"size_range={size_range!r} must be a pair (min, max)") from None
    lo, hi = _int("size_range[0]", lo, _MIN_SIDE), _int("size_range[1]", hi, 1)
    if lo > hi:
        raise UserError(f"size_range={size_range!r} has min > max; need min <= max")
    quality = _int("quality", quality, 1, 100)
    seed = _int("seed", seed, 0)

    root = Path(root)
    _claim(root, "benchmark", [root / name for name in CLASS_NAMES])
    names = CLASS_NAMES[:classes]
    for name in names:
        (root / name).mkdir()
    jobs = [_Job(str(root / names[i % classes] / f"{i // classes:05d}.jpg"),
                 (seed, _SPLIT_IDS["benchmark"], i % classes, i // classes), i % classes,
                 (lo, hi), (quality, quality)) for i in range(n)]
    _run_jobs(jobs, None, progress, "benchmark JPEGs")
    args = dict(n=n, size_range=[lo, hi], quality=quality, classes=classes, seed=seed)
    _finish(root, _record("benchmark", args))
    return root


def benchmark_jpegs_is_complete(root, **same_kwargs) -> bool:
    """Like :func:`synthetic_is_complete`, for :func:`make_benchmark_jpegs`."""
    args = _bound_args(make_benchmark_jpegs, root, same_kwargs, ("progress",))
    return _read_marker(Path(root)) == _record("benchmark", args)


def ensure_synthetic(root, progress: bool = True, **kwargs) -> Path:
    """Reuse a finished :func:`make_synthetic` run in `root` with these arguments, else write it."""
    if synthetic_is_complete(root, **kwargs):
        print(f"using the cached synthetic dataset in {root}", flush=True)
        return Path(root)
    print(f"writing the synthetic dataset to {root} ...", flush=True)
    return make_synthetic(root, progress=progress, **kwargs)


def ensure_benchmark_jpegs(root, progress: bool = True, **kwargs) -> Path:
    """Reuse a finished :func:`make_benchmark_jpegs` run in `root` with these arguments, else write it."""
    if benchmark_jpegs_is_complete(root, **kwargs):
        print(f"using the cached benchmark JPEGs in {root}", flush=True)
        return Path(root)
    print(f"writing {kwargs.get('n')} benchmark JPEGs to {root} ...", flush=True)
    return make_benchmark_jpegs(root, progress=progress, **kwargs)


if __name__ == "__main__":  # pragma: no cover - manual use
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mixtrain_dali.synthetic OUTPUT_DIR")
    print(make_synthetic(sys.argv[1]))
