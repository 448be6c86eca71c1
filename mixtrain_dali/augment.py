"""Per-image augmentations in the DALI train graph (docs/architecture.md, "Data flow of one
epoch", step 3): each constituent image is augmented at its tile size, after its crop and
resize and before `multi_paste`, so a mixed tile is augmented as a full image would be.

In the order they apply (each only when asked for):

1. policy: DALI's `nvidia.dali.auto_aug` AutoAugment (ImageNet policy), RandAugment
   (n ops of magnitude bin m of `magnitude_bins`, torchvision's convention) or
   TrivialAugment Wide, on uint8 HWC; translations are relative to the tile's size;
2. colour jitter (`color_jitter = [b, c, s, h]`): brightness, contrast and saturation factors
   drawn uniformly from [max(0, 1 - x), 1 + x] and a hue shift from [-h, h] of the colour
   circle, torchvision's ColorJitter ranges, in one `fn.color_twist` (DALI's fixed order, and
   contrast about mid-grey rather than torchvision's random order and the image's mean grey);
3. the user's hook (`augment=`): any DALI operators, uint8 HWC in and out, same shape;
4. (flip and normalise: `fn.crop_mirror_normalize`, as without augmentation);
5. random erasing (timm's / torchvision's RandomErasing): with probability `erase_prob` one
   rectangle of area fraction ~ U(erase_scale) and aspect ratio h/w log-uniform in
   `erase_ratio` at a uniform position is filled with `erase_value`. It comes after
   normalisation, as in timm and torchvision, so `erase_value = 0` is the dataset's mean
   colour (timm's mode "const"). As there, a draw that does not fit is drawn again, up to
   10 times, and nothing is erased when none fits.

Everything here draws from DALI's own RNG, unlike crop windows and flips, which come from
the host's plan: the loader builds the pipeline anew every epoch, seeded from (seed, rank,
epoch), so a resumed run draws what the uninterrupted one did.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable

from nvidia.dali import fn, types
from nvidia.dali import math as dmath

from .config import DataConfig, check_augment
from .errors import UserError

Hook = Callable[[object], object]  # DataNode (uint8 HWC, tile size) -> DataNode (same)


@dataclass(frozen=True)
class Augment:
    """What the train graph does to each image between its resize and its paste."""

    policy: str = "none"
    rand_n: int = 2
    rand_m: int = 9
    magnitude_bins: int = 31
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    erase_prob: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 1 / 3)
    erase_ratio: tuple[float, float] = (0.3, 1 / 0.3)
    erase_value: float = 0.0
    hook: Hook | None = None

    def __post_init__(self) -> None:
        check_augment(self.policy, self.rand_n, self.rand_m, self.magnitude_bins, self.color_jitter,
                      self.erase_prob, self.erase_scale, self.erase_ratio)
        if self.hook is not None and not callable(self.hook):
            raise UserError(f"augment={self.hook!r} is not callable; pass a function that takes "
                            "and returns a DALI DataNode (uint8 HWC)")

    @classmethod
    def from_config(cls, data: DataConfig, hook: Hook | None = None) -> Augment | None:
        """The augmentations of `data` (and the user's hook) as the graph takes them, or None
        when there are none (the graph is then the plain one)."""
        if (hook is None and data.auto_augment == "none" and not any(data.color_jitter)
                and data.erase_prob == 0):
            return None
        return cls(data.auto_augment, data.rand_n, data.rand_m, data.magnitude_bins,
                   tuple(data.color_jitter), data.erase_prob, tuple(data.erase_scale),
                   tuple(data.erase_ratio), data.erase_value, hook)

    @property
    def conditionals(self) -> bool:
        """DALI's auto_aug policies pick their operations with `if`: the pipeline needs
        `enable_conditionals=True`."""
        return self.policy != "none"


def before_normalise(images, aug: Augment, tile_hw):
    """Steps 1-3 on uint8 HWC images of size `tile_hw` ([h, w] constants, or a per-sample
    CPU DataNode of two floats)."""
    if aug.policy != "none":
        images = _policy(images, aug, tile_hw)
    b, c, s, h = aug.color_jitter
    if b or c or s or h:
        twist = {}
        for name, x in (("brightness", b), ("contrast", c), ("saturation", s)):
            if x:
                twist[name] = fn.random.uniform(range=[max(0.0, 1.0 - x), 1.0 + x])
        if h:
            twist["hue"] = fn.random.uniform(range=[-360.0 * h, 360.0 * h])  # DALI: degrees
        images = fn.color_twist(images, **twist)
    if aug.hook is not None:
        images = aug.hook(images)
    return images


@contextlib.contextmanager
def quiet_dali_deprecations():
    """DALI 2.4's own auto_aug still calls fn.experimental.equalize/filter, deprecated by DALI
    itself: without this, warnings at every graph trace (every epoch with augmentations) that
    the user can do nothing about. DALI resets the warning filters around its own warning, so
    they are dropped where they would be shown; any other warning is shown as usual."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if issubclass(category, DeprecationWarning) and "fn.experimental." in text and "now deprecated" in text:
            return
        shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _policy(images, aug: Augment, tile_hw):
    from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment

    shape = tuple(tile_hw) if isinstance(tile_hw, (list, tuple)) else tile_hw
    if aug.policy == "autoaugment":
        return auto_augment.auto_augment(images, "image_net", shape=shape)
    if aug.policy == "randaugment":
        return rand_augment.rand_augment(images, n=aug.rand_n, m=aug.rand_m,
                                         num_magnitude_bins=aug.magnitude_bins, shape=shape)
    return trivial_augment.trivial_augment_wide(images, num_magnitude_bins=aug.magnitude_bins,
                                                shape=shape)


def after_normalise(images, aug: Augment, tile_hw):
    """Step 5 (random erasing) on normalised float HWC images."""
    if aug.erase_prob <= 0:
        return images
    anchor, shape = erase_window(aug, tile_hw)
    return fn.erase(images, anchor=anchor, shape=shape, axis_names="HW", normalized_anchor=True,
                    normalized_shape=True, fill_value=float(aug.erase_value))


ERASE_ATTEMPTS = 10  # timm's and torchvision's RandomErasing: up to 10 draws, then no erasing


def erase_window(aug: Augment, tile_hw):
    """Relative (anchor, shape), (y, x) each, of every image's erased rectangle, as timm and
    torchvision draw it: area a ~ U(scale), r = h / w log-uniform in ratio, so h = sqrt(a r W / H)
    and w = sqrt(a H / (r W)) as fractions of the tile; the first of ERASE_ATTEMPTS draws that
    fits inside the tile is taken, at a uniform position; shape 0 (nothing erased) when none
    fits or the coin (probability erase_prob) says no."""
    n = ERASE_ATTEMPTS
    area = _uniform(*aug.erase_scale, n)
    log_r = _uniform(math.log(aug.erase_ratio[0]), math.log(aug.erase_ratio[1]), n)
    if isinstance(tile_hw, (list, tuple)):
        w_over_h = float(tile_hw[1]) / float(tile_hw[0])
    else:
        w_over_h = tile_hw[1] / tile_hw[0]
    rh_all = dmath.sqrt(area * dmath.exp(log_r) * w_over_h)
    rw_all = dmath.sqrt(area / (dmath.exp(log_r) * w_over_h))
    found = fn.cast(fn.random.coin_flip(probability=1.0 - float(aug.erase_prob)), dtype=types.FLOAT)
    done = found  # 1: skip (the coin said no, or an earlier draw fitted)
    rh = rw = 0.0
    for i in range(n):
        take = (1.0 - done) * fn.cast((rh_all[i] < 1.0) & (rw_all[i] < 1.0), dtype=types.FLOAT)
        rh, rw = rh + take * rh_all[i], rw + take * rw_all[i]
        done = done + take
    uy, ux = fn.random.uniform(range=[0.0, 1.0]), fn.random.uniform(range=[0.0, 1.0])
    return fn.stack(uy * (1.0 - rh), ux * (1.0 - rw)), fn.stack(rh, rw)


def _uniform(lo: float, hi: float, n: int):
    """n draws of U(lo, hi) per sample; lo itself when hi == lo (DALI wants hi > lo)."""
    unit = fn.random.uniform(range=[0.0, 1.0], shape=[n])
    return lo + (hi - lo) * unit
