"""Why the start-up's file work runs in one thread unless storage is slow (dataset.run_adaptive).

On the `mixtrain bench startup` tree (built by it, cached under data/benchmarks/), times the two
per-file loops of a start-up over the first --files files, each forced into one thread and
forced into a pool:
- the header check (`robust.scan_files`: open, fstat, one or two small reads), 1 vs 16 threads;
- the stats (`ImageFolderIndex.stat`), 1 vs 4 threads (dataset.SCAN_THREADS).

Median of --repeats, all in one process, warm page cache.

    python benchmarks/probes/startup_threads.py      # writes benchmarks/results/startup_threads_cpu.{json,md}
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "startup_threads_cpu"


def main(argv: list[str] | None = None) -> dict:
    import numpy as np

    from mixtrain_dali import dataset, robust

    import startup

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200_000, help="files timed (default 200,000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out-dir", default=str(common.REPO_ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    root = common.DATA_CACHE / f"startup-n{startup.IMAGENET_FILES}-c1000"
    if not (root / startup.COMPLETE).exists():
        raise SystemExit(f"{root} is not built yet: run `mixtrain bench startup` once")
    index = dataset.scan_image_folder(root)
    n = min(args.files, len(index))
    sub = dataset.ImageFolderIndex(index.root, index.classes, index.class_to_idx,
                                   dataset.PathList(index.paths.prefix, index.paths.buf,
                                                    index.paths.offsets[:n + 1]), index.labels[:n])

    def timed(fn, pool: bool) -> float:
        saved = dataset.POOL_ABOVE_S
        dataset.POOL_ABOVE_S = 0.0 if pool else math.inf  # force the pool, or keep one thread
        try:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return common.median(times)
        finally:
            dataset.POOL_ABOVE_S = saved

    def stat():
        sub.sizes = sub.mtimes = None
        sub.stat()

    rows = {
        "check_1": ("header check, 1 thread", timed(lambda: robust.scan_files(sub.paths, 16), False)),
        "check_16": ("header check, pool of 16", timed(lambda: robust.scan_files(sub.paths, 16), True)),
        "stat_1": ("stat, 1 thread", timed(stat, False)),
        "stat_4": (f"stat, pool of {dataset.SCAN_THREADS}", timed(stat, True)),
    }
    out = {k: {"label": label, "time_s": t, "us_per_file": t / n * 1e6} for k, (label, t) in rows.items()}
    for k, r in out.items():
        print(f"{r['label']:26s} {r['us_per_file']:5.1f} us a file", flush=True)
    machine, when = common.machine_info(), common.now()
    command = "python benchmarks/probes/startup_threads.py" + (" " + " ".join(argv) if argv else "")
    result = {"benchmark": NAME, "date": when, "command": command, "machine": machine,
              "settings": {"files": n, "repeats": args.repeats, "root": str(root)}, "rows": out,
              "sizes_checked": int(np.count_nonzero(sub.sizes > 0))}
    md = common.header(
        "Start-up file work: one thread against a pool", f"time per file over the first {n:,} files of "
        f"the start-up benchmark's tree (tiny JPEGs, warm page cache), median of {args.repeats}",
        machine, when, command,
        f"header check {out['check_1']['us_per_file']:.1f} us a file in one thread, "
        f"{out['check_16']['us_per_file']:.1f} in 16; stat {out['stat_1']['us_per_file']:.1f} in one, "
        f"{out['stat_4']['us_per_file']:.1f} in {dataset.SCAN_THREADS}")
    md += common.markdown_table(["loop", "us a file", "s"],
                                [[r["label"], f"{r['us_per_file']:.1f}", f"{r['time_s']:.2f}"] for r in out.values()])
    paths = common.write_results(Path(args.out_dir), NAME, result, md)
    print(f"wrote {paths['json']}, {paths['md']}")
    return result


if __name__ == "__main__":
    main()
