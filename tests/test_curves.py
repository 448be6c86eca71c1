"""Accuracy-against-time curves (curves.py): interpolation, gains at equal time, time to a target."""

import pytest

from mixtrain_dali import curves


def test_curves_interpolate_and_gains_are_per_seed_at_equal_time():
    assert curves.interp([(50, 70), (100, 90)], 75) == 80
    assert curves.interp([(50, 70), (100, 90)], 40) is None and curves.interp([(50, 70)], 50) is None

    def run(seed, t, a):
        return {"seed": seed, "train_time_s": t, "val_top1": a}

    # at t = 80, the top of the overlap: a is 5 points above b on seed 0, 7 on seed 1
    a = [run(0, 40, 72), run(0, 80, 87), run(1, 40, 74), run(1, 80, 89)]
    b = [run(0, 50, 70), run(0, 100, 90), run(1, 50, 70), run(1, 100, 90)]
    g = curves.gain(a, b)
    assert g["seeds"] == 2 and g["at_top"]["mean"] == pytest.approx((87 - 82 + 89 - 82) / 2)
    assert curves.gain(a, [run(2, 50, 70), run(2, 100, 90)]) is None  # no seed in common
    assert curves.time_to_reach([(40, 72), (80, 88)], 80) == pytest.approx(60)
    assert curves.time_to_reach([(40, 72), (80, 88)], 95) is None
    assert curves.time_to_reach([(40, 90), (80, 95)], 80) == 40
    # a curve reaching the target at a point: that point's time exactly (interpolating gave
    # 5.690000000000001 here, and a baseline "reached its own accuracy" after its own time)
    assert curves.time_to_reach([(2.74, 40.51), (5.69, 85.63)], 85.63) == 5.69


def test_spread_of_nothing_and_of_one():
    assert curves.spread([])["n"] == 0 and curves.spread([3.0])["std"] == 0.0
    assert curves.spread([1.0, 2.0, 3.0])["std"] == pytest.approx(1.0)
