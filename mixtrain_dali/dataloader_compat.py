"""`loader.dataset` and `loader.sampler`: what scripts written for torch's DataLoader reach
for, so that they run on our loaders unchanged.

torchvision's reference classification script checks `len(data_loader.dataset)` against the
samples it evaluated and reads `dataset.classes`; DDP scripts (torchvision's, timm's) call
`train_loader.sampler.set_epoch(epoch)` every epoch. Neither object loads anything: the
dataset is a read-only view of the loader's `ImageFolderIndex`, the sampler forwards
`set_epoch` to the loader, which plans the epoch's order itself.

The dataset's `samples` and `targets` are built when first asked for (1.28M (path, label)
tuples cost about 250 MB, which a loader never needs) and kept until the files it covers
change (a train loader leaving a bad file out).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .dataset import ImageFolderIndex


class FolderDataset:
    """The samples a loader covers, with `torchvision.datasets.ImageFolder`'s attributes:
    `classes`, `class_to_idx`, `samples` ((absolute path, class index) in ImageFolder order),
    `targets`, `imgs` (= samples), `root` and `len()`.

    `usable`: a function giving the mask of the index's files the loader still reads (a
    train loader leaves bad files out, and finds more mid-run); None: every file. There is no
    `dataset[i]`: the loader decodes in DALI, never through the dataset."""

    def __init__(self, index: ImageFolderIndex, usable: Callable[[], np.ndarray] | None = None):
        self.index = index
        self._usable = usable
        self._built_for: int | None = None
        self._samples: list[tuple[str, int]] = []
        self._targets: list[int] = []

    @property
    def root(self) -> str:
        return str(self.index.root)

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.index.class_to_idx

    def _ids(self) -> np.ndarray | None:
        """Index positions of the covered files; None: all of them."""
        if self._usable is None:
            return None
        mask = np.asarray(self._usable(), bool)
        return None if mask.all() else np.flatnonzero(mask)

    def __len__(self) -> int:
        ids = self._ids()
        return len(self.index) if ids is None else len(ids)

    def _build(self) -> None:
        ids = self._ids()
        key = -1 if ids is None else len(ids)  # a train loader's left-out files only grow
        if self._built_for == key:
            return
        paths, labels = self.index.paths, self.index.labels
        if ids is None:
            self._targets = labels.tolist()
            self._samples = list(zip(paths, self._targets))
        else:
            self._targets = labels[ids].tolist()
            self._samples = [(paths[i], t) for i, t in zip(ids.tolist(), self._targets)]
        self._built_for = key

    @property
    def samples(self) -> list[tuple[str, int]]:
        self._build()
        return self._samples

    imgs = samples  # ImageFolder's older name

    @property
    def targets(self) -> list[int]:
        self._build()
        return self._targets

    def __repr__(self) -> str:
        return (f"FolderDataset({len(self)} samples, {len(self.classes)} classes, "
                f"root={self.root!r})")


class LoaderSampler:
    """`loader.sampler`, shaped like `DistributedSampler`: `set_epoch(e)` (the loader's own
    `set_epoch`, where it has one: the next pass plans epoch `e`), `len()` (the samples this
    rank takes per pass: `loader.shard_size`), and `num_replicas`, `rank`, `epoch`,
    `shuffle`, `seed`, `drop_last`. The order itself is planned in the loader, so the
    sampler has no indices to iterate."""

    def __init__(self, loader):
        self._loader = loader
        self._epoch = 0  # a loader without epochs (ValLoader): what set_epoch was given

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)
        if hasattr(self._loader, "set_epoch"):
            self._loader.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the loader's next (or running) pass plans."""
        return getattr(self._loader, "epoch", self._epoch)

    def __len__(self) -> int:
        return self._loader.shard_size

    @property
    def num_replicas(self) -> int:
        return self._loader.world_size

    @property
    def rank(self) -> int:
        return self._loader.rank

    @property
    def shuffle(self) -> bool:
        return getattr(self._loader, "shuffle", False)

    @property
    def seed(self) -> int:
        return getattr(self._loader, "seed", 0)

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    def __repr__(self) -> str:
        return (f"LoaderSampler(rank {self.rank} of {self.num_replicas}, epoch {self.epoch}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
