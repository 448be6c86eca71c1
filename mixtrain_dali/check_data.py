"""`mixtrain check-data DIR`: every file of a dataset checked the way the loaders read it,
before a long run finds out.

DIR is a dataset root with train/ (and val/), or one ImageFolder split itself. Each file
gets the loaders' up-front check (robust.check_file: exists, not empty, a format DALI
decodes by its magic bytes) and, unless `quick`, a full decode by DALI itself, one file per
run (robust.probe_files), since DALI's acceptance is what matters: PIL, for one, opens PNGs
without their IEND chunk that DALI refuses. PIL reads each header for the statistics:
format, mode (CMYK, L, RGBA, P ...), bit depth, EXIF orientation, width and height.
Work is spread over a process pool; a progress bar counts files.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .dataset import scan_image_folder, splits

_CHUNK = 64


def _header_info(path: str) -> dict:
    """Format, mode, bit depth, size and EXIF orientation from PIL's header parse."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            info = {"format": im.format or "?", "mode": im.mode, "width": im.size[0], "height": im.size[1],
                    "bits": 8, "orientation": 1}
            if im.format == "PNG":
                with open(path, "rb") as f:
                    head = f.read(26)
                info["bits"] = head[24] if len(head) > 24 else 8  # IHDR bit depth
            elif im.format == "JPEG":
                info["bits"] = getattr(im, "bits", 8)
                info["orientation"] = int(im.getexif().get(0x0112, 1) or 1)
            elif im.mode.startswith("I;16"):
                info["bits"] = 16
            return info
    except Exception as e:  # PIL cannot parse it: DALI may still decode it
        return {"format": "?", "mode": "?", "width": None, "height": None, "bits": None,
                "orientation": 1, "pil_error": f"{type(e).__name__}: {e}"}


def _inspect(paths: list[str], quick: bool) -> list[dict]:
    """The record of each file: its header info and, if it is bad, why (worker side)."""
    from .robust import OK, SUSPECT, check_file, probe_files, suspect_hint

    out = []
    for path in paths:
        verdict = check_file(path)
        rec = {"path": path, "bad": None}
        if verdict not in (OK, SUSPECT):
            rec["bad"] = verdict
            out.append(rec)
            continue
        rec.update(_header_info(path))
        if not quick or verdict == SUSPECT:
            failed = probe_files([path], checked=True).get(0)
            if failed:
                rec["bad"] = f"{suspect_hint(path)}; {failed}" if verdict == SUSPECT else failed
        out.append(rec)
    return out


def _stats(values: list[int]) -> dict | None:
    if not values:
        return None
    a = np.asarray(values)
    return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}


def check_data(root: str | os.PathLike, workers: int | None = None, quick: bool = False,
               progress: bool = True) -> dict:
    """Check every image of the dataset at `root`; returns the report (see `format_report`)."""
    from tqdm import tqdm

    root = Path(root)
    found = splits(root)
    indexes = {name: scan_image_folder(path, allow_empty_classes=True) for name, path in found.items()}
    total = sum(len(ix) for ix in indexes.values())
    workers = max(1, workers or min(os.cpu_count() or 1, 16))
    start = time.perf_counter()
    report: dict = {"root": str(root), "quick": quick, "splits": {}}
    bar = tqdm(total=total, desc="check-data", unit="file", disable=not progress, dynamic_ncols=True)
    # spawn: a forked child would inherit whatever DALI/torch state the parent holds
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for name, index in indexes.items():
            label_of = dict(zip(index.paths, index.labels.tolist()))
            chunks = [index.paths[a:a + _CHUNK] for a in range(0, len(index), _CHUNK)]
            bad, widths, heights = [], [], []
            formats, modes, counts = Counter(), Counter(), Counter()
            n16 = rotated = mismatched = unparsed = 0
            for records in pool.map(_inspect, chunks, [quick] * len(chunks)):
                for rec in records:
                    counts[index.classes[label_of[rec["path"]]]] += 1
                    if rec["bad"]:
                        bad.append({"path": rec["path"], "reason": rec["bad"]})
                        continue
                    formats[rec["format"]] += 1
                    wide = rec.get("bits") == 16 and "16" not in rec["mode"]  # PIL shows RGB for RGB;16
                    modes[rec["mode"] + (" 16-bit" if wide else "")] += 1
                    n16 += rec.get("bits") == 16
                    rotated += rec.get("orientation", 1) not in (0, 1)
                    unparsed += "pil_error" in rec
                    if rec["width"] is not None:
                        widths.append(rec["width"])
                        heights.append(rec["height"])
                    ext = Path(rec["path"]).suffix.lower().lstrip(".")
                    fmt = rec["format"].lower()
                    if fmt != "?" and not (ext == fmt or (fmt, ext) in {("jpeg", "jpg"), ("tiff", "tif"),
                                                                         ("ppm", "pgm"), ("ppm", "pbm")}):
                        mismatched += 1
                bar.update(len(records))
            per_class = {c: counts.get(c, 0) for c in index.classes}
            report["splits"][name] = {
                "path": str(index.root),
                "files": len(index),
                "classes": per_class,
                "empty_classes": [c for c, k in per_class.items() if k == 0],
                "bad": sorted(bad, key=lambda b: b["path"]),
                "width": _stats(widths),
                "height": _stats(heights),
                "formats": dict(formats.most_common()),
                "modes": dict(modes.most_common()),
                "bit_depth_16": n16,
                "exif_rotated": rotated,
                "extension_mismatch": mismatched,
                "pil_unreadable": unparsed,
            }
    bar.close()
    elapsed = time.perf_counter() - start
    report["files"] = total
    report["bad_files"] = sum(len(s["bad"]) for s in report["splits"].values())
    report["seconds"] = round(elapsed, 2)
    report["files_per_s"] = round(total / max(elapsed, 1e-9), 1)
    return report


def format_report(report: dict) -> str:
    lines = []
    for name, s in report["splits"].items():
        counts = list(s["classes"].values())
        lines.append(f"{name}: {s['files']} files in {len(counts)} classes "
                     f"(per class min {min(counts)}, median {np.median(counts):g}, max {max(counts)})")
        if s["empty_classes"]:
            lines.append(f"  empty classes: {', '.join(s['empty_classes'][:10])}")
        if s["width"]:
            w, h = s["width"], s["height"]
            lines.append(f"  width  min {w['min']}, median {w['median']:g}, max {w['max']}")
            lines.append(f"  height min {h['min']}, median {h['median']:g}, max {h['max']}")
        lines.append("  formats: " + ", ".join(f"{k} {v}" for k, v in s["formats"].items()))
        lines.append("  modes: " + ", ".join(f"{k} {v}" for k, v in s["modes"].items()))
        extra = [f"{s[k]} {label}" for k, label in (("exif_rotated", "EXIF-rotated"),
                                                   ("extension_mismatch", "with an extension not their format"),
                                                   ("pil_unreadable", "PIL cannot parse (DALI can)")) if s[k]]
        if extra:
            lines.append("  also: " + ", ".join(extra))
        lines.append(f"  bad files: {len(s['bad'])}")
        lines.extend(f"    {b['path']}: {b['reason']}" for b in s["bad"])
    verdict = (f"{report['bad_files']} bad file(s)" if report["bad_files"] else "no bad files")
    mode = "header check only" if report["quick"] else "header check and DALI decode"
    lines.append(f"{verdict} among {report['files']} ({mode}, {report['seconds']:.1f}s, "
                 f"{report['files_per_s']:,.0f} files/s)")
    return "\n".join(lines)


def write_json(report: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
