"""imagesize.image_hw: each image's size from its header, as DALI's own peek_image_shape sees it
(robust.peek_sizes, which the check uses for the files the header does not size)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bad_images import GOOD_EXT, GOOD_WRITERS
from mixtrain_dali.imagesize import HEAD, image_hw
from mixtrain_dali.robust import peek_sizes


def _ours(path: str):
    with open(path, "rb") as f:
        head = f.read(HEAD)

    def read_at(offset, n):
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(n)
    return image_hw(head, read_at)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _big_icc_jpeg(path, size=(50, 30), exif: bytes | None = None):
    """A JPEG whose frame header is ~20 KB in (a large ICC profile in APP2 segments)."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    profile = profile + b"\0" * (20000 - len(profile))  # padded: readers take the profile's own size
    kw = {"exif": exif} if exif else {}
    Image.new("RGB", size, (10, 200, 30)).save(path, "JPEG", icc_profile=profile, quality=90, **kw)


def _long_exif(orientation: int) -> bytes:
    """EXIF with orientation and a 6,000-character description: an APP1 segment longer than
    what the check reads first."""
    exif = Image.Exif()
    exif[0x010E] = "x" * 6000
    exif[0x0112] = orientation
    return exif.tobytes()


def test_sizes_match_dali_for_every_format_and_orientation(tmp_path):
    files, ours = [], []
    for kind, write in GOOD_WRITERS.items():
        path = str(tmp_path / f"{kind}.{GOOD_EXT.get(kind, 'jpg')}")
        write(path, (90, 120, 200) if "grey" not in kind else (128, 128, 128), (37, 23))
        files.append(path)
    for o in range(1, 9):  # every EXIF orientation, on a 41 x 17 (w x h) picture
        path = str(tmp_path / f"orient{o}.jpg")
        Image.new("RGB", (41, 17), (200, 30, 60)).save(path, "JPEG", exif=_exif(o))
        files.append(path)
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("comment", "y" * 5000)  # a tEXt chunk before IDAT, longer than the first read
    Image.new("RGB", (29, 31), (1, 2, 3)).save(tmp_path / "long_text.png", pnginfo=text)
    files.append(str(tmp_path / "long_text.png"))
    with open(files[-1], "rb") as f:
        assert f.read().find(b"IDAT") > HEAD
    for name, exif in (("icc.jpg", None), ("icc_exif6.jpg", _exif(6)), ("icc_longexif5.jpg", _long_exif(5)),
                       ("longexif8.jpg", _long_exif(8))):
        if name.startswith("icc"):
            _big_icc_jpeg(str(tmp_path / name), exif=exif)
        else:
            Image.new("RGB", (41, 17), (200, 30, 60)).save(tmp_path / name, "JPEG", exif=exif)
        files.append(str(tmp_path / name))
        with open(files[-1], "rb") as f:
            assert f.read().find(b"\xff\xc0") > HEAD  # the case it stands for: the frame is past the first read
    ours = {f: _ours(f) for f in files}
    dali = {f: tuple(int(v) for v in hw) for f, hw in zip(files, peek_sizes(files, batch=8))}
    known = {f: hw for f, hw in ours.items() if hw is not None}
    assert {f: dali[f] for f in known} == known
    # what is known: every JPEG, PNG and BMP here; TIFF and WebP are left to DALI
    unknown = sorted(f.rsplit("/", 1)[1] for f, hw in ours.items() if hw is None)
    assert unknown == ["tiff.tiff", "webp_lossless.webp"]
    assert ours[str(tmp_path / "orient6.jpg")] == (41, 17) and ours[str(tmp_path / "orient1.jpg")] == (17, 41)
    assert ours[str(tmp_path / "long_text.png")] == (31, 29)
    assert ours[str(tmp_path / "icc_longexif5.jpg")] == (50, 30) and ours[str(tmp_path / "longexif8.jpg")] == (41, 17)
    # without a way to read on, a header past the bytes given is not guessed
    with open(str(tmp_path / "longexif8.jpg"), "rb") as f:
        assert image_hw(f.read(HEAD)) is None


@pytest.mark.parametrize("blob", [
    b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",  # cut short
    b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 16,  # scan data before any frame header
    b"\xff\xd8\x00\x00" + b"\0" * 32,  # not at a marker
    b"GIF89a" + b"\0" * 32, b"II*\x00" + b"\0" * 32,  # formats it does not read
    b"\x89PNG\r\n\x1a\n" + b"\0" * 8,  # PNG without IHDR
])
def test_malformed_or_other_headers_give_none(blob):
    assert image_hw(blob) is None
    assert image_hw(blob, read_at=lambda offset, n: blob[offset:offset + n]) is None


def test_a_dnl_height_and_a_png_exif_chunk_are_left_to_dali():
    buf = io.BytesIO()
    Image.new("RGB", (9, 7)).save(buf, "JPEG")
    jpeg = bytearray(buf.getvalue())
    sof = jpeg.find(b"\xff\xc0")
    assert image_hw(bytes(jpeg)) == (7, 9)
    jpeg[sof + 5:sof + 7] = b"\0\0"  # height 0: it comes in a DNL segment after the scan
    assert image_hw(bytes(jpeg)) is None
    buf = io.BytesIO()
    Image.new("RGB", (9, 7)).save(buf, "PNG", exif=_exif(6))
    assert b"eXIf" in buf.getvalue() and image_hw(buf.getvalue()) is None
    buf = io.BytesIO()
    Image.new("RGB", (9, 7)).save(buf, "PNG")
    assert image_hw(buf.getvalue()) == (7, 9)


def test_damaged_headers_never_raise():
    """The file check sizes every file and catches only OSError: a damaged header must give
    None or a positive size, never an exception (20,000 random byte changes and cuts)."""
    rng = np.random.default_rng(0)
    seeds = []
    for fmt in ("JPEG", "PNG", "BMP"):
        buf = io.BytesIO()
        Image.new("RGB", (33, 17)).save(buf, fmt, **({"exif": _exif(6)} if fmt == "JPEG" else {}))
        seeds.append(buf.getvalue())
    for t in range(20000):
        b = bytearray(seeds[t % 3])
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(0, min(len(b), 400))] = rng.integers(0, 256)
        if rng.random() < 0.3:
            b = b[:rng.integers(1, len(b))]
        b = bytes(b)
        hw = image_hw(b[:HEAD], lambda offset, n: b[offset:offset + n])
        assert hw is None or (len(hw) == 2 and min(hw) > 0), (t, hw)
