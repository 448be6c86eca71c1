"""How much does a dataset's accuracy rest on fine detail? The demo data against real photos.

Issue 13 asks why the synthetic demo data and real photos could disagree about mixing, and
suspected the synthetic set's three fine-detail class pairs (a k = 4 tile is a half-resolution
view). This measures it: the baseline recipe (mixing off) is trained once per dataset, then
val top-1 is taken on the full-resolution val images and on half- and quarter-resolution views
of them (avg-pool 2x2 or 4x4, bilinear back to the input size). The half-resolution drop is
what a tile's resolution costs a model that has not seen tiles.

Datasets: `--data NAME=DIR[:IMAGE_SIZE[:EPOCHS]]` (any ImageFolder with train/ and val/;
default 64 px, 6 epochs; at 32 px val resizes to 32, as `bench accuracy --val-resize 32`),
and three compositions of the synthetic generator's classes (1,000 train and 250 val images,
the demo's 15 epochs): the default first ten (three fine/coarse pairs), one pair left
(fine_dots and fine_checker swapped for star and zigzag), none left (also fine_stripes
swapped for waves). Checkpoints are kept in --runs-dir: a rerun only evaluates.

    python benchmarks/probes/detail_sensitivity.py --device cpu --runs-dir runs/detail \\
        --out-dir benchmarks/results/research \\
        --data imagenette=data/real/imagenette-160:64:6 --data cifar10=data/real/cifar10:32:8
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "detail_sensitivity"
SYN_DATA = {"classes": 14, "train_per_class": 100, "val_per_class": 25, "seed": 0}
QUICK_DATA = {"classes": 14, "train_per_class": 6, "val_per_class": 3, "seed": 0}  # --quick: a smoke run


def compositions() -> dict[str, list[str]]:
    from mixtrain_dali.synthetic import CLASS_NAMES

    default = list(CLASS_NAMES[:10])
    one = [c for c in default if c not in ("03_fine_dots", "08_fine_checker")] + ["10_star", "11_zigzag"]
    none = [c for c in one if c != "01_fine_stripes"] + ["13_waves"]
    return {"synthetic, default 10 (3 fine pairs)": default,
            "synthetic, 1 fine pair": one,
            "synthetic, no fine pair": none}


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_common_args(p)
    p.add_argument("--data", action="append", default=[], metavar="NAME=DIR[:SIZE[:EPOCHS]]",
                   help="a real dataset to compare (repeatable)")
    p.add_argument("--runs-dir", default="runs/detail_sensitivity",
                   help="checkpoints (kept and reused: delete the folder to retrain)")
    return p


def parse_data(spec: str) -> tuple[str, Path, int, int]:
    from mixtrain_dali.errors import UserError

    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or not name or not parts[0] or len(parts) > 3 or not all(p.isdigit() for p in parts[1:]):
        raise UserError(f"--data {spec!r}: expected NAME=DIR[:IMAGE_SIZE[:EPOCHS]], e.g. "
                        "imagenette=data/real/imagenette-160:64:6")
    root = Path(parts[0])
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise UserError(f"--data {spec!r}: {str(root)!r} needs train/ and val/ folders")
    size = int(parts[1]) if len(parts) > 1 else 64
    epochs = int(parts[2]) if len(parts) > 2 else 6
    return name, root, size, epochs


def synthetic_view(cache: Path, classes: list[str], progress: bool, quick: bool = False) -> Path:
    """A folder of links to `classes` of the 14-class synthetic set (generated once)."""
    src = common.synthetic_dataset(cache, progress=progress, **(QUICK_DATA if quick else SYN_DATA))
    root = cache / (("detail-quick-" if quick else "detail-") + "-".join(c.split("_")[0] for c in classes))
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for c in classes:
            link = root / split / c
            if not link.exists():
                link.symlink_to((src / split / c).resolve())
    return root


def measure(root: Path, size: int, epochs: int, device: str, run: Path, progress: bool,
            batch_size: int | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from mixtrain_dali.config import Config
    from mixtrain_dali.dataset import scan_image_folder
    from mixtrain_dali.demo import DEMO_MIXTRAIN
    from mixtrain_dali.loader import ValLoader
    from mixtrain_dali.nn import SoftTargetModel, adapt_model, build_model
    from mixtrain_dali.train import CHECKPOINT, train

    recipe = json.loads(json.dumps(DEMO_MIXTRAIN))
    recipe["data"].update(image_size=size, device=device)
    if size <= 32:
        recipe["data"]["val_resize"] = size
    recipe["train"]["epochs"] = epochs
    if batch_size:
        recipe["data"]["batch_size"] = batch_size
    recipe["mix"]["enabled"] = False
    cfg = Config.from_dict(recipe, source="detail_sensitivity")
    start = time.perf_counter()
    if not (run / CHECKPOINT).is_file():
        train(cfg, root, run, progress=progress, overwrite=True)
    ckpt = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=False)
    index = scan_image_folder(root / "train")
    model = build_model(cfg.train.arch, len(index.classes), size, stem=cfg.train.stem)
    model = adapt_model(model) if cfg.train.region_pooling else SoftTargetModel(model)
    model.load_state_dict(ckpt["model"])
    val = ValLoader(root / "val", 64, size, cfg.data.val_resize, device=device, threads=cfg.data.threads,
                    classes=index.classes)
    model = model.to(val.torch_device).eval()
    hits = {"full": 0, "half": 0, "quarter": 0}
    n = 0
    with torch.no_grad():
        for x, y in val:
            s = x.shape[-2:]
            views = {"full": x}
            for key, f in (("half", 2), ("quarter", 4)):
                views[key] = F.interpolate(F.avg_pool2d(x, f), size=s, mode="bilinear", align_corners=False)
            for key, v in views.items():
                hits[key] += int((model(v).argmax(-1) == y).sum())
            n += len(y)
    top1 = {k: 100 * v / n for k, v in hits.items()}
    return {"image_size": size, "epochs": epochs, "val_images": n, "top1_full": top1["full"],
            "top1_half": top1["half"], "top1_quarter": top1["quarter"],
            "drop_half": top1["full"] - top1["half"], "relative_drop_half": 1 - top1["half"] / top1["full"],
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    argv, args, device, _ = common.start(build_parser, argv, prog)
    real = [parse_data(s) for s in args.data]  # all checked before any training
    machine, when = common.machine_info(), common.now()
    progress = not args.no_progress
    cache = common.data_dir(args)
    runs = Path(args.runs_dir) / ("quick" if args.quick else "")  # never mixes the two
    jobs = [(name, root, size, epochs) for name, root, size, epochs in real]
    for name, classes in compositions().items():
        jobs.append((name, synthetic_view(cache, classes, progress, args.quick), 32 if args.quick else 64,
                     1 if args.quick else 15))
    rows = {}
    for name, root, size, epochs in jobs:
        print(f"== {name}: {root}, {size} px, {epochs} epochs", flush=True)
        slug = "".join(c if c.isalnum() else "_" for c in name)
        rows[name] = {"data": str(root), **measure(root, size, epochs, device, runs / slug, progress,
                                                   batch_size=8 if args.quick else None)}
        print(f"   {json.dumps({k: round(v, 2) for k, v in rows[name].items() if isinstance(v, float)})}",
              flush=True)
    table = common.markdown_table(
        ["dataset", "px", "epochs", "val images", "val top-1 (%)", "half-res view", "quarter-res view",
         "drop at half res (points)", "relative drop"],
        [[k, r["image_size"], r["epochs"], r["val_images"], f"{r['top1_full']:.2f}", f"{r['top1_half']:.2f}",
          f"{r['top1_quarter']:.2f}", f"{r['drop_half']:.2f}", f"{100 * r['relative_drop_half']:.0f}%"]
         for k, r in rows.items()])
    syn = [r["drop_half"] for k, r in rows.items() if k.startswith("synthetic")]
    headline = (f"half-resolution views cost the synthetic baselines {min(syn):.1f}-{max(syn):.1f} points"
                + "".join(f"; {k} {r['drop_half']:.1f}" for k, r in rows.items() if not k.startswith("synthetic")))
    md = common.header("Detail sensitivity: the demo data against real photos",
                       "the baseline recipe (small_cnn, mixing off, seed 0) trained once per dataset; val "
                       "top-1 on the full val set at full resolution and on half/quarter-resolution views "
                       "(avg-pool, bilinear back up); a k = 4 tile is a half-resolution view",
                       machine, when, f"python benchmarks/{NAME}.py {shlex.join(argv)}".strip(), headline)
    md += table + "\n\nNotes:\n" + "\n".join("- " + n for n in (
        "One seed per dataset; a synthetic val set is 250 images (standard error about 2.5 points).",
        "Checkpoints found in --runs-dir are reused (only evaluated); 'seconds' in the JSON is then the "
        "evaluation alone.",
        "The views are made from the normalised val batch: avg-pool by 2 (4), bilinear back to the input "
        "size, so the model sees the input size it was trained at with half (a quarter) of the detail.")) + "\n"
    result = {"name": NAME, "command": f"python benchmarks/{NAME}.py {shlex.join(argv)}".strip(), "date": when, "machine": machine,
              "compositions": compositions(), "rows": rows}
    common.write_results(common.out_dir(args), common.stem(NAME, device, args.quick), result, md)
    print(md)
    return result


if __name__ == "__main__":
    sys.exit(common.run_script(main))
