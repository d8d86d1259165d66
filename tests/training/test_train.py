"""Real TRL trainers on the tiny model: the adapter folder contract, lineage, trackers, the reference model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors import safe_open

from flywheel.files import model_weights_sha256, sha256_file
from training.api import train
from training.config import parse_recipe
from training.lineage import adapter_sha256
from training.run import prepare_run

from .conftest import FAST, REPO, TINY_RECIPES, subprocess_env


def overrides(tiny_model_dir, build_dir, out, **more):
    return {**FAST, "model_name_or_path": str(tiny_model_dir), "data": str(build_dir), "output_dir": str(out), **more}


def test_sft_adapter_folder_lineage_and_trackers(tiny_model_dir, build_dir, tmp_path, monkeypatch):
    out = tmp_path / "sft"
    adapter = train("sft", TINY_RECIPES / "sft.yaml",
                    overrides(tiny_model_dir, build_dir, out, report_to=["wandb", "tensorboard"]))
    assert adapter == out

    files = {p.name for p in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "recipe.yaml", "lineage.json"} <= files
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["bias"] == "none" and not config["modules_to_save"] and config["r"] == 16
    with safe_open(adapter / "adapter_model.safetensors", "pt") as weights:
        assert weights.keys() and all("lora_" in k for k in weights.keys())

    lineage = json.loads((adapter / "lineage.json").read_text())
    assert lineage["kind"] == "flywheel.adapter" and lineage["stage"] == "sft" and lineage["sft_adapter"] is None
    assert lineage["base_model"]["weights_sha256"] == model_weights_sha256(tiny_model_dir)
    assert lineage["datasets"] == [{
        "path": str(build_dir), "manifest_sha256": sha256_file(build_dir / "manifest.json"), "weight": 1.0,
        "kind": "sft", "examples": json.loads((build_dir / "manifest.json").read_text())["examples"]["sft"],
    }]
    assert lineage["adapter_sha256"] == adapter_sha256(adapter)
    assert lineage["git_commit"] and lineage["versions"]["trl"] and lineage["seed"] == 0
    assert lineage["metrics"]["global_step"] == FAST["max_steps"] and "train_loss" in lineage["metrics"]
    assert lineage["recipe"] == yaml.safe_load((adapter / "recipe.yaml").read_text())
    assert lineage["recipe"]["max_steps"] == FAST["max_steps"] and lineage["recipe"]["lora_r"] == 16

    # The wandb offline run holds the metrics and the lineage; tensorboard has its event file.
    run_dir = tmp_path / "sft.run"
    tracker = lineage["tracker"]
    assert tracker["report_to"] == ["wandb", "tensorboard"] and tracker["run_id"]
    (wandb_file,) = (run_dir / "wandb").glob(f"offline-run-*-{tracker['run_id']}/run-{tracker['run_id']}.wandb")
    # wandb 0.31 keeps an offline run in one binary log (read by its Go core); its JSON values are stored verbatim.
    record = wandb_file.read_bytes()
    for expected in ("flywheel_lineage", lineage["datasets"][0]["manifest_sha256"], lineage["base_model"]["weights_sha256"],
                     "train/loss", lineage["adapter_sha256"]):
        assert expected.encode() in record, expected
    assert list(run_dir.glob("runs/*/events.out.tfevents.*"))
    assert not list(run_dir.glob("checkpoint-*"))  # deleted once the adapter is written


def completion_logps(model, batch):
    """Summed log-probs of the completion tokens, computed by hand (not by TRL)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    logps = logps.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (logps * batch["completion_mask"][:, 1:]).sum(-1)


def reference_and_policy(trainer):
    model = trainer.model
    model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        ref = torch.cat(trainer.compute_ref_log_probs(model, batch))  # what TRL uses as the reference
        policy = completion_logps(model, batch)
        with model.disable_adapter():
            base = completion_logps(model, batch)
    return ref, policy, base


def test_dpo_after_sft_reference_is_the_sft_model(tiny_model_dir, build_dir, sft_adapter, tmp_path):
    parsed = parse_recipe("dpo", ["--config", str(TINY_RECIPES / "dpo.yaml")],
                          overrides(tiny_model_dir, build_dir, tmp_path / "dpo", sft_adapter=str(sft_adapter)))
    run = prepare_run(parsed)
    assert set(run.trainer.model.peft_config) == {"default", "ref"}
    ref, policy, base = reference_and_policy(run.trainer)
    # Before the first step: the reference is the SFT model, and the SFT model is not the base.
    torch.testing.assert_close(ref, policy, rtol=1e-4, atol=1e-4)
    assert (ref - base).abs().max() > 1e-2


def test_dpo_from_base_reference_is_the_base(tiny_model_dir, build_dir, tmp_path):
    parsed = parse_recipe("dpo", ["--config", str(TINY_RECIPES / "dpo.yaml")],
                          overrides(tiny_model_dir, build_dir, tmp_path / "dpo", sft_adapter=None))
    run = prepare_run(parsed)
    assert set(run.trainer.model.peft_config) == {"default"}  # no second copy of anything
    ref, policy, base = reference_and_policy(run.trainer)
    torch.testing.assert_close(ref, base, rtol=1e-4, atol=1e-4)


def test_dpo_after_sft_trains_and_saves_only_the_trained_adapter(tiny_model_dir, build_dir, sft_adapter, tmp_path):
    out = train("dpo", TINY_RECIPES / "dpo.yaml",
                overrides(tiny_model_dir, build_dir, tmp_path / "dpo", sft_adapter=str(sft_adapter), report_to="wandb"))
    assert not (out / "ref").exists()
    lineage = json.loads((out / "lineage.json").read_text())
    # Each run of a process that trains several keeps its wandb files in its own run folder.
    assert list((tmp_path / "dpo.run" / "wandb").glob(f"offline-run-*-{lineage['tracker']['run_id']}"))
    assert lineage["sft_adapter"] == {"path": str(sft_adapter.resolve()), "adapter_sha256": adapter_sha256(sft_adapter)}
    assert "rewards/margins" in lineage["metrics"]
    # The continued adapter moved away from the SFT adapter it started from.
    assert adapter_sha256(out) != adapter_sha256(sft_adapter)


def test_kto_from_base(tiny_model_dir, build_dir, tmp_path):
    out = train("kto", TINY_RECIPES / "kto.yaml", overrides(tiny_model_dir, build_dir, tmp_path / "kto"))
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["stage"] == "kto" and lineage["datasets"][0]["kind"] == "kto" and "kl" in lineage["metrics"]


def test_cli_runs_compare_and_dry_run(sft_adapter, tmp_path):
    from flywheel.cli import main

    env = subprocess_env()
    shown = subprocess.run([sys.executable, "-m", "flywheel", "runs", "compare", str(sft_adapter), str(sft_adapter)],
                           capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "train_loss" in shown and "stage" in shown and shown.count("sft") >= 2
    assert main(["runs", "compare", str(tmp_path)]) == 2  # neither an adapter nor a run folder

    dry = subprocess.run([sys.executable, "-m", "flywheel", "train", "dpo", "recipes/tiny/dpo.yaml", "--num-processes",
                          "2", "--learning_rate", "1e-4", "--resume", "--dry-run"], capture_output=True, text=True,
                         env=env, cwd=REPO, check=True).stdout
    assert "accelerate.commands.launch --multi_gpu --num_processes 2 -m training.dpo" in dry
    assert dry.strip().endswith("--config recipes/tiny/dpo.yaml --learning_rate 1e-4 --resume")
    named = subprocess.run([sys.executable, "-m", "flywheel", "train", "sft", "recipes/tiny/sft.yaml", "--dry-run",
                            "--accelerate-config", "cpu"], capture_output=True, text=True, env=env, cwd=REPO,
                           check=True).stdout
    assert f"--config_file {REPO}/recipes/accelerate_configs/cpu.yaml -m training.sft" in named


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path):
    from training.tracking import prepare_trackers

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    info = prepare_trackers(["wandb"], tmp_path / "run", "r", resume=False)
    import os

    assert os.environ["WANDB_MODE"] == "offline" and info.mode == "offline" and info.project == "flywheel"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    assert prepare_trackers(["wandb"], tmp_path / "run2", "r", resume=False).mode == "online"


def test_kto_after_sft_reference_is_a_frozen_copy_of_the_sft_adapter(tiny_model_dir, build_dir, sft_adapter, tmp_path):
    parsed = parse_recipe("kto", ["--config", str(TINY_RECIPES / "kto.yaml")],
                          overrides(tiny_model_dir, build_dir, tmp_path / "kto", sft_adapter=str(sft_adapter)))
    model = prepare_run(parsed).trainer.model
    assert set(model.peft_config) == {"default", "ref"}
    params = dict(model.named_parameters())
    lora = [name for name in params if ".default." in name]
    assert lora
    for name in lora:
        ref = params[name.replace(".default.", ".ref.")]
        assert params[name].requires_grad and not ref.requires_grad
        torch.testing.assert_close(params[name], ref)


def test_dpo_with_precomputed_reference_log_probs(tiny_model_dir, build_dir, sft_adapter, tmp_path):
    parsed = parse_recipe("dpo", ["--config", str(TINY_RECIPES / "dpo.yaml")],
                          overrides(tiny_model_dir, build_dir, tmp_path / "dpo", sft_adapter=str(sft_adapter),
                                    precompute_ref_log_probs=True))
    trainer = prepare_run(parsed).trainer
    # Computed once before the first step, from the frozen SFT adapter: equal to the SFT policy's own log-probs.
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        policy = completion_logps(trainer.model, batch)
    precomputed = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(precomputed, policy, rtol=1e-4, atol=1e-4)
    trainer.train()
    assert trainer.state.global_step == FAST["max_steps"]
