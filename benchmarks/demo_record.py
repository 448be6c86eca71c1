"""The demo's side-by-side table, recorded: `mixtrain demo` run once, its summary written
with the machine, versions, command and date to benchmarks/results/demo_<device>.{json,md,png}.

The README's demo table is copied from that file.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "demo"


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--epochs", type=int, default=None, help="override the demo recipe's epochs")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    from mixtrain_dali.demo import DEMO_DATA, QUICK_DATA, demo_configs, run_demo
    from mixtrain_dali.synthetic import ensure_synthetic

    argv, args, device, _ = common.start(build_parser, argv, prog)
    if device != "cpu":
        print("note: the demo trains on whatever device there is (auto)", flush=True)
    machine, when = common.machine_info(), common.now()
    runs_dir = Path(tempfile.mkdtemp(prefix="mixtrain-demo-"))
    data = common.data_dir(args) / ("demo-quick" if args.quick else "demo")
    start = time.perf_counter()
    ensure_synthetic(data, progress=not args.no_progress, **(QUICK_DATA if args.quick else DEMO_DATA))
    try:
        summary = run_demo(data=str(data), out=str(runs_dir), epochs=args.epochs, quick=args.quick,
                           progress=not args.no_progress, device=device)
        table = (runs_dir / "summary.md").read_text()
        out = common.out_dir(args)
        stem = common.stem(NAME, device, args.quick)
        shutil.copy(runs_dir / "demo.png", out / f"{stem}.png")
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
    recipe = demo_configs(args.epochs, args.quick)["mixtrain"].to_dict()
    command = common.command_line(NAME, argv)
    result = {"name": NAME, "command": command, "date": when, "machine": machine,
              "settings": {"quick": args.quick, "device": device, "epochs": args.epochs},
              "recipe": recipe, "summary": summary, "total_time_s": time.perf_counter() - start}
    base, cmp_ = summary["baseline"]["1E"], summary["compare"]

    def reach(name):
        t = cmp_[name]["time_to_baseline_s"]
        return "never" if t is None else f"{base['wall_time_s'] / t:.2f}x less time"

    def vs(name, other):
        g = cmp_[name].get(other)
        return "-" if g is None else f"{g['at_top']['mean']:+.2f}"

    headline = (f"at equal training time MixTrain is {vs('mixtrain', 'baseline')} points against the baseline's "
                f"curve and {vs('mixtrain', 'progressive')} against progressive resizing's; to the full "
                f"baseline's {base['val_top1']:.1f}%: MixTrain {reach('mixtrain')}, progressive resizing "
                f"{reach('progressive')}")
    md = common.header("Demo: baseline, progressive resizing and MixTrain as curves, on the synthetic dataset",
                       f"`mixtrain demo`: {recipe['train']['arch']} at {recipe['data']['image_size']} px, "
                       f"{recipe['train']['epochs']} epochs, batch {recipe['data']['batch_size']}, "
                       f"MixTrain k={recipe['mix']['k']}, {_budget(recipe['mix'])}; "
                       "each at E/2 and E epochs; time = the sum of the epochs' training-loop times",
                       machine, when, command, headline)
    md += table + "\n\nIdeal speedup of each MixTrain epoch's plan: " + ", ".join(
        f"{s:.2f}" for s in summary["ideal_speedup_per_epoch"]) + "\n"
    common.write_results(out, stem, result, md)
    print(md)
    return result


def _budget(mix: dict) -> str:
    """How the recipe sets each epoch's mixed share, in words."""
    if mix["schedule"] == "resize":
        return "resize schedule (each epoch costs what progressive resizing's epoch costs)"
    if mix.get("fraction") is not None:
        return f"{mix['schedule']} schedule, fraction {mix['fraction']:g}"
    if mix.get("target_speedup") is not None:
        return f"{mix['schedule']} schedule, target x{mix['target_speedup']:g}"
    return f"{mix['schedule']} schedule, default budget"


if __name__ == "__main__":
    sys.exit(common.run_script(main))
