"""scripts/vllm_check.sh end to end, with `vllm` on PATH replaced by the contract-following fake server.

The real run needs a GPU and vLLM; this proves the script's own logic (reading the manifest's command line,
waiting for the server, serve-sync, runtime load, duplicate-name 400, smoke requests, unload)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from serving.registry import promote

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_check_script_against_fake_vllm(bench, tmp_path):
    assert shutil.which("curl"), "scripts/vllm_check.sh needs curl"
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    promote(*bench.gated_adapter("a2", seed=2), "support", registry=bench.registry)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m tests.serving.fake_vllm \"$@\"\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PORT": str(_free_port()), "READY_TIMEOUT": "60", "LOG": str(tmp_path / "vllm.log")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "vllm_check.sh"), str(bench.registry)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "support: support-v2 already loaded" in out  # preloaded by the manifest's --lora-modules
    assert "still loaded for rollback: support-v1" in out
    assert "duplicate name refused with 400" in out and "has already been loaded" in out
    assert out.rstrip().endswith("vllm_check: OK")
