"""Dataset scan: an ImageFolder directory (`root/<class>/<image>`) as numpy arrays.

Same semantics as `torchvision.datasets.ImageFolder`: classes are the sorted sub-directory
names, `class_to_idx` maps them to 0..C-1, files are taken recursively inside each class
folder in sorted order, with torchvision's image extensions (case-insensitive). Paths are
kept as one padded uint8 array so the DALI source can slice them without Python strings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class ImageFolderIndex:
    """Every sample of one split: its path and label, in ImageFolder order."""

    root: Path
    classes: list[str]
    class_to_idx: dict[str, int]
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    _path_bytes: np.ndarray | None = field(default=None, repr=False)
    _path_lens: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(path, label) pairs, as `ImageFolder.samples`."""
        return list(zip(self.paths, self.labels.tolist()))

    @property
    def path_bytes(self) -> tuple[np.ndarray, np.ndarray]:
        """Paths as a zero-padded `(N, L)` uint8 array and their lengths, built once."""
        if self._path_bytes is None:
            encoded = [os.fsencode(p) for p in self.paths]
            lens = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
            width = int(lens.max()) if len(encoded) else 1
            buf = np.zeros((len(encoded), width), dtype=np.uint8)
            flat = np.frombuffer(b"".join(e.ljust(width, b"\0") for e in encoded), dtype=np.uint8)
            buf[:] = flat.reshape(len(encoded), width)
            self._path_bytes, self._path_lens = buf, lens
        return self._path_bytes, self._path_lens

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


def scan_image_folder(root: str | os.PathLike, allow_empty_classes: bool = False,
                      classes: list[str] | None = None) -> ImageFolderIndex:
    """Scan `root` like `torchvision.datasets.ImageFolder(root)`.

    `classes`: label with these class names (e.g. the train split's) instead of the folders
    found: the folders must be among them (a val split may lack some classes), and a label is
    the class's index in `classes`, so it means the same class as in training.

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
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for cls in found:
        n_found = 0
        for dirpath, _, fnames in sorted(os.walk(root / cls, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    paths.append(os.path.join(dirpath, fname))
                    labels.append(class_to_idx[cls])
                    n_found += 1
        if n_found == 0:
            empty.append(cls)
    if empty and not allow_empty_classes:
        shown = ", ".join(empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise UserError(
            f"{len(empty)} class folder(s) in {str(root)!r} hold no images ({shown}); "
            f"valid extensions: {', '.join(IMG_EXTENSIONS)}"
        )
    return ImageFolderIndex(root, classes, class_to_idx, paths, np.asarray(labels, dtype=np.int64))
