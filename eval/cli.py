"""`flywheel eval freeze` and `flywheel eval gate`.

Exit codes of `eval gate`: 0 pass, 1 fail, 2 usage or configuration error (bad config, eval set overlapping the
adapter's training data, wrong base), 3 evaluation error (scoring crashed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_EVAL_ERROR = 0, 1, 2, 3


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="freeze eval sets; gate adapters against their base",
                              description="Freeze held-out eval sets and run the regression gate.")
    sub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)

    f = sub.add_parser("freeze", help="turn a build's test splits into a versioned, hashed, read-only eval set")
    f.add_argument("build_dir", help="a `flywheel data build` folder")
    f.add_argument("--out", required=True, help="new eval set folder (must not exist)")
    f.add_argument("--version", default=None, help="version label (default: date and hash)")
    f.add_argument("--general", default=None, metavar="PATH",
                   help="general-text set for the non-inferiority check: a JSONL of {\"text\"} rows or a folder of "
                        "them, text the base models well (default: the English set in eval/general/)")
    f.add_argument("--gate-config", default=None, metavar="YAML",
                   help="the gate config this set will be gated with: its power settings decide when the held-out "
                        "users are too few (a warning)")
    f.set_defaults(func=cmd_freeze)

    g = sub.add_parser("gate", help="gate an adapter against its frozen base on a frozen eval set",
                       description="Exit 0 pass, 1 fail, 2 usage/config error, 3 evaluation error.")
    g.add_argument("--adapter", required=True, help="adapter folder (from `flywheel train`)")
    g.add_argument("--eval", required=True, dest="eval_set", help="eval set folder (from `flywheel eval freeze`)")
    g.add_argument("--base", default=None, help="base model folder (default: the adapter lineage's base)")
    g.add_argument("--config", default=None, help="gate YAML overriding eval/config.py defaults")
    g.add_argument("--out", required=True, help="report folder")
    g.add_argument("--production-eval", default=None, metavar="SHA256|GATE_REPORT",
                   help="the eval set the production adapter was gated on (its sha256, or its gate_report.json)")
    g.add_argument("--rebaseline", action="store_true",
                   help="accept an eval set different from the production adapter's (recorded in the report)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_gate)


def cmd_freeze(args) -> int:
    from eval.config import GateConfigError
    from eval.freeze import EvalSetError, freeze

    try:
        kwargs = {"general": args.general} if args.general else {}
        meta = freeze(args.build_dir, args.out, version=args.version, gate_config=args.gate_config, **kwargs)
    except (EvalSetError, FileNotFoundError, GateConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    c = meta["counts"]
    print(f"eval set {args.out}: version {meta['version']}, sha256 {meta['sha256'][:12]}, "
          f"{c['pairs']} pairs, {c['answers']} final answers, {c['general']} general texts, {c['users']} users")
    for w in meta["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _production_sha(value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        path = path / "gate_report.json"
    if path.is_file():
        return json.loads(path.read_text())["eval_set"]["sha256"]
    return value


def cmd_gate(args) -> int:
    from eval.config import GateConfigError
    from eval.gate import GateEvaluationError, run_gate

    try:
        report = run_gate(args.adapter, args.eval_set, args.out, base=args.base, config=args.config,
                          production_eval_sha256=_production_sha(args.production_eval), rebaseline=args.rebaseline,
                          show_progress=not args.quiet)
    except GateConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GateEvaluationError as exc:
        print(f"evaluation error: {exc}", file=sys.stderr)
        return EXIT_EVAL_ERROR
    print(summary(report, args.out))
    return EXIT_PASS if report["decision"] == "pass" else EXIT_FAIL


def summary(report: dict, out) -> str:
    from eval.report import _num

    lines = [f"gate: {report['decision'].upper()}  adapter {report['adapter']['path']}",
             f"  eval set {report['eval_set']['version']} ({report['eval_set']['sha256'][:12]}), "
             f"base scores {report['scoring']['base_scores']}"]
    for name, c in report["checks"].items():
        mark = ("ok  " if c["passed"] else "FAIL") + (" (advisory)" if c.get("role") == "advisory" else "")
        lines.append(f"  {mark} {name:<32} base {_num(c.get('base')):>9}  adapter {_num(c.get('adapter')):>9}  "
                     f"stat {_num(c.get('value', c.get('diff'))):>9}  {_num(c.get('interval'))}  n={c.get('n')}")
    for r in report["reasons"]:
        lines.append(f"  - {r}")
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    lines.append(f"  report: {Path(out) / 'gate_report.html'}")
    return "\n".join(lines)
