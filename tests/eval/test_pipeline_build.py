"""Freeze and the overlap check on what the real upstream writes: simulated users -> `data build` -> eval set."""

from __future__ import annotations

import json
import random

import pytest

from eval.config import GateConfigError, load_config
from eval.freeze import freeze, load_eval_set
from eval.gate import check_overlap
from flywheel.files import sha256_file


def _base_style_model(conversations, seed):
    """The simulator's users answered by base-style replies, without the cost of generating."""
    from simulation import corpus

    rng = random.Random(seed)
    return [corpus.sample_conversation(rng, max_turns=1).turns[0].reply for _ in conversations]


@pytest.fixture(scope="module")
def simulated_build(tmp_path_factory):
    from data.build import build_datasets
    from simulation.simulate import simulate

    root = tmp_path_factory.mktemp("pipeline")
    simulate("stand-in", root / "period0.jsonl", users=30, turns=12, seed=3, generate=_base_style_model)
    build_datasets([str(root / "period0.jsonl")], root / "build")
    return root / "build"


def test_freeze_reads_the_data_builds_test_splits_with_their_slice_keys(simulated_build, tmp_path):
    meta = freeze(simulated_build, tmp_path / "es")
    manifest = json.loads((simulated_build / "manifest.json").read_text())
    assert meta["counts"]["pairs"] == manifest["examples"]["dpo"]["test"] > 0
    assert meta["counts"]["answers"] == manifest["examples"]["sft"]["test"] > 0
    es = load_eval_set(tmp_path / "es")
    assert all(p["user_id"] and p["signal"] and p["request_id"] for p in es["pairs"])
    assert set(meta["counts"]["by_signal"]) <= {"edit", "regenerate", "accept", "rating", "rephrase", "abandon",
                                                "final"}


def test_held_out_split_of_the_training_build_passes_the_overlap_check_and_its_train_split_does_not(
        simulated_build, tmp_path):
    from datasets import DatasetDict, load_from_disk

    es = freeze(simulated_build, tmp_path / "es")
    loaded = load_eval_set(tmp_path / "es")
    lineage = {"datasets": [{"path": str(simulated_build), "kind": kind, "weight": 1.0,
                             "manifest_sha256": sha256_file(simulated_build / "manifest.json")}
                            for kind in ("sft", "dpo")]}
    result = check_overlap(loaded, lineage, load_config(None))
    assert result["request_id_overlap"] == 0 and result["prompt_overlap"] == 0 and len(result["checked"]) == 2
    assert es["source_build"]["manifest_sha256"] == lineage["datasets"][0]["manifest_sha256"]

    # Freeze the *training* split instead: every item is training data.
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "manifest.json").write_text((simulated_build / "manifest.json").read_text())
    for kind in ("sft", "dpo"):
        d = load_from_disk(str(simulated_build / kind))
        DatasetDict({"train": d["train"], "test": d["train"]}).save_to_disk(str(leaky / kind))
    freeze(leaky, tmp_path / "leaky-es")
    with pytest.raises(GateConfigError, match="request ids are in its training splits"):
        check_overlap(load_eval_set(tmp_path / "leaky-es"), lineage, load_config(None))
