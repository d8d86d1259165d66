"""Every recipe and every accelerate config in recipes/ parses with the installed TRL, transformers and accelerate.

A library upgrade that renames or removes a key fails here, not in a user's launch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import STAGES, parse_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
RECIPE_FILES = sorted(p for p in RECIPES.rglob("*.yaml") if "accelerate_configs" not in p.parts)
ACCELERATE_CONFIGS = sorted((RECIPES / "accelerate_configs").glob("*.yaml"))


def recipe_stage(path: Path) -> str:
    """recipes/<model>/<stage>/<variant>.yaml or recipes/<model>/<stage>.yaml."""
    for part in (path.stem, path.parent.name):
        if part in STAGES:
            return part
    raise AssertionError(f"{path}: cannot tell its stage from the path (use .../sft/*.yaml or sft.yaml)")


def test_recipes_exist_for_every_stage_and_model_size():
    assert {recipe_stage(p) for p in RECIPE_FILES} == set(STAGES)
    folders = {p.relative_to(RECIPES).parts[0] for p in RECIPE_FILES}
    assert "tiny" in folders and len(folders) >= 3, folders  # tiny + a ~1B + a 7-8B model
    assert any("qlora" in p.name for p in RECIPE_FILES)


@pytest.mark.parametrize("recipe", RECIPE_FILES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses(recipe):
    from trl import get_peft_config

    stage = recipe_stage(recipe)
    # GPU recipes ask for bf16, which transformers validates against the machine: parse them as if on a CPU.
    parsed = parse_recipe(stage, ["--config", str(recipe)], overrides={"use_cpu": True}, apply_env=False)
    assert parsed.model.model_name_or_path and parsed.training.output_dir and parsed.flywheel.data
    assert parsed.model.use_peft or parsed.flywheel.sft_adapter
    lora = get_peft_config(parsed.model)
    assert lora.bias == "none" and not lora.modules_to_save and lora.r <= 64  # loadable by vLLM
    if parsed.model.load_in_4bit:
        assert parsed.model.bnb_4bit_quant_type == "nf4"
    if "tiny" in recipe.parts:
        assert parsed.training.use_cpu and not parsed.training.bf16 and not parsed.training.activation_checkpointing


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_parses(config):
    from accelerate.commands.config.config_args import load_config_from_file

    cluster = load_config_from_file(str(config))  # validates distributed_type, mixed_precision, ...
    assert cluster.num_processes >= 1


def test_accelerate_configs_cover_the_launch_modes():
    names = {p.stem for p in ACCELERATE_CONFIGS}
    assert {"single_gpu", "multi_gpu", "fsdp", "deepspeed_zero3", "cpu"} <= names


def test_launch_uses_every_core_unless_omp_num_threads_is_set():
    import os

    from training.launch import launch_command

    recipe = RECIPES / "tiny" / "sft.yaml"
    command = launch_command("sft", recipe, environ={})
    assert command[command.index("--num_cpu_threads_per_process") + 1] == str(os.cpu_count())
    two = launch_command("sft", recipe, num_processes=2, environ={})
    assert two[two.index("--num_cpu_threads_per_process") + 1] == str(max(1, os.cpu_count() // 2))
    assert "--num_cpu_threads_per_process" not in launch_command("sft", recipe, environ={"OMP_NUM_THREADS": "3"})
