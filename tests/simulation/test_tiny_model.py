"""The embedded tiny model: loadable through the Auto classes, chat-ready, cached, and a broad tokenizer."""

from __future__ import annotations

import json
import random
import time

import pytest

from simulation.tiny_model import END_OF_TURN, PAD, SIZES, build_corpus, build_tiny_model, config_hash, train_tokenizer


def test_loads_through_the_auto_classes_with_a_chat_template_and_distinct_pad(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    end_id = tok.convert_tokens_to_ids(END_OF_TURN)
    assert tok.eos_token == END_OF_TURN and tok.pad_token == PAD and tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == end_id and model.generation_config.eos_token_id == end_id
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.model_type == "llama"
    text = tok.apply_chat_template([{"role": "user", "content": "Hello?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|user|>\nHello?<|end|>\n<|assistant|>\n"
    # the assistant's turn is marked for TRL's assistant_only_loss
    out = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes."}],
                                  return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(answer) == "Yes.<|end|>"


def test_answers_a_request_in_the_plain_base_style_and_stops(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    requests = ["How do I reset my password?", "My laptop has become really slow.",
                "Set up a meeting with Anna on Friday at 2 pm about the budget."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": r}], tokenize=False, add_generation_prompt=True)
               for r in requests]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=120)
    for row in out:
        new = row[enc["input_ids"].shape[1]:].tolist()
        assert tok.eos_token_id in new, "the reply never ended with the end-of-turn token"
        reply = tok.decode(new, skip_special_tokens=True).strip()
        words = reply.split()
        assert len(words) >= 8 and reply.endswith("."), reply
        assert len(set(words)) / len(words) > 0.5, f"degenerate repetition: {reply}"
        assert not reply.startswith("Hi there!")  # the base style does not meet the users' rules


def test_cached_by_configuration_and_copied_on_request(tiny_model_dir, tmp_path):
    meta = json.loads((tiny_model_dir / "flywheel_tiny_model.json").read_text())
    assert meta["config_hash"] == config_hash("test", 0) and tiny_model_dir.name.endswith(meta["config_hash"])
    t0 = time.perf_counter()
    assert build_tiny_model(size="test") == tiny_model_dir
    assert time.perf_counter() - t0 < 2.0
    out = build_tiny_model(tmp_path / "model", size="test")
    assert (out / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert config_hash("test", 1) != config_hash("test", 0) != config_hash("default", 0)
    with pytest.raises(ValueError, match="unknown tiny-model size"):
        build_tiny_model(size="huge")


def test_corpus_and_tokenizer_are_deterministic_from_the_seed():
    cfg = SIZES["test"]
    docs_a, tok_a = build_corpus(cfg, random.Random(3))
    docs_b, tok_b = build_corpus(cfg, random.Random(3))
    assert docs_a == docs_b
    assert train_tokenizer(tok_a[:3000], 1024).get_vocab() == train_tokenizer(tok_b[:3000], 1024).get_vocab()
    assert build_corpus(cfg, random.Random(4))[0] != docs_a


# Text from outside the model's domains: a stand-in for what real users bring.
OUT_OF_DOMAIN = (
    "The central bank raised interest rates again this quarter, arguing that inflation remains stubborn across "
    "housing, energy and food. Economists warned that higher borrowing costs could slow hiring, while parliament "
    "debated a new budget for schools and hospitals. Meanwhile, researchers published a study on sleep, exercise "
    "and memory in older adults, and the city council approved a plan to repair the old bridge."
)


def test_default_tokenizer_is_broad_enough_for_english_outside_the_domains():
    cfg = SIZES["default"]
    _, texts = build_corpus(cfg, random.Random(0))
    tok = train_tokenizer(texts, cfg.vocab_size)
    assert len(tok) >= 4000
    ids = tok(OUT_OF_DOMAIN, add_special_tokens=False)["input_ids"]
    chars_per_token = len(OUT_OF_DOMAIN) / len(ids)
    single_byte = sum(1 for i in ids if len(tok.convert_ids_to_tokens(i).lstrip("Ġ")) <= 1)
    assert chars_per_token > 3.5, chars_per_token
    assert single_byte / len(ids) < 0.2
    # the domain text the users edit toward is whole tokens, not bytes
    for phrase in ("Hi there!", "Hope this helps!", "Next step:"):
        assert len(tok(phrase, add_special_tokens=False)["input_ids"]) <= 4, phrase
