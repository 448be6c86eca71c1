"""`make gpu-check`'s driver (benchmarks/gpu_check.py), the parts that run without a GPU: the
one-line refusal, the report built from the stages' outputs, and what goes to $OUT."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PY_GPU": sys.executable})
    assert proc.returncode == 2
    assert proc.stdout.strip().count("\n") == 0 and "needs a CUDA GPU" in proc.stdout


def test_each_invocation_fits_the_device_call_limit_and_every_stage_is_planned():
    """The device runs one command for at most 600 s: each invocation's stage limits sum to at
    most 510 s (90 s for start-up, the report and packing), and every stage is in one."""
    names = [name for name, _ in gpu_check.stages("python3")]
    assert names == ["data", "tests", "loader", "profile", "speedup", "accuracy"]
    assert set(gpu_check.LIMIT_S) == set(names)
    assert set().union(*gpu_check.PARTS.values()) == set(names)
    for part, stages in gpu_check.PARTS.items():
        assert gpu_check.plan(part) == stages and sum(gpu_check.LIMIT_S[n] for n in stages) <= 510, part
        assert gpu_check.CALL_BUDGET_S == 510
    assert gpu_check.plan(1, ["accuracy", "tests"]) == ["tests", "accuracy"]  # named stages, in order
    cmds = dict(gpu_check.stages("python3"))
    assert "-m" in cmds["tests"] and "gpu" in cmds["tests"]
    assert "tests/test_read_ahead.py" in cmds["tests"]
    acc = cmds["accuracy"]
    for flag, value in (("--data", gpu_check.ACCURACY_DATA), ("--arch", "resnet18"), ("--image-size", "128"),
                        ("--device", "gpu")):
        assert acc[acc.index(flag) + 1] == value
    assert acc[acc.index("--methods") + 1:acc.index("--methods") + 4] == ["baseline", "progressive", "mixtrain"]
    for f in gpu_check.GPU_TEST_FILES:  # none of them needs hypothesis (absent on the GPU machine)
        assert "hypothesis" not in (REPO / f).read_text()


def test_the_accuracy_stage_is_skipped_not_failed_without_its_data(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ACCURACY_DATA", str(tmp_path / "absent"))
    with open(tmp_path / "log", "w") as log:
        stage = gpu_check.run_stage("accuracy", ["python3", "-c", "raise SystemExit(1)"], 5, log)
    assert stage["ok"] and stage["skipped"] and stage["status"].startswith("skipped: no data at")
    (tmp_path / "absent" / "train").mkdir(parents=True)
    (tmp_path / "absent" / "val").mkdir()
    assert gpu_check.skip_reason("accuracy") is None and gpu_check.skip_reason("tests") is None


def test_a_bad_stage_name_is_one_line_naming_it(capsys):
    with pytest.raises(SystemExit) as err:
        gpu_check.parse_args(["speed"])
    assert err.value.code == 2 and "stage 'speed'; valid: data, tests" in capsys.readouterr().err
    assert gpu_check.parse_args(["--part", "2"]).part == 2


def _stage(ok, output=()):
    return {"status": "ok" if ok else "failed (exit 1)", "ok": ok, "seconds": 1.0, "command": "x",
            "output": list(output)}


def test_report_and_packed_output(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(gpu_check, "RESULTS", results)
    variant = {"images_per_s": 1000.0, "outputs_per_s": 1000.0, "vs_torchvision": 2.0}
    variants = {"dali_plain": {**variant, "label": "plain"},
                "mixtrain_off": {**variant, "label": "ours", "images_per_s": 980.0}}
    ratio = lambda m: {"rounds": [m], "median": m}  # noqa: E731
    read_paths = {"default": "graph", "graph": {"variant": "mixtrain_off", "vs_dali_plain": ratio(0.98)},
                  "ahead": {"variant": "mixtrain_off_ahead", "vs_dali_plain": ratio(1.01)},
                  "ahead_vs_graph": ratio(1.03)}
    (results / "loader_throughput_gpu.json").write_text(json.dumps({"variants": variants,
                                                                    "read_paths": read_paths}))
    (results / "train_speedup_gpu.json").write_text(json.dumps({"comparisons": {"mixtrain_x1.6": {
        "target_speedup": 1.6, "ideal": 1.6, "measured": 1.5, "efficiency": 0.9375}}}))
    (results / "gpu_loader_profile.json").write_text(json.dumps({"results": {
        "plain": {"images_per_s": 2000.0}, "ours": {"images_per_s": 1500.0}}}))
    tests = _stage(True, ["GPU-CHECK peak_gpu_memory_gib=3.20", "5 passed in 9s"])
    stages = {"data": _stage(True), "tests": tests, "loader": _stage(True), "speedup": _stage(False),
              "profile": _stage(True)}
    v = {"gpu": "NVIDIA H100", "gpus": 1, "driver": "580", "dali": "2.4.0", "torch": "2.11"}
    res, md = gpu_check.summary(stages, v, "make gpu-check", "today")
    assert md.splitlines()[2] == "**Result:** FAILED: speedup"
    assert "DALI 2.4.0, torch 2.11" in md and "`make gpu-check`" in md
    assert res["measurements"] == ["peak_gpu_memory_gib=3.20"] and res["pytest"] == "5 passed in 9s"
    assert res["loader_off_vs_plain_dali"] == pytest.approx(0.98)
    assert res["profile"] == {"plain": 2000.0, "ours": 1500.0} and "| ours | 1500 | 0.75 |" in md
    assert "speedup" not in res  # a failed stage's stale file is not reported
    assert res["read_paths"] == {"ahead_vs_graph": 1.03, "graph_vs_plain_dali": 0.98, "ahead_vs_plain_dali": 1.01}
    assert "read ahead / read in the graph 1.030, graph / plain DALI 0.980, ahead / plain DALI 1.010" in md
    (results / "gpu_check.log").write_text("log")
    gpu_check.pack(str(tmp_path / "out"))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["gpu_check.log", "gpu_results.tar.gz"]
    with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
        assert "benchmarks/results/gpu/loader_throughput_gpu.json" in tar.getnames()


def test_part_two_reports_the_accuracy_runs(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(gpu_check, "RESULTS", results)
    point = lambda a, t: {"val_top1": {"mean": a, "std": 0.0}, "train_time_s": {"mean": t, "std": 0.0}}  # noqa: E731
    methods = {"baseline": {"label": "baseline", "budgets": {"0.5": point(80.0, 50.0), "1.0": point(85.0, 100.0)}},
               "mixtrain": {"label": "MixTrain", "budgets": {"1.0": point(84.5, 70.0)}}}
    (results / "accuracy_imagenette-160_gpu.json").write_text(json.dumps(
        {"methods": methods, "runs_done": 3, "runs_planned": 9}))
    stages = {"data": _stage(True), "speedup": _stage(True), "accuracy": _stage(False)}
    res, md = gpu_check.summary(stages, {}, "make gpu-check-2", "today", part=2)
    assert md.splitlines()[0] == "# GPU check, part 2" and md.splitlines()[2] == "**Result:** FAILED: accuracy"
    assert res["accuracy"]["runs_done"] == 3 and len(res["accuracy"]["points"]) == 3
    assert "| MixTrain | 1.0 | 84.50 | 70.0 |" in md and "3 of 9 runs" in md  # stopped at its limit: what it did
    skipped = {"accuracy": {**_stage(True), "status": "skipped: no data at x", "skipped": True}}
    _, md = gpu_check.summary(skipped, {}, "make gpu-check-2", "today", part=2)
    assert "**Accuracy:** skipped: no data at x" in md
