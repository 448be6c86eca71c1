"""What finishing the crop windows costs the train graph, and what the host windows save.

On an H100 our train graph gave 0.54x plain DALI's images/s where the same decode fed by an
external source gave 0.79x (benchmarks/results/gpu/gpu_loader_profile.md). The difference is
the crop windows: each slot's relative (start, shape) was finished inside the graph from the
file's header (`fn.peek_image_shape` and some twenty small CPU operators,
`pipelines.crop_window`). With every image's size known from the file check, the host now
finishes them (source.py) and the graph takes them as they are.

This measures, on the CPU, the pipeline's time per batch of 256 slots without any decode
(only what stands in front of the decoder, which is what a GPU decoder waits on):

- `read`: external source of paths + `fn.io.file.read` (the floor);
- `graph windows`: + `crop_window` from the header, its general form (any number of
  candidate windows; what the loader without sizes ran before);
- `graph windows, tries=1`: its form for one candidate (9 operators; the loader without
  sizes now, at the default crop_tries=1);
- `host windows`: + the source's finished windows (the loader with sizes; the host's numpy
  work is inside the source's callback, so in the timing);

and then whole TrainLoader passes (mixing off, 224 px) with host windows and with graph
windows (the one-candidate form, crop_tries=1). Rounds alternate the variants; the medians of the rounds are reported.

    python benchmarks/probes/crop_windows_cpu.py [--rounds 5] [--threads 1] [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "crop_windows_cpu"


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def, types

    from mixtrain_dali.crops import CropPlanner
    from mixtrain_dali.loader import TrainLoader
    from mixtrain_dali.pipelines import crop_window
    from mixtrain_dali.plan import single_plan
    from mixtrain_dali.source import PlanSource

    p = common.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1, help="DALI threads of the graphs (default 1)")
    p.add_argument("--data-dir", default=None, help="cache of the generated JPEGs (default data/benchmarks/)")
    common.add_output_args(p)
    args = p.parse_args(argv)
    n, bs, loader_rounds = (512, 64, 1) if args.quick else (2048, 256, 3)
    torch.set_num_threads(1)
    root = common.benchmark_jpegs(common.data_dir(args), n, (400, 500), progress=False)

    size = 224
    loaders = {}  # whole loaders: host windows, and the same made to finish them in the graph
    for name, host in (("TrainLoader, host windows", True), ("TrainLoader, graph windows", False)):
        loader = TrainLoader(root, bs, size, device="cpu", threads=max(args.threads, 2), manifest=False)
        assert loader.crop_windows == "host", "every benchmark JPEG's size should be known"
        if not host:
            loader._source.hw = None  # as without sizes: the graph finishes the windows
        loaders[name] = loader
    # the loader's index and sizes (its file check), and one epoch's plan and batches
    index = loaders["TrainLoader, host windows"].index
    plan = single_plan(0, np.arange(len(index)), (size, size), np.zeros(len(index), np.uint8))
    batches = plan.batches(bs)[:len(index) // bs]
    crops = CropPlanner((0.08, 1.0), (3 / 4, 4 / 3))

    @pipeline_def(exec_dynamic=True)
    def read(src):
        paths, flips, rows = fn.external_source(source=src, num_outputs=3, batch=True,
                                                dtype=[types.UINT8, types.INT32, types.FLOAT])
        return fn.io.file.read(paths), flips, rows

    @pipeline_def(exec_dynamic=True)
    def graph_windows(src, tries):
        paths, flips, rows = fn.external_source(source=src, num_outputs=3, batch=True,
                                                dtype=[types.UINT8, types.INT32, types.FLOAT])
        encoded = fn.io.file.read(paths)
        start, shape = crop_window(encoded, rows, tries)
        return encoded, flips, start, shape

    @pipeline_def(exec_dynamic=True)
    def host_windows(src):
        paths, flips, start, shape = fn.external_source(
            source=src, num_outputs=4, batch=True, dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT])
        return fn.io.file.read(paths), flips, start, shape

    graphs = {"read": (read, None, ()), "graph windows": (graph_windows, None, (None,)),
              "graph windows, tries=1": (graph_windows, None, (1,)), "host windows": (host_windows, index.hw, ())}
    pipes = {}
    for name, (graph, hw, extra) in graphs.items():
        src = PlanSource(index.paths, mixing=False, crops=crops, hw=hw)
        pipe = graph(src, *extra, batch_size=bs, num_threads=args.threads, device_id=None, seed=0)
        pipe.build()
        pipes[name] = (pipe, src)

    def graph_pass(name) -> float:
        pipe, src = pipes[name]
        src.start(plan, batches)
        pipe.reset()
        t0 = time.perf_counter()
        for _ in batches:
            pipe.run()
        elapsed = time.perf_counter() - t0
        try:
            pipe.run()
        except StopIteration:
            pass
        return elapsed / len(batches) * 1000

    def loader_pass(name) -> float:
        loader = loaders[name]
        t0 = time.perf_counter()
        count = sum(len(y) for _, y in loader)
        return count / (time.perf_counter() - t0)

    ms = {name: [] for name in pipes}
    ips = {name: [] for name in loaders}
    for name in pipes:
        graph_pass(name)  # warm-up
    for name in loaders:
        loader_pass(name)
    for r in range(args.rounds):
        for name in pipes:
            ms[name].append(graph_pass(name))
        if r < loader_rounds:
            for name in loaders:
                ips[name].append(loader_pass(name))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in ms.items()), flush=True)

    med = {k: common.median(v) for k, v in ms.items()}
    floor = med["read"]
    saved = med["graph windows"] - med["host windows"]
    lmed = {k: common.median(v) for k, v in ips.items()}
    host_l, graph_l = lmed["TrainLoader, host windows"], lmed["TrainLoader, graph windows"]
    machine = common.machine_info()
    lean = med["graph windows, tries=1"]
    result_line = (f"pipeline time per batch of {bs} without decoding, on {args.threads} DALI thread(s): windows "
                   f"finished in the graph {med['graph windows']:.2f} ms (its one-candidate form {lean:.2f}), "
                   f"on the host {med['host windows']:.2f} (reading the files alone {floor:.2f}): the host saves "
                   f"{saved:.2f} ms a batch ({saved / bs * 1000:.1f} us an image) against the general graph, "
                   f"{lean - med['host windows']:.2f} against the one-candidate form; whole TrainLoader (with the "
                   f"decode) host / graph windows {host_l / graph_l:.3f}")
    rows = [[k, f"{med[k]:.2f}", f"{min(v):.2f}-{max(v):.2f}", f"{med[k] - floor:+.2f}"] for k, v in ms.items()]
    lrows = [[k, f"{lmed[k]:.0f}", f"{min(v):.0f}-{max(v):.0f}", f"{lmed[k] / graph_l:.3f}"] for k, v in ips.items()]
    md = common.header("Crop windows: graph vs host", (
        f"pipeline time per batch of {bs} without decoding ({args.threads} DALI thread(s), "
        f"exec_dynamic, {len(batches)} batches a pass, median of {args.rounds} rounds); whole "
        f"TrainLoader passes (mixing off, {size} px, {max(args.threads, 2)} threads, median of "
        f"{loader_rounds} rounds) over {len(index)} JPEGs of 400-500 px"), machine, common.now(),
        f"python benchmarks/{NAME}.py {shlex.join(argv if argv is not None else sys.argv[1:])}".strip(), result_line)
    md += common.markdown_table(["graph", "ms / batch (median)", "min-max", "vs read"], rows)
    md += "\n\n" + common.markdown_table(["loader", "images/s (median)", "min-max", "vs graph windows"], lrows)
    batch_ms = bs / host_l * 1000
    md += ("\n\nNotes:\n- `graph windows`: `pipelines.crop_window` (peek_image_shape, subscripts, "
           "arithmetic, reductions, stack, casts), CPU operators in the pipeline's CPU stage; "
           "`tries=1`: its 9-operator form for one candidate (peek, 2 subscripts of the shape and 2 "
           "of the rows, 3 arithmetic, a reduction), used without image sizes at crop_tries=1.\n"
           "- `host windows`: `crops.relative_window` in float32 inside the source callback "
           "(bit-identical windows; tests/test_host_windows.py); its difference to `read` is noise.\n"
           f"- Here the CPU decode takes most of a TrainLoader batch ({batch_ms:.0f} ms), so the windows' "
           f"{saved:.1f} ms are a few percent of it. On a GPU the decode leaves the CPU, and the CPU stage "
           "(file reads, the decoder's host part, these operators) is what a batch waits on: on an H100 "
           "our graph gave 0.54x plain DALI where the same decode fed by an external source gave 0.79x "
           "(results/gpu/gpu_loader_profile.md); `make gpu-check` measures both ways of finishing the "
           "windows there (its profile stage).\n")
    result = {"ms_per_batch": ms, "median_ms": med, "saved_ms_per_batch": saved, "batch": bs,
              "threads": args.threads, "loader_images_per_s": ips, "loader_median": lmed,
              "machine": machine}
    stem = common.stem(NAME.rsplit("_", 1)[0], "cpu", args.quick)
    paths = common.write_results(common.out_dir(args), stem, result, md)
    print(md)
    print("wrote", paths["md"])
    return result


if __name__ == "__main__":
    sys.exit(common.run_script(main))
