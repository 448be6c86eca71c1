"""The synthetic dataset generator: layout, determinism, argument checks, caching marker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixtrain_dali.errors import UserError
from mixtrain_dali.synthetic import (
    CLASS_DESCRIPTIONS,
    CLASS_NAMES,
    benchmark_jpegs_is_complete,
    make_benchmark_jpegs,
    make_synthetic,
    synthetic_is_complete,
)

# Small and quick: a few images per class, small sides.
SMALL = dict(classes=3, train_per_class=4, val_per_class=2, min_size=32, max_size=96,
             progress=False, workers=1)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("syn") / "data", **SMALL)


def test_layout_has_train_and_val_class_dirs_with_the_requested_counts(small_dataset):
    for split, per_class in (("train", 4), ("val", 2)):
        dirs = sorted(p.name for p in (small_dataset / split).iterdir())
        assert dirs == list(CLASS_NAMES[:3])
        for d in dirs:
            assert len(list((small_dataset / split / d).glob("*.jpg"))) == per_class


def test_returns_the_root_as_a_path(tmp_path):
    out = make_synthetic(str(tmp_path / "d"), **{**SMALL, "classes": 2, "train_per_class": 1,
                                                  "val_per_class": 1})
    assert out == tmp_path / "d" and isinstance(out, Path)


def test_class_names_are_sorted_readable_and_described():
    assert len(CLASS_NAMES) >= 20
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    for i, name in enumerate(CLASS_NAMES):
        assert name.startswith(f"{i:02d}_") and name.replace("_", "").isalnum()
        assert CLASS_DESCRIPTIONS[name].strip()
    # the fine-detail twins that make downscaling (so mixing) cost accuracy are in the default 10
    assert {"00_stripes", "01_fine_stripes"} <= set(CLASS_NAMES[:10])


def test_same_seed_gives_byte_identical_files(tmp_path):
    a = _hashes(make_synthetic(tmp_path / "a", **SMALL))
    b = _hashes(make_synthetic(tmp_path / "b", **SMALL))
    assert a and a == b


def test_parallel_workers_write_the_same_bytes_as_one_process(tmp_path, small_dataset):
    parallel = make_synthetic(tmp_path / "p", **{**SMALL, "workers": 2})
    assert _hashes(parallel) == _hashes(small_dataset)


def test_different_seed_gives_different_bytes(tmp_path, small_dataset):
    other = _hashes(make_synthetic(tmp_path / "s1", **{**SMALL, "seed": 1}))
    base = _hashes(small_dataset)
    assert other.keys() == base.keys()
    assert all(other[k] != base[k] for k in base)


def test_train_and_val_images_differ(small_dataset):
    train = set(_hashes(small_dataset / "train").values())
    val = set(_hashes(small_dataset / "val").values())
    assert not train & val


def test_images_are_rgb_jpegs_with_sides_in_range_and_varied_aspect(tmp_path):
    root = make_synthetic(tmp_path / "d", **{**SMALL, "train_per_class": 10, "min_size": 40,
                                             "max_size": 120})
    sizes = []
    for path in root.rglob("*.jpg"):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert not im.info.get("exif")
            im.load()  # decodes fully
            sizes.append(im.size)
    assert all(40 <= w <= 120 and 40 <= h <= 120 for w, h in sizes)
    aspects = {round(w / h, 2) for w, h in sizes}
    assert min(aspects) < 0.85 and max(aspects) > 1.15, aspects  # both portrait and landscape
    assert len(set(sizes)) > len(sizes) // 2  # sizes vary


def test_images_within_a_class_vary(small_dataset):
    # Position, scale, rotation and colours are random: per-pixel spread across a class is large.
    for name in CLASS_NAMES[:3]:
        ims = [np.asarray(Image.open(p).convert("L").resize((32, 32)), np.float32)
               for p in sorted((small_dataset / "train" / name).glob("*.jpg"))]
        assert np.std(ims, axis=0).mean() > 10.0


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"classes": 1}, "classes=1"),
        ({"classes": len(CLASS_NAMES) + 1}, f"classes={len(CLASS_NAMES) + 1}"),
        ({"classes": 2.5}, "classes=2.5"),
        ({"train_per_class": 0}, "train_per_class=0"),
        ({"val_per_class": -3}, "val_per_class=-3"),
        ({"min_size": 15}, "min_size=15"),
        ({"min_size": 200, "max_size": 100}, "min_size=200"),
        ({"seed": -1}, "seed=-1"),
        ({"workers": 0}, "workers=0"),
    ],
)
def test_invalid_arguments_raise_user_error_naming_the_value(tmp_path, kwargs, bad):
    with pytest.raises(UserError) as info:
        make_synthetic(tmp_path / "d", **{**SMALL, **kwargs})
    assert bad in str(info.value)
    assert not (tmp_path / "d").exists()  # checked before anything is written


def test_classes_error_names_the_valid_range(tmp_path):
    with pytest.raises(UserError, match=f"2..{len(CLASS_NAMES)}"):
        make_synthetic(tmp_path / "d", classes=99, progress=False)


def test_all_classes_can_be_drawn(tmp_path):
    root = make_synthetic(tmp_path / "d", classes=len(CLASS_NAMES), train_per_class=1,
                          val_per_class=1, min_size=32, max_size=64, progress=False, workers=1)
    assert len(list(root.rglob("*.jpg"))) == 2 * len(CLASS_NAMES)


def test_is_complete_after_a_run_with_the_same_arguments(small_dataset):
    same = {k: v for k, v in SMALL.items() if k not in ("progress", "workers")}
    assert synthetic_is_complete(small_dataset, **same)
    assert synthetic_is_complete(small_dataset, **same, workers=7, progress=True)  # irrelevant


@pytest.mark.parametrize("change", [{"seed": 1}, {"classes": 4}, {"train_per_class": 5},
                                    {"max_size": 97}])
def test_is_not_complete_with_other_arguments(small_dataset, change):
    same = {k: v for k, v in SMALL.items() if k not in ("progress", "workers")}
    assert not synthetic_is_complete(small_dataset, **{**same, **change})


def test_is_not_complete_with_default_arguments_for_a_small_run(small_dataset):
    assert not synthetic_is_complete(small_dataset)


def test_is_not_complete_without_the_marker(tmp_path):
    root = make_synthetic(tmp_path / "d", **SMALL)
    (root / ".complete.json").unlink()  # as after an interrupted run
    assert not synthetic_is_complete(root, **{k: v for k, v in SMALL.items()
                                              if k not in ("progress", "workers")})
    assert not synthetic_is_complete(tmp_path / "missing")


def test_regenerating_replaces_an_older_run(tmp_path):
    root = make_synthetic(tmp_path / "d", **{**SMALL, "classes": 4, "train_per_class": 6})
    make_synthetic(root, **SMALL)
    assert sorted(p.name for p in (root / "train").iterdir()) == list(CLASS_NAMES[:3])
    assert len(list((root / "train").rglob("*.jpg"))) == 3 * 4
    marker = json.loads((root / ".complete.json").read_text())
    assert marker["args"]["classes"] == 3


def test_an_interrupted_run_is_regenerated(tmp_path):
    root = make_synthetic(tmp_path / "d", **SMALL)
    (root / ".complete.json").unlink()  # killed before the end: files but no marker
    (root / ".generating").write_text("synthetic\n")
    (root / "train" / CLASS_NAMES[0] / "00000.jpg").write_bytes(b"truncated")
    make_synthetic(root, **SMALL)
    assert _hashes(root) == _hashes(make_synthetic(tmp_path / "fresh", **SMALL))
    assert not (root / ".generating").exists()


def test_refuses_to_overwrite_another_kind_of_generated_dataset(tmp_path, small_dataset):
    with pytest.raises(UserError, match="synthetic dataset"):
        make_benchmark_jpegs(small_dataset, n=2, progress=False)
    assert synthetic_is_complete(small_dataset, **{k: v for k, v in SMALL.items()
                                                   if k not in ("progress", "workers")})


def test_is_complete_rejects_unknown_arguments_like_a_call_would(small_dataset):
    with pytest.raises(TypeError):
        synthetic_is_complete(small_dataset, colours=3)


def test_refuses_to_write_into_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "train" / "cat" / "cat.jpg").write_bytes(b"not ours")
    with pytest.raises(UserError, match="not empty"):
        make_synthetic(tmp_path / "d", **SMALL)
    assert (tmp_path / "d" / "train" / "cat" / "cat.jpg").exists()


def test_torchvision_image_folder_loads_it_with_the_expected_classes(small_dataset):
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(small_dataset / "train"))
    assert ds.classes == list(CLASS_NAMES[:3])
    assert len(ds) == 12
    image, label = ds[len(ds) - 1]
    assert image.mode == "RGB" and label == 2


def test_benchmark_jpegs_layout_sizes_and_marker(tmp_path):
    kwargs = dict(n=7, size_range=(60, 80), quality=85, classes=3, seed=0, progress=False)
    root = make_benchmark_jpegs(tmp_path / "b", **kwargs)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 7
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == list(CLASS_NAMES[:3])
    for path in files:
        with Image.open(path) as im:
            assert 60 <= im.width <= 80 and 60 <= im.height <= 80 and im.mode == "RGB"
    assert benchmark_jpegs_is_complete(root, **kwargs)
    assert not benchmark_jpegs_is_complete(root, **{**kwargs, "quality": 90})
    assert not synthetic_is_complete(root)
    again = make_benchmark_jpegs(tmp_path / "b2", **kwargs)
    assert _hashes(again) == _hashes(root)


@pytest.mark.parametrize("kwargs, bad", [({"n": 0}, "n=0"), ({"quality": 101}, "quality=101"),
                                         ({"size_range": (90, 50)}, "size_range=(90, 50)"),
                                         ({"size_range": 5}, "size_range=5")])
def test_benchmark_invalid_arguments_raise_user_error(tmp_path, kwargs, bad):
    with pytest.raises(UserError) as info:
        make_benchmark_jpegs(tmp_path / "b", **{"n": 3, "progress": False, **kwargs})
    assert bad in str(info.value)


def test_ensure_synthetic_reuses_a_finished_run_and_rewrites_on_other_arguments(tmp_path):
    from mixtrain_dali.synthetic import ensure_synthetic

    kw = dict(classes=2, train_per_class=2, val_per_class=1, min_size=32, max_size=48, workers=1)
    root = ensure_synthetic(tmp_path / "d", progress=False, **kw)
    first = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    assert len(first) == 6
    ensure_synthetic(root, progress=False, **kw)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == first
    ensure_synthetic(root, progress=False, **{**kw, "seed": 1})
    assert synthetic_is_complete(root, **{**kw, "seed": 1})
