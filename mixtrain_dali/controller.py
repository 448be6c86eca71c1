"""The MixTrain controller: from the loss table, the epoch and the seed, the epoch's plan.

Pure numpy; knows nothing of DALI or torch. The plan is a pure function of
(config, seed, epoch, loss table, mixed flags): the RNG is derived from (seed, epoch), so
there is no RNG state to carry and a resumed run plans exactly what the uninterrupted one
would have. Rules (docs/architecture.md, "Controller"), in the order they apply:

1. warm-up and final epochs are unmixed;
2. candidates: every sample, also one never seen (selection="random": no loss is needed,
   so mixing can start at epoch 0), or the seen samples whose last loss is at most the
   threshold (selection="loss");
3. self-correction: a sample whose loss, measured inside a composite, exceeded the
   threshold is not a candidate (it gets a full-resolution view next epoch);
4. budget: at most round(f * N) samples mixed (f the same every mixing epoch, decaying
   linearly over them, or following progressive resizing's cost: `fraction_at`), chosen
   at random among the candidates (not lowest-first, so no sample is starved of
   full-resolution views); fewer candidates give a lower speedup, which is logged;
5. random groups of k; adaptive area shares (loss + eps) ** gamma, clipped; slice-and-dice
   layout.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .config import MixConfig, ideal_speedup, ramp_size
from .errors import UserError
from .layout import layout_batch
from .plan import EpochPlan, single_plan

log = logging.getLogger(__name__)

_SALT_PLAN = 0x4D4958  # separates the plan's stream from any other use of (seed, epoch)


class MixController:
    """Plans every epoch. `epochs` is the run's length (for the final unmixed epochs).

    `side_at(epoch)`: the canvas side of `epoch` under progressive resizing (the loader's
    DataConfig.image_size_at), so that mixing on top of it tiles that epoch's canvas; None:
    `canvas` every epoch."""

    def __init__(self, config: MixConfig, num_samples: int, canvas: tuple[int, int],
                 seed: int = 0, epochs: int | None = None, side_at=None):
        self.config = config
        self.num_samples = int(num_samples)
        self.canvas = (int(canvas[0]), int(canvas[1]))
        self.side_at = side_at
        self.seed = int(seed)
        self.epochs = epochs
        if config.pastes and config.schedule == "resize" and epochs is None:
            raise UserError("mix schedule='resize' follows the run's length: give epochs= (e.g. "
                            "TrainLoader(..., epochs=E)), or use schedule='linear' or 'flat'")
        self._warned_budget = False  # the shortfall below is said once a run, not every epoch

    def canvas_at(self, epoch: int) -> tuple[int, int]:
        """The canvas (h, w) that `epoch`'s composites tile: `canvas`, or a square of
        progressive resizing's side that epoch."""
        if self.side_at is None:
            return self.canvas
        side = int(self.side_at(epoch))
        return side, side

    @property
    def _resizes(self) -> bool:
        """schedule="resize" with the run's length known (MixConfig refuses it for pruning)."""
        return self.config.schedule == "resize" and self.epochs is not None

    # -- schedule ---------------------------------------------------------------------
    def final_full_epochs(self) -> int:
        if self.epochs is None:
            return 0
        # round() first: 0.07 * 100 is 7.000000000000001 in floating point
        return int(math.ceil(round(self.config.final_full_fraction * self.epochs, 9)))

    def is_mixing_epoch(self, epoch: int) -> bool:
        c = self.config
        if not c.active or epoch < c.warmup_epochs:
            return False
        if self.epochs is None:
            return True
        if self._resizes and self._resize_fraction(epoch) <= 0:
            return False  # the ramp has reached the canvas: nothing to mix
        return epoch < self.epochs - self.final_full_epochs()

    def fraction_at(self, epoch: int) -> float:
        """The mix (or prune) fraction of a mixing epoch: flat, or under schedule="linear" a
        fraction f in the first mixing epoch decaying linearly over the M mixing epochs (j-th:
        f * (M - j) / M), like a progressive-resizing ramp. f is the configured fraction, or
        the one whose mean over the M epochs meets the target speedup."""
        c = self.config
        f = c.mix_fraction()
        if self._resizes:
            return self._resize_fraction(epoch)
        if c.schedule != "linear" or self.epochs is None:
            return f
        span = max(1, self.epochs - self.final_full_epochs() - c.warmup_epochs)
        if c.fraction is None and c.target_speedup is not None:
            # a target speedup is the mean over the mixing epochs: the mean of f * (M - j) / M
            # over j = 0..M-1 is f * (M + 1) / (2 M), so the first epoch takes more
            f = min(1.0, f * 2 * span / (span + 1))
        return f * (span - (epoch - c.warmup_epochs)) / span

    def _resize_fraction(self, epoch: int) -> float:
        """schedule="resize": the fraction whose epoch costs what progressive resizing's epoch
        costs. Progressive resizing trains every sample at side s (config.ramp_size, from the
        tile's side canvas / sqrt(k), rounded down to 8 px, to the canvas side S over `ramp`):
        (s / S)^2 of a full epoch's pixels. Mixing a fraction f costs 1 - f + f / k, so
        f = (1 - (s / S)^2) / (1 - 1 / k), clipped to [0, 1]."""
        k = self.config.k
        return min(1.0, max(0.0, (1.0 - self._resize_cost(epoch)) / (1.0 - 1.0 / k)))

    def _resize_cost(self, epoch: int) -> float:
        """Progressive resizing's epoch cost (s / S)^2 against a full epoch, s its side at
        `epoch` (from the tile's side canvas / sqrt(k), rounded down to 8 px, to S over `ramp`)."""
        c = self.config
        side = min(self.canvas)
        tile = max(8, int(side / math.sqrt(c.k)) // 8 * 8)
        s = ramp_size(epoch, self.epochs, min(tile, side), side, c.ramp)
        return (s / side) ** 2

    def target_speedup_at(self, epoch: int) -> float:
        """The ideal speedup a mixing epoch's budget aims at: 1 / (1 - f + f / k) for mixing,
        1 / (1 - f) for pruning, f = fraction_at(epoch)."""
        f = self.fraction_at(epoch)
        if self.config.method == "prune":
            return 1.0 / (1.0 - f) if f < 1 else float("inf")  # f = 1 prunes every candidate
        return ideal_speedup(self.config.k, f)

    def describe(self) -> str:
        """The mixing plan in words, for a run's start-up summary."""
        c = self.config
        if not c.enabled or (c.method == "mix" and c.k == 1):
            return "off"
        linear = c.schedule == "linear" and self.epochs is not None
        if self._resizes:
            budget = (f"each epoch at progressive resizing's cost (fraction {self.fraction_at(0):.2f} at "
                      f"first, none from {c.ramp[1]:.0%} of the run)")
        elif c.fraction is not None or (c.target_speedup is None and linear and c.method == "mix"):
            budget = f"fraction {c.mix_fraction():g} " + ("in the first mixing epoch, decaying linearly"
                                                          if linear else "every mixing epoch")
        else:
            budget = (f"target speedup x{1.6 if c.target_speedup is None else c.target_speedup:g} "
                      + ("on average over the mixing epochs (decaying)" if linear else "every mixing epoch"))
        what = f"k={c.k}" if c.method == "mix" else "pruning (InfoBatch-style)"
        head = f"{what}, {c.schedule} schedule, {budget}, {c.selection} selection"
        if self.epochs is None:
            return f"{head}; every epoch after {c.warmup_epochs} warm-up epoch(s) mixes"
        mixing = [e for e in range(self.epochs) if self.is_mixing_epoch(e)]
        if not mixing:
            return f"{head}; but no epoch of {self.epochs} mixes"
        span = f"epoch {mixing[0] + 1}" if len(mixing) == 1 else f"epochs {mixing[0] + 1}-{mixing[-1] + 1}"
        return (f"{head}; {span} of {self.epochs} mix (the first at ideal "
                f"x{self.target_speedup_at(mixing[0]):.2f})")

    # -- planning ---------------------------------------------------------------------
    def plan(self, epoch: int, losses: np.ndarray | None = None,
             mixed_last: np.ndarray | None = None, exclude: np.ndarray | None = None) -> EpochPlan:
        """The plan of `epoch`.

        losses: (N,) float, each sample's latest loss, NaN where never measured.
        mixed_last: (N,) bool, whether that loss was measured inside a composite.
        exclude: (N,) bool, samples left out entirely (e.g. unreadable files).
        """
        n, c = self.num_samples, self.config
        canvas = self.canvas_at(epoch)
        rng = np.random.default_rng([self.seed, epoch, _SALT_PLAN])
        losses = np.full(n, np.nan, np.float32) if losses is None else np.asarray(losses, np.float32)
        mixed_last = np.zeros(n, bool) if mixed_last is None else np.asarray(mixed_last, bool)
        keep = np.ones(n, bool) if exclude is None else ~np.asarray(exclude, bool)
        if losses.shape != (n,) or mixed_last.shape != (n,) or keep.shape != (n,):
            raise ValueError(f"loss table shapes {losses.shape}, {mixed_last.shape}, {keep.shape} != ({n},)")

        seen = keep & ~np.isnan(losses)
        stats = {"epoch": epoch, "mixing_epoch": False, "threshold": None, "candidates": 0,
                 "self_corrected": 0, "target_speedup": 1.0, "budget_met": True}
        needs_loss = c.selection == "loss" or c.method == "prune"
        if not self.is_mixing_epoch(epoch) or not (seen.any() if needs_loss else keep.any()):
            order = rng.permutation(np.flatnonzero(keep))
            plan = single_plan(epoch, order, canvas, rng.random(len(order)) < 0.5)
            plan.stats = self._finish_stats(stats, plan)
            return plan

        k = c.k
        f = self.fraction_at(epoch)
        threshold = (float(np.mean(losses[seen]) if c.threshold == "mean" else np.median(losses[seen]))
                     if seen.any() else float("nan"))
        if c.selection == "loss":
            candidates = seen & (losses <= threshold)
        elif c.method == "prune":
            candidates = seen.copy()
        else:  # random: every sample, one with no loss yet too
            candidates = keep.copy()
        if c.self_correct and seen.any():
            corrected = seen & mixed_last & (losses > threshold)
            candidates &= ~corrected
            stats["self_corrected"] = int(corrected.sum())
        cand_idx = np.flatnonzero(candidates)
        if c.method == "prune":
            return self._prune_plan(epoch, rng, keep, cand_idx, f, threshold, stats, canvas)
        n_keep = int(keep.sum())
        budget = int(round(f * n_keep)) // k * k  # whole groups, as many as the candidates allow
        n_mix = min(budget, len(cand_idx) // k * k)
        chosen = rng.choice(cand_idx, size=n_mix, replace=False) if n_mix else np.empty(0, np.int64)

        min_side = max(1, int(round(c.min_side_frac * min(canvas))))
        groups = chosen.reshape(-1, k)
        shares = self.area_shares(losses[groups])
        boxes = layout_batch(shares, canvas[0], canvas[1], min_side) if len(groups) else \
            np.zeros((0, k, 4), np.int32)

        mixed = np.zeros(n, bool)
        mixed[chosen] = True
        singles = np.flatnonzero(keep & ~mixed)
        n_comp = len(groups) + len(singles)
        members = np.full((n_comp, k), -1, np.int64)
        all_boxes = np.zeros((n_comp, k, 4), np.int32)
        all_shares = np.zeros((n_comp, k), np.float32)
        members[:len(groups)] = groups
        all_boxes[:len(groups)] = boxes
        all_shares[:len(groups)] = shares
        members[len(groups):, 0] = singles
        all_boxes[len(groups):, 0] = (0, 0, canvas[0], canvas[1])
        all_shares[len(groups):, 0] = 1.0

        order = rng.permutation(n_comp)
        members = np.take(members, order, axis=0)  # np.take: several times faster than fancy indexing here
        flips = rng.integers(0, 2, size=(n_comp, k), dtype=np.uint8) * (members >= 0)
        plan = EpochPlan(epoch, canvas, members, np.take(all_boxes, order, axis=0),
                         np.take(all_shares, order, axis=0), flips.astype(np.uint8))
        target = self.target_speedup_at(epoch)
        stats.update(mixing_epoch=True, threshold=threshold if seen.any() else None,
                     candidates=int(len(cand_idx)), target_speedup=target, budget_met=n_mix >= budget)
        stats.update(samples=n_keep, composites=n_comp, mixed_samples=n_mix,
                     ideal_speedup=n_keep / max(1, n_comp))  # known counts: no pass over the plan
        plan.stats = stats
        if n_mix < budget and not self._warned_budget:
            self._warned_budget = True
            log.warning("epoch %d: only %d of %d samples are mixing candidates (budget %d): ideal "
                        "speedup %.3f instead of %.3f (said once; each epoch's plan.stats say whether "
                        "it falls short again, ideal_speedup in metrics.jsonl)", epoch, len(cand_idx),
                        n_keep, budget, stats["ideal_speedup"], target)
        return plan

    def _prune_plan(self, epoch, rng, keep, cand_idx, f, threshold, stats, canvas) -> EpochPlan:
        """InfoBatch-style baseline: skip a random part of the below-threshold samples this
        epoch and scale the kept candidates' loss by 1 / (1 - pruned share of candidates),
        so the expected gradient is unchanged."""
        budget = int(round(f * int(keep.sum())))
        n_prune = min(budget, len(cand_idx))
        pruned = rng.choice(cand_idx, size=n_prune, replace=False) if n_prune else np.empty(0, np.int64)
        kept = keep.copy()
        kept[pruned] = False
        order = rng.permutation(np.flatnonzero(kept))
        plan = single_plan(epoch, order, canvas, rng.random(len(order)) < 0.5)
        rescale = 1.0 / (1.0 - n_prune / len(cand_idx)) if len(cand_idx) > n_prune else 1.0
        is_candidate = np.zeros(len(keep), bool)
        is_candidate[cand_idx] = True
        plan.weights = np.where(is_candidate[order], rescale, 1.0).astype(np.float32)[:, None]
        target = self.target_speedup_at(epoch)
        stats.update(mixing_epoch=True, threshold=threshold, candidates=int(len(cand_idx)),
                     target_speedup=target, budget_met=n_prune >= budget, pruned_samples=int(n_prune),
                     loss_rescale=rescale)
        plan.stats = self._finish_stats(stats, plan)
        # a pruning epoch has fewer inputs, not composites: its speedup is N / kept
        plan.stats["ideal_speedup"] = int(keep.sum()) / max(1, len(order))
        return plan

    def area_shares(self, group_losses: np.ndarray) -> np.ndarray:
        """(g, k) losses -> (g, k) area shares: a_j ~ (loss_j + eps) ** gamma, clipped, sum 1."""
        c = self.config
        g, k = group_losses.shape
        if c.gamma == 0 or g == 0:
            return np.full((g, k), 1.0 / k, np.float32)
        losses = group_losses.astype(np.float64)
        unseen = np.isnan(losses)
        if unseen.any():  # a sample with no loss yet weighs as its group's mean (all unseen: equal)
            mean = np.nansum(losses, 1, keepdims=True) / np.maximum((~unseen).sum(1, keepdims=True), 1)
            losses = np.where(unseen, mean, losses)
        w = np.power(np.maximum(losses, 0.0) + c.eps, c.gamma)
        shares = w / w.sum(1, keepdims=True)
        return _clip_shares(shares, c.share_min, c.share_max).astype(np.float32)

    @staticmethod
    def _finish_stats(stats: dict, plan: EpochPlan) -> dict:
        stats.update(samples=plan.n_samples, composites=plan.n_composites,
                     mixed_samples=plan.n_mixed_samples, ideal_speedup=plan.ideal_speedup)
        return stats

    # -- resume -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything that makes a plan: with the loss table (the loader's), this is all."""
        import dataclasses
        return {"config": dataclasses.asdict(self.config), "num_samples": self.num_samples,
                "canvas": list(self.canvas), "seed": self.seed, "epochs": self.epochs}


def _clip_shares(shares: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Each row as x_j = clip(c * s_j, lo, hi), with the row's c chosen so that sum_j x_j = 1.

    f(c) = sum_j clip(c * s_j, lo, hi) is piecewise linear and non-decreasing, with its
    breakpoints at lo / s_j and hi / s_j: evaluate f there, bracket 1, interpolate. Exact and
    vectorised over rows; a solution exists because lo <= 1/k <= hi. Rows already inside
    the bounds are returned as they are.
    """
    s = np.asarray(shares, np.float64)
    s = s / s.sum(1, keepdims=True)
    out = s.copy()
    outside = ~((s >= lo) & (s <= hi)).all(1)
    if outside.any():
        out[outside] = _clip_rows(s[outside], lo, hi)  # only the rows that need it: the costly part
    return out


def _clip_rows(s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    breaks = np.concatenate([lo / s, hi / s], axis=1)                   # (n, 2k)
    f = np.clip(breaks[:, :, None] * s[:, None, :], lo, hi).sum(2)     # f at every breakpoint
    below = np.where(f <= 1.0, breaks, -np.inf).max(1)
    above = np.where(f >= 1.0, breaks, np.inf).min(1)
    f_lo = np.clip(below[:, None] * s, lo, hi).sum(1)
    f_hi = np.clip(above[:, None] * s, lo, hi).sum(1)
    span = f_hi - f_lo
    c = np.where(span > 0, below + (1.0 - f_lo) * (above - below) / np.where(span > 0, span, 1.0), below)
    return np.clip(c[:, None] * s, lo, hi)
