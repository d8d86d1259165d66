"""The gate as its own tracker run, linked to the training run that made the adapter.

wandb has no cross-run link that works offline (`use_artifact`/`link_artifact` need a server), so the link is
explicit: the gate run sits in the training run's wandb group, and its config names the training run's id, name
and project (from the adapter's lineage). Offline when there is no API key; `wandb sync` uploads it later.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


def _report_to(cfg: dict, training_run: dict | None) -> str:
    wanted = cfg["tracker"]["report_to"]
    if wanted != "auto":
        return wanted
    used = (training_run or {}).get("report_to") or []
    used = [used] if isinstance(used, str) else used
    return "wandb" if "wandb" in used else "none"


def summary_metrics(report: dict) -> dict[str, Any]:
    """Flat numbers per check, the way a tracker's summary table wants them."""
    out: dict[str, Any] = {"gate/passed": report["decision"] == "pass"}
    for name, check in report["checks"].items():
        out[f"gate/{name}/passed"] = bool(check["passed"])
        for field in ("base", "adapter", "diff", "value", "n", "pvalue"):
            value = check.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"gate/{name}/{field}"] = value
        if check.get("interval"):
            out[f"gate/{name}/interval_low"], out[f"gate/{name}/interval_high"] = check["interval"]
    return out


def log_gate(report: dict, cfg: dict, out: Path) -> dict | None:
    """Log the gate to the tracker; returns what the report records about the run (None when not tracked)."""
    training_run = report.get("training_run") or {}
    if _report_to(cfg, training_run) != "wandb":
        return None
    import wandb

    from training.tracking import wandb_has_credentials

    if not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"  # never prompt for a login in the middle of a gate
    project = cfg["tracker"]["project"] or training_run.get("project") or os.environ.get("WANDB_PROJECT", "flywheel")
    run_id = uuid.uuid4().hex[:12]
    run_name = f"gate-{Path(report['adapter']['path']).name}"
    wandb_dir = os.environ.get("WANDB_DIR") or str(Path(out).resolve().parent)
    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=project, id=run_id, name=run_name, job_type="gate", dir=wandb_dir,
        group=training_run.get("run_id"), tags=["gate", report["decision"]],
        config={"flywheel_gate": {k: report[k] for k in ("adapter", "base", "eval_set", "config", "seed")},
                "training_run": training_run, "report_dir": str(Path(out).resolve())},
    )
    try:
        run.summary.update(summary_metrics(report))
        run.summary["gate/reasons"] = "\n".join(report["reasons"])
        mode = os.environ.get("WANDB_MODE") or "online"
        info = {"report_to": "wandb", "project": project, "run_id": run_id, "run_name": run_name, "mode": mode,
                "url": getattr(run, "url", None) if mode != "offline" else None,
                "dir": getattr(run, "dir", None), "training_run_id": training_run.get("run_id")}
    finally:
        run.finish()
    return info
