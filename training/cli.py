"""`flywheel train` and `flywheel runs`: thin layers over training.launch and training.compare."""

from __future__ import annotations

import argparse
import sys

LAUNCH_HELP = """\
examples:
  flywheel train sft recipes/tiny/sft.yaml --data out/build --output_dir out/sft
  flywheel train dpo recipes/tiny/dpo.yaml --sft_adapter out/sft --output_dir out/dpo
  flywheel train dpo recipes/llama-3.1-8b-instruct/dpo/lora.yaml --accelerate-config multi_gpu --num-processes 8

Any recipe key can follow the recipe as --key value. The run is `accelerate launch -m training.<stage>`;
--dry-run prints that command.
"""


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a LoRA adapter (SFT, DPO or KTO) from a recipe, launched with accelerate",
        description="Train a LoRA adapter from a YAML recipe; `--key value` pairs after the recipe override it.",
        epilog=LAUNCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("stage", choices=["sft", "dpo", "kto"])
    train.add_argument("recipe", help="recipe YAML, e.g. recipes/tiny/sft.yaml")
    _add_launch_options(train)
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--key value pairs overriding the recipe")
    train.set_defaults(func=_train)

    runs = subparsers.add_parser("runs", help="look at finished or interrupted training runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    compare = runs_sub.add_parser("compare", help="key metrics of several runs side by side (adapter or run folders)")
    compare.add_argument("dirs", nargs="+", metavar="DIR")
    compare.set_defaults(func=_compare)


def _add_launch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accelerate-config",
        metavar="NAME|FILE",
        help="accelerate config: a file or a name in recipes/accelerate_configs (single_gpu, multi_gpu, fsdp, "
        "deepspeed_zero3, cpu)",
    )
    parser.add_argument("--num-processes", type=int, metavar="N", help="processes (GPUs) to launch")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this run")
    parser.add_argument("--dry-run", action="store_true", help="print the launch command and exit")


def _train(args) -> int:
    from training.launch import launch, launch_command

    # Launcher options may also come after the recipe, among the overrides: take them out of there.
    late = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_launch_options(late)
    late_args, overrides = late.parse_known_args(args.overrides)
    for name in ("accelerate_config", "num_processes"):
        if getattr(late_args, name) is not None:
            setattr(args, name, getattr(late_args, name))
    for name in ("resume", "dry_run"):
        setattr(args, name, getattr(args, name) or getattr(late_args, name))
    try:
        command = launch_command(
            args.stage,
            args.recipe,
            overrides,
            accelerate_config=args.accelerate_config,
            num_processes=args.num_processes,
            resume=args.resume,
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(" ".join(command))
        return 0
    return launch(command)


def _compare(args) -> int:
    from training.compare import RunNotFound, print_comparison

    try:
        return print_comparison(args.dirs)
    except RunNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
