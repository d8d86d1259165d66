"""Simulator generation speed on a base model: fp32 against bf16 autocast, side by side in one process.

    python scripts/bench_sim_generation.py --model DIR [--batch 16] [--new-tokens 64] [--repeats 2]

Runs `simulation.simulate.Generator` (left padding, KV cache, the simulator's own sampling loop) on the same batch of
first requests under both settings, alternating, and prints one JSON object: tokens/s for each, their ratio, the
load average before and after (the ratio is the figure to trust on a shared machine), and one reply of each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from simulation import corpus
    from simulation.simulate import Generator, SimConfig

    rng = random.Random(0)
    conversations = [[{"role": "user", "content": corpus.sample_conversation(rng, max_turns=1).turns[0].request}]
                     for _ in range(args.batch)]
    result: dict = {"model": args.model, "batch": args.batch, "new_tokens": args.new_tokens,
                    "load_avg_start": os.getloadavg(), "cpus": os.cpu_count()}
    generators = {name: Generator(args.model, None, SimConfig(max_new_tokens=args.new_tokens, batch_size=args.batch,
                                                              autocast_bf16=name == "bf16_autocast"))
                  for name in ("fp32", "bf16_autocast")}
    seconds = {name: 0.0 for name in generators}
    tokens = {name: 0 for name in generators}
    replies = {}
    for repeat in range(args.repeats):
        for name, generate in generators.items():
            t0 = time.perf_counter()
            out = generate(conversations, seed=repeat)
            seconds[name] += time.perf_counter() - t0
            tokens[name] += sum(len(generate.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in out)
            replies[name] = out[0]
    for name in generators:
        result[name] = {"tokens_per_s": round(tokens[name] / seconds[name], 1), "seconds": round(seconds[name], 1),
                        "tokens": tokens[name], "reply": replies[name]}
    result["speedup_bf16_autocast"] = round(result["bf16_autocast"]["tokens_per_s"] / result["fp32"]["tokens_per_s"], 2)
    result["load_avg_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
