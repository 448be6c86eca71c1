"""Per-image augmentations in the DALI graph (augment.py), on the CPU path, each against its
documented definition; the user's hook; crop_pct; the GPU path (marked gpu)."""

import numpy as np
import pytest
import torch

from mixtrain_dali import MixConfig, TrainLoader, ValLoader
from mixtrain_dali.augment import Augment
from mixtrain_dali.config import IMAGENET_MEAN, IMAGENET_STD, Config, DataConfig
from mixtrain_dali.errors import UserError

SIZE = 32
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """Square images of mid-range random texture (values 40..140: no clipping under a 0.4
    brightness or contrast factor), 3 classes x 16."""
    from PIL import Image

    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    for c in range(3):
        d = root / f"class{c}"
        d.mkdir()
        for j in range(16):
            base = rng.integers(40, 141, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((SIZE, SIZE), Image.BILINEAR)
            img.save(d / f"img{j:02d}.png")
    return root


def _pixels(root, device="cpu", mix=None, **kw):
    """Every image of one epoch (whole-image crops; the order and flips are the seed's, so the
    same with and without augmentation), un-normalised to 0..255; with `mix`, the MixBatches."""
    loader = TrainLoader(root, batch_size=16, image_size=SIZE, device=device, threads=1, seed=3,
                         scale=(1.0, 1.0), ratio=(1.0, 1.0), mix=mix, torch_device="cpu", **kw)
    if mix is not None:
        loader.losses[:-1] = 1.0  # every sample seen: the first epoch mixes
        return list(loader)
    return torch.cat([images for images, _ in loader]).float() * STD + MEAN


def test_plain_output_is_unchanged_without_augmentation(textured):
    assert Augment.from_config(DataConfig()) is None  # the default graph is the plain one
    a, b = _pixels(textured), _pixels(textured, rand_n=3, rand_m=5)  # knobs of an unused policy
    assert torch.equal(a, b)


@pytest.mark.parametrize("which, stat", [(0, "mean"), (1, "std")])
def test_color_jitter_factor_lies_in_its_range_and_spreads_across_it(textured, which, stat):
    """brightness b: the image's mean is scaled by a factor in [1 - b, 1 + b]; contrast c: its
    spread about mid-grey by one in [1 - c, 1 + c] (torchvision's ColorJitter ranges)."""
    x = 0.4
    jitter = [0.0] * 4
    jitter[which] = x
    plain, aug = _pixels(textured), _pixels(textured, color_jitter=jitter)
    assert aug.shape == plain.shape and aug.min() >= -0.5 and aug.max() <= 255.5
    f = getattr(torch, stat)
    ratio = torch.stack([f(a) / f(p) for a, p in zip(aug, plain)]).numpy()
    assert ratio.min() >= 1 - x - 0.03 and ratio.max() <= 1 + x + 0.03, ratio
    assert ratio.min() < 1 - x / 2 and ratio.max() > 1 + x / 2, ratio  # spread across the range
    assert abs(np.mean(ratio) - 1.0) < 0.1  # uniform: centred on 1


def test_hue_and_saturation_keep_grey_and_change_colour(textured):
    plain, aug = _pixels(textured), _pixels(textured, color_jitter=[0, 0, 0.5, 0.2])
    assert (aug - plain).abs().mean() > 2.0
    # brightness untouched: the per-pixel channel mean moves far less than the channels do
    assert (aug.mean(1) - plain.mean(1)).abs().mean() < (aug - plain).abs().mean()


def test_random_erasing_probability_area_and_aspect_follow_the_definition(textured):
    p, scale, ratio = 0.5, (0.05, 0.3), (0.5, 2.0)
    sentinel = 50.0  # normalised units: far outside any real pixel's -2.2..2.7
    loader = TrainLoader(textured, batch_size=16, image_size=SIZE, device="cpu", threads=1, seed=1,
                         erase_prob=p, erase_scale=scale, erase_ratio=ratio, erase_value=sentinel)
    erased, areas, aspects = [], [], []
    for _ in range(4):  # 4 epochs x 48 images
        for images, _labels in loader:
            hit = (images == sentinel).all(1)  # (B, H, W): all channels filled
            for m in hit:
                erased.append(bool(m.any()))
                if m.any():
                    ys, xs = torch.nonzero(m, as_tuple=True)
                    h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
                    assert int(m.sum()) == h * w  # one rectangle
                    areas.append(h * w / SIZE**2)
                    aspects.append(h / w)
    frac = np.mean(erased)
    assert abs(frac - p) < 0.12, frac  # binomial sd over 192 images: 0.036
    areas = np.array(areas)
    tol = 2.5 * SIZE / SIZE**2  # pixel rounding of each side
    assert areas.min() >= scale[0] - tol and areas.max() <= scale[1] + tol, (areas.min(), areas.max())
    assert np.percentile(areas, 90) > 0.2 and np.percentile(areas, 10) < 0.12  # spread over the range
    aspects = np.array(aspects)
    assert aspects.min() >= ratio[0] * 0.7 and aspects.max() <= ratio[1] / 0.7
    assert (aspects < 0.85).any() and (aspects > 1.2).any()


def test_random_erasing_redraws_and_gives_up_like_timm(textured):
    """A draw must fit inside the image; up to 10 draws, then nothing is erased (timm,
    torchvision). h / w in [2, 3] at 90-100% of a square's area never fits: no image is
    erased even at p = 1; at 40% of the area with h / w in [1/3, 3] a fitting draw comes
    within 10 (the chance that none does is 0.55^10 < 0.3%): every image is."""
    def erased(scale, ratio):
        loader = TrainLoader(textured, batch_size=16, image_size=SIZE, device="cpu", threads=1,
                             erase_prob=1.0, erase_scale=scale, erase_ratio=ratio, erase_value=50.0)
        return torch.cat([(images == 50.0).all(1).flatten(1).any(1) for images, _ in loader])

    assert not erased((0.9, 1.0), (2.0, 3.0)).any()
    assert erased((0.4, 0.4), (1 / 3, 3.0)).float().mean() > 0.95


def test_random_erasing_is_per_constituent_inside_each_tile(textured):
    sentinel = 50.0
    mix = MixConfig(enabled=True, k=2, fraction=1.0, warmup_epochs=0, final_full_fraction=0.0)
    batches = _pixels(textured, mix=mix, erase_prob=1.0, erase_scale=(0.1, 0.2), erase_value=sentinel)
    seen = 0
    for batch in batches:
        hit = (batch.images == sentinel).all(1)
        for b in range(len(batch)):
            inside = torch.zeros_like(hit[b])
            for j in range(batch.mask.shape[1]):
                if not batch.mask[b, j]:
                    continue
                y, x, h, w = (int(v) for v in batch.boxes[b, j])
                tile = hit[b, y:y + h, x:x + w]
                assert tile.any(), "every constituent gets its own erased rectangle"
                # its area is a fraction of the tile's, not of the canvas's
                assert tile.sum() <= 0.2 * h * w + 2.5 * (h + w)
                inside[y:y + h, x:x + w] = True
                seen += 1
            assert not (hit[b] & ~inside).any()
    assert seen > 40


def _mean_change(root, **kw):
    return float((_pixels(root, **kw) - _pixels(root)).abs().mean())


def test_randaugment_magnitude_orders_the_pixel_change(textured):
    weak = _mean_change(textured, auto_augment="randaugment", rand_n=2, rand_m=0)
    strong = _mean_change(textured, auto_augment="randaugment", rand_n=2, rand_m=27)
    assert strong > 1.5 * weak, (weak, strong)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
def test_auto_aug_policies_run_on_the_cpu_path(textured, policy):
    plain, aug = _pixels(textured), _pixels(textured, auto_augment=policy)
    assert aug.shape == plain.shape and aug.dtype == torch.float32 and torch.isfinite(aug).all()
    assert aug.min() >= -0.5 and aug.max() <= 255.5
    changed = ((aug - plain).abs().flatten(1).amax(1) > 1).float().mean()
    assert changed > 0.5  # most images changed (an op can leave one as it was)


def test_dalis_own_deprecation_warnings_from_auto_aug_are_not_shown(textured):
    """DALI 2.4's auto_aug calls its own deprecated fn.experimental aliases; the user sees
    none of it (other warnings still show)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _pixels(textured, auto_augment="autoaugment")
        warnings.warn("another warning", DeprecationWarning)
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "fn.experimental." in t], texts
    assert "another warning" in texts


def test_a_resumed_epoch_draws_the_same_augmentations(textured):
    """Seeded from (seed, rank, epoch): epoch 2 of a loader that ran epochs 0 and 1 equals
    epoch 2 of a new loader set to it (as after --resume); epochs differ from each other."""
    kw = dict(batch_size=16, image_size=SIZE, device="cpu", threads=1, seed=5, auto_augment="randaugment",
              color_jitter=(0.3, 0.3, 0.3, 0.05), erase_prob=0.5)
    running = TrainLoader(textured, **kw)
    epochs = [torch.cat([images for images, _ in running]) for _ in range(3)]
    resumed = TrainLoader(textured, **kw)
    resumed.set_epoch(2)
    assert torch.equal(torch.cat([images for images, _ in resumed]), epochs[2])


def test_each_epoch_draws_new_augmentations(textured):
    """Same images in the same order every epoch (shuffle off, whole-image crops): each
    image's brightness factor (its mean over the plain image's, flip-invariant) changes
    from epoch to epoch."""
    kw = dict(batch_size=16, image_size=SIZE, device="cpu", threads=1, seed=5, shuffle=False,
              scale=(1.0, 1.0), ratio=(1.0, 1.0), torch_device="cpu")
    plain, aug = TrainLoader(textured, **kw), TrainLoader(textured, color_jitter=(0.4, 0, 0, 0), **kw)
    factors = []
    for _ in range(2):
        p = torch.cat([x for x, _ in plain]) * STD + MEAN
        a = torch.cat([x for x, _ in aug]) * STD + MEAN
        factors.append(a.mean((1, 2, 3)) / p.mean((1, 2, 3)))
    assert (factors[0] - factors[1]).abs().mean() > 0.05


def test_hook_runs_in_the_graph_on_each_image(textured):
    from nvidia.dali import types

    seen = []

    def invert(images):
        seen.append(images.device)
        return types.Constant(255, dtype=types.UINT8) - images

    plain, inverted = _pixels(textured), _pixels(textured, augment=invert)
    assert seen == ["cpu"]  # called when the graph is built (each epoch's), with the graph's device
    assert torch.allclose(inverted, 255 - plain, atol=0.01)


def test_hook_inverts_every_tile_of_a_composite(textured):
    from nvidia.dali import types

    mix = MixConfig(enabled=True, k=2, fraction=1.0, warmup_epochs=0, final_full_fraction=0.0)
    plain = _pixels(textured, mix=mix)
    inverted = _pixels(textured, mix=mix, augment=lambda x: types.Constant(255, dtype=types.UINT8) - x)
    for a, b in zip(plain, inverted):
        pa, pb = a.images * STD + MEAN, b.images * STD + MEAN
        assert torch.allclose(pb, 255 - pa, atol=0.01)


def test_a_hook_that_is_not_callable_is_one_line(textured):
    with pytest.raises(UserError, match="not callable"):
        TrainLoader(textured, batch_size=4, image_size=SIZE, device="cpu", augment="invert")


@pytest.mark.parametrize("bad, match", [
    ({"auto_augment": "rand"}, "auto_augment='rand'"),
    ({"rand_m": 31}, "rand_m=31"),
    ({"rand_n": 0}, "rand_n=0"),
    ({"color_jitter": [0.4, 0.4]}, "color_jitter"),
    ({"color_jitter": [0, 0, 0, 0.7]}, "hue <= 0.5"),
    ({"erase_prob": 1.5}, "erase_prob=1.5"),
    ({"erase_scale": [0.5, 0.1]}, "erase_scale"),
    ({"crop_pct": 1.2}, r"crop_pct=1.2 is outside \(0, 1\]"),
    ({"crop_pct": 0.0}, "crop_pct=0.0"),
    ({"crop_pct": 0.95, "val_resize": 256}, "disagree"),
    ({"mixup_alpha": -1.0}, "mixup_alpha"),
    ({"mixup_prob": 2.0}, "mixup_prob"),
])
def test_bad_augmentation_settings_name_the_value(bad, match):
    with pytest.raises(UserError, match=match):
        DataConfig(**bad)


def test_crop_pct_is_timms_resize_and_agrees_with_val_resize():
    assert DataConfig(image_size=224, crop_pct=0.95).val_resize == 235  # floor(224 / 0.95)
    assert DataConfig(image_size=224, crop_pct=0.875).val_resize == 256  # torchvision's 256/224
    assert DataConfig(image_size=224, crop_pct=0.875, val_resize=256).val_resize == 256  # agreeing: fine
    assert DataConfig(image_size=224, crop_pct=1.0).val_resize == 224


def test_val_loader_with_crop_pct_matches_timms_transform(tmp_path):
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for j, (h, w) in enumerate([(50, 70), (90, 40), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "a" / f"{j}.png")
    size, pct = 32, 0.9
    val = ValLoader(tmp_path, batch_size=3, image_size=size, crop_pct=pct, device="cpu", threads=1)
    assert val.data.val_resize == 35
    (images, _), = list(val)
    tf = transforms.Compose([transforms.Resize(int(size / pct)), transforms.CenterCrop(size),  # timm's eval
                             transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ref = torch.stack([tf(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "a").iterdir())])
    assert images.shape == ref.shape
    assert (images - ref).abs().max() * 255 * max(IMAGENET_STD) < 3  # within a few grey levels


def test_mixup_with_mixtrain_pastes_is_refused_and_allowed_otherwise():
    from mixtrain_dali.config import MixConfig as M

    with pytest.raises(UserError, match="cannot be combined with MixTrain mixing"):
        Config(data=DataConfig(cutmix_alpha=1.0), mix=M(enabled=True, k=4))
    Config(data=DataConfig(cutmix_alpha=1.0))  # mixing off
    Config(data=DataConfig(mixup_alpha=0.2), mix=M(enabled=True, method="prune", k=1))  # pruning


@pytest.mark.gpu
@pytest.mark.parametrize("kw", [{"auto_augment": "autoaugment"}, {"auto_augment": "randaugment"},
                                {"auto_augment": "trivialaugment"}, {"color_jitter": [0.4, 0.4, 0.4, 0.1]},
                                {"erase_prob": 1.0, "erase_value": 50.0}])
def test_gpu_path_augments_like_the_cpu_path(textured, kw):
    plain, aug = _pixels(textured, device="gpu"), _pixels(textured, device="gpu", **kw)
    assert aug.shape == plain.shape and torch.isfinite(aug).all()
    assert ((aug - plain).abs().flatten(1).amax(1) > 1).float().mean() > 0.5


@pytest.mark.gpu
def test_gpu_hook_gets_a_gpu_node(textured):
    from nvidia.dali import types

    seen = []

    def invert(images):
        seen.append(images.device)
        return types.Constant(255, dtype=types.UINT8) - images

    plain, inverted = _pixels(textured, device="gpu"), _pixels(textured, device="gpu", augment=invert)
    assert seen == ["gpu"] and torch.allclose(inverted, 255 - plain, atol=0.01)
