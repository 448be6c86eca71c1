"""`mixtrain demo`: baseline, MixTrain and "just train less", side by side.

Same model, same seed, on the embedded synthetic dataset or any ImageFolder (`--data DIR`
with train/ and val/). The baseline trains E epochs; MixTrain the same E epochs with the
`[mix]` section on; "train less" trains the baseline recipe for as many epochs as fit in
MixTrain's measured training time (round(E x MixTrain's time / the baseline's)), so the
table and the accuracy-vs-time plot answer the question a user asks: is mixing better
than simply training less? The settings are `pipelines/demo.toml` (kept equal to
DEMO_RECIPE by a test).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .config import Config
from .errors import UserError
from .report import comparison_table, plot_runs, summarize
from .synthetic import ensure_synthetic
from .train import train

DEMO_DATA = {"classes": 10, "train_per_class": 100, "val_per_class": 25, "seed": 0}
QUICK_DATA = {"classes": 4, "train_per_class": 24, "val_per_class": 8, "seed": 0}

# pipelines/demo.toml holds the same values (tests/test_recipes.py checks it)
DEMO_RECIPE = {
    "data": {"image_size": 64, "batch_size": 32, "scale": [0.35, 1.0], "threads": 2},
    "train": {"arch": "small_cnn", "epochs": 15, "lr": 0.8, "warmup_epochs": 1.0,
              "label_smoothing": 0.1, "seed": 0, "out": "runs/demo"},
    "mix": {"enabled": True, "k": 4},
}


def demo_configs(epochs: int | None = None, quick: bool = False,
                 image_size: int | None = None, device: str | None = None) -> dict[str, Config]:
    recipe = json.loads(json.dumps(DEMO_RECIPE))
    if quick:
        recipe["train"]["epochs"] = 3
        recipe["data"]["batch_size"] = 8
    if epochs is not None:
        recipe["train"]["epochs"] = epochs
    if image_size is not None:
        recipe["data"]["image_size"] = image_size
    if device is not None:
        recipe["data"]["device"] = device
    mixtrain = Config.from_dict(recipe, source="demo recipe")
    base_recipe = {**recipe, "mix": {**recipe["mix"], "enabled": False}}
    baseline = Config.from_dict(base_recipe, source="demo recipe")
    return {"baseline": baseline, "mixtrain": mixtrain}


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
    runs = {}
    start = time.perf_counter()
    configs = demo_configs(epochs, quick, image_size, device)
    for name, config in configs.items():
        runs[name] = _run(name, config, data, out_dir, progress)
        if name == "mixtrain":  # train less: the baseline's recipe in MixTrain's measured time
            t_base, t_mix = (summarize(runs[k])["wall_time_s"] for k in ("baseline", "mixtrain"))
            epochs = less_epochs(config.train.epochs, t_base, t_mix)
            if epochs == config.train.epochs:  # MixTrain saved no time: training less is the baseline
                print(f"\n== train_less: MixTrain took {t_mix:.1f}s, the baseline {t_base:.1f}s: no "
                      "shorter run fits, so it is the baseline's run", flush=True)
                runs["train_less"] = runs["baseline"]
                continue
            less = Config.from_dict({**configs["baseline"].to_dict(),
                                     "train": {**configs["baseline"].to_dict()["train"], "epochs": epochs}})
            runs["train_less"] = _run("train_less", less, data, out_dir, progress)
    table = comparison_table(runs)
    ideal = [r["ideal_speedup"] for r in runs["mixtrain"]]
    plot = plot_runs(runs, out_dir / "demo.png", title=f"MixTrain demo on {where}: baseline, MixTrain, "
                                                       "and the baseline trained less for MixTrain's time")
    summary = {name: summarize(rows) for name, rows in runs.items()}
    summary["ideal_speedup_per_epoch"] = ideal
    summary["total_time_s"] = round(time.perf_counter() - start, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nMixTrain plan, ideal speedup per epoch: {', '.join(f'{s:.2f}' for s in ideal)}")
    print(f"curves: {plot}; tables: {out_dir / 'summary.md'}; total {summary['total_time_s']:.0f}s")
    return summary


def less_epochs(epochs: int, t_base: float, t_mix: float) -> int:
    """The baseline's epochs that fit in MixTrain's measured time: round(E x t_mix / t_base),
    at least 1 and at most E (a MixTrain run slower than the baseline buys no extra epochs)."""
    return max(1, min(epochs, round(epochs * t_mix / max(t_base, 1e-9))))


def _run(name: str, config: Config, data, out_dir: Path, progress: bool) -> list[dict]:
    run_dir = out_dir / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo always starts fresh
    m = config.mix
    budget = ("" if m.schedule == "resize" else
              f", fraction {m.fraction:g}" if m.fraction is not None else
              f", target x{m.target_speedup:g}" if m.target_speedup is not None else "")
    mixing = f"on (k={m.k}, {m.schedule} schedule{budget})" if m.enabled else "off"
    print(f"\n== {name}: {config.train.arch}, {config.train.epochs} epochs, mixing {mixing}", flush=True)
    return train(config, data, run_dir, progress=progress)
