"""The comparison methods of the accuracy benchmark: InfoBatch-style pruning and naive
mixing (soft labels on global logits) run through the same loader and loop."""

import numpy as np
import pytest
import torch

from mixtrain_dali.config import MixConfig
from mixtrain_dali.controller import MixController
from mixtrain_dali.nn import mix_loss


def _prune_controller(n=2000, speedup=1.6, **kw):
    cfg = MixConfig(enabled=True, method="prune", target_speedup=speedup, warmup_epochs=1,
                    final_full_fraction=0.0, schedule="flat", selection="loss", **kw)
    return MixController(cfg, n, (32, 32), seed=0, epochs=10)


def test_pruning_skips_only_below_threshold_samples_and_rescales_the_kept_ones():
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 0.5, 2000).astype(np.float32)
    plan = _prune_controller().plan(3, losses)
    kept = plan.members[:, 0]
    skipped = np.setdiff1d(np.arange(2000), kept)
    threshold = losses.mean()
    assert (losses[skipped] <= threshold).all()
    assert plan.k_max == 1 and len(np.unique(kept)) == len(kept)
    candidates = (losses <= threshold).sum()
    rescale = 1 / (1 - len(skipped) / candidates)
    w = plan.weights[:, 0]
    np.testing.assert_allclose(w[losses[kept] <= threshold], rescale, rtol=1e-6)
    np.testing.assert_allclose(w[losses[kept] > threshold], 1.0)
    assert plan.stats["ideal_speedup"] == pytest.approx(1.6, rel=0.01)


def test_pruning_is_off_in_warmup_and_random_across_epochs():
    ctl = _prune_controller()
    losses = np.random.default_rng(1).gamma(2.0, 0.5, 2000).astype(np.float32)
    assert ctl.plan(0, losses).n_composites == 2000
    a, b = (set(ctl.plan(e, losses).members[:, 0]) for e in (3, 4))
    assert a != b


def test_weighted_loss_scales_each_constituent():
    logits = torch.randn(4, 1, 5)
    labels = torch.tensor([[0], [1], [2], [3]])
    mask = torch.ones(4, 1, dtype=torch.bool)
    areas = torch.ones(4, 1)
    plain, per = mix_loss(logits, labels, mask, areas)
    w = torch.tensor([[2.0], [1.0], [1.0], [0.5]])
    weighted, _ = mix_loss(logits, labels, mask, areas, weights=w)
    assert weighted.item() == pytest.approx((per * w).sum().item() / 4, rel=1e-6)
    assert plain.item() == pytest.approx(per.mean().item(), rel=1e-6)


def test_naive_mixing_and_pruning_train_end_to_end(tmp_path):
    from conftest import write_colour_folder
    from mixtrain_dali.config import Config
    from mixtrain_dali.train import train

    write_colour_folder(str(tmp_path / "data" / "train"), per_class=16)
    write_colour_folder(str(tmp_path / "data" / "val"), per_class=2)
    base = {"data": {"image_size": 32, "batch_size": 8, "threads": 1, "device": "cpu"},
            "train": {"arch": "resnet18", "epochs": 3}}
    naive = Config.from_dict({**base, "train": {**base["train"], "region_pooling": False},
                              "mix": {"enabled": True, "k": 4, "fraction": 0.5, "selection": "random",
                                      "gamma": 0.0, "self_correct": False, "final_full_fraction": 0.0}})
    rows = train(naive, tmp_path / "data", tmp_path / "naive", progress=False)
    assert rows[1]["mixed_samples"] == 24 and rows[1]["ideal_speedup"] == pytest.approx(1.6)
    prune = Config.from_dict({**base, "mix": {"enabled": True, "method": "prune", "target_speedup": 1.6,
                                              "final_full_fraction": 0.0}})
    rows = train(prune, tmp_path / "data", tmp_path / "prune", progress=False)
    assert rows[0]["samples"] == 48 and rows[1]["samples"] < 48
