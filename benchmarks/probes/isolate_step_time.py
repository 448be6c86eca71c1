"""Step time of a mixed batch with constituents apart (MixConfig.isolate) against region
pooling of the composite: `small_cnn`, 64 composites of 32 px (48 mixed k=4 on an equal 2x2
grid, 16 unmixed), forward + mix_loss + backward, median of 5 rounds of 20 steps, both
variants interleaved in one process.

  python benchmarks/probes/isolate_step_time.py [--out-dir benchmarks/results/research]
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


def main(argv=None) -> dict:
    import torch

    from mixtrain_dali.nn import adapt_model, build_model, mix_loss

    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", default=str(common.RESULTS_DIR / "research"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    net = adapt_model(build_model("small_cnn", 10)).to(memory_format=torch.channels_last)
    b, unmixed = 64, 16
    x = torch.randn(b, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor([[0, 0, 16, 16], [16, 0, 16, 16], [0, 16, 16, 16], [16, 16, 16, 16]],
                         dtype=torch.float32).repeat(b, 1, 1)
    boxes[:unmixed, 1:] = 0
    boxes[:unmixed, 0] = torch.tensor([0, 0, 32, 32])
    labels = torch.randint(0, 10, (b, 4))
    labels[:unmixed, 1:] = -1
    mask = labels >= 0
    areas = mask.float() / mask.sum(1, keepdim=True)
    host = boxes.long().numpy()

    def step(isolate: bool) -> None:
        out = net(x, host, isolate=True) if isolate else net(x, boxes)
        loss, _ = mix_loss(out, labels, mask, areas)
        loss.backward()

    times = {False: [], True: []}
    for _ in range(6):  # the first round of each is a warm-up
        for isolate in (False, True):
            t0 = time.perf_counter()
            for _ in range(20):
                step(isolate)
            times[isolate].append((time.perf_counter() - t0) / 20)
    region, apart = common.median(times[False][1:]), common.median(times[True][1:])
    machine = common.machine_info()
    md = common.header(
        "Step time: constituents apart vs region pooling", __doc__.split("\n\n")[0].replace("\n", " "),
        machine, common.now(), "python benchmarks/probes/isolate_step_time.py " + " ".join(argv or sys.argv[1:]),
        result=f"isolate {apart * 1e3:.1f} ms vs region pooling {region * 1e3:.1f} ms a step: "
               f"{apart / region:.2f}x")
    md += common.markdown_table(["variant", "ms / step (median)", "rounds (ms)"],
                                [["region pooling", f"{region * 1e3:.1f}", ", ".join(f"{t * 1e3:.1f}" for t in times[False][1:])],
                                 ["isolate", f"{apart * 1e3:.1f}", ", ".join(f"{t * 1e3:.1f}" for t in times[True][1:])]]) + "\n"
    result = {"region_pooling_s": times[False], "isolate_s": times[True], "ratio": apart / region, "machine": machine}
    common.write_results(Path(args.out_dir), "isolate_step_time_cpu", result, md)
    print(md)
    return result


if __name__ == "__main__":
    main()
