"""Accuracy-against-time curves: how methods are compared (`mixtrain demo`, `mixtrain bench accuracy`).

A method trained at several budgets (each with a schedule that ends at its budget) gives one
point per budget: (training time, final top-1). Its curve is the piecewise-linear line
through them. One method's gain over another is the vertical distance between their curves
at equal time, taken per seed and then averaged, so seed-to-seed noise in time and accuracy
stays paired; and a method's speed is the time its curve needs to reach the full baseline's
accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def budget_epochs(epochs: int, budget: float) -> int:
    """The epochs a method trains at `budget` (a fraction of E = `epochs`): round(budget x E),
    at least 1; its schedule then ends there, as budgeted training wants."""
    return max(1, round(epochs * budget))


def interp(points, t: float) -> float | None:
    """The piecewise-linear curve through `points` ((time, top-1), any order) at time `t`;
    None outside its time range or with fewer than two points."""
    pts = sorted(points)
    if len(pts) < 2 or not pts[0][0] <= t <= pts[-1][0]:
        return None
    for (t0, a0), (t1, a1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return a0 + (a1 - a0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return None


def spread(xs) -> dict:
    """Mean, sample std (0 for one value), min, max and count of `xs` (None for none)."""
    xs = [float(x) for x in xs]
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(xs), "max": max(xs), "n": len(xs)}


def seed_curves(runs: list[dict]) -> dict[int, list[tuple[float, float]]]:
    """{seed: [(train time, top-1), one per budget]} of one method's runs (dicts with `seed`,
    `train_time_s`, `val_top1`)."""
    out: dict[int, list] = {}
    for r in runs:
        out.setdefault(r["seed"], []).append((r["train_time_s"], r["val_top1"]))
    return out


def gain(a_runs: list[dict], b_runs: list[dict]) -> dict | None:
    """Method a's curve minus method b's at equal time, per seed: at the top of the two curves'
    overlap in time (the shorter of their longest runs: the near-convergence end) and averaged
    over the overlap (11 points); mean and spread over the seeds both ran. None where no seed
    has two points of each with overlapping times."""
    a, b = seed_curves(a_runs), seed_curves(b_runs)
    top, avg = [], []
    for seed in sorted(set(a) & set(b)):
        if len(a[seed]) < 2 or len(b[seed]) < 2:
            continue
        lo = max(min(t for t, _ in a[seed]), min(t for t, _ in b[seed]))
        hi = min(max(t for t, _ in a[seed]), max(t for t, _ in b[seed]))
        if hi < lo:
            continue
        top.append(interp(a[seed], hi) - interp(b[seed], hi))
        avg.append(float(np.mean([interp(a[seed], t) - interp(b[seed], t) for t in np.linspace(lo, hi, 11)])))
    if not top:
        return None
    return {"at_top": spread(top), "over_overlap": spread(avg), "seeds": len(top)}


def time_to_reach(points, target: float) -> float | None:
    """The first time the piecewise-linear curve through `points` reaches `target` top-1; None
    if it never does within its points."""
    pts = sorted(points)
    if pts and pts[0][1] >= target:
        return pts[0][0]
    for (t0, a0), (t1, a1) in zip(pts, pts[1:]):
        if a1 >= target:  # a point that is the target is reached at its own time, exactly
            return t1 if a1 == target else t0 + (t1 - t0) * (target - a0) / (a1 - a0)
    return None


def plot(ax, curves: dict[str, list[dict]], bold=()) -> None:
    """Draw each method's curve on `ax`: {name: [{"time": spread, "top1": spread}, one per
    budget]}, a point per budget at the seeds' means with their std as error bars."""
    for i, (name, pts) in enumerate(curves.items()):
        pts = sorted(pts, key=lambda p: p["time"]["mean"])
        ax.errorbar([p["time"]["mean"] for p in pts], [p["top1"]["mean"] for p in pts],
                    xerr=[p["time"]["std"] for p in pts], yerr=[p["top1"]["std"] for p in pts],
                    fmt="o-", capsize=3, color=f"C{i}", label=name, lw=2.5 if name in bold else 1.5)
    ax.set(xlabel="training wall time (s), validation excluded", ylabel="final val top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")

