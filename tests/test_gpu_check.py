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


def test_every_stage_is_time_bounded_within_the_device_call_limit():
    """The device runs one command for at most 600 s: the stages' limits leave 90 s for the rest."""
    names = [name for name, _ in gpu_check.stages("python3")]
    assert names == ["data", "tests", "loader", "speedup", "profile"]
    assert set(gpu_check.LIMIT_S) == set(names) and sum(gpu_check.LIMIT_S.values()) <= 510
    cmds = dict(gpu_check.stages("python3"))
    assert "-m" in cmds["tests"] and "gpu" in cmds["tests"]
    for f in gpu_check.GPU_TEST_FILES:  # none of them needs hypothesis (absent on the GPU machine)
        assert "hypothesis" not in (REPO / f).read_text()


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
    (results / "loader_throughput_gpu.json").write_text(json.dumps({"variants": variants}))
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
    (results / "gpu_check.log").write_text("log")
    gpu_check.pack(str(tmp_path / "out"))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["gpu_check.log", "gpu_results.tar.gz"]
    with tarfile.open(tmp_path / "out" / "gpu_results.tar.gz") as tar:
        assert "benchmarks/results/gpu/loader_throughput_gpu.json" in tar.getnames()
