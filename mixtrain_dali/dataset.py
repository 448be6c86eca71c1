"""Dataset scan: an ImageFolder directory (`root/<class>/<image>`) as numpy arrays.

Same semantics as `torchvision.datasets.ImageFolder`: classes are the sorted sub-directory
names, `class_to_idx` maps them to 0..C-1, files are taken recursively inside each class
folder in sorted order, with torchvision's image extensions (case-insensitive).

Memory: at ImageNet scale (1.28M files) one Python string per path costs about 120 bytes
each; `PathList` keeps every path relative to the root in one uint8 buffer with offsets
(about 35 bytes a file) and makes a `str` only when one is asked for. The scan lists each
class folder with `os.scandir` on bytes (no decoding) in a few threads (the directory reads
release the GIL); with `stat=True` it then records every file's size and mtime
(`ImageFolderIndex.stat`), which the manifest (manifest.py) and the file watch compare against.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_EXT_BYTES = tuple(e.encode() for e in IMG_EXTENSIONS)
SCAN_THREADS = 4
# Work over many files (stats, the header check) runs in one thread while it is
# fast and moves to a thread pool only when the first items show it waits on storage: on a
# warm local page cache every syscall is microseconds and a pool only adds GIL hand-offs
# (2 cores, benchmarks/results/startup_threads_cpu.md: the check 6.9 us a file in one thread,
# 17.1 us in 16; stats 3.2 us in one thread, 5.0 us in 4), while on cold or network storage each
# open waits milliseconds and threads overlap the waits.
PROBE_ITEMS = 256
POOL_ABOVE_S = 40e-6  # per item


def run_adaptive(work, n: int, threads: int, chunk: int | None = None) -> list:
    """`work(lo, hi)` over [0, n) in chunks, results concatenated in order: the first
    PROBE_ITEMS in this thread, timed; the rest here too unless they took more than
    POOL_ABOVE_S each, then in a pool of `threads`."""
    first = min(n, PROBE_ITEMS)
    start = time.perf_counter()
    out = list(work(0, first))
    slow = first and (time.perf_counter() - start) / first > POOL_ABOVE_S
    if n <= first:
        return out
    if threads <= 1 or not slow:
        return out + list(work(first, n))
    chunk = chunk or max(PROBE_ITEMS, -(-(n - first) // (4 * threads)))
    with ThreadPoolExecutor(threads) as pool:
        for part in pool.map(lambda lo: work(lo, min(n, lo + chunk)), range(first, n, chunk)):
            out.extend(part)
    return out


class PathList(Sequence):
    """Paths `prefix + rel[i]`, the `rel` parts concatenated in one uint8 buffer.

    A read-only sequence of `str` (indexing, slicing, iteration, `==` with a list), so code
    written for `list[str]` keeps working; `encoded(i)` is the path as uint8 for DALI."""

    def __init__(self, prefix: bytes, buf: np.ndarray, offsets: np.ndarray):
        self.prefix, self.buf, self.offsets = prefix, buf, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rel(self, i: int) -> bytes:
        """Path `i` relative to the root, as bytes."""
        return self.buf[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def bytes_getter(self):
        """A fast `i -> path i as bytes` for loops over many files (`os.open` takes bytes, so
        nothing is decoded: about 0.2 us a path against 1 us for `self[i]`)."""
        whole, offsets, prefix = self.buf.tobytes(), self.offsets, self.prefix
        return lambda i: prefix + whole[offsets[i]:offsets[i + 1]]

    def encoded(self, i: int) -> np.ndarray:
        """Path `i` as a uint8 array (what DALI's file reader takes)."""
        return np.frombuffer(self.prefix + self.rel(i), np.uint8)

    def encoded_batch(self, ids) -> np.ndarray:
        """Paths `ids` as one (n, L) uint8 array, each row a path padded with NUL bytes, built
        by numpy indexing alone. DALI takes a dense batch without a per-sample check, and its
        file reader opens the name up to the first NUL, which no POSIX path contains."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        starts, lens = self.offsets[ids], self.offsets[ids + 1] - self.offsets[ids]
        cols = np.arange(int(lens.max()) if len(ids) else 0)
        # clipped indices past a path's end read a neighbour's bytes, then zeroed (with no
        # columns nothing is read, so an empty buffer is fine)
        rel = self.buf[np.minimum(starts[:, None] + cols, len(self.buf) - 1)]
        rel[cols >= lens[:, None]] = 0
        prefix = np.broadcast_to(np.frombuffer(self.prefix, np.uint8), (len(ids), len(self.prefix)))
        return np.concatenate([prefix, rel], axis=1)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"path index {i} out of range for {len(self)} paths")
        return os.fsdecode(self.prefix + self.rel(i))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __eq__(self, other) -> bool:
        if isinstance(other, PathList):
            return (self.prefix == other.prefix and np.array_equal(self.offsets, other.offsets)
                    and np.array_equal(self.buf, other.buf))
        return isinstance(other, Sequence) and not isinstance(other, (str, bytes)) and list(self) == list(other)

    __hash__ = None  # mutable arrays inside: not hashable, like a list

    def __repr__(self) -> str:
        return f"PathList({len(self)} paths under {os.fsdecode(self.prefix)!r})"

    @classmethod
    def from_strings(cls, root: str | os.PathLike, paths: list[str]) -> "PathList":
        """From full paths, each under `root`."""
        prefix = _prefix(root)
        rels = []
        for p in paths:
            e = os.fsencode(p)
            if not e.startswith(prefix):
                raise ValueError(f"path {p!r} is not under {os.fsdecode(prefix)!r}")
            rels.append(e[len(prefix):])
        return cls(prefix, *_pack(rels))


def _prefix(root) -> bytes:
    """What is put before each relative path: `root` and a separator, as ImageFolder joins."""
    return os.fsencode(os.path.join(str(root), ""))


def _pack(rels: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(r) for r in rels), np.int64, len(rels))
    offsets = np.zeros(len(rels) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return np.frombuffer(b"".join(rels), np.uint8), offsets


@dataclass
class ImageFolderIndex:
    """Every sample of one split: its path and label, in ImageFolder order (and, from a
    `stat=True` scan, each file's size and mtime in ns at the scan)."""

    root: Path
    classes: list[str]
    class_to_idx: dict[str, int]
    paths: PathList
    labels: np.ndarray  # (N,) int64
    sizes: np.ndarray | None = field(default=None, repr=False)   # (N,) int64
    mtimes: np.ndarray | None = field(default=None, repr=False)  # (N,) int64
    # (N, 2) int32 image height and width after EXIF rotation, -1 where unknown; from the file
    # check or its manifest (robust.check_index), None without one
    hw: np.ndarray | None = field(default=None, repr=False)
    _path_bytes: np.ndarray | None = field(default=None, repr=False)
    _path_lens: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.paths, PathList):
            self.paths = PathList.from_strings(self.root, list(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(path, label) pairs, as `ImageFolder.samples` (made on each call: 1.28M tuples
        cost about 250 MB, which the loaders themselves never build)."""
        return list(zip(self.paths, self.labels.tolist()))

    @property
    def path_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """Paths as a zero-padded `(N, L)` uint8 array and their lengths, built once (the
        loaders build one batch's rows at a time, `paths.encoded_batch(ids)`: this array is N
        times the longest path)."""
        if self._path_bytes is None:
            n = len(self)
            lens = np.diff(self.paths.offsets) + len(self.paths.prefix)
            buf = self.paths.encoded_batch(np.arange(n)) if n else np.zeros((0, 1), np.uint8)
            self._path_bytes, self._path_lens = buf, lens
        return self._path_bytes, self._path_lens

    def image_sizes(self) -> np.ndarray:
        """`hw`, made first (every size unknown, -1) if the index has none for its files."""
        if self.hw is None or len(self.hw) != len(self):
            self.hw = np.full((len(self), 2), -1, np.int32)
        return self.hw

    def stat(self, ids=None) -> None:
        """Fill `sizes` and `mtimes` with one `os.stat` per file (-1 where it fails), for an
        index scanned without `stat=True`; `ids`: only those files. In this thread unless
        storage is slow (`run_adaptive`, as the file check)."""
        if self.sizes is None:
            self.sizes, self.mtimes = np.full(len(self), -1, np.int64), np.full(len(self), -1, np.int64)
        ids = np.arange(len(self)) if ids is None else np.asarray(ids, np.int64)
        path = self.paths.bytes_getter()

        def work(lo: int, hi: int) -> list:
            for i in ids[lo:hi].tolist():
                try:
                    st = os.stat(path(i))
                except OSError:
                    self.sizes[i] = self.mtimes[i] = -1
                    continue
                self.sizes[i], self.mtimes[i] = st.st_size, st.st_mtime_ns
            return []

        run_adaptive(work, len(ids), SCAN_THREADS)

    def fingerprint(self) -> dict:
        """What a checkpoint remembers of the data, to refuse resuming on another dataset."""
        return {"classes": list(self.classes), "num_samples": len(self)}


def splits(root: str | os.PathLike) -> dict[str, Path]:
    """The ImageFolder splits at `root`: a dataset root that holds train/ gives its train/
    and val/ (where there is one); any other folder is one split itself, named after it."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data directory {str(root)!r} does not exist or is not a directory")
    if (root / "train").is_dir():
        return {name: root / name for name in ("train", "val") if (root / name).is_dir()}
    return {root.name or str(root): root}


def train_split(root: str | os.PathLike) -> Path:
    """ROOT/train for a dataset root with train/, else ROOT itself (a folder of class folders)."""
    return next(iter(splits(root).values()))


def find_classes(root: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data directory {str(root)!r} does not exist or is not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise UserError(
            f"no class folders in {str(root)!r}: expected the ImageFolder layout root/<class>/<image>"
        )
    return classes, {c: i for i, c in enumerate(classes)}


def _list_class(root: bytes, cls: bytes) -> list[bytes]:
    """Image files under `root/cls`, relative to `root`, in `sorted(os.walk(...))` order
    (directories by path, files by name; symlinked folders followed)."""
    found: list[tuple[bytes, list]] = []
    stack = [cls]
    while stack:
        rel = stack.pop()
        files = []
        try:
            with os.scandir(root + rel) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir()
                    except OSError:
                        is_dir = False
                    if is_dir:
                        stack.append(rel + b"/" + e.name)
                    elif e.name.lower().endswith(_EXT_BYTES):
                        files.append(e.name)
        except OSError:
            if rel == cls:
                raise
            continue  # os.walk skips an unreadable sub-folder too
        found.append((rel, files))
    found.sort(key=lambda t: t[0])
    rels: list[bytes] = []
    for rel, files in found:
        head = rel + b"/"
        rels.extend(head + name for name in sorted(files))
    return rels


def scan_image_folder(root: str | os.PathLike, allow_empty_classes: bool = False,
                      classes: list[str] | None = None, stat: bool = False,
                      threads: int = SCAN_THREADS) -> ImageFolderIndex:
    """Scan `root` like `torchvision.datasets.ImageFolder(root)`.

    `classes`: label with these class names (e.g. the train split's) instead of the folders
    found: the folders must be among them (a val split may lack some classes), and a label is
    the class's index in `classes`, so it means the same class as in training.
    `stat`: also record each file's size and mtime (`index.sizes`, `index.mtimes`).

    Raises `UserError` naming the path for a missing directory, a directory with no class
    folders, or classes with no images (torchvision raises for those too).
    """
    root = Path(root)
    found, class_to_idx = find_classes(root)
    if classes is not None:
        classes = list(classes)
        unknown = [c for c in found if c not in classes]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise UserError(f"{len(unknown)} class folder(s) in {str(root)!r} are not among the "
                            f"{len(classes)} given classes (the train classes): {shown}")
        class_to_idx = {c: i for i, c in enumerate(classes)}
    else:
        classes = found
    prefix = _prefix(root)

    def work(cls: str):  # packed per class: no list of a million bytes objects at any time
        rels = _list_class(prefix, os.fsencode(cls))
        return b"".join(rels), np.fromiter(map(len, rels), np.int64, len(rels))

    # a listing of names gains from a few threads (measured: 0.9 s in 2 threads, 1.4 s in one)
    if threads > 1 and len(found) > 1:
        with ThreadPoolExecutor(min(threads, os.cpu_count() or 1)) as pool:
            listed = list(pool.map(work, found))
    else:
        listed = [work(c) for c in found]
    counts = np.array([len(r[1]) for r in listed], np.int64)
    empty = [cls for cls, n in zip(found, counts) if n == 0]
    if empty and not allow_empty_classes:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise UserError(
            f"{len(empty)} class folder(s) in {str(root)!r} hold no images ({shown}); "
            f"valid extensions: {', '.join(IMG_EXTENSIONS)}"
        )
    labels = np.repeat(np.array([class_to_idx[c] for c in found], np.int64), counts)
    offsets = np.zeros(int(counts.sum()) + 1, np.int64)
    np.cumsum(np.concatenate([r[1] for r in listed] + [np.zeros(0, np.int64)]), out=offsets[1:])
    buf = np.frombuffer(b"".join(r[0] for r in listed), np.uint8)
    del listed
    index = ImageFolderIndex(root, classes, class_to_idx, PathList(prefix, buf, offsets), labels)
    if stat:
        index.stat()
    return index
