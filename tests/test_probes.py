"""The one-off probes in benchmarks/probes/ (questions already answered, their results under
benchmarks/results/): each still loads from its place, and the two with a --quick run give
sane numbers."""

import subprocess
import sys
from pathlib import Path

import pytest

from mixtrain_dali.errors import UserError

PROBES = Path(__file__).resolve().parents[1] / "benchmarks" / "probes"
NAMES = ("crop_windows_cpu", "decode_windows_cpu", "detail_sensitivity", "isolate_step_time",
         "loader_gap_cpu", "loader_host_cost", "startup_threads")

sys.path.insert(0, str(PROBES))  # each probe puts benchmarks/ (common.py) on the path itself


def _positive(x):
    return isinstance(x, (int, float)) and x > 0 and x != float("inf")


def test_every_probe_finds_the_benchmarks_common_module_from_its_folder(tmp_path):
    assert sorted(p.stem for p in PROBES.glob("*.py")) == sorted(NAMES)
    # what `python benchmarks/probes/<name>.py` does before main() runs: a fresh interpreter,
    # elsewhere, each probe with nothing of benchmarks/ on the path or imported before it
    code = ("import runpy, sys\n"
            "base = list(sys.path)\n"
            f"for name in {NAMES!r}:\n"
            "    sys.path[:] = base\n"
            "    sys.modules.pop('common', None)\n"
            f"    ns = runpy.run_path({str(PROBES)!r} + '/' + name + '.py', run_name='probe')\n"
            "    assert callable(ns['main']) and ns['common'].__file__.endswith('benchmarks/common.py'), name\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_detail_sensitivity_quick_evaluates_every_view_of_every_synthetic_composition(tmp_path):
    import detail_sensitivity

    result = detail_sensitivity.main(["--quick", "--device", "cpu", "--no-progress", "--out-dir",
                                      str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"),
                                      "--runs-dir", str(tmp_path / "runs")])
    rows = result["rows"]
    assert set(rows) == set(detail_sensitivity.compositions())
    for row in rows.values():
        for view in ("top1_full", "top1_half", "top1_quarter"):
            assert 0 <= row[view] <= 100
        assert row["drop_half"] == pytest.approx(row["top1_full"] - row["top1_half"])
        assert row["val_images"] == 10 * 3  # every val image of the 10 linked classes, 3 each
    comps = detail_sensitivity.compositions()
    assert sum("fine" in c for c in comps["synthetic, default 10 (3 fine pairs)"]) == 3
    assert sum("fine" in c for c in comps["synthetic, no fine pair"]) == 0
    md = (tmp_path / "out" / "detail_sensitivity_cpu_quick.md").read_text()
    assert md.startswith("# Detail sensitivity") and "| synthetic, 1 fine pair |" in md


@pytest.mark.parametrize("spec", ["nodir", "x=", "x=/no/such/dir", "x=.:64:six", "x=.:1:2:3"])
def test_detail_sensitivity_refuses_a_bad_data_spec_in_one_line(spec):
    import detail_sensitivity

    with pytest.raises(UserError, match="--data"):
        detail_sensitivity.parse_data(spec)


def test_crop_windows_quick_times_both_ways_and_the_loader(tmp_path):
    import crop_windows_cpu

    out = tmp_path / "out"
    result = crop_windows_cpu.main(["--quick", "--rounds", "1", "--out-dir", str(out),
                                    "--data-dir", str(tmp_path / "data")])
    assert set(result["median_ms"]) == {"read", "graph windows", "graph windows, tries=1", "host windows"}
    assert all(_positive(v) for v in result["median_ms"].values())
    assert all(_positive(v) for v in result["loader_median"].values()) and len(result["loader_median"]) == 2
    assert result["saved_ms_per_batch"] == pytest.approx(
        result["median_ms"]["graph windows"] - result["median_ms"]["host windows"])
    md = (out / "crop_windows_cpu_quick.md").read_text()
    assert md.startswith("# Crop windows") and "--quick" in md and "| host windows |" in md
