"""Region pooling, model adapters and mix_loss (CPU, tiny models)."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import (ConvNeXt, EfficientNet, MobileNetV2, RegNet, ResNet,
                                VisionTransformer)
from torchvision.models.convnext import CNBlockConfig
from torchvision.models.efficientnet import FusedMBConvConfig, MBConvConfig
from torchvision.models.regnet import BlockParams
from torchvision.models.resnet import BasicBlock, Bottleneck

from mixtrain_dali import nn as mnn
from mixtrain_dali.errors import UserError
from mixtrain_dali.nn import (RegionPoolModel, SoftTargetModel, adapt_model, build_model,
                              mix_loss, model_family, region_masks, region_pool)

CLASSES = 7


def _full(batch: int, height: int, width: int, k: int = 1) -> torch.Tensor:
    """Boxes with constituent 0 covering the whole input and the rest padded (h = w = 0)."""
    boxes = torch.zeros(batch, k, 4)
    boxes[:, 0] = torch.tensor([0.0, 0.0, height, width])
    return boxes


# ------------------------------------------------------------------ region pooling

@pytest.mark.parametrize("input_hw, feat_hw", [((64, 64), (2, 2)), ((100, 90), (3, 7)),
                                               ((32, 48), (1, 1))])
def test_full_box_equals_global_average_pool(input_hw, feat_hw):
    features = torch.randn(2, 5, *feat_hw)
    pooled = region_pool(features, _full(2, *input_hw), input_hw)
    torch.testing.assert_close(pooled[:, 0], features.mean((2, 3)), rtol=1e-5, atol=1e-6)


def test_box_on_cell_boundaries_equals_mean_of_cropped_cells():
    features = torch.randn(2, 4, 8, 8)  # 64 px input -> 8 px cells
    boxes = torch.tensor([[[16, 8, 24, 40], [0, 0, 8, 8]]] * 2, dtype=torch.float32)
    pooled = region_pool(features, boxes, (64, 64))
    torch.testing.assert_close(pooled[:, 0], features[:, :, 2:5, 1:6].mean((2, 3)))
    torch.testing.assert_close(pooled[:, 1], features[:, :, 0, 0])


def test_region_masks_hold_fraction_of_each_cell_covered():
    masks = region_masks(torch.tensor([[[1, 1, 2, 2]]]), (2, 2), (4, 4))
    torch.testing.assert_close(masks[0, 0], torch.full((2, 2), 0.25))
    masks = region_masks(torch.tensor([[[0, 0, 3, 4]]]), (2, 2), (4, 4))
    torch.testing.assert_close(masks[0, 0], torch.tensor([[1.0, 1.0], [0.5, 0.5]]))


@st.composite
def pooling_cases(draw):
    fh, fw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    height, width = draw(st.integers(fh, 40)), draw(st.integers(fw, 40))
    boxes = []
    for _ in range(draw(st.integers(1, 3))):
        y, x = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        h, w = draw(st.integers(1, height - y)), draw(st.integers(1, width - x))
        boxes.append([y, x, h, w])
    return (fh, fw), (height, width), boxes


@settings(max_examples=60, deadline=None)
@given(pooling_cases(), st.integers(0, 2**31 - 1))
def test_fractional_overlap_matches_upsampled_brute_force(case, seed):
    (fh, fw), (height, width), boxes = case
    features = torch.randn(1, 3, fh, fw, generator=torch.Generator().manual_seed(seed))
    pooled = region_pool(features, torch.tensor([boxes], dtype=torch.float32), (height, width))
    # Upsample by nearest neighbour onto a (H*fh) x (W*fw) grid, on which both the cell edges
    # (multiples of H) and the box edges (multiples of fh) fall exactly; average inside the box.
    fine = features.repeat_interleave(height, dim=2).repeat_interleave(width, dim=3)
    for j, (y, x, h, w) in enumerate(boxes):
        ref = fine[0, :, y * fh:(y + h) * fh, x * fw:(x + w) * fw].mean((1, 2))
        torch.testing.assert_close(pooled[0, j], ref, rtol=1e-4, atol=1e-5)


def test_padded_box_pools_to_zero_without_nan_in_values_or_gradients():
    features = torch.randn(2, 4, 3, 3, requires_grad=True)
    pooled = region_pool(features, _full(2, 48, 48, k=3), (48, 48))
    assert torch.all(pooled[:, 1:] == 0)
    pooled.sum().backward()
    assert torch.isfinite(features.grad).all()


def test_gradients_flow_to_features_with_mask_weights():
    features = torch.randn(1, 2, 2, 2, requires_grad=True)
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 12.0]]])  # 16 px input: cells of 8 px
    region_pool(features, boxes, (16, 16)).sum().backward()
    # Box covers column 0 fully and half of column 1 in row 0: weights 1 and 0.5 over 1.5.
    expected = torch.tensor([[2 / 3, 1 / 3], [0.0, 0.0]]).expand(1, 2, 2, 2)
    torch.testing.assert_close(features.grad, expected)


def test_channels_last_features_pool_like_contiguous():
    features = torch.randn(2, 6, 4, 5)
    boxes = torch.tensor([[[3, 2, 20, 11], [0, 0, 32, 40]]] * 2, dtype=torch.float32)
    expected = region_pool(features, boxes, (32, 40))
    actual = region_pool(features.to(memory_format=torch.channels_last), boxes, (32, 40))
    torch.testing.assert_close(actual, expected)


def test_autocast_pools_in_float32_and_returns_feature_dtype():
    features = torch.randn(2, 6, 4, 4).to(torch.bfloat16)
    boxes = torch.tensor([[[3, 2, 20, 11], [0, 0, 32, 32]]] * 2, dtype=torch.float32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        pooled = region_pool(features, boxes, (32, 32))
    assert pooled.dtype == torch.bfloat16
    expected = region_pool(features.float(), boxes, (32, 32))
    torch.testing.assert_close(pooled.float(), expected, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------ adapters

def _vit() -> VisionTransformer:
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                             hidden_dim=32, mlp_dim=64, num_classes=CLASSES)


# family -> (builder of a tiny model of that torchvision class, input side in pixels)
TINY = {
    "resnet": (lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=CLASSES), 64),
    "resnext": (lambda: ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4,
                               num_classes=CLASSES), 64),
    "mobilenet_v2": (lambda: MobileNetV2(num_classes=CLASSES, width_mult=0.25), 64),
    "mobilenet_v3": (lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES), 64),
    "efficientnet_v1": (lambda: EfficientNet([MBConvConfig(1, 3, 2, 8, 16, 1),
                                              MBConvConfig(4, 3, 2, 16, 24, 1)],
                                             dropout=0.2, num_classes=CLASSES), 64),
    "efficientnet_v2": (lambda: EfficientNet([FusedMBConvConfig(1, 3, 2, 8, 16, 1),
                                              MBConvConfig(4, 3, 2, 16, 24, 1)],
                                             dropout=0.2, last_channel=64,
                                             num_classes=CLASSES), 64),
    "regnet": (lambda: RegNet(BlockParams.from_init_params(depth=2, w_0=8, w_a=8.0, w_m=2.0,
                                                           group_width=8),
                              stem_width=8, num_classes=CLASSES), 64),
    "convnext": (lambda: ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)],
                                  num_classes=CLASSES), 64),
    "vit": (_vit, 32),
}
FAMILY = {"resnext": "resnet", "efficientnet_v1": "efficientnet",
          "efficientnet_v2": "efficientnet"}
GLOBAL_POOLING = [name for name in TINY if name != "vit"]


def _tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    """An eval-mode tiny model with non-trivial random heads, and a batch of 2 inputs."""
    torch.manual_seed(0)
    builder, side = TINY[name]
    model = builder()
    # Some heads start at zero (ViT) or tiny scale; random ones make equality tests meaningful.
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            nn.init.normal_(module.bias, std=0.1)
    return model.eval(), torch.randn(2, 3, side, side)


@pytest.mark.parametrize("name", list(TINY))
def test_each_family_gives_logits_per_box(name):
    model, x = _tiny(name)
    side = x.shape[-1]
    assert model_family(model) == FAMILY.get(name, name)
    adapted = adapt_model(model)
    assert isinstance(adapted, RegionPoolModel)
    boxes = torch.tensor([[[0, 0, side, side], [0, 0, side, side // 2], [0, 0, 0, 0]]] * 2,
                         dtype=torch.float32)
    with torch.no_grad():
        logits = adapted(x, boxes)
    assert logits.shape == (2, 3, CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", GLOBAL_POOLING)
def test_full_box_logits_equal_unmodified_model(name):
    model, x = _tiny(name)
    adapted = RegionPoolModel(model)
    with torch.no_grad():
        expected = model(x)
        full = adapted(x, _full(2, *x.shape[-2:], k=2))
        plain = adapted(x)
    assert expected.abs().max() > 1e-3  # not a trivially-zero comparison
    torch.testing.assert_close(full[:, 0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)


def test_left_half_box_pools_left_feature_column():
    model, x = _tiny("resnet")  # 64 px -> 2 x 2 feature map
    with torch.no_grad():
        logits = RegionPoolModel(model)(x, torch.tensor([[[0, 0, 64, 32]]] * 2).float())
        features = mnn._resnet_features(model, x)
        expected = model.fc(features[:, :, :, :1].mean((2, 3)))
    torch.testing.assert_close(logits[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_vit_full_box_reads_out_mean_of_patch_tokens_not_class_token():
    model, x = _tiny("vit")
    adapted = RegionPoolModel(model)
    with torch.no_grad():
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(2, -1, -1), tokens], dim=1)
        encoded = model.encoder(tokens)  # ends with the final LayerNorm
        expected = model.heads(encoded[:, 1:].mean(1))
        full = adapted(x, _full(2, 32, 32))[:, 0]
        plain = adapted(x)
        cls_output = model(x)
    torch.testing.assert_close(full, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, cls_output, atol=1e-3)


def test_vit_quadrant_box_pools_its_patch_tokens():
    model, x = _tiny("vit")  # 32 px, patch 8 -> 4 x 4 token grid
    with torch.no_grad():
        grid = mnn._vit_features(model, x)
        logits = RegionPoolModel(model)(x, torch.tensor([[[16, 0, 16, 16]]] * 2).float())
        expected = model.heads(grid[:, :, 2:, :2].mean((2, 3)))
    torch.testing.assert_close(logits[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_region_pool_model_trains_end_to_end():
    model, x = _tiny("mobilenet_v2")
    adapted = RegionPoolModel(model).train()
    boxes = torch.tensor([[[0, 0, 64, 40], [0, 40, 64, 24]]] * 2).float()
    logits = adapted(x, boxes)
    loss, _ = mix_loss(logits, torch.tensor([[1, 2], [3, -1]]),
                       torch.tensor([[True, True], [True, False]]),
                       torch.tensor([[0.6, 0.4], [1.0, 0.0]]))
    loss.backward()
    assert model.features[0][0].weight.grad.abs().sum() > 0


def test_state_dict_keys_keep_wrapped_names_under_model_prefix():
    model, _ = _tiny("resnet")
    adapted = adapt_model(model)
    assert set(adapted.state_dict()) == {f"model.{key}" for key in model.state_dict()}


def test_arbitrary_sequential_falls_back_to_soft_target_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, CLASSES))
    assert model_family(model) == "other"
    adapted = adapt_model(model)
    assert isinstance(adapted, SoftTargetModel) and not adapted.pools_regions
    x = torch.randn(2, 3, 16, 16)
    out = adapted(x, _full(2, 16, 16, k=3))
    assert out.shape == (2, CLASSES)
    torch.testing.assert_close(out, model(x))
    with pytest.raises(UserError, match="Sequential"):
        RegionPoolModel(model)


def test_adapt_model_returns_wrapped_models_unchanged():
    model, _ = _tiny("resnet")
    adapted = adapt_model(model)
    assert adapt_model(adapted) is adapted
    assert model_family(adapted) == "resnet" and adapted.pools_regions


# ------------------------------------------------------------------ build_model

def test_build_model_builds_named_arch_with_num_classes():
    model = build_model("ResNet18", 10).eval()
    assert isinstance(model, ResNet) and model.fc.out_features == 10
    with torch.no_grad():
        assert adapt_model(model)(torch.randn(1, 3, 64, 64), _full(1, 64, 64, 2)).shape == \
            (1, 2, 10)


def test_unknown_arch_names_close_matches_and_how_to_list():
    with pytest.raises(UserError) as info:
        build_model("resnet81", 10)
    message = str(info.value)
    assert "'resnet81'" in message and "resnet18" in message and "list_models" in message


@pytest.mark.parametrize("arch, image_size, expected", [
    ("vit_b_16", 64, {"image_size": 64}),
    ("maxvit_t", 64, {"input_size": (64, 64)}),
    ("resnet50", 64, {}),
    ("googlenet", None, {"aux_logits": False}),
])
def test_build_model_passes_size_and_single_output_kwargs(monkeypatch, arch, image_size,
                                                          expected):
    seen = {}
    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda name, **kwargs: seen.update(kwargs, name=name))
    build_model(arch, 5, image_size=image_size)
    assert seen["name"] == arch and seen["num_classes"] == 5 and seen["weights"] is None
    assert {key: seen[key] for key in expected} == expected
    assert "image_size" not in seen or arch.startswith("vit")


@pytest.mark.parametrize("kwargs, word", [
    ({"arch": "vit_b_16", "num_classes": 5, "image_size": 60}, "image_size=60"),
    ({"arch": "resnet18", "num_classes": 0}, "num_classes=0"),
])
def test_build_model_rejects_bad_sizes(kwargs, word):
    with pytest.raises(UserError, match=word):
        build_model(**kwargs)


# ------------------------------------------------------------------ mix_loss

@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("per_box", [True, False])
def test_unmixed_batch_loss_equals_cross_entropy(smoothing, per_box):
    torch.manual_seed(1)
    logits, labels = torch.randn(6, CLASSES), torch.randint(0, CLASSES, (6,))
    model_out = logits[:, None] if per_box else logits
    loss, per = mix_loss(model_out, labels[:, None], torch.ones(6, 1, dtype=torch.bool),
                         torch.ones(6, 1), label_smoothing=smoothing)
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(per[:, 0], F.cross_entropy(logits, labels, reduction="none",
                                                          label_smoothing=smoothing))
    assert loss.dtype == per.dtype == torch.float32 and per.shape == (6, 1)


def test_unmixed_region_pool_model_loss_equals_plain_training_loss():
    model, x = _tiny("resnet")
    labels = torch.tensor([2, 5])
    with torch.no_grad():
        loss, _ = mix_loss(RegionPoolModel(model)(x, _full(2, 64, 64)), labels[:, None],
                           torch.ones(2, 1, dtype=torch.bool), torch.ones(2, 1),
                           label_smoothing=0.1)
        expected = F.cross_entropy(model(x), labels, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_per_box_loss_masks_padded_constituents():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, CLASSES)
    labels = torch.tensor([[1, 4, -1], [0, -1, -1]])
    mask = labels >= 0
    areas = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    loss, per = mix_loss(logits, labels, mask, areas, label_smoothing=0.1)
    valid = F.cross_entropy(logits[mask], labels[mask], reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(loss, valid.mean())  # each constituent counts once
    torch.testing.assert_close(per[mask], valid)
    assert torch.all(per[~mask] == 0)
    # Logits at padded positions cannot change the loss.
    noisy = torch.where(mask[..., None], logits, torch.full_like(logits, 1e4))
    torch.testing.assert_close(mix_loss(noisy, labels, mask, areas, 0.1)[0], loss)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_fallback_loss_is_soft_target_cross_entropy(smoothing):
    torch.manual_seed(3)
    logits = torch.randn(2, CLASSES, requires_grad=True)
    labels = torch.tensor([[1, 4, -1], [6, 6, 2]])
    mask = labels >= 0
    areas = torch.tensor([[0.7, 0.3, 0.0], [0.25, 0.25, 0.5]])
    loss, per = mix_loss(logits, labels, mask, areas, label_smoothing=smoothing)
    # Hand-built dense target: sum_j a_j * ((1 - eps) onehot_j + eps / C).
    target = torch.zeros(2, CLASSES)
    for b in range(2):
        for j in range(3):
            if mask[b, j]:
                smoothed = torch.full((CLASSES,), smoothing / CLASSES)
                smoothed[labels[b, j]] += 1 - smoothing
                target[b] += areas[b, j] * smoothed
    expected = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    for j in range(3):
        ce = F.cross_entropy(logits, labels[:, j].clamp_min(0), reduction="none",
                             label_smoothing=smoothing)
        torch.testing.assert_close(per[:, j], torch.where(mask[:, j], ce, torch.zeros_like(ce)))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("logits, labels", [
    (torch.zeros(2, 3, CLASSES), torch.zeros(2, 2, dtype=torch.long)),
    (torch.zeros(3, CLASSES), torch.zeros(2, 2, dtype=torch.long)),
    (torch.zeros(CLASSES), torch.zeros(2, 2, dtype=torch.long)),
])
def test_mix_loss_rejects_mismatched_shapes(logits, labels):
    with pytest.raises(ValueError):
        mix_loss(logits, labels, labels >= 0, torch.ones(labels.shape))


# ------------------------------------------------------------------ constituents kept apart

def _grid_batch(seed: int = 0):
    """Two 32 x 32 composites: the first a 2 x 2 grid of four tiles, the second unmixed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=g)
    boxes = torch.zeros(2, 4, 4)
    boxes[0] = torch.tensor([[0, 0, 16, 16], [16, 0, 16, 16], [0, 16, 16, 16], [16, 16, 16, 16]])
    boxes[1, 0] = torch.tensor([0, 0, 32, 32])
    return x, boxes


@pytest.mark.parametrize("channels_last", [False, True])
def test_isolated_constituents_equal_running_each_tile_alone(channels_last):
    torch.manual_seed(0)
    net = adapt_model(build_model("small_cnn", CLASSES)).eval()
    x, boxes = _grid_batch()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = net(x, boxes, isolate=True)
        assert out.shape == (2, 4, CLASSES)
        for j, (y, x0, h, w) in enumerate(boxes[0].long().tolist()):
            alone = net.model(x[:1, :, y:y + h, x0:x0 + w])
            torch.testing.assert_close(out[0, j], alone[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1, 0], net.model(x[1:])[0], rtol=1e-4, atol=1e-5)
        assert torch.count_nonzero(out[1, 1:]) == 0  # padded slots
        torch.testing.assert_close(net(x, boxes.long().numpy(), isolate=True), out)  # host boxes
        # not what region pooling of the composite gives: there, tiles see their neighbours
        assert not torch.allclose(out[0], net(x[:1], boxes[:1])[0], atol=1e-3)


def test_isolated_tile_ignores_its_neighbours_pixels():
    torch.manual_seed(0)
    net = adapt_model(build_model("small_cnn", CLASSES)).eval()
    x, boxes = _grid_batch()
    changed = x.clone()
    changed[0, :, 16:, :] = torch.randn(3, 16, 32)  # the two bottom tiles
    with torch.no_grad():
        a, b = net(x, boxes, isolate=True), net(changed, boxes, isolate=True)
    torch.testing.assert_close(a[0, [0, 2]], b[0, [0, 2]])
    assert not torch.allclose(a[0, [1, 3]], b[0, [1, 3]])


@pytest.mark.parametrize("arch", ["resnet18", "timm/resnet10t"])
def test_isolated_forward_trains_and_reaches_every_tile(arch):
    if arch.startswith("timm/"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    net = adapt_model(build_model(arch, CLASSES))
    x, boxes = _grid_batch()
    # two unmixed composites: BatchNorm in training mode needs more than one value per channel
    x, boxes = torch.cat([x, x[1:]]), torch.cat([boxes, boxes[1:]])
    x.requires_grad_(True)
    labels = torch.tensor([[0, 1, 2, 3], [4, -1, -1, -1], [5, -1, -1, -1]])
    mask = labels >= 0
    loss, _ = mix_loss(net(x, boxes, isolate=True), labels, mask, mask.float() / mask.sum(1, keepdim=True))
    loss.backward()
    assert torch.isfinite(loss)
    assert (x.grad.abs().sum(dim=(0, 1)) > 0).float().mean() > 0.99


def test_isolate_refuses_vit():
    vit = VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                            hidden_dim=8, mlp_dim=8, num_classes=CLASSES)
    x, boxes = _grid_batch()
    with pytest.raises(UserError, match="ViT"):
        adapt_model(vit)(x, boxes, isolate=True)


# ------------------------------------------------------------------ torch.compile across epochs

def _mixed_batches(n=6, b=8, k=4, seed=0):
    """Box arrays of a mixing run's steps: two unmixed (warm-up epoch), then partly mixed ones
    (the loader pads every epoch's rows to k columns, so the shapes never change)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        boxes = np.zeros((b, k, 4), np.int32)
        boxes[:, 0] = [0, 0, 32, 32]
        if i >= 2:
            mixed = rng.random(b) < 0.6
            boxes[mixed] = [[0, 0, 16, 16], [16, 0, 16, 16], [0, 16, 16, 16], [16, 16, 16, 16]]
        out.append(boxes)
    return out


def test_region_pooling_compiles_once_across_unmixed_and_mixed_steps():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = torch.compile(adapt_model(build_model("small_cnn", CLASSES)), backend="eager")
    x = torch.randn(8, 3, 32, 32)
    for boxes in _mixed_batches():
        net(x, torch.as_tensor(boxes, dtype=torch.float32)).sum().backward()
    assert counters["stats"]["unique_graphs"] == 1


def test_isolate_compiles_its_backbone_once_per_tile_size_with_dynamic_batch():
    """isolate groups tiles on the host (a graph break for a compiled wrapper): compile the
    backbone with dynamic=True instead, as the README says; one graph per tile size."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = adapt_model(build_model("small_cnn", CLASSES))
    net.model.features = torch.compile(net.model.features, backend="eager", dynamic=True)
    x = torch.randn(8, 3, 32, 32)
    for boxes in _mixed_batches():
        net(x, boxes, isolate=True).sum().backward()
    assert counters["stats"]["unique_graphs"] <= 2 and sum(counters["graph_break"].values()) == 0
