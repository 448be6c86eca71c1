"""The DALI side of the train loader (docs/architecture.md, "Data flow of one epoch", steps 2
and 3, and "Bad files"): from an epoch's plan to DALI's outputs.

The plan's batches go to the external source (source.py), which turns each into slots; the
pipeline that decodes them (pipelines.train_pipeline) is built once and reset every epoch
where it can, since building one costs seconds on a GPU. A batch DALI cannot read is probed,
its bad files excluded and the rest of the epoch re-planned without them (`Feed.recover`),
so the epoch keeps its length and every good sample. batches.py hands what comes out to
torch; loader.py runs the two.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from .augment import Augment, quiet_dali_deprecations
from .config import DataConfig, MixConfig
from .crops import CropPlanner
from .dataset import ImageFolderIndex
from .pipelines import train_pipeline
from .plan import EpochPlan
from .robust import SUSPECT, CheckedPlanSource, FileWatch, drop_samples, probe_files, suspect_hint
from .source import PlanSource

# the train loader says everything under one logger name, whichever of its parts says it
log = logging.getLogger("mixtrain_dali.loader")


def probe(paths: list[str], dali_device: str, device_id: int | None) -> dict[int, str]:
    """Mid-run probe of the files DALI held when it raised: the CPU decoder's verdict (the
    same on every machine, robust.probe_files); on a GPU, if that finds nothing, the GPU
    decoder's too, so a file only nvJPEG cannot decode is left out rather than failing the
    run again."""
    bad = probe_files(paths)
    if not bad and dali_device == "gpu":
        bad = {j: f"{reason} (GPU decoder; the CPU decoder reads it)"
               for j, reason in probe_files(paths, decoder="mixed", device_id=device_id).items()}
    return bad


def window_sizes(index: ImageFolderIndex, usable: np.ndarray,
                 validate: bool) -> tuple[np.ndarray | None, str | None]:
    """Every usable image's size (from the file check or its manifest), so that the host
    finishes the crop windows and the DALI graph has no per-sample arithmetic (5-6 ms of
    pipeline time a batch of 256 saved on one DALI thread; results/crop_windows_cpu.md); None
    (the graph finishes them from each header) when a size is unknown or there was no
    check, with why."""
    hw = index.hw
    if not validate or hw is None:
        return None, "no file check, so no image sizes"
    if (hw[usable] > 0).all():
        return hw, None
    return None, f"{int((hw[usable] <= 0).any(1).sum())} image size(s) unknown after the file check"


def plan_source(paths, data: DataConfig, *, seed: int, pastes: bool, hw: np.ndarray | None,
                watch: FileWatch | None) -> PlanSource:
    """The external source for `paths`: crop windows drawn from (seed, epoch, batch), finished
    on the host where `hw` gives every size; with a file `watch`, each batch's files stat'ed
    as DALI takes them (robust.CheckedPlanSource); with read="ahead", the files of
    prefetch + 1 batches read on host threads (source.py)."""
    crops = CropPlanner(data.scale, data.ratio, seed=seed, tries=data.crop_tries)
    reading = dict(read=data.read, depth=data.prefetch + 1)
    if watch is not None:
        return CheckedPlanSource(paths, mixing=pastes, crops=crops, watch=watch, hw=hw, **reading)
    return PlanSource(paths, mixing=pastes, crops=crops, hw=hw, **reading)


class Feed:
    """One TrainLoader's source and pipeline, epoch by epoch: `start` an epoch's plan, `run` for
    each output (`recover`, then `restart`, after a failed batch), `drain` at the epoch's end,
    then `end`.

    `size_at(epoch)`: the epoch's image size (progressive resizing). `rank` and `world_size`
    seed the augmentations and say whether a re-planned epoch may lose a step."""

    def __init__(self, source: PlanSource, data: DataConfig, mix: MixConfig, augment: Augment | None, *,
                 dali_device: str, device_id: int | None, seed: int, rank: int, world_size: int,
                 size_at: Callable[[int], int]):
        self.source, self.data, self.mix, self.augment = source, data, mix, augment
        self.pastes = mix.pastes  # composites tiled in the graph: B*k slots a batch
        self.dali_device, self.device_id = dali_device, device_id
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.size_at = size_at
        self.pipe = None
        self.pipe_size, self.pipe_at_epoch_end = None, False
        self.epoch, self.stream = 0, None

    def start(self, plan: EpochPlan, batches: list[np.ndarray], epoch: int) -> None:
        """Hand `epoch`'s batches to the source and ready its pipeline."""
        self.epoch = epoch
        self.source.start(plan, batches)
        self.epoch_pipeline()
        # GPU: outputs ready on torch's current stream, not on the host (no host wait per step)
        self.stream = torch.cuda.current_stream(self.device_id) if self.dali_device == "gpu" else None

    def epoch_pipeline(self):
        """This epoch's pipeline: the last epoch's, reset, when it ended cleanly at the same
        image size (rebuilding it every epoch made a 6k-image epoch on an H100 take 3.7 s
        instead of 1.5 s: the GPU decoder's set-up); else a new one. With augmentations, a new
        one every epoch: their draws come from DALI's RNG, seeded from (seed, rank, epoch), so a
        resumed run draws what the uninterrupted one did."""
        size = self.size_at(self.epoch)
        if (self.pipe is not None and self.pipe_at_epoch_end and self.pipe_size == size
                and self.augment is None):
            self.pipe.reset()
            return self.pipe
        return self.pipeline()

    def pipeline(self):
        """A new pipeline. Without augmentations the graph draws nothing at random (crop windows
        and flips come from the host's plan, a function of (seed, epoch, batch)), so a resumed
        run, a rebuilt pipeline after a bad file and a reused one all decode exactly the same
        pixels. The augmentations' draws are seeded from (seed, rank, epoch): a resumed run
        draws the same; a pipeline rebuilt mid-epoch after a bad file starts the epoch's draws
        again."""
        self.pipe = None  # release the last pipeline's buffers first
        d, pastes = self.data, self.pastes
        size = self.size_at(self.epoch)
        with quiet_dali_deprecations():  # the graph is traced when the pipeline is made
            pipe = train_pipeline(
                source=self.source, device=self.dali_device, image_size=size, mixing=pastes,
                augment=self.augment, host_windows=self.source.host_windows, crop_tries=d.crop_tries,
                read=self.source.read,
                enable_conditionals=self.augment is not None and self.augment.conditionals,
                batch_size=d.batch_size * (self.mix.k if pastes else 1),
                num_threads=d.resolved_threads(), device_id=self.device_id,
                seed=int(np.random.SeedSequence([self.seed, self.rank] + ([self.epoch] if self.augment else []))
                         .generate_state(1)[0] % 2**31),
                prefetch_queue_depth=d.prefetch)
            pipe.build()
        self.pipe, self.pipe_size, self.pipe_at_epoch_end = pipe, size, False
        return pipe

    def run(self):
        """The next batch's DALI output (raises what DALI or the source raised)."""
        (out,) = self.pipe.run(self.stream)
        if self.source.fed:
            self.source.fed.pop(0)  # consumed: `fed` keeps what DALI still holds
        return out

    @property
    def exec_dynamic(self) -> bool:
        """Whether the pipeline gives each iteration new output memory (so it may be shared)."""
        return self.pipe is not None and self.pipe.exec_dynamic

    def recover(self, err: Exception, plan: EpochPlan, batches: list[np.ndarray], i: int,
                excluded: np.ndarray, exclude: Callable[[dict[int, str]], int]):
        """After batch `i` failed: find the bad files among those DALI held, exclude them
        (`exclude({id: reason})` lists them and returns how many are new; `excluded`: the
        samples excluded so far), rewrite batches i.. without them. Returns (plan, batches,
        explained): False when no bad file was found (the batch is retried once; a second
        failure there is raised)."""
        found = getattr(err, "found", None)  # BadFilesFound: the watch already names them
        if found:
            bad = {s: f"{r} (since the up-front check)" for s, r in found.items() if r != SUSPECT}
            suspects = [s for s, r in found.items() if r == SUSPECT]
        else:
            # the files of every batch handed to DALI and not yet returned, `i` first
            suspects = list(dict.fromkeys(int(s) for sb in self.source.fed for s in sb.slot_samples))
            bad = {}
        suspects = [s for s in suspects if not excluded[s]]
        paths = [self.source.paths[s] for s in suspects]
        probed = probe(paths, self.dali_device, self.device_id)
        hint = (lambda p: suspect_hint(p) + "; ") if found else (lambda p: "")
        bad.update({suspects[j]: hint(paths[j]) + reason for j, reason in probed.items()})
        new = exclude(bad)
        if not bad:
            if found:
                return plan, batches, True  # changed files that still decode: go on
            log.warning("epoch %d, batch %d: DALI failed but no bad file was found among the %d "
                        "files it held; retrying the batch once: %s", self.epoch, i, len(suspects),
                        str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
            return plan, batches, False
        min_side = max(1, int(round(self.mix.min_side_frac * min(plan.canvas))))
        plan, batches, info = drop_samples(plan, batches, i, excluded, min_side,
                                           allow_fewer_steps=self.world_size == 1)
        log.info("epoch %d, batch %d: %d bad file(s) left out of the rest of the epoch: %s",
                 self.epoch, i, new, info)
        if info["repeated"]:
            log.warning("epoch %d: %d batch(es) left with no readable image repeat a composite so "
                        "every rank takes the same number of steps", self.epoch, info["repeated"])
        return plan, batches, True

    def restart(self, plan: EpochPlan, batches: list[np.ndarray], position: int) -> None:
        """After `recover`: the source from batch `position` of the rewritten batches, on a new
        pipeline (the failed one is no longer valid)."""
        self.source.start(plan, batches, position=position)
        self.pipeline()

    def drain(self) -> bool:
        """After the epoch's last batch: take DALI's end-of-epoch StopIteration (the source
        raised it while prefetching), so the pipeline can be reset and reused."""
        try:
            self.pipe.run(self.stream)
        except StopIteration:
            return True
        return False

    def end(self, finished: bool) -> None:
        """The epoch is over: stop the source; keep the pipeline for the next epoch only if it
        ran to its end (broken off or failed, DALI may hold this epoch's prefetched batches)."""
        self.source.start(None, [])
        if not finished:
            self.pipe = None
        self.pipe_at_epoch_end = finished
