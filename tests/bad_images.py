"""Test data for bad-file handling: good images in every unusual format a real ImageNet folder
holds, and every kind of broken file, planted among each other in an ImageFolder.

Every good image is one solid colour, unique in the dataset (conftest.colour_of, or a grey
far from all of them for the greyscale formats), so any output pixel says which sample
produced it: `Planted.colours(index)` gives the table for `conftest.identify`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from conftest import colour_of

# kind -> writer(path, colour, (w, h)); the grey kinds need a grey colour
GREY_KINDS = {"grey_jpeg", "grey_png16", "grey_alpha_png"}


def _png16(path, arr: np.ndarray) -> None:
    """A 16-bit-per-channel PNG (PIL writes 16 bits only for greyscale)."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _exif_rotated(path, colour, size) -> None:
    """Stored landscape, EXIF orientation 6 (shown rotated 90 degrees clockwise)."""
    w, h = size
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (max(w, h), min(w, h)), colour).save(path, "JPEG", exif=exif.tobytes(), quality=95)


def _jpeg_bytes(colour, size, **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


GOOD_WRITERS = {
    "rgb_jpeg": lambda p, c, s: Image.new("RGB", s, c).save(p, "JPEG", quality=95),
    "rgb_png": lambda p, c, s: Image.new("RGB", s, c).save(p, "PNG"),
    "grey_jpeg": lambda p, c, s: Image.new("L", s, c[0]).save(p, "JPEG", quality=95),
    "cmyk_jpeg": lambda p, c, s: Image.new("RGB", s, c).convert("CMYK").save(p, "JPEG", quality=95),
    "progressive_jpeg": lambda p, c, s: Image.new("RGB", s, c).save(p, "JPEG", quality=95, progressive=True),
    "exif_rotated_jpeg": _exif_rotated,
    "png_named_jpeg": lambda p, c, s: Image.new("RGB", s, c).save(p, "PNG"),
    "rgba_png": lambda p, c, s: Image.new("RGBA", s, (*c, 255)).save(p, "PNG"),
    "palette_png": lambda p, c, s: Image.new("RGB", s, c).quantize(4).save(p, "PNG"),
    "rgb_png16": lambda p, c, s: _png16(p, np.broadcast_to(np.array(c, np.uint16) * 257, (s[1], s[0], 3))),
    "grey_png16": lambda p, c, s: _png16(p, np.full((s[1], s[0], 1), c[0] * 257, np.uint16)),
    "grey_alpha_png": lambda p, c, s: Image.new("LA", s, (c[0], 255)).save(p, "PNG"),
    "bmp": lambda p, c, s: Image.new("RGB", s, c).save(p, "BMP"),
    "tiff": lambda p, c, s: Image.new("RGB", s, c).save(p, "TIFF"),
    "webp_lossless": lambda p, c, s: Image.new("RGB", s, c).save(p, "WEBP", lossless=True),
    # bytes after the EOI marker: legal, DALI decodes it (the up-front check calls it a suspect)
    "jpeg_trailing_bytes": lambda p, c, s: open(p, "wb").write(_jpeg_bytes(c, s) + b"\0" * 64 + b"junk"),
    "tiny_jpeg": lambda p, c, s: Image.new("RGB", (8, 6), c).save(p, "JPEG", quality=95),
    "huge_jpeg": lambda p, c, s: Image.new("RGB", (8000, 6000), c).save(p, "JPEG", quality=90),
}
GOOD_EXT = {"rgb_png": "png", "rgba_png": "png", "palette_png": "png", "rgb_png16": "png", "grey_png16": "png",
            "grey_alpha_png": "png", "bmp": "bmp", "tiff": "tiff", "webp_lossless": "webp"}  # else .JPEG


def _bad_bytes(kind: str, rng: np.random.Generator) -> bytes:
    jpeg = _jpeg_bytes((200, 60, 120), (120, 90), subsampling=0)
    noisy = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(noisy, "PNG")
    png = noisy.getvalue()
    gif = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(gif, "GIF")
    return {
        "zero_bytes": b"",
        "garbage": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "html_named_jpeg": b"<html><body>404 Not Found</body></html>\n" * 20,
        "truncated_jpeg": jpeg[:len(jpeg) // 2],
        "jpeg_missing_eoi": jpeg[:-2],
        "jpeg_header_only": jpeg[:160],
        "truncated_png": png[:len(png) // 2],
        "png_missing_iend": png[:-12],
        "gif_named_jpeg": gif.getvalue(),
    }[kind]


BAD_KINDS = ("zero_bytes", "garbage", "html_named_jpeg", "truncated_jpeg", "jpeg_missing_eoi",
             "jpeg_header_only", "truncated_png", "png_missing_iend", "gif_named_jpeg")


def grey_palette(n_colours: int, count: int) -> list[tuple[int, int, int]]:
    """`count` greys, each at least 12 levels from every colour_of(i < n_colours) and each other."""
    if count == 0:
        return []
    table = np.array([colour_of(i) for i in range(max(1, n_colours))])
    out: list[int] = []
    for g in range(50, 230):
        if np.abs(table - g).max(-1).min() >= 12 and all(abs(g - o) >= 12 for o in out):
            out.append(g)
    assert len(out) >= count, f"only {len(out)} greys available"
    return [(g, g, g) for g in out[:count]]


@dataclass
class Planted:
    """What was written: each good file's colour and kind, each bad file's kind."""

    root: str
    colour: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    good_kind: dict[str, str] = field(default_factory=dict)
    bad_kind: dict[str, str] = field(default_factory=dict)

    def colours(self, index) -> list[tuple[int, int, int]]:
        """Colour table aligned with `index.paths` (bad files get black, never shown)."""
        return [self.colour.get(p, (0, 0, 0)) for p in index.paths]

    def good_ids(self, index) -> set[int]:
        return {i for i, p in enumerate(index.paths) if p in self.colour}

    def bad_ids(self, index) -> set[int]:
        return {i for i, p in enumerate(index.paths) if p in self.bad_kind}


def plant(root, classes=("ant", "bee", "cat"), good_per_class: int = 8,
          good_kinds=("rgb_jpeg", "rgb_png"), bad_kinds=BAD_KINDS, seed: int = 0) -> Planted:
    """An ImageFolder at `root`: per class `good_per_class` good images cycling through
    `good_kinds`, and the `bad_kinds` dealt round the classes, names interleaved so bad files
    sit between good ones in ImageFolder order."""
    rng = np.random.default_rng(seed)
    out = Planted(str(root))
    n_good = len(classes) * good_per_class
    kinds = [good_kinds[i % len(good_kinds)] for i in range(n_good)]
    greys = iter(grey_palette(n_good, sum(k in GREY_KINDS for k in kinds)))
    g = 0
    for c, cls in enumerate(classes):
        d = os.path.join(root, cls)
        os.makedirs(d, exist_ok=True)
        for j in range(good_per_class):
            kind = kinds[c * good_per_class + j]
            colour = next(greys) if kind in GREY_KINDS else colour_of(g)
            path = os.path.join(d, f"{2 * j:03d}_{kind}.{GOOD_EXT.get(kind, 'JPEG')}")
            w, h = (int(v) for v in rng.integers(24, 90, 2))
            GOOD_WRITERS[kind](path, colour, (w, h))
            out.colour[path], out.good_kind[path] = colour, kind
            g += 1
    for b, kind in enumerate(bad_kinds):
        cls = classes[b % len(classes)]
        ext = "png" if kind in ("truncated_png", "png_missing_iend") else "JPEG"
        path = os.path.join(root, cls, f"{2 * (b // len(classes)) + 1:03d}_{kind}.{ext}")
        with open(path, "wb") as f:
            f.write(_bad_bytes(kind, rng))
        out.bad_kind[path] = kind
    return out


def corrupt(path: str, how: str) -> None:
    """Break a good file in place after the up-front check: delete it, or overwrite it with
    garbage (tests run as root: chmod 000 would not stop root from reading it)."""
    if how == "delete":
        os.remove(path)
    elif how == "garbage":
        with open(path, "wb") as f:
            f.write(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif how == "truncate":
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
    elif how == "empty":
        open(path, "wb").close()
    else:
        raise ValueError(how)
