"""One training run, top to bottom: recipe -> data -> model -> TRL trainer -> train -> adapter folder.

The shape is TRL's `trl/scripts/dpo.py`; what Flywheel adds sits in plain sight:
- inputs are build folders checked against their manifests (`training.data`);
- DPO/KTO after SFT continue the SFT adapter, with a frozen copy of it as the reference model;
- checkpoints and tracker files go to a run folder beside the adapter, and the adapter folder (weights, tokenizer,
  resolved recipe, lineage) appears in one rename once training has finished;
- the lineage goes into `lineage.json` and the tracker's run config.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.files import atomic_dir, write_json_atomic, write_text_atomic
from training.config import ParsedRecipe, RecipeError
from training.data import load_training_data
from training.lineage import (
    LINEAGE_KIND,
    adapter_sha256,
    base_model_identity,
    final_metrics,
    git_commit,
    library_versions,
    read_lineage,
    sft_adapter_identity,
)
from training.tracking import (
    LineageToTrackers,
    TrackerInfo,
    finish_trackers,
    normalise_report_to,
    prepare_trackers,
    start_wandb,
)

TRAINER_CLASSES = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "kto": "KTOTrainer"}
TRAINED_ADAPTER = "default"  # PEFT's name for the adapter being trained; TRL names the frozen reference copy "ref"


@dataclass
class PreparedRun:
    """Everything a run needs, built but not yet trained (tests inspect the trainer before the first step)."""

    parsed: ParsedRecipe
    trainer: Any
    output_dir: Path
    run_dir: Path
    resume_from: str | None
    lineage: dict[str, Any]
    tracker: TrackerInfo | None  # only on the main process

    @property
    def is_main(self) -> bool:
        return self.trainer.accelerator.is_main_process


def prepare_run(parsed: ParsedRecipe) -> PreparedRun:
    import trl

    stage, run_args, training_args, model_args = parsed.stage, parsed.flywheel, parsed.training, parsed.model
    _check_recipe(parsed)
    _check_chat_template(parsed)

    # The adapter folder is written once, at the end; everything written while training goes to the run folder.
    output_dir = Path(training_args.output_dir)
    run_dir = Path(run_args.checkpoint_dir or f"{output_dir}.run")
    training_args.output_dir = str(run_dir)
    if training_args.run_name is None:
        training_args.run_name = f"{stage}-{output_dir.name}"
    resume_from = _checkpoint_to_resume(run_dir, run_args.resume)
    is_main = training_args.process_index == 0

    report_to = normalise_report_to(training_args.report_to)
    training_args.report_to = report_to or "none"
    tracker = prepare_trackers(report_to, run_dir, training_args.run_name, resume=resume_from is not None) if is_main else None

    evaluating = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    train_dataset, eval_dataset, builds = load_training_data(
        run_args.data, stage, seed=training_args.seed, with_test=evaluating and run_args.use_test_split
    )
    if evaluating and eval_dataset is None:
        raise RecipeError(f"eval_strategy is {training_args.eval_strategy!r} but no build folder has a test split")

    model, peft_config, tokenizer, quantization_config = _load_model(parsed)
    base_identity = base_model_identity(model_args.model_name_or_path, model_args.model_revision) if is_main else {}
    if is_main:
        _check_sft_adapter_base(run_args.sft_adapter, base_identity)

    lineage = {
        "kind": LINEAGE_KIND,
        "stage": stage,
        "base_model": base_identity,
        "sft_adapter": sft_adapter_identity(run_args.sft_adapter),
        "datasets": [build.lineage(stage) for build in builds],
        "recipe": parsed.resolved,
        "seed": training_args.seed,
        "git_commit": git_commit(),
        "versions": library_versions(),
        "tracker": tracker.lineage() if tracker else None,
        "metrics": None,
        "adapter_sha256": None,
    }

    trainer_class = getattr(trl, TRAINER_CLASSES[stage])
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset if evaluating else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        quantization_config=quantization_config,
    )
    if tracker is not None:
        trainer.add_callback(LineageToTrackers(trainer, tracker, lineage))
    return PreparedRun(parsed, trainer, output_dir, run_dir, resume_from, lineage, tracker)


def run_training(parsed: ParsedRecipe) -> Path:
    """Train one stage from a parsed recipe; returns the adapter folder."""
    started = time.monotonic()
    run = prepare_run(parsed)
    trainer = run.trainer
    if run.is_main:
        _announce(run)
        if run.resume_from:
            _print(f"[training] resuming from {run.resume_from}")
        if "wandb" in run.tracker.report_to:
            start_wandb(run.tracker, run.lineage)
            run.lineage["tracker"] = run.tracker.lineage()

    result = trainer.train(resume_from_checkpoint=run.resume_from)
    state = trainer.accelerator.state
    _print(f"[training] process {state.process_index} of {state.num_processes} ({state.distributed_type.value}) "
           f"finished {trainer.state.global_step} steps")

    save_adapter(run, result.metrics)
    if run.is_main:
        finish_trackers(run.tracker, {"adapter_sha256": run.lineage["adapter_sha256"], "adapter_dir": str(run.output_dir)})
        if not run.parsed.flywheel.keep_checkpoints:
            for checkpoint in run.run_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint, ignore_errors=True)
        _print(f"[training] {run.parsed.stage} adapter written to {run.output_dir} in {time.monotonic() - started:.0f} s")
    # Finishes transformers' trackers and, under accelerate, the process group: last, as in TRL's scripts.
    trainer.end()
    return run.output_dir


def save_adapter(run: PreparedRun, train_metrics: dict[str, Any]) -> None:
    """Write the trained adapter only (not TRL's `ref` copy), tokenizer, recipe and lineage, in one rename."""
    trainer = run.trainer
    state_dict = _gathered_state_dict(trainer)  # a collective under FSDP/DeepSpeed: every process calls it
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        with atomic_dir(run.output_dir) as tmp:
            model.save_pretrained(tmp, selected_adapters=[TRAINED_ADAPTER], state_dict=state_dict)
            trainer.processing_class.save_pretrained(tmp)
            write_text_atomic(tmp / "recipe.yaml", run.parsed.resolved_yaml())
            trainer.state.save_to_json(str(tmp / "trainer_state.json"))
            run.lineage["metrics"] = final_metrics(train_metrics, trainer.state.log_history)
            run.lineage["adapter_sha256"] = adapter_sha256(tmp)
            write_json_atomic(tmp / "lineage.json", run.lineage)
            _make_readable(tmp)  # temp files are private by default; a serving process may run as another user
    trainer.accelerator.wait_for_everyone()


def _make_readable(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _gathered_state_dict(trainer):
    if trainer.is_fsdp_enabled:
        return trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_deepspeed_enabled:
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None  # the model holds its own weights: save_pretrained reads them


def _load_model(parsed: ParsedRecipe):
    """(model or model path, peft_config, tokenizer or None, quantization_config): what the TRL trainer takes."""
    from trl import get_peft_config, get_quantization_config
    from trl.trainer.utils import create_model_from_path

    run_args, training_args, model_args = parsed.flywheel, parsed.training, parsed.model
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    quantization_config = get_quantization_config(model_args)

    if run_args.sft_adapter is None:
        # A new LoRA on the plain base; for DPO/KTO, TRL's reference is this model with the adapter disabled.
        training_args.model_init_kwargs = model_init_kwargs  # TRL loads the model from its path with these
        return model_args.model_name_or_path, get_peft_config(model_args), None, quantization_config

    from peft import PeftModel
    from transformers import AutoTokenizer

    # Continue the SFT adapter. TRL copies it into a frozen adapter named "ref", which is the reference model: the
    # SFT policy, not the raw base, and no second copy of the base weights in memory.
    kwargs = dict(model_init_kwargs)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if training_args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None  # as TRL does: "auto" fails under data parallel
    base = create_model_from_path(model_args.model_name_or_path, **kwargs)
    training_args.model_init_kwargs = None  # the model is built here; TRL would warn that it ignores them
    model = PeftModel.from_pretrained(base, run_args.sft_adapter, is_trainable=True)
    tokenizer = AutoTokenizer.from_pretrained(run_args.sft_adapter)
    return model, None, tokenizer, None


def _check_recipe(parsed: ParsedRecipe) -> None:
    where = parsed.recipe_path or "recipe"
    if not parsed.model.model_name_or_path:
        raise RecipeError(f"{where}: model_name_or_path is not set")
    if not parsed.training.output_dir:
        raise RecipeError(f"{where}: output_dir is not set")
    if parsed.flywheel.sft_adapter is not None:
        if parsed.stage == "sft":
            raise RecipeError(f"{where}: sft_adapter is for DPO/KTO runs that continue an SFT adapter, not for SFT")
        if not (Path(parsed.flywheel.sft_adapter) / "adapter_config.json").is_file():
            raise RecipeError(f"{where}: sft_adapter {parsed.flywheel.sft_adapter}: no adapter_config.json there")
    elif not parsed.model.use_peft:
        raise RecipeError(f"{where}: use_peft is false; Flywheel trains LoRA adapters (set use_peft: true)")
    if parsed.model.lora_modules_to_save:
        raise RecipeError(f"{where}: lora_modules_to_save makes an adapter vLLM refuses; leave it unset")
    if parsed.model.use_dora:
        raise RecipeError(f"{where}: use_dora makes an adapter vLLM refuses; leave it false")


def _check_chat_template(parsed: ParsedRecipe) -> None:
    """A training template (`chat_template_path`, a .jinja file) must render like the model's own template."""
    from training.chat_templates import TemplateMismatch, check_training_template

    path = getattr(parsed.training, "chat_template_path", None)
    if not path or not str(path).endswith((".jinja", ".j2")):
        return
    if not Path(path).is_file():
        raise RecipeError(f"{parsed.recipe_path or 'recipe'}: chat_template_path {path}: no such file")
    try:
        check_training_template(parsed.model.model_name_or_path, path)
    except TemplateMismatch as exc:
        raise RecipeError(f"{parsed.recipe_path or 'recipe'}: {exc}") from None


def _check_sft_adapter_base(sft_adapter: str | None, base_identity: dict[str, Any]) -> None:
    """An SFT adapter trained on other base weights loads without any error; its lineage lets us refuse it."""
    if sft_adapter is None:
        return
    sft_lineage = read_lineage(sft_adapter) or {}
    theirs = (sft_lineage.get("base_model") or {}).get("weights_sha256")
    ours = base_identity.get("weights_sha256")
    if theirs and ours and theirs != ours:
        raise RecipeError(
            f"sft_adapter {sft_adapter} was trained on base weights {theirs[:12]}…, but model_name_or_path "
            f"{base_identity.get('path')} has weights {ours[:12]}…"
        )


def _checkpoint_to_resume(run_dir: Path, resume: bool) -> str | None:
    """The last complete checkpoint: a kill while saving leaves a checkpoint folder without its trainer state."""
    checkpoints = sorted(
        (p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    complete = [p for p in checkpoints if (p / "trainer_state.json").is_file()]
    last = complete[-1] if complete else None
    if resume:
        if last is None:
            _print(f"[training] --resume: no complete checkpoint in {run_dir}; starting from the first step")
            return None
        for partial in checkpoints:
            if partial not in complete and int(partial.name.split("-")[-1]) > int(last.name.split("-")[-1]):
                _print(f"[training] --resume: {partial.name} was not finished when the run stopped; ignoring it")
                shutil.rmtree(partial, ignore_errors=True)
        return str(last)
    if checkpoints:
        raise RecipeError(
            f"{run_dir} holds checkpoints of an earlier run ({checkpoints[-1].name}): pass --resume to continue it, "
            f"or delete the folder to start over"
        )
    return None


def _announce(run: PreparedRun) -> None:
    trainer, lineage = run.trainer, run.lineage
    if lineage["sft_adapter"]:
        reference = "frozen copy of the SFT adapter"
    elif run.parsed.stage == "sft":
        reference = "none (SFT)"
    else:
        reference = "base model, adapter disabled"
    rows = [
        ("stage", run.parsed.stage),
        ("base", lineage["base_model"].get("path")),
        ("data", ", ".join(f"{d['path']} x{d['weight']:g}" for d in lineage["datasets"])),
        ("train rows", str(len(trainer.train_dataset))),
        ("reference", reference),
        ("adapter", f"{run.output_dir} (checkpoints in {run.run_dir})"),
        ("tracking", ", ".join(run.tracker.report_to) or "none"),
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_header=False, box=None)
        for key, value in rows:
            table.add_row(f"[bold]{key}[/bold]", value)
        Console(stderr=True).print(table)
    except ImportError:
        for key, value in rows:
            _print(f"{key:>12}: {value}")


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main_for_stage(stage: str, argv: list[str] | None = None) -> int:
    """`python -m training.<stage> --config RECIPE [--key value ...]`: parse, train, save; exit code."""
    from training.config import parse_recipe
    from training.data import BuildError

    try:
        parsed = parse_recipe(stage, sys.argv[1:] if argv is None else argv)
        run_training(parsed)
    except (RecipeError, BuildError) as exc:
        _print(f"error: {exc}")
        return 2
    return 0
