"""The torch side of the train loader (docs/architecture.md, "Data flow of one epoch", step 4):
what DALI decoded, handed to the training loop as torch tensors on the training device.

Per epoch, `BatchOutput.upload` puts this rank's plan rows (who is in each composite, where,
with what label and share) on the training device once; per step it copies the composites
out of DALI's output (`heads_to_torch`, or shares DALI's buffer where that is safe) and pairs
them with slices of those rows: `(images, labels)` without mixing, a `MixBatch` with it.
Nothing crosses from the device to the host per step. The DALI side is feed.py; loader.py
runs the two.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch

from .plan import EpochPlan, pad_columns


@dataclass
class MixBatch:
    """One step: B composites and, on the training device, who is in each and where."""

    images: torch.Tensor      # (B, 3, H, W) float, normalised (channels_last memory)
    sample_ids: torch.Tensor  # (B, k_max) int64, -1 padded
    labels: torch.Tensor      # (B, k_max) int64, -1 padded
    boxes: torch.Tensor       # (B, k_max, 4) float32 (y, x, h, w) in canvas pixels
    mask: torch.Tensor        # (B, k_max) bool, valid constituents
    shares: torch.Tensor      # (B, k_max) float32 area shares
    n_samples: int            # valid constituents, known on the host
    weights: torch.Tensor | None = None  # (B, k_max) loss factors (pruning baseline), else None
    boxes_host: np.ndarray | None = None  # (B, k_max, 4) int32 numpy: the boxes for
                                          # model(..., isolate=True) without a device sync

    def __len__(self) -> int:
        return self.images.shape[0]


def heads_to_torch(out, n_heads: int, torch_device: torch.device, zero_copy: bool = False) -> torch.Tensor:
    """The first `n_heads` samples of a DALI NHWC output batch (`TensorListCPU` or
    `TensorListGPU`), copied into memory torch owns on `torch_device`, returned as an NCHW
    view (channels_last memory). Any (DALI device, torch device) pair works.

    Only the heads are copied: with mixing, DALI's batch holds one canvas per slot (B*k) and
    only the first B are composites. The copy is what makes the batch survive DALI's later
    iterations. GPU: a DLPack view of DALI's buffer (torch's current stream on that GPU is
    made to wait for DALI's work), then a device copy on that stream, so nothing waits on the
    host. The caller keeps `out` alive until that copy has run (`OutputHold`).

    `zero_copy` (CPU output, CPU torch device, every sample a head): the batch is DALI's own
    buffer, shared through DLPack, as DALI's PyTorch iterator hands it out. Only for a
    pipeline on DALI's dynamic executor (`pipe.exec_dynamic`, the default), which gives each
    iteration new output memory and frees it when the last reference goes, so later
    iterations cannot overwrite a batch the caller keeps (tested). It saves a copy of the
    whole batch per step: 8-15% of the CPU loader's throughput at 224 px
    (benchmarks/probes/loader_gap_cpu.py).
    """
    tensor = out.as_tensor()
    if zero_copy and torch_device.type == "cpu" and n_heads == len(out) and not hasattr(
            tensor, "__cuda_array_interface__"):
        return torch.from_dlpack(tensor).permute(0, 3, 1, 2)
    if hasattr(tensor, "__cuda_array_interface__"):  # TensorGPU
        nhwc = torch.from_dlpack(tensor)[:n_heads].to(torch_device, copy=True)
    else:
        heads = np.asarray(tensor)[:n_heads]  # a view of DALI's buffer
        if torch_device.type == "cpu":
            # numpy's copy: measured 4-6x faster than torch's clone for a 154 MB batch here
            nhwc = torch.from_numpy(np.array(heads, copy=True))
        else:  # one host copy into pinned memory, then an asynchronous upload
            nhwc = torch.from_numpy(heads).pin_memory().to(torch_device, non_blocking=True)
    return nhwc.permute(0, 3, 1, 2)


class OutputHold:
    """Keeps DALI GPU outputs alive until the device copy that reads them has run.

    The copy out of DALI's buffer is queued on torch's stream and the host moves on; if the
    last reference to the buffer went right away, DALI could hand the memory to a later
    iteration (its own stream knows nothing of torch's) before the copy read it. An event
    recorded after the copy says when the buffer may go; `event.query()` does not wait.
    At most `depth` outputs are held: beyond that the host waits for the oldest copy, which
    only happens when the host is that many steps ahead of the GPU."""

    def __init__(self, depth: int = 2):
        self.depth = depth
        self.held: collections.deque = collections.deque()

    def add(self, out, device: torch.device) -> None:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self.held.append((event, out))
        while self.held and (len(self.held) > self.depth or self.held[0][0].query()):
            event, _ = self.held.popleft()
            event.synchronize()  # a no-op unless the host is `depth` steps ahead

    def clear(self) -> None:
        for event, _ in self.held:
            event.synchronize()
        self.held.clear()


class BatchOutput:
    """Turns a TrainLoader's DALI outputs into its batches on `torch_device`: the plan rows
    uploaded once per epoch (`upload`), each step's composites copied out of DALI (`images`),
    the two paired (`batch`). `mixing`: `MixBatch` out, else `(images, labels)`. `width`: the
    rows' columns, MixConfig.k in every epoch of a run that pastes (None: the plan's k_max)."""

    def __init__(self, labels: np.ndarray, *, mixing: bool, width: int | None, dali_device: str,
                 device_id: int | None, torch_device: torch.device):
        self.mixing, self.width = mixing, width
        self.dali_device, self.device_id, self.torch_device = dali_device, device_id, torch_device
        # slot N, the label of a padded constituent (-1), so padding needs no masking
        self.labels = torch.as_tensor(np.append(labels, -1), device=torch_device)
        self.hold = OutputHold()

    def upload(self, plan: EpochPlan, batches: list[np.ndarray]) -> dict:
        """This rank's plan rows, on the training device once per epoch; steps slice them."""
        order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        # k_max is MixConfig.k in every epoch of a mixing run, unmixed ones too: the batch's
        # tensors keep one shape across epochs (torch.compile does not recompile, CUDA graphs
        # stay valid); the padded columns are masked out like any padded constituent
        width = self.width if self.width is not None else plan.k_max
        members = pad_columns(plan.members[order], width, -1)
        dev = self.torch_device
        ids = torch.as_tensor(members, device=dev)
        n = len(self.labels) - 1
        weights = None if plan.weights is None else pad_columns(plan.weights[order], width, 0.0)
        boxes = pad_columns(plan.boxes[order], width, 0)  # int32, also handed out as is
        return {
            "offsets": np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64),
            "counts": (members >= 0).sum(1),
            "sample_ids": ids,
            "labels": self.labels[torch.where(ids >= 0, ids, n)],
            "boxes": torch.as_tensor(boxes, dtype=torch.float32, device=dev),
            "boxes_host": boxes,
            "mask": ids >= 0,
            "shares": torch.as_tensor(pad_columns(plan.shares[order], width, 0.0), device=dev),
            "weights": None if weights is None else torch.as_tensor(weights, device=dev),
        }

    def images(self, out, n_heads: int, zero_copy: bool) -> torch.Tensor:
        """The first n_heads outputs (the composites) as an NCHW view of NHWC memory.
        `zero_copy`: the pipeline gives each iteration new output memory (heads_to_torch)."""
        images = heads_to_torch(out, n_heads, self.torch_device, zero_copy=zero_copy)
        if self.dali_device == "gpu":
            self.hold.add(out, torch.device("cuda", self.device_id))
        return images

    def batch(self, images: torch.Tensor, rows: dict, i: int):
        """Step `i`'s batch: `images` with its slice of the uploaded `rows`."""
        a, b = rows["offsets"][i], rows["offsets"][i + 1]
        if not self.mixing:
            return images, rows["labels"][a:b, 0]
        weights = None if rows["weights"] is None else rows["weights"][a:b]
        return MixBatch(images, rows["sample_ids"][a:b], rows["labels"][a:b], rows["boxes"][a:b],
                        rows["mask"][a:b], rows["shares"][a:b], int(rows["counts"][a:b].sum()), weights,
                        rows["boxes_host"][a:b])

    def release(self) -> None:
        """At an epoch's end: wait for the copies still reading DALI's outputs, and let them go."""
        self.hold.clear()
