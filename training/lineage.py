"""Lineage of an adapter: exactly which data, base weights, recipe and code produced it (docs/architecture.md).

Written as `lineage.json` next to the adapter and put into the tracker's run config, so a run in wandb and an
adapter on disk can each be traced back to the dataset manifests and base weights that made them.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from flywheel.files import model_weights_sha256, sha256_file, sha256_json

LINEAGE_KIND = "flywheel.adapter"
# The two files vLLM loads; their hashes identify an adapter (the registry computes the same value).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
VERSIONED_PACKAGES = ("flywheel", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "wandb")


def adapter_sha256(adapter_dir: str | Path) -> str:
    adapter_dir = Path(adapter_dir)
    return sha256_json({name: sha256_file(adapter_dir / name) for name in ADAPTER_FILES})


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit(start: str | Path | None = None) -> str | None:
    """The commit of the checkout this code runs from; None outside a git checkout (e.g. an installed wheel)."""
    cwd = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def base_model_identity(model_name_or_path: str, revision: str | None) -> dict[str, Any]:
    """Path, revision and weights hash of the base model: a local folder, or a Hub id already in the local cache."""
    local = Path(model_name_or_path)
    if local.is_dir():
        return {"path": str(local.resolve()), "revision": None, "weights_sha256": model_weights_sha256(local)}
    identity: dict[str, Any] = {"path": model_name_or_path, "revision": revision, "weights_sha256": None}
    try:
        from huggingface_hub import snapshot_download

        # Only what from_pretrained already downloaded; never a network call from here.
        snapshot = Path(snapshot_download(model_name_or_path, revision=revision, local_files_only=True))
        identity["revision"] = snapshot.name  # the snapshot folder is named by its commit hash
        identity["weights_sha256"] = model_weights_sha256(snapshot)
    except Exception:  # noqa: BLE001 - lineage records what it can; a missing hash is visible as null
        pass
    return identity


def sft_adapter_identity(sft_adapter: str | None) -> dict[str, Any] | None:
    if sft_adapter is None:
        return None
    return {"path": str(Path(sft_adapter).resolve()), "adapter_sha256": adapter_sha256(sft_adapter)}


def read_lineage(adapter_dir: str | Path) -> dict[str, Any] | None:
    path = Path(adapter_dir) / "lineage.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def final_metrics(train_metrics: dict[str, Any], log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last logged value of every metric (loss, rewards/accuracies, eval_loss, ...) plus the run summary."""
    metrics: dict[str, Any] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and key not in ("step",):
                metrics[key] = value
    metrics.update({k: v for k, v in train_metrics.items() if isinstance(v, (int, float))})
    if log_history:
        metrics["global_step"] = max(e.get("step", 0) for e in log_history)
    return metrics
