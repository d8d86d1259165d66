"""`flywheel chat`: a quick look at what a promoted version answers, with the base model and adapter on this machine."""

from __future__ import annotations

import os
import sys
from typing import Iterable

from serving.merge import base_for, load_base_and_adapter, resolve_adapter


def answer(model, tokenizer, prompt: str, max_new_tokens: int = 64,
           history: list[dict[str, str]] | None = None) -> str:
    """Greedy reply to `prompt` (after `history`), formatted with the tokenizer's chat template."""
    import torch

    messages = [*(history or []), {"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def chat_loop(alias: str, registry: str | os.PathLike | None = None, prompts: Iterable[str] | None = None,
              max_new_tokens: int = 64, stdin=None, stdout=None) -> int:
    """Answer `prompts` and return; without prompts, read lines from stdin until EOF or 'exit' (a conversation)."""
    stdout = stdout or sys.stdout
    adapter_dir, entry = resolve_adapter(alias, registry)
    model, tokenizer = load_base_and_adapter(adapter_dir, base_for(adapter_dir, entry))
    name = entry["name"] if entry else str(adapter_dir)
    if prompts:
        for prompt in prompts:
            print(f"user> {prompt}\n{name}> {answer(model, tokenizer, prompt, max_new_tokens)}", file=stdout)
        return 0
    stdin = stdin or sys.stdin
    history: list[dict[str, str]] = []
    print(f"chatting with {name} (empty line or 'exit' to quit)", file=stdout)
    for line in stdin:
        prompt = line.strip()
        if not prompt or prompt == "exit":
            break
        reply = answer(model, tokenizer, prompt, max_new_tokens, history)
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        print(f"{name}> {reply}", file=stdout)
    return 0
