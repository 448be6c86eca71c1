"""Accuracy at an equal budget: final val top-1 and training wall time, several seeds each.

All methods share the demo's recipe (`mixtrain_dali.demo.DEMO_RECIPE`: model, data, lr,
epochs E) and dataset; only what the table names differs:

  a  baseline         E epochs, no mixing
  b  mixtrain         MixTrain at target speedup S (k=4; loss-based selection, adaptive
                      shares, self-correction, region pooling), E epochs
  c  baseline_short   round(E / S) epochs: "just train less", about b's compute
  d  naive_mix        random subset, equal shares, one area-weighted soft label per
                      composite on the global logits (no region pooling), k=4, S, E epochs
  e  prune            InfoBatch-style loss-based dynamic pruning at S, E epochs
  f1 mixtrain_gamma0  b with equal area shares (gamma = 0)
  f2 mixtrain_random  b with a random subset (selection = "random")

The project's goal: b within 0.5 points of a, and above c, d and e. The script reports
what it measures either way.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "accuracy_budget"
METHODS = {
    "baseline": "a. baseline, E epochs",
    "mixtrain": "b. MixTrain xS, E epochs",
    "baseline_short": "c. baseline, E/S epochs",
    "naive_mix": "d. naive mixing xS",
    "prune": "e. InfoBatch-style pruning xS",
    "mixtrain_gamma0": "f1. MixTrain, gamma=0",
    "mixtrain_random": "f2. MixTrain, random selection",
    "mixtrain_k2": "f3. MixTrain, k=2 at target S (half-area tiles; the candidates may cap S)",
}
TOLERANCE = 0.5  # points of top-1: b within this of a
QUICK = {"image_size": 48, "batch_size": 16, "epochs": 3, "seeds": [0, 1]}


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds, one run of every method each (default 0 1 2; 0 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None,
                   help="E (default the demo recipe's epochs; 3 with --quick)")
    p.add_argument("--speedup", type=float, default=1.6, help="target speedup S of b, d, e, f (default 1.6)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                   help="which methods to run (default all)")
    p.add_argument("--arch", default=None, help="model (default the demo recipe's)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"train crop (default the demo's 64; {QUICK['image_size']} with --quick)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"composites per step (default the demo's 32; {QUICK['batch_size']} with --quick)")
    p.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default the demo's 2)")
    p.add_argument("--runs-dir", default=None,
                   help="keep the training runs here; default: a temporary folder removed at the end")
    return p


def base_recipe(args, device: str) -> dict:
    from mixtrain_dali.demo import DEMO_RECIPE

    r = json.loads(json.dumps(DEMO_RECIPE))
    q = args.quick
    r["data"]["device"] = device
    for key, flag in (("image_size", args.image_size), ("batch_size", args.batch_size)):
        r["data"][key] = flag or (QUICK[key] if q else r["data"][key])
    if args.threads is not None:
        r["data"]["threads"] = args.threads
    r["train"]["epochs"] = args.epochs or (QUICK["epochs"] if q else r["train"]["epochs"])
    if args.arch:
        r["train"]["arch"] = args.arch
    return r


def method_recipes(base: dict, speedup: float) -> dict[str, dict]:
    """Every method as a recipe dict: the base with its one difference."""
    epochs = base["train"]["epochs"]
    mix = {**base["mix"], "enabled": True, "method": "mix", "k": 4, "target_speedup": speedup}

    def with_(mix_=None, **train):
        return {"data": dict(base["data"]), "train": {**base["train"], **train},
                "mix": mix_ if mix_ is not None else {**base["mix"], "enabled": False}}

    return {
        "baseline": with_(),
        "mixtrain": with_(mix),
        "baseline_short": with_(epochs=max(1, round(epochs / speedup))),
        "naive_mix": with_({**mix, "selection": "random", "gamma": 0.0, "self_correct": False},
                           region_pooling=False),
        "prune": with_({**mix, "method": "prune"}),
        "mixtrain_gamma0": with_({**mix, "gamma": 0.0}),
        "mixtrain_random": with_({**mix, "selection": "random"}),
        "mixtrain_k2": with_({**mix, "k": 2}),
    }


def summarize_method(runs: list[dict]) -> dict:
    return {"val_top1": common.spread(r["val_top1"] for r in runs),
            "train_time_s": common.spread(r["train_time_s"] for r in runs),
            "run_time_s": common.spread(r["run_time_s"] for r in runs),
            "steps": common.spread(r["steps"] for r in runs),
            "epochs": runs[0]["epochs"] if runs else None}


def goals(summary: dict) -> list[dict]:
    """The project's goals, evaluated on the means (None where a method was not run)."""
    def top1(name):
        s = summary.get(name)
        return None if s is None else s["val_top1"]["mean"]

    b = top1("mixtrain")
    out = []
    a = top1("baseline")
    if b is not None and a is not None:
        out.append({"goal": f"b (MixTrain) within {TOLERANCE} points of a (baseline)",
                    "difference": b - a, "met": b - a >= -TOLERANCE})
    for key in ("baseline_short", "naive_mix", "prune"):
        other = top1(key)
        if b is not None and other is not None:
            out.append({"goal": f"b (MixTrain) above {METHODS[key].split('.')[0]} ({key})",
                        "difference": b - other, "met": b > other})
    return out


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    from mixtrain_dali.config import Config
    from mixtrain_dali.demo import DEMO_DATA, QUICK_DATA
    from mixtrain_dali.errors import UserError
    from mixtrain_dali.report import summarize
    from mixtrain_dali.train import train

    argv, args, device, torch_threads = common.start(build_parser, argv, prog)
    seeds = args.seeds or (QUICK["seeds"] if args.quick else [0, 1, 2])
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {seeds} has duplicates")
    base = base_recipe(args, device)
    recipes = {k: v for k, v in method_recipes(base, args.speedup).items() if k in args.methods}
    configs = {k: Config.from_dict(v, source=f"method {k}") for k, v in recipes.items()}  # checks all first
    out = common.out_dir(args)
    machine, when = common.machine_info(), common.now()
    command = common.command_line(NAME, argv)
    spec = QUICK_DATA if args.quick else DEMO_DATA
    data = common.synthetic_dataset(common.data_dir(args), progress=not args.no_progress, **spec)

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="mixtrain-accuracy-"))
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    todo = [(seed, k) for seed in seeds for k in configs]  # interleaved: drift hits all methods alike
    start = time.perf_counter()
    try:
        for i, (seed, key) in enumerate(todo):
            cfg = Config.from_dict({**recipes[key], "train": {**recipes[key]["train"], "seed": seed}},
                                   source=f"method {key}")
            elapsed = time.perf_counter() - start
            eta = f", about {elapsed / i * (len(todo) - i) / 60:.0f} min left" if i else ""
            print(f"\n== [{i + 1}/{len(todo)}] {_label(key, args.speedup)} "
                  f"(seed {seed}, {cfg.train.epochs} epochs){eta}", flush=True)
            run_dir = runs_dir / f"{key}-s{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            rows = train(cfg, data, run_dir, progress=not args.no_progress)
            s = summarize(rows)
            runs[key].append({"seed": seed, "val_top1": s["val_top1"], "val_top5": s["val_top5"],
                              "train_time_s": s["wall_time_s"], "run_time_s": time.perf_counter() - t0,
                              "steps": s["steps"], "samples": s["samples"], "epochs": s["epochs"],
                              "metrics": rows})
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)

    summary = {k: summarize_method(v) for k, v in runs.items()}
    verdict = goals(summary)
    settings = {"quick": args.quick, "device": device, "seeds": seeds, "speedup": args.speedup,
                "epochs": base["train"]["epochs"], "torch_threads": torch_threads, "tolerance": TOLERANCE,
                "dataset": {"kind": "synthetic", **spec}, "recipe": base,
                "configs": {k: c.to_dict() for k, c in configs.items()}}
    result = {"benchmark": NAME, "title": "Accuracy at an equal budget", "date": when, "command": command,
              "argv": argv, "process_command": " ".join(sys.argv), "machine": machine, "settings": settings,
              "data": str(data), "methods": {k: {"label": METHODS[k], "summary": summary[k], "runs": runs[k]}
                                             for k in runs},
              "goals": verdict, "total_time_s": time.perf_counter() - start}

    table = _table(summary, args.speedup)
    goals_md = _goals_table(verdict)
    t = base["train"]
    what = (f"final val top-1 and training wall time (sum of epoch times, validation excluded), mean ± std "
            f"over seeds {', '.join(map(str, seeds))}: {t['arch']} at {base['data']['image_size']} px, batch "
            f"{base['data']['batch_size']}, E = {t['epochs']} epochs, S = {args.speedup:g}, on the synthetic "
            f"dataset ({spec['classes']} classes, {spec['train_per_class']} train / "
            f"{spec['val_per_class']} val images per class), device {device}")
    headline = None
    if "mixtrain" in summary and "baseline" in summary:
        a, b = summary["baseline"], summary["mixtrain"]
        top_b, top_a = b["val_top1"]["mean"], a["val_top1"]["mean"]
        headline = (f"MixTrain x{args.speedup:g}: {top_b:.2f}% top-1 vs baseline {top_a:.2f}% "
                    f"({top_b - top_a:+.2f} points) "
                    f"in {b['train_time_s']['mean'] / a['train_time_s']['mean']:.2f}x the baseline's training "
                    f"time (means of {len(seeds)} seeds)")
    md = common.header(f"Accuracy at an equal budget, {device.upper()}" + (" (quick)" if args.quick else ""),
                       what, machine, when, command, result=headline)
    md += table + "\n\n" + (goals_md + "\n\n" if goals_md else "") + _notes(args.speedup) + "\n"
    stem = common.stem(NAME, device, args.quick)
    paths = common.write_results(out, stem, result, md)
    common.errorbar_plot(out / f"{stem}.png",
                         {_label(k, args.speedup): {"x": v["train_time_s"], "y": v["val_top1"],
                                                    "tag": METHODS[k].split(".")[0]}
                          for k, v in summary.items()},
                         f"Accuracy vs training time ({t['arch']}, {t['epochs']} epochs, {len(seeds)} seeds, "
                         f"{device})", "training wall time (s): mean ± std",
                         "final val top-1 (%): mean ± std, bar = min-max")
    print(f"\nwrote {paths['json']}, {paths['md']}, {out / (stem + '.png')}")
    print(f"\n{table}" + (f"\n\n{goals_md}" if goals_md else ""))
    return result


def _table(summary: dict, speedup: float) -> str:
    a = summary.get("baseline")
    rows = []
    for key, s in summary.items():
        top, tt = s["val_top1"], s["train_time_s"]
        d_top = f"{top['mean'] - a['val_top1']['mean']:+.2f}" if a else "-"
        t_ratio = f"{a['train_time_s']['mean'] / tt['mean']:.2f}x" if a else "-"
        rows.append([_label(key, speedup), s["epochs"],
                     f"{top['mean']:.2f} ± {top['std']:.2f}", f"{top['min']:.2f}-{top['max']:.2f}", d_top,
                     f"{tt['mean']:.1f} ± {tt['std']:.1f}", f"{tt['min']:.1f}-{tt['max']:.1f}", t_ratio,
                     f"{s['steps']['mean']:.0f}", top["n"]])
    return common.markdown_table(
        ["method", "epochs", "val top-1 (%)", "min-max", "Δ vs a", "train time (s)", "min-max",
         "time saved vs a", "steps", "seeds"], rows)


def _label(key: str, speedup: float) -> str:
    return METHODS[key].replace("xS", f"x{speedup:g}").replace("E/S", f"E/{speedup:g}")


def _goals_table(verdict: list[dict]) -> str:
    if not verdict:
        return ""
    rows = [[g["goal"], f"{g['difference']:+.2f}", "yes" if g["met"] else "no"] for g in verdict]
    return common.markdown_table(["goal (on the means)", "difference (points)", "met"], rows, "lrl")


def _notes(speedup: float) -> str:
    return "\n".join([
        "Notes:",
        "- train time: the sum of the epochs' training-loop times (validation excluded); time saved vs a "
        "= a's mean train time / this method's.",
        f"- b, d, e, f plan a {speedup:g}x smaller epoch after one warm-up epoch and before the final "
        "12.5% of epochs (unmixed); c trains fewer epochs with the same recipe (its cosine schedule "
        "ends sooner).",
        "- naive mixing: MixConfig(selection='random', gamma=0, self_correct=False, k=4), "
        "TrainConfig(region_pooling=False); pruning: MixConfig(method='prune'), InfoBatch-style (random "
        "part of the below-mean-loss samples skipped, kept ones' loss rescaled).",
    ])


if __name__ == "__main__":
    sys.exit(common.run_script(main))
