"""The loop's stages on a real open-weight model, SmolLM2-135M-Instruct (extra `smollm2`, installed by `make test`):
a few SFT and DPO steps with its recipes, a gate on a handful of items against the real-English general set,
merge (the merged model's greedy tokens are base + adapter's) and a chat reply."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes" / "smollm2-135m-instruct"
FEW_STEPS = {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 256, "report_to": "none",
             "logging_steps": 1}
# A handful of items: generation on 4 prompts of 24 tokens, intervals with 4 items (the gate's numbers mean little
# here; the test is that every check runs on a real model and tokenizer).
HANDFUL = {"min_items": 4,
           "checks": {"generation": {"max_prompts": 4, "max_new_tokens": 24, "require_improvement": False}}}


def _plain_replies(conversations: list[list[dict]], seed: int) -> list[str]:
    return [f"You asked: {c[-1]['content']} Check the settings page first. Then try again and tell me what you see."
            for c in conversations]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes on an idle 2-core machine; a loaded one is many times slower
def test_smollm2_trains_gates_merges_and_chats(smollm2_dir, tmp_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data.build import build_datasets
    from eval.freeze import freeze
    from eval.gate import run_gate
    from flywheel.files import model_weights_sha256
    from serving.chat import answer
    from serving.merge import merge_adapter
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
    checks = report["checks"]
    assert {"preference_movement", "fit_nll", "generation_edit_cost", "general_nll"} <= set(checks)
    assert all(checks[name]["n"] >= 4 for name in ("preference_movement", "fit_nll", "general_nll")), checks
    assert checks["general_nll"]["base"] < 4.0, checks["general_nll"]  # English, far from chance (ln 49152 = 10.8)
    assert not any("near chance" in w for w in report["warnings"])
    # Two steps barely move the model: what must hold is that it did not get worse at English or at the answers.
    assert checks["general_nll"]["passed"] and checks["fit_nll"]["passed"], report["reasons"]

    merged = merge_adapter(dpo, tmp_path / "merged")
    assert model_weights_sha256(merged) != model_weights_sha256(smollm2_dir)
    # two small steps need not change a greedy token; the tiny model's test checks that a real change survives
    assert_merged_generates_like_base_plus_adapter(merged, smollm2_dir, dpo, require_change=False)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    reply = answer(AutoModelForCausalLM.from_pretrained(merged), tokenizer, "How do I reset my password?")
    assert len(reply.split()) >= 5 and "<|im_end|>" not in reply
