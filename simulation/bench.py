"""Benchmark of the embedded default, and the check that one turn of the flywheel halves the users' edit cost.

    python -m simulation.bench --size default --users 40 --turns 15 [--flywheel] [--dpo] --out bench-out

Prints (and writes `bench.json`): tiny-model build seconds (wall and CPU), simulation throughput on the base model;
with `--flywheel`: period 0 on the base -> `data.build.build_datasets` -> SFT (recipes/tiny/sft.yaml) [-> DPO
(recipes/tiny/dpo.yaml) from the SFT adapter] -> period 1 with the adapter, same users, next seed; and the ratio of
mean edit costs. Results go into docs/performance.md and docs/simulation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, {"wall_s": round(time.perf_counter() - w0, 1), "cpu_s": round(time.process_time() - c0, 1)}


def _period(summary: dict) -> dict:
    keys = ("turns", "generations", "edit_cost", "accept_rate", "edit_rate", "regen_rate", "abandon_rate",
            "rephrase_rate", "rules_met_fraction", "seconds", "turns_per_second")
    return {k: summary[k] for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="default", help="tiny-model size, or a model folder")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--flywheel", action="store_true", help="also train on period 0 and simulate period 1")
    parser.add_argument("--dpo", action="store_true", help="with --flywheel: DPO from the SFT adapter too")
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)

    from simulation.simulate import simulate
    from simulation.tiny_model import build_tiny_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"torch_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(),
                    "load_avg_start": os.getloadavg()}
    if os.path.isdir(args.size):
        model = Path(args.size)
    else:
        model, result["build"] = _timed(build_tiny_model, size=args.size)
        meta = json.loads((model / "flywheel_tiny_model.json").read_text())
        result["build"]["recorded_seconds"] = meta["seconds"]
        result["build"]["parameters"] = meta["parameters"]
    print("model", model, result.get("build"), flush=True)

    s0, t = _timed(simulate, model, out / "period0.jsonl", users=args.users, turns=args.turns, seed=0)
    result["period_0"] = {**_period(s0), **t}
    print("period 0", result["period_0"], flush=True)

    if args.flywheel:
        from data.build import build_datasets
        from training.api import train

        manifest, t = _timed(build_datasets, [str(out / "period0.jsonl")], out / "build")
        result["datasets"] = {"examples": manifest["examples"], **t}
        common = {"model_name_or_path": str(model), "data": str(out / "build"), "report_to": "none"}
        adapter, t = _timed(train, "sft", REPO / "recipes" / "tiny" / "sft.yaml",
                            {**common, "output_dir": str(out / "sft")})
        result["sft"] = t
        if args.dpo:
            adapter, t = _timed(train, "dpo", REPO / "recipes" / "tiny" / "dpo.yaml",
                                {**common, "output_dir": str(out / "dpo"), "sft_adapter": str(adapter)})
            result["dpo"] = t
        s1, t = _timed(simulate, model, out / "period1.jsonl", adapter=adapter, users=args.users, turns=args.turns,
                       seed=1)
        result["period_1"] = {**_period(s1), **t}
        result["edit_cost_ratio"] = round(s1["edit_cost"] / s0["edit_cost"], 3)
        print("period 1", result["period_1"], flush=True)
        print("edit cost", round(s0["edit_cost"], 3), "->", round(s1["edit_cost"], 3),
              f"(ratio {result['edit_cost_ratio']})", flush=True)
    result["load_avg_end"] = os.getloadavg()
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
