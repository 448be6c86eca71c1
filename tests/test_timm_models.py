"""timm models: region pooling and isolate through their own forward_features / heads, the
class-token ViT's soft-target fallback, `build_model("timm/<name>")` and `mixtrain train
--arch timm/<name>` with mixing. CPU, pretrained=False, small configs."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from conftest import read_metrics  # noqa: E402
from mixtrain_dali.cli import main  # noqa: E402
from mixtrain_dali.errors import UserError  # noqa: E402
from mixtrain_dali.nn import (RegionPoolModel, SoftTargetModel, adapt_model, build_model,  # noqa: E402
                              model_family)

CLASSES = 5
SIDE = 64  # every CNN below has stride 32: a 2 x 2 map, 1 x 1 for a 32 px tile; ViT: 4 x 4 patches

# case -> (timm name, create_model kwargs, adapter family)
CASES = {
    "resnet10t": ("resnet10t", {}, "timm_resnet"),
    "resnet18": ("resnet18", {}, "timm_resnet"),
    # layer scale at 1, not timm's 1e-6: else the blocks barely count and the tiles' only
    # interaction (the 7x7 depthwise convolutions) hides below the tests' tolerance
    "convnext_atto": ("convnext_atto", {"ls_init_value": 1.0}, "timm_convnext"),
    "efficientnet_b0": ("efficientnet_b0", {}, "timm_efficientnet"),
    "vit_tiny_avg": ("vit_tiny_patch16_224", {"img_size": SIDE, "global_pool": "avg"}, "timm_vit"),
    "deit_tiny_avg": ("deit_tiny_patch16_224", {"img_size": SIDE, "global_pool": "avg"}, "timm_vit"),
}
CNNS = [c for c, (_, _, family) in CASES.items() if family != "timm_vit"]


def _timm(name: str, **kwargs) -> nn.Module:
    """An eval-mode timm model whose logits depend on its input, so equality tests compare
    non-trivial values: random (not zero or tiny) linear layers, and BatchNorm statistics of a
    random batch (the initial ones let a deep random CNN's signal vanish or explode)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=CLASSES, pretrained=False, **kwargs)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            nn.init.normal_(module.bias, std=0.1)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.momentum = 1.0  # running statistics = this batch's
        with torch.no_grad():
            model.train()(torch.randn(8, 3, SIDE, SIDE))
    return model.eval()


def _case(case: str) -> tuple[nn.Module, torch.Tensor]:
    name, kwargs, _ = CASES[case]
    return _timm(name, **kwargs), torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def _full(n: int, k: int) -> torch.Tensor:
    boxes = torch.zeros(n, k, 4)
    boxes[:, 0] = torch.tensor([0, 0, SIDE, SIDE])
    return boxes


@pytest.mark.parametrize("case", list(CASES))
def test_full_box_logits_equal_the_unmodified_timm_model(case):
    model, x = _case(case)
    assert model_family(model) == CASES[case][2]
    adapted = adapt_model(model)
    assert isinstance(adapted, RegionPoolModel) and adapted.family == CASES[case][2]
    with torch.no_grad():
        expected = model(x)
        full = adapted(x, _full(2, k=3))
        plain = adapted(x)
    assert full.shape == (2, 3, CLASSES)
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # logits that depend on the input
    torch.testing.assert_close(full[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(full[:, 1:] - full[:, 1:2]) == 0  # padded boxes: one shared readout
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["resnet10t", "vit_tiny_avg"])
def test_quadrant_box_pools_only_its_own_cells(case):
    """A box on cell boundaries reads out the mean of the features (tokens) inside it."""
    model, x = _case(case)
    adapted = adapt_model(model)
    box = torch.tensor([[[0, 0, SIDE // 2, SIDE // 2]]] * 2, dtype=torch.float32)
    with torch.no_grad():
        got = adapted(x, box)[:, 0]
        grid = adapted._features(model, x)  # (2, C, gh, gw)
        gh, gw = grid.shape[-2:]
        expected = adapted._head(model, grid[:, :, :gh // 2, :gw // 2].mean(dim=(2, 3)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(got, model(x), atol=1e-3)


def _grid_batch():
    """Two 64 x 64 composites: the first a 2 x 2 grid of four 32 px tiles, the second unmixed."""
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    h = SIDE // 2
    boxes = torch.zeros(2, 4, 4)
    boxes[0] = torch.tensor([[0, 0, h, h], [h, 0, h, h], [0, h, h, h], [h, h, h, h]])
    boxes[1, 0] = torch.tensor([0, 0, SIDE, SIDE])
    return x, boxes


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CNNS)
def test_isolated_constituents_equal_running_each_tile_alone(case, channels_last):
    model, _ = _case(case)
    net = adapt_model(model)
    x, boxes = _grid_batch()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    assert net.can_isolate
    with torch.no_grad():
        out = net(x, boxes, isolate=True)
        assert out.shape == (2, 4, CLASSES)
        for j, (y, x0, h, w) in enumerate(boxes[0].long().tolist()):
            alone = model(x[:1, :, y:y + h, x0:x0 + w])
            torch.testing.assert_close(out[0, j], alone[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1, 0], model(x[1:])[0], rtol=1e-4, atol=1e-5)
        assert torch.count_nonzero(out[1, 1:]) == 0  # padded slots
        torch.testing.assert_close(net(x, boxes.long().numpy(), isolate=True), out)  # host boxes
        # not what region pooling of the composite gives: there, tiles see their neighbours
        assert not torch.allclose(out[0], net(x[:1], boxes[:1])[0], atol=1e-3)


def test_isolate_refuses_the_timm_vit():
    model, _ = _case("vit_tiny_avg")
    net = adapt_model(model)
    x, boxes = _grid_batch()
    assert not net.can_isolate
    with pytest.raises(UserError, match="ViT"):
        net(x, boxes, isolate=True)


@pytest.mark.parametrize("name,kwargs", [("vit_tiny_patch16_224", {"img_size": SIDE}),
                                         ("deit_tiny_patch16_224", {"img_size": SIDE}),
                                         ("deit_tiny_distilled_patch16_224", {"img_size": SIDE})])
def test_class_token_vit_trains_on_soft_targets_through_its_unmodified_forward(name, kwargs):
    model = _timm(name, **kwargs)
    adapted = adapt_model(model)
    assert isinstance(adapted, SoftTargetModel) and not adapted.can_isolate
    assert "token" in adapted.why
    x, boxes = _grid_batch()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(adapted(x, _full(2, k=4)), expected, rtol=0, atol=0)
        torch.testing.assert_close(adapted(x, boxes), expected, rtol=0, atol=0)  # boxes ignored
    assert (expected[0] - expected[1]).abs().max() > 1e-2


@pytest.mark.parametrize("name,kwargs,words", [
    ("resnet10t", {"global_pool": "max"}, ["'max'", "not an average"]),
    ("vit_tiny_patch16_224", {"img_size": SIDE, "global_pool": "map"}, ["attention"]),
    ("mobilenetv3_small_050", {}, ["MobileNetV3", "not one of"]),
])
def test_unsupported_timm_model_is_refused_naming_it_and_the_families(name, kwargs, words):
    model = _timm(name, **kwargs)
    assert model_family(model) == "other"
    with pytest.raises(UserError) as e:
        adapt_model(model)
    msg = str(e.value)
    assert "\n" not in msg and type(model).__name__ in msg and "ResNet, ConvNeXt, EfficientNet" in msg
    assert all(w in msg for w in words), msg
    with pytest.raises(UserError, match="no region-pooling adapter"):
        RegionPoolModel(model)
    SoftTargetModel(model)  # still trainable on soft targets


def test_build_model_creates_timm_models_with_classes_and_vit_image_size():
    resnet = build_model("timm/resnet10t", 7, image_size=32)
    assert type(resnet).__module__ == "timm.models.resnet" and resnet.num_classes == 7
    vit = build_model("timm/vit_tiny_patch16_224", 3, image_size=32)
    assert vit.patch_embed.img_size == (32, 32) and vit.num_classes == 3
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("kwargs,words", [
    ({"arch": "timm/resnet10x"}, ["unknown timm model 'resnet10x'", "resnet10t", "timm.list_models"]),
    ({"arch": "timm/vit_tiny_patch16_224", "image_size": 40}, ["image_size=40", "patch size 16"]),
    ({"arch": "timm/resnet18", "stem": "cifar"}, ["stem='cifar'", "timm/resnet18"]),
    ({"arch": "timm/resnet18", "num_classes": 0}, ["num_classes=0"]),
])
def test_build_model_refuses_bad_timm_arguments_in_one_line(kwargs, words):
    kwargs = {"num_classes": CLASSES, **kwargs}
    with pytest.raises(UserError) as e:
        build_model(kwargs.pop("arch"), **kwargs)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_timm_arch_without_timm_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(UserError) as e:
        build_model("timm/resnet18", CLASSES)
    assert str(e.value) == "--arch timm/resnet18: needs timm (pip install 'mixtrain-dali[timm]')"


# ------------------------------------------------------------------ mixtrain train --arch timm/...

FAST = ["--image-size", "32", "--threads", "1", "--no-progress", "--device", "cpu", "--batch-size", "16"]


@pytest.fixture()
def mix_last_epoch(tmp_path):
    """A recipe whose 2-epoch runs mix their second epoch (no final unmixed epoch)."""
    recipe = tmp_path / "mix.toml"
    recipe.write_text("[mix]\nwarmup_epochs = 1\nfinal_full_fraction = 0.0\n")
    return ["--config", str(recipe)]


def test_cli_trains_a_timm_cnn_with_mixing_and_resumes_it(small_data, tmp_path, mix_last_epoch, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(small_data), "--arch", "timm/resnet10t", "--out", str(out), *mix_last_epoch,
            "--mix-k", "4", "--mix-fraction", "1.0", "--mix-gamma", "0", *FAST]
    assert main([*args, "--epochs", "1"]) == 0
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    said = capsys.readouterr()
    assert "timm/resnet10t" in said.out and "mix isolate" not in said.err  # isolate (the default) ran
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    # epoch 1 warms up unmixed and records the losses; epoch 2, after the resume, mixes
    assert rows[0]["mixed_samples"] == 0 and rows[1]["mixed_samples"] > 0
    assert rows[1]["composites"] < rows[1]["samples"]
    assert all(math.isfinite(r["train_loss"]) for r in rows) and "val_top1" in rows[-1]
    assert main([*args, "--epochs", "3", "--resume", "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'timm/resnet10t'" in err and "'resnet18'" in err, err


def test_cli_trains_a_class_token_vit_with_mixing_on_soft_targets(small_data, tmp_path, mix_last_epoch, capsys):
    out = tmp_path / "vit"
    assert main(["train", "--data", str(small_data), "--arch", "timm/vit_tiny_patch16_224", *mix_last_epoch,
                 "--out", str(out), "--epochs", "2", "--mix-k", "4", "--mix-fraction", "1.0", *FAST]) == 0
    err = capsys.readouterr().err
    assert err.count("mix isolate") == 1 and "class-token ViT" in err, err
    rows = read_metrics(out)
    assert rows[1]["mixed_samples"] > 0 and all(math.isfinite(r["train_loss"]) for r in rows)


@pytest.mark.parametrize("arch,message", [
    ("timm/resnet10x", "unknown timm model 'resnet10x'"),
    ("timm/mobilenetv3_small_050", "MobileNetV3"),
])
def test_cli_bad_timm_arch_gives_one_line_and_exit_2(arch, message, small_data, tmp_path, capsys):
    rc = main(["train", "--data", str(small_data), "--arch", arch, "--epochs", "1",
               "--out", str(tmp_path / "r"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
