"""Accuracy against training time: each method trained at several budgets, several seeds each.

Every method shares one recipe (the demo's unless flags say otherwise: model, image size,
lr, epochs E) and one dataset (`--data DIR`, any ImageFolder with train/ and val/; the
embedded synthetic one by default); only what its row names differs. Each method runs at
every budget of `--budgets` (fractions of E: its cosine schedule ends at that budget, as
budgeted training wants), so it draws a curve of final val top-1 against measured training
time. One method's gain over another is the distance between their curves at equal time,
per seed (linear between a seed's points), then mean and spread over the seeds; and each
method's time to reach the full baseline's accuracy (the baseline's own curve at E).

  baseline       no mixing (its curve is "just train less")
  progressive    FFCV-style progressive resizing: E/2 px growing to full by 0.75 of the run
  prune          InfoBatch-style: a random part of the below-mean-loss samples skipped, the
                 kept ones' loss rescaled, the last 12.5% of epochs full
  mixtrain       MixTrain with the package's defaults (each epoch at progressive resizing's cost)
  prog_mix       progressive resizing, and MixTrain on its canvas: a further share of the samples
                 (--mix-fraction, decaying linearly) tiled k=4 at random
  prog_mix_loss  prog_mix choosing the tiled samples from the loss table: at random among those
                 below the mean loss (InfoBatch's rule), a sample whose tiled loss rose above it
                 back at full size next epoch (the paper's selection)

`--val-sizes` also evaluates every final model at other test resolutions (FixRes: above the
train crop), the same for every method. The goal (issue 25): the best mixing configuration's
curve >= 0.5 points above progressive resizing's at equal time near convergence, and the full
baseline's accuracy in <= 1/1.6 of its time. The script reports what it measures either way.
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
from mixtrain_dali.curves import budget_epochs, gain, time_to_reach  # noqa: E402

NAME = "accuracy_budget"
METHODS = {
    "baseline": "baseline",
    "progressive": "progressive resizing (E/2 px to full by 0.75 of the run)",
    "prune": "InfoBatch-style pruning xS",
    "mixtrain": "MixTrain, package defaults (resize schedule)",
    "prog_mix": "progressive resizing + MixTrain k=4 on its canvas (random, fraction F decaying)",
    "prog_mix_loss": "progressive resizing + MixTrain k=4 on its canvas (below-mean-loss samples, F decaying)",
}
MIXING = ("mixtrain", "prog_mix", "prog_mix_loss")  # the mixing configurations (the goal's contenders)
DEFAULT_METHODS = list(METHODS)
DEFAULT_BUDGETS = [0.5, 0.75, 1.0]
GOAL_GAIN, GOAL_SPEEDUP = 0.5, 1.6
QUICK = {"image_size": 48, "batch_size": 16, "epochs": 3, "seeds": [0, 1], "budgets": [0.5, 1.0]}


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--data", default=None,
                   help="an ImageFolder root with train/ and val/ (e.g. CIFAR-10, Imagenette); "
                        "default: the embedded synthetic dataset")
    p.add_argument("--tag", default=None, help="added to the result files' names (e.g. an experiment's)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds, one run of every method and budget each (default 0 1 2; 0 1 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="E, the full budget (default the demo recipe's; "
                                                            "3 with --quick)")
    p.add_argument("--budgets", type=float, nargs="+", default=None, metavar="FRACTION",
                   help="the budgets each method trains at, as fractions of E in (0, 1] (default "
                        f"{' '.join(map(str, DEFAULT_BUDGETS))}; {' '.join(map(str, QUICK['budgets']))} with --quick)")
    p.add_argument("--speedup", type=float, default=1.6, help="target speedup S of pruning (default 1.6)")
    p.add_argument("--mix-fraction", type=float, default=0.5,
                   help="prog_mix*: the share of samples tiled in the first mixing epoch, decaying "
                        "linearly to 0 (default 0.5)")
    p.add_argument("--methods", nargs="*", choices=list(METHODS), default=DEFAULT_METHODS,
                   help=f"which methods to run (default {' '.join(DEFAULT_METHODS)})")
    p.add_argument("--val-sizes", type=int, nargs="+", default=[], metavar="PX",
                   help="also evaluate every final model at these val crops (test resolutions), "
                        "the shorter side resized to PX x 256/224 (default: the train crop only)")
    p.add_argument("--arch", default=None, help="model (default the demo recipe's)")
    p.add_argument("--stem", choices=["imagenet", "cifar"], default=None,
                   help="ResNet stem (cifar: 3x3/1, no max-pool, for 32 px images)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"train crop (default the demo's 64; {QUICK['image_size']} with --quick)")
    p.add_argument("--val-resize", type=int, default=None,
                   help="val shorter side before the center crop (default image size x 256/224)")
    p.add_argument("--scale", type=float, nargs=2, default=None,
                   help="random-resized-crop area range (default the demo's 0.35 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"composites per step (default the demo's 32; {QUICK['batch_size']} with --quick)")
    p.add_argument("--lr", type=float, default=None, help="lr for batch 256 (default the demo's)")
    p.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default the demo's 2)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="result files of earlier runs with the same recipe and data: their runs join "
                        "this report (a method and budget run here replaces theirs); a file of another "
                        "--epochs joins by epochs (E = 12's 12-epoch runs are E = 24's budget 0.5)")
    p.add_argument("--runs-dir", default=None,
                   help="keep the training runs here; default: a temporary folder removed at the end")
    return p


def base_recipe(args, device: str) -> dict:
    from mixtrain_dali.demo import DEMO_MIXTRAIN

    r = json.loads(json.dumps(DEMO_MIXTRAIN))
    q = args.quick
    r["data"]["device"] = device
    for key, flag in (("image_size", args.image_size), ("batch_size", args.batch_size)):
        r["data"][key] = flag or (QUICK[key] if q else r["data"][key])
    for key, flag in (("threads", args.threads), ("val_resize", args.val_resize), ("scale", args.scale)):
        if flag is not None:
            r["data"][key] = list(flag) if isinstance(flag, (list, tuple)) else flag
    r["train"]["epochs"] = args.epochs or (QUICK["epochs"] if q else r["train"]["epochs"])
    r["train"]["val_interval"] = 0  # validate the final model only: the curves need no more
    for key, flag in (("arch", args.arch), ("stem", args.stem), ("lr", args.lr)):
        if flag is not None:
            r["train"][key] = flag
    return r


def method_recipes(base: dict, speedup: float = 1.6, mix_fraction: float = 0.5) -> dict[str, dict]:
    """Every method as a recipe dict at the full budget E: the base with its one difference."""
    from mixtrain_dali.demo import progressive_data

    progressive = progressive_data(base["data"]["image_size"])
    # mixing on top of progressive resizing: a budget of its own, tiles of that epoch's canvas
    on_top = {"enabled": True, "k": 4, "schedule": "linear", "fraction": mix_fraction, "warmup_epochs": 0,
              "final_full_fraction": 0.125, "selection": "random", "gamma": 0.0, "self_correct": False}

    def with_(mix_=None, data=None):
        return {"data": {**base["data"], **(data or {})}, "train": dict(base["train"]),
                "mix": mix_ if mix_ is not None else {**base["mix"], "enabled": False}}

    return {
        "baseline": with_(),
        "progressive": with_(data=progressive),
        "prune": with_({"enabled": True, "method": "prune", "schedule": "flat", "target_speedup": speedup,
                        "selection": "loss"}),
        "mixtrain": with_({**base["mix"], "enabled": True}),
        "prog_mix": with_(on_top, data=progressive),
        # the loss table needs one epoch of losses first; self-correction as the paper's
        "prog_mix_loss": with_({**on_top, "selection": "loss", "warmup_epochs": 1, "self_correct": True},
                               data=progressive),
    }


def at_budget(recipe: dict, budget: float) -> dict:
    """`recipe` trained for round(budget x E) epochs (at least 1): its schedule ends there."""
    return {**recipe, "train": {**recipe["train"], "epochs": budget_epochs(recipe["train"]["epochs"], budget)}}


# -- curves (mixtrain_dali/curves.py: interp, gain, time_to_reach) ----------------------------
def summarize(runs: dict[str, list[dict]], budgets: list[float], val_sizes: list[int]) -> dict:
    """Per method: per budget the mean and spread of top-1 (and at each val size), time and steps;
    its mean curve; its gains over the rivals; its time to the baseline's accuracy at E."""
    out = {}
    for key, rs in runs.items():
        if not rs:
            continue
        per = {}
        for b in budgets:
            br = [r for r in rs if r["budget"] == b]
            if not br:
                continue
            per[str(b)] = {"epochs": br[0]["epochs"], "val_top1": common.spread(r["val_top1"] for r in br),
                           "train_time_s": common.spread(r["train_time_s"] for r in br),
                           "steps": common.spread(r["steps"] for r in br),
                           "val_top1_at": {str(s): common.spread(r["val_top1_at"][str(s)] for r in br)
                                           for s in val_sizes if all(str(s) in r.get("val_top1_at", {}) for r in br)}}
        out[key] = {"budgets": per, "curve": sorted((p["train_time_s"]["mean"], p["val_top1"]["mean"])
                                                    for p in per.values())}
    base = out.get("baseline", {}).get("budgets", {})
    full = base.get(str(max(budgets))) if base else None
    for key, s in out.items():
        s["gain_vs"] = {other: gain(runs[key], runs[other]) for other in ("baseline", "progressive", "prune")
                        if other != key and runs.get(other)}
        if full is not None:
            t = time_to_reach(s["curve"], full["val_top1"]["mean"])
            s["time_to_baseline"] = None if t is None else {
                "time_s": t, "speedup": full["train_time_s"]["mean"] / t if t > 0 else None}
    return out


def goals(summary: dict) -> list[dict]:
    """Issue 25's goals for the best mixing configuration (the largest gain over progressive
    resizing at the top of the curves), on the seeds' means."""
    cands = [(s["gain_vs"]["progressive"]["at_top"]["mean"], k) for k, s in summary.items()
             if k in MIXING and s.get("gain_vs", {}).get("progressive")]
    if not cands:
        return []
    best_gain, best = max(cands)
    out = [{"goal": f"best mixing ({best}) >= {GOAL_GAIN} points above progressive resizing at equal "
                    "time (top of the curves)", "value": best_gain, "met": best_gain >= GOAL_GAIN}]
    ttb = summary[best].get("time_to_baseline")
    if "time_to_baseline" in summary[best]:
        speed = ttb["speedup"] if ttb else None
        out.append({"goal": f"{best} reaches the full baseline's accuracy in <= 1/{GOAL_SPEEDUP} of its time",
                    "value": speed, "met": speed is not None and speed >= GOAL_SPEEDUP})
    return out


def plateau(runs: dict, budgets: list[float]) -> tuple[float, int] | None:
    """The baseline's gain from its second-largest budget to E (nearly plateaued: < 1 point),
    paired by seed: the mean of each seed's gain over the seeds run at both budgets, and how
    many (means over unequal seed sets would mix the seeds' spread into the gain)."""
    top = sorted(budgets)[-2:]
    if len(top) < 2:
        return None
    at = [{r["seed"]: r["val_top1"] for r in runs.get("baseline", []) if r["budget"] == b} for b in top]
    both = sorted(set(at[0]) & set(at[1]))
    if not both:
        return None
    return sum(at[1][s] - at[0][s] for s in both) / len(both), len(both)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    from mixtrain_dali.config import Config
    from mixtrain_dali.demo import DEMO_DATA, QUICK_DATA
    from mixtrain_dali.errors import UserError
    from mixtrain_dali.report import summarize as summarize_rows
    from mixtrain_dali.train import evaluate_run, train

    argv, args, device, torch_threads = common.start(build_parser, argv, prog)
    seeds = args.seeds or (QUICK["seeds"] if args.quick else [0, 1, 2])
    budgets = sorted(set(args.budgets or (QUICK["budgets"] if args.quick else DEFAULT_BUDGETS)))
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {seeds} has duplicates")
    if not all(0 < b <= 1 for b in budgets):
        raise UserError(f"--budgets {budgets}: each must be a fraction of E in (0, 1]")
    if not 0 < args.mix_fraction <= 1:
        raise UserError(f"--mix-fraction {args.mix_fraction} is outside (0, 1]")
    base = base_recipe(args, device)
    recipes = {k: v for k, v in method_recipes(base, args.speedup, args.mix_fraction).items() if k in args.methods}
    for k, v in recipes.items():  # every method at every budget is checked before the first run
        for b in budgets:
            Config.from_dict(at_budget(v, b), source=f"method {k} at budget {b}")
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
    runs: dict[str, list[dict]] = {k: [] for k in recipes}
    merged = _merge(args.merge, base, spec, runs, {(k, b, seed) for k in recipes for b in budgets for seed in seeds})
    # a merged file's budgets and seeds join this report's
    all_budgets = sorted(set(budgets) | {r["budget"] for rs in runs.values() for r in rs})
    all_seeds = sorted(set(seeds) | {r["seed"] for rs in runs.values() for r in rs})
    # interleaved: the machine's drift hits every method alike; longest budgets first
    todo = [(seed, b, k) for seed in seeds for b in sorted(budgets, reverse=True) for k in recipes]
    start = time.perf_counter()

    def report(done: int):
        """Write the JSON, tables and plot of the runs so far (after every run: nothing is lost
        if a long benchmark is stopped; the header says how many runs are in)."""
        summary = summarize(runs, all_budgets, args.val_sizes)
        verdict = goals(summary)
        flat = plateau(runs, all_budgets)
        settings = {"quick": args.quick, "device": device, "seeds": all_seeds, "budgets": all_budgets,
                    "speedup": args.speedup, "mix_fraction": args.mix_fraction, "epochs": base["train"]["epochs"],
                    "val_sizes": args.val_sizes, "torch_threads": torch_threads, "dataset": spec, "recipe": base,
                    "configs": {**merged, **{k: Config.from_dict(v).to_dict() for k, v in recipes.items()}},
                    "merged_from": list(args.merge)}
        result = {"benchmark": NAME, "title": "Accuracy against training time", "date": when,
                  "command": command, "argv": argv, "process_command": " ".join(sys.argv), "machine": machine,
                  "settings": settings, "data": str(data), "methods_run": sorted(k for k in runs if runs[k]),
                  "methods": {k: {"label": METHODS[k], **summary[k], "runs": runs[k]} for k in summary},
                  "goals": verdict, "baseline_gain_last_budget_to_E": flat and flat[0],
                  "baseline_gain_seeds": flat and flat[1],
                  "total_time_s": time.perf_counter() - start, "runs_done": done, "runs_planned": len(todo)}
        t = base["train"]
        what = (f"final val top-1 (full val set) against training wall time (sum of epoch times, validation "
                f"excluded), each method at budgets {', '.join(f'{b:g}' for b in all_budgets)} x E, seeds "
                f"{', '.join(map(str, all_seeds))}: {t['arch']} at {base['data']['image_size']} px, batch "
                f"{base['data']['batch_size']}, E = {t['epochs']} epochs, on {_dataset_words(spec, data)}, "
                f"device {device}, torch threads {torch_threads}")
        title = f"Accuracy against training time, {spec['name']}, {device.upper()}"
        partial = "" if done == len(todo) else f" (PARTIAL: {done} of {len(todo)} runs)"
        md = common.header(title + (" (quick)" if args.quick else "") + (f" [{args.tag}]" if args.tag else "")
                           + partial, what, machine, when, command, result=_headline(summary, verdict, flat))
        md += "\n\n".join([_points_table(summary, args.val_sizes, args.speedup), _curves_table(summary),
                           _goals_table(verdict)]) + "\n\n"
        md += (f"Merged from earlier runs of this recipe: {', '.join(args.merge)}.\n\n" if args.merge else "")
        md += _notes(args.speedup, args.mix_fraction) + "\n"
        stem = common.stem(f"accuracy_{_slug(spec['name'])}" + (f"_{_slug(args.tag)}" if args.tag else ""),
                           device, args.quick)
        paths = common.write_results(out, stem, result, md)
        curve_plot(out / f"{stem}.png", summary, args.val_sizes,
                   f"{spec['name']}: accuracy vs training time ({t['arch']}, {base['data']['image_size']} px, "
                   f"E = {t['epochs']}, {len(all_seeds)} seeds, {device})")
        return paths, stem, md

    try:
        for i, (seed, budget, key) in enumerate(todo):
            r = at_budget(recipes[key], budget)
            cfg = Config.from_dict({**r, "train": {**r["train"], "seed": seed}}, source=f"method {key}")
            elapsed = time.perf_counter() - start
            eta = f", about {elapsed / i * (len(todo) - i) / 60:.0f} min left" if i else ""
            print(f"\n== [{i + 1}/{len(todo)}] {_label(key, args.speedup)} at {budget:g}E "
                  f"(seed {seed}, {cfg.train.epochs} epochs){eta}", flush=True)
            run_dir = runs_dir / f"{key}-b{budget:g}-s{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            rows = train(cfg, data, run_dir, progress=not args.no_progress)
            s = summarize_rows(rows)
            extra = {str(px): evaluate_run(run_dir, data, px)["val_top1"] for px in args.val_sizes}
            runs[key].append({"seed": seed, "budget": budget, "epochs": s["epochs"], "val_top1": s["val_top1"],
                              "val_top5": s["val_top5"], "val_top1_at": extra,
                              "train_time_s": s["wall_time_s"], "run_time_s": time.perf_counter() - t0,
                              "steps": s["steps"], "samples": s["samples"], "metrics": rows})
            if i + 1 < len(todo):
                report(i + 1)
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
    paths, stem, md = report(len(todo))
    print(f"\nwrote {paths['json']}, {paths['md']}, {out / (stem + '.png')}")
    print("\n" + md.split("\n\n", 2)[-1].split("Notes:")[0])
    return json.loads(Path(paths["json"]).read_text())


def _headline(summary: dict, verdict: list[dict], flat: tuple[float, int] | None) -> str | None:
    parts = []
    if verdict:
        g = verdict[0]
        parts.append(f"{g['goal']}: {g['value']:+.2f} ({'met' if g['met'] else 'not met'})")
    if len(verdict) > 1:
        v = verdict[1]["value"]
        parts.append(f"its time to the baseline's accuracy: {'never' if v is None else f'{v:.2f}x less'}")
    if flat is not None:
        parts.append(f"the baseline gains {flat[0]:+.2f} points over its last budget step "
                     f"(plateau: < 1; paired, {flat[1]} seed{'s' if flat[1] > 1 else ''})")
    return "; ".join(parts) or None


def _points_table(summary: dict, val_sizes: list[int], speedup: float) -> str:
    rows = []
    for key, s in summary.items():
        for b, p in s["budgets"].items():
            top, tt = p["val_top1"], p["train_time_s"]
            at = [f"{p['val_top1_at'][str(v)]['mean']:.2f} ± {p['val_top1_at'][str(v)]['std']:.2f}"
                  if str(v) in p["val_top1_at"] else "-" for v in val_sizes]
            rows.append([_label(key, speedup), f"{float(b):g}", p["epochs"], f"{top['mean']:.2f} ± {top['std']:.2f}",
                         *at, f"{tt['mean']:.1f} ± {tt['std']:.1f}", f"{p['steps']['mean']:.0f}", top["n"]])
    return common.markdown_table(["method", "budget (x E)", "epochs", "val top-1 (%)",
                                  *[f"top-1 at {v} px" for v in val_sizes], "train time (s)", "steps", "seeds"], rows)


def _curves_table(summary: dict) -> str:
    def g(s, other):
        x = s["gain_vs"].get(other)
        return "-" if x is None else (f"{x['at_top']['mean']:+.2f} ± {x['at_top']['std']:.2f} "
                                      f"(overlap {x['over_overlap']['mean']:+.2f})")

    rows = []
    for key, s in summary.items():
        ttb = s.get("time_to_baseline", "n/a")
        reach = "-" if ttb == "n/a" else "never" if ttb is None else f"{ttb['time_s']:.0f} s ({ttb['speedup']:.2f}x less)"
        rows.append([key, g(s, "baseline"), g(s, "progressive"), g(s, "prune"), reach])
    return common.markdown_table(["method", "vs baseline curve (points)", "vs progressive resizing",
                                  "vs pruning", "time to the baseline's top-1 at E"], rows, "lllll")


def _goals_table(verdict: list[dict]) -> str:
    if not verdict:
        return "Goals: no mixing configuration with a progressive-resizing curve to compare."
    rows = [[g["goal"], "-" if g["value"] is None else f"{g['value']:+.2f}", "yes" if g["met"] else "no"]
            for g in verdict]
    return common.markdown_table(["goal (on the seeds' means)", "value", "met"], rows, "lrl")


def curve_plot(path: Path, summary: dict, val_sizes: list[int], title: str) -> Path:
    """Every method's curve (curves.plot); with --val-sizes a second panel of the same models
    at the largest val size."""
    from mixtrain_dali import curves

    plt = common._pyplot()
    panels = [None] + ([str(max(val_sizes))] if val_sizes else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(8.5 * len(panels), 5.5), squeeze=False)
    for ax, size in zip(axes[0], panels):
        lines = {}
        for key, s in summary.items():
            pts = [{"time": p["train_time_s"], "top1": p["val_top1"] if size is None else p["val_top1_at"].get(size)}
                   for p in s["budgets"].values()]
            if all(p["top1"] for p in pts):
                lines[key] = pts
        curves.plot(ax, lines, bold=MIXING)
        ax.set_title(title if size is None else f"the same models evaluated at {size} px (test resolution)",
                     fontsize=10)
    return common._save(fig, path)


def _merge(paths: list[str], base: dict, spec: dict, runs: dict, run_here: set) -> dict:
    """Fold the runs of earlier result files into `runs`: each (method, budget, seed) not run
    here, once (so one run spoilt by other work on the machine can be run again alone);
    returns their configs. Refuses a file of another recipe or dataset. A file of the same
    recipe with another E joins too: a budget's schedule ends at its own epochs, so a run
    keeps its epochs and its budget becomes epochs / E (E = 12's 12-epoch run is E = 24's
    0.5); a run longer than E is left out, with a line saying so."""
    from mixtrain_dali.errors import UserError

    E = base["train"]["epochs"]

    def but_epochs(recipe: dict) -> dict:
        return {**recipe, "train": {k: v for k, v in recipe.get("train", {}).items() if k != "epochs"}}

    here = {(k, budget_epochs(E, b), seed) for k, b, seed in run_here}  # runs match by epochs
    configs = {}
    for path in paths:
        try:
            old = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"--merge {path!r}: cannot read it as a result file ({e})") from None
        o = old.get("settings", {})
        if not isinstance(o.get("recipe"), dict) or but_epochs(o["recipe"]) != but_epochs(base) \
                or o.get("dataset", {}).get("name") != spec.get("name"):
            raise UserError(f"--merge {path!r} was run with another recipe or dataset than this run")
        longer, other_E = 0, o["recipe"]["train"].get("epochs") != E
        for key, m in old.get("methods", {}).items():
            if key not in METHODS or "runs" not in m:
                continue
            have = {(r["epochs"], r["seed"]) for r in runs.get(key, [])}
            new = []
            for r in m["runs"]:
                if r["epochs"] > E:
                    longer += 1
                    continue
                if other_E:
                    r = {**r, "budget": round(r["epochs"] / E, 6)}
                if (key, r["epochs"], r["seed"]) not in here and (r["epochs"], r["seed"]) not in have:
                    new.append(r)
                    have.add((r["epochs"], r["seed"]))
            if new:
                runs.setdefault(key, []).extend(new)
                configs[key] = {**o["configs"][key], "train": {**o["configs"][key]["train"], "epochs": E}}
        if longer:
            print(f"--merge {path}: {longer} run(s) longer than E = {E} epochs left out (a budget is at most E)")
    return configs


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
    return METHODS[key].replace("xS", f"x{speedup:g}")


def _notes(speedup: float, mix_fraction: float) -> str:
    return "\n".join([
        "Notes:",
        "- train time: the sum of the epochs' training-loop times (validation excluded). A budget b trains "
        "round(b x E) epochs with a schedule that ends there (warm-up, then cosine to zero).",
        "- vs a curve: this method's top-1 minus the other's at equal time, per seed, linear between the "
        "seed's budgets; 'at top' at the longer end of the two curves' overlap (near convergence), "
        "'overlap' averaged over it; mean ± std over the seeds. Time to the baseline's top-1 at E: where "
        "the method's mean curve first reaches it ('never' if it does not within its budgets).",
        f"- pruning: MixConfig(method='prune', schedule='flat', target_speedup={speedup:g}, selection='loss'); "
        f"prog_mix*: progressive resizing plus MixConfig(k=4, schedule='linear', fraction={mix_fraction:g}) "
        "on each epoch's canvas, unmixed over the last 12.5% of the epochs; prog_mix_loss after one "
        "warm-up epoch, with self-correction.",
    ])


if __name__ == "__main__":
    sys.exit(common.run_script(main))
