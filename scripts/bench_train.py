"""Overhead of Flywheel's training entry points over a bare TRL script: same model, data, settings, one run.

For SFT and DPO it launches, alternately and `--repeats` times each:
  - ours: `python -m training.<stage> --config recipes/tiny/<stage>.yaml ...` (manifest checks, lineage with the
    base weights' hash, atomic adapter folder, tracker setup);
  - bare: a page of plain TRL (load_from_disk + <Stage>Config + <Stage>Trainer + train + save_model) with the same
    resolved settings, read from the recipe our run wrote.
Step time = the trainer's own `train_runtime` / steps (both sides measure it the same way); wall and CPU = the whole
process (start-up, checks, lineage and saving included). On a shared machine the CPU seconds are the steadier figure.
Threads are pinned (OMP_NUM_THREADS) so that the two sides compete for the same cores the same way.

    python scripts/bench_train.py [--steps 30] [--repeats 3] [--threads 2] [--size test]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BARE_TRL = '''
import json, sys, yaml
from datasets import load_from_disk
from peft import LoraConfig
import trl

stage, recipe_path, data_dir, out_dir, metrics_path = sys.argv[1:6]
recipe = yaml.safe_load(open(recipe_path))
lora = LoraConfig(r=recipe["lora_r"], lora_alpha=recipe["lora_alpha"], lora_dropout=recipe["lora_dropout"],
                  target_modules=recipe["lora_target_modules"], bias="none", task_type="CAUSAL_LM")
config_class = {"sft": trl.SFTConfig, "dpo": trl.DPOConfig}[stage]
trainer_class = {"sft": trl.SFTTrainer, "dpo": trl.DPOTrainer}[stage]
fields = set(config_class.__dataclass_fields__)
args = config_class(**{k: v for k, v in recipe.items() if k in fields and k not in ("output_dir",)},
                     output_dir=out_dir)
args.model_init_kwargs = {"dtype": recipe.get("dtype", "float32")}
columns = {"sft": ["messages"], "dpo": ["prompt", "chosen", "rejected"]}[stage]
train = load_from_disk(f"{data_dir}/{stage}")["train"].select_columns(columns)
trainer = trainer_class(model=recipe["model_name_or_path"], args=args, train_dataset=train, peft_config=lora)
result = trainer.train()
trainer.save_model(out_dir)
json.dump(result.metrics, open(metrics_path, "w"))
'''


def run(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process; CPU time is what other jobs on a shared machine disturb least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-4000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="test", help="tiny model size (simulation.tiny_model SIZES)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from data.build import build_datasets
    from simulation.tiny_model import build_tiny_model

    model_dir = build_tiny_model(size=args.size)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    build_dir = work / "build"
    build_datasets([str(REPO / "data" / "samples" / "capture-sample.jsonl")], build_dir)

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", WANDB_MODE="offline",
               PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    bare_script = work / "bare_trl.py"
    bare_script.write_text(BARE_TRL)
    common = ["--model_name_or_path", str(model_dir), "--data", str(build_dir), "--max_steps", str(args.steps),
              "--per_device_train_batch_size", str(args.batch), "--logging_steps", str(args.steps),
              "--save_steps", str(10 * args.steps), "--report_to", "none", "--warmup_steps", "0"]

    results: dict[str, dict[str, list[float]]] = {}
    for repeat in range(args.repeats):
        for stage in ("sft", "dpo"):
            extra = ["--sft_adapter", "none"] if stage == "dpo" else []
            ours_out = work / f"ours-{stage}-{repeat}"
            wall_ours, cpu_ours = run([sys.executable, "-m", f"training.{stage}", "--config", str(REPO / "recipes/tiny" / f"{stage}.yaml"),
                             *common, *extra, "--output_dir", str(ours_out)], env)
            ours_metrics = json.loads((ours_out / "lineage.json").read_text())["metrics"]

            bare_out, bare_metrics_path = work / f"bare-{stage}-{repeat}", work / f"bare-{stage}-{repeat}.json"
            wall_bare, cpu_bare = run([sys.executable, str(bare_script), stage, str(ours_out / "recipe.yaml"), str(build_dir),
                             str(bare_out), str(bare_metrics_path)], env)
            bare_metrics = json.loads(bare_metrics_path.read_text())

            r = results.setdefault(stage, {"ours_step": [], "bare_step": [], "ours_wall": [], "bare_wall": [],
                                           "ours_cpu": [], "bare_cpu": []})
            r["ours_cpu"].append(cpu_ours)
            r["bare_cpu"].append(cpu_bare)
            r["ours_step"].append(ours_metrics["train_runtime"] / args.steps)
            r["bare_step"].append(bare_metrics["train_runtime"] / args.steps)
            r["ours_wall"].append(wall_ours)
            r["bare_wall"].append(wall_bare)
            print(f"repeat {repeat} {stage}: step ours {r['ours_step'][-1]*1000:.1f} ms, bare "
                  f"{r['bare_step'][-1]*1000:.1f} ms; wall ours {wall_ours:.1f} s, bare {wall_bare:.1f} s; "
                  f"CPU ours {cpu_ours:.1f} s, bare {cpu_bare:.1f} s", flush=True)

    print(f"\nmodel {args.size} tiny, {args.steps} steps, batch {args.batch}, OMP_NUM_THREADS={args.threads}, "
          f"median of {args.repeats} alternating runs\n")
    print("| stage | step ours (ms) | step bare TRL (ms) | step overhead | wall ours (s) | wall bare (s) | wall overhead "
          "| CPU ours (s) | CPU bare (s) | CPU overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for stage, r in results.items():
        m = {k: statistics.median(v) for k, v in r.items()}
        summary[stage] = {**m, "step_overhead": m["ours_step"] / m["bare_step"] - 1,
                          "wall_overhead": m["ours_wall"] / m["bare_wall"] - 1,
                          "cpu_overhead": m["ours_cpu"] / m["bare_cpu"] - 1, "raw": r}
        print(f"| {stage} | {m['ours_step']*1000:.1f} | {m['bare_step']*1000:.1f} | {summary[stage]['step_overhead']:+.1%} "
              f"| {m['ours_wall']:.1f} | {m['bare_wall']:.1f} | {summary[stage]['wall_overhead']:+.1%} "
              f"| {m['ours_cpu']:.1f} | {m['bare_cpu']:.1f} | {summary[stage]['cpu_overhead']:+.1%} |")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
