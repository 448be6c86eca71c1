import json

import pytest


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch import problems show up elsewhere
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU-only test)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


import os  # noqa: E402

import numpy as np  # noqa: E402

# DALI and torch share 2 cores here: keep torch from oversubscribing them in tests
os.environ.setdefault("OMP_NUM_THREADS", "1")


def colour_of(i: int) -> tuple[int, int, int]:
    """A distinct, well separated solid colour per sample index (for identity checks)."""
    return (40 + (i * 37) % 180, 40 + (i * 71) % 180, 40 + (i * 113) % 180)


def write_colour_folder(root, classes=("ant", "bee", "cat"), per_class=7, ext="png", seed=0):
    """ImageFolder of solid-colour images of varied sizes; sample i (ImageFolder order) has
    colour_of(i), so a pixel tells which sample produced it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    i = 0
    for cls in classes:
        d = os.path.join(root, cls)
        os.makedirs(d, exist_ok=True)
        for j in range(per_class):
            h, w = (int(v) for v in rng.integers(24, 90, 2))
            Image.new("RGB", (w, h), colour_of(i)).save(os.path.join(d, f"img{j:03d}.{ext}"))
            i += 1
    return root


def write_train_val(root):
    """DATA/train (3 classes x 32, 96 samples) and DATA/val (3 x 4) of solid colours: the
    small dataset the CLI tests train on."""
    write_colour_folder(str(root / "train"), per_class=32, seed=1)
    write_colour_folder(str(root / "val"), per_class=4, seed=2)
    return root


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """`write_train_val` in a folder of the test module's own (its runs write their manifests
    there)."""
    return write_train_val(tmp_path_factory.mktemp("small"))


def read_metrics(run) -> list[dict]:
    """The rows of RUN/metrics.jsonl."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def identify(images, n: int, colours=None) -> np.ndarray:
    """Sample index of each (B, 3, H, W) normalised image, by its mean colour."""
    from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD

    x = images.float().cpu().numpy()
    rgb = (x.mean((2, 3)) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255
    table = np.array([colour_of(i) for i in range(n)] if colours is None else colours, float)
    d = np.abs(rgb[:, None, :] - table[None]).max(-1)
    assert (d.min(1) < 4).all(), f"unrecognised colours {rgb[d.min(1) >= 4]}"
    return d.argmin(1)


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    return write_colour_folder(str(tmp_path_factory.mktemp("colour")))
