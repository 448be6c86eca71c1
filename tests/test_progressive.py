"""Progressive resizing (FFCV-style), the accuracy benchmark's strongest cheap rival to mixing:
the train crop grows from min_image_size to image_size over the run."""

import pytest

from mixtrain_dali.config import DataConfig, MixConfig
from mixtrain_dali.errors import UserError
from mixtrain_dali.loader import TrainLoader


def test_size_ramps_linearly_between_the_ramp_fractions_in_steps_of_8():
    d = DataConfig(image_size=64, min_image_size=32, resize_ramp=[0.25, 0.75])
    sizes = [d.image_size_at(e, 8) for e in range(8)]
    assert sizes == [32, 32, 32, 40, 48, 56, 64, 64]
    assert DataConfig(image_size=64).image_size_at(0, 8) == 64  # off by default
    assert d.image_size_at(3, None) == 64  # no run length: no ramp


def test_min_image_size_equal_to_image_size_is_off():
    # so `--min-image-size S` at the full size turns a recipe's progressive resizing off
    assert DataConfig(image_size=64, min_image_size=64).min_image_size is None
    assert DataConfig(image_size=64, min_image_size=56).min_image_size == 56


@pytest.mark.parametrize("kwargs,needle", [
    (dict(image_size=64, min_image_size=8), "min_image_size=8"),
    (dict(image_size=64, min_image_size=80), "min_image_size=80"),
    (dict(image_size=64, resize_ramp=[0.8, 0.2]), "resize_ramp"),
])
def test_bad_progressive_settings_are_named(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        DataConfig(**kwargs)


def test_loader_yields_each_epochs_size(colour_folder):
    loader = TrainLoader(colour_folder, batch_size=8, image_size=48, seed=0, epochs=4, device="cpu",
                         threads=1, min_image_size=24, resize_ramp=(0.0, 1.0))
    shapes = []
    for _ in range(4):
        shapes.append({tuple(x.shape[-2:]) for x, _ in loader})
    assert shapes == [{(24, 24)}, {(24, 24)}, {(32, 32)}, {(40, 40)}]


def test_mixing_on_progressive_resizing_needs_a_budget_of_its_own(colour_folder):
    """The resize schedule is itself matched to progressive resizing's cost: refused with it.
    A budget of its own (here x1.6, linear) mixes on progressive resizing's canvas."""
    with pytest.raises(UserError, match="min_image_size=24 .* schedule 'resize'"):
        TrainLoader(colour_folder, 8, 48, mix=MixConfig(enabled=True, k=4), device="cpu", min_image_size=24,
                    epochs=4)
    loader = TrainLoader(colour_folder, 8, 48, mix=MixConfig(enabled=True, k=4, target_speedup=1.6),
                         device="cpu", min_image_size=24, epochs=4)
    loader.set_epoch(1)
    batch = next(iter(loader))
    side = loader.data.image_size_at(1, 4)
    assert side < 48 and tuple(batch.images.shape[-2:]) == (side, side)
    assert loader.plan().n_mixed_samples > 0 and (batch.boxes[..., 2:].amax() <= side).all()
