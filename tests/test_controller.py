"""MixController, EpochPlan sharding and MixConfig validation: one test per rule
(docs/architecture.md, "Controller" and "Speedup arithmetic"). Pure numpy, small N, explicit
loss tables.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mixtrain_dali.config import MixConfig, ideal_speedup
from mixtrain_dali.controller import MixController, _clip_shares
from mixtrain_dali.errors import UserError
from mixtrain_dali.layout import tile_depths
from mixtrain_dali.plan import EpochPlan, shard_batches

CANVAS = (224, 224)
LOGGER = "mixtrain_dali.controller"


# ------------------------------------------------------------------ helpers

def _cfg(**kw) -> MixConfig:
    # the rules one at a time: a flat budget and loss-based selection unless a test says otherwise
    base = dict(enabled=True, k=4, target_speedup=1.6, warmup_epochs=1, schedule="flat", selection="loss")
    base.update(kw)
    if "fraction" in kw and "target_speedup" not in kw:
        base["target_speedup"] = None
    return MixConfig(**base)


def _ctl(n: int, seed: int = 0, epochs: int | None = None, canvas=CANVAS, **kw) -> MixController:
    return MixController(_cfg(**kw), n, canvas, seed=seed, epochs=epochs)


def _skewed(n: int, low_frac: float, seed: int = 1, high: float = 10.0) -> np.ndarray:
    """A table where `low_frac` of the samples have a loss in [0, 1) and the rest `high`, in
    shuffled positions: for `high` large the mean lies above every low loss, so exactly the
    low samples are below the (mean) threshold."""
    rng = np.random.default_rng(seed)
    n_low = int(round(low_frac * n))
    losses = np.full(n, high, np.float32)
    losses[:n_low] = rng.random(n_low, dtype=np.float32)
    return losses[rng.permutation(n)]


def _mixed_rows(plan: EpochPlan) -> np.ndarray:
    return plan.valid.sum(1) > 1


def _mixed_ids(plan: EpochPlan) -> np.ndarray:
    m = plan.members[_mixed_rows(plan)]
    return np.sort(m[m >= 0])


def _partners(plan: EpochPlan) -> dict[int, frozenset]:
    out = {}
    for row in plan.members[_mixed_rows(plan)]:
        ids = [int(i) for i in row if i >= 0]
        for i in ids:
            out[i] = frozenset(ids) - {i}
    return out


def _check_well_formed(plan: EpochPlan, keep: np.ndarray) -> None:
    """Every kept sample exactly once, excluded ones never, padding -1 / zero box / zero share,
    valid entries packed to the left (column 0 is the head)."""
    members = plan.members
    valid = members >= 0
    ids = members[valid]
    assert len(ids) == len(np.unique(ids)), "a sample appears twice in one epoch"
    np.testing.assert_array_equal(np.sort(ids), np.flatnonzero(keep))
    assert (members[~valid] == -1).all()
    assert (plan.boxes[~valid] == 0).all()
    assert (plan.shares[~valid] == 0).all()
    assert (plan.flips[~valid] == 0).all()
    assert valid[:, 0].all(), "every composite has a head in column 0"
    assert (np.diff(valid.astype(np.int8), axis=1) <= 0).all(), "padding only after the members"
    singles = valid.sum(1) == 1
    assert (plan.boxes[singles, 0] == (0, 0) + tuple(plan.canvas)).all()
    assert (plan.shares[singles, 0] == 1.0).all()
    assert plan.members.dtype == np.int64 and plan.boxes.dtype == np.int32
    assert plan.shares.dtype == np.float32 and plan.flips.dtype == np.uint8


def _paint(boxes: np.ndarray, canvas) -> np.ndarray:
    counts = np.zeros(canvas, np.int32)
    for y, x, h, w in boxes:
        if h or w:
            counts[y:y + h, x:x + w] += 1
    return counts


# ------------------------------------------------------------------ schedule

@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_warmup_epochs_are_unmixed(warmup):
    n = 1000
    ctl = _ctl(n, epochs=None, warmup_epochs=warmup)
    losses = _skewed(n, 0.9)
    for epoch in range(warmup + 3):
        plan = ctl.plan(epoch, losses)
        mixing = epoch >= warmup
        assert ctl.is_mixing_epoch(epoch) is mixing
        assert plan.stats["mixing_epoch"] is mixing
        assert (plan.n_mixed_samples > 0) is mixing
        if not mixing:
            assert plan.n_composites == n and plan.ideal_speedup == 1.0


@pytest.mark.parametrize("epochs, fraction, final", [
    (16, 0.125, 2), (10, 0.125, 2), (8, 0.125, 1), (9, 0.125, 2), (100, 0.125, 13),
    (30, 0.1, 3), (10, 0.0, 0), (4, 0.5, 2), (1, 0.125, 1)])
def test_final_full_epochs_are_unmixed(epochs, fraction, final):
    """The last ceil(final_full_fraction * epochs) epochs are unmixed; those between mix."""
    n = 1000
    ctl = _ctl(n, epochs=epochs, warmup_epochs=1, final_full_fraction=fraction)
    assert ctl.final_full_epochs() == final
    losses = _skewed(n, 0.9)
    for epoch in range(epochs):
        mixing = 1 <= epoch < epochs - final
        assert ctl.is_mixing_epoch(epoch) is mixing, epoch
        plan = ctl.plan(epoch, losses)
        assert (plan.n_mixed_samples > 0) is mixing, epoch


@pytest.mark.parametrize("epochs, fraction, final", [(100, 0.07, 7), (50, 0.14, 7), (25, 0.28, 7)])
def test_final_full_epochs_round_up_only_a_real_fraction(epochs, fraction, final):
    ctl = _ctl(1000, epochs=epochs, final_full_fraction=fraction)
    assert ctl.final_full_epochs() == final


def test_disabled_or_zero_budget_never_mixes():
    losses = _skewed(1000, 0.9)
    for cfg in (_cfg(enabled=False), _cfg(fraction=0.0), _cfg(k=1, target_speedup=None, share_max=1.0)):
        ctl = MixController(cfg, 1000, CANVAS, epochs=None)
        for epoch in range(4):
            assert ctl.plan(epoch, losses).n_mixed_samples == 0


def test_mixing_epoch_without_any_measured_loss_is_unmixed():
    n = 500
    plan = _ctl(n).plan(2, np.full(n, np.nan, np.float32))
    assert plan.n_mixed_samples == 0 and plan.n_composites == n
    _check_well_formed(plan, np.ones(n, bool))


# ------------------------------------------------------------------ plan well-formedness

@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("epoch", [0, 1])  # unmixed (warm-up) and mixing
def test_plan_covers_every_kept_sample_exactly_once(k, epoch):
    n = 3001
    rng = np.random.default_rng(5)
    exclude = rng.random(n) < 0.07
    losses = _skewed(n, 0.8)
    losses[rng.random(n) < 0.05] = np.nan
    plan = _ctl(n, k=k).plan(epoch, losses, exclude=exclude)
    _check_well_formed(plan, ~exclude)
    assert plan.n_samples == int((~exclude).sum())
    if epoch == 1:
        assert plan.k_max == k and plan.n_mixed_samples > 0
        assert set(plan.valid.sum(1)) == {1, k}


def test_excluded_samples_never_appear_nor_count_in_the_threshold():
    n = 2000
    losses = _skewed(n, 0.9, high=1.0)   # low in [0, 1), high = 1.0
    exclude = np.zeros(n, bool)
    exclude[np.flatnonzero(losses >= 1.0)[:50]] = True
    losses[exclude] = 1e6               # would dominate the mean if counted
    plan = _ctl(n, k=2, fraction=0.5).plan(1, losses, exclude=exclude)
    _check_well_formed(plan, ~exclude)
    assert plan.stats["threshold"] == pytest.approx(float(np.mean(losses[~exclude])), rel=1e-5)
    assert not np.isin(plan.members, np.flatnonzero(exclude)).any()


def test_composite_order_is_shuffled_and_flips_are_random():
    n = 4000
    plan = _ctl(n, k=4, fraction=0.5).plan(1, _skewed(n, 0.9))
    rows = np.flatnonzero(_mixed_rows(plan))
    n_comp = plan.n_composites
    # mixed composites are spread over the whole epoch, not packed at one end
    assert rows.min() < 0.1 * n_comp and rows.max() > 0.9 * n_comp
    assert abs(rows.mean() / n_comp - 0.5) < 0.1
    flips = plan.flips[plan.valid]
    assert set(np.unique(flips)) <= {0, 1}
    assert 0.4 < flips.mean() < 0.6


# ------------------------------------------------------------------ budget

def test_speedup_arithmetic_matches_the_design_examples():
    assert ideal_speedup(4, 0.5) == pytest.approx(1.6)
    assert ideal_speedup(2, 0.75) == pytest.approx(1.6)
    for k in (2, 3, 4):
        for s in (1.0, 1.3, 1.6, float(k)):
            f = _cfg(k=k, target_speedup=s).mix_fraction()
            assert 0 <= f <= 1
            assert ideal_speedup(k, f) == pytest.approx(s)


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("budget", [{"target_speedup": 1.6}, {"target_speedup": 1.3},
                                    {"fraction": 0.5}, {"fraction": 0.85}])
def test_speedup_meets_target_when_enough_candidates(k, budget, caplog):
    n = 5000
    cfg = _cfg(k=k, **budget)
    ctl = MixController(cfg, n, CANVAS)
    losses = _skewed(n, 0.9)              # 90% below the mean threshold
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        plan = ctl.plan(1, losses)
    f = cfg.mix_fraction()
    target = ideal_speedup(k, f)
    assert plan.stats["budget_met"] is True
    assert plan.stats["target_speedup"] == pytest.approx(target)
    assert plan.stats["ideal_speedup"] == plan.ideal_speedup == n / plan.n_composites
    # mixed count is round(f * n) rounded down to groups of k: off by < k samples, so the
    # number of composites is off by < k - 1 + 1 from n / S
    assert abs(plan.n_mixed_samples - f * n) < k
    assert abs(plan.n_composites - n / target) <= k
    assert plan.n_mixed_samples % k == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_too_few_candidates_fall_back_to_lower_speedup_and_warn(k, caplog):
    n = 1000
    losses = np.ones(n, np.float32)
    low = np.random.default_rng(3).permutation(n)[:300]
    losses[low] = 0.0                    # mean 0.7: exactly 300 candidates, budget > 300
    cfg = _cfg(k=k, target_speedup=1.6)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        plan = MixController(cfg, n, CANVAS).plan(1, losses)
    stats = plan.stats
    assert stats["budget_met"] is False
    assert stats["candidates"] == 300
    assert plan.n_mixed_samples == 300 // k * k
    assert set(_mixed_ids(plan)) <= set(low.tolist())
    expected = n / (n - plan.n_mixed_samples + plan.n_mixed_samples // k)
    assert plan.ideal_speedup == pytest.approx(expected)
    assert 1.0 < plan.ideal_speedup < stats["target_speedup"] == pytest.approx(1.6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1
    assert "epoch 1" in warnings[0].getMessage()


# ------------------------------------------------------------------ selection

@pytest.mark.parametrize("threshold", ["mean", "median"])
def test_only_below_threshold_samples_are_mixed(threshold):
    n = 2000
    rng = np.random.default_rng(11)
    losses = rng.random(n).astype(np.float32)
    losses[rng.permutation(n)[:200]] = 100.0    # mean ~10.4, median ~0.45: they differ a lot
    plan = _ctl(n, k=2, fraction=0.3, threshold=threshold).plan(1, losses)
    want = float(np.mean(losses) if threshold == "mean" else np.median(losses))
    thr = plan.stats["threshold"]
    assert thr == pytest.approx(want, rel=1e-6)
    assert plan.stats["candidates"] == int((losses <= thr).sum())
    mixed = _mixed_ids(plan)
    assert len(mixed) == 600
    assert (losses[mixed] <= thr).all()
    median = float(np.median(losses))
    if threshold == "mean":   # samples between median and mean are candidates too
        assert (losses[mixed] > median).any()


def test_selection_is_random_among_candidates_not_lowest_first():
    """2x more candidates than budget: the chosen set changes every epoch, is not the
    lowest-loss half, and over 24 epochs every candidate gets mixed at least once."""
    n = 2000
    losses = _skewed(n, 0.5, high=5.0)            # 1000 candidates in [0, 1)
    cand = np.flatnonzero(losses < 1.0)
    lowest = set(cand[np.argsort(losses[cand])][:500].tolist())
    ctl = _ctl(n, k=2, fraction=0.25)             # budget: 500 samples
    seen_sets, ever = [], set()
    for epoch in range(1, 25):
        mixed = set(_mixed_ids(ctl.plan(epoch, losses)).tolist())
        assert len(mixed) == 500
        assert mixed <= set(cand.tolist())
        assert mixed != lowest
        assert 0.35 < len(mixed & lowest) / 500 < 0.65
        assert mixed not in seen_sets
        seen_sets.append(mixed)
        ever |= mixed
    assert ever == set(cand.tolist())


def test_random_selection_mixes_above_threshold_samples_too():
    n = 2000
    losses = _skewed(n, 0.5, high=5.0)
    plan = _ctl(n, k=2, fraction=0.5, selection="random").plan(1, losses)
    mixed = _mixed_ids(plan)
    thr = plan.stats["threshold"]
    assert plan.stats["candidates"] == n
    above = (losses[mixed] > thr).mean()
    assert 0.35 < above < 0.65   # about as often as their share of the table (one half)


def test_loss_selection_never_mixes_a_sample_it_has_no_loss_for():
    n = 2000
    rng = np.random.default_rng(2)
    losses = rng.random(n).astype(np.float32) * 0.1
    unseen = rng.random(n) < 0.2
    losses[unseen] = np.nan
    ctl = _ctl(n, k=2, fraction=1.0, selection="loss")
    for epoch in range(1, 6):
        plan = ctl.plan(epoch, losses)
        _check_well_formed(plan, np.ones(n, bool))
        assert not unseen[_mixed_ids(plan)].any()
        assert np.isfinite(plan.stats["threshold"])
        assert plan.n_mixed_samples > 0


def test_random_selection_mixes_from_epoch_0_without_any_loss():
    n = 2000
    ctl = _ctl(n, k=4, fraction=0.5, selection="random", warmup_epochs=0, self_correct=False)
    plan = ctl.plan(0)  # no loss table at all: nothing has been seen
    _check_well_formed(plan, np.ones(n, bool))
    assert plan.n_mixed_samples == 1000 and plan.stats["threshold"] is None
    # and with a part seen: unseen samples are mixed too
    losses = np.random.default_rng(4).random(n).astype(np.float32)
    unseen = np.zeros(n, bool)
    unseen[::5] = True
    losses[unseen] = np.nan
    assert unseen[_mixed_ids(ctl.plan(1, losses))].sum() > 0


def _moderate_plan(k: int, gamma: float = 1.0, canvas=CANVAS, n: int = 4000):
    """Losses in [0.5, 1): shares (loss + eps) ** gamma stay inside the default clip bounds and
    every cut stays away from min_side, so the layout's area bound applies to every tile."""
    rng = np.random.default_rng(7)
    losses = (0.5 + 0.5 * rng.random(n)).astype(np.float32)
    ctl = _ctl(n, k=k, fraction=0.8, selection="random", gamma=gamma, canvas=canvas)
    return ctl, losses, ctl.plan(1, losses)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_harder_constituent_gets_larger_share_and_box(k):
    ctl, losses, plan = _moderate_plan(k)
    rows = _mixed_rows(plan)
    members, shares, boxes = plan.members[rows], plan.shares[rows], plan.boxes[rows]
    assert len(members) > 100
    l = losses[members]
    w = (l.astype(np.float64) + ctl.config.eps) ** ctl.config.gamma
    np.testing.assert_allclose(shares, w / w.sum(1, keepdims=True), rtol=1e-5)
    area = boxes[..., 2].astype(np.int64) * boxes[..., 3]
    h, wd = plan.canvas
    slack = max(tile_depths(k)) * min(h, wd) / 2          # per-tile area error bound
    for i in range(k):
        for j in range(k):
            harder = l[:, i] > l[:, j]
            assert (shares[harder, i] > shares[harder, j]).all()
            clear = (shares[:, i] - shares[:, j]) * h * wd > 2 * slack
            assert (area[clear, i] > area[clear, j]).all()
    # on average, too: the hardest constituent holds the largest tile
    hardest, largest = l.argmax(1), area.argmax(1)
    assert (hardest == largest).mean() > 0.9


@pytest.mark.parametrize("k", [2, 3, 4])
def test_gamma_zero_gives_equal_shares(k):
    _, _, plan = _moderate_plan(k, gamma=0.0)
    rows = _mixed_rows(plan)
    np.testing.assert_array_equal(plan.shares[rows], np.float32(1.0 / k))
    area = plan.boxes[rows][..., 2].astype(np.int64) * plan.boxes[rows][..., 3]
    h, w = CANVAS
    bound = np.array(tile_depths(k)) * min(h, w) / 2
    assert (np.abs(area - h * w / k) <= bound).all()


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("canvas", [(224, 224), (192, 256), (160, 96)])
def test_plan_boxes_match_shares_within_layout_guarantee(k, canvas):
    """layout.layout_batch: |h*w - share*H*W| <= depth_j * min(H, W) / 2 when no min_side
    clamp moves a cut (true for these moderate shares, checked below)."""
    ctl, _, plan = _moderate_plan(k, canvas=canvas)
    rows = _mixed_rows(plan)
    boxes, shares = plan.boxes[rows], plan.shares[rows].astype(np.float64)
    h, w = canvas
    min_side = max(1, round(ctl.config.min_side_frac * min(canvas)))
    assert (boxes[..., 2:] > min_side).all(), "a clamp may have moved a cut: bound not promised"
    area = boxes[..., 2].astype(np.int64) * boxes[..., 3]
    bound = np.array(tile_depths(k)) * min(h, w) / 2 + 1e-6
    assert (np.abs(area - shares * h * w) <= bound).all()
    assert (area.sum(1) == h * w).all()


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("canvas", [(224, 224), (192, 256), (64, 48)])
def test_plan_boxes_cover_the_canvas_exactly(k, canvas):
    """Paint test on real plans with the default (clipping) share bounds and a wide loss range."""
    n = 1200
    losses = np.random.default_rng(4).gamma(1.5, 1.0, n).astype(np.float32)
    ctl = _ctl(n, k=k, fraction=0.9, selection="random", canvas=canvas)
    plan = ctl.plan(1, losses)
    min_side = max(1, round(ctl.config.min_side_frac * min(canvas)))
    rows = np.flatnonzero(_mixed_rows(plan))
    assert len(rows) > 50
    for r in rows[:150]:
        counts = _paint(plan.boxes[r], canvas)
        assert (counts == 1).all(), f"composite {r} does not tile the canvas exactly"
    valid = plan.valid
    assert (plan.boxes[valid][:, 2:] >= min_side).all()


def test_plan_shares_sum_to_one_and_respect_bounds_for_extreme_losses():
    n = 1000
    losses = np.where(np.arange(n) % 2 == 0, 0.0, 3.0).astype(np.float32)
    ctl = _ctl(n, k=2, fraction=1.0, selection="random")
    plan = ctl.plan(1, losses)
    c = ctl.config
    shares = plan.shares[_mixed_rows(plan)]
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-6)
    assert (shares >= c.share_min - 1e-6).all() and (shares <= c.share_max + 1e-6).all()
    h, w = CANVAS
    area = plan.boxes[_mixed_rows(plan)][..., 2].astype(np.int64) * plan.boxes[_mixed_rows(plan)][..., 3]
    assert (area <= c.share_max * h * w + min(h, w) / 2).all()


@st.composite
def _clip_inputs(draw, one_sided: str | None = None):
    k = draw(st.integers(2, 4))
    rows = draw(st.integers(1, 6))
    weights = np.array(draw(st.lists(st.floats(1e-6, 1.0), min_size=k * rows, max_size=k * rows)))
    shares = weights.reshape(rows, k)
    shares = shares / shares.sum(1, keepdims=True)
    lo = draw(st.floats(0.01, 1.0)) / k
    hi = 1.0 / k + draw(st.floats(0.0, 1.0)) * (1 - 1.0 / k)
    if one_sided == "below":
        hi = 1.0
    elif one_sided == "above":
        lo = min(lo, float(shares.min()))
    return shares, lo, hi


def _check_clip(shares, lo, hi):
    out = _clip_shares(shares, lo, hi)
    assert out.shape == shares.shape
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-9)
    assert (out >= lo - 1e-9).all() and (out <= hi + 1e-9).all()
    # order is kept: a larger share before clipping is never smaller after
    for i in range(shares.shape[1]):
        for j in range(shares.shape[1]):
            bigger = shares[:, i] > shares[:, j]
            assert (out[bigger, i] >= out[bigger, j] - 1e-12).all()
    # rows already inside the bounds are left alone
    inside = ((shares >= lo) & (shares <= hi)).all(1)
    np.testing.assert_allclose(out[inside], shares[inside], atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(_clip_inputs())
@example((np.array([[0.95, 0.05]]), 0.1, 0.75))
@example((np.array([[0.97, 0.01, 0.01, 0.01]]), 0.1, 0.75))
def test_clip_shares_sum_to_one_within_bounds(args):
    _check_clip(*args)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["below", "above"]).flatmap(lambda side: _clip_inputs(one_sided=side)))
@example((np.array([[0.7, 0.1, 0.1, 0.1]]), 0.05, 0.5))
@example((np.array([[0.4, 0.4, 0.19, 0.01]]), 0.1, 1.0))
@example((np.array([[1 - 3e-6, 1e-6, 1e-6, 1e-6]]), 1e-6, 0.25))
def test_clip_shares_one_sided_sum_to_one_within_bounds(args):
    """Rows that only need clipping on one side (the case the current code handles)."""
    _check_clip(*args)


def test_area_shares_extreme_losses_are_finite_and_ordered():
    ctl = _ctl(10, k=4)
    losses = np.array([[0.0, 1e-9, 1e3, 1e30], [0, 0, 0, 0], [-1.0, 2.0, 2.0, 5.0]])
    s = ctl.area_shares(losses)
    assert s.dtype == np.float32 and np.isfinite(s).all()
    assert (s >= ctl.config.share_min - 1e-6).all()
    np.testing.assert_allclose(s[1], 0.25)
    assert (np.diff(s, axis=1) >= -1e-7).all()


# ------------------------------------------------------------------ self-correction

def _self_correct_table(n: int = 1000):
    losses = np.where(np.arange(n) % 4 < 2, 0.2, 1.0).astype(np.float32)  # threshold 0.6
    mixed_last = np.arange(n) % 2 == 0
    failed = mixed_last & (losses > 0.6)   # mixed last epoch and its loss exceeded the threshold
    return losses, mixed_last, failed


def test_self_correction_unmixes_samples_whose_mixed_loss_exceeded_threshold():
    n = 1000
    losses, mixed_last, failed = _self_correct_table(n)
    ctl = _ctl(n, k=2, fraction=1.0, selection="random")
    for epoch in range(1, 6):
        plan = ctl.plan(epoch, losses, mixed_last)
        mixed = np.zeros(n, bool)
        mixed[_mixed_ids(plan)] = True
        assert not (mixed & failed).any()
        assert plan.stats["self_corrected"] == int(failed.sum()) == 250
        # above threshold but measured alone: still a candidate under selection="random"
        assert (mixed & (losses > 0.6) & ~mixed_last).sum() > 200
        _check_well_formed(plan, np.ones(n, bool))


def test_without_self_correction_failed_samples_may_be_mixed():
    n = 1000
    losses, mixed_last, failed = _self_correct_table(n)
    plan = _ctl(n, k=2, fraction=1.0, selection="random", self_correct=False).plan(
        1, losses, mixed_last)
    mixed = np.zeros(n, bool)
    mixed[_mixed_ids(plan)] = True
    assert (mixed & failed).sum() > 200
    assert plan.stats["self_corrected"] == 0


def test_self_corrected_samples_are_unmixed_under_loss_selection():
    n = 1000
    losses, mixed_last, failed = _self_correct_table(n)
    plan = _ctl(n, k=2, fraction=0.5).plan(1, losses, mixed_last)
    assert not np.isin(_mixed_ids(plan), np.flatnonzero(failed)).any()


def test_self_corrected_stat_counts_them_under_loss_selection():
    n = 1000
    losses, mixed_last, failed = _self_correct_table(n)
    plan = _ctl(n, k=2, fraction=0.5).plan(1, losses, mixed_last)
    assert plan.stats["self_corrected"] == int(failed.sum())


# ------------------------------------------------------------------ determinism

def _table(n: int):
    rng = np.random.default_rng(9)
    losses = rng.gamma(2.0, 1.0, n).astype(np.float32)
    losses[rng.random(n) < 0.03] = np.nan
    mixed_last = rng.random(n) < 0.4
    exclude = rng.random(n) < 0.02
    return losses, mixed_last, exclude


def _assert_same_plan(a: EpochPlan, b: EpochPlan) -> None:
    assert a.digest() == b.digest()
    for name in ("members", "boxes", "shares", "flips"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), name
    assert a.stats == b.stats


@pytest.mark.parametrize("epoch", [0, 3])
def test_plan_is_a_pure_function_of_seed_epoch_and_table(epoch):
    n = 3000
    losses, mixed_last, exclude = _table(n)
    copies = (losses.copy(), mixed_last.copy(), exclude.copy())
    ctl = _ctl(n, k=3, seed=42, epochs=20)
    first = ctl.plan(epoch, losses, mixed_last, exclude)
    ctl.plan(epoch + 1, losses, mixed_last, exclude)             # no hidden state advances
    _assert_same_plan(first, ctl.plan(epoch, losses, mixed_last, exclude))
    _assert_same_plan(first, _ctl(n, k=3, seed=42, epochs=20).plan(epoch, losses, mixed_last, exclude))
    # the inputs are not modified
    for before, after in zip(copies, (losses, mixed_last, exclude)):
        np.testing.assert_array_equal(before, after)


def test_controller_rebuilt_from_state_dict_plans_the_same():
    n = 2000
    losses, mixed_last, exclude = _table(n)
    ctl = _ctl(n, k=4, seed=5, epochs=30, gamma=0.5, threshold="median")
    sd = ctl.state_dict()
    again = MixController(MixConfig(**sd["config"]), sd["num_samples"], tuple(sd["canvas"]),
                          seed=sd["seed"], epochs=sd["epochs"])
    for epoch in (0, 4, 29):
        _assert_same_plan(ctl.plan(epoch, losses, mixed_last, exclude),
                          again.plan(epoch, losses, mixed_last, exclude))


@pytest.mark.parametrize("epoch", [0, 3])
def test_different_epoch_or_seed_gives_different_plan(epoch):
    n = 3000
    losses, mixed_last, exclude = _table(n)
    base = _ctl(n, k=3, seed=42, epochs=20).plan(epoch, losses, mixed_last, exclude)
    other_epoch = _ctl(n, k=3, seed=42, epochs=20).plan(epoch + 1, losses, mixed_last, exclude)
    other_seed = _ctl(n, k=3, seed=43, epochs=20).plan(epoch, losses, mixed_last, exclude)
    assert base.digest() != other_seed.digest()
    assert not np.array_equal(base.members, other_seed.members)
    other_epoch.epoch = base.epoch                 # the epoch number alone must not be the change
    assert other_epoch.digest() != base.digest()
    assert not np.array_equal(base.members[:, 0], other_epoch.members[:, 0])


def test_groups_are_random_partners_change_across_epochs():
    n = 2000
    losses = _skewed(n, 0.9)
    ctl = _ctl(n, k=4, fraction=0.8)      # nearly all candidates mixed every epoch
    prev = _partners(ctl.plan(1, losses))
    same = total = 0
    for epoch in range(2, 8):
        cur = _partners(ctl.plan(epoch, losses))
        common = prev.keys() & cur.keys()
        assert len(common) > 1000
        same += sum(prev[i] == cur[i] for i in common)
        total += len(common)
        prev = cur
    assert same / total < 0.01
    # groups are not formed by loss rank either: partners' losses are barely correlated
    rows = ctl.plan(1, losses).members
    rows = rows[(rows >= 0).all(1)]
    l = losses[rows]
    assert abs(np.corrcoef(l[:, 0], l[:, 1])[0, 1]) < 0.15


# ------------------------------------------------------------------ sharding

@pytest.mark.parametrize("n", [0, 1, 7, 64, 100, 1001, 4096, 12_345])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("batch", [1, 2, 5, 32, 256])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shard_batches_disjoint_cover_equal_counts(n, world, batch, drop_last):
    n_big = -(-n // world)                 # the largest shard: ceil(n / W)
    expect_batches = (n // world) // batch if drop_last else -(-n_big // batch)
    if not drop_last and n // world < expect_batches:
        # equal, non-empty batch counts are impossible: the shortest rank (the last) cannot
        # fill its batches (that every rank should raise is test_..._fails_on_every_rank)
        with pytest.raises(UserError, match=str(n)):
            shard_batches(n, batch, world - 1, world, drop_last)
        return
    shards = [shard_batches(n, batch, r, world, drop_last) for r in range(world)]
    counts = {len(s) for s in shards}
    assert counts == {expect_batches}
    flat = [b for s in shards for b in s]
    ids = np.concatenate(flat) if flat else np.zeros(0, np.int64)
    assert len(ids) == len(np.unique(ids)), "shards overlap"
    assert ((ids >= 0) & (ids < n)).all()
    assert all(b.dtype == np.int64 for b in flat)
    if drop_last:
        assert all(len(b) == batch for b in flat)
        assert n - len(ids) < world * batch
    else:
        np.testing.assert_array_equal(np.sort(ids), np.arange(n))
        assert all(1 <= len(b) <= batch for b in flat)
        for s in shards:   # full batches first, then the (smaller) remainder
            sizes = [len(b) for b in s]
            assert sizes == sorted(sizes, reverse=True)
        # the largest shard keeps its last partial batch: full batches, then n_big % batch,
        # except that a remainder of one is balanced with the batch before it
        sizes = [len(b) for b in shards[0]]
        if sizes and batch > 1 and n_big % batch == 1 and len(sizes) >= 2:
            assert sizes[:-2] == [batch] * (len(sizes) - 2)
            assert sizes[-2:] == [(batch + 2) // 2, (batch + 1) // 2]
        elif sizes:
            assert sizes[:-1] == [batch] * (len(sizes) - 1)
            assert sizes[-1] == (n_big % batch or batch)
        if batch > 1 and n // world >= 2 * expect_batches:
            assert all(len(b) > 1 for s in shards for b in s), "a batch of one"



@pytest.mark.parametrize("n, world, batch", [(1001, 2, 1), (100, 3, 1), (7, 8, 32), (1, 2, 256)])
def test_shard_batches_impossible_split_fails_on_every_rank(n, world, batch):
    for rank in range(world):
        with pytest.raises(UserError):
            shard_batches(n, batch, rank, world)


def test_plan_batches_delegate_to_shard_batches():
    n = 1000
    plan = _ctl(n, k=2).plan(1, _skewed(n, 0.9))
    for rank in range(3):
        got = plan.batches(16, rank, 3)
        want = shard_batches(plan.n_composites, 16, rank, 3)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("kwargs, err", [
    (dict(batch_size=0), UserError), (dict(batch_size=4, rank=2, world_size=2), ValueError),
    (dict(batch_size=4, rank=-1, world_size=2), ValueError)])
def test_shard_batches_rejects_bad_arguments(kwargs, err):
    with pytest.raises(err):
        shard_batches(100, **kwargs)


# ------------------------------------------------------------------ config validation

@pytest.mark.parametrize("kwargs, needle", [
    (dict(k=0), "k=0"),
    (dict(k=5), "k=5"),
    (dict(k=-1), "k=-1"),
    (dict(fraction=-0.1), "-0.1"),
    (dict(fraction=1.5), "1.5"),
    (dict(fraction=float("nan")), "nan"),
    (dict(k=4, target_speedup=4.5), "4.5"),
    (dict(k=2, target_speedup=2.5), "2.5"),
    (dict(k=3, target_speedup=0.9), "0.9"),
    (dict(target_speedup=float("nan")), "nan"),
    (dict(fraction=0.5, target_speedup=1.5), "target_speedup"),
    (dict(selection="highest"), "'highest'"),
    (dict(selection="Loss"), "'Loss'"),
    (dict(threshold="p90"), "'p90'"),
    (dict(k=4, share_min=0.3), "share_min=0.3"),
    (dict(k=4, share_max=0.2), "share_max=0.2"),
    (dict(k=2, share_min=0.0), "share_min=0.0"),
    (dict(share_max=1.5), "share_max=1.5"),
    (dict(share_min=0.6, share_max=0.4, k=2), "share_min=0.6"),
    (dict(gamma=-1.0), "gamma=-1.0"),
    (dict(eps=0.0), "eps=0.0"),
    (dict(warmup_epochs=-1), "warmup_epochs=-1"),
    (dict(final_full_fraction=1.0), "final_full_fraction=1.0"),
    (dict(k=4, min_side_frac=0.3), "min_side_frac=0.3"),
])
def test_mix_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(UserError) as info:
        MixConfig(**kwargs)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message
    if "fraction" in kwargs and "target_speedup" in kwargs:
        assert "fraction" in message


@pytest.mark.parametrize("kwargs", [
    dict(), dict(k=1, share_max=1.0), dict(k=2, target_speedup=2.0), dict(k=4, target_speedup=1.0),
    dict(fraction=0.0), dict(fraction=1.0), dict(k=4, share_min=0.25, share_max=0.25),
    dict(k=3, threshold="median", selection="random", gamma=0.0)])
def test_mix_config_accepts_edge_values(kwargs):
    cfg = MixConfig(**kwargs)
    assert 0.0 <= cfg.mix_fraction() <= 1.0


@pytest.mark.parametrize("kwargs", [dict(k=1), dict(k=1, enabled=True, target_speedup=1.0)])
def test_mix_config_accepts_k1_with_default_share_bounds(kwargs):
    cfg = MixConfig(**kwargs)
    assert not cfg.active


# ------------------------------------------------------------------ schedule

def test_linear_schedule_decays_the_fraction_to_zero_over_the_mixing_epochs():
    n, epochs = 4000, 10
    ctl = _ctl(n, epochs=epochs, k=4, fraction=1.0, selection="random", schedule="linear",
               warmup_epochs=1, final_full_fraction=0.1)  # mixing epochs 1..8 (M = 8)
    losses = np.random.default_rng(0).random(n).astype(np.float32)
    mixed = [ctl.plan(e, losses).n_mixed_samples / n for e in range(epochs)]
    expected = [0.0] + [(8 - j) / 8 for j in range(8)] + [0.0]
    np.testing.assert_allclose(mixed, expected, atol=2 / n)
    assert [ctl.fraction_at(e) for e in range(1, 9)] == pytest.approx(expected[1:9])


@pytest.mark.parametrize("k", [2, 4])
def test_mixing_on_progressive_resizing_tiles_each_epochs_canvas(k):
    """With `side_at` (the loader's progressive resizing), each epoch's plan tiles a canvas of
    that epoch's side: unmixed samples cover it whole, a composite's tiles cover it exactly,
    and the budget is the mixing's own (fraction decaying linearly), not the ramp's."""
    from mixtrain_dali.config import DataConfig

    n, epochs = 2000, 8
    data = DataConfig(image_size=64, min_image_size=32, resize_ramp=[0.0, 0.75])
    ctl = MixController(_cfg(k=k, fraction=0.5, schedule="linear", selection="random", warmup_epochs=0,
                             final_full_fraction=0.125), n, (64, 64), epochs=epochs,
                        side_at=lambda e: data.image_size_at(e, epochs))
    sides = [data.image_size_at(e, epochs) for e in range(epochs)]
    assert sides[0] == 32 and sides[-1] == 64 and len(set(sides)) > 2
    for epoch, side in enumerate(sides):
        plan = ctl.plan(epoch)
        _check_well_formed(plan, np.ones(n, bool))
        assert plan.canvas == (side, side) == ctl.canvas_at(epoch)
        sizes = (plan.members >= 0).sum(1)
        area = (plan.boxes[..., 2] * plan.boxes[..., 3] * (plan.members >= 0)).sum(1)
        assert (area == side * side).all()  # every composite covers its epoch's canvas exactly
        want = ctl.fraction_at(epoch) * n if ctl.is_mixing_epoch(epoch) else 0
        assert abs(plan.n_mixed_samples - want) <= k and set(sizes.tolist()) <= {1, k}
    assert ctl.fraction_at(0) == 0.5 and not ctl.is_mixing_epoch(epochs - 1)
    # without side_at the canvas never moves
    fixed = MixController(_cfg(k=k, fraction=0.5), n, (64, 64), epochs=epochs)
    assert {fixed.canvas_at(e) for e in range(epochs)} == {(64, 64)}


def test_the_resize_schedule_is_refused_on_top_of_progressive_resizing():
    from mixtrain_dali.config import Config

    with pytest.raises(UserError, match=r"min_image_size=32 .* give mix fraction"):
        Config.from_dict({"data": {"image_size": 64, "min_image_size": 32}, "mix": {"enabled": True, "k": 4}})
    c = Config.from_dict({"data": {"image_size": 64, "min_image_size": 32},
                          "mix": {"enabled": True, "k": 4, "fraction": 0.5}})
    assert c.mix.schedule == "linear"


def test_resize_schedule_is_checked_and_described():
    with pytest.raises(UserError, match="schedule='resize' sets every epoch's fraction"):
        _cfg(schedule="resize", fraction=0.5)
    with pytest.raises(UserError, match="schedule='resize' is for mixing"):
        MixConfig(enabled=True, method="prune", schedule="resize")
    with pytest.raises(UserError, match=r"ramp=\[0.8, 0.2\]"):
        MixConfig(enabled=True, schedule="resize", ramp=[0.8, 0.2])
    with pytest.raises(UserError, match="selection='hardest'; valid: random, loss"):
        _cfg(selection="hardest")
    with pytest.raises(UserError, match="schedule='resize' follows the run's length: give epochs="):
        MixController(MixConfig(enabled=True), 100, (64, 64))  # the default schedule, no run length
    words = MixController(MixConfig(enabled=True, schedule="resize", warmup_epochs=0), 100, (64, 64),
                          epochs=8).describe()
    assert "progressive resizing's cost" in words and "epochs 1-6 of 8 mix" in words


def test_flat_schedule_keeps_one_fraction():
    ctl = _ctl(1000, epochs=10, k=2, fraction=0.5)
    assert {ctl.fraction_at(e) for e in range(1, 9)} == {0.5}


def test_schedule_and_tile_options_are_checked():
    with pytest.raises(UserError, match="schedule='cosine'"):
        _cfg(schedule="cosine")


def test_linear_target_speedup_is_met_on_average_over_the_mixing_epochs():
    n, epochs = 8000, 18  # warm-up 1, final ceil(0.125 * 18) = 3: 14 mixing epochs
    ctl = _ctl(n, epochs=epochs, k=4, target_speedup=1.6, selection="random", schedule="linear")
    losses = np.random.default_rng(1).random(n).astype(np.float32)
    fractions = [ctl.plan(e, losses).n_mixed_samples / n for e in range(1, 15)]
    assert fractions[0] == pytest.approx(0.5 * 2 * 14 / 15, abs=0.01) and fractions[-1] < 0.1
    assert np.mean(fractions) == pytest.approx(0.5, abs=0.01)  # the flat budget's f for x1.6


def test_package_defaults_mix_everything_first_then_decay():
    cfg = MixConfig(enabled=True)
    assert (cfg.schedule, cfg.selection, cfg.mix_fraction()) == ("resize", "random", 1.0)
    assert (cfg.warmup_epochs, cfg.final_full_fraction, cfg.self_correct) == (0, 0.0, False)
    # a budget given, or pruning, means the linear schedule, with its warm-up and unmixed end
    for cfg in (MixConfig(enabled=True, target_speedup=1.6), MixConfig(enabled=True, fraction=0.5),
                MixConfig(enabled=True, method="prune")):
        assert (cfg.schedule, cfg.warmup_epochs, cfg.final_full_fraction, cfg.self_correct) == \
            ("linear", 1, 0.125, True)
    # explicit values win over the schedule's
    cfg = MixConfig(enabled=True, warmup_epochs=2, final_full_fraction=0.25, self_correct=True)
    assert (cfg.schedule, cfg.warmup_epochs, cfg.final_full_fraction, cfg.self_correct) == \
        ("resize", 2, 0.25, True)


def test_describe_says_the_mixing_plan_in_words():
    def words(epochs=10, **mix):
        return MixController(MixConfig(**mix), 100, (64, 64), epochs=epochs).describe()

    assert words() == "off" and words(enabled=True, k=1) == "off"
    linear = words(enabled=True, k=4, target_speedup=1.6)
    assert linear.startswith("k=4, linear schedule, target speedup x1.6 on average") and "epochs 2-8 of 10 mix" in linear
    default = words(enabled=True, k=4)
    assert default.startswith("k=4, resize schedule, each epoch at progressive resizing's cost")
    assert "epochs 1-8 of 10 mix (the first at ideal x4.00)" in default
    linear = words(enabled=True, k=4, schedule="linear")
    assert "fraction 1 in the first mixing epoch, decaying" in linear and "(the first at ideal x4.00)" in linear
    assert "fraction 0.5 every mixing epoch" in words(enabled=True, k=2, fraction=0.5, schedule="flat")
    assert words(enabled=True, k=4, epochs=2, schedule="linear").endswith("but no epoch of 2 mixes")
    assert words(enabled=True, method="prune", target_speedup=1.6, schedule="flat").startswith("pruning")


def test_a_budget_shortfall_is_said_once_a_run_not_every_epoch(caplog):
    n = 1000
    losses = np.ones(n, np.float32)
    losses[np.random.default_rng(3).permutation(n)[:300]] = 0.0  # 300 candidates, budget > 300
    ctl = MixController(_cfg(k=2, target_speedup=1.6, schedule="flat"), n, CANVAS, epochs=10)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        plans = [ctl.plan(epoch, losses) for epoch in range(1, 6)]
    assert all(p.stats["budget_met"] is False for p in plans)  # every epoch falls short ...
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1 and "said once" in warnings[0]  # ... and it is said once


def test_pruning_every_candidate_plans_and_describes_without_dividing_by_zero():
    ctl = MixController(MixConfig(enabled=True, method="prune", fraction=1.0, schedule="flat"), 100, CANVAS,
                        epochs=4)
    plan = ctl.plan(1, np.linspace(0, 1, 100).astype(np.float32))
    assert plan.stats["target_speedup"] == float("inf") and plan.stats["pruned_samples"] > 0
    assert ctl.describe().startswith("pruning") and "xinf" in ctl.describe()


def test_adaptive_shares_of_never_seen_samples_are_finite():
    ctl = MixController(MixConfig(enabled=True, k=2, gamma=1.0), 4, CANVAS, epochs=4)
    shares = ctl.area_shares(np.array([[np.nan, np.nan], [np.nan, 1.0], [3.0, 1.0]], np.float32))
    assert np.isfinite(shares).all()
    np.testing.assert_allclose(shares.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(shares[:2], 0.5)  # unseen: equal, or the group's mean loss
    assert shares[2, 0] > shares[2, 1]
    plan = ctl.plan(0)  # epoch 0 mixes with no loss measured (random selection, resize)
    assert plan.n_mixed_samples == 4 and np.isfinite(plan.shares).all()


