"""Experiment trackers: wandb by default, offline when there is no API key; tensorboard and mlflow on request.

transformers' own callbacks log the metrics. What this module adds: a tracker run that never hangs or prompts, a
run id chosen before training (so `lineage.json` names it, and `--resume` continues the same wandb run), and the
lineage in the run's config.
"""

from __future__ import annotations

import json
import netrc
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from transformers import TrainerCallback

from flywheel.files import write_json_atomic

TRACKER_STATE = "tracker.json"


@dataclass
class TrackerInfo:
    report_to: list[str]
    project: str | None
    run_id: str
    run_name: str
    url: str | None = None
    mode: str | None = None  # wandb: "online" or "offline"
    wandb_dir: str | None = None

    def lineage(self) -> dict[str, Any]:
        return {
            "report_to": self.report_to,
            "project": self.project,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "url": self.url,
        }


def normalise_report_to(report_to: Any) -> list[str]:
    if report_to in (None, "none", ["none"]):
        return []
    if isinstance(report_to, str):
        report_to = [report_to]
    return [r for r in report_to if r != "none"]


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return bool(netrc.netrc().authenticators(host))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def prepare_trackers(report_to: list[str], run_dir: Path, run_name: str, resume: bool) -> TrackerInfo:
    """Set the environment the tracker callbacks read, before the Trainer creates them. Main process only."""
    if "mlflow" in report_to:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise RuntimeError("report_to includes mlflow but it is not installed: pip install 'flywheel[mlflow]'") from None
    state_path = run_dir / TRACKER_STATE
    previous = json.loads(state_path.read_text()) if resume and state_path.is_file() else {}
    # A resumed run keeps its id, so wandb appends to the same run instead of starting a second one.
    run_id = previous.get("run_id") or uuid.uuid4().hex[:12]
    project = mode = wandb_dir = None
    if "wandb" in report_to:
        project = os.environ.setdefault("WANDB_PROJECT", "flywheel")
        if not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
            # Never prompt for a login in the middle of a launch: log locally, `wandb sync` uploads later.
            os.environ["WANDB_MODE"] = "offline"
        mode = os.environ.get("WANDB_MODE") or "online"
        # The run's own folder unless the user chose one; not via the environment, which would stick to the first
        # run of a process that trains several (the demo, tests).
        wandb_dir = os.environ.get("WANDB_DIR") or str(run_dir)
        os.environ.setdefault("WANDB_SILENT", "true")
    elif "mlflow" in report_to:
        project = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    info = TrackerInfo(report_to=report_to, project=project, run_id=run_id, run_name=run_name, mode=mode,
                       wandb_dir=wandb_dir)
    write_json_atomic(state_path, asdict(info))
    return info


def start_wandb(info: TrackerInfo, lineage: dict[str, Any]) -> None:
    """Open the wandb run ourselves, with our id and the lineage as config; transformers' callback then uses it."""
    import wandb

    run = wandb.init(
        project=info.project,
        id=info.run_id,
        name=info.run_name,
        resume="allow",
        dir=info.wandb_dir,
        config={"flywheel_lineage": lineage},
    )
    info.url = getattr(run, "url", None) if info.mode != "offline" else None


def finish_trackers(info: TrackerInfo, summary: dict[str, Any]) -> None:
    if "wandb" in info.report_to:
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(summary)
            wandb.finish()


class LineageToTrackers(TrainerCallback):
    """Puts the lineage into tensorboard and mlflow once their callbacks have opened their runs."""

    def __init__(self, trainer, info: TrackerInfo, lineage: dict[str, Any]):
        self.trainer = trainer
        self.info = info
        self.lineage = lineage

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        text = json.dumps(self.lineage, indent=2, default=str)
        for callback in self.trainer.callback_handler.callbacks:
            name = type(callback).__name__
            if name == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
                callback.tb_writer.add_text("flywheel/lineage", f"```\n{text}\n```", global_step=state.global_step)
                callback.tb_writer.flush()
            elif name == "MLflowCallback":
                import mlflow

                if mlflow.active_run() is not None:
                    mlflow.log_dict(self.lineage, "flywheel_lineage.json")
                    self.info.run_id = mlflow.active_run().info.run_id
                    self.lineage["tracker"] = self.info.lineage()  # lineage.json names the mlflow run
