"""Shared helpers of the benchmark scripts: the machine and versions, data caches, statistics,
output files (JSON + a Markdown table under a results-first header + PNG) and plots.

Every script is `main(argv, prog) -> dict`: it builds, checks and times all its variants in
one run, writes `<name>_<device>[_quick].{json,md,png}` under `--out-dir` and prints its
table last. Run one as `mixtrain bench {loader,speedup,accuracy,plan,demo,startup} ...` or
`python benchmarks/<script>.py ...`; the one-off probes as `python benchmarks/probes/<script>.py`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"        # the committed full-size results
DATA_CACHE = REPO_ROOT / "data" / "benchmarks"  # git-ignored (/data/)
QUICK_OUT = Path(tempfile.gettempdir()) / "mixtrain-bench-quick"

# the command a user types for each script (recorded in the results)
COMMANDS = {"loader_throughput": "mixtrain bench loader", "train_speedup": "mixtrain bench speedup",
            "accuracy_budget": "mixtrain bench accuracy", "demo": "mixtrain bench demo",
            "plan_speed": "mixtrain bench plan", "startup": "mixtrain bench startup"}


# -- command line -------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with the package's convention: a bad flag is one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """--quick and --out-dir, which every benchmark takes (add_common_args: and the rest)."""
    p.add_argument("--quick", action="store_true",
                   help="tiny data, few repeats: a smoke run of a few minutes on 2 cores; "
                        f"writes to {QUICK_OUT} unless --out-dir is given, files named *_quick.*")
    p.add_argument("--out-dir", default=None,
                   help=f"where the JSON/MD/PNG go (default {RESULTS_DIR.relative_to(REPO_ROOT)}/, "
                        f"or {QUICK_OUT} with --quick)")


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The flags of every benchmark that loads images or trains."""
    add_output_args(p)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="DALI and training device: auto = gpu if CUDA is available (default auto)")
    p.add_argument("--data-dir", default=None,
                   help=f"cache of the generated datasets (default {DATA_CACHE.relative_to(REPO_ROOT)}/)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own, i.e. the cores; 1 with --quick, "
                        "where DALI and torch share 2 cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def set_torch_threads(args) -> int:
    """Apply --torch-threads (1 by default with --quick); returns the number in use."""
    import torch

    n = args.torch_threads if args.torch_threads is not None else (1 if args.quick else 0)
    if n < 0:
        from mixtrain_dali.errors import UserError

        raise UserError(f"--torch-threads={n} must be >= 0 (0 = torch's default)")
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def start(build_parser, argv: list[str] | None, prog: str | None):
    """Every benchmark's first lines: (argv, parsed args, device 'cpu'|'gpu', torch threads)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    return argv, args, resolve_device(args.device), set_torch_threads(args)


def out_dir(args) -> Path:
    path = Path(args.out_dir) if args.out_dir else (QUICK_OUT if args.quick else RESULTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(args) -> Path:
    return Path(args.data_dir) if args.data_dir else DATA_CACHE


def stem(name: str, device: str, quick: bool) -> str:
    """File stem of a result: `<name>_<device>` (+ `_quick`), e.g. loader_throughput_cpu."""
    return f"{name}_{device}" + ("_quick" if quick else "")


def resolve_device(device: str) -> str:
    """'cpu' or 'gpu' (UserError if 'gpu' is asked for without CUDA)."""
    from mixtrain_dali.pipelines import resolve_device as _resolve

    return _resolve(device)[0]


def command_line(name: str, argv: list[str]) -> str:
    return f"{COMMANDS.get(name, name)} {shlex.join(argv)}".strip()


# -- machine ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict | None:
    """Name, driver, memory and CUDA version of GPU 0, from torch and nvidia-smi; None without."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
            "driver": None}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            info["driver"] = out.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def versions() -> dict:
    import numpy
    import torch
    import torchvision

    try:
        import nvidia.dali as dali

        dali_version = dali.__version__
    except ImportError:  # pragma: no cover - DALI is a dependency
        dali_version = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "dali": dali_version, "numpy": numpy.__version__}


def git_revision() -> dict:
    def git(*cmd):
        r = subprocess.run(["git", "-C", str(REPO_ROOT), *cmd], capture_output=True, text=True, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {"platform": platform.platform(), "hostname": platform.node(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "usable_cores": usable, "loadavg_at_start": load,
            "gpu": gpu_info(), "versions": versions(), "git": git_revision()}


def where(machine: dict) -> str:
    """One line: the hardware and the versions."""
    gpu = machine.get("gpu")
    hw = (f"{gpu['name']} (driver {gpu['driver'] or '?'}, CUDA {gpu['cuda']}), " if gpu else "no GPU, ")
    hw += f"{machine['cpu']}, {machine['cores']} cores"
    v = machine["versions"]
    return (f"{hw}; torch {v['torch']}, torchvision {v['torchvision']}, DALI {v['dali']}, "
            f"numpy {v['numpy']}, Python {v['python']}")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# -- statistics ---------------------------------------------------------------------------
def median(xs) -> float:
    xs = sorted(float(x) for x in xs)
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def spread(xs) -> dict:
    """mean, sample std (0 for one value), min, max, n (mixtrain_dali.curves.spread)."""
    from mixtrain_dali.curves import spread as _spread

    return _spread(xs)


# -- data ---------------------------------------------------------------------------------
def benchmark_jpegs(cache: Path, n: int, size_range=(400, 500), quality: int = 90,
                    classes: int = 10, progress: bool = True) -> Path:
    """An ImageFolder of `n` ImageNet-sized JPEGs (`root/<class>/<i>.jpg`), generated once."""
    from mixtrain_dali.synthetic import ensure_benchmark_jpegs

    root = cache / f"jpegs-n{n}-{size_range[0]}-{size_range[1]}-q{quality}-c{classes}"
    ensure_benchmark_jpegs(root, progress=progress, n=n, size_range=tuple(size_range),
                           quality=quality, classes=classes)
    return root


def synthetic_dataset(cache: Path, progress: bool = True, **kwargs) -> Path:
    """The embedded synthetic dataset (`root/{train,val}/<class>/...`), generated once."""
    from mixtrain_dali.synthetic import ensure_synthetic

    name = "synthetic-" + "-".join(f"{v}" for v in kwargs.values()) if kwargs else "synthetic"
    root = cache / name
    ensure_synthetic(root, progress=progress, **kwargs)
    return root


def train_only_view(root: Path, train_dir: Path) -> Path:
    """`root/train` -> `train_dir` (a symlink): a dataset root without val/, so that
    `mixtrain_dali.train.train` skips validation when only training time matters."""
    root.mkdir(parents=True, exist_ok=True)
    link = root / "train"
    if link.is_symlink() and link.resolve() != train_dir.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(train_dir.resolve(), target_is_directory=True)
    return root


# -- output -------------------------------------------------------------------------------
class BatchFeed:
    """A batch-mode DALI external source: `make(slice)` for each of `n_batches` batches of
    `batch` items, then StopIteration (DALI ends the epoch); `i = 0` rewinds it."""

    def __init__(self, make, n_batches: int, batch: int):
        self.make, self.n_batches, self.batch, self.i = make, n_batches, batch, 0

    def __call__(self):
        if self.i >= self.n_batches:
            raise StopIteration
        out = self.make(slice(self.i * self.batch, (self.i + 1) * self.batch))
        self.i += 1
        return out


def header(title: str, what: str, machine: dict, when: str, command: str, result: str | None = None) -> str:
    """The results-first header of a Markdown result file."""
    lines = [f"# {title}", ""]
    if result:
        lines += [f"**Result:** {result}", ""]
    lines += [f"- **What:** {what}", f"- **Where:** {where(machine)}", f"- **When:** {when}",
              f"- **Command:** `{command}`", "", ""]
    return "\n".join(lines)


def markdown_table(columns: list[str], rows: list[list], align: str | None = None) -> str:
    """`align`: one of l/r per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(columns) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_results(out: Path, file_stem: str, result: dict, markdown: str) -> dict[str, Path]:
    """`<stem>.json` (the whole result) and `<stem>.md`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{file_stem}.json", "md": out / f"{file_stem}.md"}
    _atomic_write(paths["json"], json.dumps(result, indent=2, default=_json_default) + "\n")
    _atomic_write(paths["md"], markdown.rstrip() + "\n")
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def fmt(x, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# -- plots --------------------------------------------------------------------------------
def _pyplot():
    from mixtrain_dali.report import pyplot

    return pyplot()


def _save(fig, path: Path) -> Path:
    from mixtrain_dali.report import save_figure

    return save_figure(fig, path)


def bar_plot(path: Path, labels: list[str], values: list[float], lo: list[float], hi: list[float],
             title: str, ylabel: str) -> Path:
    """Bars (medians) with min-max whiskers, the value printed on each bar."""
    plt = _pyplot()
    import textwrap

    fig, ax = plt.subplots(figsize=(2.2 * len(labels) + 2, 4.6))
    xs = range(len(labels))
    labels = [textwrap.fill(label, 20) for label in labels]
    err = [[v - a for v, a in zip(values, lo)], [b - v for v, b in zip(values, hi)]]
    bars = ax.bar(xs, values, yerr=err, capsize=5, color=[f"C{i}" for i in xs])
    for bar, v in zip(bars, values):
        ax.annotate(f"{v:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height() / 2),
                    ha="center", va="center", fontsize=10, color="white", fontweight="bold")
    ax.set_xticks(list(xs), labels, fontsize=9)
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def errorbar_plot(path: Path, points: dict[str, dict], title: str, xlabel: str, ylabel: str) -> Path:
    """One point per name at (x mean, y mean) with std error bars and min-max marks:
    points[name] = {"x": spread(...), "y": spread(...), "tag": short label (optional)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (name, p) in enumerate(points.items()):
        x, y = p["x"], p["y"]
        ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="o", capsize=4,
                    color=f"C{i}", label=name)
        ax.plot([x["mean"], x["mean"]], [y["min"], y["max"]], color=f"C{i}", alpha=0.35, lw=6)
        ax.annotate(p.get("tag", name), (x["mean"], y["mean"]), xytext=(6, 4), textcoords="offset points",
                    fontsize=9, fontweight="bold", color=f"C{i}")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def speedup_plot(path: Path, budgets: list[str], ideal: list[float], measured: list[float],
                 epoch_times: dict[str, list[float]], title: str, goal: float = 0.95) -> Path:
    """Left: measured vs ideal speedup per budget, with y = x and y = goal * x.
    Right: per-epoch training time of every run."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    top = max([2.0, *ideal, *measured]) * 1.08
    ax.plot([1, top], [1, top], "k--", lw=1, label="measured = ideal")
    ax.plot([1, top], [goal, goal * top], "k:", lw=1, label=f"{goal:g} x ideal (goal)")
    for i, (name, a, m) in enumerate(zip(budgets, ideal, measured)):
        ax.scatter([a], [m], s=60, color=f"C{i + 1}", zorder=3, label=f"{name}: {m:.2f}x / {a:.2f}x")
    ax.set(title="epoch speedup over the baseline (mixing epochs)", xlabel="ideal (plan)",
           ylabel="measured (epoch time)", xlim=(0.95, top), ylim=(0.5, top))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for i, (name, times) in enumerate(epoch_times.items()):
        bx.plot(range(1, len(times) + 1), times, marker="o", color=f"C{i}", label=name)
    bx.set(title="training time per epoch", xlabel="epoch", ylabel="seconds")
    bx.xaxis.get_major_locator().set_params(integer=True)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


# -- running ------------------------------------------------------------------------------
def run_script(main, argv: list[str] | None = None) -> int:
    """`python benchmarks/<script>.py`: a user's mistake is one line and exit status 2."""
    from mixtrain_dali.errors import UserError

    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
