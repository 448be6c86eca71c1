"""The manifest: what the up-front file check found, kept between runs (docs/architecture.md,
"Start-up").

Checking every file's header and end marker (robust.py) is most of a cold start at ImageNet
scale. The manifest remembers, for every file of a split, its path relative to the split
root, size, mtime (ns), verdict (good, or the reason it is bad) and image size (height and
width, -1 if unknown; imagesize.py). The next start lists the
tree again (one `os.scandir` listing with a stat per file, dataset.py) and checks only what
the manifest cannot vouch for:

- a file whose size or mtime differs from the manifest's: checked again;
- a file the manifest does not hold (added): checked;
- a file the manifest holds but the tree does not (deleted): dropped.

Where: `<split root>/.mixtrain-manifest.npz` when that folder is writable, else
`$XDG_CACHE_HOME/mixtrain/manifests/` (default `~/.cache/mixtrain/manifests/`) under a name
made from the split's absolute path; `location=` gives another folder. One file, written
atomically (a temporary file, then `os.replace`), by one rank. A manifest that cannot be
read (corrupt, truncated, another version) is rebuilt with one warning.

Matching is per class folder: a class whose file list is byte-for-byte the manifest's is
compared with numpy alone; only a class that changed builds a dict of its own files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import ImageFolderIndex

log = logging.getLogger(__name__)

MANIFEST_NAME = ".mixtrain-manifest.npz"
VERSION = 2  # 2: image sizes (hw); a version-1 manifest is rebuilt


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mixtrain` (default `~/.cache/mixtrain`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mixtrain"


def manifest_path(split_root: str | os.PathLike, location: str | os.PathLike | None = None) -> Path:
    """Where the manifest of `split_root` lives: in `location` if given, else in the split
    folder if it is writable, else in the user cache directory."""
    split_root = Path(split_root)
    if location is None and os.access(split_root, os.W_OK):
        return split_root / MANIFEST_NAME
    folder = Path(location) if location is not None else cache_dir() / "manifests"
    absolute = os.path.abspath(split_root)
    digest = hashlib.blake2b(os.fsencode(absolute), digest_size=8).hexdigest()
    return folder / f"{Path(absolute).name or 'root'}-{digest}.npz"


@dataclass
class Manifest:
    """A split's files (relative paths in one buffer, grouped by class folder) and their
    size, mtime and verdict at the last check. `bad`: {file number: reason}."""

    classes: list[str]      # class folders, in file order
    counts: np.ndarray      # (C,) files per class folder
    buf: np.ndarray         # uint8, relative paths concatenated
    offsets: np.ndarray     # (N + 1,) int64
    sizes: np.ndarray       # (N,) int64
    mtimes: np.ndarray      # (N,) int64
    bad: dict[int, str]
    hw: np.ndarray          # (N, 2) int32 image height and width, -1: unknown

    @classmethod
    def of(cls, index: ImageFolderIndex, bad: dict[int, str]) -> "Manifest":
        groups = _class_groups(index)
        return cls([name for name, _, _ in groups], np.array([b - a for _, a, b in groups], np.int64),
                   index.paths.buf, index.paths.offsets, index.sizes, index.mtimes,
                   {int(i): str(r) for i, r in bad.items()}, index.image_sizes())

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: readers see the old file or the new one, never a part."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"version": VERSION, "classes": self.classes,
                           "bad": {str(i): r for i, r in self.bad.items()}})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.frombuffer(meta.encode(), np.uint8), counts=self.counts,
                         buf=self.buf, offsets=self.offsets, sizes=self.sizes, mtimes=self.mtimes,
                         hw=self.hw)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read a manifest; raises ValueError (or OSError) for anything short of a valid one."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("version") != VERSION:
                raise ValueError(f"version {meta.get('version')!r}, expected {VERSION}")
            m = cls(list(meta["classes"]), z["counts"], z["buf"], z["offsets"], z["sizes"], z["mtimes"],
                    {int(i): r for i, r in meta["bad"].items()}, z["hw"])
        n = len(m.sizes)
        if not (len(m.offsets) == n + 1 and len(m.mtimes) == n and m.hw.shape == (n, 2) and len(m.counts) == len(m.classes)
                and int(m.counts.sum()) == n and m.offsets[0] == 0 and m.offsets[-1] == len(m.buf)
                and (np.diff(m.offsets) >= 0).all() and all(0 <= i < n for i in m.bad)):
            raise ValueError("inconsistent arrays")
        return m


def read_manifest(path: str | os.PathLike) -> Manifest | None:
    """The manifest at `path`, or None: absent (silently), unreadable (one warning)."""
    if not os.path.exists(path):
        return None
    try:
        return Manifest.load(path)
    except Exception as e:  # corrupt zip, bad JSON, wrong shapes, no permission: rebuild
        log.warning("file-check manifest %s cannot be used (%s: %s): checking every file again and "
                    "rebuilding it", path, type(e).__name__, e)
        return None


def write_manifest(path: str | os.PathLike, index: ImageFolderIndex, bad: dict[int, str]) -> bool:
    """Save `index`'s manifest; a failure (read-only folder, full disk) is one warning."""
    try:
        Manifest.of(index, bad).save(path)
        return True
    except OSError as e:
        log.warning("cannot write the file-check manifest %s (%s): the next start checks every "
                    "file again (give another place with manifest=DIR)", path, e.strerror or e)
        return False


def _class_groups(index: ImageFolderIndex) -> list[tuple[str, int, int]]:
    """(class folder, first file, end) per run of equal labels, in file order."""
    labels = index.labels
    if len(labels) == 0:
        return []
    starts = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], starts, [len(labels)]])
    return [(index.classes[labels[a]], int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def reuse(index: ImageFolderIndex, manifest: Manifest) -> tuple[np.ndarray, dict[int, str], bool]:
    """What `manifest` says about `index`'s files.

    With sizes and mtimes in `index` (a `stat=True` scan) a file is unchanged when its path,
    size and mtime are the manifest's. Without (`index.sizes is None`: the loader's file
    watch will stat every file before its batch is read, so start-up skips the stats), a
    file is taken as the manifest has it when its path is there, and `index` gets the
    manifest's sizes and mtimes for it (-1 for new files, which are to be checked).
    Unchanged files take the manifest's image sizes into `index.hw`.

    Returns (ids of the files to check: new or changed, {id: reason} of the unchanged files
    the manifest found bad, whether the manifest differs from the tree at all)."""
    paths = index.paths
    by_name = index.sizes is None
    index.image_sizes()  # made (all unknown) if the index has none yet
    if by_name:
        index.sizes = np.full(len(index), -1, np.int64)
        index.mtimes = np.full(len(index), -1, np.int64)
    todo: list[np.ndarray] = []
    bad: dict[int, str] = {}
    m_start = dict(zip(manifest.classes, np.concatenate([[0], np.cumsum(manifest.counts)[:-1]]).tolist()))
    m_count = dict(zip(manifest.classes, manifest.counts.tolist()))
    m_bad = np.zeros(len(manifest.sizes), bool)
    m_bad[list(manifest.bad)] = True
    changed = set(manifest.classes) != {name for name, _, _ in _class_groups(index)}
    for name, a, b in _class_groups(index):
        if name not in m_start:
            todo.append(np.arange(a, b))
            continue
        ma, mb = m_start[name], m_start[name] + m_count[name]
        if _same_files(paths.buf, paths.offsets, a, b, manifest.buf, manifest.offsets, ma, mb):
            match = np.arange(ma, mb)  # file a + j is the manifest's ma + j
        else:
            changed = True
            where = {manifest.buf[manifest.offsets[j]:manifest.offsets[j + 1]].tobytes(): j
                     for j in range(ma, mb)}
            match = np.fromiter((where.get(paths.rel(i), -1) for i in range(a, b)), np.int64, b - a)
        known = match >= 0
        same = known.copy()
        if by_name:
            index.sizes[a:b][known] = manifest.sizes[match[known]]
            index.mtimes[a:b][known] = manifest.mtimes[match[known]]
        same[known] = ((manifest.sizes[match[known]] == index.sizes[a:b][known])
                       & (manifest.mtimes[match[known]] == index.mtimes[a:b][known]))
        same &= index.sizes[a:b] >= 0
        index.hw[a:b][same] = manifest.hw[match[same]]
        changed |= not same.all()
        todo.append(np.flatnonzero(~same) + a)
        for j in np.flatnonzero(same & m_bad[np.where(known, match, 0)]):
            bad[a + int(j)] = manifest.bad[int(match[j])]
    ids = np.concatenate(todo) if todo else np.zeros(0, np.int64)
    return ids.astype(np.int64), bad, changed


def _same_files(buf, offsets, a, b, mbuf, moffsets, ma, mb) -> bool:
    """Whether files a..b of one listing are, byte for byte, files ma..mb of the other."""
    if b - a != mb - ma:
        return False
    if not np.array_equal(offsets[a:b + 1] - offsets[a], moffsets[ma:mb + 1] - moffsets[ma]):
        return False
    return np.array_equal(buf[offsets[a]:offsets[b]], mbuf[moffsets[ma]:moffsets[mb]])
