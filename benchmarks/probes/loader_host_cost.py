"""The CPU loader's per-batch host cost: Python time on the training thread per batch.

On a 2-core machine DALI's two threads already use both cores, so every millisecond the
training thread spends in Python per batch (the external source's callback: slots, crop
windows, path arrays, the file watch's stats; DALI's conversion of what it returns) is taken
from decoding. This profiles `TrainLoader` (mixing off) at the loader benchmark's settings
(2048 JPEGs of 400-500 px, RandomResizedCrop 224, batch 256, 2 DALI threads) with cProfile
over --passes passes after one untimed pass: the time outside DALI's wait for its outputs
is the host cost. Deterministic enough to compare two versions of the code where the
throughput figures are not (they swing +-10% between runs here).

    python benchmarks/probes/loader_host_cost.py --tag after     # appends to benchmarks/results/loader_host_cost_cpu.json

Each run is appended (with its tag, git commit and whether the tree was dirty); the Markdown
file lists every run recorded.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "loader_host_cost_cpu"
BATCH, SIZE, THREADS, N = 256, 224, 2, 2048


def profile(passes: int) -> dict:
    import torch

    from mixtrain_dali.loader import TrainLoader

    torch.set_num_threads(THREADS)
    root = common.benchmark_jpegs(common.DATA_CACHE, N, (400, 500), progress=False)
    loader = TrainLoader(root, BATCH, SIZE, device="cpu", threads=THREADS, seed=0)
    for _ in loader:  # untimed: builds the pipeline
        pass
    # unprofiled first: the training thread's own CPU time (time.thread_time: DALI's threads and
    # the thread's waits are not in it), per batch
    batches, cpu = 0, time.thread_time()
    for _ in range(passes):
        for images, _labels in loader:
            images[-1, 0, 0, 0].item()
            batches += 1
    thread_ms = 1e3 * (time.thread_time() - cpu) / batches
    prof = cProfile.Profile()
    batches = 0
    wall = time.perf_counter()
    prof.enable()
    for _ in range(passes):
        for images, _labels in loader:
            images[-1, 0, 0, 0].item()
            batches += 1
    prof.disable()
    wall = time.perf_counter() - wall
    stats = pstats.Stats(prof)
    waiting = sum(tt for (file, _line, fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items()
                  if "Outputs" in fn)
    calls = sum(nc for (_cc, nc, _tt, _ct, _callers) in stats.stats.values())
    top = sorted(((tt, f"{Path(file).name}:{line}({fn})") for (file, line, fn), (_cc, _nc, tt, _ct, _c)
                  in stats.stats.items() if "Outputs" not in fn), reverse=True)[:8]
    return {"batches": batches, "wall_s": wall, "dali_wait_s": waiting, "thread_cpu_ms_per_batch": thread_ms,
            "host_ms_per_batch": 1e3 * (stats.total_tt - waiting) / batches,
            "python_calls_per_batch": calls / batches,
            "top_host_functions_ms_per_batch": {name: 1e3 * tt / batches for tt, name in top}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True, help="what this run is (e.g. before, after)")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--out-dir", default=str(common.RESULTS_DIR))
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    row = {"tag": args.tag, "date": common.now(), "git": common.git_revision(), **profile(args.passes)}
    runs.append(row)
    machine = common.machine_info()
    command = f"python benchmarks/probes/loader_host_cost.py --tag <tag> --passes {args.passes}"
    table = common.markdown_table(
        ["run", "commit", "batches", "training thread CPU ms / batch", "profiled host ms / batch",
         "Python calls / batch", "top host costs, profiled (ms / batch)"],
        [[r["tag"], (r["git"]["commit"] or "?")[:7] + ("+dirty" if r["git"]["dirty"] else ""), r["batches"],
          f"{r['thread_cpu_ms_per_batch']:.1f}", f"{r['host_ms_per_batch']:.1f}", f"{r['python_calls_per_batch']:.0f}",
          "; ".join(f"{k} {v:.1f}" for k, v in list(r["top_host_functions_ms_per_batch"].items())[:4])]
         for r in runs])
    first, last = runs[0], runs[-1]
    headline = (f"training thread CPU per batch: {first['tag']} {first['thread_cpu_ms_per_batch']:.1f} ms, "
                f"{last['tag']} {last['thread_cpu_ms_per_batch']:.1f} ms") if len(runs) > 1 else \
        f"training thread CPU per batch: {last['thread_cpu_ms_per_batch']:.1f} ms"
    md = common.header("The CPU loader's host cost per batch", "cProfile of TrainLoader (mixing off) over "
                       f"{args.passes} passes of {N} JPEGs of 400-500 px, RandomResizedCrop {SIZE}, batch {BATCH}, "
                       f"{THREADS} DALI threads; host cost = profiled time outside DALI's wait for outputs",
                       machine, last["date"], command, headline)
    md += table + "\n\nNotes:\n" + "\n".join("- " + n for n in (
        "training thread CPU = time.thread_time() of the thread iterating the loader over unprofiled passes: "
        "the host cost itself (DALI's threads and the thread's waits are not in it; the batch's "
        "`.item()` touch is).",
        "profiled host ms = cProfile's time outside DALI's wait for outputs; cProfile adds about a "
        "microsecond per Python call, so it overstates call-heavy code: read it for where the time goes.")) + "\n"
    (out / f"{NAME}.json").write_text(json.dumps({"name": NAME, "machine": machine, "runs": runs}, indent=2) + "\n")
    (out / f"{NAME}.md").write_text(md)
    print(md)
    return row


if __name__ == "__main__":
    sys.exit(common.run_script(main))
