"""Decode alone: our crop windows against DALI's random-crop decoder, on the CPU.

Plain DALI (the loader benchmark's NVIDIA RN50 graph) decodes with
`decoders.image_random_crop`, which draws (area, ratio) and rejects windows that do not fit
the image (up to 100 tries). Our loader decodes with `decoders.image_slice` the window
`crops.CropPlanner` drew on the host, which keeps its aspect ratio and shrinks until it fits
(no rejection: the host does not know the image's size). Both decode only the window's region
(libjpeg-turbo's cropped decode), so the decoder's cost follows the pixels each rule keeps.
This times, on the loader benchmark's JPEGs (2048 of 400-500 px, batch 256, 2 threads), the
decoders alone, passes interleaved (every variant once per round), and counts the decoded
pixels per image:

  ours   image_slice of CropPlanner's windows (scale 0.08-1, ratio 3/4-4/3), exactly as the
         loader's graph makes them (crops.relative_window on each file's size)
  ours_t10  the same with crop_tries=10 (the first of 10 draws that fits: torchvision's rule)
  rrc    image_random_crop, random_area 0.08-1 (plain DALI's decoder)
  full   the whole image (reference)

    python benchmarks/probes/decode_windows_cpu.py      # writes benchmarks/results/decode_windows_cpu.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[1]  # benchmarks/, which holds common.py
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "decode_windows_cpu"
BATCH, SIZE, THREADS, N = 256, 224, 2, 2048
LABELS = {"ours": "image_slice of CropPlanner's windows (our loader, crop_tries=1)",
          "ours_t10": "image_slice of CropPlanner's windows, crop_tries=10 (torchvision's rule)",
          "rrc": "image_random_crop (plain DALI)", "full": "whole image"}


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    from mixtrain_dali.crops import CropPlanner, relative_window
    from mixtrain_dali.dataset import scan_image_folder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out-dir", default=str(common.RESULTS_DIR))
    args = p.parse_args(argv)
    root = common.benchmark_jpegs(common.DATA_CACHE, N, (400, 500), progress=False)
    index = scan_image_folder(root)
    n = len(index) // BATCH * BATCH
    rows = index.paths.encoded_batch(np.arange(n))
    sizes = np.array([Image.open(index.paths[i]).size[::-1] for i in range(n)], np.float64)  # (h, w)
    windows = {}
    for name, tries in (("ours", 1), ("ours_t10", 10)):
        planner = CropPlanner((0.08, 1.0), (3 / 4, 4 / 3), tries=tries)
        drawn = np.concatenate([planner.draw(0, b, BATCH) for b in range(n // BATCH)])
        windows[name] = tuple(a.astype(np.float32) for a in relative_window(drawn, sizes))

    @pipeline_def
    def ours(src):
        path, s, h = fn.external_source(source=src, num_outputs=3, batch=True,
                                        dtype=[types.UINT8, types.FLOAT, types.FLOAT])
        return fn.decoders.image_slice(fn.io.file.read(path), s, h, axis_names="HW", device="cpu",
                                       output_type=types.RGB)


    @pipeline_def
    def rrc(src):
        path = fn.external_source(source=src, batch=True, dtype=types.UINT8)
        return fn.decoders.image_random_crop(fn.io.file.read(path), device="cpu", output_type=types.RGB,
                                             random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                             num_attempts=100)

    @pipeline_def
    def full(src):
        path = fn.external_source(source=src, batch=True, dtype=types.UINT8)
        return fn.decoders.image(fn.io.file.read(path), device="cpu", output_type=types.RGB)

    runners = {}
    def windows_of(name):
        start, shape = windows[name]
        return lambda sl: (rows[sl], start[sl], shape[sl])

    for name, graph, make in (("ours", ours, windows_of("ours")), ("ours_t10", ours, windows_of("ours_t10")),
                              ("rrc", rrc, lambda sl: rows[sl]), ("full", full, lambda sl: rows[sl])):
        feed = common.BatchFeed(make, n // BATCH, BATCH)
        pipe = graph(feed, batch_size=BATCH, num_threads=THREADS, device_id=None, seed=0)
        pipe.build()

        def run(pipe=pipe, feed=feed) -> int:
            feed.i = 0
            pipe.reset()
            pixels = 0
            while True:
                try:
                    (out,) = pipe.run()
                except StopIteration:
                    return pixels
                pixels += sum(int(np.prod(out[j].shape()[:2])) for j in range(len(out)))
        runners[name] = run
    for run in runners.values():  # untimed
        run()
    times = {k: [] for k in runners}
    pixels = {}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            pixels[name] = run()
            times[name].append(time.perf_counter() - t)
    result_rows = {k: {"label": LABELS[k], "images_per_s": n / common.median(t), "images_per_s_runs": [n / x for x in t],
                       "megapixels_per_image": pixels[k] / n / 1e6} for k, t in times.items()}
    o, t, r = result_rows["ours"], result_rows["ours_t10"], result_rows["rrc"]
    headline = (f"decoded Mpx per image: ours {o['megapixels_per_image']:.3f}, ours with crop_tries=10 "
                f"{t['megapixels_per_image']:.3f}, DALI's random crop {r['megapixels_per_image']:.3f}; decode alone vs "
                f"DALI's: {o['images_per_s'] / r['images_per_s']:.2f}x and {t['images_per_s'] / r['images_per_s']:.2f}x "
                "its images/s")
    machine, when = common.machine_info(), common.now()
    command = "python benchmarks/probes/decode_windows_cpu.py" + (f" --rounds {args.rounds}" if args.rounds != 10 else "")
    md = common.header("Decode alone: our crop windows against DALI's random crop, CPU",
                       f"decoders only (io.file.read + decode, no resize), {n} JPEGs of 400-500 px, batch {BATCH}, "
                       f"{THREADS} threads, {args.rounds} rounds each timing every variant once; median images/s",
                       machine, when, command, headline)
    md += common.markdown_table(
        ["decoder", "images/s (median)", "min-max", "decoded Mpx / image"],
        [[v["label"], f"{v['images_per_s']:.0f}", f"{min(v['images_per_s_runs']):.0f}-{max(v['images_per_s_runs']):.0f}",
          f"{v['megapixels_per_image']:.3f}"] for v in result_rows.values()]) + "\n"
    md += ("\nNotes:\n- Windows: ours keep their (area, ratio) draw and shrink to fit; DALI rejects a window "
           "that does not fit and draws again, so it keeps fewer large windows.\n"
           "- The decoders' outputs are the windows at the source's resolution; the resize to "
           f"{SIZE} px that follows costs in proportion to them too.\n")
    common.write_results(Path(args.out_dir), NAME, {"name": NAME, "command": command, "date": when,
                                                   "machine": machine, "variants": result_rows}, md)
    print(md)
    return result_rows


if __name__ == "__main__":
    sys.exit(common.run_script(main))
