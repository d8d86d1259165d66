"""The Python entry point the demo and other stages' tests call: one stage, in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import parse_recipe
from training.run import run_training


def train(stage: str, recipe: str | Path, overrides: dict[str, Any] | None = None) -> Path:
    """Train `stage` ("sft", "dpo" or "kto") from a recipe file, with `overrides` on top; returns the adapter folder.

    Overrides are recipe keys, e.g. `{"data": build_dir, "output_dir": out, "sft_adapter": sft_dir, "max_steps": 5}`.
    Runs in this process (one CPU or one GPU); `flywheel train` launches the same code under accelerate.
    """
    parsed = parse_recipe(stage, ["--config", str(recipe)], overrides=overrides)
    return run_training(parsed)
