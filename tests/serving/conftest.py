"""Real artefacts for the registry tests: a PEFT LoRA saved on the tiny test model, eval sets, gate reports.

The adapter is a real `get_peft_model(...).save_pretrained(...)` output on the session's tiny model; variants are
made by perturbing its saved weights (no model load per test). Eval sets and gate reports are written field by
field per docs/architecture.md, the contract `flywheel eval gate` writes to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flywheel.files import file_hashes, model_weights_sha256, sha256_file, sha256_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@pytest.fixture(scope="session")
def saved_lora(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA (r=4 on q/v, nonzero B so it changes the output) saved the way training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("lora")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], bias="none",
                        task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (Path(tiny_model_dir) / name).is_file():
            shutil.copyfile(Path(tiny_model_dir) / name, out / name)
    return out


class Workbench:
    """Makes adapters, eval sets and gate reports under one test's tmp_path."""

    def __init__(self, root: Path, saved_lora: Path, base_dir: Path):
        self.root = root
        self.saved_lora = saved_lora
        self.base_dir = Path(base_dir)
        self.base_sha = model_weights_sha256(base_dir)
        self.registry = root / "registry"

    def adapter(self, name: str, seed: int = 0, base_sha: str | None = None, config: dict | None = None) -> Path:
        """A copy of the saved LoRA; `seed` > 0 perturbs its weights so each seed is a different adapter."""
        out = self.root / "adapters" / name
        shutil.copytree(self.saved_lora, out)
        if seed:
            import torch
            from safetensors.torch import load_file, save_file

            gen = torch.Generator().manual_seed(seed)
            weights = load_file(out / "adapter_model.safetensors")
            weights = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in weights.items()}
            save_file(weights, out / "adapter_model.safetensors", metadata={"format": "pt"})
        if config:
            cfg = json.loads((out / "adapter_config.json").read_text())
            cfg.update(config)
            (out / "adapter_config.json").write_text(json.dumps(cfg))
        lineage = {
            "kind": "flywheel.adapter", "stage": "sft",
            "base_model": {"path": str(self.base_dir), "revision": None, "weights_sha256": base_sha or self.base_sha},
            "sft_adapter": None, "datasets": [], "recipe": {}, "seed": seed, "git_commit": None, "versions": {},
            "tracker": {}, "metrics": {},
            "adapter_sha256": sha256_json({n: sha256_file(out / n)
                                           for n in ("adapter_config.json", "adapter_model.safetensors")}),
        }
        (out / "lineage.json").write_text(json.dumps(lineage, indent=2))
        return out

    def eval_set(self, name: str, created: str) -> Path:
        out = self.root / "eval_sets" / name
        out.mkdir(parents=True)
        (out / "pairs.jsonl").write_text(json.dumps({"id": f"{name}-1", "prompt": "hi"}) + "\n")
        files = {"pairs.jsonl": sha256_file(out / "pairs.jsonl")}
        meta = {"kind": "flywheel.eval_set", "format_version": 1, "version": f"{created[:10]}-{name}",
                "sha256": sha256_json(files), "created": created, "source_build": {}, "files": files, "counts": {}}
        (out / "eval_set.json").write_text(json.dumps(meta, indent=2))
        return out

    def gate(self, name: str, adapter: Path, eval_set: Path, decision: str = "pass",
             base_sha: str | None = None) -> Path:
        out = self.root / "gates" / name
        out.mkdir(parents=True)
        meta = json.loads((eval_set / "eval_set.json").read_text())
        hashes = file_hashes(adapter, "adapter_*")
        report = {
            "kind": "flywheel.gate_report",
            "decision": decision,
            "reasons": [] if decision == "pass" else ["pref_accuracy: adapter below base beyond margin"],
            "checks": {"pref_accuracy": {"passed": decision == "pass", "base": 0.5, "adapter": 0.6, "diff": 0.1,
                                         "interval": [0.02, 0.18], "n": 40, "method": "paired bootstrap"}},
            "adapter": {"path": str(adapter), "files": hashes,
                        "adapter_sha256": sha256_json({n: hashes[n] for n in
                                                       ("adapter_config.json", "adapter_model.safetensors")})},
            "base": {"path": str(self.base_dir), "weights_sha256": base_sha or self.base_sha},
            "eval_set": {"path": str(eval_set), "sha256": meta["sha256"], "version": meta["version"]},
            "config": {}, "versions": {}, "seed": 0,
        }
        (out / "gate_report.json").write_text(json.dumps(report, indent=2))
        return out

    def gated_adapter(self, name: str, seed: int, created: str = "2026-11-01T00:00:00+00:00",
                      eval_set: Path | None = None) -> tuple[Path, Path]:
        adapter = self.adapter(name, seed=seed)
        eval_set = eval_set or self.eval_set(f"es-{name}", created)
        return adapter, self.gate(f"gate-{name}", adapter, eval_set)


@pytest.fixture
def bench(tmp_path, saved_lora, tiny_model_dir) -> Workbench:
    return Workbench(tmp_path, saved_lora, tiny_model_dir)
