"""One trial of the tiny recipes: the demo's loop with recipe overrides, reporting what the recipe settings rest on.

    python scripts/trial_tiny_recipe.py --out /tmp/trial --sft '{"num_train_epochs": 10}' [--dpo '{}'] \
        [--model DIR] [--users 40] [--turns 15]

Period 0 on the base (seed 0) -> build -> eval set frozen with recipes/tiny/general.jsonl -> SFT (recipes/tiny/
sft.yaml + overrides) [-> DPO from it] -> for each adapter: the gate (max_new_tokens 128, no tracker) and period 1
with the adapter (seed 1, same users). Prints one JSON object: edit cost, share of replies on topic and share of
rules met per period (from the simulator's ground truth), and the gate's decision and main intervals. Period 0 and
the eval set are kept in OUT/period0 and reused by later trials with the same OUT, model, users and turns.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def turn_stats(turns_path: Path) -> dict:
    turns = [json.loads(line) for line in open(turns_path)]
    return {"edit_cost": round(statistics.mean(t["edit_cost"] for t in turns), 3),
            "on_topic": round(statistics.mean(t["on_topic"] for t in turns), 3),
            "rules_met": round(sum(t["rules_met"] for t in turns) / sum(t["rules_total"] for t in turns), 3)}


def check_summary(check: dict) -> dict:
    return {k: check.get(k) for k in ("passed", "base", "adapter", "interval")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="base model folder (default: the default tiny model, built/cached)")
    ap.add_argument("--sft", default="{}", help="JSON of sft.yaml overrides")
    ap.add_argument("--dpo", default=None, help="JSON of dpo.yaml overrides; DPO runs only when given")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--turns", type=int, default=15)
    args = ap.parse_args()

    from data.build import build_datasets
    from eval.freeze import freeze
    from eval.gate import run_gate
    from simulation.simulate import simulate
    from simulation.tiny_model import build_tiny_model
    from training.api import train

    model = Path(args.model) if args.model else build_tiny_model(size="default")
    out = Path(args.out)
    p0 = out / "period0"
    if not (p0 / "eval").exists():
        shutil.rmtree(p0, ignore_errors=True)
        simulate(model, p0 / "period0.jsonl", users=args.users, turns=args.turns, seed=0)
        build_datasets([str(p0 / "period0.jsonl")], p0 / "build", test_fraction=0.2)
        freeze(p0 / "build", p0 / "eval", general=REPO / "recipes" / "tiny" / "general.jsonl")
    trial = out / f"trial-{int(time.time())}"
    common = {"model_name_or_path": str(model), "data": str(p0 / "build"), "report_to": "none"}
    adapters = {"sft": train("sft", REPO / "recipes/tiny/sft.yaml",
                             {**common, "output_dir": str(trial / "sft"), **json.loads(args.sft)})}
    if args.dpo is not None:
        adapters["dpo"] = train("dpo", REPO / "recipes/tiny/dpo.yaml",
                                {**common, "output_dir": str(trial / "dpo"), "sft_adapter": str(adapters["sft"]),
                                 **json.loads(args.dpo)})
    result = {"sft_overrides": json.loads(args.sft), "dpo_overrides": json.loads(args.dpo or "null"),
              "period_0": turn_stats(p0 / "period0.turns.jsonl")}
    gate_cfg = {"checks": {"generation": {"max_new_tokens": 128}}, "tracker": {"report_to": "none"},
                "cache": {"dir": str(out / "gate-cache")}}
    for name, adapter in adapters.items():
        report = run_gate(adapter, p0 / "eval", trial / f"gate-{name}", base=str(model), config=gate_cfg,
                          show_progress=False)
        simulate(model, trial / f"period1-{name}.jsonl", adapter=adapter, users=args.users, turns=args.turns, seed=1)
        checks = report["checks"]
        result[name] = {"gate": report["decision"], "reasons": report["reasons"],
                        "period_1": turn_stats(trial / f"period1-{name}.turns.jsonl"),
                        **{k: check_summary(checks[k]) for k in ("preference_movement", "generation_edit_cost",
                                                                  "general_nll", "fit_nll") if k in checks}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
