"""Each image's height and width from its first bytes, as DALI sees it (after EXIF rotation).

Why: the train graph turns the host's relative crop windows into each image's (start,
shape), which needs the image's size. Asked of DALI (`fn.peek_image_shape` and some twenty
small arithmetic, reduction and subscript operators, `pipelines.crop_window`), that costs
about 5-6 ms of CPU time per batch of 256 on one DALI thread (benchmarks/results/crop_windows_cpu.md),
which on a GPU sits in front of every batch. The up-front file check opens every file
anyway (robust.py), and the size is in the header it reads: with every size known the host
hands DALI the finished windows and the graph does no arithmetic at all.

`image_hw(head, read_at)`: JPEG (the SOFn segment; EXIF orientation 5-8 swaps height and
width, as DALI's decoder rotates such images), PNG (IHDR) and BMP. None where the answer
is not certain from the bytes: another format, a JPEG whose height is in a DNL segment, a
PNG with an eXIf chunk (whether a decoder rotates it varies), a header cut short. The
loader asks DALI itself for those few (`robust.peek_sizes`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

HEAD = 1024             # what the file check reads of every file first (most JPEGs' frame header is in it)
_MORE_BYTES = 4096      # each further read, where a JPEG's header goes on past what was read
_APP1_MAX = 65536       # at most this much of an EXIF segment is read for its orientation
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame; C4/C8/CC are not
_STANDALONE = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])  # markers with no length field


def image_hw(head: bytes, read_at: Callable[[int, int], bytes] | None = None) -> tuple[int, int] | None:
    """(height, width) after EXIF rotation, from a file's first bytes `head`, or None.

    `read_at(offset, n)`: up to n bytes of the file from `offset`, for a JPEG whose frame
    header lies past `head` (behind a large EXIF or ICC segment), or a PNG whose chunks
    before the image data do: the walk over the segments or chunks reads on, a few small
    reads, never the image data."""
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg(head, read_at)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(head, read_at)
    if head[:2] == b"BM":
        return _bmp(head)
    return None


def _jpeg(b: bytes, read_at):
    """Walk the segments from the SOI marker to the first frame header (SOFn)."""
    p, base, n, orientation = 2, 0, len(b), 1  # b holds the file's bytes [base, base + n)
    while True:
        if p + 10 > base + n:  # the next segment's first bytes are past what was read
            if read_at is None:
                return None
            b, base = read_at(p, _MORE_BYTES), p
            n = len(b)
            if n < 4:
                return None
        q = p - base
        if b[q] != 0xFF:
            return None  # not at a marker: a malformed stream
        m = b[q + 1]
        if m == 0xFF:  # fill byte
            p += 1
            continue
        if m in _STANDALONE:
            p += 2
            continue
        length = (b[q + 2] << 8) | b[q + 3]
        if m in _SOF:
            if q + 9 > n:
                return None
            h, w = (b[q + 5] << 8) | b[q + 6], (b[q + 7] << 8) | b[q + 8]
            if h == 0 or w == 0:  # height given later (DNL), or a broken header
                return None
            return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        if m in (0xDA, 0xD9) or length < 2:  # scan data or the end before any frame header
            return None
        if m == 0xE1 and b[q + 4:q + 10] == b"Exif\x00\x00":
            end = min(2 + length, _APP1_MAX)
            if q + end <= n:
                orientation = _exif_orientation(b, q + 10, q + end)
            elif read_at is not None:
                orientation = _exif_orientation(read_at(p, end), 10, end)
            else:
                return None  # the orientation is past the bytes given
        p += 2 + length


def _exif_orientation(b: bytes, start: int, end: int) -> int:
    """Tag 0x0112 of IFD0 of the TIFF block b[start:end]; 1 when absent or unreadable."""
    try:
        order = {b"II": "<", b"MM": ">"}[b[start:start + 2]]
        ifd = start + struct.unpack_from(order + "I", b, start + 4)[0]
        count = struct.unpack_from(order + "H", b, ifd)[0]
        for e in range(ifd + 2, min(ifd + 2 + 12 * count, end - 11), 12):
            tag, kind = struct.unpack_from(order + "HH", b, e)
            if tag == 0x0112:
                return struct.unpack_from(order + "H", b, e + 8)[0] if kind == 3 else 1
    except (KeyError, struct.error):  # another byte order mark, an offset past the segment
        pass
    return 1


def _png(b: bytes, read_at):
    """IHDR's size, once the chunks before IDAT show no eXIf (read on past `b` if needed)."""
    if len(b) < 24 or b[12:16] != b"IHDR":
        return None
    w, h = struct.unpack_from(">II", b, 16)
    p = 8
    while True:  # an eXIf chunk (before IDAT, by the standard): leave it to DALI
        if p + 8 <= len(b):
            size, kind = struct.unpack_from(">I4s", b, p)
        elif read_at is not None and len(more := read_at(p, 8)) == 8:
            size, kind = struct.unpack_from(">I4s", more, 0)
        else:
            return None  # cut short
        if kind == b"eXIf":
            return None
        if kind == b"IDAT":
            return (h, w) if h and w else None
        p += 12 + size


def _bmp(b: bytes):
    if len(b) < 26:
        return None
    header = struct.unpack_from("<I", b, 14)[0]
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack_from("<HH", b, 18)
    else:
        w, h = struct.unpack_from("<ii", b, 18)
    h = abs(h)  # negative: stored top-down
    return (h, w) if h and w > 0 else None
