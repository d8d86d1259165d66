"""`flywheel tiny-model` and `flywheel simulate`: thin layers over `simulation.tiny_model` and `simulation.simulate`."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("tiny-model", help="build (or reuse from the cache) the embedded tiny base model")
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--size", default="default", choices=["default", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_model)


def _tiny_model(args: argparse.Namespace) -> int:
    import json
    import time

    from rich.console import Console

    from simulation.tiny_model import build_tiny_model

    console = Console(stderr=True)
    t0 = time.perf_counter()
    out = build_tiny_model(args.out, size=args.size, seed=args.seed, show_progress=True)
    meta = json.loads((out / "flywheel_tiny_model.json").read_text())
    console.print(
        f"[green]tiny model[/] {meta['name']} ({meta['parameters'] / 1e6:.2f}M parameters, "
        f"final loss {meta['final_loss']:.3f}) at {out} in {time.perf_counter() - t0:.1f}s"
    )
    return 0
