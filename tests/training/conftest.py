"""Real inputs for the training tests: the tiny test model and build folders made by `data.build`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPES = REPO / "recipes" / "tiny"
SAMPLE_LOG = REPO / "data" / "samples" / "capture-sample.jsonl"

# Keys every test run sets on top of recipes/tiny: a few steps, nothing left behind outside tmp_path.
FAST = {"max_steps": 3, "logging_steps": 1, "save_steps": 1000, "report_to": "none", "per_device_train_batch_size": 2}


@pytest.fixture(autouse=True)
def _offline_trackers(monkeypatch, tmp_path):
    # wandb writes under the run folder; make sure no test picks up a developer's login or project.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory) -> Path:
    from data.build import build_datasets

    out = tmp_path_factory.mktemp("build") / "build"
    build_datasets([str(SAMPLE_LOG)], out)
    return out


@pytest.fixture(scope="session")
def sft_only_build_dir(tmp_path_factory) -> Path:
    """A build from a log where users only accepted answers: SFT examples, no preference pairs."""
    import json

    from data.build import build_datasets

    root = tmp_path_factory.mktemp("build-sft")
    log = root / "accepts-only.jsonl"
    lines = [line for line in SAMPLE_LOG.read_text().splitlines() if line.strip()]
    log.write_text("\n".join(l for l in lines if json.loads(l)["type"] in ("generation", "accept")) + "\n")
    build_datasets([str(log)], root / "build", kinds=["sft"])
    return root / "build"


@pytest.fixture(scope="session")
def sft_adapter(tmp_path_factory, tiny_model_dir, build_dir) -> Path:
    """A real SFT adapter, trained long and fast enough that it moves the model away from the base."""
    from training.api import train

    out = tmp_path_factory.mktemp("sft") / "sft"
    return train(
        "sft",
        TINY_RECIPES / "sft.yaml",
        {**FAST, "model_name_or_path": str(tiny_model_dir), "data": str(build_dir), "output_dir": str(out),
         "learning_rate": 5e-3, "warmup_steps": 0, "max_steps": 4},
    )


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
