"""Configuration: one dataclass per concern, loaded from TOML, saved beside every run.

`[data]` is the pipeline (sizes, batch, device), `[mix]` the controller's knobs, `[train]`
the reference training loop. Every value is checked when the object is made, so a bad
value fails at start-up with one line naming it and what would be valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


SCHEDULES = ("linear", "flat", "resize")
SELECTIONS = ("random", "loss")
AUTO_AUGMENT = ("none", "autoaugment", "randaugment", "trivialaugment")


def check_augment(policy, rand_n, rand_m, magnitude_bins, color_jitter, erase_prob, erase_scale,
                  erase_ratio) -> None:
    """The checks of the per-image augmentations (DataConfig, augment.Augment; augment.py
    imports this module, never the other way round)."""
    _check(policy in AUTO_AUGMENT, f"auto_augment={policy!r}; valid: {', '.join(AUTO_AUGMENT)}")
    _check(magnitude_bins >= 2, f"magnitude_bins={magnitude_bins} must be >= 2")
    _check(rand_n >= 1, f"rand_n={rand_n} must be >= 1 (operations per image)")
    _check(0 <= rand_m < magnitude_bins, f"rand_m={rand_m} is outside [0, {magnitude_bins - 1}] "
                                         f"(a magnitude bin of magnitude_bins={magnitude_bins})")
    _check(len(color_jitter) == 4 and all(x >= 0 for x in color_jitter) and color_jitter[3] <= 0.5,
           f"color_jitter={list(color_jitter)} must be [brightness, contrast, saturation, hue], "
           "each >= 0, hue <= 0.5")
    _check(0 <= erase_prob <= 1, f"erase_prob={erase_prob} is outside [0, 1]")
    _check(len(erase_scale) == 2 and 0 < erase_scale[0] <= erase_scale[1] <= 1,
           f"erase_scale={list(erase_scale)} must be [lo, hi] with 0 < lo <= hi <= 1")
    _check(len(erase_ratio) == 2 and 0 < erase_ratio[0] <= erase_ratio[1],
           f"erase_ratio={list(erase_ratio)} must be [lo, hi] with 0 < lo <= hi")


@dataclass
class DataConfig:
    image_size: int = 224            # train crop and canvas side
    val_size: int | None = None      # val centre crop (the test resolution); None = image_size.
                                     # Above the train crop it undoes the objects' apparent
                                     # shrinking under random-resized crops (FixRes; timm's
                                     # test_input_size)
    val_resize: int | None = None    # val shorter side; None = val_size * 256 / 224
    batch_size: int = 256            # composites per step (per rank)
    drop_last: bool = False
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])   # random-resized-crop area
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # and aspect ratio
    crop_tries: int = 1              # 1: a window that does not fit shrinks to fit; N > 1: the first
                                     # of N draws that fits (torchvision's rule: 10)
    device: str = "auto"             # auto | cpu | gpu (DALI decode and augment)
    threads: int = 0                 # DALI CPU threads; 0 = min(cores, 8)
    prefetch: int = 2                # DALI prefetch queue depth
    read: str = "ahead"              # train files: ahead (read prefetch + 1 batches ahead on host
                                     # threads; readahead.py; 1.06x the loader's images/s on 2 CPU
                                     # cores, results/loader_throughput_cpu.md) | graph
                                     # (fn.io.file.read in the DALI graph)
    min_image_size: int | None = None  # progressive resizing (FFCV-style): train crop starts here ...
    resize_ramp: list[float] = field(default_factory=lambda: [0.0, 0.75])  # ... and grows to image_size
                                     # linearly between these fractions of the epochs
    crop_pct: float | None = None    # val: resize the shorter side to image_size / crop_pct (timm);
                                     # None = val_resize's 256/224 (crop_pct 0.875)
    # per-image augmentations in the DALI graph, at each image's tile size (augment.py)
    auto_augment: str = "none"       # none | autoaugment (ImageNet policy) | randaugment | trivialaugment
    rand_n: int = 2                  # randaugment: operations per image ...
    rand_m: int = 9                  # ... at magnitude bin m of magnitude_bins (torchvision's m)
    magnitude_bins: int = 31         # randaugment / trivialaugment magnitude bins
    color_jitter: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])  # brightness,
                                     # contrast, saturation, hue (torchvision ColorJitter ranges)
    erase_prob: float = 0.0          # random erasing probability per image (timm's re_prob) ...
    erase_scale: list[float] = field(default_factory=lambda: [0.02, 1 / 3])  # ... area fraction
    erase_ratio: list[float] = field(default_factory=lambda: [0.3, 1 / 0.3])  # ... aspect h / w
    erase_value: float = 0.0         # ... fill, after normalisation (0 = the mean colour)
    # batch-level label mixing in the training loop (mixup.py; refused with MixTrain's pastes)
    mixup_alpha: float = 0.0         # mixup lambda ~ Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0        # cutmix lambda ~ Beta(alpha, alpha); 0 = off
    mixup_prob: float = 1.0          # probability a batch is mixed up / cut-mixed
    mixup_switch_prob: float = 0.5   # with both on: probability of cutmix instead of mixup

    def __post_init__(self) -> None:
        _check(self.image_size >= 16, f"image_size={self.image_size} is too small; use >= 16")
        if self.val_size is None:
            self.val_size = self.image_size
        _check(self.val_size >= 16, f"val_size={self.val_size} is too small; use >= 16")
        _check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        _check(self.device in ("auto", "cpu", "gpu"), f"device={self.device!r}; valid: auto, cpu, gpu")
        _check(self.threads >= 0, f"threads={self.threads} must be >= 0 (0 = automatic)")
        _check(self.prefetch >= 1, f"prefetch={self.prefetch} must be >= 1")
        _check(self.read in ("graph", "ahead"), f"read={self.read!r}; valid: graph, ahead")
        _check(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1,
               f"scale={self.scale} must be [lo, hi] with 0 < lo <= hi <= 1")
        _check(len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1],
               f"ratio={self.ratio} must be [lo, hi] with 0 < lo <= hi")
        _check(isinstance(self.crop_tries, int) and not isinstance(self.crop_tries, bool)
               and 1 <= self.crop_tries <= 100,
               f"crop_tries={self.crop_tries!r} must be an integer from 1 to 100 (torchvision's rule: 10)")
        if self.min_image_size is not None:
            _check(16 <= self.min_image_size <= self.image_size,
                   f"min_image_size={self.min_image_size} must be in [16, image_size={self.image_size}]")
            if self.min_image_size == self.image_size:  # nothing to grow: the same as off, so
                self.min_image_size = None              # `--min-image-size S` turns a recipe's off
        _check(len(self.resize_ramp) == 2 and 0 <= self.resize_ramp[0] <= self.resize_ramp[1] <= 1,
               f"resize_ramp={self.resize_ramp} must be [start, end] with 0 <= start <= end <= 1")
        if self.crop_pct is not None:
            _check(0 < self.crop_pct <= 1, f"crop_pct={self.crop_pct} is outside (0, 1]")
            from_pct = math.floor(self.val_size / self.crop_pct)  # timm's scale_size
            _check(self.val_resize is None or self.val_resize == from_pct,
                   f"val_resize={self.val_resize} and crop_pct={self.crop_pct} disagree (val_size "
                   f"{self.val_size} / crop_pct = {from_pct}): give one of them")
            self.val_resize = from_pct
        if self.val_resize is None:
            self.val_resize = int(round(self.val_size * 256 / 224))
        _check(self.val_resize >= self.val_size,
               f"val_resize={self.val_resize} is below val_size={self.val_size}: the centre crop must fit "
               f"in the resized image; use val_resize >= {self.val_size}")
        check_augment(self.auto_augment, self.rand_n, self.rand_m, self.magnitude_bins, self.color_jitter,
                      self.erase_prob, self.erase_scale, self.erase_ratio)
        for name in ("mixup_alpha", "cutmix_alpha"):
            _check(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0 (0 = off)")
        for name in ("mixup_prob", "mixup_switch_prob"):
            _check(0 <= getattr(self, name) <= 1, f"{name}={getattr(self, name)} is outside [0, 1]")

    @property
    def mixes_labels(self) -> bool:
        """Whether the training loop applies mixup or cutmix (mixup.Mixup)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mixup_prob > 0

    def describe_augment(self) -> str:
        """The augmentations in words for the start-up summary; "" when there are none."""
        parts = []
        if self.auto_augment == "randaugment":
            parts.append(f"randaugment n={self.rand_n} m={self.rand_m}/{self.magnitude_bins - 1}")
        elif self.auto_augment != "none":
            parts.append(self.auto_augment)
        if any(self.color_jitter):
            parts.append("colour jitter " + " ".join(f"{n}={x:g}" for n, x in zip("bcsh", self.color_jitter) if x))
        if self.erase_prob:
            parts.append(f"random erasing p={self.erase_prob:g}")
        if self.mixes_labels:
            parts.append(f"mixup {self.mixup_alpha:g} / cutmix {self.cutmix_alpha:g} (p={self.mixup_prob:g})")
        return ", ".join(parts)

    def resolved_threads(self) -> int:
        return self.threads or max(1, min(os.cpu_count() or 1, 8))

    def image_size_at(self, epoch: int, epochs: int | None) -> int:
        """The train crop of `epoch` (0-based) of `epochs`: image_size, or under progressive
        resizing the ramp_size from min_image_size to image_size over resize_ramp."""
        if self.min_image_size is None or not epochs:
            return self.image_size
        return ramp_size(epoch, epochs, self.min_image_size, self.image_size, self.resize_ramp)


def ramp_size(epoch: int, epochs: int, lo_size: int, hi_size: int, ramp) -> int:
    """Progressive resizing's side at `epoch` (0-based) of `epochs`: lo_size until ramp[0] of
    the run, then linearly up to hi_size at ramp[1], rounded down to a multiple of 8 (FFCV
    rounds to 32) and kept within [lo_size, hi_size]."""
    lo, hi = (r * epochs for r in ramp)
    t = 1.0 if epoch >= hi else 0.0 if epoch < lo or hi <= lo else (epoch - lo) / (hi - lo)
    size = lo_size + t * (hi_size - lo_size)
    return max(lo_size, min(hi_size, int(size) // 8 * 8))


@dataclass
class MixConfig:
    enabled: bool = False
    method: str = "mix"              # mix: MixTrain; prune: InfoBatch-style loss-based pruning
    k: int = 4                       # constituents per composite, 1..4 (1 = no mixing)
    fraction: float | None = None    # share of samples mixed per mixing epoch (linear: in the first) ...
    target_speedup: float | None = None  # ... or the ideal epoch speedup S (linear: the mean over
                                     # the mixing epochs); neither: S = 1.6 flat, fraction 1 linear
    warmup_epochs: int | None = None  # first epochs unmixed, so every sample has a loss; unset:
                                     # 0 under schedule resize (it needs no loss), else 1
    final_full_fraction: float | None = None  # last part of training unmixed; unset: 0 under
                                     # schedule resize (its ramp ends unmixed), else 0.125
    selection: str = "random"        # random: any sample (one with no loss yet too); loss: random
                                     # among the below-threshold ones (InfoBatch's rule)
    threshold: str = "mean"          # mean | median of the loss table
    gamma: float = 0.0               # area share ~ (loss + eps) ** gamma; 0 = equal shares (the
                                     # default: tiles of one size, so isolate runs them in one pass)
    eps: float = 0.05
    share_min: float = 0.1           # clip of each constituent's area share
    share_max: float = 0.75
    min_side_frac: float = 0.125     # no tile side below this fraction of the canvas side
    self_correct: bool | None = None  # a sample whose mixed loss exceeded the threshold is unmixed
                                     # next; unset: off under schedule resize (it would move the
                                     # epoch's cost off the ramp), else on
    schedule: str | None = None      # resize: each epoch costs what progressive resizing's does
                                     # (ramp below), the mixed share decaying to 0 (best at equal
                                     # time, see the README); linear: the fraction decays linearly
                                     # to 0 over the mixing epochs; flat: the same fraction every
                                     # mixing epoch; unset: resize, or linear where a fraction or
                                     # target_speedup is given or the method is prune
    ramp: list[float] = field(default_factory=lambda: [0.0, 0.75])  # resize: the equivalent side
                                     # grows from the tile's to the canvas's between these
                                     # fractions of the epochs (DataConfig.resize_ramp's rule)
    keep_steps: bool = True          # mixing epochs keep the unmixed step count: fewer composites
                                     # per step, about batch_size samples each (as progressive
                                     # resizing keeps its steps; best on CIFAR-10 and Imagenette,
                                     # see the README); false: B composites a step, fewer steps
    isolate: bool = True             # constituents pass through the network apart: each tile is
                                     # cut out and run as an image of its own, so no feature sees
                                     # a neighbour (best at equal steps on CIFAR-10 and Imagenette,
                                     # see the README); region-pooling CNNs only, others share
                                     # the network (said at start-up); one pass per tile size

    def __post_init__(self) -> None:
        _check(1 <= self.k <= 4, f"mix k={self.k} is outside 1..4")
        _check(self.method in ("mix", "prune"), f"method={self.method!r}; valid: mix, prune")
        if self.schedule is None:
            budget = self.fraction is not None or self.target_speedup is not None
            self.schedule = "linear" if budget or self.method == "prune" else "resize"
        _check(self.schedule in SCHEDULES, f"schedule={self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        resize = self.schedule == "resize"
        if self.warmup_epochs is None:
            self.warmup_epochs = 0 if resize else 1
        if self.final_full_fraction is None:
            self.final_full_fraction = 0.0 if resize else 0.125
        if self.self_correct is None:
            self.self_correct = not resize
        if self.fraction is not None and self.target_speedup is not None:
            raise UserError("give mix fraction or target_speedup, not both")
        if self.fraction is not None:
            _check(0.0 <= self.fraction <= 1.0, f"mix fraction={self.fraction} is outside [0, 1]")
        if self.target_speedup is not None and self.k > 1:  # k = 1: mixing off, nothing to reach
            top = max_speedup(self.k) if self.method == "mix" else 100.0
            _check(1.0 <= self.target_speedup <= top,
                   f"target speedup {self.target_speedup} cannot be reached with k={self.k}: "
                   f"valid range is [1, {top:g}]")
        _check(self.warmup_epochs >= 0, f"warmup_epochs={self.warmup_epochs} must be >= 0")
        _check(0.0 <= self.final_full_fraction < 1.0,
               f"final_full_fraction={self.final_full_fraction} is outside [0, 1)")
        _check(self.selection in SELECTIONS, f"selection={self.selection!r}; valid: {', '.join(SELECTIONS)}")
        _check(self.threshold in ("mean", "median"), f"threshold={self.threshold!r}; valid: mean, median")
        _check(self.gamma >= 0, f"gamma={self.gamma} must be >= 0")
        _check(len(self.ramp) == 2 and 0 <= self.ramp[0] <= self.ramp[1] <= 1,
               f"ramp={self.ramp} must be [start, end] with 0 <= start <= end <= 1")
        _check(not (self.schedule == "resize" and self.method == "prune"),
               "schedule='resize' is for mixing (it matches progressive resizing's cost per epoch); "
               "pruning takes schedule='flat' or 'linear'")
        if self.schedule == "resize":
            _check(self.fraction is None and self.target_speedup is None,
                   f"schedule='resize' sets every epoch's fraction from the ramp: drop mix fraction="
                   f"{self.fraction} / target_speedup={self.target_speedup}, or use schedule='linear'")
        _check(self.eps > 0, f"eps={self.eps} must be > 0")
        _check(self.k == 1 or 0 < self.share_min <= 1 / self.k <= self.share_max <= 1,
               f"share_min={self.share_min}, share_max={self.share_max} must satisfy "
               f"0 < share_min <= 1/k <= share_max <= 1 for k={self.k}")
        _check(0 < self.min_side_frac <= 0.5 / max(1, math.ceil(self.k / 2)),
               f"min_side_frac={self.min_side_frac} is outside (0, {0.5 / max(1, math.ceil(self.k / 2)):g}] for k={self.k}")

    @property
    def active(self) -> bool:
        """Whether any epoch changes: mixing with k > 1, or pruning, at a non-zero budget."""
        return self.enabled and (self.k > 1 or self.method == "prune") and self.mix_fraction() > 0

    @property
    def pastes(self) -> bool:
        """Whether the DALI graph tiles composites (MixTrain), rather than one image per input."""
        return self.active and self.method == "mix"

    def mix_fraction(self) -> float:
        """The fraction f of samples mixed (or, for method=prune, skipped) in a mixing epoch
        (docs/architecture.md, "Speedup arithmetic"; pruning: S = 1 / (1 - f)); under
        schedule="linear" with a target speedup, the mean over the mixing epochs
        (controller.fraction_at)."""
        if self.fraction is not None:
            return self.fraction
        if self.target_speedup is None and self.schedule in ("linear", "resize") and self.method == "mix":
            return 1.0 if self.k > 1 else 0.0  # everything mixed in the first mixing epoch, decaying
        speedup = 1.6 if self.target_speedup is None else self.target_speedup
        if self.method == "prune":
            return 1 - 1 / speedup
        if self.k == 1:
            return 0.0
        return min(1.0, (1 - 1 / speedup) / (1 - 1 / self.k))


def max_speedup(k: int) -> float:
    return float(k)


def ideal_speedup(k: int, fraction: float) -> float:
    """S = 1 / (1 - f + f / k)."""
    return 1.0 / (1.0 - fraction + fraction / k)


def check_mixing_on_progressive(min_image_size: int | None, mix: MixConfig) -> None:
    """Mixing on top of progressive resizing needs a budget of its own: the resize schedule
    is itself matched to progressive resizing's cost (Config and TrainLoader check it)."""
    _check(not (min_image_size is not None and mix.pastes and mix.schedule == "resize"),
           f"min_image_size={min_image_size} (progressive resizing) with mix schedule 'resize': "
           "that schedule is itself matched to progressive resizing's cost; on top of progressive "
           "resizing, mixing needs a budget of its own: give mix fraction (e.g. 0.5, decaying "
           "linearly) or target_speedup, or drop min_image_size")


@dataclass
class TrainConfig:
    arch: str = "resnet18"
    stem: str = "imagenet"           # imagenet | cifar (3x3/1 stem, no max-pool: small images)
    epochs: int = 10
    optimizer: str = "sgd"           # sgd (momentum) | adamw
    lr: float = 0.1                  # for batch 256; scaled linearly with the global batch
    momentum: float = 0.9
    weight_decay: float = 5e-5
    warmup_epochs: float = 1.0       # linear lr warm-up, then cosine
    label_smoothing: float = 0.1
    amp: bool = True                 # on GPU only
    channels_last: bool = True       # model in channels_last memory, like the loader's batches
    seed: int = 0
    out: str = "runs/run"
    region_pooling: bool = True      # False: one area-weighted soft label per composite (naive mixing)
    val_interval: int = 1            # validate every N epochs, and after the last; 0 = the last only

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        _check(self.optimizer in ("sgd", "adamw"), f"optimizer={self.optimizer!r}; valid: sgd, adamw")
        _check(self.stem in ("imagenet", "cifar"), f"stem={self.stem!r}; valid: imagenet, cifar")
        _check(self.lr > 0, f"lr={self.lr} must be > 0")
        _check(0 <= self.momentum < 1, f"momentum={self.momentum} is outside [0, 1)")
        _check(self.weight_decay >= 0, f"weight_decay={self.weight_decay} must be >= 0")
        _check(self.warmup_epochs >= 0, f"warmup_epochs={self.warmup_epochs} must be >= 0")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing={self.label_smoothing} is outside [0, 1)")
        _check(self.val_interval >= 0, f"val_interval={self.val_interval} must be >= 0 (0 = the last epoch only)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_mixing_on_progressive(self.data.min_image_size, self.mix)
        _check(not (self.data.mixes_labels and self.mix.pastes),
               f"mixup_alpha={self.data.mixup_alpha} / cutmix_alpha={self.data.cutmix_alpha} cannot be "
               f"combined with MixTrain mixing (k={self.mix.k}): a composite's constituents each have "
               "their own label and loss, and a blended or pasted-in partner image would cross the "
               "tile borders; turn mixing off (or use method = \"prune\"), or set both alphas to 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "Config":
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise UserError(f"{source}: unknown section [{unknown[0]}]; valid: {', '.join(sections)}")
        kwargs = {}
        hints = typing.get_type_hints(cls)
        for name in sections:
            kwargs[name] = _section_from_dict(hints[name], raw.get(name, {}), f"{source} [{name}]")
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(to_toml(self.to_dict()))


def load_config(path: str | os.PathLike | None, overrides: dict | None = None) -> Config:
    """Read a TOML file (or nothing), then apply `{"section": {"key": value}}` overrides."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {str(p)!r} does not exist")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    return Config.from_dict(raw, source=str(path) if path else "config")


def _section_from_dict(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table of key = value")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(f"{where}: unknown key {key!r}; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where} {key}")
    return cls(**kwargs)


def _coerce(value, tp, where: str):
    """Check `value` against a field's annotation; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError:
                pass
        raise UserError(f"{where} = {value!r} has the wrong type; expected {_type_name(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} = {value!r} has the wrong type; expected a list of {_type_name(item)}")
        return [_coerce(v, item, where) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{where} = {value!r} has the wrong type; expected {_type_name(tp)}")


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def to_toml(sections: dict) -> str:
    """Flat TOML writer for Config.to_dict() (tables of scalars and lists; None is left out)."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
