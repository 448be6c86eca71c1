"""The PyTorch side (docs/architecture.md, "Data flow of one epoch", steps 4 and 6):
iterators a training loop swaps in for `DataLoader(ImageFolder(...))`, and the loss
feedback into the controller.

`TrainLoader` yields `(images, labels)` without mixing and `MixBatch` with it. Each epoch
it (1) folds the losses recorded during the last epoch into the host loss table (one
all-reduce and one device->host copy per epoch), (2) asks the controller for the epoch's
plan, (3) uploads this rank's plan rows to the training device once, (4) runs the DALI
pipeline over the plan's batches. Per step nothing crosses from the device to the host.
`TrainLoader` is the coordinator: its settings, the loss table, epochs and iteration; what
feeds DALI (source, pipeline, recovery) is feed.py, what hands batches to torch batches.py.

Bad files (robust.py): both loaders check every file cheaply when they are made (TrainLoader:
those its manifest cannot vouch for, split across the ranks; manifest.py), leave the
bad ones out and list them in `bad_files.txt`; mid-epoch, a batch DALI cannot read is
probed, its bad files excluded, the rest of the epoch's batches rewritten without them and
the pipeline rebuilt at the same batch, so the epoch keeps its length and every good sample.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .augment import Augment
# heads_to_torch re-exported: `from mixtrain_dali.loader import heads_to_torch` keeps working
from .batches import BatchOutput, MixBatch, heads_to_torch  # noqa: F401
from .config import Config, DataConfig, MixConfig, check_mixing_on_progressive
from .controller import MixController
from .dataloader_compat import FolderDataset, LoaderSampler
from .dataset import ImageFolderIndex, scan_image_folder
from .errors import UserError
from .feed import Feed, plan_source, probe, window_sizes
from .losses import LossTable
from .manifest import manifest_path
from .pipelines import resolve_device, val_pipeline
from .plan import EpochPlan
from .robust import BadFileLog, check_index, validate_files

log = logging.getLogger(__name__)

_SUPERSEDED = ("this {} iterator was superseded: a newer iter() of the same loader started a new "
               "pass, and two passes over one loader cannot run at once (e.g. zip(loader, "
               "loader)); use one iterator, or two loaders")


def _devices(device: str, torch_device) -> tuple[str, int | None, torch.device]:
    """DALI's device ('gpu' | 'cpu'), its CUDA index, and the torch device batches land on
    (the same GPU by default; any other device works, e.g. "cpu" for a preview)."""
    dali_device, device_id = resolve_device(device)
    if torch_device is None:
        torch_device = f"cuda:{device_id}" if dali_device == "gpu" else "cpu"
    return dali_device, device_id, torch.device(torch_device)


def _dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _check_index(index: ImageFolderIndex, rank: int, world_size: int, manifest: Path | None,
                 watch_files: bool):
    """robust.check_index with the loader's settings: split across the ranks of a process
    group (without one, each rank checks every file: there is nothing to share verdicts
    through); the verdicts kept in the `manifest` file, if any. Sizes and mtimes are only
    stat'ed up front without a file watch (which stats each file before its batch)."""
    grouped = world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    return check_index(index, rank=rank, world_size=world_size if grouped else 1, manifest=manifest,
                       stat_known=not watch_files)


def _manifest_where(split_root, manifest) -> Path | None:
    """The manifest file `manifest` (True: the default place, False/None: none, else a
    folder) means for `split_root`."""
    if manifest is False or manifest is None:
        return None
    return manifest_path(split_root, None if manifest is True else manifest)


class _FolderAttributes:
    """What a `DataLoader(ImageFolder(...))` user reaches for, from `self.index` and `self.data`."""

    @property
    def num_samples(self) -> int:
        """Images in the whole split (all ranks; bad files included)."""
        return len(self.index)

    @property
    def classes(self) -> list[str]:
        """Class names, sorted, as ``ImageFolder.classes``."""
        return self.index.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.index.class_to_idx

    @property
    def batch_size(self) -> int:
        """Inputs per step and rank (composites, when mixing)."""
        return self.data.batch_size

    @property
    def dataset(self) -> FolderDataset:
        """The samples this loader covers, with ImageFolder's attributes (`classes`, `samples`,
        `targets`, `len()`...; dataloader_compat.py), for scripts that read
        `loader.dataset`: a train loader's usable files, a val loader's whole split."""
        if self.__dict__.get("_dataset") is None:
            self._dataset = FolderDataset(self.index, self._usable)
        return self._dataset

    @property
    def sampler(self) -> LoaderSampler:
        """A `DistributedSampler` look-alike whose `set_epoch(e)` is the loader's: DDP scripts
        call `loader.sampler.set_epoch(epoch)` every epoch."""
        if self.__dict__.get("_sampler") is None:
            self._sampler = LoaderSampler(self)
        return self._sampler

    _usable = None  # a function giving the mask of the files the loader reads; None: all


class TrainLoader(_FolderAttributes):
    """A DALI train loader over an ImageFolder root, with optional MixTrain mixing.

    Every epoch a new order from (seed, epoch); every sample exactly once per epoch (as a
    composite's constituent or alone); the last partial batch kept unless `drop_last`.
    Under torch.distributed, each rank iterates a disjoint shard with the same number of
    batches. Call `record(batch, per_constituent_losses)` each step when mixing.

    Augmentations (augment.py), per image at its tile size, before the tiles are pasted:
    `auto_augment` ("autoaugment" | "randaugment" with `rand_n`, `rand_m` | "trivialaugment"),
    `color_jitter` [b, c, s, h], random erasing (`erase_prob`, `erase_scale`, `erase_ratio`,
    `erase_value`) and `augment`, a hook for one's own DALI operators: a function called once
    when the graph is built, with each image as a DALI DataNode (uint8, HWC, 3 channels, the
    tile's size, on the graph's device: "gpu" or "cpu", `node.device`), which returns a DataNode
    of the same dtype, layout, shape and device (the paste anchors were laid out for that
    shape). It runs after the policy and the colour jitter, before flip and normalisation.

    Bad files: with `validate` every file is checked when the loader is made
    (robust.check_index: under torch.distributed each rank checks 1/world of the files and
    the verdicts are shared) and the bad ones are excluded; `manifest` remembers the verdicts
    with each file's size and mtime, so a later start checks only new files, and the file
    watch catches the ones changed since (True: next to the split, or in ~/.cache/mixtrain
    when that is read-only; a folder: there; False: none; manifest.py). `validate=False`
    skips the check (and the manifest): the start-up is then the directory listing alone. With `watch_files` each batch's files are
    stat'ed as DALI takes them (~4 us a file), so one that vanished or changed since is
    caught before it is decoded. `bad_files` is the `bad_files.txt` that lists them (each
    file once, also across resumes).

    `read`: "ahead" (the default) reads each batch's files `prefetch + 1` batches ahead on
    host threads and hands DALI the bytes (source.py, readahead.py): the same pixels, the
    reading off DALI's threads (1.06x the images/s of "graph" on 2 CPU cores); "graph" reads
    them in the DALI graph (`fn.io.file.read`) when the iteration runs.
    """

    def __init__(self, root, batch_size: int = 256, image_size: int = 224, *,
                 mix: MixConfig | None = None, seed: int = 0, epochs: int | None = None,
                 device: str = "auto", threads: int = 0, drop_last: bool = False,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), crop_tries: int = 1, prefetch: int = 2,
                 read: str = "ahead", min_image_size: int | None = None, resize_ramp=(0.0, 0.75),
                 rank: int | None = None, world_size: int | None = None,
                 torch_device: torch.device | str | None = None,
                 bad_files: str | os.PathLike | None = None, validate: bool = True,
                 watch_files: bool = True, shuffle: bool = True,
                 manifest: bool | str | os.PathLike = True,
                 auto_augment: str = "none", rand_n: int = 2, rand_m: int = 9, magnitude_bins: int = 31,
                 color_jitter=(0.0, 0.0, 0.0, 0.0), erase_prob: float = 0.0, erase_scale=(0.02, 1 / 3),
                 erase_ratio=(0.3, 1 / 0.3), erase_value: float = 0.0, augment=None):
        self.data = DataConfig(image_size=image_size, batch_size=batch_size, drop_last=drop_last,
                               scale=list(scale), ratio=list(ratio), crop_tries=crop_tries, device=device,
                               threads=threads, prefetch=prefetch, read=read, min_image_size=min_image_size,
                               resize_ramp=list(resize_ramp), auto_augment=auto_augment, rand_n=rand_n,
                               rand_m=rand_m, magnitude_bins=magnitude_bins, color_jitter=list(color_jitter),
                               erase_prob=erase_prob, erase_scale=list(erase_scale),
                               erase_ratio=list(erase_ratio), erase_value=erase_value)
        self.augment = Augment.from_config(self.data, augment)  # or None: the plain graph
        self.index = root if isinstance(root, ImageFolderIndex) else scan_image_folder(root)
        self.mix = mix if mix is not None else MixConfig(enabled=False)
        check_mixing_on_progressive(self.data.min_image_size, self.mix)
        if not shuffle and self.mix.active:
            raise UserError("shuffle=False is for plain loading: mixing and pruning choose their "
                            "samples at random every epoch; turn mixing off or keep shuffle=True")
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank, self.world_size = _dist_info(rank, world_size)
        self.dali_device, self.device_id, self.torch_device = _devices(device, torch_device)
        n = len(self.index)
        # the canvas follows progressive resizing's side, and the tiles with it
        self.controller = MixController(self.mix, n, (image_size, image_size), seed=self.seed, epochs=epochs,
                                        side_at=lambda e: self.data.image_size_at(e, epochs))
        self.mixing = self.mix.active        # MixBatch out, losses recorded
        self.pastes = self.mix.pastes        # composites tiled in the DALI graph
        self.epoch = 0
        self.loss_table = LossTable(n, self.torch_device)  # losses.py
        self.excluded = np.zeros(n, bool)
        self._plan: EpochPlan | None = None
        self._batches: list[np.ndarray] | None = None
        self.bad_files = BadFileLog(bad_files)
        watch = None
        # what the start-up check did: files checked now, and the manifest that keeps the verdicts
        self.file_check: dict | None = None
        if validate:
            where = _manifest_where(self.index.root, manifest)
            bad, watch = _check_index(self.index, self.rank, self.world_size, where, watch_files)
            self.file_check = {"checked": watch.checked, "manifest": where}
            self._exclude(bad, write=self.rank == 0)  # every rank has the same verdicts; one writes
            if n and self.excluded.all():
                listed = f" (listed in {self.bad_files.path})" if self.bad_files.path else ""
                raise UserError(f"no readable training images in {str(self.index.root)!r}: all {n} "
                                f"files are bad{listed}; `mixtrain check-data` says why")
        source = plan_source(self.index.paths, self.data, seed=self.seed, pastes=self.pastes,
                             hw=self._sizes_for_windows(validate), watch=watch if watch_files else None)
        self._feed = Feed(source, self.data, self.mix, self.augment, dali_device=self.dali_device,
                          device_id=self.device_id, seed=self.seed, rank=self.rank,
                          world_size=self.world_size,
                          size_at=lambda e: self.data.image_size_at(e, self.controller.epochs))
        self._output = BatchOutput(self.index.labels, mixing=self.mixing,
                                   width=self.mix.k if self.pastes else None, dali_device=self.dali_device,
                                   device_id=self.device_id, torch_device=self.torch_device)
        self._pass: object | None = None  # the running iteration's token
        self.epochs_completed = 0         # iterations that ran to the end of their epoch

    def _sizes_for_windows(self, validate: bool) -> np.ndarray | None:
        """The image sizes the host finishes the crop windows from, or None: the DALI graph
        finishes them (feed.window_sizes). `crop_windows` says which, `crop_windows_why` why."""
        hw, why = window_sizes(self.index, ~self.excluded, validate)
        self.crop_windows, self.crop_windows_why = ("host" if hw is not None else "graph"), why
        if hw is None:
            log.info("crop windows are finished in the DALI graph: %s", why)
        return hw

    @property
    def _source(self):
        """The DALI external source (source.py), the Feed's."""
        return self._feed.source

    @property
    def _pipe(self):
        """The DALI pipeline, the Feed's (None: the next epoch builds one)."""
        return self._feed.pipe

    @_pipe.setter
    def _pipe(self, pipe) -> None:
        self._feed.pipe = pipe

    @classmethod
    def from_config(cls, root, config: Config, **kwargs) -> "TrainLoader":
        d = config.data
        return cls(root, d.batch_size, d.image_size, mix=config.mix, seed=config.train.seed,
                   epochs=config.train.epochs, device=d.device, threads=d.threads,
                   drop_last=d.drop_last, scale=d.scale, ratio=d.ratio, crop_tries=d.crop_tries,
                   prefetch=d.prefetch, read=d.read,
                   min_image_size=d.min_image_size, resize_ramp=d.resize_ramp,
                   auto_augment=d.auto_augment, rand_n=d.rand_n, rand_m=d.rand_m,
                   magnitude_bins=d.magnitude_bins, color_jitter=d.color_jitter, erase_prob=d.erase_prob,
                   erase_scale=d.erase_scale, erase_ratio=d.erase_ratio, erase_value=d.erase_value,
                   **kwargs)

    # -- epochs and plans ---------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Like DistributedSampler.set_epoch: the next iteration plans `epoch`."""
        if self._pass is not None:  # an abandoned pass: wind it up before moving the epoch
            self._end_pass(False)
        self.epoch = int(epoch)
        self._plan = self._batches = None

    def plan(self) -> EpochPlan:
        """The plan of the epoch about to be (or being) iterated; planned once per epoch."""
        if self._plan is None:
            self.sync_losses()
            if self.mixing and self.epoch > 0 and self.controller.is_mixing_epoch(self.epoch):
                self.loss_table.warn_if_never_recorded(self.epoch, self.controller.config)
            self._sync_excluded()
            self._plan = self.controller.plan(self.epoch, self.host_losses, self.host_mixed, self.excluded)
            if not self.shuffle:
                self._plan = self._plan.in_sample_order()
            self._batches = self._plan.batches(self.epoch_batch_size(self._plan), self.rank,
                                               self.world_size, self.data.drop_last)
        return self._plan

    def epoch_batch_size(self, plan: EpochPlan) -> int:
        """Composites per step in `plan`'s epoch: `batch_size`, or under MixConfig.keep_steps
        `batch_size` / (samples per composite), rounded, so a mixing epoch has as many steps as
        an unmixed one and every step carries about `batch_size` samples."""
        if not (self.mix.keep_steps and self.pastes):
            return self.data.batch_size
        return max(1, round(self.data.batch_size * plan.n_composites / max(1, plan.n_samples)))

    def batches(self) -> list[np.ndarray]:
        self.plan()
        return self._batches

    def __len__(self) -> int:
        return len(self.batches())

    @property
    def drop_last(self) -> bool:
        return self.data.drop_last

    @property
    def shard_size(self) -> int:
        """Samples this rank takes in the current epoch (each composite's constituents;
        `len(loader.sampler)`). Plans the epoch, as `len(loader)` does."""
        plan, batches = self.plan(), self._batches
        return int(sum((plan.members[b] >= 0).sum() for b in batches))

    def _usable(self) -> np.ndarray:
        """The files `dataset` covers: all but the bad ones left out."""
        return ~self.excluded

    # -- feedback (the loss table, losses.py) --------------------------------------------
    def record(self, batch: MixBatch, per_constituent_losses: torch.Tensor) -> None:
        """Store each constituent's loss in the device loss table (asynchronous: no sync)."""
        self.loss_table.record(batch.sample_ids, batch.mask, per_constituent_losses)

    def sync_losses(self) -> None:
        """Fold the losses recorded since the last call into the host table (one all-reduce under
        DDP, one device->host copy); all ranks end identical. Called when an epoch is planned."""
        self.loss_table.sync(self.world_size)

    @property
    def losses(self) -> torch.Tensor:
        """The device loss table (slot `num_samples` takes the padding's writes)."""
        return self.loss_table.losses

    @property
    def host_losses(self) -> np.ndarray:
        """Every sample's latest loss as of the last sync (NaN: never seen)."""
        return self.loss_table.host_losses

    @property
    def host_mixed(self) -> np.ndarray:
        return self.loss_table.host_mixed

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self):
        """One epoch. Every ``iter()`` starts a whole epoch: the next one, also after a
        broken-off pass (a ``break``, an exception), which is not counted in
        ``epochs_completed``. Two iterations cannot run at once: an older iterator resumed
        after a newer one started raises ``UserError``."""
        token = self._begin_pass()
        plan, batches = self.plan(), self._batches
        rows = self._output.upload(plan, batches)
        self._feed.start(plan, batches, self.epoch)
        i, failed_at, finished = 0, -1, False
        try:
            while i < len(batches):
                try:
                    out = self._feed.run()
                except Exception as err:  # DALI's RuntimeError, or BadFilesFound from the source
                    if failed_at == i:
                        raise
                    plan, batches, explained = self._feed.recover(err, plan, batches, i, self.excluded,
                                                                  self._exclude)
                    failed_at = -1 if explained else i  # unexplained twice at `i`: raise
                    rows = self._output.upload(plan, batches)
                    self._feed.restart(plan, batches, position=i)
                    continue
                images = self._output.images(out, len(batches[i]), zero_copy=self._feed.exec_dynamic)
                del out
                yield self._output.batch(images, rows, i)
                if self._pass is not token:
                    raise UserError(_SUPERSEDED.format(type(self).__name__))
                i += 1
            finished = self._feed.drain()
        finally:
            if self._pass is token:  # a superseded pass was wound up by the newer one
                if not finished:
                    log.info("epoch %d broken off after %d of %d batches: not counted as complete",
                             self.epoch, i, len(batches))
                self._end_pass(finished)

    def _begin_pass(self) -> object:
        if self._pass is not None:  # an abandoned pass (its iterator never closed): wind it up
            self._end_pass(False)
        self._pass = token = object()
        return token

    def _end_pass(self, finished: bool) -> None:
        self._output.release()
        self._feed.end(finished)
        self.epochs_completed += finished
        self.epoch += 1
        self._plan = self._batches = None
        self._pass = None

    # -- bad files ------------------------------------------------------------------------
    def _exclude(self, bad: dict[int, str], write: bool = True) -> int:
        """Exclude samples {id: reason} from now on and list them; returns how many are new."""
        new = 0
        for i, reason in bad.items():
            new += not self.excluded[i]
            self.excluded[i] = True
            self.bad_files.add(self.index.paths[i], reason, write=write)
        return new

    def _sync_excluded(self) -> None:
        """Every rank plans from the same exclusions: a file found bad on one rank mid-epoch is
        excluded on all from the next epoch on (one all-reduce per epoch)."""
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flags = torch.as_tensor(self.excluded, dtype=torch.uint8, device=self.torch_device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            self.excluded = flags.cpu().numpy().astype(bool)

    # -- resume -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self.sync_losses()
        return {"epoch": self.epoch, "seed": self.seed, "losses": self.host_losses.copy(),
                "mixed": self.host_mixed.copy(), "excluded": self.excluded.copy(),
                "mix": dataclasses.asdict(self.mix), "data": self.index.fingerprint(),
                "controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["data"] != self.index.fingerprint():
            raise UserError(
                f"checkpoint was made on another dataset ({state['data']['num_samples']} samples, "
                f"{len(state['data']['classes'])} classes) than {str(self.index.root)!r} "
                f"({len(self.index)} samples, {len(self.index.classes)} classes)")
        self.epoch = int(state["epoch"])
        self.loss_table.load(state["losses"], state["mixed"])
        self.excluded = np.asarray(state["excluded"], bool) | self.excluded  # and what is bad now
        self._plan = self._batches = None


class ValLoader(_FolderAttributes):
    """Validation: resize the shorter side, center crop, normalise; sharded, no padding
    duplicates (the reader's padded samples are dropped), `(images, labels)` batches.

    The shorter side becomes `resize` (torchvision's 256 for 224: round(image_size * 256 / 224)
    when neither is given) or, with `crop_pct` (timm), floor(image_size / crop_pct); giving both
    is an error unless they agree.

    Rank r of W reads the contiguous slice [N r / W, N (r + 1) / W) of the files, the same
    slice every epoch (its own file list: DALI's sharded reader would move each rank to the
    next shard every epoch). Bad files: the slice is checked when the loader is made (same
    check as TrainLoader) and the bad files are left out; if DALI still fails mid-pass (a
    file vanished or was corrupted since), the files not yet returned are probed, the bad
    ones left out for good, and the pass goes on from where it stopped with a new pipeline.
    Each bad file is listed in `bad_files`.
    """

    def __init__(self, root, batch_size: int = 256, image_size: int = 224, resize: int | None = None,
                 *, crop_pct: float | None = None, device: str = "auto", threads: int = 0, classes=None,
                 rank: int | None = None, world_size: int | None = None,
                 torch_device: torch.device | str | None = None,
                 bad_files: str | os.PathLike | None = None, validate: bool = True):
        self.data = DataConfig(image_size=image_size, batch_size=batch_size, val_resize=resize,
                               crop_pct=crop_pct, device=device, threads=threads)
        classes = getattr(classes, "classes", classes)  # a TrainLoader (or ImageFolder) works too
        if isinstance(root, ImageFolderIndex):
            self.index = root
            if classes is not None and list(classes) != root.classes:
                raise UserError(f"val classes of {str(root.root)!r} differ from the given classes "
                                f"({len(root.classes)} vs {len(classes)})")
        else:
            self.index = scan_image_folder(root, classes=classes)
        self.rank, self.world_size = _dist_info(rank, world_size)
        self.dali_device, self.device_id, self.torch_device = _devices(device, torch_device)
        n = len(self.index)
        lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
        self._files: list[str] = list(self.index.paths[lo:hi])
        self._labels: list[int] = self.index.labels[lo:hi].tolist()
        self.bad_files = BadFileLog(bad_files)
        if validate:
            bad, _ = validate_files(self._files)
            self._leave_out(bad, self._files, self._labels)
        self._iter = None
        self._pass: object | None = None  # the running pass's token

    @property
    def shard_size(self) -> int:
        """Images this rank reads per pass (bad files left out)."""
        return len(self._files)

    def __len__(self) -> int:
        return -(-self.shard_size // self.data.batch_size)

    drop_last = False  # the last partial batch is always kept: every image is evaluated

    def _leave_out(self, bad: dict[int, str], files: list[str], labels: list[int]) -> None:
        """Leave positions `bad` of `files` out of this pass (in place) and out of the loader."""
        for j, reason in bad.items():
            self.bad_files.add(files[j], reason)
        gone = {files[j] for j in bad}
        for fs, ls in ((self._files, self._labels), (files, labels)):
            keep = [k for k, f in enumerate(fs) if f not in gone]
            fs[:], ls[:] = [fs[k] for k in keep], [ls[k] for k in keep]

    def _make_iter(self, files: list[str], labels: list[int]):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        d = self.data
        pipe = val_pipeline(files=files, labels=labels, device=self.dali_device, image_size=d.image_size,
                            resize=d.val_resize, shard_id=0, num_shards=1, batch_size=d.batch_size,
                            num_threads=d.resolved_threads(), device_id=self.device_id, seed=0)
        return DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                   last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)

    def __iter__(self):
        """One whole pass over this rank's slice, every ``iter()``: a pass broken off (a
        ``break`` after a few batches, an exception) leaves DALI mid-epoch, so the next pass
        starts a new pipeline. An older iterator resumed after a newer one started raises
        ``UserError`` (two passes over one loader cannot run at once)."""
        if self._pass is not None:  # the last pass was abandoned mid-way (never closed)
            self._iter = None
        self._pass = token = object()
        finished = False
        try:
            for batch in self._pass_batches():
                yield batch
                if self._pass is not token:
                    raise UserError(_SUPERSEDED.format(type(self).__name__))
            finished = True
        finally:
            if self._pass is token:
                if not finished:
                    self._iter = None  # mid-epoch: DALI's iterator cannot be reset there
                self._pass = None

    def _pass_batches(self):
        files, labels = self._files, self._labels  # what the current pipeline reads
        it, done, retried = self._iter, 0, False
        while files:
            try:
                if it is None:
                    it = self._make_iter(files, labels)
                    if files is self._files:
                        self._iter = it
                (out,) = next(it)
            except StopIteration:
                break
            except Exception:  # DALI raised; that pipeline is no longer valid
                if it is self._iter:
                    self._iter = None
                it = None
                files, labels, done = files[done:], labels[done:], 0  # the rest of this pass
                held = 3 * self.data.batch_size  # the failed batch and the prefetched ones first
                bad = probe(files[:held], self.dali_device, self.device_id)
                if not bad:
                    rest = probe(files[held:], self.dali_device, self.device_id)
                    bad = {held + j: r for j, r in rest.items()}
                if not bad:
                    if retried:
                        raise
                    retried = True
                    continue
                self._leave_out(bad, files, labels)
                continue
            retried = False
            images = out["images"].permute(0, 3, 1, 2)
            labels_out = out["labels"].reshape(-1).long()
            done += len(labels_out)
            # each on the loader's device (on a GPU, DALI's labels are on it too, val_pipeline)
            yield images.to(self.torch_device), labels_out.to(self.torch_device)

