"""`mixtrain demo`: baseline, progressive resizing and MixTrain as accuracy-against-time curves.

Same model, same seed, on the embedded synthetic dataset or any ImageFolder (`--data DIR`
with train/ and val/). Each method trains at two budgets, E/2 and E epochs (each with a
schedule that ends there), so each draws a curve of final val top-1 against measured
training time; the baseline's curve is "just train less". The table and the plot answer
the question a user asks: at equal training time, which method is more accurate, and how
soon does each reach the full baseline's accuracy? The settings are `pipelines/demo.toml`
(kept equal to DEMO_RECIPE by a test).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .config import Config
from .errors import UserError
from . import curves
from .report import pyplot, save_figure, summarize
from .synthetic import ensure_synthetic
from .train import train

DEMO_DATA = {"classes": 10, "train_per_class": 100, "val_per_class": 25, "seed": 0}
QUICK_DATA = {"classes": 4, "train_per_class": 24, "val_per_class": 8, "seed": 0}

# The demo's MixTrain arm: its model, data and training settings, with mixing (the package
# defaults). The demo's other arms, and the benchmarks' methods, each differ from it in one place.
DEMO_MIXTRAIN = {
    "data": {"image_size": 64, "batch_size": 32, "scale": [0.35, 1.0], "threads": 2},
    "train": {"arch": "small_cnn", "epochs": 15, "lr": 0.8, "warmup_epochs": 1.0,
              "label_smoothing": 0.1, "seed": 0, "out": "runs/demo"},
    "mix": {"enabled": True, "k": 4},
}


def progressive_data(image_size: int) -> dict:
    """Progressive resizing as the demo and `mixtrain bench accuracy` run it: the train crop
    starts at half size (at least 16 px) and grows to full by 0.75 of the run."""
    return {"min_image_size": max(16, image_size // 2), "resize_ramp": [0.0, 0.75]}


# The demo recipe, pipelines/demo.toml (tests/test_recipes.py checks they agree): the arm with
# the best curve on the real datasets (issue 25, rounds 19-21), progressive resizing from half
# size, not mixing.
DEMO_RECIPE = {
    "data": {**DEMO_MIXTRAIN["data"], **progressive_data(DEMO_MIXTRAIN["data"]["image_size"])},
    "train": dict(DEMO_MIXTRAIN["train"]),
    "mix": {"enabled": False},
}


METHODS = ("baseline", "progressive", "mixtrain")
BUDGETS = (0.5, 1.0)


def demo_configs(epochs: int | None = None, quick: bool = False,
                 image_size: int | None = None, device: str | None = None) -> dict[str, Config]:
    """The demo's methods at the full budget E: the MixTrain arm without mixing, with progressive
    resizing (half size growing to full by 0.75 of the run; the demo recipe) instead, and with
    its mixing."""
    recipe = json.loads(json.dumps(DEMO_MIXTRAIN))
    if quick:
        recipe["train"]["epochs"] = 3
        recipe["data"]["batch_size"] = 8
    if epochs is not None:
        recipe["train"]["epochs"] = epochs
    if image_size is not None:
        recipe["data"]["image_size"] = image_size
    if device is not None:
        recipe["data"]["device"] = device
    plain = {**recipe, "mix": {**recipe["mix"], "enabled": False}}
    progressive = {**plain, "data": {**plain["data"], **progressive_data(recipe["data"]["image_size"])}}
    return {"baseline": Config.from_dict(plain, source="demo recipe"),
            "progressive": Config.from_dict(progressive, source="demo recipe"),
            "mixtrain": Config.from_dict(recipe, source="demo recipe")}


def at_budget(config: Config, budget: float) -> Config:
    """`config` trained for round(budget x E) epochs, at least 1 (its schedule ends there)."""
    d = config.to_dict()
    d["train"]["epochs"] = curves.budget_epochs(config.train.epochs, budget)
    return Config.from_dict(d)


SYNTHETIC_CACHE = "data/synthetic"


def run_demo(data: str | None = None, out: str = "runs/demo", epochs: int | None = None,
             quick: bool = False, progress: bool = True, image_size: int | None = None,
             device: str | None = None) -> dict:
    if data is None:
        data = SYNTHETIC_CACHE
        ensure_synthetic(data, progress=progress, **(QUICK_DATA if quick else DEMO_DATA))
        where = "the synthetic dataset"
    else:
        if not (Path(data) / "train").is_dir():
            raise UserError(f"--data {data!r} has no train/ folder: expected DATA/train/<class>/<image> "
                            "and DATA/val/<class>/<image>")
        where = Path(data).name
    out_dir = Path(out)
    start = time.perf_counter()
    configs = demo_configs(epochs, quick, image_size, device)
    runs: dict[str, dict[float, list[dict]]] = {k: {} for k in configs}
    for budget in sorted(BUDGETS, reverse=True):
        for name, config in configs.items():
            runs[name][budget] = _run(f"{name}_{budget:g}E", at_budget(config, budget), data, out_dir, progress)
    summary = {name: {f"{b:g}E": summarize(rows) for b, rows in sorted(per.items())} for name, per in runs.items()}
    points = {name: [{"seed": 0, "train_time_s": s["wall_time_s"], "val_top1": s["val_top1"]}
                     for s in per.values()] for name, per in summary.items()}
    target = summary["baseline"]["1E"]
    compare = {}
    for name in configs:
        t = curves.time_to_reach([(p["train_time_s"], p["val_top1"]) for p in points[name]], target["val_top1"])
        compare[name] = {other: curves.gain(points[name], points[other]) for other in configs if other != name}
        compare[name]["time_to_baseline_s"] = t
    summary["compare"] = compare
    summary["ideal_speedup_per_epoch"] = [r["ideal_speedup"] for r in runs["mixtrain"][1.0]]
    summary["total_time_s"] = round(time.perf_counter() - start, 1)
    table = _tables(summary, list(configs), target)
    plot = _plot(runs, summary, out_dir / "demo.png", f"MixTrain demo on {where}")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\ncurves: {plot}; tables: {out_dir / 'summary.md'}; total {summary['total_time_s']:.0f}s")
    return summary


def _tables(summary: dict, names: list[str], target: dict) -> str:
    lines = ["| method | budget | epochs | train time (s) | steps | val top-1 (%) |",
             "|---|---|---:|---:|---:|---:|"]
    for name in names:
        for budget, s in summary[name].items():
            top = "-" if s["val_top1"] is None else f"{s['val_top1']:.2f}"
            lines.append(f"| {name} | {budget} | {s['epochs']} | {s['wall_time_s']:.1f} | {s['steps']} | {top} |")
    lines += ["", "| method | vs baseline curve at equal time | vs progressive resizing | "
                  f"time to the baseline's {target['val_top1']:.2f}% |", "|---|---:|---:|---:|"]
    for name in names:
        c = summary["compare"][name]

        def g(other):
            x = c.get(other)
            return "-" if x is None else f"{x['at_top']['mean']:+.2f} points"

        t = c["time_to_baseline_s"]
        reach = "not reached" if t is None else f"{t:.1f} s ({target['wall_time_s'] / t:.2f}x less)"
        lines.append(f"| {name} | {g('baseline')} | {g('progressive')} | {reach} |")
    return "\n".join(lines)


def _plot(runs: dict, summary: dict, path: Path, title: str) -> Path:
    """Left: each method's curve through its budgets. Right: val top-1 after each epoch of the
    full-budget runs, against their training time so far."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.2))
    one = lambda x: {"mean": x, "std": 0.0}  # noqa: E731  (one seed: no spread)
    curves.plot(left, {name: [{"time": one(s["wall_time_s"]), "top1": one(s["val_top1"])}
                              for s in summary[name].values()] for name in runs}, bold=("mixtrain",))
    left.set_title(f"{title}: final top-1 against training time, budgets E/2 and E", fontsize=10)
    for i, (name, per) in enumerate(runs.items()):
        rows = per[max(per)]
        elapsed = np.cumsum([r["epoch_time_s"] for r in rows])
        right.plot(elapsed, [r.get("val_top1") for r in rows], marker=".", color=f"C{i}", label=name)
    right.set(title="during the E-epoch runs: val top-1 after each epoch", xlabel="training time (s)",
              ylabel="val top-1 (%)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    return save_figure(fig, path)


def _run(name: str, config: Config, data, out_dir: Path, progress: bool) -> list[dict]:
    run_dir = out_dir / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo always starts fresh
    m = config.mix
    budget = ("" if m.schedule == "resize" else
              f", fraction {m.fraction:g}" if m.fraction is not None else
              f", target x{m.target_speedup:g}" if m.target_speedup is not None else "")
    mixing = f"on (k={m.k}, {m.schedule} schedule{budget})" if m.enabled else "off"
    d = config.data
    size = (f"{d.min_image_size} px growing to {d.image_size}" if d.min_image_size else f"{d.image_size} px")
    print(f"\n== {name}: {config.train.arch}, {config.train.epochs} epochs at {size}, mixing {mixing}", flush=True)
    return train(config, data, run_dir, progress=progress)
