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


def test_accuracy_methods_differ_from_the_demo_mixtrain_arm_only_where_named():
    from mixtrain_dali.config import Config, MixConfig
    from mixtrain_dali.demo import DEMO_MIXTRAIN

    acc = bench.load_benchmark("accuracy")
    base = acc.base_recipe(acc.build_parser().parse_args([]), "cpu")
    assert base["mix"] == DEMO_MIXTRAIN["mix"]
    assert base["train"] == {**DEMO_MIXTRAIN["train"], "val_interval": 0}  # the final model only
    c = {k: Config.from_dict(v) for k, v in acc.method_recipes(base, 1.6, 0.5).items()}
    assert set(c) == set(acc.METHODS)
    size = base["data"]["image_size"]
    assert not c["baseline"].mix.enabled and c["baseline"].train.epochs == DEMO_MIXTRAIN["train"]["epochs"]
    for key in ("progressive", "prog_mix", "prog_mix_loss"):
        assert c[key].data.min_image_size == size // 2 and c[key].data.resize_ramp == [0.0, 0.75]
    assert not c["progressive"].mix.enabled
    b = c["mixtrain"].mix  # the package's defaults
    assert b == MixConfig(enabled=True, k=DEMO_MIXTRAIN["mix"]["k"])
    on_top, loss = c["prog_mix"].mix, c["prog_mix_loss"].mix
    assert (on_top.k, on_top.schedule, on_top.fraction, on_top.selection, on_top.warmup_epochs) == \
        (4, "linear", 0.5, "random", 0)
    assert (loss.selection, loss.warmup_epochs, loss.self_correct) == ("loss", 1, True)
    assert {k: v for k, v in vars(loss).items() if k not in ("selection", "warmup_epochs", "self_correct")} == \
        {k: v for k, v in vars(on_top).items() if k not in ("selection", "warmup_epochs", "self_correct")}
    p = c["prune"].mix
    assert (p.method, p.target_speedup, p.schedule, p.selection) == ("prune", 1.6, "flat", "loss")
    for key, cfg in c.items():  # everything else is the demo's
        assert cfg.train == c["baseline"].train
        if not key.startswith("prog"):
            assert cfg.data == c["baseline"].data
    half = Config.from_dict(acc.at_budget(acc.method_recipes(base)["baseline"], 0.5))
    assert half.train.epochs == round(DEMO_MIXTRAIN["train"]["epochs"] * 0.5)


def _accuracy_file(tmp_path, acc, epochs: int, runs: dict, name: str, lr=None) -> tuple[str, dict]:
    """A result file as `mixtrain bench accuracy` writes it (the fields --merge reads)."""
    from mixtrain_dali.config import Config

    argv = ["--epochs", str(epochs)] + (["--lr", str(lr)] if lr else [])
    base = acc.base_recipe(acc.build_parser().parse_args(argv), "cpu")
    configs = {k: Config.from_dict(v).to_dict() for k, v in acc.method_recipes(base).items()}
    methods = {k: {"runs": [{"seed": s, "budget": acc.budget_epochs(epochs, b) / epochs,
                             "epochs": acc.budget_epochs(epochs, b), "val_top1": top1}
                            for (b, s), top1 in rs.items()]} for k, rs in runs.items()}
    path = tmp_path / name
    path.write_text(json.dumps({"settings": {"recipe": base, "dataset": {"name": "d"}, "configs": configs},
                                "methods": methods}))
    return str(path), base


def test_accuracy_merge_joins_other_runs_once_and_a_run_here_replaces_theirs(tmp_path):
    acc = bench.load_benchmark("accuracy")
    old, base = _accuracy_file(tmp_path, acc, 12, {"baseline": {(1.0, 0): 78.0, (0.5, 0): 74.0, (0.5, 1): 73.0},
                                                   "prune": {(1.0, 0): 76.0}}, "old.json")
    again, _ = _accuracy_file(tmp_path, acc, 12, {"baseline": {(1.0, 0): 99.0}}, "again.json")
    runs = {"baseline": []}
    configs = acc._merge([old, again], base, {"name": "d"}, runs, {("baseline", 0.5, 1)})
    got = {k: sorted((r["budget"], r["seed"], r["val_top1"]) for r in rs) for k, rs in runs.items()}
    # seed 1 at 0.5 is run here; the second file's (1.0, 0) is a duplicate: the first file's stays
    assert got == {"baseline": [(0.5, 0, 74.0), (1.0, 0, 78.0)], "prune": [(1.0, 0, 76.0)]}
    assert set(configs) == {"baseline", "prune"} and configs["prune"]["train"]["epochs"] == 12


def test_accuracy_merge_of_another_E_joins_by_epochs(tmp_path, capsys):
    # a budget's schedule ends at its own epochs: E = 12's 12-epoch run is E = 24's budget 0.5
    acc = bench.load_benchmark("accuracy")
    old, _ = _accuracy_file(tmp_path, acc, 12, {"baseline": {(1.0, 0): 78.0, (0.75, 0): 76.0, (0.5, 0): 74.0}},
                            "e12.json")
    longer, _ = _accuracy_file(tmp_path, acc, 30, {"baseline": {(1.0, 0): 80.0, (0.4, 0): 77.0}}, "e30.json")
    _, base24 = _accuracy_file(tmp_path, acc, 24, {}, "e24.json")
    runs = {"baseline": []}
    configs = acc._merge([old, longer], base24, {"name": "d"}, runs, {("baseline", 0.375, 0)})
    got = sorted((r["budget"], r["epochs"], r["val_top1"]) for r in runs["baseline"])
    # 9 epochs (0.375 of 24) is run here; 30 epochs is longer than E = 24; 12 of E = 30 joins as 0.5,
    # after E = 12's own 12-epoch run (the first file's)
    assert got == [(0.25, 6, 74.0), (0.5, 12, 78.0)]
    assert configs["baseline"]["train"]["epochs"] == 24
    assert "1 run(s) longer than E = 24 epochs left out" in capsys.readouterr().out


def test_accuracy_merge_refuses_another_recipe(tmp_path):
    acc = bench.load_benchmark("accuracy")
    other, _ = _accuracy_file(tmp_path, acc, 12, {"baseline": {(1.0, 0): 78.0}}, "other.json", lr=0.4)
    _, base = _accuracy_file(tmp_path, acc, 12, {}, "here.json")
    with pytest.raises(UserError, match="other.json' was run with another recipe or dataset"):
        acc._merge([other], base, {"name": "d"}, {}, set())
    with pytest.raises(UserError, match="cannot read it as a result file"):
        acc._merge([str(tmp_path / "missing.json")], base, {"name": "d"}, {}, set())


def test_accuracy_plateau_is_the_baselines_gain_paired_by_seed():
    acc = bench.load_benchmark("accuracy")
    runs = {"baseline": [{"budget": b, "seed": s, "val_top1": v} for b, s, v in
                         [(0.75, 0, 78.7), (0.75, 1, 77.8), (0.75, 2, 78.7), (1.0, 0, 80.0)]]}
    # only seed 0 has both budgets: its own gain (1.3), not 80.0 minus the three seeds' mean (1.6)
    gain, n = acc.plateau(runs, [0.5, 0.75, 1.0])
    assert n == 1 and gain == pytest.approx(1.3)
    runs["baseline"].append({"budget": 1.0, "seed": 1, "val_top1": 78.3})
    assert acc.plateau(runs, [0.75, 1.0]) == (pytest.approx((1.3 + 0.5) / 2), 2)
    assert acc.plateau(runs, [1.0]) is None and acc.plateau({}, [0.75, 1.0]) is None
    assert acc._headline({}, [], (0.9, 3)).endswith("+0.90 points over its last budget step (plateau: < 1; paired, 3 seeds)")


def test_accuracy_refuses_bad_budgets():
    with pytest.raises(UserError, match=r"--budgets \[0.0, 1.0\]"):
        bench.load_benchmark("accuracy").main(["--quick", "--budgets", "0", "1", "--device", "cpu"])


# -- the quick runs -------------------------------------------------------------------------
@pytest.mark.slow
def test_loader_quick_times_every_loader(tmp_path):
    result = _outputs(_bench(tmp_path, "loader"), "loader_throughput_cpu_quick")
    variants = result["variants"]
    other = {"graph": "ahead", "ahead": "graph"}[result["settings"]["default_read"]]  # mixtrain_off: the default
    assert set(variants) == {"torchvision", "dali_plain", "mixtrain_off", f"mixtrain_off_{other}", "mixtrain_off_t10",
                             "mixtrain_k4", "mixtrain_randaug"}
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
    a_b = result["read_paths"]  # the read-path A/B in the same run
    name = {other: f"mixtrain_off_{other}", {"graph": "ahead", "ahead": "graph"}[other]: "mixtrain_off"}
    assert {r: a_b[r]["variant"] for r in ("graph", "ahead")} == name
    ips = {r: variants[name[r]]["images_per_s"] for r in name}
    assert a_b["ahead_vs_graph"]["median"] == pytest.approx(ips["ahead"] / ips["graph"])
    for r in name:
        assert a_b[r]["vs_dali_plain"]["rounds"] == pytest.approx([ips[r] / variants["dali_plain"]["images_per_s"]])


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
def test_accuracy_quick_runs_every_method_at_every_budget_and_seed(tmp_path):
    out = _bench(tmp_path, "accuracy", "--methods", "baseline", "progressive", "prog_mix", "--val-sizes", "56")
    result = _outputs(out, "accuracy_synthetic_cpu_quick")
    methods = result["methods"]
    assert set(methods) == set(result["methods_run"]) == {"baseline", "progressive", "prog_mix"}
    seeds, budgets = result["settings"]["seeds"], result["settings"]["budgets"]
    for name, m in methods.items():
        assert sorted((r["budget"], r["seed"]) for r in m["runs"]) == \
            sorted((b, s) for b in budgets for s in seeds), name
        for b, p in m["budgets"].items():
            assert 0 <= p["val_top1"]["min"] <= p["val_top1"]["mean"] <= p["val_top1"]["max"] <= 100
            assert _positive(p["train_time_s"]["mean"]) and "56" in p["val_top1_at"]
        assert len(m["curve"]) == len(budgets)
        assert m["budgets"]["0.5"]["epochs"] < m["budgets"]["1.0"]["epochs"]
    sizes = [r["image_size"] for r in methods["prog_mix"]["runs"][0]["metrics"]]
    assert sizes == sorted(sizes) and 24 == sizes[0] < sizes[-1]  # the canvas follows progressive resizing
    assert any(r["mixed_samples"] for r in methods["prog_mix"]["runs"][0]["metrics"])
    assert "progressive" in methods["prog_mix"]["gain_vs"] and result["goals"]
    assert (out / "accuracy_synthetic_cpu_quick.png").stat().st_size > 0


@pytest.mark.slow
def test_demo_quick_records_the_methods_curves(tmp_path):
    out = _bench(tmp_path, "demo")
    result = json.loads((out / "demo_cpu_quick.json").read_text())
    md = (out / "demo_cpu_quick.md").read_text()
    assert md.startswith("# Demo") and "**Command:**" in md and "| progressive | 0.5E |" in md
    assert (out / "demo_cpu_quick.png").stat().st_size > 0 and result["settings"]["device"] == "cpu"
    assert {"baseline", "progressive", "mixtrain", "compare"} <= set(result["summary"])
    base = result["summary"]["baseline"]
    assert base["0.5E"]["epochs"] < base["1E"]["epochs"]


def test_demo_record_says_how_the_recipe_budgets_mixing():
    import demo_record

    assert demo_record._budget({"schedule": "resize", "fraction": None, "target_speedup": None}).startswith(
        "resize schedule")
    assert demo_record._budget({"schedule": "linear", "fraction": 0.5, "target_speedup": None}) == \
        "linear schedule, fraction 0.5"
    assert demo_record._budget({"schedule": "flat", "fraction": None, "target_speedup": 1.6}) == \
        "flat schedule, target x1.6"
    assert "None" not in demo_record._budget({"schedule": "linear", "fraction": None, "target_speedup": None})


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
