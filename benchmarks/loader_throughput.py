"""Loader throughput: images/s delivered to the training device, side by side.

Same JPEGs (ImageNet-like size and compression), same output (RandomResizedCrop to a square
+ horizontal flip + normalise, float on the training device), same batch size, one run:

  torchvision   ImageFolder + DataLoader (workers = cores, persistent, pinned memory on GPU)
  dali_plain    NVIDIA's ResNet-50 example pipeline: fn.readers.file (random_shuffle) ->
                decoders.image_random_crop (mixed on a GPU, cpu without) -> resize ->
                crop_mirror_normalize with a coin-flip mirror; DALIGenericIterator
  mixtrain_off  our TrainLoader, mixing off (its defaults)
  mixtrain_off_ahead / mixtrain_off_graph  the same with the other read path than the default
                (read="ahead": the files read ahead on host threads and handed to DALI as bytes;
                read="graph": fn.io.file.read in the DALI graph): the read-path A/B
  mixtrain_off_t10  the same with crop_tries=10: windows that do not fit are drawn again, as
                torchvision and plain DALI do, instead of shrunk (fewer pixels decoded)
  mixtrain_k4   our TrainLoader, k=4 and half of the samples mixed (every epoch mixes):
                source images and composites (model inputs) are counted separately
  mixtrain_randaug  our TrainLoader, mixing off, with RandAugment (n=2, m=9 of 31 bins)
                in the graph (DALI's auto_aug), the cost of a modern recipe's augmentation

Each repeat is one pass over the data, timed end to end (with torch.cuda.synchronize() on a
GPU); warm-up passes are excluded; the median of the repeats is reported. On the CPU the
variants are timed in 3 rounds, each timing every loader in turn (2 passes each), so a slow
spell of a shared machine is spread over all of them; ours / plain DALI is also given per round, and so
is each read path against plain DALI and against the other. Every batch is touched on the device
(one element summed, no host sync) so lazy work is counted.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "loader_throughput"
VARIANTS = {
    "torchvision": "torchvision ImageFolder + DataLoader",
    "dali_plain": "DALI readers.file (NVIDIA RN50 example)",
    "mixtrain_off": "MixTrain TrainLoader, mixing off",
    "mixtrain_off_ahead": "MixTrain TrainLoader, mixing off, read='ahead' (files read ahead on host threads)",
    "mixtrain_off_graph": "MixTrain TrainLoader, mixing off, read='graph' (files read in the DALI graph)",
    "mixtrain_off_t10": "MixTrain TrainLoader, mixing off, crop_tries=10 (torchvision's crop rule)",
    "mixtrain_k4": "MixTrain TrainLoader, k=4, f=0.5",
    "mixtrain_randaug": "MixTrain TrainLoader, mixing off, RandAugment n=2 m=9",
}
RANDAUG = {"auto_augment": "randaugment", "rand_n": 2, "rand_m": 9}
READ_VARIANTS = {"graph": "mixtrain_off_graph", "ahead": "mixtrain_off_ahead"}
# cpu: 3 rounds of 2 timed passes each; a round times every variant once, in turn, so a slow
# spell of a shared machine hits all of them rather than the one that happened to be running
FULL = {"cpu": {"n": 2048, "repeats": 2, "rounds": 3}, "gpu": {"n": 16384, "repeats": 5, "rounds": 1}}
QUICK = {"n": 128, "size": [112, 128], "image_size": 64, "batch_size": 16, "repeats": 3, "warmup": 1,
         "rounds": 1}
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--n", type=int, default=None,
                   help=f"JPEGs in the dataset (default {FULL['cpu']['n']} on cpu, {FULL['gpu']['n']} on gpu, "
                        f"{QUICK['n']} with --quick)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="JPEG side range in px (default 400 500; 112 128 with --quick)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"output crop side (default 224; {QUICK['image_size']} with --quick)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size (default 256; {QUICK['batch_size']} with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed passes per variant and round (default {FULL['cpu']['repeats']} on cpu, "
                        f"{FULL['gpu']['repeats']} on gpu; {QUICK['repeats']} with --quick)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"rounds, each timing every variant in turn (default {FULL['cpu']['rounds']} on cpu, "
                        f"{FULL['gpu']['rounds']} on gpu, 1 with --quick); figures are medians over all of them")
    p.add_argument("--warmup", type=int, default=None, help="untimed passes first (default 1)")
    p.add_argument("--threads", type=int, default=0, help="DALI CPU threads (default 0 = cores)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default cores)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                   help="which loaders to time (default all but the read path that is the default's, "
                        "which mixtrain_off already times)")
    return p


def default_read() -> str:
    """The TrainLoader's default read path (DataConfig.read)."""
    from mixtrain_dali.config import DataConfig

    return DataConfig().read


def default_variants() -> list[str]:
    """Every variant but the read path `mixtrain_off` already is."""
    return [v for v in VARIANTS if v != READ_VARIANTS[default_read()]]


def settings_from(args, device: str) -> dict:
    cores = os.cpu_count() or 1
    q = args.quick
    s = {
        "quick": q, "device": device,
        "n": args.n or (QUICK["n"] if q else FULL[device]["n"]),
        "size_range": list(args.size or (QUICK["size"] if q else [400, 500])),
        "quality": args.quality,
        "image_size": args.image_size or (QUICK["image_size"] if q else 224),
        "batch_size": args.batch_size or (QUICK["batch_size"] if q else 256),
        "repeats": args.repeats or (QUICK["repeats"] if q else FULL[device]["repeats"]),
        "rounds": args.rounds or (QUICK["rounds"] if q else FULL[device]["rounds"]),
        "warmup": QUICK["warmup"] if args.warmup is None else args.warmup,
        "dali_threads": args.threads or cores,
        "workers": cores if args.workers is None else args.workers,
        "scale": list(SCALE), "ratio": [round(r, 6) for r in RATIO],
        "mix": {"k": 4, "fraction": 0.5, "selection": "random", "warmup_epochs": 0,
                "final_full_fraction": 0.0, "gamma": 0.0, "self_correct": False},
        "variants": list(args.variants or default_variants()),
        "default_read": default_read(),
    }
    from mixtrain_dali.errors import UserError

    for key in ("n", "image_size", "batch_size", "repeats", "rounds"):
        if s[key] < 1:
            raise UserError(f"--{key.replace('_', '-')}={s[key]} must be >= 1")
    if s["warmup"] < 0 or s["workers"] < 0 or s["dali_threads"] < 1:
        raise UserError("--warmup and --workers must be >= 0 and --threads >= 0")
    return s


# -- the loaders: each a function (root, settings, torch device) -> iterable factory ---------
# One call of the returned `epoch()` is one pass; it yields (images, labels, n_source_images).

def _torchvision(root, s, dev):
    import torch
    from torchvision import datasets, transforms

    from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD

    tf = transforms.Compose([
        transforms.RandomResizedCrop(s["image_size"], scale=SCALE, ratio=RATIO, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    dataset = datasets.ImageFolder(str(root), tf)
    on_gpu = dev.type == "cuda"
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=s["batch_size"], shuffle=True, num_workers=s["workers"],
        pin_memory=on_gpu, persistent_workers=s["workers"] > 0, drop_last=False)

    def epoch():
        for images, labels in loader:
            if on_gpu:
                images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            yield images, labels, len(labels)

    return epoch, lambda: None


def _dali_plain(root, s, dev):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD

    on_gpu = dev.type == "cuda"
    size = s["image_size"]

    @pipeline_def
    def rn50_pipeline():  # NVIDIA DALI's examples/use_cases/pytorch/resnet50/main.py, training branch
        decoder = "mixed" if on_gpu else "cpu"
        jpegs, labels = fn.readers.file(file_root=str(root), random_shuffle=True, pad_last_batch=True,
                                        name="Reader")
        images = fn.decoders.image_random_crop(
            jpegs, device=decoder, output_type=types.RGB,
            device_memory_padding=211025920 if on_gpu else 0,
            host_memory_padding=140544512 if on_gpu else 0,
            preallocate_width_hint=5980 if on_gpu else 0,
            preallocate_height_hint=6430 if on_gpu else 0,
            random_aspect_ratio=list(RATIO), random_area=list(SCALE), num_attempts=100)
        images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_TRIANGULAR,
                           antialias=True)
        mirror = fn.random.coin_flip(probability=0.5)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          crop=(size, size), mean=[255 * m for m in IMAGENET_MEAN],
                                          std=[255 * x for x in IMAGENET_STD], mirror=mirror)
        return images, (labels.gpu() if on_gpu else labels)

    pipe = rn50_pipeline(batch_size=s["batch_size"], num_threads=s["dali_threads"],
                         device_id=dev.index if on_gpu else None, seed=0)
    pipe.build()
    it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                             last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)

    def epoch():
        for (out,) in it:
            labels = out["labels"].reshape(-1)
            yield out["images"], labels, len(labels)

    return epoch, lambda: None


def _mixtrain(root, s, dev, mixing: bool, augment: dict | None = None, crop_tries: int = 1,
              read: str | None = None):
    from mixtrain_dali.config import MixConfig
    from mixtrain_dali.loader import MixBatch, TrainLoader

    mix = MixConfig(enabled=True, **s["mix"]) if mixing else None
    loader = TrainLoader(root, batch_size=s["batch_size"], image_size=s["image_size"], mix=mix,
                         seed=0, device="gpu" if dev.type == "cuda" else "cpu",
                         threads=s["dali_threads"], scale=SCALE, ratio=RATIO, crop_tries=crop_tries,
                         **({"read": read} if read else {}), **(augment or {}))
    if mixing:
        loader.losses[:-1] = 1.0  # every sample "seen": the first epoch already mixes

    def epoch():
        for batch in loader:
            if isinstance(batch, MixBatch):
                yield batch.images, batch.labels, batch.n_samples
            else:
                images, labels = batch
                yield images, labels, len(labels)

    return epoch, lambda: loader.plan().stats


LOADERS = {"torchvision": _torchvision, "dali_plain": _dali_plain,
           "mixtrain_off": lambda r, s, d: _mixtrain(r, s, d, False),
           "mixtrain_off_ahead": lambda r, s, d: _mixtrain(r, s, d, False, read="ahead"),
           "mixtrain_off_graph": lambda r, s, d: _mixtrain(r, s, d, False, read="graph"),
           "mixtrain_off_t10": lambda r, s, d: _mixtrain(r, s, d, False, crop_tries=10),
           "mixtrain_k4": lambda r, s, d: _mixtrain(r, s, d, True),
           "mixtrain_randaug": lambda r, s, d: _mixtrain(r, s, d, False, RANDAUG)}


def _check_batch(name, images, dev, s):
    """Same output from every loader: a float (B, 3, S, S) batch on the training device."""
    size = s["image_size"]
    ok = (images.dim() == 4 and tuple(images.shape[1:]) == (3, size, size)
          and images.dtype.is_floating_point and images.device.type == dev.type)
    if not ok:
        raise RuntimeError(f"{name}: got a {tuple(images.shape)} {images.dtype} batch on {images.device}, "
                           f"expected (B, 3, {size}, {size}) float on {dev.type}")


def one_pass(epoch, dev, sync, check) -> dict:
    """Time one pass; every batch is touched on the device without a host sync."""
    import torch

    touch = torch.zeros((), device=dev)
    source = outputs = batches = 0
    sync()
    start = time.perf_counter()
    for images, labels, n in epoch():
        if not batches:
            check(images)  # metadata only: no sync
        touch += images[-1, 0, 0, 0]  # the batch's last image: all of it has been produced
        source += n
        outputs += len(images)
        batches += 1
    sync()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(touch).item():
        raise RuntimeError("non-finite values in the output")
    return {"time_s": elapsed, "source_images": source, "outputs": outputs, "batches": batches}


def measure(name, root, s, dev, progress: bool, desc: str = "") -> dict:
    """One round of `name`: build the loader, `warmup` untimed passes, `repeats` timed ones."""
    import torch
    from tqdm import tqdm

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    epoch, stats = LOADERS[name](root, s, dev)
    setup = time.perf_counter() - t0
    runs = []
    total = s["warmup"] + s["repeats"]
    for i in tqdm(range(total), desc=f"{name:>12}{desc}", disable=not progress, leave=False):
        r = one_pass(epoch, dev, sync, lambda images: _check_batch(name, images, dev, s))
        if r["source_images"] != s["n"]:
            raise RuntimeError(f"{name}: a pass delivered {r['source_images']} of {s['n']} images")
        if i >= s["warmup"]:
            runs.append(r)
    return {"runs": runs, "setup_s": setup, "plan_stats": stats()}


def summarize(name, s, rounds: list[dict]) -> dict:
    """Figures of `name` over all its rounds' timed passes (medians)."""
    runs = [r for rnd in rounds for r in rnd["runs"]]
    times = [r["time_s"] for r in runs]
    med = common.median(times)
    out = {
        "label": VARIANTS[name],
        "images_per_s": s["n"] / med,
        "images_per_s_runs": [s["n"] / t for t in times],
        "images_per_s_rounds": [s["n"] / common.median([r["time_s"] for r in rnd["runs"]]) for rnd in rounds],
        "outputs_per_s": runs[0]["outputs"] / med,
        "time_s_median": med, "time_s_runs": times,
        "source_images": runs[0]["source_images"], "outputs": runs[0]["outputs"],
        "batches": runs[0]["batches"], "setup_s": rounds[0]["setup_s"],
    }
    plan_stats = rounds[0]["plan_stats"]
    if plan_stats:
        out["ideal_speedup"] = plan_stats.get("ideal_speedup")
        out["mixed_samples"] = plan_stats.get("mixed_samples")
        out["composites"] = runs[0]["outputs"]
        out["composites_per_s"] = out["outputs_per_s"]
    return out


def ours_vs_plain(variants: dict) -> dict | None:
    """Our loader (mixing off) / plain DALI: per round (each the ratio of the round's medians,
    timed minutes apart at most) and the median of those; None without both variants."""
    if "mixtrain_off" not in variants or "dali_plain" not in variants:
        return None
    def ratio(name):
        rounds = [a / b for a, b in zip(variants[name]["images_per_s_rounds"],
                                        variants["dali_plain"]["images_per_s_rounds"])]
        return {"rounds": rounds, "median": common.median(rounds)}

    out = ratio("mixtrain_off")
    if "mixtrain_off_t10" in variants:  # DALI's plain graph rejects windows that do not fit, too
        out["crop_tries_10"] = ratio("mixtrain_off_t10")
    return out


def _per_round(a: dict, b: dict) -> dict:
    rounds = [x / y for x, y in zip(a["images_per_s_rounds"], b["images_per_s_rounds"])]
    return {"rounds": rounds, "median": common.median(rounds)}


def read_paths(variants: dict, default: str) -> dict | None:
    """The read-path A/B (mixing off): each path's variant and its ratio to plain DALI, and
    ahead / graph, per round (each the ratio of the round's medians) and the median of those;
    None unless both paths were timed. `default`: the loader's default path (`mixtrain_off`)."""
    names = {r: READ_VARIANTS[r] if READ_VARIANTS[r] in variants else
             ("mixtrain_off" if r == default and "mixtrain_off" in variants else None) for r in READ_VARIANTS}
    if None in names.values():
        return None
    out: dict = {"default": default}
    for r, name in names.items():
        out[r] = {"variant": name}
        if "dali_plain" in variants:
            out[r]["vs_dali_plain"] = _per_round(variants[name], variants["dali_plain"])
    out["ahead_vs_graph"] = _per_round(variants[names["ahead"]], variants[names["graph"]])
    return out


def read_paths_line(a_b: dict) -> str:
    """The A/B in one line for the summary."""
    rounds = lambda r: ", ".join(f"{x:.2f}" for x in r["rounds"])  # noqa: E731
    ab = a_b["ahead_vs_graph"]
    line = f"read ahead / read in the graph {ab['median']:.2f} (rounds: {rounds(ab)})"
    for r in ("graph", "ahead"):
        if "vs_dali_plain" in a_b[r]:
            v = a_b[r]["vs_dali_plain"]
            line += f", {r} / plain DALI {v['median']:.2f} ({rounds(v)})"
    return line


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    import torch

    argv, args, device, torch_threads = common.start(build_parser, argv, prog)
    s = settings_from(args, device)
    s["torch_threads"] = torch_threads
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "gpu" else torch.device("cpu")
    out = common.out_dir(args)
    machine, when = common.machine_info(), common.now()
    command = common.command_line(NAME, argv)
    root = common.benchmark_jpegs(common.data_dir(args), s["n"], s["size_range"], s["quality"],
                                  progress=not args.no_progress)

    rounds: dict[str, list[dict]] = {name: [] for name in s["variants"]}
    for r in range(s["rounds"]):
        for name in s["variants"]:  # torchvision first: its workers fork before DALI starts threads
            print(f"timing {name}: {VARIANTS[name]}" + (f" (round {r + 1} of {s['rounds']})" if s["rounds"] > 1
                                                       else "") + " ...", flush=True)
            rounds[name].append(measure(name, root, s, dev, progress=not args.no_progress,
                                        desc=f" {r + 1}/{s['rounds']}" if s["rounds"] > 1 else ""))
            gc.collect()  # the loader's workers and pipelines go before the next one is timed
    variants = {name: summarize(name, s, rnds) for name, rnds in rounds.items()}
    ratio = ours_vs_plain(variants)
    a_b = read_paths(variants, s["default_read"])

    ref = variants.get("torchvision")
    for v in variants.values():
        v["vs_torchvision"] = v["images_per_s"] / ref["images_per_s"] if ref else None
    if "mixtrain_randaug" in variants and "mixtrain_off" in variants:  # the augmentation's cost
        aug = variants["mixtrain_randaug"]
        aug["vs_mixtrain_off"] = aug["images_per_s"] / variants["mixtrain_off"]["images_per_s"]

    result = {"benchmark": NAME, "title": "Loader throughput", "date": when, "command": command,
              "argv": argv, "process_command": " ".join(sys.argv), "machine": machine,
              "settings": s, "data": str(root), "variants": variants, "mixtrain_off_vs_dali_plain": ratio,
              "read_paths": a_b}
    table = _table(variants)
    summary = "source images/s: " + ", ".join(
        f"{VARIANTS[k]} {v['images_per_s']:.0f}"
        + (f" ({v['vs_torchvision']:.2f}x)" if ref and k != "torchvision" else "")
        for k, v in variants.items())
    if ratio:
        summary += (f"; mixing off / plain DALI {ratio['median']:.2f} (median of the rounds: "
                    + ", ".join(f"{x:.2f}" for x in ratio["rounds"]) + ")")
        if "crop_tries_10" in ratio:
            t10 = ratio["crop_tries_10"]
            summary += (f", with crop_tries=10 {t10['median']:.2f} (rounds: "
                        + ", ".join(f"{x:.2f}" for x in t10["rounds"]) + ")")
    if a_b:
        summary += "; " + read_paths_line(a_b)
    if "vs_mixtrain_off" in variants.get("mixtrain_randaug", {}):
        summary += f"; RandAugment {variants['mixtrain_randaug']['vs_mixtrain_off']:.2f}x mixing off"
    md = common.header(
        f"Loader throughput, {device.upper()}" + (" (quick)" if s["quick"] else ""),
        f"images/s delivered to the training device ({device}), median of {s['repeats'] * s['rounds']} passes "
        f"({s['rounds']} round(s) of {s['repeats']}, each round timing every variant in turn) over "
        f"{s['n']} JPEGs of {s['size_range'][0]}-{s['size_range'][1]} px (quality {s['quality']}), "
        f"RandomResizedCrop {s['image_size']} + flip + normalise, batch {s['batch_size']}, "
        f"{s['dali_threads']} DALI threads / {s['workers']} DataLoader workers",
        machine, when, command,
        result=summary)
    md += table + "\n\n" + (_read_table(a_b) + "\n\n" if a_b else "") + _notes(s)
    stem = common.stem(NAME, device, s["quick"])
    paths = common.write_results(out, stem, result, md)
    names = list(variants)
    common.bar_plot(out / f"{stem}.png", [VARIANTS[n] for n in names],
                    [variants[n]["images_per_s"] for n in names],
                    [min(variants[n]["images_per_s_runs"]) for n in names],
                    [max(variants[n]["images_per_s_runs"]) for n in names],
                    f"Loader throughput on {device} ({s['image_size']} px, batch {s['batch_size']})",
                    "source images / s (median, min-max)")
    print(f"\nwrote {paths['json']}, {paths['md']}, {out / (stem + '.png')}")
    print(f"\n{table}")
    return result


def _table(variants: dict) -> str:
    rows = []
    for v in variants.values():
        ips = v["images_per_s_runs"]
        rows.append([v["label"], f"{v['images_per_s']:.1f}", f"{min(ips):.1f}-{max(ips):.1f}",
                     f"{v['outputs_per_s']:.1f}", f"{v['time_s_median']:.2f}", v["batches"],
                     "-" if v["vs_torchvision"] is None else f"{v['vs_torchvision']:.2f}x"])
    return common.markdown_table(
        ["loader", "source images/s (median)", "min-max", "model inputs/s", "s per pass", "batches",
         "vs torchvision"], rows)


def _read_table(a_b: dict) -> str:
    """The read-path A/B as a table: per round and the median of the rounds."""
    rows = [["read ahead / read in the graph", f"{a_b['ahead_vs_graph']['median']:.3f}",
             ", ".join(f"{x:.3f}" for x in a_b["ahead_vs_graph"]["rounds"])]]
    for r in ("graph", "ahead"):
        if "vs_dali_plain" in a_b[r]:
            v = a_b[r]["vs_dali_plain"]
            rows.append([f"read {r} ({a_b[r]['variant']}) / plain DALI", f"{v['median']:.3f}",
                         ", ".join(f"{x:.3f}" for x in v["rounds"])])
    return "Read-path A/B, mixing off:\n\n" + common.markdown_table(["ratio", "median", "per round"], rows)


def _notes(s: dict) -> str:
    m = s["mix"]
    return "\n".join([
        "Notes:",
        "- source images/s = JPEGs decoded and delivered per second; model inputs/s = tensors the "
        "model sees (with mixing, composites of up to k images each).",
        f"- MixTrain k=4: MixConfig(enabled=True, k={m['k']}, fraction={m['fraction']}, selection="
        f"{m['selection']!r}, warmup_epochs=0, final_full_fraction=0, gamma=0, self_correct=False); "
        "every pass mixes.",
        f"- RandAugment: TrainLoader(..., auto_augment='randaugment', rand_n={RANDAUG['rand_n']}, "
        f"rand_m={RANDAUG['rand_m']}), DALI's auto_aug on each image after its resize; its ratio to "
        "'mixing off' is the augmentation's cost. With augmentations the pipeline is built anew "
        "every pass (their draws are seeded per epoch), and that set-up is in the timed pass.",
        "- Each pass includes what the loader does once per epoch (our TrainLoader plans the epoch and "
        "resets its DALI pipeline, built once); warm-up passes and the first batch are not timed.",
        "- DataLoader workers are persistent; memory is pinned only with a GPU.",
        f"- Read paths: the TrainLoader's default is read={s['default_read']!r} (mixtrain_off). "
        "'graph': each batch's paths go to DALI and fn.io.file.read reads them in the pipeline's "
        "thread pool when the iteration runs; 'ahead': the source reads the files of the next "
        "prefetch + 1 batches on host threads while DALI decodes and hands DALI the bytes.",
        f"- Rounds: {s['rounds']}. Each round builds every loader anew, runs {s['warmup']} untimed and "
        f"{s['repeats']} timed pass(es) of it, then the next variant; a ratio of two loaders is most "
        "trustworthy within a round (the machine's speed drifts between rounds on shared hosts).",
    ]) + "\n"


if __name__ == "__main__":
    sys.exit(common.run_script(main))
