"""Crop windows finished on the host from the file check's image sizes (source.py) against the
same windows finished in the DALI graph from each file's header (pipelines.crop_window): the
same pixels, and which one the loader takes when."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from mixtrain_dali.config import MixConfig
from mixtrain_dali.loader import TrainLoader
from mixtrain_dali.manifest import Manifest
from mixtrain_dali.train import _describe_windows

# odd sides, portrait and landscape, tall strips; (h, w) as shown, after any EXIF rotation
SIZES = [(301, 257), (120, 400), (400, 120), (77, 91), (256, 256), (500, 333), (90, 300), (333, 211)]


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """Textured JPEGs (any crop shift shows), two classes; every third stored sideways with
    EXIF orientation 6 or 8, so its shown size is its stored size transposed."""
    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES * 2):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, ((xx * 3 + yy * 5) % 64) * 4], -1) * 0.7
        img = (img + rng.integers(0, 60, (h, w, 3))).astype(np.uint8)
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        kw = {}
        if i % 3 == 0:
            exif = Image.Exif()
            exif[0x0112] = 6 if i % 2 else 8
            img, kw = np.ascontiguousarray(np.rot90(img, 1 if exif[0x0112] == 6 else -1)), {"exif": exif.tobytes()}
        Image.fromarray(img).save(folder / f"{i:02d}.jpg", quality=90, **kw)
    return root


def _epoch(loader):
    out = []
    for b in loader:
        if hasattr(b, "images"):
            loader.mixed_seen = getattr(loader, "mixed_seen", 0) + int((b.mask.sum(1) > 1).sum())
        out.append((b.images if hasattr(b, "images") else b[0]).clone())
    return out


def _graph_windows(loader):
    """Make `loader` finish its windows in the graph from now on (as without sizes)."""
    loader._source.hw = None
    loader._pipe = None


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("mix,tries", [(None, 1), (None, 10), (MixConfig(enabled=True, k=4, fraction=0.6, warmup_epochs=0,
                                                                         final_full_fraction=0), 1)])
def test_host_windows_decode_exactly_what_the_graph_windows_do(textured, tmp_path, mix, tries, device):
    """The same float32 windows, so the same pixels: bit for bit on the CPU decoder."""
    kw = dict(batch_size=4, image_size=48, seed=11, threads=1, device=device, scale=(0.08, 1.0),
              crop_tries=tries, manifest=tmp_path)
    if mix is not None:
        kw["mix"] = mix
    host = TrainLoader(textured, **kw)
    assert host.crop_windows == "host" and host._source.host_windows
    np.testing.assert_array_equal(host.index.hw, [SIZES[i % len(SIZES)] for i in _file_numbers(host)])
    graph = TrainLoader(textured, **kw)
    _graph_windows(graph)
    for epoch in range(2):
        a, b = _epoch(host), _epoch(graph)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):  # the GPU: within a grey level (nvJPEG may split a batch between
            # its hardware and CUDA decoders differently); a window shifted by one pixel on these
            # noisy images would differ by tens of levels
            torch.testing.assert_close(x, y, rtol=0, atol=0 if device == "cpu" else 1.01 / 255 / 0.225)
    if mix is not None:
        assert host.mixed_seen > 0  # composites were among what was compared


def _file_numbers(loader):
    return [int(p.rsplit("/", 1)[1][:2]) for p in loader.index.paths]


def test_windows_fall_back_to_the_graph_without_every_size(textured, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mixtrain_dali.loader")
    kw = dict(batch_size=4, image_size=32, threads=1, device="cpu")
    unchecked = TrainLoader(textured, validate=False, **kw)
    assert unchecked.crop_windows == "graph" and "no file check" in caplog.text
    assert _describe_windows(unchecked) == "crop windows finished in the DALI graph (no file check, so no image sizes)"
    # a size the check could not learn (here: taken out of the manifest) keeps the graph's way
    loader = TrainLoader(textured, manifest=tmp_path, **kw)
    assert loader.crop_windows == "host"
    path = next(tmp_path.glob("*.npz"))
    m = Manifest.load(path)
    m.hw[3] = -1
    m.save(path)
    caplog.clear()
    loader = TrainLoader(textured, manifest=tmp_path, **kw)
    assert loader.crop_windows == "graph" and "1 image size(s) unknown" in caplog.text
    assert len([y for _, y in loader]) == len(loader)


def test_the_manifest_keeps_the_sizes_and_an_old_one_is_rebuilt(textured, tmp_path, caplog):
    kw = dict(batch_size=4, image_size=32, threads=1, device="cpu", manifest=tmp_path)
    first = TrainLoader(textured, **kw)
    path = next(tmp_path.glob("*.npz"))
    np.testing.assert_array_equal(Manifest.load(path).hw, first.index.hw)
    again = TrainLoader(textured, **kw)
    assert again.file_check["checked"] == 0 and again.crop_windows == "host"
    np.testing.assert_array_equal(again.index.hw, first.index.hw)
    with np.load(path) as z:  # a version-1 manifest: no sizes
        arrays = {k: z[k] for k in z.files if k != "hw"}
    meta = arrays["meta"].tobytes().decode().replace('"version": 2', '"version": 1')
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    old = TrainLoader(textured, **kw)
    assert "version 1" in caplog.text
    assert old.file_check["checked"] == len(old.index) and old.crop_windows == "host"


def test_sizes_the_header_does_not_give_are_asked_of_dali(tmp_path, monkeypatch):
    """TIFF and WebP: no header parse of ours; DALI's peek_image_shape sizes them at the check
    (up to robust.PEEK_LIMIT files, or 1%), past the limit they stay unknown."""
    from bad_images import GOOD_WRITERS

    from mixtrain_dali import robust

    folder = tmp_path / "data" / "a"
    folder.mkdir(parents=True)
    for i, (kind, ext) in enumerate([("tiff", "tiff"), ("webp_lossless", "webp"), ("rgb_jpeg", "jpg"), ("rgb_png", "png")]):
        GOOD_WRITERS[kind](str(folder / f"{i}.{ext}"), (30, 90, 200), (37 + i, 23))
    kw = dict(batch_size=2, image_size=32, threads=1, device="cpu", manifest=False)
    loader = TrainLoader(tmp_path / "data", **kw)
    assert loader.crop_windows == "host"
    np.testing.assert_array_equal(loader.index.hw, [(23, 37), (23, 38), (23, 39), (23, 40)])
    monkeypatch.setattr(robust, "PEEK_LIMIT", 1)  # 2 unknown, more than max(1, 4 // 100)
    loader = TrainLoader(tmp_path / "data", **kw)
    assert loader.crop_windows == "graph" and loader.crop_windows_why == "2 image size(s) unknown after the file check"
    assert len([y for _, y in loader]) == len(loader)
