"""`mixtrain bench`: the entry point finds benchmarks/, and each benchmark's --quick run
writes its JSON, Markdown table and PNG with every variant and sane numbers."""

import json
import math
import sys
from pathlib import Path

import pytest

from mixtrain_dali import bench
from mixtrain_dali.cli import main
from mixtrain_dali.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts' modules


def _bench(tmp_path, name, *extra):
    out = tmp_path / "out"
    rc = main(["bench", name, "--quick", "--device", "cpu", "--out-dir", str(out),
               "--data-dir", str(tmp_path / "data"), "--no-progress", *extra])
    assert rc == 0
    return out


def _outputs(out, stem):
    for ext in ("json", "md", "png"):
        assert (out / f"{stem}.{ext}").stat().st_size > 0, ext
    result = json.loads((out / f"{stem}.json").read_text())
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["versions"]["dali"]
    assert result["command"].startswith("mixtrain bench ") and "--quick" in result["command"]
    assert result["settings"]["quick"] is True and result["settings"]["device"] == "cpu"
    md = (out / f"{stem}.md").read_text()
    assert md.startswith("# ") and "**Command:**" in md and "| --- |" in md
    return result


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# -- entry point ----------------------------------------------------------------------------
def test_bench_finds_the_checkout_benchmarks_folder():
    assert (bench.benchmarks_dir() / "common.py").is_file()
    for name in bench.BENCHMARKS:
        assert callable(bench.load_benchmark(name).main)


def test_bench_without_benchmarks_folder_is_a_one_line_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "benchmarks_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(UserError, match="source checkout"):
        bench.load_benchmark("loader")
    assert main(["bench", "loader", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixtrain: error:") and err.count("\n") == 1


def test_bench_rejects_an_unknown_benchmark_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["bench", "loader", "--no-such-flag"])
    assert e.value.code == 2
    assert "mixtrain bench loader: error" in capsys.readouterr().err


def test_quick_never_writes_to_the_committed_results_by_default():
    common = bench.load_benchmark("loader").common
    args = bench.load_benchmark("loader").build_parser().parse_args(["--quick"])
    assert common.out_dir(args) != common.RESULTS_DIR
    assert common.stem("loader_throughput", "cpu", True) == "loader_throughput_cpu_quick"
    assert common.stem("loader_throughput", "gpu", False) == "loader_throughput_gpu"


def test_spread_and_median():
    common = bench.load_benchmark("loader").common
    assert common.median([3, 1, 2]) == 2 and common.median([4, 1, 2, 3]) == 2.5
    s = common.spread([1.0, 2.0, 3.0])
    assert (s["mean"], s["std"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 1.0, 3.0, 3)
    assert common.spread([5.0])["std"] == 0.0


def test_accuracy_methods_differ_from_the_demo_recipe_only_where_named():
    from mixtrain_dali.config import Config, MixConfig
    from mixtrain_dali.demo import DEMO_RECIPE

    acc = bench.load_benchmark("accuracy")
    base = acc.base_recipe(acc.build_parser().parse_args([]), "cpu")
    assert base["train"] == DEMO_RECIPE["train"] and base["mix"] == DEMO_RECIPE["mix"]
    c = {k: Config.from_dict(v) for k, v in acc.method_recipes(base, 1.6).items()}
    assert set(c) == set(acc.METHODS)
    epochs = DEMO_RECIPE["train"]["epochs"]
    assert not c["baseline"].mix.enabled and c["baseline"].train.epochs == epochs
    for key, frac in (("less_75", 0.75), ("less_62", 0.625), ("less_50", 0.5)):
        assert c[key].train.epochs == round(epochs * frac) and not c[key].mix.enabled
    p = c["progressive"].data
    assert p.min_image_size == base["data"]["image_size"] // 2 and not c["progressive"].mix.enabled
    v0 = c["mix_v0"].mix
    assert (v0.enabled, v0.k, v0.target_speedup, v0.selection, v0.gamma, v0.schedule, v0.tile_aspect,
            v0.tile_scale, v0.loss_norm, v0.isolate) == (True, 4, 1.6, "loss", 1.0, "flat", False, 0.0,
                                                          "constituent", False)
    b = c["mixtrain"].mix  # the package's defaults
    defaults = MixConfig(enabled=True)
    assert (b.k, b.schedule, b.tile_scale, b.loss_norm, b.selection, b.gamma, b.isolate) == \
        (defaults.k, defaults.schedule, defaults.tile_scale, defaults.loss_norm, defaults.selection,
         defaults.gamma, defaults.isolate)
    assert c["mix_resize"].mix == b  # the research's winner is the package default
    steps = c["mix_steps"].mix  # the previous defaults: linear after a warm-up epoch
    assert (steps.schedule, steps.warmup_epochs, steps.final_full_fraction, steps.self_correct,
            steps.isolate, steps.keep_steps) == ("linear", 1, 0.125, True, True, True)
    assert not c["mix_apart"].mix.keep_steps and not v0.keep_steps
    d = c["naive_mix"]
    assert (d.mix.selection, d.mix.gamma, d.mix.self_correct, d.train.region_pooling) == \
        ("random", 0.0, False, False)
    assert c["prune"].mix.method == "prune" and c["prune"].mix.target_speedup == 1.6
    assert c["mix_norm"].mix.loss_norm == "composite" and c["mix_scale"].mix.tile_scale == 1.0
    assert c["mix_linear"].mix.schedule == "linear" and c["mix_k2"].mix.k == 2
    for key in ("mix_apart", "mix_apart_norm"):  # the previous defaults, equal shares, tiles apart
        a = c[key].mix
        assert (a.isolate, a.gamma, a.schedule, a.selection) == (True, 0.0, "linear", b.selection)
    assert c["mix_apart_norm"].mix.loss_norm == "composite" and c["mix_apart"].mix.loss_norm == b.loss_norm
    for key, cfg in c.items():  # everything else is the demo's
        assert cfg.train.lr == c["baseline"].train.lr
        if key != "progressive":
            assert cfg.data == c["baseline"].data


def test_train_less_curve_interpolates_between_its_points():
    acc = bench.load_benchmark("accuracy")
    point = lambda t, a: {"train_time_s": {"mean": t}, "val_top1": {"mean": a}}  # noqa: E731
    summary = {"baseline": point(100, 90), "less_50": point(50, 70), "mixtrain": point(75, 85)}
    assert acc.curve_at(summary, 75) == 80
    assert acc.curve_at(summary, 40) is None and acc.curve_at(summary, 120) is None
    goal = {g["goal"]: g for g in acc.goals(summary)}["b above the train-less curve at its time"]
    assert goal["difference"] == 5 and goal["met"]


# -- the quick runs -------------------------------------------------------------------------
@pytest.mark.slow
def test_loader_quick_times_every_loader(tmp_path):
    result = _outputs(_bench(tmp_path, "loader"), "loader_throughput_cpu_quick")
    variants = result["variants"]
    assert set(variants) == {"torchvision", "dali_plain", "mixtrain_off", "mixtrain_off_t10", "mixtrain_k4",
                             "mixtrain_randaug"}
    n = result["settings"]["n"]
    for v in variants.values():
        assert _positive(v["images_per_s"]) and _positive(v["outputs_per_s"])
        assert len(v["time_s_runs"]) == result["settings"]["repeats"]
        assert v["source_images"] == n
    mixed = variants["mixtrain_k4"]
    assert mixed["composites"] < n and mixed["mixed_samples"] > 0 and mixed["ideal_speedup"] > 1
    assert variants["mixtrain_off"]["outputs"] == n
    aug = variants["mixtrain_randaug"]
    assert aug["vs_mixtrain_off"] == pytest.approx(aug["images_per_s"] / variants["mixtrain_off"]["images_per_s"])
    ratio = result["mixtrain_off_vs_dali_plain"]  # one round with --quick
    assert len(ratio["rounds"]) == result["settings"]["rounds"] == 1
    assert ratio["crop_tries_10"]["median"] == pytest.approx(variants["mixtrain_off_t10"]["images_per_s"]
                                                             / variants["dali_plain"]["images_per_s"])
    assert ratio["median"] == pytest.approx(variants["mixtrain_off"]["images_per_s"]
                                            / variants["dali_plain"]["images_per_s"])


@pytest.mark.slow
def test_loader_rounds_time_every_variant_in_each_round_and_give_the_ratio_per_round(tmp_path):
    result = _outputs(_bench(tmp_path, "loader", "--rounds", "2", "--repeats", "1", "--variants",
                             "dali_plain", "mixtrain_off"), "loader_throughput_cpu_quick")
    variants = result["variants"]
    for v in variants.values():
        assert len(v["images_per_s_rounds"]) == 2 and len(v["time_s_runs"]) == 2
    ratio = result["mixtrain_off_vs_dali_plain"]
    expect = [a / b for a, b in zip(variants["mixtrain_off"]["images_per_s_rounds"],
                                    variants["dali_plain"]["images_per_s_rounds"])]
    assert ratio["rounds"] == pytest.approx(expect)
    md = (tmp_path / "out" / "loader_throughput_cpu_quick.md").read_text()
    assert "mixing off / plain DALI" in md and "2 round(s) of 1" in md


@pytest.mark.slow
def test_speedup_quick_compares_every_budget_with_the_baseline(tmp_path):
    result = _outputs(_bench(tmp_path, "speedup"), "train_speedup_cpu_quick")
    assert set(result["runs"]) == {"baseline", "mixtrain_x1.3", "mixtrain_x1.6", "mixtrain_x2"}
    for name, c in result["comparisons"].items():
        assert c["repeats"][0]["mixing_epochs"], name
        assert _positive(c["measured"]) and c["ideal"] > 1 and _positive(c["efficiency"])
        assert c["repeats"][0]["mixtrain_steps"] < c["repeats"][0]["baseline_steps"]
    for epochs in result["runs"]["baseline"]["epochs"]:
        assert all(_positive(r["epoch_time_s"]) for r in epochs)


@pytest.mark.slow
def test_accuracy_quick_runs_every_method_on_every_seed(tmp_path):
    result = _outputs(_bench(tmp_path, "accuracy"), "accuracy_synthetic_cpu_quick")
    methods = result["methods"]
    assert set(methods) == {"baseline", "less_75", "less_62", "less_50", "progressive", "prune",
                            "naive_mix", "mixtrain"}
    seeds = result["settings"]["seeds"]
    for name, m in methods.items():
        s = m["summary"]
        assert [r["seed"] for r in m["runs"]] == seeds, name
        assert 0 <= s["val_top1"]["min"] <= s["val_top1"]["mean"] <= s["val_top1"]["max"] <= 100
        assert _positive(s["train_time_s"]["mean"]) and s["train_time_s"]["std"] >= 0
    assert methods["less_50"]["summary"]["epochs"] < methods["baseline"]["summary"]["epochs"]
    assert len(result["goals"]) >= 5 and all(isinstance(g["met"], bool) for g in result["goals"])


@pytest.mark.slow
def test_demo_quick_records_baseline_mixtrain_and_training_less(tmp_path):
    out = _bench(tmp_path, "demo")
    result = json.loads((out / "demo_cpu_quick.json").read_text())
    md = (out / "demo_cpu_quick.md").read_text()
    assert md.startswith("# Demo") and "**Command:**" in md and "| train_less |" in md
    assert (out / "demo_cpu_quick.png").stat().st_size > 0 and result["settings"]["device"] == "cpu"
    assert {"baseline", "mixtrain", "train_less"} <= set(result["summary"])
    assert result["summary"]["train_less"]["epochs"] <= result["summary"]["baseline"]["epochs"]


def test_demo_record_says_how_the_recipe_budgets_mixing():
    import demo_record

    assert demo_record._budget({"schedule": "resize", "fraction": None, "target_speedup": None}).startswith(
        "resize schedule")
    assert demo_record._budget({"schedule": "linear", "fraction": 0.5, "target_speedup": None}) == \
        "linear schedule, fraction 0.5"
    assert demo_record._budget({"schedule": "flat", "fraction": None, "target_speedup": 1.6}) == \
        "flat schedule, target x1.6"
    assert "None" not in demo_record._budget({"schedule": "linear", "fraction": None, "target_speedup": None})


def test_detail_sensitivity_quick_evaluates_every_view_of_every_synthetic_composition(tmp_path):
    import detail_sensitivity

    result = detail_sensitivity.main(["--quick", "--device", "cpu", "--no-progress", "--out-dir",
                                      str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                                      "--runs-dir", str(tmp_path / "runs")])
    rows = result["rows"]
    assert set(rows) == set(detail_sensitivity.compositions())
    for row in rows.values():
        for view in ("top1_full", "top1_half", "top1_quarter"):
            assert 0 <= row[view] <= 100
        assert row["drop_half"] == pytest.approx(row["top1_full"] - row["top1_half"])
        assert row["val_images"] == 10 * 3  # every val image of the 10 linked classes, 3 each
    comps = detail_sensitivity.compositions()
    assert sum("fine" in c for c in comps["synthetic, default 10 (3 fine pairs)"]) == 3
    assert sum("fine" in c for c in comps["synthetic, no fine pair"]) == 0
    md = (tmp_path / "out" / "detail_sensitivity_cpu_quick.md").read_text()
    assert md.startswith("# Detail sensitivity") and "| synthetic, 1 fine pair |" in md


@pytest.mark.parametrize("spec", ["nodir", "x=", "x=/no/such/dir", "x=.:64:six", "x=.:1:2:3"])
def test_detail_sensitivity_refuses_a_bad_data_spec_in_one_line(spec):
    import detail_sensitivity

    with pytest.raises(UserError, match="--data"):
        detail_sensitivity.parse_data(spec)


def test_demo_train_less_fits_mixtrains_time_and_never_exceeds_the_baseline():
    from mixtrain_dali.demo import less_epochs

    assert less_epochs(15, 36.7, 29.1) == 12   # the recorded demo: 15 x 29.1 / 36.7
    assert less_epochs(3, 1.4, 1.6) == 3       # MixTrain slower (a noisy quick run): the baseline
    assert less_epochs(10, 10.0, 0.1) == 1     # at least one epoch


def test_plan_takes_the_common_quick_and_out_dir_flags(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "plan", "--quick", "--out-dir", str(out)]) == 0
    result = json.loads((out / "plan_speed_quick.json").read_text())
    assert result["n"] == 100_000 and result["repeats"] == 3 and result["settings"]["quick"] is True
    assert result["command"] == f"mixtrain bench plan --quick --out-dir {out}"
    assert [v["k"] for v in result["variants"]] == [1, 2, 3, 4]
    assert (out / "plan_speed_quick.md").read_text().startswith("# Controller planning time")
    assert main(["bench", "plan", "--out-dir", str(out), "--n", "2000", "--repeats", "1"]) == 0
    assert json.loads((out / "plan_speed.json").read_text())["n"] == 2000
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["bench", "plan", "--quick", "--k", "5"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_startup_small_tree_times_every_case_and_counts_the_files_read(tmp_path):
    out = tmp_path / "out"
    rc = main(["bench", "startup", "--quick", "--files", "240", "--classes", "6", "--out-dir", str(out),
               "--data-dir", str(tmp_path / "data"), "--no-progress"])
    assert rc == 0
    result = json.loads((out / "startup_cpu_quick.json").read_text())
    assert (out / "startup_cpu_quick.md").read_text().startswith("# Start-up at 240 files")
    assert (out / "startup_cpu_quick.png").stat().st_size > 0
    tree = tmp_path / "data" / "startup-n240-c6"
    assert len(list(tree.glob("*/*.JPEG"))) == 240 and len(list(tree.iterdir())) == 6 + 2  # + marker, manifest
    cases = result["cases"]
    assert set(cases) == {"torchvision", "ours_cold", "ours_manifest", "ours_no_check", "ours_cold_2ranks",
                          "ours_manifest_2ranks"}
    for c in cases.values():
        assert c["n_samples"] == 240 and _positive(c["seconds"]) and c["peak_rss_mb"] > 50
    assert cases["ours_cold"]["files_opened_per_rank"] == [240]
    assert cases["ours_manifest"]["files_opened_per_rank"] == [0]
    assert cases["ours_no_check"]["files_opened_per_rank"] == [0]
    assert cases["ours_cold_2ranks"]["files_opened_per_rank"] == [120, 120]
    assert cases["ours_manifest_2ranks"]["files_opened_per_rank"] == [0, 0]


def test_crop_windows_quick_times_both_ways_and_the_loader(tmp_path):
    import crop_windows_cpu

    out = tmp_path / "out"
    result = crop_windows_cpu.main(["--quick", "--rounds", "1", "--out-dir", str(out),
                                    "--data-dir", str(tmp_path / "data")])
    assert set(result["median_ms"]) == {"read", "graph windows", "graph windows, tries=1", "host windows"}
    assert all(_positive(v) for v in result["median_ms"].values())
    assert all(_positive(v) for v in result["loader_median"].values()) and len(result["loader_median"]) == 2
    assert result["saved_ms_per_batch"] == pytest.approx(
        result["median_ms"]["graph windows"] - result["median_ms"]["host windows"])
    md = (out / "crop_windows_cpu_quick.md").read_text()
    assert md.startswith("# Crop windows") and "--quick" in md and "| host windows |" in md
