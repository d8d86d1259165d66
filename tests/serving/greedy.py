"""Greedy tokens of a model and of base + adapter, for checking that a merge changed nothing a user sees."""

from __future__ import annotations

PROMPTS = ["How do I reset my password?", "Order 1234 came with a cracked screen.", "Can I freeze cooked rice?"]


def greedy_tokens(model, tokenizer, prompts: list[str] = PROMPTS, n: int = 32) -> list[list[int]]:
    """The first `n` greedily generated token ids for each prompt (no early stop, so all `n` are compared)."""
    import torch

    rows = []
    for prompt in prompts:
        enc = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        rows.append(out[0, enc["input_ids"].shape[1]:].tolist())
    return rows


def assert_merged_generates_like_base_plus_adapter(merged_dir, base_dir, adapter_dir, require_change: bool = True) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="float32").eval()
    got = greedy_tokens(merged, tokenizer)
    del merged
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
    plain = greedy_tokens(base.eval(), tokenizer)
    with_adapter = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    want = greedy_tokens(with_adapter, tokenizer)
    assert got == want
    assert all(len(row) == 32 for row in got)
    if require_change:
        assert got != plain  # the adapter does change what the model says
