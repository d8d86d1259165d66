"""Recipes: one YAML file per run, parsed by TRL's own parser into TRL's own config dataclasses.

A recipe is a flat mapping of keys from four dataclasses: `FlywheelArguments` (below: which build folders, which
SFT adapter, resume), the stage's TRL config (`SFTConfig`, `DPOConfig`, `KTOConfig`: every `TrainingArguments` key
too), and TRL's `ModelConfig` (model path, LoRA and 4-bit settings). Command-line `--key value` pairs override the
file, exactly as in `trl sft --config recipe.yaml --key value`. The only thing added to TRL's parsing is the error
for an unknown key: it names the key and the file it came from, instead of a bare list.
"""

from __future__ import annotations

import difflib
import enum
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

STAGES = ("sft", "dpo", "kto")

# Where a Flywheel run differs from TRL's defaults, and why. Recipes may set any of these back.
FLYWHEEL_DEFAULTS: dict[str, Any] = {
    # The promise: runs are tracked unless a recipe says otherwise (offline when there is no API key).
    "report_to": ["wandb"],
    # LoRA is the point of the project: a recipe that forgets `use_peft` should not full-finetune a 8B model.
    "use_peft": True,
}


class RecipeError(ValueError):
    """A recipe (or an override of it) that cannot run: says which key, which file and why."""


@dataclass
class FlywheelArguments:
    """Keys a recipe adds to TRL's: the inputs of a run and how to continue one."""

    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Build folders written by `flywheel data build`. In YAML a list of paths or of {path, weight} "
            "mappings; on the command line PATH or PATH:WEIGHT. A weight w repeats each row of that folder w times "
            "per epoch (a fraction takes a seeded sample)."
        },
    )
    sft_adapter: str | None = field(
        default=None,
        metadata={
            "help": "DPO/KTO after SFT: the SFT adapter folder. It keeps training, and a frozen copy of it is the "
            "reference model. Without it (or with `none`) the reference is the base model (the new adapter disabled)."
        },
    )
    checkpoint_dir: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoints, tracker files and logs of the run. Default: `<output_dir>.run` beside the adapter "
            "folder, which is written only once training has finished."
        },
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue from the last checkpoint in checkpoint_dir (a killed or interrupted run)."},
    )
    keep_checkpoints: bool = field(
        default=False,
        metadata={"help": "Keep the checkpoint-N folders after a successful run (they are deleted by default)."},
    )
    use_test_split: bool = field(
        default=True,
        metadata={"help": "Evaluate on the build folders' `test` split when eval_strategy is not 'no'."},
    )

    def __post_init__(self):
        # HfArgumentParser hands YAML values through untouched: a single path arrives as a string.
        if isinstance(self.data, (str, dict)):
            self.data = [self.data]
        # `--sft_adapter none` on the command line: DPO/KTO from the plain base with a recipe that names an adapter.
        if isinstance(self.sft_adapter, str) and self.sft_adapter.strip().lower() in ("", "none", "null"):
            self.sft_adapter = None


def stage_config_class(stage: str):
    import trl

    configs = {"sft": trl.SFTConfig, "dpo": trl.DPOConfig, "kto": trl.KTOConfig}
    if stage not in configs:
        raise RecipeError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    return configs[stage]


def make_parser(stage: str):
    from trl import ModelConfig, TrlParser

    return TrlParser((FlywheelArguments, stage_config_class(stage), ModelConfig), prog=f"python -m training.{stage}")


@dataclass
class ParsedRecipe:
    stage: str
    recipe_path: Path | None
    flywheel: FlywheelArguments
    training: Any  # SFTConfig | DPOConfig | KTOConfig
    model: Any  # trl.ModelConfig
    resolved: dict[str, Any]  # the keys the recipe and the overrides set, with the values they parsed to

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.resolved, sort_keys=False)


def load_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe not found")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of key: value")
    return config


def parse_recipe(
    stage: str,
    argv: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    apply_env: bool = True,
) -> ParsedRecipe:
    """Parse `--config RECIPE [--key value ...]` (and/or a dict of overrides) for one stage.

    This is `TrlParser.parse_args_and_config` with the same precedence (dataclass defaults < Flywheel defaults <
    recipe file < `overrides` < command line) and one difference: unknown keys are errors naming the key and the
    file (or the command line) they came from.
    """
    parser = make_parser(stage)
    argv = list(argv or [])
    recipe_path = None
    config: dict[str, Any] = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe path")
        recipe_path = Path(argv[i + 1])
        del argv[i : i + 2]
        config = load_recipe_file(recipe_path)
    env = config.pop("env", None) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"{recipe_path}: `env` must be a mapping of environment variables")
    if apply_env:
        for key, value in env.items():
            os.environ[key] = str(value)

    known = {action.dest for action in parser._actions}
    where = str(recipe_path) if recipe_path else "the recipe"
    for source, mapping in ((where, config), ("overrides", overrides or {})):
        unknown = sorted(set(mapping) - known)
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, known, n=1)) else repr(key)
                for key in unknown
            ]
            raise RecipeError(
                f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}: not a field of "
                f"FlywheelArguments, {stage_config_class(stage).__name__} or ModelConfig"
            )
    parser.set_defaults_with_config(**FLYWHEEL_DEFAULTS)
    parser.set_defaults_with_config(**config)
    parser.set_defaults_with_config(**(overrides or {}))
    try:
        flywheel_args, training_args, model_args, leftover = parser.parse_args_into_dataclasses(
            args=argv, return_remaining_strings=True
        )
    except SystemExit as exc:
        if not exc.code:  # --help
            raise
        # argparse has printed which argument and value; callers of the Python API get an exception, not an exit.
        raise RecipeError(f"{where}: a value does not parse (argparse's message above names the key)") from None
    if leftover:
        raise RecipeError(f"command line: unknown option(s) {' '.join(leftover)} for stage {stage}")

    _resolve_chat_template_path(training_args, recipe_path)
    set_keys = list(config) + [k for k in (overrides or {}) if k not in config]
    for dest in _dests_on_command_line(parser, argv):
        if dest not in set_keys:
            set_keys.append(dest)
    for key in ("model_name_or_path", "data", "output_dir", "seed"):
        if key not in set_keys:
            set_keys.append(key)
    resolved: dict[str, Any] = {}
    if env:
        resolved["env"] = {k: str(v) for k, v in env.items()}
    for key in set_keys:
        resolved[key] = _plain(_field_value(key, flywheel_args, training_args, model_args))
    return ParsedRecipe(stage, recipe_path, flywheel_args, training_args, model_args, resolved)


def _resolve_chat_template_path(training_args, recipe_path: Path | None) -> None:
    """A recipe's `chat_template_path` that is not a file from the working directory is looked up beside the recipe,
    so a recipe folder carries its model's training template wherever it is run from."""
    path = getattr(training_args, "chat_template_path", None)
    if not path or recipe_path is None or Path(path).is_absolute() or Path(path).exists():
        return
    beside = recipe_path.parent / path
    if beside.is_file():
        training_args.chat_template_path = str(beside.resolve())


def _dests_on_command_line(parser, argv: list[str]) -> list[str]:
    dests = []
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None and action.dest not in dests:
                dests.append(action.dest)
    return dests


def _field_value(key: str, *dataclass_objects) -> Any:
    for obj in dataclass_objects:
        if key in {f.name for f in fields(obj)}:
            return getattr(obj, key)
    raise KeyError(key)


def _plain(value: Any) -> Any:
    """A value as YAML can write and our parser can read back (enums become their values)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value
