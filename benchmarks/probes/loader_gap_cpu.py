"""Where the CPU loader (mixing off) loses to plain DALI at the loader benchmark's settings.

`mixtrain bench loader` compares whole loaders; this splits the difference, at its settings
(2048 JPEGs of 400-500 px, RandomResizedCrop 224, batch 256, 2 DALI threads), into:

- plain DALI's graph as the loader benchmark runs it (readers.file, fused random-crop decode,
  triangular resize, CHW output, DALI's PyTorch iterator) and with our resize/layout
  (linear antialiased resize, HWC);
- our train graph (`pipelines.train_pipeline`) run raw, its outputs left in DALI's memory,
  and with each way of getting a batch into torch: numpy's copy, torch's copy_, DALI's
  feed_ndarray, and a zero-copy DLPack view (`heads_to_torch(..., zero_copy=True)`);
- the same decode fed file names by an external source (`plain_ext`), and our decode with
  the crop windows computed on the host instead of from a header peek in the graph;
- `TrainLoader` itself.

Each variant: one untimed pass, then the median of --passes passes, all in one process, one
after the other (ratios within one run are what to read on a noisy machine).

    python benchmarks/probes/loader_gap_cpu.py            # writes benchmarks/results/loader_gap_cpu.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "loader_gap_cpu"
BATCH, SIZE, THREADS, N = 256, 224, 2, 2048


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy, feed_ndarray

    from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD
    from mixtrain_dali.crops import CropPlanner
    from mixtrain_dali.dataset import scan_image_folder
    from mixtrain_dali.loader import TrainLoader, heads_to_torch
    from mixtrain_dali.pipelines import train_pipeline
    from mixtrain_dali.plan import single_plan
    from mixtrain_dali.source import PlanSource

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--out-dir", default=str(common.REPO_ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(THREADS)
    root = common.benchmark_jpegs(common.DATA_CACHE, N, (400, 500), progress=False)
    mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
    rows: dict[str, dict] = {}

    def timed(name, label, run_pass):
        run_pass()
        times = []
        for _ in range(args.passes):
            t = time.perf_counter()
            run_pass()
            times.append(time.perf_counter() - t)
        rows[name] = {"label": label, "images_per_s": N / common.median(times), "pass_s": times}
        print(f"{name:18s} {rows[name]['images_per_s']:7.0f} images/s", flush=True)

    def one_pass(pipe, rewind, sizes, copy):
        """One epoch of an externally fed `pipe`: rewind its source, reset it, take each batch
        (of `sizes[i]` samples) into torch with `copy`, then take DALI's end of epoch."""
        rewind()
        pipe.reset()
        for n in sizes:
            (out,) = pipe.run()
            copy(out, n)[-1, 0, 0, 0].item()
            del out
        try:
            pipe.run()
        except StopIteration:
            pass

    @pipeline_def
    def plain(interp, layout):  # the loader benchmark's dali_plain graph, resize/layout varied
        jpegs, labels = fn.readers.file(file_root=str(root), random_shuffle=True, pad_last_batch=True,
                                        name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                               random_area=[0.08, 1.0], num_attempts=100)
        images = fn.resize(images, resize_x=SIZE, resize_y=SIZE, interp_type=interp, antialias=True)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout=layout, crop=(SIZE, SIZE),
                                        mean=mean, std=std, mirror=fn.random.coin_flip()), labels

    for name, label, interp, layout in (
            ("plain", "plain DALI as `bench loader` runs it (triangular resize, CHW)", types.INTERP_TRIANGULAR, "CHW"),
            ("plain_linear_hwc", "plain DALI with our resize and layout (linear antialiased, HWC)",
             types.INTERP_LINEAR, "HWC")):
        pipe = plain(interp, layout, batch_size=BATCH, num_threads=THREADS, device_id=None, seed=0)
        pipe.build()
        it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                 last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)

        def run(it=it):
            for (out,) in it:
                out["images"][-1, 0, 0, 0].item()
        timed(name, label, run)
        del it, pipe

    cpu = torch.device("cpu")
    index = scan_image_folder(root)
    paths = [index.paths.encoded(i) for i in range(len(index))]
    n_batches = len(paths) // BATCH
    rng = np.random.default_rng(0)
    # random-resized-crop windows relative to the image (area 0.08..1, ratio 3/4..4/3), as the
    # planner draws them, so the decoder reads about as many pixels as in the other variants
    area = rng.uniform(0.08, 1.0, len(paths))
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), len(paths)))
    rel_shape = np.minimum(np.stack([np.sqrt(area / ratio), np.sqrt(area * ratio)], 1), 1.0).astype(np.float32)
    rel_start = (rng.random((len(paths), 2)) * (1 - rel_shape)).astype(np.float32)

    @pipeline_def
    def plain_ext(src):  # plain's decode, fed file names by an external source + io.file.read
        jpegs = fn.io.file.read(fn.external_source(source=src, batch=True, dtype=types.UINT8))
        images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                               random_area=[0.08, 1.0], num_attempts=100)
        images = fn.resize(images, size=[SIZE, SIZE], antialias=True, interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mean=mean, std=std,
                                        mirror=fn.random.coin_flip())

    @pipeline_def
    def host_windows(src):  # our graph with the windows' relative start/shape from the host
        p, start, shape = fn.external_source(source=src, num_outputs=3, batch=True,
                                             dtype=[types.UINT8, types.FLOAT, types.FLOAT])
        images = fn.decoders.image_slice(fn.io.file.read(p), start, shape, axis_names="HW", device="cpu",
                                         output_type=types.RGB)
        images = fn.resize(images, size=[SIZE, SIZE], antialias=True, interp_type=types.INTERP_LINEAR)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mean=mean, std=std,
                                        mirror=fn.random.coin_flip())

    for name, label, graph, make in (
            ("plain_ext", "plain's decode fed by an external source + io.file.read (linear, HWC)", plain_ext,
             lambda sl: paths[sl]),
            ("graph_host_windows", "our decode with the crop windows computed on the host (no header peek)",
             host_windows, lambda sl: (paths[sl], list(rel_start[sl]), list(rel_shape[sl])))):
        feed = common.BatchFeed(make, n_batches, BATCH)
        pipe = graph(feed, batch_size=BATCH, num_threads=THREADS, device_id=None, seed=0)
        pipe.build()

        def rewind(feed=feed):
            feed.i = 0
        timed(name, label, lambda pipe=pipe, rewind=rewind: one_pass(
            pipe, rewind, [BATCH] * n_batches, lambda o, n: heads_to_torch(o, n, cpu, zero_copy=True)))
        del pipe

    source = PlanSource(index.paths, mixing=False, crops=CropPlanner((0.08, 1.0), (3 / 4, 4 / 3)))
    plan = single_plan(0, np.arange(len(index)), (SIZE, SIZE), np.zeros(len(index), np.uint8))
    batches = plan.batches(BATCH)
    pipe = train_pipeline(source=source, device="cpu", image_size=SIZE, mixing=False, batch_size=BATCH,
                          num_threads=THREADS, device_id=None, seed=0, prefetch_queue_depth=2)
    pipe.build()

    def copy_feed(out, n):
        t = out.as_tensor()
        dst = torch.empty(t.shape(), dtype=torch.float32)
        feed_ndarray(t, dst)
        return dst

    def copy_torch(out, n):
        src = torch.from_numpy(np.asarray(out.as_tensor())[:n])
        return torch.empty(src.shape, dtype=src.dtype).copy_(src)

    copies = {
        "graph_in_dali": ("our graph, batches left in DALI's memory", lambda o, n: torch.from_numpy(np.asarray(o.as_tensor()))),
        "graph_np_copy": ("our graph + numpy copy into torch (the loader before)", lambda o, n: heads_to_torch(o, n, cpu)),
        "graph_torch_copy": ("our graph + torch copy_", copy_torch),
        "graph_feed_ndarray": ("our graph + DALI's feed_ndarray copy", copy_feed),
        "graph_zero_copy": ("our graph + zero-copy DLPack view (the loader now)",
                            lambda o, n: heads_to_torch(o, n, cpu, zero_copy=True)),
    }
    for name, (label, copy) in copies.items():
        timed(name, label, lambda copy=copy: one_pass(
            pipe, lambda: source.start(plan, batches), [len(b) for b in batches], copy))
    del pipe

    loader = TrainLoader(root, BATCH, SIZE, device="cpu", threads=THREADS, seed=0, scale=(0.08, 1.0))

    def run_loader():
        for images, _ in loader:
            images[-1, 0, 0, 0].item()
    timed("loader", "TrainLoader, mixing off", run_loader)

    base = rows["plain"]["images_per_s"]
    for r in rows.values():
        r["vs_plain"] = r["images_per_s"] / base
    machine, when = common.machine_info(), common.now()
    command = "python benchmarks/probes/loader_gap_cpu.py" + (" " + " ".join(argv) if argv else "")
    result = {"benchmark": NAME, "date": when, "command": command, "machine": machine,
              "settings": {"batch": BATCH, "image_size": SIZE, "dali_threads": THREADS, "images": N,
                           "passes": args.passes}, "variants": rows}
    md = common.header(
        "Where the CPU loader loses to plain DALI", f"images/s of each variant, median of {args.passes} "
        f"passes over {N} JPEGs of 400-500 px, RandomResizedCrop {SIZE}, batch {BATCH}, {THREADS} DALI "
        "threads, one process, variants one after the other", machine, when, command,
        f"TrainLoader {rows['loader']['vs_plain']:.2f}x plain DALI; our graph with its batches left in "
        f"DALI {rows['graph_in_dali']['vs_plain']:.2f}x, with a numpy copy out "
        f"{rows['graph_np_copy']['vs_plain']:.2f}x, zero-copy {rows['graph_zero_copy']['vs_plain']:.2f}x")
    md += common.markdown_table(["variant", "images/s", "vs plain"],
                                [[r["label"], f"{r['images_per_s']:.0f}", f"{r['vs_plain']:.2f}"]
                                 for r in rows.values()])
    paths = common.write_results(Path(args.out_dir), NAME, result, md)
    print(f"wrote {paths['json']}, {paths['md']}")
    return result


if __name__ == "__main__":
    main()
