"""`make gpu-check`: the GPU path proven in one command, on a machine with CUDA.

Stages, each a subprocess with its own time limit; a failing stage does not stop the next,
and the exit status is non-zero if any failed (2 without CUDA, where nothing runs):

  data     ImageNet-sized JPEGs (400-500 px, q90), generated once under data/benchmarks/
  tests    pytest -m gpu over the test files that hold GPU tests
  loader   benchmarks/loader_throughput.py --device gpu: TrainLoader (mixing off; k=4 f=0.5),
           plain DALI readers.file, torchvision ImageFolder + DataLoader (16 workers)
  speedup  benchmarks/train_speedup.py --device gpu: ResNet-50, AMP bf16, channels_last, 224 px,
           batch 256: epoch time of MixTrain k=4 at x1.6 (= f 0.5) and x1.3 against no mixing,
           and against the plan's ideal
  profile  benchmarks/gpu_loader_profile.py: raw DALI throughput from plain DALI to our graph,
           step by step (crop windows finished on the host vs in the graph, fancy upsampling,
           decoder hints), where the loader's gap to plain DALI is

Writes benchmarks/results/gpu/: each benchmark's JSON/MD/PNG, the pytest log, and
gpu_check.{json,md} (results first: GPU, driver, DALI, torch, the exact command). With the
environment variable OUT set, also $OUT/gpu_results.tar.gz (that folder) and
$OUT/gpu_check.log. Sized for under 9 minutes on one H100 with 16 cores; no network, no pip:
DALI must be importable (e.g. PYTHONPATH=/tmp/dali-site).
"""

from __future__ import annotations

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
                  "tests/test_host_windows.py"]
# seconds; measured on an H100 (run 3, 2026-11-25): data 0.4 (cached), tests 126 (30 GPU tests; 40
# now), loader 52, speedup 91; profile not yet run as a stage. 510 s together: under the device's
# 10 minutes a call with 90 s for start-up, the report and packing
LIMIT_S = {"data": 30, "tests": 210, "loader": 80, "speedup": 120, "profile": 70}


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
        ("speedup", [py, "benchmarks/train_speedup.py", "--device", "gpu", "--arch", "resnet50",
                     "--image-size", "224", "--batch-size", "256", "--lr", "0.1", "--dataset", "jpegs",
                     "--n-images", n, "--k", "4", "--budgets", "1.6", "1.3", "--epochs", "5",
                     "--threads", "8", "--out-dir", out, "--no-progress"]),
        ("profile", [py, "benchmarks/gpu_loader_profile.py", "--n", n, "--out-dir", out]),
    ]


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


def summary(stages_run: dict, v: dict, command: str, when: str) -> tuple[dict, str]:
    res: dict = {"date": when, "command": command, "versions": v,
                 "stages": {k: {kk: vv for kk, vv in s.items() if kk != "output"} for k, s in stages_run.items()}}
    md = ["# GPU check", ""]
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
    md += ["", "Per-epoch wall time includes the loader's per-epoch work (planning, uploading the plan "
           "rows, resetting its DALI pipeline); short epochs make that a visible share.", ""]
    return res, "\n".join(md)


def pack(out_env: str) -> None:
    out = Path(out_env)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "gpu_results.tar.gz", "w:gz") as tar:
        tar.add(RESULTS, arcname="benchmarks/results/gpu")
    shutil.copy(RESULTS / "gpu_check.log", out / "gpu_check.log")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    py = os.environ.get("PY_GPU") or sys.executable
    if not cuda_available(py):
        print("gpu-check needs a CUDA GPU (torch.cuda.is_available() is False here); nothing was run")
        return 2
    only = set(argv) or None  # e.g. `gpu_check.py tests loader`: a subset of the stages
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = os.environ.get("GPU_CHECK_COMMAND") or shlex.join([py, "benchmarks/gpu_check.py", *argv])
    command = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')} {command}"
    v = versions(py)
    print(f"gpu-check: {v.get('gpu')}, driver {v.get('driver')}, DALI {v.get('dali')}, torch {v.get('torch')}",
          flush=True)
    done: dict = {}
    with open(RESULTS / "gpu_check.log", "w") as log:
        log.write(f"gpu-check {when}\n{json.dumps(v)}\n")
        for name, cmd in stages(py):
            if only and name not in only:
                continue
            done[name] = run_stage(name, cmd, LIMIT_S[name], log)
    res, md = summary(done, v, command, when)
    (RESULTS / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / "gpu_check.md").write_text(md)
    if os.environ.get("OUT"):
        pack(os.environ["OUT"])
    print(f"gpu-check: wrote {RESULTS.relative_to(REPO)}/gpu_check.md"
          + (f" and {os.environ['OUT']}/gpu_results.tar.gz" if os.environ.get("OUT") else ""))
    return 0 if all(s["ok"] for s in done.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
