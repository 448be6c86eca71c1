"""Accuracy at equal training time: final val top-1 and training wall time, several seeds each.

Every method shares one recipe (the demo's unless flags say otherwise: model, image size,
lr, epochs E) and one dataset (`--data DIR`, any ImageFolder with train/ and val/; the
embedded synthetic one by default); only what the table names differs. The baseline trained
for E, 0.75E, 0.625E and 0.5E epochs draws the "just train less" curve of accuracy against
measured training time; every other method is judged by where its point lies against that
curve: its accuracy minus the curve's at the same time ("vs curve").

  a  baseline        E epochs, no mixing            c  less_*    fewer epochs, same recipe
  p  progressive     FFCV-style progressive resizing: E/2 px, growing to full by 0.75E
  e  prune           InfoBatch-style: a random part of the below-mean-loss samples skipped,
                     the kept ones' loss rescaled, the last 12.5% of epochs full
  d  naive_mix       random groups of 4, equal shares, one soft label per composite
  b  mixtrain        MixTrain with the package's defaults (MixConfig)
  mix_*              the research programme's ablations, each one idea (--methods)

The project's goal: b within 0.5 points of a at >= 1.4x less training time, and above the
curve, p and e. The script reports what it measures either way.
"""

from __future__ import annotations

import dataclasses
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
# the method: its row label, and what its recipe changes (see method_recipes)
METHODS = {
    "baseline": "a. baseline, E epochs",
    "less_75": "c. train less, 0.75E epochs",
    "less_62": "c. train less, 0.625E epochs",
    "less_50": "c. train less, 0.5E epochs",
    "progressive": "p. progressive resizing, E/2 px to full (FFCV-style), E epochs",
    "prune": "e. InfoBatch-style pruning xS",
    "naive_mix": "d. naive mixing xS (random, equal shares, soft label)",
    "mixtrain": "b. MixTrain, package defaults",
    # the research programme's ablations (--methods NAME ...): each one idea on top of v0
    "mix_v0": "v0. MixTrain as first built: flat xS, whole crop squashed into the tile",
    "mix_norm": "v0 + loss summed per composite (not averaged over constituents)",
    "mix_aspect": "v0 + tile-shaped source windows",
    "mix_scale": "v0 + tile-shaped windows at the tile's scale (objects keep their size)",
    "mix_scale_half": "v0 + tile-shaped windows, area x share^0.5",
    "mix_linear": "v0 + fraction decaying linearly from 1 (random selection)",
    "mix_gamma0": "v0 + equal shares (gamma = 0)",
    "mix_random": "v0 + random selection",
    "mix_k2": "v0 with k=2",
    "mix_all": "v0 + per-composite loss + tile-scale windows + linear decay from 1 (random selection)",
    # on top of the defaults (b): what the network does with a composite
    "mix_apart": "linear + constituents apart in the network (tiles cut out, equal shares)",
    "mix_apart_norm": "linear + constituents apart + loss summed per composite",
    "mix_steps": "apart + the unmixed step count kept (fewer composites per mixed step), linear",
    "mix_k2_steps": "mix_steps with k=2 (tiles at 1/sqrt(2) of the side, 2:1 strips on a square canvas)",
    "mix_k2_aspect": "mix_steps with k=2 and tile-shaped source windows (no squashing into the strip)",
    # round 12: each epoch at progressive resizing's pixel cost (schedule resize, from epoch 0)
    "mix_resize": "apart, steps kept, every epoch at p's cost (resize schedule), from epoch 0, random",
    "mix_resize_low": "mix_resize with the lowest-loss samples mixed first (selection lowest)",
    "mix_lr150": "mix_resize with lr x (1 + 0.5 x the epoch's mixed share) (lr_scale 1.5)",
    "mix_lr067": "mix_resize with lr x (1 - 0.33 x the epoch's mixed share) (lr_scale 0.67)",
    # round 17: tiles at the two sizes that bracket progressive resizing's (the Jensen gap)
    "mix_ladder": "mix_resize with tiles of 1/k' of the canvas, k' in 1, 2, 4 bracketing p's size (ladder)",
    "mix_ladder_aspect": "mix_ladder with windows of the tile's shape (no squashed strips; tile_aspect)",
}
# the benchmark's methods unless --methods says otherwise: the baseline's curve and the rivals
DEFAULT_METHODS = ["baseline", "less_75", "less_62", "less_50", "progressive", "prune", "naive_mix",
                   "mixtrain"]
CURVE = ("baseline", "less_75", "less_62", "less_50")  # the "just train less" curve
TOLERANCE = 0.5  # points of top-1: b within this of a
QUICK = {"image_size": 48, "batch_size": 16, "epochs": 3, "seeds": [0, 1]}


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--data", default=None,
                   help="an ImageFolder root with train/ and val/ (e.g. CIFAR-10, Imagenette); "
                        "default: the embedded synthetic dataset")
    p.add_argument("--tag", default=None, help="added to the result files' names (e.g. an ablation's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds, one run of every method each (default 0 1 2; 0 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None,
                   help="E (default the demo recipe's epochs; 3 with --quick)")
    p.add_argument("--speedup", type=float, default=1.6,
                   help="target speedup S of the flat-budget methods (default 1.6)")
    p.add_argument("--methods", nargs="*", choices=list(METHODS), default=DEFAULT_METHODS,
                   help=f"which methods to run (default {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--arch", default=None, help="model (default the demo recipe's)")
    p.add_argument("--stem", choices=["imagenet", "cifar"], default=None,
                   help="ResNet stem (cifar: 3x3/1, no max-pool, for 32 px images)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"train crop (default the demo's 64; {QUICK['image_size']} with --quick)")
    p.add_argument("--val-resize", type=int, default=None,
                   help="val shorter side before the center crop (default image size x 256/224)")
    p.add_argument("--crop-tries", type=int, default=None,
                   help="data.crop_tries of every method (default the recipe's 1: shrink to fit; "
                        "10: torchvision's rule)")
    p.add_argument("--scale", type=float, nargs=2, default=None,
                   help="random-resized-crop area range (default the demo's 0.35 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"composites per step (default the demo's 32; {QUICK['batch_size']} with --quick)")
    p.add_argument("--lr", type=float, default=None, help="lr for batch 256 (default the demo's)")
    p.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default the demo's 2)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="result files of earlier runs with the same recipe and data: their methods "
                        "join this report (a method run here replaces theirs)")
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
    for key, flag in (("threads", args.threads), ("val_resize", args.val_resize), ("scale", args.scale),
                      ("crop_tries", args.crop_tries)):
        if flag is not None:
            r["data"][key] = list(flag) if isinstance(flag, (list, tuple)) else flag
    r["train"]["epochs"] = args.epochs or (QUICK["epochs"] if q else r["train"]["epochs"])
    if args.arch:
        r["train"]["arch"] = args.arch
    if args.stem:
        r["train"]["stem"] = args.stem
    if args.lr is not None:
        r["train"]["lr"] = args.lr
    return r


def method_recipes(base: dict, speedup: float) -> dict[str, dict]:
    """Every method as a recipe dict: the base with its one difference."""
    epochs = base["train"]["epochs"]
    size = base["data"]["image_size"]
    flat = {"enabled": True, "method": "mix", "k": 4, "target_speedup": speedup}
    # v0: the mixing of the first release, spelled out so that new defaults do not move it
    v0 = {**base["mix"], **flat, "schedule": "flat", "tile_aspect": False, "tile_scale": 0.0,
          "loss_norm": "constituent", "selection": "loss", "gamma": 1.0, "isolate": False,
          "keep_steps": False}

    def with_(mix_=None, data=None, **train):
        return {"data": {**base["data"], **(data or {})}, "train": {**base["train"], **train},
                "mix": mix_ if mix_ is not None else {**base["mix"], "enabled": False}}

    def less(frac):
        return with_(epochs=max(1, round(epochs * frac)))

    # the package defaults (schedule resize) are b; the rows below b were measured on top of
    # the previous defaults, the linear schedule after one warm-up epoch, spelled out here
    defaults = {**base["mix"], "enabled": True, "schedule": "linear", "warmup_epochs": 1,
                "final_full_fraction": 0.125, "self_correct": True}
    # progressive resizing's cost per epoch, mixing from epoch 0 (random selection needs no
    # loss); no self-correction: it would unmix the samples of the f = 1 epochs and so
    # change the cost the arm is matched on
    resize = {"enabled": True, "k": 4, "schedule": "resize", "warmup_epochs": 0,
              "final_full_fraction": 0.0, "selection": "random", "gamma": 0.0, "isolate": True,
              "keep_steps": True, "self_correct": False}
    return {
        "baseline": with_(),
        "less_75": less(0.75),
        "less_62": less(0.625),
        "less_50": less(0.5),
        "progressive": with_(data={"min_image_size": max(16, size // 2), "resize_ramp": [0.0, 0.75]}),
        "prune": with_({**v0, "method": "prune"}),
        "naive_mix": with_({**v0, "selection": "random", "gamma": 0.0, "self_correct": False},
                           region_pooling=False),
        "mixtrain": with_({**base["mix"], "enabled": True}),
        "mix_v0": with_(v0),
        "mix_norm": with_({**v0, "loss_norm": "composite"}),
        "mix_aspect": with_({**v0, "tile_aspect": True}),
        "mix_scale": with_({**v0, "tile_aspect": True, "tile_scale": 1.0}),
        "mix_scale_half": with_({**v0, "tile_aspect": True, "tile_scale": 0.5}),
        "mix_linear": with_({**v0, "schedule": "linear", "target_speedup": None, "fraction": 1.0,
                             "selection": "random"}),
        "mix_gamma0": with_({**v0, "gamma": 0.0}),
        "mix_random": with_({**v0, "selection": "random"}),
        "mix_k2": with_({**v0, "k": 2}),
        "mix_all": with_({**v0, "loss_norm": "composite", "tile_aspect": True, "tile_scale": 1.0,
                          "schedule": "linear", "target_speedup": None, "fraction": 1.0,
                          "selection": "random"}),
        "mix_apart": with_({**defaults, "gamma": 0.0, "isolate": True, "keep_steps": False}),
        "mix_apart_norm": with_({**defaults, "gamma": 0.0, "isolate": True, "keep_steps": False,
                                 "loss_norm": "composite"}),
        "mix_steps": with_({**defaults, "gamma": 0.0, "isolate": True, "keep_steps": True}),
        "mix_k2_steps": with_({**defaults, "k": 2}),
        "mix_k2_aspect": with_({**defaults, "k": 2, "tile_aspect": True}),
        "mix_resize": with_(resize),
        "mix_resize_low": with_({**resize, "selection": "lowest"}),
        "mix_lr150": with_({**resize, "lr_scale": 1.5}),
        "mix_lr067": with_({**resize, "lr_scale": 2 / 3}),
        "mix_ladder": with_({**resize, "ladder": True}),
        "mix_ladder_aspect": with_({**resize, "ladder": True, "tile_aspect": True}),
    }


def summarize_method(runs: list[dict]) -> dict:
    return {"val_top1": common.spread(r["val_top1"] for r in runs),
            "train_time_s": common.spread(r["train_time_s"] for r in runs),
            "run_time_s": common.spread(r["run_time_s"] for r in runs),
            "steps": common.spread(r["steps"] for r in runs),
            "epochs": runs[0]["epochs"] if runs else None}


def curve_at(summary: dict, time_s: float, axis: str = "train_time_s") -> float | None:
    """The train-less curve's top-1 (means, linear between its points) at `time_s` (or at a
    number of steps, axis="steps"); None outside the curve's range or with fewer than two
    of its points."""
    pts = sorted((summary[k][axis]["mean"], summary[k]["val_top1"]["mean"])
                 for k in CURVE if k in summary)
    if len(pts) < 2 or not pts[0][0] <= time_s <= pts[-1][0]:
        return None
    for (t0, a0), (t1, a1) in zip(pts, pts[1:]):
        if t0 <= time_s <= t1:
            return a0 + (a1 - a0) * ((time_s - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return None


def goals(summary: dict) -> list[dict]:
    """The project's goals, evaluated on the means (left out where a method was not run)."""
    def top1(name):
        s = summary.get(name)
        return None if s is None else s["val_top1"]["mean"]

    b, a = top1("mixtrain"), top1("baseline")
    out = []
    if b is None:
        return out
    if a is not None:
        saved = summary["baseline"]["train_time_s"]["mean"] / summary["mixtrain"]["train_time_s"]["mean"]
        out.append({"goal": f"b (MixTrain) within {TOLERANCE} points of a (baseline)",
                    "difference": b - a, "met": b - a >= -TOLERANCE})
        out.append({"goal": "b saves >= 1.4x training time", "difference": saved, "met": saved >= 1.4})
    at = curve_at(summary, summary["mixtrain"]["train_time_s"]["mean"])
    if at is not None:
        out.append({"goal": "b above the train-less curve at its time", "difference": b - at,
                    "met": b > at})
    for key in ("progressive", "prune", "naive_mix"):
        other = top1(key)
        if other is not None:
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
    all_recipes = method_recipes(base, args.speedup)
    recipes = {k: v for k, v in all_recipes.items() if k in args.methods}
    configs = {k: Config.from_dict(v, source=f"method {k}") for k, v in recipes.items()}  # checks all first
    out = common.out_dir(args)
    machine, when = common.machine_info(), common.now()
    command = common.command_line(NAME, argv)
    if args.data:
        data = Path(args.data)
        if not (data / "train").is_dir() or not (data / "val").is_dir():
            raise UserError(f"--data {args.data!r} must hold train/ and val/ ImageFolder trees")
        spec = {"kind": "ImageFolder", "name": data.name}
    else:
        spec = QUICK_DATA if args.quick else DEMO_DATA
        data = common.synthetic_dataset(common.data_dir(args), progress=not args.no_progress, **spec)
        spec = {"kind": "synthetic", "name": "synthetic", **spec}

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="mixtrain-accuracy-"))
    runs: dict[str, list[dict]] = {k: [] for k in configs}
    merged_configs = _merge(args.merge, base, spec, runs)
    same_as = _defaults_twin(all_recipes, merged_configs, runs) if "mixtrain" not in configs else None
    todo = [(seed, k) for seed in seeds for k in configs]  # interleaved: drift hits all methods alike

    def report(done: int):
        """Write the JSON, table and plot of the runs so far (after every run: nothing is lost if
        a long benchmark is stopped; the header says how many of the runs are in)."""
        if same_as:  # b is the package defaults: the same configuration already ran under another name
            runs["mixtrain"] = runs[same_as]
        summary = {k: summarize_method(runs[k]) for k in METHODS if runs.get(k)}
        verdict = goals(summary)
        settings = {"quick": args.quick, "device": device, "seeds": seeds, "speedup": args.speedup,
                    "epochs": base["train"]["epochs"], "torch_threads": torch_threads, "tolerance": TOLERANCE,
                    "dataset": spec, "recipe": base,
                    "configs": {**merged_configs, **{k: c.to_dict() for k, c in configs.items()}},
                    "merged_from": list(args.merge), "mixtrain_is": same_as}
        result = {"benchmark": NAME, "title": "Accuracy at an equal budget", "date": when, "command": command,
                  "argv": argv, "process_command": " ".join(sys.argv), "machine": machine, "settings": settings,
                  "data": str(data), "methods": {k: {"label": METHODS[k], "summary": summary[k], "runs": runs[k]}
                                                 for k in summary},
                  "goals": verdict, "total_time_s": time.perf_counter() - start,
                  "runs_done": done, "runs_planned": len(todo)}

        table = _table(summary, args.speedup)
        goals_md = _goals_table(verdict)
        t = base["train"]
        what = (f"final val top-1 and training wall time (sum of epoch times, validation excluded), mean ± std "
                f"over seeds {', '.join(map(str, seeds))}: {t['arch']} at {base['data']['image_size']} px, batch "
                f"{base['data']['batch_size']}, E = {t['epochs']} epochs, S = {args.speedup:g}, on "
                f"{_dataset_words(spec, data)} (full val set), device {device}, torch threads {torch_threads}")
        headline = None
        if "mixtrain" in summary and "baseline" in summary:
            a, b = summary["baseline"], summary["mixtrain"]
            top_b, top_a = b["val_top1"]["mean"], a["val_top1"]["mean"]
            at = curve_at(summary, b["train_time_s"]["mean"])
            vs_curve = "" if at is None else f", {top_b - at:+.2f} points vs training less for the same time"
            headline = (f"MixTrain: {top_b:.2f}% top-1 vs baseline {top_a:.2f}% ({top_b - top_a:+.2f} points) "
                        f"in {a['train_time_s']['mean'] / b['train_time_s']['mean']:.2f}x less training time"
                        f"{vs_curve} (means of {len(seeds)} seeds)")
        title = f"Accuracy at equal training time, {spec['name']}, {device.upper()}"
        partial = "" if done == len(todo) else f" (PARTIAL: {done} of {len(todo)} runs)"
        md = common.header(title + (" (quick)" if args.quick else "") + (f" [{args.tag}]" if args.tag else "") + partial,
                           what, machine, when, command, result=headline)
        twin = (f"b (the package defaults) is the same configuration as {same_as}: one set of runs, shown "
                f"on both rows.\n\n" if same_as else "")
        merged = (f"Merged from earlier runs of this recipe: {', '.join(args.merge)}.\n\n" if args.merge else "")
        md += table + "\n\n" + twin + merged + (goals_md + "\n\n" if goals_md else "") + _notes(args.speedup) + "\n"
        stem = common.stem(f"accuracy_{_slug(spec['name'])}" + (f"_{_slug(args.tag)}" if args.tag else ""),
                           device, args.quick)
        paths = common.write_results(out, stem, result, md)
        curve_plot(out / f"{stem}.png", summary, args.speedup,
                   f"{spec['name']}: accuracy vs training time ({t['arch']}, {base['data']['image_size']} px, "
                   f"E = {t['epochs']}, {len(seeds)} seeds, {device})")
        return result, paths, stem, table, goals_md

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
            if i + 1 < len(todo):
                report(i + 1)
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)

    result, paths, stem, table, goals_md = report(len(todo))
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
        at = None if key in CURVE else curve_at(summary, tt["mean"])
        at_steps = None if key in CURVE else curve_at(summary, s["steps"]["mean"], "steps")
        rows.append([_label(key, speedup), s["epochs"],
                     f"{top['mean']:.2f} ± {top['std']:.2f}", f"{top['min']:.2f}-{top['max']:.2f}", d_top,
                     "-" if at is None else f"{top['mean'] - at:+.2f}",
                     "-" if at_steps is None else f"{top['mean'] - at_steps:+.2f}",
                     f"{tt['mean']:.1f} ± {tt['std']:.1f}", t_ratio, f"{s['steps']['mean']:.0f}", top["n"]])
    return common.markdown_table(
        ["method", "epochs", "val top-1 (%)", "min-max", "Δ vs a", "vs curve (time)", "vs curve (steps)",
         "train time (s)", "time saved vs a", "steps", "seeds"], rows)


def curve_plot(path: Path, summary: dict, speedup: float, title: str) -> Path:
    """Accuracy against training time: the train-less curve as a line through its points,
    every other method as a point with std error bars (and min-max as a faint bar)."""
    plt = common._pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    curve = sorted((summary[k]["train_time_s"]["mean"], summary[k]["val_top1"]["mean"], k)
                   for k in CURVE if k in summary)
    if curve:
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "-", color="0.45", lw=2, zorder=1,
                label="baseline trained for E, 0.75E, 0.625E, 0.5E epochs")
    for i, (key, s) in enumerate(summary.items()):
        x, y = s["train_time_s"], s["val_top1"]
        color = "0.3" if key in CURVE else f"C{i}"
        ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="o", capsize=4, color=color,
                    label=None if key in CURVE else _label(key, speedup), zorder=3)
        ax.plot([x["mean"]] * 2, [y["min"], y["max"]], color=color, alpha=0.3, lw=6, zorder=2)
        tag = key.replace("less_", "") + ("%" if key.startswith("less_") else "")
        ax.annotate(tag, (x["mean"], y["mean"]), xytext=(6, -12 if key in CURVE else 5),
                    textcoords="offset points", fontsize=8, color=color)
    ax.set(title=title, xlabel="training wall time (s), mean ± std over seeds",
           ylabel="final val top-1 (%), mean ± std; bar = min-max")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return common._save(fig, path)


def _merge(paths: list[str], base: dict, spec: dict, runs: dict) -> dict:
    """Fold the runs of earlier result files into `runs`: methods not run now, each seed once
    (a later file adds the seeds an earlier one lacks); returns their configs. Refuses a file
    of another recipe or dataset: its points would not be comparable."""
    from mixtrain_dali.errors import UserError

    configs = {}
    for path in paths:
        try:
            old = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--merge {path!r}: cannot read it as a result file ({e})") from None
        o = old.get("settings", {})
        if o.get("recipe") != base or o.get("dataset", {}).get("name") != spec.get("name"):
            raise UserError(f"--merge {path!r} was run with another recipe or dataset than this run")
        for key, m in old.get("methods", {}).items():
            if key not in METHODS or key not in o.get("configs", {}):
                continue
            if key in runs and not runs[key] and key not in configs:
                continue  # run here: this run's results replace the file's
            have = {r["seed"] for r in runs.get(key, [])}
            runs.setdefault(key, []).extend(r for r in m["runs"] if r["seed"] not in have)  # other seeds join
            configs[key] = o["configs"][key]
    return configs


def _defaults_twin(recipes: dict, merged_configs: dict, runs: dict) -> str | None:
    """The method, run or merged, whose mixing is exactly the package defaults' (b), if any
    (e.g. mix_v0 while the defaults are v0's): its runs stand for b too, not run twice."""
    from mixtrain_dali.config import MixConfig

    def effective(mix: dict) -> dict:
        m = MixConfig(**mix)
        d = {k: v for k, v in dataclasses.asdict(m).items() if k not in ("fraction", "target_speedup")}
        return {**d, "f": m.mix_fraction()}

    b = effective(recipes["mixtrain"]["mix"])
    ran = {**{k: r["mix"] for k, r in recipes.items() if k in runs}, **{k: c["mix"] for k, c in merged_configs.items()}}
    for key, mix in ran.items():
        if key != "mixtrain" and mix.get("enabled") and effective(mix) == b:
            return key
    return None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _dataset_words(spec: dict, data: Path) -> str:
    if spec["kind"] == "synthetic":
        return (f"the synthetic dataset ({spec['classes']} classes, {spec['train_per_class']} train / "
                f"{spec['val_per_class']} val images per class)")
    from mixtrain_dali.dataset import scan_image_folder

    tr, va = scan_image_folder(data / "train"), scan_image_folder(data / "val")
    return (f"{spec['name']} ({len(tr.classes)} classes, {len(tr)} train / {len(va)} val images, "
            f"ImageFolder at {data})")


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
        f"- d, e and the flat ablations plan a {speedup:g}x smaller epoch after one warm-up epoch and "
        "before the final 12.5% of epochs (unmixed); c trains fewer epochs with the same recipe (its "
        "cosine schedule ends sooner); vs curve = top-1 minus the train-less curve's (linear between "
        "its points) at the method's mean training time, '-' outside the curve's range; vs curve (steps): "
        "the same at the method's number of optimizer steps (every step takes a batch of the same "
        "input size, except under progressive resizing), a measure that noise from other work on the "
        "machine cannot move.",
        "- naive mixing: MixConfig(selection='random', gamma=0, self_correct=False, k=4), "
        "TrainConfig(region_pooling=False); pruning: MixConfig(method='prune'), InfoBatch-style (random "
        "part of the below-mean-loss samples skipped, kept ones' loss rescaled).",
    ])


if __name__ == "__main__":
    sys.exit(common.run_script(main))
