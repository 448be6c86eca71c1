"""Training speedup: per-epoch wall time and steps, baseline vs MixTrain at several budgets.

Same data, model, recipe and seed in one run; the only difference is `[mix]` (k=4 and a
target speedup S per run). Runs `mixtrain_dali.train.train` (validation is skipped: the
dataset view holds only train/). For every MixTrain run, on its mixing epochs (those with
mixed samples) and the baseline's same epochs:

  measured speedup = median baseline epoch time / median MixTrain epoch time
  ideal speedup    = the plan's samples per model input (plan.stats["ideal_speedup"])
  efficiency       = measured / ideal        (the goal on a GPU: >= 0.95)

With --repeats R the whole set runs R times, interleaved, and the medians over repeats are
reported. The CPU defaults are the demo's recipe and dataset; for a GPU:
`--arch resnet50 --image-size 224 --batch-size 256 --device gpu` (JPEGs of ImageNet size).
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

NAME = "train_speedup"
GOAL = 0.95  # measured / ideal on a GPU
QUICK = {"image_size": 48, "batch_size": 16, "epochs": 3}  # data: the demo's QUICK_DATA
GPU_JPEGS = 16384  # the loader benchmark's GPU default: one cached dataset for both


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--budgets", type=float, nargs="+", default=[1.3, 1.6, 2.0],
                   help="MixTrain target speedups, one run each (default 1.3 1.6 2.0)")
    p.add_argument("--k", type=int, default=4, help="constituents per composite (default 4)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default 5: 1 warm-up, 3 mixing, 1 final; 3 with --quick)")
    p.add_argument("--arch", default=None, help="model (default the demo recipe's)")
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate per 256 samples (default the demo recipe's 0.8, tuned for "
                        "small_cnn; ResNet-50 wants about 0.1)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"train crop (default the demo's 64; {QUICK['image_size']} with --quick)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"composites per step (default the demo's 32; {QUICK['batch_size']} with --quick)")
    p.add_argument("--dataset", choices=["auto", "synthetic", "jpegs"], default="auto",
                   help="synthetic: the demo's dataset; jpegs: make_benchmark_jpegs at ImageNet size "
                        "(default auto: jpegs on gpu, synthetic on cpu)")
    p.add_argument("--n-images", type=int, default=None,
                   help=f"JPEGs for --dataset jpegs (default {GPU_JPEGS} on gpu, 2048 on cpu)")
    p.add_argument("--threads", type=int, default=0, help="DALI CPU threads (default 0 = min(cores, 8))")
    p.add_argument("--repeats", type=int, default=1, help="times the whole set runs, interleaved (default 1)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (default 0)")
    p.add_argument("--runs-dir", default=None,
                   help="keep the training runs (metrics.jsonl, config.toml) here; default: a temporary "
                        "folder removed at the end")
    return p


def recipe(args, device: str) -> dict:
    """The demo's recipe with this benchmark's overrides (sizes, arch, device, threads)."""
    from mixtrain_dali.demo import DEMO_MIXTRAIN

    r = json.loads(json.dumps(DEMO_MIXTRAIN))
    q = args.quick
    r["data"].update(device=device, threads=args.threads,
                     image_size=args.image_size or (QUICK["image_size"] if q else r["data"]["image_size"]),
                     batch_size=args.batch_size or (QUICK["batch_size"] if q else r["data"]["batch_size"]))
    r["train"].update(epochs=args.epochs or (QUICK["epochs"] if q else 5), seed=args.seed)
    if args.arch:
        r["train"]["arch"] = args.arch
    if args.lr is not None:
        r["train"]["lr"] = args.lr
    # a flat budget: every mixing epoch plans the same speedup, so epochs can be compared
    # B composites a step (keep_steps off): a mixing epoch takes fewer steps, the speedup measured
    r["mix"].update(k=args.k, schedule="flat", selection="loss", keep_steps=False, warmup_epochs=1,
                    final_full_fraction=0.125)
    return r


def configs(base: dict, budgets: list[float]) -> dict:
    from mixtrain_dali.config import Config

    out = {"baseline": Config.from_dict({**base, "mix": {**base["mix"], "enabled": False}}, "baseline")}
    for s in budgets:
        out[f"mixtrain_x{s:g}"] = Config.from_dict(
            {**base, "mix": {**base["mix"], "enabled": True, "target_speedup": s}}, f"mixtrain x{s:g}")
    return out


def dataset(args, device: str) -> tuple[Path, dict]:
    cache = common.data_dir(args)
    progress = not args.no_progress
    kind = args.dataset if args.dataset != "auto" else ("jpegs" if device == "gpu" else "synthetic")
    if kind == "jpegs":
        n = args.n_images or (256 if args.quick else GPU_JPEGS if device == "gpu" else 2048)
        size = (112, 128) if args.quick else (400, 500)
        train_dir = common.benchmark_jpegs(cache, n, size, progress=progress)
        info = {"kind": "jpegs", "n": n, "size_range": list(size), "quality": 90}
    else:
        from mixtrain_dali.demo import DEMO_DATA, QUICK_DATA

        spec = QUICK_DATA if args.quick else DEMO_DATA
        train_dir = common.synthetic_dataset(cache, progress=progress, **spec) / "train"
        info = {"kind": "synthetic", **spec}
    name = train_dir.name if kind == "jpegs" else train_dir.parent.name
    view = common.train_only_view(cache / f"train-only-{name}", train_dir)
    return view, info


def compare(base_rows: list[dict], mix_rows: list[dict]) -> dict:
    """Mixing epochs of one MixTrain run against the baseline's same epochs."""
    base = {r["epoch"]: r for r in base_rows}
    mixing = [r for r in mix_rows if r["mixed_samples"] > 0 and r["epoch"] in base]
    if not mixing:
        return {"mixing_epochs": [], "measured": None, "ideal": None, "efficiency": None}
    epochs = [r["epoch"] for r in mixing]
    t_base = common.median(base[e]["epoch_time_s"] for e in epochs)
    t_mix = common.median(r["epoch_time_s"] for r in mixing)
    ideal = common.median(r["ideal_speedup"] for r in mixing)
    measured = t_base / t_mix
    return {
        "mixing_epochs": epochs, "measured": measured, "ideal": ideal, "efficiency": measured / ideal,
        "baseline_epoch_time_s": t_base, "mixtrain_epoch_time_s": t_mix,
        "baseline_steps": common.median(base[e]["steps"] for e in epochs),
        "mixtrain_steps": common.median(r["steps"] for r in mixing),
        "step_ratio": common.median(base[r["epoch"]]["steps"] / r["steps"] for r in mixing),
        "per_epoch_measured": [base[r["epoch"]]["epoch_time_s"] / r["epoch_time_s"] for r in mixing],
        "mixtrain_images_per_s": common.median(r["images_per_s"] for r in mixing),
        "baseline_images_per_s": common.median(base[e]["images_per_s"] for e in epochs),
    }


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    from mixtrain_dali.errors import UserError
    from mixtrain_dali.train import train

    argv, args, device, torch_threads = common.start(build_parser, argv, prog)
    if args.repeats < 1:
        raise UserError(f"--repeats={args.repeats} must be >= 1")
    if not args.budgets or any(b <= 1 for b in args.budgets) or len(set(args.budgets)) != len(args.budgets):
        raise UserError(f"--budgets {args.budgets}: need distinct budgets, each > 1")
    base = recipe(args, device)
    runs_cfg = configs(base, args.budgets)  # checks every value before any work
    if base["train"]["epochs"] < 3:
        raise UserError(f"--epochs={base['train']['epochs']}: need >= 3 "
                        "(a warm-up, a mixing and a final epoch)")
    out = common.out_dir(args)
    machine, when = common.machine_info(), common.now()
    command = common.command_line(NAME, argv)
    data, data_info = dataset(args, device)

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="mixtrain-speedup-"))
    rows: dict[str, list[list[dict]]] = {name: [] for name in runs_cfg}
    wall: dict[str, list[float]] = {name: [] for name in runs_cfg}
    todo = [(rep, name) for rep in range(args.repeats) for name in runs_cfg]
    try:
        for i, (rep, name) in enumerate(todo):
            cfg = runs_cfg[name]
            print(f"\n== [{i + 1}/{len(todo)}] {name} (repeat {rep + 1}/{args.repeats}): {cfg.train.arch}, "
                  f"{cfg.data.image_size} px, batch {cfg.data.batch_size}, {cfg.train.epochs} epochs, "
                  + (f"k={cfg.mix.k}, target x{cfg.mix.target_speedup:g}" if cfg.mix.enabled else "no mixing"),
                  flush=True)
            run_dir = runs_dir / f"{name}-r{rep}"
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            rows[name].append(train(cfg, data, run_dir, progress=not args.no_progress))
            wall[name].append(time.perf_counter() - t0)
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)

    comparisons = {}
    for name in runs_cfg:
        if name == "baseline":
            continue
        per_rep = [compare(b, m) for b, m in zip(rows["baseline"], rows[name])]
        ok = [c for c in per_rep if c["measured"] is not None]
        comparisons[name] = {
            "target_speedup": runs_cfg[name].mix.target_speedup,
            "measured": common.median(c["measured"] for c in ok) if ok else None,
            "ideal": common.median(c["ideal"] for c in ok) if ok else None,
            "efficiency": common.median(c["efficiency"] for c in ok) if ok else None,
            "meets_goal": (common.median(c["efficiency"] for c in ok) >= GOAL) if ok else None,
            "repeats": per_rep,
        }

    s = {"quick": args.quick, "device": device, "budgets": args.budgets, "k": args.k,
         "repeats": args.repeats, "torch_threads": torch_threads, "goal_efficiency": GOAL,
         "dataset": data_info, "recipe": base,
         "configs": {n: c.to_dict() for n, c in runs_cfg.items()}}
    result = {"benchmark": NAME, "title": "Training speedup", "date": when, "command": command,
              "argv": argv, "process_command": " ".join(sys.argv), "machine": machine, "settings": s,
              "data": str(data),
              "runs": {n: {"epochs": rows[n], "run_time_s": wall[n]} for n in runs_cfg},
              "comparisons": comparisons}
    table = _table(rows, comparisons, runs_cfg)
    t = base["train"]
    what = (f"training epoch time and steps, baseline vs MixTrain (k={args.k}) at target speedups "
            f"{', '.join(f'{b:g}' for b in args.budgets)}: {t['arch']} at {base['data']['image_size']} px, "
            f"batch {base['data']['batch_size']}, {t['epochs']} epochs, {args.repeats} repeat(s), on "
            f"{data_info['kind']} data ({_data_words(data_info)}), device {device}; measured speedup = "
            "median baseline / MixTrain epoch time over MixTrain's mixing epochs")
    effs = [c["efficiency"] for c in comparisons.values() if c["efficiency"] is not None]
    summary = ("measured / ideal speedup: " + ", ".join(
        f"x{c['target_speedup']:g}: {c['efficiency']:.2f}" for c in comparisons.values()
        if c["efficiency"] is not None) + f" (goal on GPU >= {GOAL})") if effs else "no mixing epochs"
    md = common.header(f"Training speedup, {device.upper()}" + (" (quick)" if args.quick else ""),
                       what, machine, when, command, result=summary)
    md += table + "\n\n" + _notes(base) + "\n"
    stem = common.stem(NAME, device, args.quick)
    paths = common.write_results(out, stem, result, md)
    names = list(comparisons)
    common.speedup_plot(
        out / f"{stem}.png", [f"x{comparisons[n]['target_speedup']:g}" for n in names],
        [comparisons[n]["ideal"] or 1.0 for n in names], [comparisons[n]["measured"] or 1.0 for n in names],
        {n: [r["epoch_time_s"] for r in rows[n][0]] for n in runs_cfg},
        f"MixTrain training speedup on {device}: {t['arch']}, {base['data']['image_size']} px, "
        f"batch {base['data']['batch_size']}", goal=GOAL)
    print(f"\nwrote {paths['json']}, {paths['md']}, {out / (stem + '.png')}")
    print(f"\n{table}")
    return result


def _data_words(info: dict) -> str:
    if info["kind"] == "jpegs":
        return f"{info['n']} JPEGs of {info['size_range'][0]}-{info['size_range'][1]} px"
    return f"{info['classes']} classes x {info['train_per_class']} train images"


def _table(rows: dict, comparisons: dict, runs_cfg: dict) -> str:
    out = []
    base_c = next(iter(comparisons.values()), None)
    b0 = rows["baseline"][0]
    out.append(["baseline", "-", "1.00", "1.00", "-",
                f"{common.median(r['steps'] for r in b0):.0f}",
                common.fmt(base_c and base_c["repeats"][0].get("baseline_epoch_time_s"), 2),
                common.fmt(base_c and base_c["repeats"][0].get("baseline_images_per_s"), 0), "-"])
    for name, c in comparisons.items():
        r0 = c["repeats"][0]
        out.append([name, f"{c['target_speedup']:g}", common.fmt(c["ideal"], 3), common.fmt(c["measured"], 3),
                    common.fmt(c["efficiency"], 3),
                    common.fmt(r0.get("mixtrain_steps"), 0), common.fmt(r0.get("mixtrain_epoch_time_s"), 2),
                    common.fmt(r0.get("mixtrain_images_per_s"), 0),
                    ",".join(str(e) for e in r0["mixing_epochs"]) or "-"])
    return common.markdown_table(
        ["run", "target S", "ideal S (plan)", "measured S", "measured / ideal", "steps / epoch",
         "s / epoch", "images/s", "mixing epochs"], out)


def _notes(base: dict) -> str:
    m = base["mix"]
    return "\n".join([
        "Notes:",
        "- steps, s / epoch and images/s: medians over the mixing epochs (the baseline over the same "
        "epochs); the first repeat is shown, the speedups are medians over repeats.",
        f"- MixTrain: MixConfig(enabled=True, k={m['k']}, target_speedup=S, "
        f"warmup_epochs={m['warmup_epochs']}, final_full_fraction={m['final_full_fraction']}, "
        "schedule='flat', selection='loss', keep_steps=False), the package's other defaults "
        "(equal shares, constituents isolated, since this session); a budget the candidates cannot "
        "fill gives a lower ideal speedup, reported as such.",
        "- Epoch time is the training loop only (validation is not run); it includes the loader's "
        "per-epoch work (planning, resetting its DALI pipeline).",
    ])


if __name__ == "__main__":
    sys.exit(common.run_script(main))
