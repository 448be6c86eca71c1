"""The loss table: every sample's latest loss and whether it was last seen in a composite.

The training loop writes each constituent's loss into a device table every step
(`record`, asynchronous: no host sync); once per epoch, when the next epoch is planned,
`sync` folds what was written into the host copy the controller reads (one all-reduce under
DDP, one device->host copy), so every rank plans from the same table.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


class LossTable:
    """Losses of `n` samples on `device`. Slot `n` absorbs the writes of a batch's padded
    constituents (no masking, no sync); `host_losses` (NaN: never seen) and `host_mixed` are
    the host copy as of the last `sync`."""

    def __init__(self, n: int, device: torch.device):
        self.n = n
        self.losses = torch.full((n + 1,), float("nan"), device=device)
        self.mixed = torch.zeros(n + 1, dtype=torch.bool, device=device)
        self._updated = torch.zeros(n + 1, dtype=torch.bool, device=device)
        self.host_losses = np.full(n, np.nan, np.float32)
        self.host_mixed = np.zeros(n, bool)
        self._warned = False

    def record(self, sample_ids: torch.Tensor, mask: torch.Tensor, per_constituent_losses: torch.Tensor) -> None:
        """Store each constituent's loss (`sample_ids`, `mask`: a MixBatch's [B, k] tables)."""
        ids = torch.where(mask, sample_ids, self.n).reshape(-1)
        self.losses.index_put_((ids,), per_constituent_losses.detach().float().reshape(-1))
        in_composite = (mask.sum(1, keepdim=True) > 1).expand_as(mask).reshape(-1)
        self.mixed.index_put_((ids,), in_composite)
        self._updated.index_fill_(0, ids, True)

    def sync(self, world_size: int = 1) -> None:
        """Fold the losses recorded since the last call into the host copy; under DDP the ranks'
        writes are averaged per sample (a sample written on no rank keeps its loss)."""
        losses, mixed, updated = self.losses, self.mixed, self._updated
        if world_size > 1 and torch.distributed.is_initialized():
            packed = torch.stack([torch.where(updated, losses, 0.0).nan_to_num(0.0),
                                  updated.float(), (mixed & updated).float()])
            torch.distributed.all_reduce(packed)
            count = packed[1]
            got = count > 0
            self.losses.copy_(torch.where(got, packed[0] / count.clamp(min=1), losses))
            self.mixed.copy_(torch.where(got, packed[2] > 0, mixed))
        host = torch.stack([self.losses[:-1], self.mixed[:-1].float()]).cpu().numpy()
        self.host_losses = host[0].astype(np.float32)
        self.host_mixed = host[1] > 0.5
        self._updated.zero_()

    def load(self, losses, mixed) -> None:
        """Restore a checkpoint's host copy (and the device table from it)."""
        self.host_losses = np.asarray(losses, np.float32)
        self.host_mixed = np.asarray(mixed, bool)
        self.losses[:-1] = torch.as_tensor(self.host_losses, device=self.losses.device)
        self.mixed[:-1] = torch.as_tensor(self.host_mixed, device=self.mixed.device)
        self._updated.zero_()

    def warn_if_never_recorded(self, epoch: int, mix_config) -> None:
        """Once: a loop that never calls record() leaves the controller blind. Said only where
        a loss is needed (random selection with equal shares, the defaults, mixes as planned)."""
        if self._warned or not np.isnan(self.host_losses).all():
            return
        lost = what_needs_losses(mix_config)
        if lost:
            self._warned = True
            log.warning("epoch %d: no loss was ever recorded, so %s: call loader.record(batch, "
                        "per_constituent_losses) every step (see mix_loss)", epoch, lost)


def what_needs_losses(c) -> str:
    """What a run of MixConfig `c` loses when no loss is ever recorded ('' for nothing)."""
    if c.method == "prune":
        return "nothing can be pruned (pruning drops low-loss samples)"
    if c.selection == "loss":
        return "nothing can be mixed (selection='loss' mixes samples at most the mean loss)"
    lost = []
    if c.gamma > 0:
        lost.append(f"area shares stay equal (gamma={c.gamma:g} has no loss to weigh)")
    if c.self_correct:
        lost.append("self-correction never unmixes a sample")
    return ", ".join(lost)
