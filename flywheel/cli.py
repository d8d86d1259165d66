"""The `flywheel` command: one subcommand per stage, each a thin layer over a function tests call directly.

Every stage package exposes `register(subparsers)` in its own `cli.py`; handlers import heavy libraries (torch,
transformers, TRL) lazily so that `flywheel --help` and the data commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of the loop, which is also the order of `flywheel --help`.
STAGE_CLIS = [
    "data.cli",
    "simulation.cli",
    "training.cli",
    "eval.cli",
    "serving.cli",
    "flywheel.demo_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Turn what users do with an LLM's answers into gated, promoted LoRA adapters.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in STAGE_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # stage not present in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Each subcommand sets `func(args) -> int` (the exit code).
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
