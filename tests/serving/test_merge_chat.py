"""merge and chat on a promoted adapter and the real tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from flywheel.cli import main as flywheel_main
from flywheel.files import model_weights_sha256
from serving.merge import merge_adapter
from serving.registry import promote


def test_merged_model_computes_what_base_plus_adapter_computes(bench, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    out = merge_adapter("support", bench.root / "merged", registry=bench.registry)

    manifest = json.loads((out / "merge_manifest.json").read_text())
    assert manifest["adapter"]["registry_name"] == "support-v1"
    assert manifest["weights_sha256"] == model_weights_sha256(out) != bench.base_sha
    assert not list(out.rglob("adapter_config.json"))  # a plain model, no PEFT left

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("hello there, how do I reset my password?", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        peft = PeftModel.from_pretrained(base, str(bench.registry / "versions" / "support-v1" / "adapter")).eval()
        want = peft(ids).logits
        got = merged(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter does change the model


def test_merged_model_generates_the_greedy_tokens_of_base_plus_adapter(bench, tiny_model_dir):
    from tests.serving.greedy import assert_merged_generates_like_base_plus_adapter

    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    out = merge_adapter("support", bench.root / "merged", registry=bench.registry)
    assert_merged_generates_like_base_plus_adapter(out, tiny_model_dir,
                                                   bench.registry / "versions" / "support-v1" / "adapter")


def test_merge_refuses_wrong_base(bench, tmp_path):
    adapter = bench.adapter("wrong", seed=1, base_sha="f" * 64)
    with pytest.raises(ValueError, match="silently build a wrong model"):
        merge_adapter(adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_chat_answers_a_prompt_non_interactively(bench, capsys):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    code = flywheel_main(["chat", "--alias", "support", "--registry", str(bench.registry),
                          "--prompt", "How do I reset my password?", "--max-new-tokens", "12"])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "user> How do I reset my password?"
    assert out[1].startswith("support-v1> ") and len(out[1]) > len("support-v1> ")


def test_chat_reads_a_conversation_from_stdin(bench):
    import io

    from serving.chat import chat_loop

    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    out = io.StringIO()
    assert chat_loop("support-v1", registry=bench.registry, max_new_tokens=6,
                     stdin=io.StringIO("hello\nand then?\nexit\nnot read\n"), stdout=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("chatting with support-v1")
    assert len([line for line in lines if line.startswith("support-v1> ")]) == 2
