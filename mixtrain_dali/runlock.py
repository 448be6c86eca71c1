"""One writer per run directory: the lock `train()` holds (rank 0) for a run's whole life.

Without it two `mixtrain train ... --resume` on one `--out` both train and both append to
metrics.jsonl. The lock is the file `OUT/.mixtrain.lock`, made for every file system the
run directory may be on, a shared one across nodes (NFS) included, where `flock` cannot be
relied on:

1. Taking it: the holder's record (JSON: host, boot id, pid, the process's start time, when
   it was taken, a heartbeat, a random token) is written whole to a temporary file and
   hard-linked to the lock's name; the link fails if the name exists, atomically on NFS
   too, and nobody ever sees a half-written lock. Where hard links are not supported, an
   `O_CREAT | O_EXCL` create.
2. Holding it: a daemon thread rewrites the heartbeat every HEARTBEAT_S seconds, in place
   (the record is padded to a fixed size, so one write replaces it) and only after checking
   the token is still its own.
3. A lock that is there already belongs to a live run, which is refused (`UserError`,
   naming the holder), unless it is stale: on this host (same host name and boot id) when
   its pid is gone, a zombie, or now a later process; on another host when its heartbeat
   is older than STALE_AFTER_S (clocks of nodes may differ by seconds, not minutes).
4. Taking over a stale lock: only the holder of the take-over mutex
   (`OUT/.mixtrain.lock.takeover`, made as in step 1) removes a lock, and only if the
   lock's bytes are still the record judged stale; then step 1 again, where one of the
   racing processes wins and the others see a live lock. No other process ever removes
   or moves a lock it does not hold, so a lock just taken is never touched, however the
   contenders interleave. The mutex is held for a read and an unlink; one left by a
   process that died in between is cleared when that process is gone (this host) or
   after STALE_AFTER_S (another host). One warning line says whose lock it was and why
   it is taken to be dead.
5. Releasing it (also when the run fails): the thread stops, the lock is removed if it is
   still this run's. `verify()` (every epoch, before writing) stops a run whose lock was
   taken over or removed meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".mixtrain.lock"  # a dot file: no run file (earlier_run, clear_run) is ever it
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # a heartbeat this old on another host: its process or host is gone
_RECORD_BYTES = 4096   # records are padded to this size: a heartbeat is one in-place write


def _boot_id() -> str | None:
    """This boot's id (Linux): a pid only means a process on the same host since the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks after boot) of `pid` from /proc (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is field 3
    return fields[0], int(fields[19])


def _pid_gone(pid: int, start: int | None) -> str | None:
    """Why process `pid` (started at `start`, in /proc's ticks) is no longer running on this
    host, or None when it is (or cannot be told apart from a live one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} is no longer running"
    except PermissionError:
        pass  # alive, another user's
    stat = _proc_stat(pid)
    if stat is not None:
        if stat[0] in ("Z", "X"):
            return f"process {pid} has exited"
        if start is not None and stat[1] != start:
            return f"process {pid} has exited (the pid now belongs to a later process)"
    return None


def _readable(info: dict) -> bool:
    """A lock record that names its process (a pid to check, a heartbeat to go by)."""
    pid = info.get("pid")
    return isinstance(pid, int) and pid > 0 and isinstance(info.get("heartbeat"), (int, float))


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def describe_holder(info: dict) -> str:
    """The holder in words: 'pid 123 on host node7, since 2024-05-01 12:00:03'."""
    if not _readable(info):
        return "an unknown process (the lock file cannot be read)"
    since = f", since {_when(info['started'])}" if isinstance(info.get("started"), (int, float)) else ""
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}{since}"


class RunLock:
    """The lock of run directory `out_dir` (see the module's docstring), a context manager:
    `with RunLock(out): ...` holds it for the block, and raises `UserError` naming the holder
    when a live run holds it. The directory is made if missing (and removed again on release
    if still empty, so a run that stops at a bad input leaves no trace)."""

    def __init__(self, out_dir: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 stale_after_s: float = STALE_AFTER_S):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.host, self.boot_id = socket.gethostname(), _boot_id()
        self.token: str | None = None
        self.took_over: dict | None = None  # the stale holder's record, when one was taken over
        self._info: dict = {}
        self._lost: str | None = None  # why the lock is no longer this run's
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made_dir = False

    # -- taking it --------------------------------------------------------------------------
    def acquire(self) -> "RunLock":
        if self.token is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self._made_dir = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"--out {str(self.out_dir)!r} is (or is under) a file, not a directory: "
                            "give a directory for the run") from None
        except PermissionError as e:
            raise self._unwritable(e) from None
        now = time.time()
        stat = _proc_stat(os.getpid())
        self._info = {"host": self.host, "boot_id": self.boot_id, "pid": os.getpid(),
                      "proc_start": stat[1] if stat else None, "started": now, "heartbeat": now,
                      "token": uuid.uuid4().hex, "argv": " ".join(sys.argv)[:200]}
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:  # each round takes it, refuses, or clears a stale one
            if self._create(self.path):
                self.token = self._info["token"]
                self._lost = None
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="mixtrain-runlock", daemon=True)
                self._thread.start()
                return self
            held = self._read()
            if held is None:
                continue  # released meanwhile
            info, raw, mtime = held
            why = self._stale(info, mtime)
            if why is None:
                self._forget_dir()
                raise UserError(self._refusal(info, mtime))
            self._take_over(info, raw, why)
        self._forget_dir()
        raise UserError(f"could not take the run lock {str(self.path)!r}: other processes keep taking "
                        "it; make sure a single `mixtrain train` writes to this --out")

    def _encode(self) -> bytes:
        data = json.dumps(self._info).encode()
        if len(data) >= _RECORD_BYTES:  # an argv of escaped characters: the size must hold
            self._info["argv"] = ""
            data = json.dumps(self._info).encode()
        return data + b" " * (_RECORD_BYTES - 1 - len(data)) + b"\n"

    def _create(self, path: Path) -> bool:
        """Step 1: the record, whole, under `path` (the lock or the take-over mutex) if
        nothing is there."""
        tmp = self.out_dir / f"{LOCK_NAME}.{self._info['token']}.tmp"
        data = self._encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except PermissionError as e:
            self._forget_dir()
            raise self._unwritable(e) from None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            if os.stat(tmp).st_nlink == 2:  # NFS: the link was made, its reply was lost
                return True
            return self._create_exclusive(path, data)  # no hard links on this file system
        finally:
            tmp.unlink(missing_ok=True)

    def _unwritable(self, e: OSError) -> UserError:
        return UserError(f"--out {str(self.out_dir)!r}: cannot write there ({e.strerror}); give a "
                         "directory you can write to")

    def _create_exclusive(self, path: Path, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _read(self, path: Path | None = None) -> tuple[dict, bytes, float] | None:
        """The lock's (or `path`'s) (record, bytes, mtime); None if it is gone. A record that
        does not parse is read again a few times (an O_EXCL create is written after it
        appears); {} if it never does."""
        path = self.path if path is None else path
        for attempt in range(4):
            try:
                raw = path.read_bytes()
                mtime = os.stat(path).st_mtime
            except FileNotFoundError:
                return None
            try:
                info = json.loads(raw)
                if isinstance(info, dict):
                    return info, raw, mtime
            except ValueError:
                pass
            time.sleep(0.05 * (attempt + 1))
        return {}, raw, mtime

    def _same_host(self, info: dict) -> bool:
        """Its pid means a process here: the same host name, and the same boot where both know it."""
        boot = info.get("boot_id")
        known = boot is not None and self.boot_id is not None
        return info.get("host") == self.host and (not known or boot == self.boot_id)

    def _stale(self, info: dict, mtime: float) -> str | None:
        """Step 3: why the lock `info` belongs to a dead process, or None if it may be alive."""
        pid = info.get("pid")
        if not _readable(info):  # no record to go by: only its age
            age = time.time() - mtime
            return (f"its file cannot be read and has not changed for {age:.0f} s"
                    if age > self.stale_after_s else None)
        if self._same_host(info):
            return _pid_gone(pid, info.get("proc_start"))
        age = time.time() - info["heartbeat"]
        if age > self.stale_after_s:
            return (f"its heartbeat stopped {age:.0f} s ago (a live run refreshes it every "
                    f"{self.heartbeat_s:.0f} s; stale after {self.stale_after_s:.0f} s)")
        return None

    def _refusal(self, info: dict, mtime: float) -> str:
        if not _readable(info):
            return (f"--out {str(self.out_dir)!r} is locked by another run: its lock file {LOCK_NAME} "
                    f"cannot be read (changed {time.time() - mtime:.0f} s ago); if no run uses this "
                    f"--out, delete {str(self.path)!r}, or give another --out")
        what = (f"--out {str(self.out_dir)!r} is in use by another run: {describe_holder(info)}")
        if self._same_host(info):
            return f"{what} (this host); wait for it to finish or stop it, or give another --out"
        return (f"{what}, last heartbeat {time.time() - info['heartbeat']:.0f} s ago; wait for it to "
                f"finish or stop it, or give another --out (the lock of a run that died is taken "
                f"over once its heartbeat is {self.stale_after_s:.0f} s old)")

    def _take_over(self, info: dict, raw: bytes, why: str) -> None:
        """Step 4: remove the stale lock, holding the take-over mutex, if the lock is still the
        record `raw` judged stale (a contender's old read never removes a lock taken since)."""
        mutex = self.path.with_name(LOCK_NAME + ".takeover")
        if not self._create(mutex):
            self._clear_dead_mutex(mutex)
            time.sleep(0.005 + 0.02 * (uuid.uuid4().int % 100) / 100)  # its holder is mid-way
            return
        try:
            held = self._read()
            if held is None or held[1] != raw:
                return  # released, or taken since: the next round sees which
            self.path.unlink()
            self.took_over = info
            log.warning("taking over the run lock of %s: it was held by %s, but %s", self.out_dir,
                        describe_holder(info), why)
        finally:
            mine = self._read(mutex)
            if mine is not None and mine[0].get("token") == self._info["token"]:
                mutex.unlink(missing_ok=True)

    def _clear_dead_mutex(self, mutex: Path) -> None:
        """A take-over mutex left by a process that died holding it (it is held for a read and an
        unlink): removed when that process is gone, by the same rules as a lock. Moved aside
        first and put back if it changed meanwhile, so of racing clearers one removes it."""
        held = self._read(mutex)
        if held is None or self._stale(held[0], held[2]) is None:
            return
        aside = self.out_dir / f"{LOCK_NAME}.{self._info['token']}.stale"
        try:
            os.rename(mutex, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != held[1]:  # a live take-over's mutex: put it back
                try:
                    os.link(aside, mutex)
                except OSError:
                    pass  # another mutex meanwhile, or no hard links: its holder finishes anyway
        finally:
            aside.unlink(missing_ok=True)

    # -- holding it -------------------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._refresh()
            except OSError as e:  # a file server's hiccup: the next beat tries again
                log.debug("run lock heartbeat failed: %s", e)
            if self._lost:
                return

    def _refresh(self) -> None:
        """Step 2: rewrite the heartbeat, in the file this run holds only."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            self._lost = "was removed"
            return
        try:
            try:
                info = json.loads(os.pread(fd, 2 * _RECORD_BYTES, 0))
            except ValueError:
                info = {}
            if info.get("token") != self.token:
                self._lost = f"was taken over by {describe_holder(info)}"
                return
            self._info["heartbeat"] = time.time()
            os.pwrite(fd, self._encode(), 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def verify(self) -> None:
        """Raise `UserError` if the lock is no longer this run's (taken over after this process
        stalled for longer than STALE_AFTER_S, or deleted): one writer per --out, so stop."""
        if self.token is None:
            return
        if not self._lost:
            held = self._read()
            if held is None:
                self._lost = "was removed"
            elif held[0].get("token") != self.token:
                self._lost = f"was taken over by {describe_holder(held[0])}"
        if self._lost:
            raise UserError(f"the run lock {str(self.path)!r} {self._lost} while this run held it: "
                            f"stopping, so that one run alone writes to --out {str(self.out_dir)!r}")

    # -- releasing it -----------------------------------------------------------------------
    def release(self) -> None:
        if self.token is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = self._read()
        # this run's lock only (a run that stalled for minutes may have lost it)
        if held is not None and held[0].get("token") == self.token:
            self.path.unlink(missing_ok=True)
        self.token = self._thread = None
        self._forget_dir()

    def _forget_dir(self) -> None:
        """Remove the run directory if this lock made it and nothing else was put there."""
        if self._made_dir:
            self._made_dir = False
            try:
                self.out_dir.rmdir()
            except OSError:
                pass  # not empty: the run wrote something

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
