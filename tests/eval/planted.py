"""Planted adapters for the gate's proof: adapters whose effect we know, trained in seconds on the tiny model.

Simulated users here want what the embedded base does not do: a sign-off after the answer (one of the
preferences the simulator's users have). From that we write a build folder per
docs/architecture.md (DPO pairs: the user's final answer chosen over the plain reply; SFT: the final answer), split
by user, and train LoRA adapters with a short DPO(+SFT) loop:

- real:    SFT on the users' final answers (the real signal)  -> the gate must pass it
- dpo:     DPO(+SFT) chosen over rejected                    (kept for experiments; at this size it loops on words)
- swapped: DPO(+SFT) with rejected over chosen               -> must fail in-domain
- wreck:   plain LM training on random character soup       -> must fail general non-inferiority
- zero:    LoRA as initialised (B = 0): the base itself     -> must fail for lack of improvement
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from flywheel.files import model_weights_sha256, sha256_file, sha256_json

# One sign-off made of words the tiny tokenizer knows: a preference a 1M-parameter model picks up in a few dozen
# steps (byte-split words take far longer; see stack-facts.md). A greeting in front, tried first, taught the
# 2-layer test model to stop looking at the prompt, which is a real failure but not the one this adapter plants.
SIGNOFFS = ["Let me know if you need more help."]
TENANTS = ["acme", "globex"]
# The tiny models' general set: text from their own general-English generator (the English set in eval/general is
# text they never learned, so non-inferiority on it means nothing for them).
TINY_GENERAL = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "general.jsonl"


def final_answer(rng: random.Random, name: str, reply: str) -> str:
    return f"{reply} {rng.choice(SIGNOFFS)}"


def write_build(out: Path, n_train_users: int = 40, n_test_users: int = 10, per_user: int = 8, seed: int = 0) -> Path:
    """A build folder (sft/dpo DatasetDicts with train/test, manifest.json) of simulated users' edits."""
    from datasets import Dataset, DatasetDict

    from simulation.corpus import NAMES, sample_conversation

    rng = random.Random(seed)
    rows = {"train": [], "test": []}
    for u in range(n_train_users + n_test_users):
        split = "train" if u < n_train_users else "test"
        name = NAMES[u % len(NAMES)]
        for t in range(per_user):
            conv = sample_conversation(rng, max_turns=1)
            turn = conv.turns[0]
            rows[split].append({
                "request": turn.request, "reply": turn.reply, "final": final_answer(rng, name, turn.reply),
                "signal": "edit" if t % 4 else "regenerate", "request_id": f"req-{u}-{t}",
                "session_id": f"sess-{u}-{t // 3}", "user_id": f"user-{u:02d}", "tenant": TENANTS[u % 2],
                "tags": [conv.domain], "ts": 1_790_000_000_000 + u * 1000 + t,
                "generation_id": f"gen-{u}-{t}", "model_base": "tiny", "model_adapter": None,
            })
    # As `flywheel data build` does: a training example whose prompt is also held out is dropped.
    held_out = {r["request"] for r in rows["test"]}
    rows["train"] = [r for r in rows["train"] if r["request"] not in held_out]
    meta_keys = ["signal", "request_id", "session_id", "user_id", "tenant", "tags", "ts", "generation_id",
                 "model_base", "model_adapter"]

    def dpo(r):
        return {"prompt": [{"role": "user", "content": r["request"]}],
                "chosen": [{"role": "assistant", "content": r["final"]}],
                "rejected": [{"role": "assistant", "content": r["reply"]}], **{k: r[k] for k in meta_keys}}

    def sft(r):
        return {"messages": [{"role": "user", "content": r["request"]}, {"role": "assistant", "content": r["final"]}],
                **{k: r[k] for k in meta_keys}}

    out.mkdir(parents=True)
    for kind, fn in (("dpo", dpo), ("sft", sft)):
        DatasetDict({s: Dataset.from_list([fn(r) for r in rows[s]]) for s in ("train", "test")}).save_to_disk(
            str(out / kind))
    manifest = {"kind": "flywheel.dataset_build", "format_version": 1, "inputs": [], "config": {"seed": seed},
                "examples": {k: {"train": len(rows["train"]), "test": len(rows["test"])} for k in ("sft", "dpo")},
                "created": "2026-11-26T00:00:00+00:00"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def _encode(tok, prompt, completion) -> tuple[list[int], int, int]:
    from eval.scorer import tokenize_chat

    p_ids, (c_ids,) = tokenize_chat(tok, prompt, [completion])
    return p_ids + c_ids, len(p_ids), len(c_ids)


def _seq_logps(model, pad_id: int, encoded: list[tuple[list[int], int, int]]):
    """Summed log-prob and token count of each encoded (ids, prompt_len, completion_len) completion."""
    width = max(len(e[0]) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id)
    mask = torch.zeros_like(ids)
    sel = torch.zeros((len(encoded), width - 1))
    for i, (row, p, c) in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        sel[i, p - 1: p - 1 + c] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * sel).sum(-1), sel.sum(-1)


def plant_adapter(base_dir: Path, build: Path, out: Path, mode: str, steps: int = 30, seed: int = 0,
                  lr: float = 3e-3, batch: int = 8, beta: float = 0.1,
                  dpo_weight: float = 0.5, sft_weight: float = 1.0) -> Path:
    """Train (or not) a LoRA adapter of the given mode and write it with lineage.json per the contract."""
    from datasets import load_from_disk
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             bias="none", task_type="CAUSAL_LM"))
    train = load_from_disk(str(build / "dpo"))["train"]
    pairs = [(_encode(tok, r["prompt"], r["chosen"][0]["content"]), _encode(tok, r["prompt"], r["rejected"][0]["content"]))
             for r in train]
    if mode not in ("real", "dpo", "swapped", "wreck", "zero"):
        raise ValueError(f"unknown planted mode {mode!r}")
    if mode == "swapped":
        pairs = [(bad, good) for good, bad in pairs]
    soup_prompt = [{"role": "user", "content": "x"}]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps if mode != "zero" else 0):
        chunk = rng.sample(pairs, batch)
        if mode == "real":
            lp, n = _seq_logps(model, tok.pad_token_id, [c[0] for c in chunk])
            loss = -(lp / n).mean()
        elif mode == "wreck":
            # Character soup in place of language: what an adapter that forgot how to write would assign mass to.
            soup = [_encode(tok, soup_prompt, "".join(rng.choice("qxzjkvw#@%&") for _ in range(120)))
                    for _ in chunk]
            lp, n = _seq_logps(model, tok.pad_token_id, soup)
            loss = -(lp / n).mean()
        else:
            lp, n = _seq_logps(model, tok.pad_token_id, [c[0] for c in chunk] + [c[1] for c in chunk])
            with torch.no_grad(), model.disable_adapter():
                ref, _ = _seq_logps(model, tok.pad_token_id, [c[0] for c in chunk] + [c[1] for c in chunk])
            ratio = lp - ref
            dpo = -torch.nn.functional.logsigmoid(beta * (ratio[:batch] - ratio[batch:])).mean()
            # DPO plus SFT on the preferred text: the SFT term keeps the text fluent (see stack-facts).
            loss = dpo_weight * dpo - sft_weight * (lp[:batch] / n[:batch]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    adapter_sha = sha256_json({n: sha256_file(out / n) for n in ("adapter_config.json", "adapter_model.safetensors")})
    lineage = {
        "kind": "flywheel.adapter", "stage": "dpo",
        "base_model": {"path": str(Path(base_dir).resolve()), "revision": None,
                       "weights_sha256": model_weights_sha256(base_dir)},
        "sft_adapter": None,
        "datasets": [{"path": str(build.resolve()), "manifest_sha256": sha256_file(build / "manifest.json"),
                      "weight": 1.0, "kind": "dpo"}],
        "recipe": {"planted": mode, "steps": steps, "lr": lr}, "seed": seed, "git_commit": None, "versions": {},
        "tracker": {"report_to": [], "project": None, "run_id": f"planted-{mode}", "run_name": f"planted-{mode}",
                    "url": None},
        "metrics": {}, "adapter_sha256": adapter_sha,
    }
    (out / "lineage.json").write_text(json.dumps(lineage, indent=2))
    return out
