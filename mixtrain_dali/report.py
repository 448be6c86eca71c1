"""Reading runs back: metrics.jsonl -> curves (PNG) and side-by-side tables (Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def read_run(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory: no metrics.jsonl in it")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise UserError(f"{str(path)!r} holds no epochs yet")
    return rows


def summarize(rows: list[dict]) -> dict:
    """Totals of one run: wall time, steps, samples, final accuracy."""
    last = rows[-1]
    return {
        "epochs": len(rows),
        "wall_time_s": round(sum(r["epoch_time_s"] for r in rows), 2),
        "steps": sum(r["steps"] for r in rows),
        "samples": sum(r["samples"] for r in rows),
        "val_top1": last.get("val_top1"),
        "val_top5": last.get("val_top5"),
        "train_loss": last["train_loss"],
    }


def comparison_table(runs: dict[str, list[dict]], baseline: str | None = None) -> str:
    """Markdown table, one row a run; speedups relative to `baseline` (the first run)."""
    names = list(runs)
    baseline = baseline or names[0]
    base = summarize(runs[baseline])
    lines = ["| run | epochs | wall time (s) | steps | step ratio | time speedup | val top-1 (%) | val top-5 (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        s = summarize(runs[name])
        lines.append(
            f"| {name} | {s['epochs']} | {s['wall_time_s']:.1f} | {s['steps']} | "
            f"{base['steps'] / max(1, s['steps']):.2f}x | {base['wall_time_s'] / max(1e-9, s['wall_time_s']):.2f}x | "
            f"{_fmt(s['val_top1'])} | {_fmt(s['val_top5'])} |")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    out = Path(out)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    pyplot().close(fig)
    return out


def plot_runs(runs: dict[str, list[dict]], out: str | Path, title: str | None = None) -> Path:
    """Per-epoch curves of every run: val top-1, train loss, ideal and measured speedup."""
    plt = pyplot()

    fig, (tx, *axes) = plt.subplots(1, 4, figsize=(20, 4.4))
    base = next(iter(runs.values()))
    base_time = {r["epoch"]: r["epoch_time_s"] for r in base}
    for name, rows in runs.items():
        ep = [r["epoch"] for r in rows]
        if any("val_top1" in r for r in rows):
            axes[0].plot(ep, [r.get("val_top1") for r in rows], marker="o", label=name)
            elapsed = [sum(r["epoch_time_s"] for r in rows[:i + 1]) for i in range(len(rows))]
            line, = tx.plot(elapsed, [r.get("val_top1") for r in rows], marker=".", label=name)
            tx.annotate(f"{rows[-1].get('val_top1', 0):.1f}%", (elapsed[-1], rows[-1].get("val_top1") or 0),
                        xytext=(4, 0), textcoords="offset points", fontsize=8, color=line.get_color())
        axes[1].plot(ep, [r["train_loss"] for r in rows], marker="o", label=name)
        axes[2].plot(ep, [r["ideal_speedup"] for r in rows], marker="o", linestyle="--",
                     label=f"{name}: plan (ideal)")
        measured = [base_time[r["epoch"]] / r["epoch_time_s"] if r["epoch"] in base_time else None
                    for r in rows]
        if len(runs) > 1 and rows is not base:
            axes[2].plot(ep, measured, marker="s", label=f"{name}: measured vs {next(iter(runs))}")
    tx.set(title="val top-1 (%) against training time", xlabel="training time (s, val excluded)")
    axes[0].set(title="val top-1 (%)", xlabel="epoch")
    axes[1].set(title="train loss", xlabel="epoch")
    axes[2].set(title="epoch speedup", xlabel="epoch")
    for ax in (tx, *axes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)
