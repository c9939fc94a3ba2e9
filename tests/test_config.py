"""iivformer.config: the published recipe written once, profiles as overrides, one builder."""
import ast
from pathlib import Path

import pytest

from iivformer import config
from iivformer.config import ModelConfig, TrainConfig
from iivformer.errors import IIVFormerError

PACKAGE = Path(__file__).resolve().parent.parent / "iivformer"


def test_without_a_profile_the_published_recipe_holds():
    built = config.training_config()
    assert built.to_dict() == TrainConfig().to_dict()
    assert (built.batch_size, built.epochs, built.lr, built.seed) == (1024, 100, 0.0004, 42)
    assert (built.model.embed_dim_ratio, built.model.depth, built.model.num_heads) == (32, 4, 8)


def test_the_paper_profile_is_the_published_recipe_unchanged():
    assert config.training_config("paper").to_dict() == TrainConfig().to_dict()


def test_profiles_override_and_flags_override_profiles():
    ci = config.training_config("ci")
    assert (ci.epochs, ci.batch_size, ci.lr) == (2, 64, 0.004)
    assert (ci.model.embed_dim_ratio, ci.model.depth, ci.model.num_heads) == (8, 2, 2)
    assert ci.seed == TrainConfig().seed and ci.model.num_view == ModelConfig().num_view  # not overridden
    flagged = config.training_config("ci", epochs=3, lr=None, depth=1, device="cpu")
    assert (flagged.epochs, flagged.lr, flagged.model.depth, flagged.device) == (3, 0.004, 1, "cpu")


def test_unknown_profile_and_settings_are_one_line_errors():
    with pytest.raises(IIVFormerError, match="unknown profile 'fast': choose one of ci, default, paper"):
        config.training_config("fast")
    with pytest.raises(IIVFormerError, match="unknown settings: speed"):
        config.training_config(speed=2)


@pytest.mark.parametrize("overrides, message", [
    (dict(num_heads=3), "num_heads 3 does not divide embed_dim_ratio 32"),
    (dict(seed=2 ** 32), "seed must be below 2\\*\\*32"),
    (dict(depth=0), "depth must be a positive integer"),
    (dict(lr=float("nan")), "lr must be a positive number"),
])
def test_values_that_cannot_train_are_refused_before_any_work(overrides, message):
    with pytest.raises(IIVFormerError, match=message):
        config.training_config(**overrides)


def test_the_published_numbers_are_written_once_in_the_package():
    """The recipe's learning rate appears once in iivformer/ (text and code), and the command line's
    argument parser holds no numbers of its own: its defaults come from the configs."""
    texts = {path.relative_to(PACKAGE).as_posix(): path.read_text() for path in PACKAGE.rglob("*.py")}
    assert sum(text.count("0.0004") for text in texts.values()) == 1 and "0.0004" in texts["config.py"]
    parser_texts = [text for name, text in texts.items() if name == "cli.py" or name.startswith("commands/")]
    numeric_defaults = [node.lineno for text in parser_texts for node in ast.walk(ast.parse(text))
                        if isinstance(node, ast.keyword) and node.arg == "default"
                        and isinstance(node.value, ast.Constant) and type(node.value.value) in (int, float)]
    assert numeric_defaults == []


@pytest.mark.parametrize("overrides", [{}, dict(embed_dim_ratio=16, depth=2, num_heads=4),
                                       dict(num_view=3, num_joints=21, mlp_ratio=3.0, qkv_bias=False)])
def test_parameter_count_is_that_of_the_built_model(overrides):
    from iivformer.model import IIVFormer, count_parameters

    model_config = ModelConfig(**overrides)
    assert model_config.parameter_count() == count_parameters(IIVFormer(model_config))


def test_a_model_of_billions_of_parameters_is_refused_before_it_is_built():
    with pytest.raises(IIVFormerError, match=r"would have [\d,]+ parameters \(more than 1,000,000,000\)"):
        ModelConfig(embed_dim_ratio=4096)
    assert ModelConfig().parameter_count() == 9_560_920  # the published checkpoint's count
