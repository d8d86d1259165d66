"""Faults and launchers: a killed run resumes to the end; `accelerate launch` really runs two processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from .conftest import REPO, TINY_RECIPES, subprocess_env


def test_sigkill_mid_run_then_resume_to_the_end(tiny_model_dir, build_dir, tmp_path):
    out = tmp_path / "sft"
    command = [
        sys.executable, "-m", "training.sft", "--config", str(TINY_RECIPES / "sft.yaml"),
        "--model_name_or_path", str(tiny_model_dir), "--data", str(build_dir), "--output_dir", str(out),
        "--max_steps", "40", "--save_steps", "4", "--logging_steps", "1", "--per_device_train_batch_size", "2",
        "--report_to", "none",
    ]
    first_checkpoint = tmp_path / "sft.run" / "checkpoint-4" / "trainer_state.json"
    process = subprocess.Popen(command, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not first_checkpoint.exists():
        assert process.poll() is None, f"run ended before its first checkpoint:\n{process.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()  # no half-written adapter folder

    # Starting again without --resume refuses to mix two runs' checkpoints.
    refused = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = subprocess.run(command + ["--resume"], env=subprocess_env(), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "checkpoint-" in resumed.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 40
    # One continuous history: the steps logged before the kill are in the final state, each step once.
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == list(range(1, 41))
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["metrics"]["global_step"] == 40


def test_accelerate_launch_runs_two_data_parallel_processes(tiny_model_dir, build_dir, tmp_path):
    out = tmp_path / "dpo"
    env = subprocess_env()
    launched = subprocess.run(
        [sys.executable, "-m", "flywheel", "train", "dpo", str(TINY_RECIPES / "dpo.yaml"), "--num-processes", "2",
         "--model_name_or_path", str(tiny_model_dir), "--data", str(build_dir), "--output_dir", str(out),
         "--sft_adapter", "none", "--max_steps", "2", "--per_device_train_batch_size", "1", "--logging_steps", "1",
         "--report_to", "none"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-4000:]
    for rank in (0, 1):
        assert f"process {rank} of 2 (MULTI_CPU) finished 2 steps" in launched.stderr
    state = json.loads((out / "trainer_state.json").read_text())
    rows = json.loads((build_dir / "manifest.json").read_text())["examples"]["dpo"]["train"]
    # Two processes with one pair each per step: two steps cover four pairs, twice what one process would.
    assert abs(state["epoch"] - 4 / rows) < 1e-6
    assert json.loads((out / "lineage.json").read_text())["stage"] == "dpo"
