"""One writer per run directory (runlock.py): the lock itself (refusal naming the holder,
stale locks of dead processes and silent hosts taken over, racing take-overs, release on
exit and on error), then real `mixtrain train` processes: a second one on a running run's
--out exits 2 in one line, and a --resume after a `kill -9` takes the lock over."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import write_train_val
from mixtrain_dali.errors import UserError
from mixtrain_dali.runlock import LOCK_NAME, STALE_AFTER_S, RunLock, _proc_stat

HOST = socket.gethostname()


def _plant(out, **record) -> None:
    """A lock record as another process (or host) would have left it."""
    now = time.time()
    info = {"host": "node-elsewhere", "boot_id": None, "pid": 4242, "proc_start": None,
            "started": now - 3600, "heartbeat": now, "token": uuid.uuid4().hex, "argv": "mixtrain train"}
    info.update(record)
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK_NAME).write_text(json.dumps(info))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(UserError) as err:
            RunLock(tmp_path / "run").acquire()
    message = str(err.value)
    assert f"pid {os.getpid()} on host {HOST}, since " in message and "(this host)" in message
    assert "another --out" in message and "\n" not in message
    with RunLock(tmp_path / "run"):  # released: the next run takes it
        pass


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    pid = _dead_pid()
    _plant(out, host=HOST, boot_id=RunLock(out).boot_id, pid=pid, heartbeat=time.time())
    with caplog.at_level(logging.WARNING, logger="mixtrain_dali.runlock"):
        with RunLock(out) as lock:
            assert lock.took_over["pid"] == pid
            assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1
    assert f"held by pid {pid} on host {HOST}" in said[0] and f"process {pid} is no longer running" in said[0]


@pytest.mark.skipif(_proc_stat(os.getpid()) is None, reason="needs /proc")
def test_a_pid_now_used_by_a_later_process_is_stale(tmp_path):
    out = tmp_path / "run"
    _plant(out, host=HOST, boot_id=RunLock(out).boot_id, pid=os.getpid(),
           proc_start=_proc_stat(os.getpid())[1] - 1)  # "this pid, but started earlier"
    with RunLock(out) as lock:
        assert lock.took_over is not None


def test_a_silent_lock_from_another_host_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - STALE_AFTER_S - 60)
    with caplog.at_level(logging.WARNING, logger="mixtrain_dali.runlock"):
        with RunLock(out) as lock:
            assert lock.took_over["host"] == "node-elsewhere"
    assert "held by pid 4242 on host node-elsewhere" in caplog.text and "heartbeat stopped" in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_a_fresh_lock_from_another_host_is_refused(tmp_path):
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - 20)
    with pytest.raises(UserError, match=r"pid 4242 on host node-elsewhere, since .*last heartbeat 2\d s ago"):
        RunLock(out).acquire()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == 4242  # left as it was


def test_an_unreadable_lock_is_refused_while_fresh_and_taken_over_when_old(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("{half a rec")
    with pytest.raises(UserError, match="cannot be read"):
        RunLock(out).acquire()
    old = time.time() - STALE_AFTER_S - 60
    os.utime(out / LOCK_NAME, (old, old))
    with RunLock(out) as lock:
        assert lock.took_over == {}


def test_the_lock_is_released_at_exit_and_on_an_exception(tmp_path):
    out = tmp_path / "run"
    with RunLock(out):
        assert (out / LOCK_NAME).is_file()
    assert not out.exists()  # made for the lock and left empty: removed with it
    out.mkdir()
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(RuntimeError, match="boom"):
        with RunLock(out):
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]  # no lock, no temp files


def test_an_out_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(UserError, match="is \\(or is under\\) a file, not a directory"):
        RunLock(tmp_path / "run").acquire()


def test_the_heartbeat_is_refreshed_and_a_lost_lock_stops_the_run(tmp_path):
    out = tmp_path / "run"
    with RunLock(out, heartbeat_s=0.05) as lock:
        first = json.loads((out / LOCK_NAME).read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads((out / LOCK_NAME).read_text())["heartbeat"] > first
        lock.verify()
        _plant(out)  # another run took it over after this one stalled
        with pytest.raises(UserError, match="was taken over by pid 4242 on host node-elsewhere"):
            lock.verify()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == 4242  # not this run's to remove


@pytest.mark.parametrize("round_", range(5))
def test_racing_take_overs_leave_exactly_one_holder(tmp_path, round_):
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - STALE_AFTER_S - 60)
    barrier, results = threading.Barrier(8), []

    def contender():
        lock = RunLock(out)
        barrier.wait()
        try:
            lock.acquire()
            results.append(lock)
        except UserError as e:
            results.append(e)

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holders = [r for r in results if isinstance(r, RunLock)]
    assert len(holders) == 1, results
    assert json.loads((out / LOCK_NAME).read_text())["token"] == holders[0].token
    holders[0].release()
    assert [p.name for p in out.iterdir()] == []  # nothing left aside


def test_an_old_read_of_a_stale_lock_never_removes_the_lock_taken_since(tmp_path, monkeypatch):
    """The interleaving that once gave two holders: A reads the stale lock, B takes it over and
    holds it, then A acts on its old read while C tries to create the lock after every file
    operation A makes. B's lock must stay where it is and C must never get one (before: A
    moved B's lock aside, C's link then succeeded and A deleted B's lock)."""
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - STALE_AFTER_S - 60)
    a, b = RunLock(out), RunLock(out)
    info, raw, mtime = a._read()
    why = a._stale(info, mtime)
    assert why is not None
    b.acquire()
    a._info = {**b._info, "token": uuid.uuid4().hex}  # A's own record

    c_record = tmp_path / "c-record"
    c_record.write_text(json.dumps({**b._info, "token": "c"}))
    real = {name: getattr(os, name) for name in ("rename", "unlink", "link")}
    c_got_it = []

    def then_c_tries(name):
        def op(*args, **kwargs):
            try:
                return real[name](*args, **kwargs)
            finally:
                try:  # another process creating the lock right after A's operation
                    real["link"](c_record, out / LOCK_NAME)
                    c_got_it.append(name)
                except FileExistsError:
                    pass
        return op

    for name in real:
        monkeypatch.setattr(os, name, then_c_tries(name))
    a._take_over(info, raw, why)  # A acting on its old read
    monkeypatch.undo()
    assert not c_got_it
    assert json.loads((out / LOCK_NAME).read_text())["token"] == b.token
    assert a.took_over is None
    b.verify()
    b.release()
    c_record.unlink()
    assert [p.name for p in out.iterdir()] == []


def test_a_take_over_mutex_left_by_a_dead_process_is_cleared(tmp_path, caplog):
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - STALE_AFTER_S - 60)
    dead = {"host": HOST, "boot_id": RunLock(out).boot_id, "pid": _dead_pid(), "proc_start": None,
            "started": time.time(), "heartbeat": time.time(), "token": uuid.uuid4().hex}
    (out / (LOCK_NAME + ".takeover")).write_text(json.dumps(dead))
    with caplog.at_level(logging.WARNING, logger="mixtrain_dali.runlock"):
        with RunLock(out) as lock:
            assert lock.took_over["pid"] == 4242
    assert "taking over the run lock" in caplog.text
    assert [p.name for p in out.iterdir()] == []


def test_a_live_take_over_mutex_is_waited_for_not_removed(tmp_path):
    """While another process holds the mutex (mid take-over), a contender neither removes it
    nor the lock; once it is gone the stale lock is taken over."""
    out = tmp_path / "run"
    _plant(out, heartbeat=time.time() - STALE_AFTER_S - 60)
    mutex = out / (LOCK_NAME + ".takeover")
    mutex.write_text(json.dumps({"host": HOST, "boot_id": RunLock(out).boot_id, "pid": os.getpid(),
                                 "proc_start": None, "started": time.time(), "heartbeat": time.time(),
                                 "token": uuid.uuid4().hex}))
    threading.Timer(0.3, mutex.unlink).start()
    t0 = time.monotonic()
    with RunLock(out) as lock:
        assert lock.took_over["pid"] == 4242
    assert time.monotonic() - t0 >= 0.25


def test_the_lock_file_is_not_a_run(tmp_path):
    from mixtrain_dali.train import clear_run, earlier_run

    out = tmp_path / "run"
    with RunLock(out):
        assert earlier_run(out) == []
        clear_run(out)
        assert (out / LOCK_NAME).is_file()


# -- real `mixtrain train` processes --------------------------------------------------------

ARGS = ["--arch", "resnet18", "--image-size", "32", "--threads", "1", "--no-progress", "--batch-size", "16",
        "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("runlock"))


def _cmd(data, out, epochs, *extra) -> list[str]:
    return [sys.executable, "-m", "mixtrain_dali.cli", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), *ARGS, *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _epochs(out) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _wait_for(proc, ready, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) too early"
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.005)


def test_a_second_train_on_a_running_runs_out_exits_2_naming_it(data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_cmd(data, out, 2), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for(first, lambda: (out / LOCK_NAME).exists())
        os.kill(first.pid, signal.SIGSTOP)  # it holds the lock and stays put while the others try
        others = [subprocess.Popen(_cmd(data, out, 2, *flag), env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
                  for flag in (["--resume"], ["--overwrite"])]  # plain `train` is refused the same way
        for proc in others:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 2, stderr
            assert stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
            assert f"is in use by another run: pid {first.pid} on host {HOST}, since " in stderr
        os.kill(first.pid, signal.SIGCONT)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    assert _epochs(out) == [1, 2], "metrics lines duplicated or lost"
    assert not (out / LOCK_NAME).exists()
    assert not [p for p in out.iterdir() if p.name.startswith(LOCK_NAME)]


def test_resume_after_kill_9_takes_the_dead_runs_lock_over(data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(_cmd(data, out, 3), env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        _wait_for(first, lambda: (out / "checkpoint.pt").exists())
        os.kill(first.pid, signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (out / LOCK_NAME).exists() and _epochs(out) == [1]  # left behind by the kill
    done = subprocess.run(_cmd(data, out, 3, "--resume"), env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    taken = [line for line in done.stderr.splitlines() if "taking over the run lock" in line]
    assert len(taken) == 1, done.stderr
    assert f"held by pid {first.pid} on host {HOST}" in taken[0]
    assert f"process {first.pid} is no longer running" in taken[0]
    assert _epochs(out) == [1, 2, 3], "metrics lines duplicated or lost"
    assert not (out / LOCK_NAME).exists()
