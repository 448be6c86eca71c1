"""Mixup and CutMix: batch-level label mixing in torch, timm's semantics (timm/data/mixup.py,
`mode="batch"`), applied by the training loop to a plain batch (no MixTrain pastes).

Per batch, with probability `prob`: lambda ~ Beta(mixup_alpha, mixup_alpha) for mixup, or
~ Beta(cutmix_alpha, cutmix_alpha) for cutmix (with both on, cutmix with probability
`switch_prob`). The batch is mixed with itself reversed (`x.flip(0)`): mixup blends
`lam * x + (1 - lam) * x_rev`; cutmix pastes a box of x_rev of side ratio sqrt(1 - lam),
centred uniformly and clipped to the image, into x, and lambda becomes the kept area
(timm's `correct_lam`). Targets: `lam * y + (1 - lam) * y_rev`, y one-hot smoothed as timm
(off = smoothing / C, on = 1 - smoothing + off); train with `soft_cross_entropy`.

Not with MixTrain's composites: their constituents each keep a label and a loss of their
own, and a blended or pasted partner would cross the tile borders (config.Config refuses
the combination). With pruning (`method = "prune"`) a sample's recorded loss is its mixed
image's loss against its mixed target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError


class Mixup:
    """`images, targets = Mixup(...)(images, labels)`: (B, C, H, W) float images and (B,)
    class ids -> mixed images (in place, as timm) and (B, num_classes) soft targets."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1,
                 seed=None):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError(f"mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha} must be >= 0")
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1):
            raise UserError(f"prob={prob}, switch_prob={switch_prob} must be in [0, 1]")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"label_smoothing={label_smoothing} is outside [0, 1)")
        if num_classes < 1:
            raise UserError(f"num_classes={num_classes} must be >= 1")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.rng = np.random.default_rng(seed)
        self.last: dict = {}  # what the last call drew: lam, cutmix, box (for logs and tests)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, cutmix = self._draw()
        box = None
        if lam < 1.0:
            if cutmix:
                box, lam = cutmix_box(x.shape[-2:], lam, self.rng)
                y0, y1, x0, x1 = box
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            else:
                partner = x.flip(0).mul_(1.0 - lam)  # a copy, taken before x changes
                x.mul_(lam).add_(partner)
        self.last = {"lam": lam, "cutmix": cutmix, "box": box}
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing)

    def _draw(self) -> tuple[float, bool]:
        """(lam, cutmix?) for one batch: lam = 1 (no mixing) with probability 1 - prob."""
        if self.rng.random() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = bool(self.rng.random() < self.switch_prob)
        else:
            cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), cutmix


def cutmix_box(hw, lam: float, rng: np.random.Generator) -> tuple[tuple[int, int, int, int], float]:
    """timm's rand_bbox + correct_lam: a box of sides sqrt(1 - lam) of the image's, centre
    uniform over the image, clipped to it; returns ((y0, y1, x0, x1), 1 - box area / image area)."""
    h, w = int(hw[0]), int(hw[1])
    ratio = np.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = int(np.clip(cy - ch // 2, 0, h)), int(np.clip(cy + ch // 2, 0, h))
    x0, x1 = int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cx + cw // 2, 0, w))
    return (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


def mixup_target(target: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """timm's mixup_target: smoothed one-hot of `target` blended with the reversed batch's."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y = torch.full((len(target), num_classes), off, device=target.device, dtype=torch.float32)
    y.scatter_(1, target.long().view(-1, 1), on)
    return y * lam + y.flip(0) * (1.0 - lam)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy against soft targets, `-sum_c t_c log softmax(z)_c` (B,)."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1)
