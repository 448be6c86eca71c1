"""Where the GPU TrainLoader's time goes: raw DALI pipeline throughput of graph variants on the
same JPEGs, from NVIDIA's ResNet-50 example pipeline to ours, then the whole TrainLoader.

  plain          readers.file -> decoders.image_random_crop (mixed, decoder hints) -> resize -> cmn
  plain_ext      the same graph fed file names by an external source + io.file.read
  ours_graphwin  our train graph with the crop windows finished in the graph from each header
                 (peek_image_shape + CPU arithmetic: the loader without image sizes)
  ours_fancy     ours with jpeg fancy upsampling
  ours           our train graph (host-finished crop windows -> image_slice, mixed), without
                 fancy upsampling, with the decoder hints (the default)
  ours_ahead     ours with read="ahead": the source reads the files of the next batches on host
                 threads and hands DALI the bytes (no io.file.read in the graph)
  ours_nohints   ours without the decoder's memory hints
  loader         TrainLoader (mixing off) around `ours`: + torch copy, file watch, plan rows
  loader_ahead   the same with read="ahead"

Each: batch 256, 8 threads, median images/s of 3 passes after one warm-up pass over the set.
  python benchmarks/gpu_loader_profile.py [--n 6144] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))


def _time_passes(run_pass, n_images: int, repeats: int = 3) -> dict:
    run_pass()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_pass()
        times.append(time.perf_counter() - t0)
    return {"images_per_s": n_images / common.median(times), "pass_s": times}


def main(argv=None) -> dict:
    import torch
    from nvidia.dali import fn, pipeline_def, types

    from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD
    from mixtrain_dali.crops import CropPlanner
    from mixtrain_dali.dataset import scan_image_folder
    from mixtrain_dali.loader import TrainLoader
    from mixtrain_dali.pipelines import _GPU_DECODER_HINTS, train_pipeline
    from mixtrain_dali.plan import single_plan
    from mixtrain_dali.robust import check_index
    from mixtrain_dali.source import PlanSource

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=6144)
    p.add_argument("--out-dir", default="benchmarks/results/gpu")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu", help="cpu: a smoke run of the script")
    args = p.parse_args(argv)
    root = common.benchmark_jpegs(common.DATA_CACHE, args.n, (400, 500), progress=False)
    files = _files(root)
    gpu = args.device == "gpu"
    dec, dev_id, hints = ("mixed", 0, _GPU_DECODER_HINTS) if gpu else ("cpu", None, {})
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    bs, threads, size = (256, 8, 224) if gpu else (32, 2, 64)
    n_batches = len(files) // bs
    n = n_batches * bs
    mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
    results = {}

    @pipeline_def
    def plain():
        jpegs, _ = fn.readers.file(files=files, random_shuffle=True, name="Reader")
        images = fn.decoders.image_random_crop(jpegs, device=dec, output_type=types.RGB,
                                               random_area=[0.08, 1.0], num_attempts=100, **hints)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mean=mean, std=std,
                                        mirror=fn.random.coin_flip())

    path_arrays = [np.frombuffer(f.encode(), np.uint8) for f in files]

    def Batches(make):  # noqa: N802  (an external source of n_batches batches of bs files)
        return common.BatchFeed(make, n_batches, bs)

    @pipeline_def
    def plain_ext(src):
        paths = fn.external_source(source=src, batch=True, dtype=types.UINT8)
        jpegs = fn.io.file.read(paths)
        images = fn.decoders.image_random_crop(jpegs, device=dec, output_type=types.RGB,
                                               random_area=[0.08, 1.0], num_attempts=100, **hints)
        images = fn.resize(images, resize_x=size, resize_y=size, antialias=True)
        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC", mean=mean, std=std,
                                        mirror=fn.random.coin_flip())

    def reader_pass_fn(pipe, src=None):
        def run_pass():
            if src is not None:
                src.i = 0
                pipe.reset()
            for _ in range(n_batches):
                pipe.run()
            if src is not None:
                try:
                    pipe.run()
                except StopIteration:
                    pass
            sync()
        return run_pass

    def measure(name, graph, src=None):
        """Build `graph` (fed by the external source `src`, if any) and time passes of it."""
        args = () if src is None else (src,)
        pipe = graph(*args, batch_size=bs, num_threads=threads, device_id=dev_id, seed=0)
        pipe.build()
        results[name] = _time_passes(reader_pass_fn(pipe, src), n)
        print(name, results[name], flush=True)

    measure("plain", plain)
    measure("plain_ext", plain_ext, Batches(lambda sl: path_arrays[sl]))

    index = scan_image_folder(root)
    check_index(index)  # the file check: every image's size, for the host-finished windows
    assert (index.hw > 0).all()
    for name, kw in (("ours_graphwin", dict(host_windows=False)), ("ours_fancy", dict(fancy_upsampling=True)),
                     ("ours", {}), ("ours_ahead", dict(read="ahead")), ("ours_nohints", dict(decoder_hints=False))):
        host = kw.setdefault("host_windows", True)
        source = PlanSource(index.paths, mixing=False, hw=index.hw if host else None, read=kw.get("read", "graph"),
                            crops=CropPlanner((0.08, 1.0), (3 / 4, 4 / 3)))
        plan = single_plan(0, np.arange(len(index)), (size, size), np.zeros(len(index), np.uint8))
        batches = plan.batches(bs)[:n_batches]
        pipe = train_pipeline(source=source, device=args.device, image_size=size, mixing=False, batch_size=bs,
                              num_threads=threads, device_id=dev_id, seed=0, **kw)
        pipe.build()

        def run_pass(pipe=pipe, source=source, plan=plan, batches=batches):
            source.start(plan, batches)
            pipe.reset()
            for _ in range(len(batches)):
                pipe.run()
            try:
                pipe.run()
            except StopIteration:
                pass
            sync()

        source.start(plan, batches)
        results[name] = _time_passes(run_pass, n)
        print(name, results[name], flush=True)
        del pipe

    for name, read in (("loader", "graph"), ("loader_ahead", "ahead")):
        loader = TrainLoader(root, bs, size, device=args.device, threads=threads, seed=0, read=read)

        def loader_pass(loader=loader):
            for _ in loader:
                pass
            sync()

        results[name] = _time_passes(loader_pass, len(loader.index))
        print(name, results[name], flush=True)
        del loader
    base = results["plain"]["images_per_s"]
    lines = ["| variant | images/s | vs plain |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['images_per_s']:.0f} | {v['images_per_s'] / base:.2f} |" for k, v in results.items()]
    machine = common.machine_info()
    md = common.header("GPU loader profile", f"raw DALI pipeline throughput of graph variants, batch {bs}, "
                       f"{threads} threads, {n} JPEGs of 400-500 px, median of 3 passes",
                       machine, common.now(), "python benchmarks/gpu_loader_profile.py " + " ".join(argv or sys.argv[1:]))
    md += "\n".join(lines) + "\n\n" + (__doc__.split("\n\n")[1]) + "\n"
    out = Path(args.out_dir)
    common.write_results(out, "gpu_loader_profile", {"results": results, "machine": machine}, md)
    print("\n".join(lines))
    if os.environ.get("OUT"):
        common.write_results(Path(os.environ["OUT"]), "gpu_loader_profile", {"results": results}, md)
    return results


if __name__ == "__main__":
    main()
