"""Mixup / CutMix (mixup.py) against timm's definition, the refusal with MixTrain pastes, and
training end to end with augmentations on (mixing still works)."""

import math

import numpy as np
import pytest
import torch

from conftest import read_metrics
from mixtrain_dali.cli import main
from mixtrain_dali.errors import UserError
from mixtrain_dali.mixup import Mixup, cutmix_box, mixup_target, soft_cross_entropy


def _batch(n=8, c=3, hw=(16, 24), classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, *hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def _beta_cdf(x, alpha):
    """CDF of Beta(alpha, alpha). On [0, 1/2], with t = s^(1/alpha): integral of
    t^(a-1) (1-t)^(a-1) dt = (1/a) integral of (1 - s^(1/a))^(a-1) ds, a bounded integrand
    even for a < 1; the other half by symmetry."""
    s = np.linspace(0, 0.5 ** alpha, 200001)
    f = (1 - s ** (1 / alpha)) ** (alpha - 1)
    integral = np.concatenate([[0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(s))])
    lo = np.minimum(x, 1 - x)
    half = np.interp(lo ** alpha, s, integral) / (2 * integral[-1])
    return np.where(x <= 0.5, half, 1 - half)


def _ks_beta(samples, alpha):
    """Kolmogorov-Smirnov distance of samples to Beta(alpha, alpha)."""
    s = np.sort(samples)
    model = _beta_cdf(s, alpha)
    n = len(s)
    return max(np.max(np.arange(1, n + 1) / n - model), np.max(model - np.arange(n) / n))


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mixup_lambda_is_beta_and_images_and_targets_blend_by_it(alpha):
    mix = Mixup(5, mixup_alpha=alpha, cutmix_alpha=0.0, label_smoothing=0.1, seed=0)
    lams = []
    for i in range(2000):
        x, y = _batch(seed=i % 7)
        ref_x = x.clone()
        out, target = mix(x, y)
        lam = mix.last["lam"]
        lams.append(lam)
        if i < 20:
            assert torch.allclose(out, lam * ref_x + (1 - lam) * ref_x.flip(0), atol=1e-6)
            assert torch.allclose(target, mixup_target(y, 5, lam, 0.1))
            assert torch.allclose(target.sum(1), torch.ones(len(y)))
    n = len(lams)
    assert _ks_beta(np.array(lams), alpha) < 1.36 / math.sqrt(n) * 1.2  # KS at the 5% level
    assert abs(np.mean(lams) - 0.5) < 0.03


def test_mixup_target_is_timms_smoothed_one_hot_blend():
    y = torch.tensor([0, 2, 1, 2])
    t = mixup_target(y, 3, 0.7, smoothing=0.3)
    off, on = 0.1, 0.8  # smoothing / C, 1 - smoothing + off
    a = torch.full((4, 3), off)
    a[torch.arange(4), y] = on
    assert torch.allclose(t, 0.7 * a + 0.3 * a.flip(0))


def test_cutmix_box_area_matches_lambda_and_pixels_come_from_the_partner():
    mix = Mixup(5, mixup_alpha=0.0, cutmix_alpha=1.0, seed=1)
    hw = (16, 24)
    checked = 0
    for i in range(300):
        x, y = _batch(hw=hw, seed=i)
        ref = x.clone()
        out, target = mix(x, y)
        lam, box = mix.last["lam"], mix.last["box"]
        assert mix.last["cutmix"]
        if box is None:
            continue
        y0, y1, x0, x1 = box
        assert 0 <= y0 <= y1 <= hw[0] and 0 <= x0 <= x1 <= hw[1]
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (hw[0] * hw[1]))
        inside = torch.zeros(hw, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(out[..., inside], ref.flip(0)[..., inside])
        assert torch.equal(out[..., ~inside], ref[..., ~inside])
        assert torch.allclose(target, mixup_target(y, 5, lam, 0.1))  # the default smoothing
        checked += 1
    assert checked > 250


def test_cutmix_box_before_clipping_has_side_ratio_sqrt_one_minus_lambda():
    rng = np.random.default_rng(0)
    # a centre far from the borders is never clipped: the area is then (1 - lam) of the image
    areas = []
    for _ in range(2000):
        (y0, y1, x0, x1), lam = cutmix_box((200, 200), 0.64, rng)
        if y0 > 0 and x0 > 0 and y1 < 200 and x1 < 200:
            areas.append((y1 - y0) * (x1 - x0))
    assert areas and all(abs(a - 0.36 * 200 * 200) <= 2 * 120 for a in areas)  # 120 x 120, rounded even


def test_switch_prob_and_prob_choose_the_mode():
    mix = Mixup(5, mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.6, switch_prob=0.25, seed=2)
    modes = []
    for i in range(4000):
        mix(*_batch(seed=i % 5))
        modes.append("none" if mix.last["lam"] == 1.0 and not mix.last["cutmix"] else
                     "cutmix" if mix.last["cutmix"] else "mixup")
    freq = {m: modes.count(m) / len(modes) for m in ("none", "cutmix", "mixup")}
    assert abs(freq["none"] - 0.4) < 0.03
    assert abs(freq["cutmix"] - 0.6 * 0.25) < 0.03 and abs(freq["mixup"] - 0.6 * 0.75) < 0.03


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1, reduction="none")
    assert torch.allclose(soft_cross_entropy(logits, mixup_target(y, 4, 1.0, 0.1)), ce, atol=1e-6)


@pytest.mark.parametrize("kw", [{"mixup_alpha": -0.1}, {"prob": 1.5}, {"label_smoothing": 1.0}])
def test_bad_mixup_settings_are_user_errors(kw):
    with pytest.raises(UserError):
        Mixup(5, **kw)


# -- end to end --------------------------------------------------------------------------
FAST = ["--arch", "small_cnn", "--image-size", "32", "--threads", "1", "--no-progress", "--device", "cpu",
        "--batch-size", "16"]


def test_mixing_still_works_with_randaugment_and_erasing(small_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_data), "--epochs", "3", "--out", str(out), *FAST,
                 "--mix-k", "2", "--mix-schedule", "flat", "--mix-fraction", "1.0",
                 "--auto-augment", "randaugment", "--rand-m", "9", "--erase-prob", "0.5",
                 "--color-jitter", "0.2"]) == 0
    assert "augment: randaugment n=2 m=9" in capsys.readouterr().out
    rows = read_metrics(out)
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    mixed = [r for r in rows if r["mixed_samples"] > 0]
    assert [r["epoch"] for r in mixed] == [2], rows  # warm-up, a mixing epoch, the final unmixed one
    assert mixed[0]["composites"] < mixed[0]["samples"]  # k=2 composites went through the model
    assert all(r["mean_loss_mixed"] is not None and math.isfinite(r["mean_loss_mixed"]) for r in mixed)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    losses = ckpt["loader"]["losses"]
    assert np.isfinite(losses).all()  # every sample's per-constituent loss recorded
    saved = (out / "config.toml").read_text()
    assert 'auto_augment = "randaugment"' in saved and "erase_prob = 0.5" in saved


@pytest.mark.parametrize("extra", [[], ["--mix-k", "1"]], ids=["mixing-off", "k1"])
def test_mixup_and_cutmix_train_with_mixing_off(small_data, tmp_path, extra):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_data), "--epochs", "2", "--out", str(out), *FAST, *extra,
                 "--mixup", "0.2", "--cutmix", "1.0"]) == 0
    assert all(math.isfinite(r["train_loss"]) for r in read_metrics(out))


def test_mixup_trains_with_pruning(small_data, tmp_path):
    from mixtrain_dali.config import load_config
    from mixtrain_dali.train import train

    config = load_config(None, {
        "data": {"batch_size": 16, "image_size": 32, "threads": 1, "device": "cpu", "mixup_alpha": 0.4},
        "train": {"epochs": 3, "arch": "small_cnn"},
        "mix": {"enabled": True, "method": "prune", "k": 1, "fraction": 0.3, "schedule": "flat"}})
    rows = train(config, small_data, tmp_path / "run", progress=False)
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[1]["samples"] < rows[0]["samples"]  # epoch 2 pruned


def test_mixup_with_mixtrain_mixing_is_one_line_and_exit_2(small_data, tmp_path, capsys):
    rc = main(["train", "--data", str(small_data), "--epochs", "2", "--out", str(tmp_path / "r"), *FAST,
               "--mix-k", "4", "--cutmix", "1.0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot be combined with MixTrain mixing" in err[0], err


def test_color_jitter_flag_takes_one_or_four_values(small_data, tmp_path, capsys):
    from mixtrain_dali.cli import _config_from_args, build_parser

    def parse(*v):
        return _config_from_args(build_parser().parse_args(["train", "--data", "x", "--color-jitter", *v]))

    assert parse("0.4").data.color_jitter == [0.4, 0.4, 0.4, 0.0]
    assert parse("0.1", "0.2", "0.3", "0.05").data.color_jitter == [0.1, 0.2, 0.3, 0.05]
    with pytest.raises(UserError, match="1 value .* or 4"):
        parse("0.1", "0.2")
