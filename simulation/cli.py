"""`flywheel tiny-model` and `flywheel simulate`: thin layers over `simulation.tiny_model` and `simulation.simulate`."""

from __future__ import annotations

import argparse

from simulation.preferences import FAMILIES


def register(subparsers) -> None:
    p = subparsers.add_parser("tiny-model", help="build (or reuse from the cache) the embedded tiny base model")
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--size", default="default", choices=["default", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_tiny_model)
    register_simulate(subparsers)


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


def register_simulate(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="simulated users work with a model; writes a capture log")
    p.add_argument("--model", required=True, help="base model folder (e.g. from `flywheel tiny-model`)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder to serve on top of the base")
    p.add_argument("--adapter-version", default=None,
                   help="version name written into every generation's model.adapter (default: from the folder)")
    p.add_argument("--users", type=int, default=40)
    p.add_argument("--turns", type=int, default=15, help="turns per user")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="capture log to write (.jsonl, .jsonl.gz or .jsonl.zst)")
    p.add_argument("--config", default=None, help="YAML/JSON file of simulation settings (rates, generation)")
    p.add_argument("--preferences", default=None, choices=sorted(FAMILIES),
                   help="the users' preference family (default: the config's, else 'house')")
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from simulation.simulate import simulate

    console = Console(stderr=True)
    s = simulate(args.model, args.out, adapter=args.adapter, users=args.users, turns=args.turns, seed=args.seed,
                 config=args.config, adapter_version=args.adapter_version, show_progress=True,
                 preferences=args.preferences)
    console.print(
        f"[green]simulated[/] {s['turns']} turns ({s['generations']} generations) in {s['seconds']:.1f}s: "
        f"edit cost {s['edit_cost']:.3f}, accept {s['accept_rate']:.2f}, edit {s['edit_rate']:.2f}, "
        f"regenerations/turn {s['regen_rate']:.2f}, abandon {s['abandon_rate']:.2f}, "
        f"rephrase {s['rephrase_rate']:.2f}\nlog: {s['log']}\nturns: {s['turns_log']}"
    )
    print(json.dumps({k: s[k] for k in ("turns", "generations", "edit_cost", "events", "log", "turns_log")}))
    return 0
