"""Session fixtures for the gate's tests: one planted build, one frozen eval set, planted adapters on demand."""

from __future__ import annotations

import pytest

from tests.eval.planted import TINY_GENERAL, plant_adapter, write_build

# Generation on every held-out prompt (80: 8 for each of the 10 users, since the gate's test is over users and a
# user with 3 prompts is a noisy mean) at 64 tokens (a whole reply and its sign-off); everything else is the
# shipped default.
GATE_TEST_CONFIG = {"checks": {"generation": {"max_prompts": 80, "max_new_tokens": 64}}}

# Steps and learning rates that give each planted adapter its intended effect on the test-size tiny model.
PLANTED = {
    "real": {"steps": 40, "lr": 2e-3},
    "swapped": {"steps": 10, "lr": 3e-3},
    "wreck": {"steps": 15, "lr": 5e-3},
    "zero": {},
}


@pytest.fixture(scope="session")
def planted_build(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("planted") / "build")


@pytest.fixture(scope="session")
def eval_set_dir(planted_build, tmp_path_factory):
    from eval.freeze import freeze

    out = tmp_path_factory.mktemp("evalsets") / "evalset"
    freeze(planted_build, out, general=TINY_GENERAL)
    return out


@pytest.fixture(scope="session")
def gate_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gate-cache")


@pytest.fixture(scope="session")
def gate_config(gate_cache_dir):
    import copy

    cfg = copy.deepcopy(GATE_TEST_CONFIG)
    cfg["cache"] = {"dir": str(gate_cache_dir)}
    return cfg


@pytest.fixture(scope="session")
def planted(tiny_model_dir, planted_build, tmp_path_factory):
    """planted(mode) -> adapter folder, trained once per session."""
    root = tmp_path_factory.mktemp("adapters")
    made = {}

    def get(mode: str):
        if mode not in made:
            made[mode] = plant_adapter(tiny_model_dir, planted_build, root / mode, mode, **PLANTED[mode])
        return made[mode]

    return get


@pytest.fixture(autouse=True)
def _wandb_offline_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-root"))
