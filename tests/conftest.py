"""Fixtures shared by every stage's tests: real artefacts, built once per test session.

Stage-specific fixtures live in each stage's own conftest.py (tests/<stage>/conftest.py).
"""

from __future__ import annotations

import os

import pytest

# Tests never reach a hub and never prompt for a tracker login.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The test-size variant of the embedded tiny model (cached by configuration under FLYWHEEL_CACHE)."""
    from simulation.tiny_model import build_tiny_model

    return build_tiny_model(size="test")


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct as a plain folder (extra `smollm2`; `make install` installs it, CI too).

    Skips, saying how to install it, only when the extra is missing; a broken install fails."""
    from simulation.smollm2 import MissingExtra, build_smollm2, gguf_path

    try:
        gguf_path()
    except MissingExtra as exc:
        pytest.skip(f"real-model test skipped: {exc}")
    return build_smollm2()
