"""`mixtrain bench {loader,speedup,accuracy,plan,demo,startup}`: run one of the checkout's benchmark scripts.

The scripts live in `benchmarks/` next to the package (a source checkout, not an installed
wheel); each is `main(argv, prog) -> dict` and writes JSON, a Markdown table and PNG plots.
Flags after the benchmark's name are passed through (`mixtrain bench loader --help`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .errors import UserError

# name on the command line -> script in benchmarks/
BENCHMARKS = {
    "loader": "loader_throughput.py",
    "speedup": "train_speedup.py",
    "accuracy": "accuracy_budget.py",
    "plan": "plan_speed.py",
    "demo": "demo_record.py",
    "startup": "startup.py",
}


def benchmarks_dir() -> Path:
    """`benchmarks/` of the checkout this package was imported from."""
    return Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The benchmark's script, imported as a module (not run)."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    folder = benchmarks_dir()
    script = folder / BENCHMARKS[name]
    if not script.is_file():
        raise UserError(f"no benchmark script {str(script)!r}: the benchmarks ship with a source "
                        "checkout of mixtrain-dali (git clone; pip install -e .), not with an "
                        "installed package")
    module_name = f"mixtrain_benchmarks.{script.stem}"
    spec = importlib.util.spec_from_file_location(module_name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def run_benchmark(name: str, argv: list[str] | None = None) -> dict:
    """Run benchmark `name` with the script's flags `argv`; returns its result dict."""
    module = load_benchmark(name)
    return module.main(list(argv or []), prog=f"mixtrain bench {name}")
