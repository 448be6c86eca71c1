"""`mixtrain` command line. A user's mistake prints one line and exits 2, no traceback."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from .errors import UserError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows every default: argparse's "(default: X)" where the default is a value;
    a help text that already says its default (one from the recipe) is left as it is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.nargs == 0 or action.required or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # one line, exit 2 (argparse prints usage + message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _recipe(section: str, key: str, value: str | None = None) -> str:
    """'default: the recipe's, else X': a flag left out takes the --config recipe's value, or
    the package default X (the config dataclass's, unless `value` words it)."""
    from . import config

    cls = {"data": config.DataConfig, "train": config.TrainConfig, "mix": config.MixConfig}[section]
    if value is None:
        value = str({f.name: f.default for f in dataclasses.fields(cls)}[key])
    return f"default: the recipe's, else {value}"


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset root with train/ and val/ (ImageFolder layout)")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML recipe (see pipelines/); flags override it (default: none, "
                                    "the package defaults)")
    p.add_argument("--arch", help="torchvision model name, e.g. resnet18, resnet50, mobilenet_v2, vit_b_16, "
                                  "or timm/<name> for a timm model, e.g. timm/resnet50, timm/convnext_tiny "
                                  "(needs the timm extra); " + _recipe("train", "arch"))
    p.add_argument("--epochs", type=int, help=_recipe("train", "epochs"))
    p.add_argument("--batch-size", type=int, help="composites per step and rank; " + _recipe("data", "batch_size"))
    p.add_argument("--lr", type=float, help="learning rate for batch 256 (scaled with the global batch); "
                                            + _recipe("train", "lr"))
    p.add_argument("--image-size", type=int, help="train crop; val resize and crop scale with it; "
                                                  + _recipe("data", "image_size"))
    p.add_argument("--seed", type=int, help=_recipe("train", "seed"))
    p.add_argument("--device", choices=["auto", "cpu", "gpu"],
                   help="auto: gpu if CUDA is available; " + _recipe("data", "device"))
    p.add_argument("--threads", type=int, help="DALI CPU threads; " + _recipe("data", "threads", "0 = min(cores, 8)"))
    p.add_argument("--out", help="run directory (metrics.jsonl, config.toml, checkpoint.pt); "
                                 + _recipe("train", "out") + ", shared by every such run: a second run "
                                 "into a folder that holds one is refused without --resume or --overwrite")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/checkpoint.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="OUT holds an earlier run: delete its files (checkpoint, metrics, config, "
                            "bad-file list) and start over")
    p.add_argument("--no-file-check", action="store_true",
                   help="skip the up-front check of every image file (header and end marker; "
                        "remembered between runs in a manifest, so only new or changed files are "
                        "checked again): for data known to be good; a bad file is still caught mid-epoch")
    a = p.add_argument_group("augmentation (per image in the DALI graph; mixup/cutmix per batch in torch)")
    a.add_argument("--auto-augment", choices=["none", "autoaugment", "randaugment", "trivialaugment"],
                   help="DALI auto_aug policy (autoaugment: the ImageNet policy; trivialaugment: wide); "
                        + _recipe("data", "auto_augment"))
    a.add_argument("--rand-n", type=int, help="randaugment: operations per image; " + _recipe("data", "rand_n"))
    a.add_argument("--rand-m", type=int, help="randaugment: magnitude bin, 0..magnitude_bins-1 (torchvision's "
                                              "m; timm's rand-mX is bin 3X of 31); " + _recipe("data", "rand_m"))
    a.add_argument("--color-jitter", type=float, nargs="+", metavar="X",
                   help="B C S H (brightness, contrast, saturation, hue, torchvision's ranges), or one value "
                        "for B = C = S (timm's --color-jitter); " + _recipe("data", "color_jitter", "0 0 0 0"))
    a.add_argument("--erase-prob", type=float, help="random erasing probability per image (timm's --reprob); "
                                                    + _recipe("data", "erase_prob"))
    a.add_argument("--mixup", type=float, metavar="ALPHA",
                   help="mixup Beta(alpha, alpha), 0 = off; not with --mix-k > 1; " + _recipe("data", "mixup_alpha"))
    a.add_argument("--cutmix", type=float, metavar="ALPHA",
                   help="cutmix Beta(alpha, alpha), 0 = off; not with --mix-k > 1; " + _recipe("data", "cutmix_alpha"))
    a.add_argument("--mixup-prob", type=float, help="probability a batch is mixed; " + _recipe("data", "mixup_prob"))
    a.add_argument("--mixup-switch-prob", type=float, help="with both on: probability of cutmix; "
                                                           + _recipe("data", "mixup_switch_prob"))
    a.add_argument("--crop-pct", type=float, help="val: resize the shorter side to image_size / crop_pct, centre "
                                                  "crop (timm); " + _recipe("data", "crop_pct",
                                                                            "none: 256/224 (0.875)"))
    r = p.add_argument_group("resolution and pruning (each one flag, as FFCV's users set resolution)")
    r.add_argument("--min-image-size", type=int, metavar="PX",
                   help="progressive resizing: the train crop starts at PX and grows to --image-size "
                        "over --resize-ramp (PX = --image-size: off); " + _recipe("data", "min_image_size", "off"))
    r.add_argument("--resize-ramp", type=float, nargs=2, metavar=("START", "END"),
                   help="progressive resizing grows between these fractions of the epochs; "
                        + _recipe("data", "resize_ramp", "0 0.75"))
    r.add_argument("--val-size", type=int, metavar="PX",
                   help="val centre crop, the test resolution (above the train crop: FixRes, timm's "
                        "test_input_size); " + _recipe("data", "val_size", "the train crop"))
    r.add_argument("--val-interval", type=int, metavar="N",
                   help="validate every N epochs and after the last; 0 = the last only; "
                        + _recipe("train", "val_interval"))
    r.add_argument("--prune", type=float, metavar="S",
                   help="InfoBatch-style pruning instead of mixing: a random part of the below-mean-loss "
                        "samples skipped each epoch for an ideal epoch speedup S, the kept ones' loss "
                        "rescaled; " + _recipe("mix", "method", "off"))
    g = p.add_argument_group("mixing (MixTrain)")
    g.add_argument("--mix-k", type=int, help="constituents per composite, 2..4 (turns mixing on); 1 = off; "
                                             + _recipe("mix", "k", "off"))
    g.add_argument("--mix-fraction", type=float,
                   help="fraction of samples mixed per mixing epoch; "
                        + _recipe("mix", "fraction", "neither this nor --mix-speedup: fraction 1 "
                                                     "decaying (linear schedule), x1.6 (flat)"))
    g.add_argument("--mix-speedup", type=float,
                   help="target ideal epoch speedup instead of a fraction (linear schedule: the mean "
                        "over the mixing epochs); " + _recipe("mix", "target_speedup", "none (see --mix-fraction)"))
    g.add_argument("--mix-selection", choices=["random", "loss"],
                   help="random: any sample; loss: at random among the below-threshold samples; "
                        + _recipe("mix", "selection"))
    g.add_argument("--mix-gamma", type=float, help="area share ~ (loss + eps)^gamma; 0 = equal; "
                                                   + _recipe("mix", "gamma"))
    g.add_argument("--mix-warmup", type=int, help="unmixed epochs at the start; "
                   + _recipe("mix", "warmup_epochs", "0 under the resize schedule, 1 otherwise"))
    g.add_argument("--mix-schedule", choices=["linear", "flat", "resize"],
                   help="linear: the fraction decaying to 0; flat: the same fraction every mixing "
                        "epoch; resize: each epoch at progressive resizing's cost, the mixed share "
                        "decaying to 0; " + _recipe("mix", "schedule", "resize (linear where "
                                                    "--mix-fraction or --mix-speedup is given)"))
    g.add_argument("--mix-keep-steps", action=argparse.BooleanOptionalAction, default=None,
                   help="mixing epochs keep the unmixed step count (fewer composites per step); "
                        + _recipe("mix", "keep_steps", "on"))
    g.add_argument("--mix-isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="run each constituent through the network apart (tiles cut out of the "
                        "composite; region-pooling CNNs); " + _recipe("mix", "isolate", "on"))
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from_args(args):
    from .config import load_config

    mix = {"k": args.mix_k, "fraction": args.mix_fraction, "target_speedup": args.mix_speedup,
           "selection": args.mix_selection, "gamma": args.mix_gamma, "warmup_epochs": args.mix_warmup,
           "schedule": args.mix_schedule, "isolate": args.mix_isolate, "keep_steps": args.mix_keep_steps}
    if args.mix_k is not None:
        mix["enabled"] = args.mix_k > 1
    if args.prune is not None:
        if args.mix_k is not None and args.mix_k > 1:
            raise UserError(f"--prune {args.prune:g} and --mix-k {args.mix_k} are alternatives: pruning "
                            "skips samples, mixing tiles them; give one of them")
        if args.mix_speedup is not None:
            raise UserError("--prune S sets the speedup itself: drop --mix-speedup")
        mix.update(enabled=True, method="prune", target_speedup=args.prune)
    jitter = args.color_jitter
    if jitter is not None and len(jitter) not in (1, 4):
        raise UserError(f"--color-jitter takes 1 value (brightness = contrast = saturation) or 4 "
                        f"(B C S H), got {len(jitter)}")
    if jitter is not None and len(jitter) == 1:
        jitter = [jitter[0]] * 3 + [0.0]
    overrides = {
        "data": {"batch_size": args.batch_size, "image_size": args.image_size, "device": args.device,
                 "threads": args.threads, "auto_augment": args.auto_augment, "rand_n": args.rand_n,
                 "rand_m": args.rand_m, "color_jitter": jitter, "erase_prob": args.erase_prob,
                 "mixup_alpha": args.mixup, "cutmix_alpha": args.cutmix, "mixup_prob": args.mixup_prob,
                 "mixup_switch_prob": args.mixup_switch_prob, "crop_pct": args.crop_pct,
                 "min_image_size": args.min_image_size, "val_size": args.val_size,
                 "resize_ramp": args.resize_ramp},
        "train": {"arch": args.arch, "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "out": args.out,
                  "val_interval": args.val_interval},
        "mix": mix,
    }
    config = load_config(args.config, overrides)
    given = [f"--mix-{k.replace('_', '-')}" for k in ("fraction", "speedup", "selection", "gamma", "warmup",
                                                       "schedule", "isolate", "keep_steps")
             if getattr(args, f"mix_{k}") is not None]
    if given and not config.mix.enabled:
        print(f"mixtrain: warning: {', '.join(given)} has no effect: mixing is off "
              "(add --mix-k 2..4, or enabled = true in the recipe's [mix])", file=sys.stderr)
    return config


def cmd_train(args) -> int:
    from .train import train

    config = _config_from_args(args)
    train(config, args.data, config.train.out, resume=args.resume, progress=not args.no_progress,
          overwrite=args.overwrite, check_files=not args.no_file_check)
    return 0


def cmd_make_synthetic(args) -> int:
    from .synthetic import make_synthetic

    root = make_synthetic(args.dir, classes=args.classes, train_per_class=args.train_per_class,
                          val_per_class=args.val_per_class, seed=args.seed)
    print(f"wrote {root}/train and {root}/val")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(data=args.data, out=args.out, epochs=args.epochs, quick=args.quick,
             progress=not args.no_progress, image_size=args.image_size, device=args.device)
    return 0


def cmd_preview(args) -> int:
    from .preview import preview

    out = preview(args.data, args.out, k=args.k, fraction=args.fraction, batch_size=args.batch_size,
                  image_size=args.image_size, seed=args.seed, device=args.device)
    print(f"wrote {out}")
    return 0


def cmd_plot(args) -> int:
    from .report import plot_runs, read_run

    runs = {Path(d).name: read_run(d) for d in args.run_dirs}
    out = args.out or str(Path(args.run_dirs[0]) / "curves.png")
    print(f"wrote {plot_runs(runs, out)}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_benchmark

    run_benchmark(args.benchmark, args.args)
    return 0


def cmd_check_data(args) -> int:
    from .check_data import check_data, format_report, write_json

    report = check_data(args.dir, workers=args.workers, quick=args.quick, progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 1 if report["bad_files"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixtrain", description="DALI ImageFolder loader with MixTrain input mixing")
    parser.add_argument("-v", "--verbose", action="store_true", help="log INFO messages too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a torchvision or timm model on an ImageFolder dataset")
    _add_data_flags(p)
    _add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("make-synthetic", help="write the embedded synthetic ImageFolder dataset")
    p.add_argument("dir", help="where DIR/train and DIR/val are written")
    p.add_argument("--classes", type=int, default=10, help="number of classes")
    p.add_argument("--train-per-class", type=int, default=100, help="train images per class")
    p.add_argument("--val-per-class", type=int, default=25, help="val images per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("demo", help="baseline, MixTrain and training less for MixTrain's time, side by side")
    p.add_argument("--data", default=None,
                   help="an ImageFolder root with train/ and val/ (default: the embedded synthetic "
                        "dataset, written to data/synthetic once)")
    p.add_argument("--image-size", type=int, default=None, help="train crop (default: the demo recipe's 64)")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=None,
                   help="auto: gpu if CUDA is available (default: auto)")
    p.add_argument("--out", default="runs/demo", help="folder of the three runs, table and plot (each run "
                                                      "in it starts fresh)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of each run (default: the demo recipe's 15; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo (for tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("preview", help="save one mixed batch as a labelled PNG grid")
    p.add_argument("--data", required=True,
                   help="a dataset root with train/ (its train/ is shown) or one ImageFolder split "
                        "(a folder of class folders)")
    p.add_argument("--out", default="preview.png", help="PNG path")
    p.add_argument("--k", type=int, default=4, help="constituents per composite, 2..4")
    p.add_argument("--fraction", type=float, default=0.75, help="fraction of the samples mixed")
    p.add_argument("--batch-size", type=int, default=16, help="composites shown")
    p.add_argument("--image-size", type=int, default=224, help="canvas side in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the plan and the stand-in losses")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="DALI's device; auto: gpu if CUDA is available")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("plot", help="draw a run's curves (accuracy, loss, speedup) to PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("bench", help="run a benchmark of the checkout's benchmarks/ (JSON, table, plots)")
    p.add_argument("benchmark", choices=["loader", "speedup", "accuracy", "plan", "demo", "startup"],
                   help="loader: throughput vs torchvision/DALI; speedup: epoch time vs ideal; "
                        "accuracy: top-1 at equal budget; plan: the controller's planning time; "
                        "demo: `mixtrain demo`, recorded; startup: start-up time and memory at "
                        "ImageNet scale vs torchvision")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="the benchmark's flags, e.g. --quick --out-dir DIR --device gpu "
                        "(mixtrain bench NAME --help lists them)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check-data", help="check every image of a dataset as the loaders read it; "
                                          "exit 1 if any is bad")
    p.add_argument("dir", help="dataset root with train/ (and val/), or one ImageFolder split")
    p.add_argument("--workers", type=int, help="processes (default: CPU cores, at most 16)")
    p.add_argument("--quick", action="store_true", help="header checks only, no DALI decode")
    p.add_argument("--json", metavar="FILE", help="also save the report as JSON (default: no JSON)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_check_data)
    return parser


class _LogFormatter(logging.Formatter):
    """The package's logged warnings read like the CLI's own: `mixtrain: warning: ...`, one
    line; -v's INFO lines keep their logger's name."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not record.exc_info:
            return f"mixtrain: {record.levelname.lower()}: {record.getMessage()}"
        return super().format(record)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        return args.func(args)
    except UserError as e:
        print(f"mixtrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixtrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
