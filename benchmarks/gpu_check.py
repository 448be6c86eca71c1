"""`make gpu-check` and `make gpu-check-2`: the GPU path proven in two commands, on a machine
with CUDA, each within the GPU machine's 600 s a command (`PARTS`: the stage limits of each
sum to at most 510 s, leaving time for start-up, the report and packing).

Stages, each a subprocess with its own time limit; a failing stage does not stop the next,
and the exit status is non-zero if any failed (2 without CUDA, where nothing runs):

  part 1 (`make gpu-check`, `gpu_check.py`)
  data     ImageNet-sized JPEGs (400-500 px, q90), generated once under data/benchmarks/
  tests    pytest -m gpu over the test files that hold GPU tests
  loader   benchmarks/loader_throughput.py --device gpu: TrainLoader (mixing off; k=4 f=0.5),
           plain DALI readers.file, torchvision ImageFolder + DataLoader (16 workers), and the
           read-path A/B: the files read in the DALI graph vs read ahead on host threads
  profile  benchmarks/gpu_loader_profile.py: raw DALI throughput from plain DALI to our graph,
           step by step (crop windows finished on the host vs in the graph, the files read
           in the graph vs ahead, fancy upsampling, decoder hints), where the loader's gap to
           plain DALI is

  part 2 (`make gpu-check-2`, `gpu_check.py --part 2`)
  data     as in part 1 (a no-op where part 1 ran on the same machine)
  speedup  benchmarks/train_speedup.py --device gpu: ResNet-50, AMP bf16, channels_last, 224 px,
           batch 256: epoch time of MixTrain k=4 at x1.6 (= f 0.5) and x1.3 against no mixing,
           and against the plan's ideal
  accuracy benchmarks/accuracy_budget.py on real photos (Imagenette, `ACCURACY_DATA`, carried
           in apart from the code): ResNet-18 at 128 px, AMP bf16, channels_last, batch 256,
           baseline, progressive resizing and MixTrain (defaults), each at the script's budgets
           of E epochs, one seed: val top-1 against training time. Skipped, not failed, where
           the data is absent (it says so)

Writes benchmarks/results/gpu/: each benchmark's JSON/MD/PNG, the pytest log, and
gpu_check.{json,md} (part 2: gpu_check_2.{json,md}; results first: GPU, driver, DALI, torch,
the exact command). With the environment variable OUT set, also $OUT/gpu_results.tar.gz
(that folder) and the part's log. No network, no pip: DALI must be importable (e.g.
PYTHONPATH=/tmp/dali-site). `gpu_check.py STAGE...` runs only the stages named.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "gpu"
N_JPEGS = 6144  # 24 batches of 256 per pass / baseline epoch
SIZE = (400, 500)
# the test files that hold GPU tests (explicit: test_controller, test_layout and test_region_pool
# import hypothesis, which the GPU machine lacks)
GPU_TEST_FILES = ["tests/test_gpu_path.py", "tests/test_loader.py", "tests/test_robust.py",
                  "tests/test_composite.py", "tests/test_devices.py", "tests/test_augment.py",
                  "tests/test_host_windows.py", "tests/test_read_ahead.py"]
# seconds; measured on an H100 (run 3, 2026-11-25): data 0.4 (cached), tests 126 (30 GPU tests; about
# 50 now, the bad-file tests also read ahead), loader 52 (4 loaders; 7 now), speedup 91; profile and
# accuracy not yet run. Each part's limits sum to at most 510 s: under the device's 600 s a call,
# with 90 s for start-up, the report and packing
LIMIT_S = {"data": 30, "tests": 240, "loader": 110, "profile": 100, "speedup": 120, "accuracy": 350}
PARTS = {1: ["data", "tests", "loader", "profile"], 2: ["data", "speedup", "accuracy"]}
CALL_BUDGET_S = 510
# real photos for the accuracy stage (not in the repository; carried to the GPU machine apart)
ACCURACY_DATA = os.environ.get("GPU_CHECK_ACCURACY_DATA", "data/real/imagenette-160")
ACCURACY = {"image_size": 128, "batch_size": 256, "epochs": 16, "arch": "resnet18"}


def stages(py: str) -> list[tuple[str, list[str]]]:
    out = str(RESULTS.relative_to(REPO))
    n = str(N_JPEGS)
    return [
        ("data", [py, "-c", "import sys; sys.path.insert(0, 'benchmarks'); import common; "
                            f"common.benchmark_jpegs(common.DATA_CACHE, {N_JPEGS}, {SIZE}, progress=False)"]),
        ("tests", [py, "-m", "pytest", "-m", "gpu", "-q", "-s", "-p", "no:cacheprovider", *GPU_TEST_FILES]),
        ("loader", [py, "benchmarks/loader_throughput.py", "--device", "gpu", "--n", n,
                    "--size", *map(str, SIZE), "--image-size", "224", "--batch-size", "256",
                    "--repeats", "3", "--warmup", "1", "--workers", "16", "--threads", "8",
                    "--out-dir", out, "--no-progress"]),
        ("profile", [py, "benchmarks/gpu_loader_profile.py", "--n", n, "--out-dir", out]),
        ("speedup", [py, "benchmarks/train_speedup.py", "--device", "gpu", "--arch", "resnet50",
                     "--image-size", "224", "--batch-size", "256", "--lr", "0.1", "--dataset", "jpegs",
                     "--n-images", n, "--k", "4", "--budgets", "1.6", "1.3", "--epochs", "5",
                     "--threads", "8", "--out-dir", out, "--no-progress"]),
        ("accuracy", [py, "benchmarks/accuracy_budget.py", "--data", ACCURACY_DATA,
                      "--image-size", str(ACCURACY["image_size"]), "--batch-size", str(ACCURACY["batch_size"]),
                      "--epochs", str(ACCURACY["epochs"]), "--seeds", "0",
                      "--methods", "baseline", "progressive", "mixtrain", "--arch", ACCURACY["arch"],
                      "--device", "gpu", "--out-dir", out, "--no-progress"]),
    ]


def skip_reason(name: str) -> str | None:
    """Why stage `name` cannot run here (it is then skipped, not failed), or None."""
    if name == "accuracy":
        data = REPO / ACCURACY_DATA
        if not ((data / "train").is_dir() and (data / "val").is_dir()):
            return (f"no data at {ACCURACY_DATA} (train/ and val/ of Imagenette; carried to the GPU "
                    "machine apart from the code, or GPU_CHECK_ACCURACY_DATA=DIR)")
    return None


def cuda_available(py: str) -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([py, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def versions(py: str) -> dict:
    code = ("import json, platform, torch\n"
            "v = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda}\n"
            "try:\n import nvidia.dali as d; v['dali'] = d.__version__\n"
            "except Exception as e: v['dali'] = 'not importable: ' + type(e).__name__\n"
            "try:\n import torchvision; v['torchvision'] = torchvision.__version__\n"
            "except Exception: v['torchvision'] = None\n"
            "if torch.cuda.is_available():\n"
            " p = torch.cuda.get_device_properties(0)\n"
            " v.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count())\n"
            "print(json.dumps(v))")
    v = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120).stdout)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        v["driver"] = smi[0] if smi else None
    except (OSError, subprocess.TimeoutExpired):
        v["driver"] = None
    v["cpus"] = os.cpu_count()
    v["host"] = platform.node()
    return v


def run_stage(name: str, cmd: list[str], limit: int, log) -> dict:
    skip = skip_reason(name)
    if skip:
        log.write(f"\n===== stage {name}: skipped: {skip}\n")
        print(f"gpu-check: {name:8s} skipped: {skip}", flush=True)
        return {"status": f"skipped: {skip}", "ok": True, "skipped": True, "seconds": 0.0,
                "command": shlex.join(cmd), "output": []}
    log.write(f"\n===== stage {name}: {shlex.join(cmd)} (limit {limit} s)\n")
    log.flush()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    lines: list[str] = []
    try:
        out, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the stage and its workers (DataLoader, DDP ranks)
        out, _ = proc.communicate()
        status = f"timed out after {limit} s"
    lines = (out or "").splitlines()
    log.write(out or "")
    log.write(f"===== stage {name}: {status} in {time.perf_counter() - t0:.1f} s\n")
    log.flush()
    tail = [ln for ln in lines if ln.strip()][-1:] or [""]
    print(f"gpu-check: {name:8s} {status} ({time.perf_counter() - t0:.0f} s) {tail[0][:100]}", flush=True)
    return {"status": status, "ok": status == "ok", "seconds": round(time.perf_counter() - t0, 1),
            "command": shlex.join(cmd), "output": lines}


def summary(stages_run: dict, v: dict, command: str, when: str, part: int = 1,
            since: float = 0.0) -> tuple[dict, str]:
    """The report of one invocation: gpu_check(_2).{json,md}. `since`: when it started (a
    result file older than that is another run's)."""
    res: dict = {"date": when, "command": command, "versions": v, "part": part,
                 "stages": {k: {kk: vv for kk, vv in s.items() if kk != "output"} for k, s in stages_run.items()}}
    md = ["# GPU check" + (f", part {part}" if part != 1 else ""), ""]
    failed = [k for k, s in stages_run.items() if not s["ok"]]
    md += [f"**Result:** {'FAILED: ' + ', '.join(failed) if failed else 'all stages passed'}", ""]
    md += [f"- **GPU:** {v.get('gpu')} x{v.get('gpus')} ({v.get('gpu_memory_gib')} GiB), driver {v.get('driver')}, "
           f"CUDA {v.get('cuda')}, {v.get('cpus')} CPU cores",
           f"- **Versions:** DALI {v.get('dali')}, torch {v.get('torch')}, torchvision {v.get('torchvision')}, "
           f"Python {v.get('python')}",
           f"- **When:** {when}", f"- **Command:** `{command}`", ""]
    md += ["| stage | status | seconds |", "|---|---|---:|"]
    md += [f"| {k} | {s['status']} | {s['seconds']} |" for k, s in stages_run.items()]
    tests = stages_run.get("tests")
    if tests:
        counts = [ln for ln in tests["output"] if re.search(r"\d+ (passed|failed|error)", ln)]
        res["pytest"] = counts[-1].strip("= ") if counts else None
        checks = [ln.split("GPU-CHECK ", 1)[1] for ln in tests["output"] if "GPU-CHECK " in ln]
        checks += [ln for ln in tests["output"] if "val vs torchvision" in ln]
        res["measurements"] = checks
        md += ["", f"**Tests:** {res['pytest']}", ""]
        md += [f"- {c}" for c in checks]
    loader = RESULTS / "loader_throughput_gpu.json"
    if loader.is_file() and stages_run.get("loader", {}).get("ok"):
        d = json.loads(loader.read_text())
        res["loader"] = {k: {"images_per_s": x["images_per_s"], "model_inputs_per_s": x["outputs_per_s"],
                             "vs_torchvision": x["vs_torchvision"]} for k, x in d["variants"].items()}
        md += ["", "**Loader** (source images/s, median; [loader_throughput_gpu.md](loader_throughput_gpu.md)):", "",
               "| loader | images/s | model inputs/s | vs torchvision |", "|---|---:|---:|---:|"]
        md += [f"| {x['label']} | {x['images_per_s']:.0f} | {x['outputs_per_s']:.0f} | "
               f"{x['vs_torchvision']:.2f}x |" for x in d["variants"].values()]
        off, plain = d["variants"].get("mixtrain_off"), d["variants"].get("dali_plain")
        if off and plain:
            res["loader_off_vs_plain_dali"] = off["images_per_s"] / plain["images_per_s"]
            md += ["", f"TrainLoader (mixing off) / plain DALI: {res['loader_off_vs_plain_dali']:.3f}"]
        md += _read_paths(d.get("read_paths"), res)
    speed = RESULTS / "train_speedup_gpu.json"
    if speed.is_file() and stages_run.get("speedup", {}).get("ok"):
        d = json.loads(speed.read_text())
        res["speedup"] = {k: {kk: c[kk] for kk in ("target_speedup", "ideal", "measured", "efficiency")}
                          for k, c in d["comparisons"].items()}
        md += ["", "**Training speedup**, ResNet-50 AMP bf16 channels_last, 224 px, batch 256, mixing epochs vs "
               "the baseline's same epochs ([train_speedup_gpu.md](train_speedup_gpu.md)):", "",
               "| run | target S | ideal S | measured S | measured / ideal |", "|---|---:|---:|---:|---:|"]
        for k, c in d["comparisons"].items():
            f = (lambda x, n=3: "-" if x is None else f"{x:.{n}f}")
            md += [f"| {k} | {c['target_speedup']:g} | {f(c['ideal'])} | {f(c['measured'])} | {f(c['efficiency'])} |"]
    prof = RESULTS / "gpu_loader_profile.json"
    if prof.is_file() and stages_run.get("profile", {}).get("ok"):
        d = json.loads(prof.read_text())["results"]
        base = d["plain"]["images_per_s"]
        res["profile"] = {k: x["images_per_s"] for k, x in d.items()}
        md += ["", "**Loader profile** (raw DALI images/s; [gpu_loader_profile.md](gpu_loader_profile.md)):", "",
               "| variant | images/s | vs plain DALI |", "|---|---:|---:|"]
        md += [f"| {k} | {x['images_per_s']:.0f} | {x['images_per_s'] / base:.2f} |" for k, x in d.items()]
    md += _accuracy(stages_run, res, since)
    md += ["", "Per-epoch wall time includes the loader's per-epoch work (planning, uploading the plan "
           "rows, resetting its DALI pipeline); short epochs make that a visible share.", ""]
    return res, "\n".join(md)


def _read_paths(a_b: dict | None, res: dict) -> list[str]:
    """The loader stage's read-path A/B (loader_throughput.read_paths), as report lines."""
    if not a_b:
        return []
    res["read_paths"] = {"ahead_vs_graph": a_b["ahead_vs_graph"]["median"],
                         **{f"{r}_vs_plain_dali": a_b[r]["vs_dali_plain"]["median"]
                            for r in ("graph", "ahead") if "vs_dali_plain" in a_b[r]}}
    line = (f"Read paths (mixing off; the default is read={a_b['default']!r}): read ahead / read in the "
            f"graph {a_b['ahead_vs_graph']['median']:.3f}")
    line += "".join(f", {r} / plain DALI {a_b[r]['vs_dali_plain']['median']:.3f}"
                    for r in ("graph", "ahead") if "vs_dali_plain" in a_b[r])
    return ["", line]


def _accuracy(stages_run: dict, res: dict, since: float) -> list[str]:
    """The accuracy stage's figures (val top-1 and training time per method and budget) from
    the newest accuracy_*_gpu.json it wrote; it writes after every run, so a stage stopped
    at its limit still reports the runs it finished."""
    stage = stages_run.get("accuracy")
    if not stage or stage.get("skipped"):
        return ["", f"**Accuracy:** {stage['status']}"] if stage else []
    files = [f for f in RESULTS.glob("accuracy_*_gpu.json") if f.stat().st_mtime >= since]
    if not files:
        return []
    f = max(files, key=lambda x: x.stat().st_mtime)
    try:
        d = json.loads(f.read_text())
        rows = [(m.get("label", k), b, p["val_top1"]["mean"], p["train_time_s"]["mean"])
                for k, m in d["methods"].items() for b, p in m.get("budgets", {}).items()]
    except (ValueError, KeyError, TypeError) as e:
        return ["", f"**Accuracy:** {f.name} could not be read ({type(e).__name__}: {e})"]
    res["accuracy"] = {"file": f.name, "runs_done": d.get("runs_done"), "runs_planned": d.get("runs_planned"),
                       "points": [{"method": m, "budget": b, "val_top1": a, "train_time_s": t}
                                  for m, b, a, t in rows]}
    done = f", {d['runs_done']} of {d['runs_planned']} runs" if d.get("runs_done") != d.get("runs_planned") else ""
    md = ["", f"**Accuracy against training time** ([{f.stem}.md]({f.stem}.md){done}):", "",
          "| method | budget (x E) | val top-1 (%) | train time (s) |", "|---|---:|---:|---:|"]
    md += [f"| {m} | {b} | {a:.2f} | {t:.1f} |" for m, b, a, t in rows]
    return md


def pack(out_env: str, log_name: str = "gpu_check.log") -> None:
    out = Path(out_env)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "gpu_results.tar.gz", "w:gz") as tar:
        tar.add(RESULTS, arcname="benchmarks/results/gpu")
    shutil.copy(RESULTS / log_name, out / log_name)


def plan(part: int, only: list[str] | None = None) -> list[str]:
    """The stages one invocation runs, in order: part `part`'s, or those of `only`."""
    order = [name for name, _ in stages("python3")]
    return [n for n in order if n in only] if only else list(PARTS[part])


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", type=int, choices=sorted(PARTS), default=1,
                   help="1: data, tests, loader, profile (make gpu-check); 2: data, speedup, accuracy "
                        "(make gpu-check-2)")
    p.add_argument("stages", nargs="*", metavar="STAGE", help=f"only these stages (of {', '.join(LIMIT_S)})")
    args = p.parse_args(argv)
    bad = [name for name in args.stages if name not in LIMIT_S]
    if bad:
        p.error(f"stage {bad[0]!r}; valid: {', '.join(LIMIT_S)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    py = os.environ.get("PY_GPU") or sys.executable
    if not cuda_available(py):
        print("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False here); nothing was run")
        return 2
    names = plan(args.part, args.stages)
    suffix = "" if args.part == 1 else f"_{args.part}"
    since = time.time()
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = os.environ.get("GPU_CHECK_COMMAND") or shlex.join([py, "benchmarks/gpu_check.py", *argv])
    command = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')} {command}"
    v = versions(py)
    print(f"gpu-check: {v.get('gpu')}, driver {v.get('driver')}, DALI {v.get('dali')}, torch {v.get('torch')}",
          flush=True)
    done: dict = {}
    cmds = dict(stages(py))
    with open(RESULTS / f"gpu_check{suffix}.log", "w") as log:
        log.write(f"gpu-check {when}\n{json.dumps(v)}\n")
        for name in names:
            done[name] = run_stage(name, cmds[name], LIMIT_S[name], log)
    res, md = summary(done, v, command, when, args.part, since)
    (RESULTS / f"gpu_check{suffix}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"gpu_check{suffix}.md").write_text(md)
    if os.environ.get("OUT"):
        pack(os.environ["OUT"], f"gpu_check{suffix}.log")
    print(f"gpu-check: wrote {RESULTS.relative_to(REPO)}/gpu_check{suffix}.md"
          + (f" and {os.environ['OUT']}/gpu_results.tar.gz" if os.environ.get("OUT") else ""))
    return 0 if all(s["ok"] for s in done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
