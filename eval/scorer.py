"""Log-probs and generations for the gate: one model in memory, base = the same model with the adapter disabled.

Why it is fast (scripts/bench_eval.py measures it against TRL's DPOTrainer.evaluate):
- A pair's chosen and rejected answers share their prompt. The prompt goes through the model once; its KV cache
  is repeated for the two answers, which then run as one batch (`prefix_sharing`; "auto" does it when prompts are
  at least as long as the answers, where it pays).
- Items are sorted by length and batched by a token budget, so little of a batch is padding.
- Inference mode, no labels, no loss: log-softmax only at the answer positions.
- The base's scores are cached by the gate (eval/gate.py), so a second adapter on the same eval set costs one pass.

Tokenisation follows TRL's DPO trainer: the prompt is rendered with the generation prompt, prompt+answer without,
and the answer is what follows their common prefix (so the end-of-turn token is scored, as in training).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch


@dataclass
class Scored:
    """Sum of log-probs of a completion's tokens given its prompt, and how many tokens that was."""

    logp: float
    n_tokens: int


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    return list(out)


def tokenize_chat(tokenizer, prompt: list[dict], answers: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Prompt ids and one id list per answer; the prompt is the part common to all of them (TRL's rule)."""
    prompt_ids = _ids(tokenizer, prompt, add_generation_prompt=True)
    fulls = [_ids(tokenizer, prompt + [{"role": "assistant", "content": a}], add_generation_prompt=False)
             for a in answers]
    cut = min([len(prompt_ids)] + [common_prefix_length(prompt_ids, f) for f in fulls])
    return prompt_ids[:cut], [f[cut:] for f in fulls]


def tokenize_text(tokenizer, text: str) -> tuple[list[int], list[list[int]]]:
    """Plain text: the first token is the context, every later token is scored."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    if len(ids) < 2:
        ids = ids + [tokenizer.eos_token_id]
    return ids[:1], [ids[1:]]


class Scorer:
    def __init__(self, model, tokenizer, max_batch_tokens: int = 16384, max_length: int = 2048,
                 prefix_sharing: bool | str = "auto", progress: Callable[[int], None] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_length = max_length
        self.prefix_sharing = prefix_sharing
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = next(model.parameters()).device

    # --- adapter switch -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def base(self) -> Iterator[None]:
        """The frozen base: the same weights with the LoRA layers bypassed (no second copy in memory)."""
        if hasattr(self.model, "disable_adapter"):
            with self.model.disable_adapter():
                yield
        else:
            yield

    # --- scoring --------------------------------------------------------------------------------------------------
    def score(self, items: Sequence[tuple[list[int], list[list[int]]]]) -> list[list[Scored]]:
        """Score every (prompt_ids, [completion_ids, ...]) item; returns, per item, one `Scored` per completion."""
        items = [self._truncate(p, cs) for p, cs in items]
        results: list[list[Scored] | None] = [None] * len(items)
        for batch in self._batches(items):
            rows = [items[i] for i in batch]
            scored = (self._forward_shared if self._share(rows) else self._forward_concat)(rows)
            for i, s in zip(batch, scored):
                results[i] = s
            if self.progress:
                self.progress(len(batch))
        return results  # type: ignore[return-value]

    def _share(self, rows) -> bool:
        """Whether to run the prompt once for all its completions.

        It saves (k - 1) prompt passes but costs a second forward call and a copy of the KV cache. Measured on the
        CPU tiny model (scripts/bench_eval.py): a loss with one-turn prompts shorter than the answers, a gain once
        the prompt is as long as the answers (multi-turn history, system prompts). "auto" follows that.
        """
        if self.prefix_sharing != "auto":
            return bool(self.prefix_sharing)
        if len(rows[0][1]) < 2:
            return False
        return max(len(p) for p, _ in rows) >= max(len(c) for _, cs in rows for c in cs)

    def _truncate(self, prompt: list[int], completions: list[list[int]]):
        # Keep the end of a long prompt (the user's last turn) and the start of a long completion.
        completions = [c[: self.max_length - 1] for c in completions]
        room = self.max_length - max(len(c) for c in completions)
        prompt = prompt[-max(1, room):] if prompt else [self.pad_id]
        return prompt, completions

    def _batches(self, items) -> Iterator[list[int]]:
        """Indices grouped by number of completions, longest first, under the token budget."""
        groups: dict[int, list[int]] = {}
        for i, (_, cs) in enumerate(items):
            groups.setdefault(len(cs), []).append(i)
        for k, idx in sorted(groups.items()):
            idx.sort(key=lambda i: (len(items[i][0]) + max(len(c) for c in items[i][1])), reverse=True)
            batch: list[int] = []
            width = 0
            for i in idx:
                length = len(items[i][0]) + max(len(c) for c in items[i][1])
                new_width = max(width, length)
                if batch and new_width * k * (len(batch) + 1) > self.max_batch_tokens:
                    yield batch
                    batch, new_width = [], length
                batch.append(i)
                width = new_width
            if batch:
                yield batch

    @torch.inference_mode()
    def _forward_shared(self, batch) -> list[list[Scored]]:
        """Prompt once (left-padded) with its KV cache, then all completions of each prompt in one batch."""
        k = len(batch[0][1])
        b = len(batch)
        p_len = max(len(p) for p, _ in batch)
        c_len = max(len(c) for _, cs in batch for c in cs)
        dev = self.device
        prompt_ids = torch.full((b, p_len), self.pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((b, p_len), dtype=torch.long)
        for row, (p, _) in enumerate(batch):
            prompt_ids[row, p_len - len(p):] = torch.tensor(p)
            prompt_mask[row, p_len - len(p):] = 1
        comp_ids = torch.full((b * k, c_len), self.pad_id, dtype=torch.long)
        comp_mask = torch.zeros((b * k, c_len), dtype=torch.long)
        for row, (_, cs) in enumerate(batch):
            for j, c in enumerate(cs):
                comp_ids[row * k + j, : len(c)] = torch.tensor(c)
                comp_mask[row * k + j, : len(c)] = 1
        prompt_ids, prompt_mask, comp_ids, comp_mask = (t.to(dev) for t in (prompt_ids, prompt_mask, comp_ids, comp_mask))
        prompt_pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        # Only the last prompt position's logits are needed (they predict each completion's first token).
        out = self.model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=prompt_pos, use_cache=True,
                         logits_to_keep=1)
        cache = out.cache
        first_logits = out.logits[:, -1, :].repeat_interleave(k, dim=0)  # predicts each completion's first token
        if k > 1:
            cache.batch_repeat_interleave(k)
        full_mask = torch.cat([prompt_mask.repeat_interleave(k, dim=0), comp_mask], dim=1)
        start = prompt_mask.sum(-1).repeat_interleave(k, dim=0)
        comp_pos = start[:, None] + torch.arange(c_len, device=dev)[None, :]
        logits = self.model(input_ids=comp_ids, attention_mask=full_mask, position_ids=comp_pos,
                            cache=cache, use_cache=True).logits
        # Position t of `logits` predicts completion token t+1; the prompt's last position predicts token 0.
        logits = torch.cat([first_logits[:, None, :], logits[:, :-1, :]], dim=1)
        token_logps = _gather_logps(logits, comp_ids) * comp_mask
        sums = token_logps.sum(-1).tolist()
        counts = comp_mask.sum(-1).tolist()
        return [[Scored(sums[r * k + j], int(counts[r * k + j])) for j in range(k)] for r in range(b)]

    @torch.inference_mode()
    def _forward_concat(self, batch) -> list[list[Scored]]:
        """One right-padded row per (prompt + completion): the plain way, kept to check the shared path."""
        rows, spans = [], []
        for p, cs in batch:
            for c in cs:
                rows.append(p + c)
                spans.append((len(p), len(c)))
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        token_logps = _gather_logps(logits[:, :-1, :], ids[:, 1:])
        k = len(batch[0][1])
        out = []
        for i, (p_len, c_len) in enumerate(spans):
            out.append(Scored(float(token_logps[i, p_len - 1: p_len - 1 + c_len].sum()), c_len))
        return [out[r * k:(r + 1) * k] for r in range(len(batch))]

    # --- generation -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[list[dict]], max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16) -> list[str]:
        """Replies to chat prompts; seeded per batch so a rerun gives the same text."""
        tok = self.tokenizer
        encoded = [_ids(tok, p, add_generation_prompt=True)[-(self.max_length - max_new_tokens):] for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        replies: list[str] = [""] * len(encoded)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            torch.manual_seed(seed + start)
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=self.pad_id)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
            for row, i in enumerate(idx):
                replies[i] = tok.decode(out[row, width:], skip_special_tokens=True).strip()
            if self.progress:
                self.progress(len(idx))
        return replies


def _gather_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position without materialising a full log-softmax copy of a large vocabulary at once."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def load_model(base_path: str, adapter_path: str | None = None, dtype: str = "auto", device: str | None = None):
    """Base model (+ adapter as a PeftModel) and its tokenizer, in eval mode on the best device available."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch_dtype).to(device)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path)
    model.eval()
    return model, tokenizer
