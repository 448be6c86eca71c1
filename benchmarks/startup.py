"""Start-up at ImageNet scale: wall time and peak memory from nothing to the first epoch's plan.

Builds (once, cached under data/benchmarks/) an ImageFolder of --files tiny valid JPEGs in
--classes class folders (ImageNet's train set: 1,281,167 files in 1,000 classes; the default
is the issue's 1,280,167), every file the same 632-byte JPEG, written by a thread pool. Then
measures each case in a fresh Python process (so imports, caches and peak RSS are its own):

- torchvision: `ImageFolder(root)` and `DataLoader(dataset, 256, shuffle=True)`;
- ours, cold: no manifest yet, so the whole file check runs;
- ours, manifest: the manifest of the cold run is there (nothing changed);
- ours, --no-file-check: `validate=False`, the listing alone;
- 2 ranks, cold / manifest: two processes in one gloo group, each checking half.

"Start-up" is the same for every case of ours: the time from just after the imports (torch,
mixtrain_dali.loader; the gloo group, for 2 ranks, is joined before) to the end of
`TrainLoader(root, 256, 32, mix=MixConfig(enabled=True, k=4, target_speedup=1.6),
device="cpu").batches()`: the scan, the check, the loader's tables and this rank's batches of
epoch 0, i.e. everything before iteration builds the DALI pipeline (the same fixed cost for
any dataset size). Peak RSS: the child's VmHWM (imports included). Files the check
opened: counted in the child. Each case is run --repeats times (median time, max RSS); the
page cache is warmed by one untimed cold run first.

    mixtrain bench startup                   # 1,280,167 files (builds ~5 GB once)
    mixtrain bench startup --quick           # 20,000 files in 100 classes
    mixtrain bench startup --files 50000 --classes 100 --out-dir /tmp/s
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import common  # noqa: E402  (benchmarks/common.py)

NAME = "startup"
IMAGENET_FILES = 1_280_167
COMPLETE = ".complete"
# name -> (label, ranks, manifest before the run: "none" | "kept", validate)
CASES = {
    "torchvision": ("torchvision ImageFolder + DataLoader", 1, "kept", True),
    "ours_cold": ("ours, cold (no manifest)", 1, "none", True),
    "ours_manifest": ("ours, manifest", 1, "kept", True),
    "ours_no_check": ("ours, --no-file-check", 1, "kept", False),
    "ours_cold_2ranks": ("ours, cold, 2 ranks", 2, "none", True),
    "ours_manifest_2ranks": ("ours, manifest, 2 ranks", 2, "kept", True),
}


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def build_tree(cache: Path, files: int, classes: int, progress: bool = True, threads: int = 8) -> Path:
    """`cache/startup-n<files>-c<classes>/n<class>/n<class>_<i>.JPEG`, written once (a
    `.complete` marker says the tree is whole; an interrupted build is finished next time)."""
    from mixtrain_dali.errors import UserError
    from tqdm import tqdm

    if files < classes or classes < 1:
        raise UserError(f"--files {files} / --classes {classes}: need 1 <= classes <= files")
    root = cache / f"startup-n{files}-c{classes}"
    if (root / COMPLETE).is_file():
        return root
    data = tiny_jpeg()

    def write_class(c: int) -> int:
        d = root / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        lo, hi = c * files // classes, (c + 1) * files // classes
        for j in range(lo, hi):
            p = d / f"n{c:08d}_{j}.JPEG"
            if not p.exists():
                p.write_bytes(data)
        return hi - lo

    with ThreadPoolExecutor(threads) as pool, tqdm(total=files, desc=f"building {root.name}", unit="file",
                                                    disable=not progress) as bar:
        for n in pool.map(write_class, range(classes)):
            bar.update(n)
    (root / COMPLETE).write_text(f"{files}\n")
    return root


# -- one case, in a child process ---------------------------------------------------------
def child(case: str, root: str, rank: int, world: int, init_file: str | None) -> dict:
    """Time one start-up in this (fresh) process; returns what the parent records."""
    t_import = time.perf_counter()
    import torch

    if case == "torchvision":
        from torchvision.datasets import ImageFolder
    else:
        from mixtrain_dali import robust
        from mixtrain_dali.config import MixConfig
        from mixtrain_dali.loader import TrainLoader

        opened = [0]
        real = robust._check

        def counting(path):
            opened[0] += 1
            return real(path)

        robust._check = counting
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                             world_size=world)
    t0 = time.perf_counter()
    if case == "torchvision":
        dataset = ImageFolder(root)
        loader = torch.utils.data.DataLoader(dataset, 256, shuffle=True)
        n, files_opened = len(loader.dataset), 0
    else:
        loader = TrainLoader(root, 256, 32, mix=MixConfig(enabled=True, k=4, target_speedup=1.6), device="cpu",
                             validate=CASES[case][3])
        loader.batches()
        n, files_opened = loader.num_samples, opened[0]
    seconds = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return {"seconds": seconds, "import_seconds": t0 - t_import, "n_samples": n, "files_opened": files_opened,
            "peak_rss_mb": peak_rss_mb(), "rank": rank}


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc (ru_maxrss would carry the parent's peak over
    fork + exec on Linux); ru_maxrss where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _spawn(case: str, root: Path, world: int, tmp: Path) -> list[dict]:
    """Run `case` in `world` fresh processes; their results, by rank."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(common.REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    init = tmp / f"init-{case}-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", case, "--root", str(root),
                               "--rank", str(r), "--world", str(world), "--init-file", str(init)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"start-up case {case} failed (exit {p.returncode}):\n{stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def build_parser(prog: str | None = None):
    p = common.Parser(prog=prog, description=__doc__.split("\n\n")[0])
    common.add_output_args(p)
    p.add_argument("--files", type=int, default=None,
                   help=f"image files in the tree (default {IMAGENET_FILES:,}; 20,000 with --quick)")
    p.add_argument("--classes", type=int, default=None, help="class folders (default 1000; 100 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 3; 1 with --quick)")
    p.add_argument("--data-dir", default=None,
                   help=f"cache of the generated tree (default {common.DATA_CACHE.relative_to(common.REPO_ROOT)}/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--child", help=argparse_suppress())
    p.add_argument("--root", help=argparse_suppress())
    p.add_argument("--rank", type=int, default=0, help=argparse_suppress())
    p.add_argument("--world", type=int, default=1, help=argparse_suppress())
    p.add_argument("--init-file", help=argparse_suppress())
    return p


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _drop_manifest(root: Path) -> None:
    from mixtrain_dali.manifest import manifest_path

    path = manifest_path(root)
    if path.exists():
        path.unlink()


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    if args.child:
        result = child(args.child, args.root, args.rank, args.world, args.init_file)
        print(json.dumps(result), flush=True)
        return result
    from mixtrain_dali.errors import UserError

    files = args.files if args.files is not None else (20_000 if args.quick else IMAGENET_FILES)
    classes = args.classes if args.classes is not None else (100 if args.quick else 1000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        raise UserError(f"--repeats {repeats}: must be >= 1")
    machine, when = common.machine_info(), common.now()
    cache = Path(args.data_dir) if args.data_dir else common.DATA_CACHE
    root = build_tree(cache, files, classes, progress=not args.no_progress)
    tmp = cache / "startup-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"start-up benchmark: {files:,} files in {classes} classes at {root}; {len(CASES)} cases x "
          f"{repeats} run(s), each in a fresh process", flush=True)
    _drop_manifest(root)
    _spawn("ours_cold", root, 1, tmp)  # untimed: warms the page cache (headers included)
    results = {}
    for case, (label, world, manifest, _) in CASES.items():
        runs = []
        for _ in range(repeats):
            if manifest == "none":
                _drop_manifest(root)
            elif case != "torchvision" and not manifest_exists(root):
                _spawn("ours_cold", root, 1, tmp)
            runs.append(_spawn(case, root, world, tmp))
        seconds = [max(r["seconds"] for r in ranks) for ranks in runs]  # a step waits for the slowest rank
        results[case] = {
            "label": label, "ranks": world, "runs": runs,
            "seconds": common.median(seconds), "seconds_spread": common.spread(seconds),
            "peak_rss_mb": max(r["peak_rss_mb"] for ranks in runs for r in ranks),
            "import_seconds": common.median([r["import_seconds"] for ranks in runs for r in ranks]),
            "files_opened_per_rank": [r["files_opened"] for r in runs[-1]],
            "n_samples": runs[-1][0]["n_samples"],
        }
        print(f"  {label}: {results[case]['seconds']:.2f} s, peak RSS {results[case]['peak_rss_mb']:.0f} MB",
              flush=True)
    tv = results["torchvision"]
    goals = {
        "manifest_vs_torchvision": results["ours_manifest"]["seconds"] / tv["seconds"],
        "cold_seconds": results["ours_cold"]["seconds"],
        "rss_vs_torchvision": results["ours_manifest"]["peak_rss_mb"] / tv["peak_rss_mb"],
        "rss_cold_vs_torchvision": results["ours_cold"]["peak_rss_mb"] / tv["peak_rss_mb"],
    }
    command = common.command_line(NAME, argv)
    result = {"name": NAME, "command": command, "when": when, "machine": machine,
              "settings": {"files": files, "classes": classes, "repeats": repeats, "quick": args.quick,
                           "device": "cpu", "root": str(root)},
              "cases": results, "goals": goals}
    md = markdown(result)
    out = common.out_dir(args)
    stem = common.stem(NAME, "cpu", args.quick)
    paths = common.write_results(out, stem, result, md)
    plot(out / f"{stem}.png", results, files)
    print(md)
    print(f"wrote {paths['json']}, {paths['md']}")
    return result


def manifest_exists(root: Path) -> bool:
    from mixtrain_dali.manifest import manifest_path

    return manifest_path(root).exists()


def markdown(result: dict) -> str:
    s, cases, g = result["settings"], result["cases"], result["goals"]
    tv = cases["torchvision"]
    summary = (f"{s['files']:,} files: ours with the manifest {cases['ours_manifest']['seconds']:.2f} s "
               f"({g['manifest_vs_torchvision']:.2f}x torchvision's {tv['seconds']:.2f} s; goal <= 2x), "
               f"cold {g['cold_seconds']:.2f} s (goal <= 12 s at 1,280,167 files), peak RSS "
               f"{g['rss_vs_torchvision']:.2f}x torchvision's with the manifest, {g['rss_cold_vs_torchvision']:.2f}x "
               "cold (goal <= 1.2x)")
    what = ("start-up = from after the imports to the end of `TrainLoader(root, 256, 32, "
            "mix=MixConfig(enabled=True, k=4, target_speedup=1.6), device=\"cpu\").batches()` (torchvision: "
            "`ImageFolder(root)` + `DataLoader(ds, 256, shuffle=True)`), each run in a fresh process, warm page "
            f"cache; median of {s['repeats']} run(s), 2 ranks: the slower rank; peak RSS = the process's "
            "VmHWM, imports included (the largest over runs and ranks)")
    head = common.header(f"Start-up at {s['files']:,} files ({s['classes']} classes)", what, result["machine"],
                         result["when"], result["command"], summary)
    rows = []
    for c in cases.values():
        sp = c["seconds_spread"]
        rows.append([c["label"], c["ranks"], f"{c['seconds']:.2f}", f"{sp['min']:.2f}-{sp['max']:.2f}",
                     f"{c['seconds'] / tv['seconds']:.2f}x", f"{c['peak_rss_mb']:.0f}",
                     f"{c['peak_rss_mb'] / tv['peak_rss_mb']:.2f}x",
                     " / ".join(f"{n:,}" for n in c["files_opened_per_rank"]), f"{c['import_seconds']:.1f}"])
    table = common.markdown_table(["case", "ranks", "start-up s", "min-max s", "vs torchvision", "peak RSS MB",
                                   "RSS vs torchvision", "files opened per rank", "imports s"], rows,
                                  "lrrrrrrrr")
    return head + table + "\n"


def plot(path: Path, cases: dict, files: int) -> Path:
    plt = common._pyplot()
    labels = [c["label"].replace("torchvision ImageFolder + DataLoader", "torchvision") for c in cases.values()]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.6))
    xs = range(len(labels))
    for axis, key, title, unit in ((ax, "seconds", "start-up", "s"), (bx, "peak_rss_mb", "peak RSS", "MB")):
        values = [c[key] for c in cases.values()]
        bars = axis.bar(xs, values, color=[f"C{i}" for i in xs])
        for bar, v in zip(bars, values):
            axis.annotate(f"{v:.1f}" if unit == "s" else f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, v),
                          ha="center", va="bottom", fontsize=9)
        axis.set_xticks(list(xs), labels, rotation=25, ha="right", fontsize=8)
        axis.set(title=f"{title} ({files:,} files)", ylabel=unit)
        axis.grid(axis="y", alpha=0.3)
    return common._save(fig, path)


if __name__ == "__main__":
    sys.exit(common.run_script(main))
