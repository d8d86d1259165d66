"""The fast scoring path agrees with the plain one, and the base is the adapter switched off."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from eval.scorer import load_model

    model, tok = load_model(str(tiny_model_dir))
    torch.manual_seed(0)
    # Random (non-zero) LoRA weights, so adapter and base differ.
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    model.eval()
    return model, tok


def _items(tok):
    from eval.scorer import tokenize_chat, tokenize_text

    items = []
    for i in range(12):
        prompt = [{"role": "user", "content": "Where is my order #" + str(1000 + i) + "?" * (1 + i % 3)}]
        items.append(tokenize_chat(tok, prompt, ["It ships on Monday." * (1 + i % 4), "No."]))
    singles = [tokenize_text(tok, "The river begins as a thin stream high in the hills."),
               tokenize_chat(tok, [{"role": "user", "content": "Hi"}], ["Hello! How can I help?"])]
    return items, singles


def test_shared_prompt_path_matches_one_row_per_sequence(model_and_tokenizer):
    from eval.scorer import Scorer

    model, tok = model_and_tokenizer
    pairs, singles = _items(tok)
    shared = Scorer(model, tok, max_batch_tokens=300, prefix_sharing=True)
    plain = Scorer(model, tok, max_batch_tokens=300, prefix_sharing=False)
    for batch in (pairs, singles):
        for a, b in zip(shared.score(batch), plain.score(batch)):
            assert [x.n_tokens for x in a] == [y.n_tokens for y in b]
            assert [x.logp for x in a] == pytest.approx([y.logp for y in b], abs=1e-3)


def test_base_context_equals_the_model_without_the_adapter(model_and_tokenizer, tiny_model_dir):
    from eval.scorer import Scorer, load_model

    model, tok = model_and_tokenizer
    pairs, _ = _items(tok)
    scorer = Scorer(model, tok)
    with scorer.base():
        via_switch = scorer.score(pairs)
    with_adapter = scorer.score(pairs)
    bare, _ = load_model(str(tiny_model_dir))
    direct = Scorer(bare, tok).score(pairs)
    assert [s.logp for r in via_switch for s in r] == pytest.approx([s.logp for r in direct for s in r], abs=1e-4)
    assert [s.logp for r in with_adapter for s in r] != pytest.approx([s.logp for r in direct for s in r], abs=1e-2)


def test_answers_are_scored_from_where_prompt_and_answer_diverge_like_trl(model_and_tokenizer):
    from eval.scorer import tokenize_chat

    _, tok = model_and_tokenizer
    prompt = [{"role": "user", "content": "Hi"}]
    p, (c,) = tokenize_chat(tok, prompt, ["Hello!"])
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": "Hello!"}], tokenize=True,
                                   return_dict=False)
    assert p + c == list(full) and tok.decode(c).startswith("Hello!") and tok.eos_token in tok.decode(c)


def test_generation_is_reproducible_with_a_seed(model_and_tokenizer):
    from eval.scorer import Scorer

    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok)
    prompts = [[{"role": "user", "content": "Can you move the meeting to Friday?"}]] * 3
    a = scorer.generate(prompts, max_new_tokens=12, do_sample=True, temperature=0.7, seed=5)
    b = scorer.generate(prompts, max_new_tokens=12, do_sample=True, temperature=0.7, seed=5)
    assert a == b and all(isinstance(x, str) for x in a)
