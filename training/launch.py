"""`flywheel train`: the `accelerate launch -m training.<stage> --config RECIPE ...` command, built and run.

Nothing here trains; it only spells the launch command the way a user would type it, so that what `flywheel train`
runs can be copied and run by hand (`--dry-run` prints it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
ACCELERATE_CONFIGS_DIR = RECIPES_DIR / "accelerate_configs"


def resolve_accelerate_config(name_or_file: str) -> Path:
    """A file path, or the name of one of recipes/accelerate_configs/*.yaml (e.g. `multi_gpu`, `fsdp`, `cpu`)."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    named = ACCELERATE_CONFIGS_DIR / f"{name_or_file}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in ACCELERATE_CONFIGS_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"accelerate config {name_or_file!r}: not a file, nor one of {', '.join(known)} in {ACCELERATE_CONFIGS_DIR}"
    )


def launch_command(
    stage: str,
    recipe: str | os.PathLike,
    overrides: list[str] | None = None,
    accelerate_config: str | None = None,
    num_processes: int | None = None,
    resume: bool = False,
    environ: dict[str, str] | None = None,
) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", str(resolve_accelerate_config(accelerate_config))]
    environ = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" not in environ:
        # accelerate otherwise sets OMP_NUM_THREADS=1 in the training process: one core on a CPU machine.
        threads = max(1, (os.cpu_count() or 1) // max(1, num_processes or 1))
        command += ["--num_cpu_threads_per_process", str(threads)]
    elif num_processes and num_processes > 1:
        # Data parallel without a config file: DDP on GPUs, or gloo on the CPU when the recipe sets use_cpu
        # (accelerate's MULTI_CPU mode would silently run a single process without mpirun).
        command += ["--multi_gpu"]
    if num_processes:
        command += ["--num_processes", str(num_processes)]
    command += ["-m", f"training.{stage}", "--config", str(recipe)]
    command += list(overrides or [])
    if resume:
        command += ["--resume"]
    return command


def launch(command: list[str]) -> int:
    env = dict(os.environ)
    # The launched module must import this checkout's packages even when flywheel is not pip-installed.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.call(command, env=env)
