"""EpochPlan: what one epoch feeds the model, composite by composite, and how it is cut into
batches and sharded across ranks (docs/architecture.md, "Data flow of one epoch", step 1;
"Distributed").

A composite is a row: up to k_max constituent sample ids (-1 padded, column 0 the *head*),
their tile rectangles (y, x, h, w) on the H x W canvas, their area shares, and a horizontal
flip bit per tile. An unmixed sample is a composite of one whose tile is the whole canvas.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError


@dataclass
class EpochPlan:
    epoch: int
    canvas: tuple[int, int]
    members: np.ndarray   # (n, k_max) int64, -1 padded
    boxes: np.ndarray     # (n, k_max, 4) int32 (y, x, h, w), zero padded
    shares: np.ndarray    # (n, k_max) float32, zero padded
    flips: np.ndarray     # (n, k_max) uint8
    stats: dict = field(default_factory=dict)
    weights: np.ndarray | None = None  # (n, k_max) float32 loss factors; None = all 1

    def loss_weights(self) -> np.ndarray:
        if self.weights is None:
            return self.valid.astype(np.float32)
        return self.weights

    @property
    def n_composites(self) -> int:
        return int(self.members.shape[0])

    @property
    def k_max(self) -> int:
        return int(self.members.shape[1])

    @property
    def valid(self) -> np.ndarray:
        return self.members >= 0

    @property
    def n_samples(self) -> int:
        return int(self.valid.sum())

    @property
    def n_mixed_samples(self) -> int:
        counts = self.valid.sum(1)
        return int(counts[counts > 1].sum())

    @property
    def ideal_speedup(self) -> float:
        """Samples per composite: how many fewer model inputs than an unmixed epoch."""
        return self.n_samples / max(1, self.n_composites)

    def in_sample_order(self) -> "EpochPlan":
        """The same composites ordered by their head's sample id (a loader's shuffle=False)."""
        order = np.argsort(self.members[:, 0], kind="stable")
        return dataclasses.replace(
            self, members=self.members[order], boxes=self.boxes[order], shares=self.shares[order],
            flips=self.flips[order], stats=dict(self.stats),
            weights=None if self.weights is None else self.weights[order])

    def digest(self) -> str:
        """A hash of the whole plan, to compare plans across ranks and restarts."""
        h = hashlib.sha256()
        for a in (self.members, self.boxes, self.shares, self.flips, self.weights):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr((self.epoch, self.canvas)).encode())
        return h.hexdigest()

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1,
                drop_last: bool = False) -> list[np.ndarray]:
        """This rank's batches, as arrays of composite indices into the plan."""
        return shard_batches(self.n_composites, batch_size, rank, world_size, drop_last)


def pad_columns(a: np.ndarray, width: int, fill) -> np.ndarray:
    """``a`` (n, k, ...) padded with ``fill`` to (n, width, ...) (itself when k == width)."""
    if a.shape[1] >= width:
        return a
    pad = np.full((a.shape[0], width - a.shape[1], *a.shape[2:]), fill, a.dtype)
    return np.concatenate([a, pad], axis=1)


def single_plan(epoch: int, order: np.ndarray, canvas: tuple[int, int], flips: np.ndarray) -> EpochPlan:
    """An unmixed epoch: every sample alone on the full canvas, in `order`."""
    n = len(order)
    boxes = np.zeros((n, 1, 4), dtype=np.int32)
    boxes[:, 0, 2], boxes[:, 0, 3] = canvas
    return EpochPlan(epoch, tuple(canvas), order.astype(np.int64)[:, None], boxes,
                     np.ones((n, 1), dtype=np.float32), flips.astype(np.uint8).reshape(n, 1))


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1,
                  drop_last: bool = False) -> list[np.ndarray]:
    """Cut `n` composites into batches for `rank` of `world_size`.

    Rank r takes composites r, r + W, r + 2W, ... (the plan is already shuffled), so the
    shards are disjoint and together cover everything. All ranks get the same number of
    batches: full batches of `batch_size` first, then the rank's remainder spread over the
    last batches, so a rank with one composite fewer has a smaller last batch, never fewer
    steps (under DDP every rank must take every step). With `drop_last`, every rank takes
    the same number of full batches and the few composites left over are skipped this
    epoch (they are different ones next epoch).
    """
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size} must be >= 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    mine = np.arange(rank, n, world_size, dtype=np.int64)
    if drop_last:
        n_batches = (n // world_size) // batch_size
        return [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
    n_batches = -(-(-(-n // world_size)) // batch_size)  # ceil(ceil(n / W) / B)
    if n // world_size < n_batches:  # the shortest shard decides, on every rank alike
        raise UserError(
            f"{n} samples cannot give {world_size} ranks {n_batches} non-empty batches of "
            f"{batch_size}; use a smaller batch size or fewer ranks")
    # as many full batches as leave each remaining batch at least two composites (one when
    # the shard is too small): BatchNorm cannot train on a single sample with a 1x1 map
    per_batch = 2 if batch_size > 1 and len(mine) >= 2 * n_batches else 1
    n_full = min(len(mine) // batch_size, n_batches)
    while n_full > 0 and len(mine) - n_full * batch_size < per_batch * (n_batches - n_full):
        n_full -= 1
    out = [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]
    if n_batches > n_full:
        out.extend(np.array_split(mine[n_full * batch_size:], n_batches - n_full))
    return out
