#!/usr/bin/env bash
# Throughput of our SFT and DPO LoRA training on one GPU: tokens/s and model FLOPs utilisation (MFU), with and
# without activation (gradient) checkpointing, on a randomly initialised model of Llama-3.2-1B's shape in bf16.
# No download: the model is built from its config, the tokenizer is the embedded tiny model's, the data is a
# synthetic capture log of long turns put through `data.build` (the real pipeline), so nothing here needs the Hub.
#
#   scripts/gpu_check.sh [OUT_DIR]          # default gpu-check-out; about 5-10 minutes on one H100
#
# Prints a markdown table (paste it into docs/performance.md, section GPU) and writes OUT_DIR/results.jsonl.
# Target: >= 50k tokens/s for SFT without checkpointing on one H100.
# MFU = tokens/s x model FLOPs per token / the GPU's dense bf16 peak, where model FLOPs per token (LoRA: frozen
# weights get no weight gradients) = 4N + attention for SFT (forward 2N, input gradients 2N), + 2N for DPO's
# reference forward pass; recomputation under checkpointing is not counted (it is the price, not the work).
# Set GPU_PEAK_TFLOPS for a GPU the table below does not know.
set -euo pipefail

OUT="${1:-gpu-check-out}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT/results.jsonl"

python - "$OUT" <<'PY'
"""Model of Llama-3.2-1B's shape (random weights, bf16) and a build folder of long synthetic turns."""
import json, random, shutil, sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from data.build import build_datasets
from simulation.tiny_model import build_tiny_model

out = Path(sys.argv[1])
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU"
model_dir = out / "model"
if not (model_dir / "config.json").is_file():
    tiny = build_tiny_model(size="test")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    # Llama-3.2-1B: 16 layers, hidden 2048, 32 heads / 8 KV heads, MLP 8192, vocab 128256, tied embeddings.
    config = LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
        tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters -> {model_dir}")

build_dir = out / "build"
if not (build_dir / "manifest.json").is_file():
    rng = random.Random(0)
    words = [w.strip(".,") for w in Path("data/samples/capture-sample.jsonl").read_text().split() if w.isalpha()]
    words = sorted(set(words)) or ["word"]
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))
    log = out / "synthetic.jsonl"
    with log.open("w") as f:
        for i in range(3000):
            common = {"ts": 1_700_000_000_000 + i * 1000, "session_id": f"s{i}", "user_id": f"u{i % 200}"}
            output = text(500)
            events = [
                {"event_id": f"g{i}", "type": "generation", "generation_id": f"g{i}", "request_id": f"r{i}",
                 "messages": [{"role": "user", "content": text(250)}], "output": output,
                 "model": {"base": "llama-3.2-1b-shape", "adapter": None}, **common},
                {"event_id": f"e{i}", "type": "edit", "generation_id": f"g{i}",
                 "edited_output": "Hello. " + output[: len(output) // 2] + " " + text(200) + " Best regards.", **common},
                {"event_id": f"a{i}", "type": "accept", "generation_id": f"g{i}", **common},
            ]
            for event in events:
                f.write(json.dumps(event) + "\n")
    manifest = build_datasets([str(log)], build_dir)
    print(f"build: {manifest['examples']} -> {build_dir}")
PY

for stage in sft dpo; do
  for checkpointing in false true; do
    python - "$OUT" "$stage" "$checkpointing" <<'PY'
"""One measured run through our own code path (recipe parsing, build checks, TRL trainer), timed per step."""
import json, shutil, sys, time
from pathlib import Path

import torch
from transformers import TrainerCallback

from training.config import parse_recipe
from training.run import prepare_run

out, stage, checkpointing = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
WARMUP = 5
name = f"{stage}-ckpt-{checkpointing}"
adapter = out / "adapters" / name
for path in (adapter, Path(f"{adapter}.run")):
    shutil.rmtree(path, ignore_errors=True)
parsed = parse_recipe(stage, [
    "--config", f"recipes/gpu-check/{stage}.yaml", "--model_name_or_path", str(out / "model"),
    "--data", str(out / "build"), "--output_dir", str(adapter), "--activation_checkpointing", checkpointing,
])
parsed.training.include_num_input_tokens_seen = "non_padding"
run = prepare_run(parsed)
trainer = run.trainer


class StepClock(TrainerCallback):
    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))


clock = StepClock()
trainer.add_callback(clock)
torch.cuda.reset_peak_memory_stats()
trainer.train()

(t0, n0), (t1, n1) = clock.marks[WARMUP - 1], clock.marks[-1]
tokens_per_s = (n1 - n0) / (t1 - t0)
steps = len(clock.marks) - WARMUP
seq_len = (n1 - n0) / steps / (trainer.args.per_device_train_batch_size * (2 if stage == "dpo" else 1))

config = trainer.model.get_base_model().config
n_params = sum(p.numel() for n, p in trainer.model.get_base_model().named_parameters() if "lora_" not in n)
attention = 4 * config.num_hidden_layers * seq_len * config.hidden_size  # QK^T and AV, forward, per token
flops_per_token = 2 * (2 * n_params + attention) + (2 * n_params + attention if stage == "dpo" else 0)

device = torch.cuda.get_device_name(0)
peaks = [("H100 PCIe", 756), ("H100", 989), ("H200", 989), ("GH200", 989), ("A100", 312), ("L40S", 362), ("A10G", 125)]
import os
peak = float(os.environ["GPU_PEAK_TFLOPS"]) if os.environ.get("GPU_PEAK_TFLOPS") else next((p for k, p in peaks if k in device), None)
mfu = tokens_per_s * flops_per_token / (peak * 1e12) if peak else None
result = {
    "stage": stage, "activation_checkpointing": checkpointing == "true", "device": device,
    "tokens_per_s": round(tokens_per_s), "mfu": round(mfu, 4) if mfu else None,
    "step_s": round((t1 - t0) / steps, 4), "tokens_per_step": round((n1 - n0) / steps),
    "mean_seq_len": round(seq_len), "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    "params_b": round(n_params / 1e9, 3), "batch": trainer.args.per_device_train_batch_size,
    "steps_timed": steps, "torch": torch.__version__,
}
print(json.dumps(result))
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(result) + "\n")
PY
  done
done

python - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f"{sys.argv[1]}/results.jsonl")]
print(f"\n{rows[0]['device']}, torch {rows[0]['torch']}, Llama-3.2-1B shape ({rows[0]['params_b']} B), bf16, LoRA r16 all-linear\n")
print("| stage | checkpointing | batch x seq | tokens/s | MFU | step (s) | peak memory (GiB) |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
    print(f"| {r['stage']} | {'on' if r['activation_checkpointing'] else 'off'} | {r['batch']} x {r['mean_seq_len']} "
          f"| {r['tokens_per_s']:,} | {mfu} | {r['step_s']} | {r['peak_memory_gib']} |")
sft = [r for r in rows if r["stage"] == "sft" and not r["activation_checkpointing"]]
if sft:
    verdict = "meets" if sft[0]["tokens_per_s"] >= 50_000 else "misses"
    print(f"\nSFT without checkpointing: {sft[0]['tokens_per_s']:,} tokens/s ({verdict} the 50k tokens/s target)")
PY
