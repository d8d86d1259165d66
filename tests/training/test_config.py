"""Recipe parsing: TRL's parser, our errors."""

from __future__ import annotations

import pytest
import yaml

from training.config import RecipeError, parse_recipe

from .conftest import TINY_RECIPES


def test_unknown_key_in_recipe_names_key_and_file(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text((TINY_RECIPES / "dpo.yaml").read_text() + "lora_rank: 8\n")
    with pytest.raises(RecipeError) as err:
        parse_recipe("dpo", ["--config", str(recipe)])
    assert "'lora_rank'" in str(err.value) and str(recipe) in str(err.value) and "lora_r" in str(err.value)


def test_stage_specific_keys_are_checked_per_stage():
    # `beta` is a DPO key; an SFT run given it must fail rather than silently ignore it.
    with pytest.raises(RecipeError, match="'beta'"):
        parse_recipe("sft", ["--config", str(TINY_RECIPES / "sft.yaml")], overrides={"beta": 0.1})
    with pytest.raises(RecipeError, match="--no_such_key"):
        parse_recipe("sft", ["--config", str(TINY_RECIPES / "sft.yaml"), "--no_such_key", "1"])


def test_command_line_overrides_recipe_and_resolved_recipe_round_trips(tmp_path):
    parsed = parse_recipe(
        "dpo",
        ["--config", str(TINY_RECIPES / "dpo.yaml"), "--learning_rate", "1e-4", "--data", "a", "b:0.5",
         "--sft_adapter", "x/sft", "--output_dir", "x/out", "--model_name_or_path", "x/model"],
    )
    assert parsed.training.learning_rate == 1e-4
    assert parsed.flywheel.data == ["a", "b:0.5"] and parsed.flywheel.sft_adapter == "x/sft"
    assert parsed.training.loss_type == ["sigmoid", "sft"]  # from the file
    resolved = tmp_path / "recipe.yaml"
    resolved.write_text(parsed.resolved_yaml())
    again = parse_recipe("dpo", ["--config", str(resolved)])
    assert yaml.safe_load(again.resolved_yaml()) == yaml.safe_load(parsed.resolved_yaml())
    assert again.training.learning_rate == 1e-4 and again.model.model_name_or_path == "x/model"


def test_overrides_dict_takes_lists_and_mappings():
    parsed = parse_recipe(
        "sft", ["--config", str(TINY_RECIPES / "sft.yaml")],
        overrides={"data": [{"path": "a", "weight": 2}, "b"], "max_steps": 7},
    )
    assert parsed.flywheel.data == [{"path": "a", "weight": 2}, "b"]
    assert parsed.training.max_steps == 7
    with pytest.raises(RecipeError, match="overrides: unknown key 'max_step'"):
        parse_recipe("sft", ["--config", str(TINY_RECIPES / "sft.yaml")], overrides={"max_step": 7})
