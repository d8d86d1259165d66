"""`flywheel runs compare DIR...`: the key metrics of several runs side by side, from what they saved on disk.

A DIR is an adapter folder (its `lineage.json` and `trainer_state.json`) or a run folder still holding checkpoints
(`<adapter>.run`, e.g. a killed run): the latest checkpoint's `trainer_state.json` is read then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Rows shown when any run has them, in this order; the tracker logs everything else.
KEY_METRICS = (
    "global_step",
    "epoch",
    "train_loss",
    "loss",
    "eval_loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "kl",
    "mean_token_accuracy",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "eval_mean_token_accuracy",
    "num_tokens",
    "train_runtime",
    "train_samples_per_second",
)


class RunNotFound(ValueError):
    pass


def load_run(path: str | Path) -> dict[str, Any]:
    """One run's identity and final metrics: {"name", "info": {...}, "metrics": {...}}."""
    from training.lineage import final_metrics

    path = Path(path)
    lineage_path = path / "lineage.json"
    if lineage_path.is_file():
        lineage = json.loads(lineage_path.read_text())
        state_path = path / "trainer_state.json"
        metrics = dict(lineage.get("metrics") or {})
        if not metrics and state_path.is_file():
            metrics = final_metrics({}, json.loads(state_path.read_text()).get("log_history", []))
        tracker = lineage.get("tracker") or {}
        info = {
            "stage": lineage.get("stage"),
            "base": Path(str((lineage.get("base_model") or {}).get("path"))).name,
            "data": ", ".join(Path(d["path"]).name for d in lineage.get("datasets", [])),
            "sft_adapter": Path(lineage["sft_adapter"]["path"]).name if lineage.get("sft_adapter") else "-",
            "learning_rate": (lineage.get("recipe") or {}).get("learning_rate"),
            "run_id": tracker.get("run_id"),
            "adapter_sha256": (lineage.get("adapter_sha256") or "")[:12],
            "status": "finished",
        }
        return {"name": path.name, "info": info, "metrics": metrics}

    checkpoints = sorted(path.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    if checkpoints:
        state = json.loads(checkpoints[-1].read_text())
        info = {"status": f"unfinished ({checkpoints[-1].parent.name})"}
        return {"name": path.name, "info": info, "metrics": final_metrics({}, state.get("log_history", []))}
    raise RunNotFound(f"{path}: neither an adapter folder (lineage.json) nor a run folder with checkpoints")


def comparison_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    rows: list[tuple[str, list[str]]] = []
    info_keys: list[str] = []
    for run in runs:
        info_keys += [k for k in run["info"] if k not in info_keys]
    for key in info_keys:
        rows.append((key, [_format(run["info"].get(key)) for run in runs]))
    for key in KEY_METRICS:
        if any(key in run["metrics"] for run in runs):
            rows.append((key, [_format(run["metrics"].get(key)) for run in runs]))
    return rows


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_comparison(paths: list[str | Path]) -> int:
    from rich.console import Console
    from rich.table import Table

    runs = [load_run(p) for p in paths]
    table = Table(title="runs")
    table.add_column("")
    for run in runs:
        table.add_column(run["name"], justify="right")
    for key, values in comparison_rows(runs):
        table.add_row(key, *values)
    Console().print(table)
    return 0
