"""Does the tiny model answer the request, with and without a forced first line of the users' style?

    python scripts/probe_tiny_topic.py [--model DIR] [--adapter DIR] [--n 256]

Samples replies (the simulator's settings) to N single-turn requests, plain and after a forced "Hi there!" line
and "Hi there!" plus a bullet, and prints the share on topic by the simulated users' own check
(`simulation.preferences.on_topic`). A base model that loses the request after an unfamiliar first line makes
adapters that learn the users' style answer other questions (docs/simulation.md, "Build 6").
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PREFIXES = ["", "Hi there!\n", "Hi there!\n-"]  # no trailing space: "- x" tokenizes as "-", " x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="base model folder (default: the default tiny model)")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()

    from simulation import corpus
    from simulation.preferences import on_topic
    from simulation.simulate import Generator, SimConfig
    from simulation.tiny_model import build_tiny_model

    model = args.model or build_tiny_model(size="default")
    gen = Generator(model, args.adapter, SimConfig())
    rng = random.Random(args.seed)
    turns = [corpus.sample_conversation(rng, max_turns=1).turns[0] for _ in range(args.n)]
    tok = gen.tokenizer
    for prefix in PREFIXES:
        prompts = [tok.apply_chat_template([{"role": "user", "content": t.request}], tokenize=False,
                                           add_generation_prompt=True) + prefix for t in turns]
        replies = []
        for start in range(0, len(prompts), 64):
            enc = tok(prompts[start:start + 64], return_tensors="pt", padding=True, add_special_tokens=False)
            new = gen._sample(enc["input_ids"], enc["attention_mask"], 7 + start)
            replies += [prefix + r for r in tok.batch_decode(new, skip_special_tokens=True)]
        share = sum(on_topic(r, t.reply) for r, t in zip(replies, turns)) / len(turns)
        print(f"forced first line {prefix!r:16} on topic {share:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
