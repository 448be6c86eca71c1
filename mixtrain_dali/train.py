"""Reference training loop: SGD + cosine with warm-up, label smoothing, AMP and
channels_last on GPU, DDP under torchrun, per-epoch metrics, atomic checkpoints, resume.

Data layout: `DATA/train/<class>/...` and `DATA/val/<class>/...` (ImageNet's). Outputs in
`out`: config.toml (the resolved settings), metrics.jsonl (one line per epoch),
checkpoint.pt (after every epoch, written atomically), bad_files.txt (images skipped as
unreadable, one `path<TAB>reason` line each; robust.py), and while the run lasts
.mixtrain.lock (one writer per `out`; runlock.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config, DataConfig
from .dataset import scan_image_folder
from .errors import UserError
from .loader import MixBatch, TrainLoader, ValLoader
from .mixup import Mixup, soft_cross_entropy
from .nn import SoftTargetModel, adapt_model, build_model, mix_loss
from .pipelines import device_kind
from .robust import BAD_FILES
from .runlock import RunLock

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.toml"


def dist_backend(device_kind: str) -> str:
    """The process group's backend for the resolved device: NCCL for CUDA tensors, gloo for
    CPU ones (with --device cpu on a CUDA machine too: NCCL cannot reduce CPU tensors)."""
    return "nccl" if device_kind == "gpu" else "gloo"


def cuda_ordinal(local_rank: int, device_count: int) -> int:
    """The CUDA device of local rank `local_rank`: the rank's own when it sees all the node's
    GPUs, the only one when each rank sees one (CUDA_VISIBLE_DEVICES per rank)."""
    if device_count == 1:
        return 0
    if 0 <= local_rank < device_count:
        return local_rank
    raise UserError(f"LOCAL_RANK={local_rank} but this process sees {device_count} CUDA devices; "
                    "give each rank one device or all of them")


def _launch_rank() -> int:
    """This process's rank before train() sets up the process group: the group's when the
    caller made one, else torchrun's RANK (0 when not launched by it)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def _setup_distributed(device_kind: str) -> tuple[int, int, int]:
    """(rank, world_size, local_rank). Under torchrun on a GPU, selects this rank's CUDA device
    first (the loaders decode on torch's current device), then initialises the process group
    with the backend for the resolved device."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "gpu" and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(cuda_ordinal(local_rank, torch.cuda.device_count()))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(dist_backend(device_kind))
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), local_rank
    return 0, 1, 0


def lr_at(progress: float, cfg, base_lr: float) -> float:
    """Linear warm-up for `warmup_epochs`, then cosine to zero at the last epoch."""
    if progress < cfg.warmup_epochs:
        return base_lr * (progress + 1e-3) / cfg.warmup_epochs
    span = max(1e-9, cfg.epochs - cfg.warmup_epochs)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - cfg.warmup_epochs) / span)))


def start_warnings(config: Config, data: str | os.PathLike | None = None) -> list[str]:
    """What a run asked for but will not do, said once at start-up (no silent no-ops)."""
    m, epochs = config.mix, config.train.epochs
    out = []
    if data is not None and not (Path(data) / "val").is_dir():
        out.append(f"{str(data)!r} has no val/ folder: training without validation (no val_top1 in "
                   "metrics.jsonl); add DATA/val/<class>/<image> to evaluate every epoch")
    if m.enabled and (m.k > 1 or m.method == "prune"):
        from .controller import MixController

        ctl = MixController(m, 1, (config.data.image_size,) * 2, epochs=epochs)
        if not any(ctl.is_mixing_epoch(e) for e in range(epochs)):
            out.append(f"mixing is on but no epoch mixes: {epochs} epoch(s) leave none between the "
                       f"{m.warmup_epochs} warm-up epoch(s) and the {ctl.final_full_epochs()} final unmixed "
                       "one(s); train longer or lower mix.warmup_epochs / mix.final_full_fraction")
    return out


def check_resumable(ckpt: dict, config: Config, out_dir: Path) -> None:
    """Refuse to resume a checkpoint into another model: its arch and stem must be this run's."""
    was = ckpt.get("config", {}).get("train", {})
    for key, how in (("arch", "--arch {}"), ("stem", "stem = {!r} in the recipe's [train]")):
        then, now = was.get(key), getattr(config.train, key)
        if then is not None and str(then).lower() != str(now).lower():
            raise UserError(f"--resume: the checkpoint in {str(out_dir)!r} was trained with {key} {then!r}, "
                            f"not {now!r}: resume with {how.format(then)}, or start a new run "
                            "(--overwrite, or another --out)")


def start_summary(config: Config, loader: TrainLoader, val_loader: ValLoader | None, data: Path,
                  world: int, start_epoch: int, steps: int) -> str:
    """What the run is about to do, one short block before the first epoch."""
    t, d = config.train, config.data
    dev = loader.torch_device
    if dev.type == "cuda":
        where = f"GPU {dev.index} ({torch.cuda.get_device_name(dev)})"
    else:
        where = f"CPU (DALI on {_count(d.resolved_threads(), 'thread')})"
    ranks = f", {world} processes" if world > 1 else ""
    epochs = (f"epochs {start_epoch + 1}-{t.epochs} of {t.epochs} (resumed)" if start_epoch
              else _count(t.epochs, "epoch"))
    n = loader.num_samples
    bad = int(loader.excluded.sum())
    train = _count(n - bad, "image") + (f" ({bad} bad, left out)" if bad else "")
    val = _count(len(val_loader.index), "image") if val_loader is not None else "none (no val/)"
    augment = d.describe_augment()
    return "\n".join([
        f"mixtrain: {t.arch} on {where}{ranks}, {epochs}",
        f"  data:   {train} in {_count(len(loader.classes), 'class', 'classes')} ({data / 'train'}); val: {val}",
        f"  files:  {_describe_file_check(loader.file_check)}; {_describe_windows(loader)}",
        f"  steps:  {steps} in epoch {start_epoch + 1}, batch {d.batch_size}"
        + (f" per process ({d.batch_size * world} in all)" if world > 1 else ""),
        f"  mixing: {loader.controller.describe()}",
    ] + ([f"  augment: {augment}"] if augment else []))


def _describe_file_check(check: dict | None) -> str:
    """The start-up file check in words: how many files it read, where its verdicts are kept."""
    if check is None:
        return "not checked up front (--no-file-check)"
    where = check["manifest"]
    if where is None:
        return f"{_count(check['checked'], 'file')} checked, no manifest kept"
    if not check["checked"]:
        return f"none read: the manifest {where} vouches for every file (a file changed since is checked at its batch)"
    size = f", {os.path.getsize(where) / 1e6:.1f} MB" if os.path.exists(where) else ""
    return (f"{_count(check['checked'], 'file')} checked; verdicts kept in {where}{size} "
            "(a later start checks only new files)")


def _describe_windows(loader) -> str:
    """Where the crop windows are finished (TrainLoader._sizes_for_windows), in words."""
    if loader.crop_windows == "host":
        return "crop windows finished on the host (image sizes from the check)"
    return f"crop windows finished in the DALI graph ({loader.crop_windows_why})"


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def earlier_run(out_dir: Path) -> list[str]:
    """The files of an earlier run in `out_dir` that a new run would replace: its checkpoint,
    and its metrics if any epoch was written (a run killed in its first epoch leaves an empty
    metrics.jsonl and nothing to lose)."""
    metrics = out_dir / METRICS
    return ([CHECKPOINT] if (out_dir / CHECKPOINT).is_file() else []) + \
        ([METRICS] if metrics.is_file() and metrics.stat().st_size > 0 else [])


def clear_run(out_dir: Path) -> None:
    """Delete a run's own files in `out_dir` (nothing else there): the checkpoint and its
    temporary files, metrics, config, the bad-file list."""
    if not out_dir.is_dir():
        return
    for path in [out_dir / n for n in (CHECKPOINT, METRICS, METRICS + ".tmp", CONFIG, BAD_FILES)] \
            + list(out_dir.glob(CHECKPOINT + ".tmp*")):
        path.unlink(missing_ok=True)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temp file, fsync, rename: a kill mid-save leaves the old file whole."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def train(config: Config, data: str | os.PathLike, out: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True, overwrite: bool = False,
          check_files: bool = True) -> list[dict]:
    """Train `config.train.arch` on DATA/train, evaluate on DATA/val; returns the metrics rows.

    `out` holding an earlier run (earlier_run) is refused unless `resume` (continue it) or
    `overwrite` (its files are deleted first), and an `out` another live run is writing to
    is refused in any case (runlock.RunLock). `check_files=False` skips the loaders'
    up-front file check (for data known to be good; a bad file is still found mid-epoch)."""
    t = config.train
    out_dir = Path(out if out is not None else t.out)
    data = Path(data)
    train_root = data / "train"
    if not data.is_dir():
        raise UserError(f"data directory {str(data)!r} does not exist")
    if not train_root.is_dir():
        raise UserError(f"{str(data)!r} has no train/ folder: expected DATA/train/<class>/<image> "
                        "(and optionally DATA/val/<class>/<image>)")
    if resume and overwrite:
        raise UserError("--resume continues the run in --out, --overwrite deletes it: give one of them")
    # one writer per --out: rank 0 holds the run lock from before it reads or clears anything
    # there until the run ends, however it ends (runlock.py)
    lock = RunLock(out_dir) if _launch_rank() == 0 else None
    with lock if lock is not None else contextlib.nullcontext():
        return _run(config, data, out_dir, resume, progress, overwrite, check_files, lock)


def _run(config: Config, data: Path, out_dir: Path, resume: bool, progress: bool, overwrite: bool,
         check_files: bool, lock: RunLock | None) -> list[dict]:
    """train() once its arguments are checked; rank 0 holds the run lock (`lock`)."""
    t = config.train
    train_root = data / "train"
    ckpt_path = out_dir / CHECKPOINT
    ckpt = None
    if resume:
        if not ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint in {str(out_dir)!r} (looked for {CHECKPOINT})")
        # onto the CPU: load_state_dict copies weights and optimizer state to their devices,
        # and RNG states must stay CPU ByteTensors (map_location=cuda would move them)
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        check_resumable(ckpt, config, out_dir)
        if ckpt["epoch"] >= t.epochs:
            if _launch_rank() == 0:
                print(f"mixtrain: the run in {str(out_dir)!r} already finished {ckpt['epoch']} epoch(s) "
                      f"(--epochs {t.epochs}): nothing to do; to train it longer, --resume with a "
                      f"larger --epochs", flush=True)
            return _read_metrics(out_dir / METRICS, below_epoch=ckpt["epoch"])
    else:
        # every rank checks before rank 0 can have written a checkpoint or a metrics line (both
        # come after collectives); only rank 0 clears (others could delete what it has written)
        earlier = earlier_run(out_dir)
        if earlier and not overwrite:
            raise UserError(f"--out {str(out_dir)!r} already holds a run ({', '.join(earlier)}): "
                            "continue it with --resume, or delete it and start over with --overwrite "
                            "(or give another --out)")
        if _launch_rank() == 0:
            clear_run(out_dir)  # also what a run that never finished an epoch left

    kind = device_kind(config.data.device)
    rank, world, local_rank = _setup_distributed(kind)
    if kind == "gpu":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    torch.manual_seed(t.seed + rank)
    train_index = scan_image_folder(train_root, stat=check_files)
    loader = TrainLoader.from_config(train_index, config, bad_files=out_dir / BAD_FILES, validate=check_files)
    dev = loader.torch_device
    on_gpu = dev.type == "cuda"
    val_loader = None
    if (data / "val").is_dir():
        val_loader = ValLoader(data / "val", config.data.batch_size, config.data.val_size,
                               config.data.val_resize, device=config.data.device,
                               threads=config.data.threads, classes=train_index.classes,
                               bad_files=out_dir / BAD_FILES, validate=check_files)

    model = _model(config, len(train_index.classes)).to(dev)
    isolate = config.mix.isolate and config.mix.pastes
    if isolate and not model.can_isolate:
        isolate = False
        if rank == 0:
            why = ("train.region_pooling is off" if not t.region_pooling else
                   "a ViT's tiles need not hold whole patches" if model.pools_regions else model.why)
            print(f"mixtrain: warning: mix isolate: {t.arch} cannot run constituents apart ({why}); "
                  "they share the network (set isolate = false to silence this)", file=sys.stderr, flush=True)
    if t.channels_last:  # the loader's batches are NHWC in memory: keep weights and grads alike
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if on_gpu else None)
    base_lr = t.lr * config.data.batch_size * world / 256
    if t.optimizer == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=base_lr, betas=(t.momentum, 0.999),
                                      weight_decay=t.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=t.momentum,
                                    weight_decay=t.weight_decay)
    amp = on_gpu and t.amp

    start_epoch = 0
    if ckpt is not None:
        loader.load_state_dict(ckpt["loader"])  # refuses another dataset
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:  # a model setting check_resumable does not know of
            raise UserError(f"--resume: the checkpoint in {str(out_dir)!r} does not fit this "
                            f"{t.arch} model: {str(e).strip().splitlines()[0]}") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"]
        restore_rng(ckpt, on_gpu)
    loader.set_epoch(start_epoch)

    steps = len(loader)  # plans the first epoch, on every rank (planning syncs the loss table)
    if rank == 0:  # after every check that can fail: a run that stops says only why
        for message in start_warnings(config, data):
            print(f"mixtrain: warning: {message}", file=sys.stderr, flush=True)
        print(start_summary(config, loader, val_loader, data, world, start_epoch, steps), flush=True)

    rows: list[dict] = []
    if rank == 0:
        if lock is not None:
            lock.verify()
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(CHECKPOINT + ".tmp*"):  # left by a kill during a save
            stale.unlink()
        config.save(out_dir / CONFIG)
        rows = _read_metrics(out_dir / METRICS, below_epoch=start_epoch)
        _write_metrics(out_dir / METRICS, rows)  # drops lines of epochs the checkpoint lacks

    d = config.data
    mixup = (Mixup(len(train_index.classes), d.mixup_alpha, d.cutmix_alpha, d.mixup_prob,
                   d.mixup_switch_prob, t.label_smoothing) if d.mixes_labels else None)
    for epoch in range(start_epoch, t.epochs):
        if mixup is not None:  # draws from (seed, rank, epoch): a resumed run mixes the same
            mixup.rng = np.random.default_rng([t.seed, rank, epoch])
        row = _train_epoch(net, loader, optimizer, config, epoch, base_lr, amp, isolate,
                           progress and rank == 0, mixup)
        last = epoch + 1 == t.epochs
        if val_loader is not None and (last or (t.val_interval and (epoch + 1) % t.val_interval == 0)):
            row.update(evaluate(model, val_loader, amp, world))
        if rank == 0:
            if lock is not None:  # still this run's: no other run writes here meanwhile
                lock.verify()
            rows.append(row)
            with open(out_dir / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            state = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "loader": loader.state_dict(), "config": config.to_dict(), **rng_state(on_gpu)}
            atomic_save(state, ckpt_path)
            print(format_epoch(row), flush=True)
        else:
            loader.state_dict()  # keeps the collective all-reduce in step with rank 0
    return rows


def rng_state(on_gpu: bool) -> dict:
    """torch's RNG states for a checkpoint: the CPU one, and on a GPU every CUDA device's."""
    state = {"torch_rng": torch.get_rng_state()}
    if on_gpu:
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(ckpt: dict, on_gpu: bool) -> None:
    """Set the RNG states `rng_state` saved. States are CPU ByteTensors, whatever device the
    checkpoint was loaded onto. CUDA states are restored when running on a GPU with as many
    devices as when saved (a CPU checkpoint has none)."""
    torch.set_rng_state(ckpt["torch_rng"].cpu())
    cuda = ckpt.get("cuda_rng")
    if on_gpu and cuda is not None and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _train_epoch(net, loader: TrainLoader, optimizer, config: Config, epoch: int,
                 base_lr: float, amp: bool, isolate: bool, progress: bool, mixup: Mixup | None = None) -> dict:
    from tqdm import tqdm

    t = config.train
    plan = loader.plan()
    steps = len(loader)
    net.train()
    dev = loader.torch_device
    loss_sum = torch.zeros((), device=dev)
    seen = composites = 0
    start = time.perf_counter()
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", disable=not progress,
               leave=False, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        lr = lr_at(epoch + i / steps, t, base_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            if isinstance(batch, MixBatch) and mixup is not None:  # pruning (no pastes): k = 1
                images, target = mixup(batch.images, batch.labels[:, 0])
                logits = net(images, batch.boxes)
                per = soft_cross_entropy(logits.reshape(len(images), -1), target)[:, None] * batch.mask
                scaled = per if batch.weights is None else per * batch.weights
                loss, per = scaled.sum() / batch.mask.sum().clamp_min(1), per.detach()
                n = batch.n_samples
            elif isinstance(batch, MixBatch):
                if isolate:  # the host's copy of the boxes: no device-to-host sync
                    logits = net(batch.images, batch.boxes_host, isolate=True)
                else:
                    logits = net(batch.images, batch.boxes)
                loss, per = mix_loss(logits.float(), batch.labels, batch.mask, batch.shares,
                                     t.label_smoothing, batch.weights)
                n = batch.n_samples
            else:
                images, labels = batch
                if mixup is not None:
                    images, target = mixup(images, labels)
                    logits = net(images)
                    loss = soft_cross_entropy(logits, target).mean()
                else:
                    logits = net(images)
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=t.label_smoothing)
                n = len(labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(batch, MixBatch):
            loader.record(batch, per)
        loss_sum += loss.detach() * n
        seen += n
        composites += len(logits)
    if not composites:  # every file was found bad mid-epoch (the loader checks them up front too)
        raise UserError(f"no readable training images left in {str(loader.index.root)!r}: every file "
                        f"was found bad (listed in {BAD_FILES})")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    if loader.world_size > 1:  # report the epoch's global counts, not this rank's share
        counts = torch.tensor([seen, composites], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(counts)
        seen, composites = (int(v) for v in counts.tolist())
    loss_mean = _global_mean(loss_sum, seen, loader.world_size)
    loader.sync_losses()
    stats = plan.stats
    members = plan.members
    counts = (members >= 0).sum(1)
    mixed_ids = members[counts > 1]
    mixed_ids = mixed_ids[mixed_ids >= 0]
    alone_ids = members[counts == 1, 0]
    losses = loader.host_losses
    return {
        "epoch": epoch + 1,
        "image_size": int(plan.canvas[0]),  # the canvas side (progressive resizing moves it)
        "plan": plan.digest()[:16],
        "train_loss": loss_mean,
        "steps": steps,
        "composites": composites,
        "samples": seen,
        "mixed_samples": int(stats.get("mixed_samples", 0)),
        "ideal_speedup": round(float(stats["ideal_speedup"]), 4),
        "threshold": stats.get("threshold"),
        "mean_loss_mixed": _nanmean(losses[mixed_ids]),
        "mean_loss_unmixed": _nanmean(losses[alone_ids]),
        "epoch_time_s": round(elapsed, 3),
        "images_per_s": round(seen / max(elapsed, 1e-9), 1),
        "lr_end": lr,
    }


def _global_mean(loss_sum: torch.Tensor, seen: int, world: int) -> float:
    total = loss_sum.detach().double().clone()
    if world > 1:
        torch.distributed.all_reduce(total)
    return float(total.item() / max(1, seen))


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return round(float(x.mean()), 5) if len(x) else None


def evaluate_run(out_dir: str | os.PathLike, data: str | os.PathLike, val_size: int,
                 val_resize: int | None = None) -> dict:
    """The val top-1/top-5 of the model in a finished run's checkpoint at another test
    resolution: a centre crop of `val_size` px after resizing the shorter side to `val_resize`
    (default val_size x 256/224), on the run's device. For comparing test sizes (FixRes)
    after training, without training again."""
    out_dir, data = Path(out_dir), Path(data)
    ckpt_path = out_dir / CHECKPOINT
    if not ckpt_path.is_file():
        raise UserError(f"no checkpoint in {str(out_dir)!r} to evaluate (looked for {CHECKPOINT})")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    config = Config.from_dict(ckpt["config"], source=str(ckpt_path))
    d, t = config.data, config.train
    v = DataConfig(image_size=d.image_size, val_size=val_size, val_resize=val_resize)  # its checks and default
    loader = ValLoader(data / "val", d.batch_size, v.val_size, v.val_resize, device=d.device, threads=d.threads,
                       classes=scan_image_folder(data / "train").classes, validate=False)
    model = _model(config, len(loader.classes))
    model.load_state_dict(ckpt["model"])
    model = model.to(loader.torch_device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return evaluate(model, loader, amp=loader.torch_device.type == "cuda" and t.amp)


def _model(config: Config, num_classes: int) -> torch.nn.Module:
    """The run's model as training builds it: region pooling, or one soft target per composite."""
    t = config.train
    model = build_model(t.arch, num_classes, config.data.image_size, stem=t.stem)
    return adapt_model(model) if t.region_pooling else SoftTargetModel(model)


@torch.no_grad()
def evaluate(model, val_loader: ValLoader, amp: bool = False, world: int = 1) -> dict:
    model.eval()
    dev = val_loader.torch_device
    totals = torch.zeros(3, device=dev)  # top1, top5, count
    for images, labels in val_loader:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(images)
        top = logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices
        hit = top == labels[:, None]
        count = torch.full((), len(labels), device=dev)  # filled on the device: no host copy
        totals += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), count]).float()
    if world > 1:
        torch.distributed.all_reduce(totals)
    top1, top5, count = totals.tolist()
    return {"val_top1": round(100 * top1 / max(1, count), 3), "val_top5": round(100 * top5 / max(1, count), 3)}


def format_epoch(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}"]
    if "val_top1" in row:
        parts.append(f"top1 {row['val_top1']:.2f}%")
    parts += [f"steps {row['steps']}", f"mixed {row['mixed_samples']}/{row['samples']}",
              f"ideal x{row['ideal_speedup']:.2f}", f"{row['epoch_time_s']:.1f}s",
              f"{row['images_per_s']:.0f} img/s"]
    if row.get("threshold") is not None:
        parts.append(f"thr {row['threshold']:.3f}")
    return " | ".join(parts)


def _read_metrics(path: Path, below_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if row.get("epoch", 0) <= below_epoch:
            rows.append(row)
    return rows


def _write_metrics(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)
