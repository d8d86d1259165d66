"""Pairs per second: the gate's scorer against TRL's DPOTrainer.evaluate, same pairs, same model, same adapter.

    OMP_NUM_THREADS=2 python scripts/bench_eval.py --pairs 256 --repeats 3

Both sides compute what a gate needs from a pair: log-probs of chosen and rejected under the adapter and under the
base (the adapter disabled). TRL runs one row per (prompt + answer) for the policy and again for the reference;
the gate's scorer runs each prompt once, reuses its KV cache for both answers, batches by length, and with the
base's scores cached (a second adapter on the same eval set) runs only the adapter. Rows:

- trl_evaluate:            DPOTrainer.evaluate() on the already tokenised eval set (tokenisation not timed)
- gate_cold_shared:        the gate scoring base and adapter, prompt once per pair (KV reuse), tokenisation included
- gate_cold_unshared:      the same with one row per sequence: what the KV reuse buys or costs
- gate_warm_auto:          base scores cached, the adapter only, sharing on "auto" (the gate on a second adapter)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_pairs(n: int, history: int = 0, seed: int = 0) -> list[dict]:
    """Pairs like the planted users': chosen = the plain reply plus a sign-off. `history` earlier turns per prompt."""
    from simulation.corpus import sample_conversation

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        turn = sample_conversation(rng, max_turns=1).turns[0]
        prompt = []
        for _ in range(history):
            earlier = sample_conversation(rng, max_turns=1).turns[0]
            prompt += [{"role": "user", "content": earlier.request}, {"role": "assistant", "content": earlier.reply}]
        pairs.append({"prompt": prompt + [{"role": "user", "content": turn.request}],
                      "chosen": [{"role": "assistant",
                                  "content": f"{turn.reply} Let me know if you need more help."}],
                      "rejected": [{"role": "assistant", "content": turn.reply}]})
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="base model folder (default: the embedded tiny model)")
    ap.add_argument("--size", default="test", help="tiny-model size when --model is not given")
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16, help="TRL per_device_eval_batch_size")
    ap.add_argument("--max-batch-tokens", type=int, default=16384, help="gate scorer token budget per batch")
    ap.add_argument("--history", type=int, default=0, help="earlier turns in each prompt (longer shared prefix)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from eval.scorer import Scorer, tokenize_chat

    torch.set_num_threads(args.threads)
    if args.model is None:
        from simulation.tiny_model import build_tiny_model

        args.model = str(build_tiny_model(size=args.size))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                             init_lora_weights=False, task_type="CAUSAL_LM"))
    model.eval()
    pairs = make_pairs(args.pairs, args.history)
    n = len(pairs)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOConfig(output_dir=tmp, per_device_eval_batch_size=args.batch_size, report_to=[], bf16=False,
                        use_cpu=device == "cpu", gradient_checkpointing=False, dataloader_num_workers=0,
                        disable_tqdm=True, logging_strategy="no")
        ds = Dataset.from_list(pairs)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, eval_dataset=ds, processing_class=tok)

        def trl_eval():
            return trainer.evaluate()

        def gate(prefix_sharing: bool, with_base: bool):
            def run():
                scorer = Scorer(model, tok, max_batch_tokens=args.max_batch_tokens, prefix_sharing=prefix_sharing)
                items = [tokenize_chat(tok, p["prompt"], [p["chosen"][0]["content"], p["rejected"][0]["content"]])
                         for p in pairs]
                out = {}
                if with_base:
                    with scorer.base():
                        out["base"] = scorer.score(items)
                out["adapter"] = scorer.score(items)
                return out
            return run

        runs = {"trl_evaluate": trl_eval, "gate_cold_shared": gate(True, True),
                "gate_cold_unshared": gate(False, True), "gate_warm_auto": gate("auto", False)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        results = {}
        for name, fn in runs.items():  # warm-up: first call pays one-off costs (allocator, kernels)
            results[name] = fn()
        for _ in range(args.repeats):  # interleaved so that load from other jobs hits every row alike
            for name, fn in runs.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)

    # Same numbers on both sides: the mean chosen log-prob under the adapter.
    ours = statistics.fmean(s[0].logp for s in results["gate_cold_shared"]["adapter"])
    theirs = results["trl_evaluate"].get("eval_logps/chosen")
    print(f"model {args.model} on {device}, {n} pairs, history {args.history} turns, threads {args.threads}, "
          f"repeats {args.repeats} (median)")
    print(f"mean adapter logp(chosen): gate {ours:.4f}  TRL {theirs if theirs is None else round(theirs, 4)}")
    base = statistics.median(times["trl_evaluate"])
    print("| run | seconds | pairs/s | vs TRL |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.3f} | {n / t:.1f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
