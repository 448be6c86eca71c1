"""Reading ahead (docs/architecture.md, "Data flow of one epoch", step 2, `read="ahead"`): the
files of the next batches read on a few background threads while DALI decodes this one.

Why: with `read="graph"` the train graph reads each batch's files with `fn.io.file.read`, a
CPU operator that runs in the pipeline's thread pool when the iteration runs, so the reading
sits on the critical path and takes threads from the decode (21% of the loader's time in the
one H100 profile). DALI's own `readers.file` reads ahead on a thread of its own. An epoch's
plan says which files every batch reads, in order, when the epoch starts, so the source can
do the same: batch i+1..i+d are read while DALI works on batch i, and DALI is handed the
encoded bytes (one uint8 array per slot) instead of paths.

Each file is read with one open, fstat and `os.readv` into a numpy buffer; the calls release
the GIL, so the threads overlap with each other and with the training thread. The fstat
(size, mtime) is kept with the bytes, so the file watch can tell whether the bytes DALI gets
are of the version it checked (robust.CheckedPlanSource). A file that cannot be read, or
reads empty, is reported with a reason, never handed to the decoder.

At most `depth` batches of bytes are waiting at once. `start` drops the work of an earlier
start (a resume, a re-plan after a bad file) and `stop` shuts the threads down; they also go
when the reader is garbage-collected (ThreadPoolExecutor's threads exit when it is).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import numpy as np

READ_THREADS = 4  # reads release the GIL; more help only on slow (network) storage
THREAD_PREFIX = "mixtrain-read"


class BatchRead:
    """One batch's files as read: `arrays` (uint8, one per slot, empty where the read
    failed), `seen` (2, n) int64 size and mtime_ns from the fstat of each read (-1: the
    file could not be opened; the size is the bytes read when a file shrank mid-read), and
    `errors` {slot: reason} of the files that could not be read or read empty."""

    __slots__ = ("arrays", "seen", "errors")

    def __init__(self, arrays: list[np.ndarray], seen: np.ndarray, errors: dict[int, str]):
        self.arrays, self.seen, self.errors = arrays, seen, errors


_EMPTY = np.zeros(0, np.uint8)


def read_file(path: bytes) -> tuple[np.ndarray, int, int, str | None]:
    """(bytes, size, mtime_ns, None) or (empty, size, mtime_ns, reason) for one file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return _EMPTY, -1, -1, "missing"
    except OSError as e:
        return _EMPTY, -1, -1, f"unreadable ({e.strerror})"
    try:
        st = os.fstat(fd)
        buf = np.empty(st.st_size, np.uint8)
        got = 0
        while got < st.st_size:  # a regular file reads whole in one call unless it shrinks meanwhile
            n = os.readv(fd, [memoryview(buf)[got:]])
            if n == 0:
                break
            got += n
    except OSError as e:
        return _EMPTY, -1, -1, f"unreadable ({e.strerror})"
    finally:
        os.close(fd)
    if got == 0:
        return _EMPTY, got, st.st_mtime_ns, "empty (0 bytes)"
    return (buf if got == st.st_size else buf[:got]), got, st.st_mtime_ns, None


def read_files(paths: list[bytes]) -> BatchRead:
    """`read_file` over `paths`, in order (one task of the pool: no reference to the reader,
    so a dropped reader's executor can be collected while a task runs)."""
    arrays, seen, errors = [], np.full((2, len(paths)), -1, np.int64), {}
    for j, path in enumerate(paths):
        data, seen[0, j], seen[1, j], why = read_file(path)
        arrays.append(data)
        if why is not None:
            errors[j] = why
    return BatchRead(arrays, seen, errors)


def _join(parts: list[BatchRead]) -> BatchRead:
    if len(parts) == 1:
        return parts[0]
    arrays, errors, at = [], {}, 0
    for p in parts:
        arrays += p.arrays
        errors.update({at + j: why for j, why in p.errors.items()})
        at += len(p.arrays)
    return BatchRead(arrays, np.concatenate([p.seen for p in parts], 1), errors)


class ReadAhead:
    """Reads batch `position`..`position + depth - 1` of an epoch ahead, in order, each split
    across the threads; `take(i)` returns batch i's `BatchRead` (waiting for it if need be)
    and queues batch i + depth.

    `path`: i -> the path of sample i as bytes; `slot_ids(j)`: the sample ids of batch j's
    slots, in slot order (set by `start`). Not thread-safe: one caller (DALI's feeding
    thread, which calls the source)."""

    def __init__(self, path: Callable[[int], bytes], depth: int, threads: int = READ_THREADS):
        if depth < 1 or threads < 1:
            raise ValueError(f"depth={depth}, threads={threads}: both must be >= 1")
        self.path, self.depth, self.threads = path, int(depth), int(threads)
        self._pool: ThreadPoolExecutor | None = None
        self._slot_ids: Callable[[int], np.ndarray] | None = None
        self._n = 0
        self._pending: dict[int, list[Future]] = {}
        self._next = 0  # the next batch to queue

    def start(self, slot_ids: Callable[[int], np.ndarray], n_batches: int, position: int = 0) -> None:
        """Read batches position.. of `n_batches` from now on; what an earlier start queued is
        dropped (its running reads finish, unseen)."""
        self._drop()
        self._slot_ids, self._n, self._next = slot_ids, int(n_batches), int(position)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=THREAD_PREFIX)
        self._fill(position)

    def take(self, position: int) -> BatchRead:
        """Batch `position`'s files (read now if it was not queued: a caller that skipped)."""
        futures = self._pending.pop(position, None)
        if futures is None:
            self._drop()
            self._next = position + 1
            read = read_files([self.path(i) for i in self._slot_ids(position).tolist()])
        else:
            read = _join([f.result() for f in futures])
        self._fill(position + 1)
        return read

    def stop(self) -> None:
        """Drop what is queued and shut the threads down (waits for the reads in progress: a
        chunk of a batch per thread at most; not when called on one of them, as a garbage
        collection run there can, since a thread cannot wait for itself)."""
        self._drop()
        self._slot_ids, self._n = None, 0
        if self._pool is not None:
            mine = threading.current_thread().name.startswith(THREAD_PREFIX)
            self._pool.shutdown(wait=not mine, cancel_futures=True)
            self._pool = None

    @property
    def running(self) -> bool:
        """Whether the threads are up (between `start` and `stop`)."""
        return self._pool is not None

    def _fill(self, position: int) -> None:
        """Queue batches up to `position + depth - 1` (at most `depth` waiting)."""
        end = min(self._n, position + self.depth)
        while self._next < end:
            j = self._next
            paths = [self.path(i) for i in self._slot_ids(j).tolist()]
            step = -(-len(paths) // self.threads) or 1
            self._pending[j] = [self._pool.submit(read_files, paths[lo:lo + step])
                                for lo in range(0, max(len(paths), 1), step)]
            self._next += 1

    def _drop(self) -> None:
        for futures in self._pending.values():
            for f in futures:
                f.cancel()
        self._pending.clear()
