"""The external source (docs/architecture.md, "Data flow of one epoch", step 2): an epoch's
batches as DALI slots.

Per iteration it emits one *slot* per constituent image. The composites' heads come first
(slot i is the head of the batch's composite i), then the donors row by row. Per slot:
the file path (uint8), the flip bit, the crop window: with every image's size known
(`hw`, from the file check) the window's relative (start, shape) worked out here
(crops.relative_window, in float32 as the graph would), else its candidates
(crops.CropPlanner's draw as crops.window_rows) for the graph to finish from the file's
header (pipelines.crop_window), the tile size
(h, w); on a head, the slot ids of its constituents and their out_anchors for
`fn.multi_paste`; on a donor, empty arrays.

Everything is numpy slicing of arrays built once per epoch, the paths included (one
NUL-padded uint8 row each, `PathList.encoded_batch`): nothing per sample in Python.

`read="ahead"`: instead of paths, each slot's encoded bytes, read on background threads a
few batches ahead (readahead.py); the graph then skips `fn.io.file.read`. `read="graph"`
(the default until measured on a GPU): paths, read by the graph.
"""

from __future__ import annotations

import os

import numpy as np

from .crops import CropPlanner, relative_window, window_rows
from .dataset import PathList
from .plan import EpochPlan
from .readahead import BatchRead, ReadAhead

_EMPTY_IDS = np.zeros((0,), np.int32)
_EMPTY_ANCHORS = np.zeros((0, 2), np.int32)
READS = ("graph", "ahead")


def slot_samples(plan: EpochPlan, composites: np.ndarray) -> np.ndarray:
    """The sample id of each slot of a batch, in slot order (heads, then donors row by row):
    what `SlotBatch.slot_samples` holds, without the rest (the reader asks it a batch ahead)."""
    members = plan.members[composites]
    return np.concatenate([members[:, 0], members[:, 1:][members[:, 1:] >= 0]])


def path_bytes(paths):
    """`i -> path i` as bytes (a `PathList` gives them without decoding)."""
    return paths.bytes_getter() if hasattr(paths, "bytes_getter") else (lambda i: os.fsencode(paths[i]))


class FilesNotRead(RuntimeError):
    """Raised from the source callback (read="ahead", no file watch): files of a batch could
    not be read. Like a failed `fn.io.file.read`, it names no sample: the loader probes the
    files DALI holds (feed.Feed.recover)."""


class SlotBatch:
    """One iteration's slots (host side), kept to map a DALI error back to its files."""

    __slots__ = ("composites", "slot_samples", "tile_hw", "flips", "paste_ids", "anchors")

    def __init__(self, plan: EpochPlan, composites: np.ndarray, pastes: bool = True):
        members = plan.members[composites]
        boxes = plan.boxes[composites]
        flips = plan.flips[composites]
        valid = members >= 0
        n_heads = len(composites)
        donor_valid = valid[:, 1:]
        n_donors = int(donor_valid.sum())
        # slot index of every (composite, constituent): heads 0..B-1, donors after, row-major
        slot_of = np.full(members.shape, -1, np.int32)
        slot_of[:, 0] = np.arange(n_heads, dtype=np.int32)
        slot_of[:, 1:][donor_valid] = n_heads + np.arange(n_donors, dtype=np.int32)

        self.composites = composites
        self.slot_samples = np.concatenate([members[:, 0], members[:, 1:][donor_valid]])
        self.tile_hw = np.concatenate([boxes[:, 0, 2:4], boxes[:, 1:, 2:4][donor_valid]]).astype(np.float32)
        self.flips = np.concatenate([flips[:, 0], flips[:, 1:][donor_valid]]).astype(np.int32)
        if not pastes:  # no multi_paste in the graph: skip the per-composite lists (a few ms a batch)
            self.paste_ids = self.anchors = None
            return
        counts = valid.sum(1)
        splits = np.cumsum(counts)[:-1]
        self.paste_ids = np.split(slot_of[valid], splits)
        self.anchors = np.split(boxes[valid][:, :2].astype(np.int32), splits)

    def __len__(self) -> int:
        return len(self.slot_samples)


class PlanSource:
    """The callable behind the train pipeline's batch-mode `fn.external_source`.

    Outputs: (files, flips, windows) without mixing; (files, flips, windows, tile_hw,
    paste_ids, anchors) with. `files`: the slots' paths, or with `read="ahead"` their
    encoded bytes (read `depth` batches ahead on background threads, readahead.py).
    `windows` is two outputs, the relative start and shape, when `hw` ((N, 2) image sizes,
    all known) is given: `host_windows`.

    `start(plan, batches)` arms it with an epoch; each call returns the next iteration's
    outputs and raises StopIteration after the last batch (DALI then ends the epoch).
    `fed` keeps the SlotBatches handed out and not yet consumed, for error recovery.
    `start(None, [])` ends the epoch (and stops the reading threads).
    """

    def __init__(self, paths: PathList, mixing: bool, crops: CropPlanner, hw: np.ndarray | None = None,
                 *, read: str = "graph", depth: int = 3):
        if read not in READS:
            raise ValueError(f"read={read!r}; valid: {', '.join(READS)}")
        self.paths = paths  # `paths.encoded_batch(ids)`: the paths as NUL-padded uint8 rows, what DALI reads
        self.mixing = mixing
        self.crops = crops
        self.hw = hw
        self.read = read
        self._reader = ReadAhead(path_bytes(paths), depth) if read == "ahead" else None
        self.plan: EpochPlan | None = None
        self.batches: list[np.ndarray] = []
        self.position = 0
        self.fed: list[SlotBatch] = []

    def start(self, plan: EpochPlan | None, batches: list[np.ndarray], position: int = 0) -> None:
        """Arm the source with an epoch from batch `position` on (None: disarm). Reading
        ahead starts now; what an earlier start read ahead is dropped."""
        self.plan, self.batches, self.position = plan, batches, position
        self.fed = []
        if self._reader is not None:
            if plan is None:
                self._reader.stop()
            else:
                self._reader.start(lambda j: slot_samples(plan, batches[j]), len(batches), position)

    def __call__(self):
        if self.plan is None or self.position >= len(self.batches):
            raise StopIteration
        slots = SlotBatch(self.plan, self.batches[self.position], pastes=self.mixing)
        i = self.position
        self.position += 1
        self.fed.append(slots)
        files = self._files(slots, i)  # before the windows: a file checked again may have a new size
        drawn = self.crops.draw(self.plan.epoch, i, len(slots))
        if self.host_windows:
            windows = relative_window(drawn, self.hw[slots.slot_samples], np.float32)
        else:
            windows = (window_rows(drawn),)
        if not self.mixing:
            return files, slots.flips, *windows
        n_donors = len(slots) - len(slots.composites)
        ids = slots.paste_ids + [_EMPTY_IDS] * n_donors
        anchors = slots.anchors + [_EMPTY_ANCHORS] * n_donors
        return files, slots.flips, *windows, slots.tile_hw, ids, anchors

    def _files(self, slots: SlotBatch, i: int):
        """What DALI takes for batch `i`'s slots: their paths, or their bytes (read ahead)."""
        if self._reader is None:
            return self.paths.encoded_batch(slots.slot_samples)
        read = self._reader.take(i)
        if read.errors:
            raise FilesNotRead(_not_read(self.paths, slots.slot_samples, read))
        return read.arrays

    @property
    def host_windows(self) -> bool:
        """Whether the crop windows are finished here (the graph then takes start and shape)."""
        return self.hw is not None


def _not_read(paths, ids: np.ndarray, read: BatchRead) -> str:
    """`read`'s failures in one line: how many, and the first few files with their reasons."""
    named = "; ".join(f"{paths[int(ids[j])]}: {why}" for j, why in list(read.errors.items())[:3])
    more = f" and {len(read.errors) - 3} more" if len(read.errors) > 3 else ""
    return f"{len(read.errors)} file(s) could not be read ahead: {named}{more}"
