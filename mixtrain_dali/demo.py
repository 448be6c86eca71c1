"""`mixtrain demo`: baseline and MixTrain on the embedded synthetic dataset, side by side.

Same model, same epochs, same seed; the only difference is the `[mix]` section. The
settings are `pipelines/demo.toml` (kept equal to DEMO_RECIPE by a test).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .config import Config
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
    "mix": {"enabled": True, "k": 4, "target_speedup": 1.6, "warmup_epochs": 1,
            "final_full_fraction": 0.125},
}


def demo_configs(epochs: int | None = None, quick: bool = False) -> dict[str, Config]:
    recipe = json.loads(json.dumps(DEMO_RECIPE))
    if quick:
        recipe["train"]["epochs"] = 3
        recipe["data"]["batch_size"] = 8
    if epochs is not None:
        recipe["train"]["epochs"] = epochs
    mixtrain = Config.from_dict(recipe, source="demo recipe")
    base_recipe = {**recipe, "mix": {**recipe["mix"], "enabled": False}}
    baseline = Config.from_dict(base_recipe, source="demo recipe")
    return {"baseline": baseline, "mixtrain": mixtrain}


def run_demo(data: str = "data/synthetic", out: str = "runs/demo", epochs: int | None = None,
             quick: bool = False, progress: bool = True) -> dict:
    data_kwargs = QUICK_DATA if quick else DEMO_DATA
    ensure_synthetic(data, progress=progress, **data_kwargs)
    out_dir = Path(out)
    runs = {}
    start = time.perf_counter()
    for name, config in demo_configs(epochs, quick).items():
        run_dir = out_dir / name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a demo always starts fresh
        print(f"\n== {name}: {config.train.arch}, {config.train.epochs} epochs, "
              f"mixing {'on (k=%d, target x%.2f)' % (config.mix.k, config.mix.target_speedup) if config.mix.enabled else 'off'}",
              flush=True)
        runs[name] = train(config, data, run_dir, progress=progress)
    table = comparison_table(runs)
    ideal = [r["ideal_speedup"] for r in runs["mixtrain"]]
    plot = plot_runs(runs, out_dir / "demo.png", title="MixTrain demo: baseline vs MixTrain on the synthetic dataset")
    summary = {name: summarize(rows) for name, rows in runs.items()}
    summary["ideal_speedup_per_epoch"] = ideal
    summary["total_time_s"] = round(time.perf_counter() - start, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nMixTrain plan, ideal speedup per epoch: {', '.join(f'{s:.2f}' for s in ideal)}")
    print(f"curves: {plot}; tables: {out_dir / 'summary.md'}; total {summary['total_time_s']:.0f}s")
    return summary
