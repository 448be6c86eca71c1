"""Crash-safe runs: a real `mixtrain train` process killed with SIGKILL in the middle of an
epoch and in the middle of writing its checkpoint; `--resume` continues from the last
complete epoch with the same plans as an uninterrupted run, and metrics.jsonl holds each
epoch exactly once. Nothing is patched: the test polls the run directory (checkpoint.pt
appearing, the temp file `checkpoint.pt.tmp<pid>` of a write in progress) and kills then."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import write_train_val

ARGS = ["--arch", "resnet18", "--image-size", "32", "--threads", "1", "--no-progress", "--batch-size", "16",
        "--epochs", "4", "--seed", "3", "--mix-k", "2", "--mix-fraction", "0.5", "--mix-selection", "random",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("crash"))


def _cmd(data, out, resume=False) -> list[str]:
    return [sys.executable, "-m", "mixtrain_dali.cli", "train", "--data", str(data), "--out", str(out),
            *ARGS, *(["--resume"] if resume else [])]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _tmp_files(out) -> set[str]:
    return {p.name for p in out.glob("checkpoint.pt.tmp*")} if out.exists() else set()


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """Poll `ready()` every millisecond; SIGKILL the process the moment it holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_kill_9_mid_epoch_and_mid_checkpoint_then_resume_matches_an_uninterrupted_run(data, tmp_path):
    ref_dir, out = tmp_path / "uninterrupted", tmp_path / "killed"
    ref = subprocess.run(_cmd(data, ref_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    expected = _metrics(ref_dir)
    assert [r["epoch"] for r in expected] == [1, 2, 3, 4]
    assert expected[1]["mixed_samples"] > 0  # epoch 2 mixes: its plan depends on epoch 1's losses

    # 1. kill -9 in the middle of epoch 2: after epoch 1's checkpoint, a third of an epoch in
    proc = subprocess.Popen(_cmd(data, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.pt"
    started = {}

    def mid_epoch_2() -> bool:
        if not ckpt.exists():
            return False
        started.setdefault("t", time.monotonic())
        rows = _metrics(out)
        return time.monotonic() - started["t"] >= 0.3 * rows[0]["epoch_time_s"]

    _kill_when(proc, mid_epoch_2)
    assert [r["epoch"] for r in _metrics(out)] == [1], "the kill did not land inside epoch 2"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1

    # 2. resume, and kill -9 while the checkpoint after epoch 2 is being written
    before = _tmp_files(out)
    proc = subprocess.Popen(_cmd(data, out, resume=True), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: bool(_tmp_files(out) - before))
    assert _tmp_files(out) - before, "the kill did not land inside the checkpoint write"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # the old checkpoint is whole
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]  # epoch 2's line, without its checkpoint

    # 3. resume to the end
    done = subprocess.run(_cmd(data, out, resume=True), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = _metrics(out)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4], "metrics lines duplicated or lost"
    for a, b in zip(expected, got):
        assert a["plan"] == b["plan"], f"epoch {a['epoch']} planned differently after the crash"
        assert a["samples"] == b["samples"] and a["steps"] == b["steps"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 4
    assert not (out / "bad_files.txt").exists()
