"""`mixtrain train` end to end on the CPU path, resume, and the CLI's one-line errors."""

import json
import subprocess
import sys
import tomllib

import pytest

from conftest import read_metrics, write_colour_folder
from mixtrain_dali.cli import main
from mixtrain_dali.config import Config, load_config

FAST = ["--arch", "resnet18", "--image-size", "32", "--threads", "1", "--no-progress", "--device", "cpu"]


def test_train_writes_metrics_config_and_checkpoint(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(small_data), "--epochs", "2", "--batch-size", "16",
               "--out", str(out), *FAST])
    assert rc == 0
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_top1", "val_top5", "epoch_time_s", "images_per_s", "steps",
                "composites", "samples", "ideal_speedup", "plan"):
        assert key in rows[0]
    assert rows[0]["samples"] == 96 and rows[0]["steps"] == 6
    saved = load_config(out / "config.toml")
    assert saved.train.epochs == 2 and saved.data.batch_size == 16 and saved.data.image_size == 32
    assert tomllib.loads((out / "config.toml").read_text())["train"]["arch"] == "resnet18"
    assert (out / "checkpoint.pt").is_file()
    assert "epoch 2 |" in capsys.readouterr().out


def test_resume_continues_exactly_like_an_uninterrupted_run(small_data, tmp_path):
    args = ["--data", str(small_data), "--batch-size", "16", "--mix-k", "2", "--mix-fraction", "0.5", *FAST]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", "--epochs", "4", "--out", str(full), *args]) == 0
    # the same run interrupted after epoch 2, then resumed
    _train_epochs_then_stop(load_config(full / "config.toml"), small_data, part, stop_after=2)
    assert len(read_metrics(part)) == 2
    assert main(["train", "--epochs", "4", "--out", str(part), "--resume", *args]) == 0
    a, b = read_metrics(full), read_metrics(part)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4], "metrics lines duplicated or lost"
    for ra, rb in zip(a, b):
        assert ra["plan"] == rb["plan"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5, abs=1e-6)
        assert ra["val_top1"] == rb["val_top1"]


def _train_epochs_then_stop(config, data, out, stop_after):
    """Run the real loop but stop after `stop_after` epochs, as a kill between epochs would."""
    import mixtrain_dali.train as t

    real = t._train_epoch
    calls = {"n": 0}

    def limited(*a, **k):
        if calls["n"] == stop_after:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    t._train_epoch = limited
    try:
        with pytest.raises(KeyboardInterrupt):
            t.train(config, data, out, progress=False)
    finally:
        t._train_epoch = real


def test_fixed_mixing_takes_one_over_1_6_of_the_steps(small_data, tmp_path):
    base, mixed = tmp_path / "base", tmp_path / "mixed"
    common = ["--data", str(small_data), "--epochs", "3", "--batch-size", "4", *FAST]
    assert main(["train", "--out", str(base), *common]) == 0
    assert main(["train", "--out", str(mixed), *common, "--mix-k", "4", "--mix-fraction", "0.5",
                 "--mix-selection", "random", "--mix-gamma", "0", "--no-mix-keep-steps"]) == 0
    b, m = read_metrics(base), read_metrics(mixed)
    assert [r["steps"] for r in b] == [24, 24, 24]
    # epoch 1 warm-up (unmixed), epoch 2 mixes, epoch 3 is the final unmixed 12.5%
    assert [r["mixed_samples"] for r in m] == [0, 48, 0]
    assert m[1]["composites"] == 60 and m[1]["samples"] == 96
    assert m[1]["ideal_speedup"] == pytest.approx(1.6)
    assert m[1]["steps"] == 15 == b[1]["steps"] / 1.6


BAD_INPUTS = [
    (["--data", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--mix-k", "5"], "k=5 is outside 1..4"),
    (["--mix-k", "4", "--mix-fraction", "1.5"], "fraction=1.5 is outside [0, 1]"),
    (["--mix-k", "2", "--mix-speedup", "3"], "cannot be reached with k=2"),
    (["--batch-size", "0"], "batch_size=0 must be >= 1"),
    (["--arch", "resnet19"], "resnet19"),
    (["--resume"], "no checkpoint"),
    (["--prune", "1.6", "--mix-k", "4"], "--prune 1.6 and --mix-k 4 are alternatives"),
    (["--min-image-size", "8"], "min_image_size=8 must be in [16, image_size=32]"),
    (["--min-image-size", "16", "--mix-k", "4"], "give mix fraction"),
    (["--val-size", "8"], "val_size=8 is too small"),
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gives_one_line_and_exit_2(extra, message, small_data, tmp_path, capsys):
    args = ["train", "--data", str(small_data), "--epochs", "1", "--out", str(tmp_path / "r"), *FAST]
    if extra[0] == "--data":
        args[2] = extra[1]
        extra = []
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("body,message", [
    ("[train]\nepocs = 3\n", "unknown key 'epocs'"),
    ("[train]\nepochs = 'three'\n", "epochs = 'three' has the wrong type"),
    ("[mixing]\nk = 2\n", "unknown section [mixing]"),
    ("[train\n", "not valid TOML"),
])
def test_bad_config_file_gives_one_line_and_exit_2(body, message, small_data, tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    assert main(["train", "--data", str(small_data), "--config", str(cfg), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_resume_refuses_a_checkpoint_from_another_dataset(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_data), "--epochs", "1", "--batch-size", "16",
                 "--out", str(out), *FAST]) == 0
    other = tmp_path / "other"
    write_colour_folder(str(other / "train"), classes=("x", "y"), per_class=8)
    assert main(["train", "--data", str(other), "--epochs", "2", "--resume", "--out", str(out), *FAST]) == 2
    assert "another dataset" in capsys.readouterr().err


def test_cli_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mixtrain_dali.cli", "train", "--data",
                           str(tmp_path / "missing"), "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "mixtrain_dali.cli", "train", "--epochs", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_preview_and_plot_write_pngs(small_data, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "preview.png"
    assert main(["preview", "--data", str(small_data / "train"), "--out", str(png), "--image-size", "64",
                 "--batch-size", "4", "--device", "cpu"]) == 0
    assert Image.open(png).size[0] > 200
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_data), "--epochs", "1", "--batch-size", "16",
                 "--out", str(run), *FAST]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.png")]) == 0
    assert Image.open(tmp_path / "curves.png").size[0] > 200
    assert main(["plot", str(tmp_path / "not-a-run")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_mixing_that_mixes_no_epoch_is_said_at_start_up():
    from mixtrain_dali.config import Config, load_config
    from mixtrain_dali.train import start_warnings

    few = load_config(None, {"mix": {"enabled": True, "k": 4, "target_speedup": 1.6}, "train": {"epochs": 2}})
    (message,) = start_warnings(few)
    assert "no epoch mixes" in message and "2 epoch(s)" in message
    enough = load_config(None, {"mix": {"enabled": True, "k": 4, "target_speedup": 1.6}, "train": {"epochs": 8}})
    assert start_warnings(enough) == []


def test_mix_flags_without_mix_k_are_said_to_do_nothing(capsys):
    from mixtrain_dali.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--data", "x", "--mix-speedup", "1.6"])
    assert not _config_from_args(args).mix.enabled
    assert "--mix-speedup has no effect: mixing is off" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_shows_each_methods_curve_against_training_time(tmp_path, capsys):
    """`mixtrain demo --quick --data DIR`: baseline, progressive resizing and MixTrain, each at
    E/2 and E epochs; the tables give each method's gain over the others at equal time and its
    time to the full baseline's accuracy, and the plot draws the curves."""
    from mixtrain_dali.demo import QUICK_DATA
    from mixtrain_dali.synthetic import make_synthetic

    data = make_synthetic(str(tmp_path / "data"), **QUICK_DATA)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--data", str(data), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("baseline", "progressive", "mixtrain"):
        assert summary[name]["0.5E"]["epochs"] == 2 and summary[name]["1E"]["epochs"] == 3
        assert set(summary["compare"][name]) >= {"time_to_baseline_s"}
    assert summary["compare"]["baseline"]["time_to_baseline_s"] <= summary["baseline"]["1E"]["wall_time_s"]
    # the gain at equal time is the curves' (None where the two curves do not overlap in time,
    # which on a quick run depends on the machine's speed)
    from mixtrain_dali import curves

    def pts(name):
        return [{"seed": 0, "train_time_s": b["wall_time_s"], "val_top1": b["val_top1"]}
                for b in summary[name].values()]
    assert summary["compare"]["mixtrain"]["baseline"] == curves.gain(pts("mixtrain"), pts("baseline"))
    table = (out / "summary.md").read_text()
    assert "| mixtrain | 1E | 3 |" in table and "vs progressive resizing" in table
    assert (out / "demo.png").stat().st_size > 0
    assert main(["demo", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "has no train/ folder" in capsys.readouterr().err


def test_train_with_constituents_apart_mixes_and_learns(small_data, tmp_path):
    out = tmp_path / "apart"
    assert main(["train", "--data", str(small_data), "--epochs", "3", "--batch-size", "16",
                 "--out", str(out), "--mix-k", "4", "--mix-fraction", "1.0", "--mix-gamma", "0",
                 "--mix-isolate", "--no-mix-keep-steps", *FAST]) == 0
    rows = read_metrics(out)
    assert load_config(out / "config.toml").mix.isolate
    assert rows[1]["mixed_samples"] > 0 and rows[1]["steps"] < rows[0]["steps"]
    assert all(r["train_loss"] == r["train_loss"] for r in rows)  # finite, not NaN


def test_mixing_on_progressive_resizing_trains_on_each_epochs_canvas(small_data, tmp_path):
    """--min-image-size with --mix-k and a fraction, end to end: the canvas grows with the
    ramp, mixing epochs tile that canvas (fewer composites than samples, steps kept), and
    every epoch validates at --val-size."""
    out = tmp_path / "prog_mix"
    assert main(["train", "--data", str(small_data), "--epochs", "4", "--batch-size", "16",
                 "--image-size", "64", "--min-image-size", "32", "--mix-k", "4", "--mix-fraction", "0.5",
                 "--val-size", "72", "--out", str(out),
                 *[a for a in FAST if a not in ("--image-size", "32")]]) == 0
    rows = read_metrics(out)
    config = load_config(out / "config.toml")
    assert (config.data.min_image_size, config.data.val_size, config.mix.schedule) == (32, 72, "linear")
    assert [r["image_size"] for r in rows] == [config.data.image_size_at(e, 4) for e in range(4)]
    assert rows[0]["image_size"] == 32 and rows[-1]["image_size"] == 64
    # epoch 1 is the warm-up (a budget of its own: the linear schedule's defaults), the last unmixed
    assert rows[0]["mixed_samples"] == rows[-1]["mixed_samples"] == 0
    assert rows[1]["mixed_samples"] > 0 and rows[1]["composites"] < rows[1]["samples"]
    assert len({r["steps"] for r in rows}) == 1  # keep_steps: the unmixed step count
    assert all(r["train_loss"] == r["train_loss"] and "val_top1" in r for r in rows)


def test_prune_flag_and_val_interval(small_data, tmp_path):
    out = tmp_path / "prune"
    assert main(["train", "--data", str(small_data), "--epochs", "3", "--batch-size", "16", "--prune", "1.6",
                 "--val-interval", "0", "--out", str(out), *FAST]) == 0
    config = load_config(out / "config.toml")
    assert (config.mix.method, config.mix.target_speedup, config.mix.enabled) == ("prune", 1.6, True)
    rows = read_metrics(out)
    assert ["val_top1" in r for r in rows] == [False, False, True]  # the last epoch only
    assert rows[1]["samples"] < rows[0]["samples"]  # a pruning epoch skips samples


def test_isolate_with_a_model_without_region_pooling_says_so_and_trains(small_data, tmp_path, capsys):
    from mixtrain_dali.train import train

    config = Config.from_dict({"data": {"image_size": 32, "batch_size": 16, "threads": 1, "device": "cpu"},
                               "train": {"arch": "resnet18", "epochs": 2, "region_pooling": False},
                               "mix": {"enabled": True, "k": 4, "fraction": 1.0, "warmup_epochs": 1,
                                       "final_full_fraction": 0.0}})
    assert config.mix.isolate  # the default
    rows = train(config, small_data, tmp_path / "soft", progress=False)
    err = capsys.readouterr().err
    assert err.count("mix isolate") == 1 and "region_pooling is off" in err
    assert rows[1]["mixed_samples"] > 0


def test_a_second_run_into_the_same_out_is_refused_unless_resume_or_overwrite(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--epochs", "1", "--batch-size", "16", "--out", str(out), *FAST]
    assert main(args) == 0
    metrics, ckpt = (out / "metrics.jsonl").read_text(), (out / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out) in err and "--resume" in err and "--overwrite" in err, err
    assert (out / "metrics.jsonl").read_text() == metrics, "the earlier run's metrics were touched"
    assert (out / "checkpoint.pt").stat().st_mtime_ns == ckpt, "the earlier run's checkpoint was replaced"
    with pytest.raises(SystemExit) as both:  # argparse: the two flags exclude each other
        main(args + ["--resume", "--overwrite"])
    assert both.value.code == 2 and "not allowed with" in capsys.readouterr().err
    (out / "bad_files.txt").write_text("/gone.JPEG\tan earlier run's bad file\n")
    (out / "notes.txt").write_text("the user's own file")
    assert main(args + ["--overwrite"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == [1]
    assert not (out / "bad_files.txt").exists() and (out / "notes.txt").is_file()


@pytest.mark.parametrize("where", ["root", "split"])
def test_preview_takes_a_dataset_root_or_one_split(where, small_data, tmp_path, monkeypatch):
    import mixtrain_dali.preview as pv

    made = []

    class Spy(pv.TrainLoader):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(pv, "TrainLoader", Spy)
    data = small_data if where == "root" else small_data / "train"
    png = tmp_path / "p.png"
    assert main(["preview", "--data", str(data), "--out", str(png), "--image-size", "64",
                 "--batch-size", "4", "--device", "cpu"]) == 0
    (loader,) = made
    # train/ and val/ are not two classes: the train split's 3 classes, none of val's images
    assert loader.classes == ["ant", "bee", "cat"] and loader.num_samples == 96
    assert png.stat().st_size > 1000


def test_resume_with_another_arch_names_both_and_a_finished_run_says_so(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--epochs", "1", "--batch-size", "16", "--out", str(out), *FAST]
    assert main(args) == 0
    metrics = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--resume", "--arch", "mobilenet_v2"]) == 2  # a later --arch wins
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'resnet18'" in err and "'mobilenet_v2'" in err, err
    assert "Traceback" not in err and "state_dict" not in err
    assert main([*args, "--resume"]) == 0
    said = capsys.readouterr()
    (line,) = said.out.strip().splitlines()
    assert "already finished 1 epoch" in line and "--epochs" in line, line
    assert said.err == "" and (out / "metrics.jsonl").read_text() == metrics


def test_data_without_val_is_said_once_at_start_up(tmp_path, capsys):
    data = tmp_path / "data"
    write_colour_folder(str(data / "train"), per_class=8)
    assert main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "8",
                 "--out", str(tmp_path / "run"), *FAST]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "val/" in line]
    assert len(warned) == 1 and warned[0].startswith("mixtrain: warning: ") and "without validation" in warned[0]
    assert "val_top1" not in read_metrics(tmp_path / "run")[0]


def test_start_up_summary_says_device_model_data_steps_and_mixing(small_data, tmp_path, capsys):
    recipe = {"data": {"batch_size": 16, "image_size": 32, "threads": 1, "device": "cpu"}, "train": {"epochs": 3}}
    mixing = load_config(None, {**recipe, "mix": {"enabled": True, "k": 2, "fraction": 0.5, "schedule": "flat"}})
    _train_epochs_then_stop(mixing, small_data, tmp_path / "mix", stop_after=0)  # the summary, no epoch
    head, data, files, steps, mix = capsys.readouterr().out.strip().splitlines()
    assert "resnet18" in head and "CPU" in head and "3 epochs" in head, head
    assert "96 images in 3 classes" in data and "val: 12 images" in data, data
    assert files.startswith("  files:") and ".mixtrain-manifest.npz" in files, files  # shared data: either
    assert "6 in epoch 1" in steps and "batch 16" in steps, steps
    assert "k=2" in mix and "flat" in mix and "fraction 0.5" in mix and "epoch 2 of 3 mix" in mix, mix
    no_val = tmp_path / "no_val"
    write_colour_folder(str(no_val / "train"), per_class=8)
    _train_epochs_then_stop(load_config(None, recipe), no_val, tmp_path / "plain", stop_after=0)
    out = capsys.readouterr().out
    assert "24 images in 3 classes" in out and "val: none (no val/)" in out and "mixing: off" in out, out
    assert "files:  24 files checked; verdicts kept in" in out, out  # a new folder: every file read
    assert "; crop windows finished on the host (image sizes from the check)" in out, out
    _train_epochs_then_stop(load_config(None, recipe), no_val, tmp_path / "plain2", stop_after=0)
    assert "none read: the manifest" in capsys.readouterr().out  # the second start reads no file


@pytest.mark.parametrize("command", ["train", "make-synthetic", "demo", "preview", "plot", "check-data"])
def test_help_shows_every_options_default(command, capsys):
    """Every option that takes a value says its default in --help (flags and required ones
    aside); an option that defaults to the recipe's value says so and what it is without one."""
    import argparse
    import re

    from mixtrain_dali.cli import build_parser

    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with pytest.raises(SystemExit):
        main([command, "--help"])
    entries = re.split(r"\n(?=  -)", capsys.readouterr().out)
    checked = 0
    for action in subs.choices[command]._actions:
        if not action.option_strings or action.nargs == 0 or action.required:
            continue
        (entry,) = [e for e in entries if e.split()[0].rstrip(",") == action.option_strings[0]]
        assert "default" in entry, entry
        checked += 1
    assert checked


def test_the_package_s_logged_warnings_read_like_the_cli_s_own():
    import logging

    from mixtrain_dali.cli import _LogFormatter

    def line(level):
        record = logging.LogRecord("mixtrain_dali.controller", level, __file__, 1, "epoch %d: short", (3,), None)
        return _LogFormatter("%(levelname)s %(name)s: %(message)s").format(record)

    assert line(logging.WARNING) == "mixtrain: warning: epoch 3: short"
    assert line(logging.INFO) == "INFO mixtrain_dali.controller: epoch 3: short"  # -v
