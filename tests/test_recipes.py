"""The recipes in pipelines/ load, validate, and run through `mixtrain train --config`."""

from pathlib import Path

import pytest

from mixtrain_dali.config import Config, load_config
from mixtrain_dali.nn import build_model

RECIPES = sorted((Path(__file__).parents[1] / "pipelines").glob("*.toml"))


def test_every_documented_recipe_exists():
    names = {p.stem for p in RECIPES}
    assert {"imagenet_resnet50", "imagenet_resnet50_mixtrain", "imagenet_resnet18", "imagenet_mobilenet_v2",
            "imagenet_vit_b_16", "cifar_resnet18", "demo"} <= names


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


def test_the_demo_recipe_is_the_demos_progressive_arm():
    # issue 25: the default recipe is the arm with the best curve (progressive resizing)
    from mixtrain_dali.demo import DEMO_RECIPE, demo_configs

    arms = demo_configs()
    recipe = Config.from_dict(DEMO_RECIPE)
    assert recipe.to_dict() == arms["progressive"].to_dict()
    assert not recipe.mix.enabled and recipe.data.image_size_at(0, 15) == 32
    assert arms["mixtrain"].mix.active and arms["mixtrain"].data.min_image_size is None


def test_the_default_resnet50_recipe_resizes_and_its_mixtrain_twin_mixes():
    p = load_config(Path(__file__).parents[1] / "pipelines" / "imagenet_resnet50.toml")
    m = load_config(Path(__file__).parents[1] / "pipelines" / "imagenet_resnet50_mixtrain.toml")
    assert not p.mix.enabled and (p.data.min_image_size, p.data.val_size, p.data.val_resize) == (160, 256, 293)
    assert p.data.image_size_at(0, 90) == 160 and p.data.image_size_at(89, 90) == 224
    assert m.mix.active and m.data.min_image_size is None and m.data.val_size == 224
    assert {k: v for k, v in vars(p.train).items() if k != "out"} == {k: v for k, v in vars(m.train).items() if k != "out"}
    assert (p.train.out, m.train.out) == ("runs/imagenet_resnet50", "runs/imagenet_resnet50_mixtrain")


def test_min_image_size_at_full_size_turns_a_recipes_progressive_resizing_off_for_mixing():
    from mixtrain_dali.cli import _config_from_args, build_parser

    recipe = str(Path(__file__).parents[1] / "pipelines" / "cifar_resnet18.toml")
    assert load_config(recipe).data.min_image_size == 16
    args = build_parser().parse_args(["train", "--config", recipe, "--data", "x", "--min-image-size", "32",
                                      "--mix-k", "4"])
    config = _config_from_args(args)
    assert config.data.min_image_size is None and config.mix.active and config.mix.schedule == "resize"


def test_cli_flags_override_the_recipe(tmp_path):
    from mixtrain_dali.cli import _config_from_args, build_parser

    recipe = Path(__file__).parents[1] / "pipelines" / "imagenet_resnet50_mixtrain.toml"
    args = build_parser().parse_args(["train", "--config", str(recipe), "--data", "x",
                                      "--epochs", "3", "--mix-k", "2", "--batch-size", "8"])
    config = _config_from_args(args)
    base = load_config(recipe)
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
