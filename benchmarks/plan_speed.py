"""How long the controller takes to plan one epoch (host side, pure numpy), at ImageNet size.

The plan is built once per epoch between two epochs, so it must stay well below a training
step's worth of idle time; the goal is 200 ms for ImageNet's 1,281,167 training images.

Times ``MixController.plan()`` on a realistic loss table (gamma-distributed per-sample
losses: most small, a long tail; every sample seen, as after warm-up; a share of them measured
inside a composite last epoch, so self-correction has work to do) for an unmixed epoch and a
mixing epoch with k = 2 .. --k at --speedup. Each variant: one warm-up call, then --repeats
timed calls; median and min are reported. Writes plan_speed[_quick].{json,md} under
--out-dir (default benchmarks/results/; a temporary folder with --quick), and prints the
table last. Host-side numpy only: it takes --quick and --out-dir, not the other benchmarks'
--device or --data-dir.

    mixtrain bench plan                        # full size, about a minute
    mixtrain bench plan --quick                # 100,000 samples, 3 repeats
    mixtrain bench plan --n 100000 --repeats 3 --out-dir /tmp/plan
    mixtrain bench plan --profile              # also cProfile one k=--k plan
"""

from __future__ import annotations

import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import common  # noqa: E402  (benchmarks/common.py)
from mixtrain_dali.config import MixConfig  # noqa: E402
from mixtrain_dali.controller import MixController  # noqa: E402

NAME = "plan_speed"
GOAL_MS = 200.0
CANVAS = (224, 224)
FULL = {"n": 1_281_167, "repeats": 7}  # ImageNet's train set
QUICK = {"n": 100_000, "repeats": 3}




def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"platform": platform.platform(), "cpu": common.cpu_model(), "cores": os.cpu_count(),
            "usable_cores": usable, "load_average_1_5_15min": load,
            "python": platform.python_version(), "numpy": np.__version__}


def loss_table(n: int, shape: float, mixed_share: float, seed: int):
    """Per-sample losses ~ Gamma(shape, 1 / shape) (mean 1), all measured; `mixed_share` of
    them measured inside a composite last epoch."""
    rng = np.random.default_rng(seed)
    losses = rng.gamma(shape, 1.0 / shape, n).astype(np.float32)
    mixed_last = rng.random(n) < mixed_share
    return losses, mixed_last


def time_plan(ctl: MixController, epoch: int, losses, mixed_last, repeats: int):
    plan = ctl.plan(epoch, losses, mixed_last)          # warm-up (and the plan we report)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ctl.plan(epoch, losses, mixed_last)
        times.append((time.perf_counter() - t0) * 1e3)
    return plan, times


def profile_plan(ctl: MixController, epoch: int, losses, mixed_last, top: int = 15) -> list[dict]:
    prof = cProfile.Profile()
    prof.enable()
    ctl.plan(epoch, losses, mixed_last)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})", "ncalls": ncalls,
                     "tottime_ms": round(tottime * 1e3, 2), "cumtime_ms": round(cumtime * 1e3, 2)})
    rows.sort(key=lambda r: r["tottime_ms"], reverse=True)
    return rows[:top]


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Controller planning time per epoch",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"load average {m['load_average_1_5_15min']}; {m['platform']}",
        f"- python {m['python']}, numpy {m['numpy']}",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- N = {result['n']:,} samples, canvas {result['canvas'][0]}x{result['canvas'][1]}, "
        f"losses ~ Gamma({result['loss_shape']:g}) with mean 1, {result['repeats']} timed repeats "
        f"after one warm-up; goal: median <= {GOAL_MS:g} ms",
        "",
        "| variant | k | target S | plan ideal S | budget met | composites | median ms | min ms | goal |",
        "|---|---:|---:|---:|:---:|---:|---:|---:|:---:|",
    ]
    for v in result["variants"]:
        lines.append(
            f"| {v['name']} | {v['k']} | {v['target_speedup']:.3f} | {v['ideal_speedup']:.3f} | "
            f"{'yes' if v['budget_met'] else 'no'} | {v['composites']:,} | {v['median_ms']:.1f} | "
            f"{v['min_ms']:.1f} | {'pass' if v['pass'] else 'FAIL'} |")
    lines.append("")
    lines.append(f"Overall: {'pass' if result['pass'] else 'FAIL'} "
                 f"(every variant's median <= {GOAL_MS:g} ms).")
    head, table = lines[:8], lines[8:]
    return "\n".join(head + profile_lines(result) + table) + "\n"


def profile_lines(result: dict) -> list[str]:
    if not result.get("profile"):
        return []
    lines = [f"## cProfile of one k={result['profile_k']} plan (top by own time)", "",
             "numpy indexing, ufuncs on arrays and Generator methods run inline, so their time "
             "shows as the own time of the Python function that calls them.", "",
             "| function | calls | own ms | cumulative ms |", "|---|---:|---:|---:|"]
    for r in result["profile"]:
        lines.append(f"| `{r['function']}` | {r['ncalls']} | {r['tottime_ms']} | {r['cumtime_ms']} |")
    return lines + ["", "## Timings", ""]


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_output_args(p)
    p.add_argument("--n", type=int, default=None,
                   help=f"samples (default {FULL['n']:,}, ImageNet's train set; {QUICK['n']:,} with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed calls per variant (default {FULL['repeats']}; {QUICK['repeats']} with --quick)")
    p.add_argument("--k", type=int, default=4, help="largest k; mixing variants k = 2 .. K")
    p.add_argument("--speedup", type=float, default=1.6, help="target ideal speedup S")
    p.add_argument("--loss-shape", type=float, default=0.5,
                   help="gamma shape of the loss table (smaller = more skewed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true",
                   help="cProfile one k=K plan (done anyway when a variant misses the goal)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = build_parser(prog)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.n < 1 or args.repeats < 1 or not 2 <= args.k <= 4:
        p.error("need --n >= 1, --repeats >= 1 and 2 <= --k <= 4")

    losses, mixed_last = loss_table(args.n, args.loss_shape, 0.3, args.seed)
    variants = [("unmixed", 1)] + [(f"mix k={k}", k) for k in range(2, args.k + 1)]
    rows, ctls = [], {}
    for name, k in variants:
        if k == 1:
            cfg = MixConfig(enabled=False)
        else:
            cfg = MixConfig(enabled=True, k=k, target_speedup=args.speedup, warmup_epochs=1,
                                schedule="flat", selection="loss")
        ctl = MixController(cfg, args.n, CANVAS, seed=args.seed, epochs=None)
        ctls[k] = ctl
        plan, times = time_plan(ctl, 5, losses, mixed_last, args.repeats)
        med = statistics.median(times)
        rows.append({"name": name, "k": k, "target_speedup": plan.stats["target_speedup"],
                     "ideal_speedup": plan.ideal_speedup, "budget_met": plan.stats["budget_met"],
                     "candidates": plan.stats["candidates"], "mixed_samples": plan.n_mixed_samples,
                     "composites": plan.n_composites, "times_ms": [round(t, 2) for t in times],
                     "median_ms": med, "min_ms": min(times), "pass": med <= GOAL_MS})
        print(f"{name:>10}: median {med:7.1f} ms, min {min(times):7.1f} ms, "
              f"ideal speedup {plan.ideal_speedup:.3f}", file=sys.stderr, flush=True)

    result = {
        "benchmark": NAME, "goal_ms": GOAL_MS,
        "machine": machine(),
        "command": common.command_line(NAME, argv), "settings": {"quick": args.quick},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "n": args.n, "repeats": args.repeats, "speedup": args.speedup, "canvas": list(CANVAS),
        "loss_shape": args.loss_shape, "seed": args.seed,
        "variants": rows, "pass": all(r["pass"] for r in rows),
    }
    if args.profile or not result["pass"]:
        result["profile_k"] = args.k
        result["profile"] = profile_plan(ctls[args.k], 5, losses, mixed_last)

    table = markdown(result)
    common.write_results(common.out_dir(args), NAME + ("_quick" if args.quick else ""), result, table)
    print(table)
    return result


if __name__ == "__main__":
    sys.exit(common.run_script(main))
