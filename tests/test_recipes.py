"""The recipes in pipelines/ load, validate, and run through `mixtrain train --config`."""

from pathlib import Path

import pytest

from mixtrain_dali.config import Config, load_config
from mixtrain_dali.nn import build_model

RECIPES = sorted((Path(__file__).parents[1] / "pipelines").glob("*.toml"))


def test_every_documented_recipe_exists():
    names = {p.stem for p in RECIPES}
    assert {"imagenet_resnet50", "imagenet_resnet18", "imagenet_mobilenet_v2", "imagenet_vit_b_16",
            "cifar_resnet18", "demo"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_loads_and_builds_its_model(path):
    config = load_config(path)
    # every recipe speeds training up: mixing, or progressive resizing (one flag instead)
    assert (config.mix.enabled and config.mix.active) or config.data.min_image_size is not None
    model = build_model(config.train.arch, 10, config.data.image_size, stem=config.train.stem)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_demo_recipe_file_equals_the_demo_code():
    from mixtrain_dali.demo import DEMO_RECIPE

    path = Path(__file__).parents[1] / "pipelines" / "demo.toml"
    assert load_config(path).to_dict() == Config.from_dict(DEMO_RECIPE).to_dict()


def test_the_progressive_recipe_is_the_resnet50_one_with_resolution_flags_instead_of_mixing():
    p = load_config(Path(__file__).parents[1] / "pipelines" / "imagenet_resnet50_progressive.toml")
    m = load_config(Path(__file__).parents[1] / "pipelines" / "imagenet_resnet50.toml")
    assert not p.mix.enabled and (p.data.min_image_size, p.data.val_size, p.data.val_resize) == (160, 256, 293)
    assert p.data.image_size_at(0, 90) == 160 and p.data.image_size_at(89, 90) == 224
    assert {k: v for k, v in vars(p.train).items() if k != "out"} == {k: v for k, v in vars(m.train).items() if k != "out"}


def test_cli_flags_override_the_recipe(tmp_path):
    from mixtrain_dali.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--config", str(RECIPES[0]), "--data", "x",
                                      "--epochs", "3", "--mix-k", "2", "--batch-size", "8"])
    config = _config_from_args(args)
    base = load_config(RECIPES[0])
    assert config.train.epochs == 3 and config.mix.k == 2 and config.data.batch_size == 8
    assert config.train.arch == base.train.arch and config.train.lr == base.train.lr


def test_cifar_stem_keeps_a_4x4_map_at_32px():
    import torch

    model = build_model("resnet18", 10, 32, stem="cifar")
    x = torch.zeros(1, 3, 32, 32)
    m = model
    feats = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
    assert feats.shape[-2:] == (4, 4)


def test_small_cnn_region_pools_and_matches_itself_for_a_full_box():
    import torch

    from mixtrain_dali.nn import adapt_model, model_family

    model = adapt_model(build_model("small_cnn", 7)).eval()
    assert model_family(model) == "small_cnn"
    x = torch.randn(2, 3, 64, 64)
    full = torch.tensor([[[0, 0, 64, 64], [0, 0, 0, 0]]] * 2, dtype=torch.float32)
    out = model(x, full)
    assert out.shape == (2, 2, 7)
    torch.testing.assert_close(out[:, 0], model(x), rtol=1e-5, atol=1e-5)
