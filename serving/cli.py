"""`flywheel promote | rollback | registry | serve-sync | merge | chat | monitor`: thin layers over serving/*."""

from __future__ import annotations

import json
import sys

REGISTRY_HELP = "registry folder or fsspec URL (default: $FLYWHEEL_REGISTRY, else ./registry)"


def register(sub) -> None:
    p = sub.add_parser("promote", help="store a gated adapter in the registry and point an alias at it",
                       description="Check the gate report (decision, adapter/base/eval-set hashes), store the "
                       "adapter as <alias>-vN, move the alias atomically, write the serving manifest.")
    p.add_argument("adapter", help="adapter folder (from `flywheel train`)")
    p.add_argument("--gate", required=True, help="gate report folder (from `flywheel eval gate`)")
    p.add_argument("--alias", required=True, help="alias to move, e.g. support")
    p.add_argument("--registry", default=None, help=REGISTRY_HELP)
    p.add_argument("--force", action="store_true", help="promote despite refusals (needs --reason; recorded)")
    p.add_argument("--reason", default=None, help="why --force / why this rollback, kept in the history")
    p.set_defaults(func=_promote)

    p = sub.add_parser("rollback", help="point an alias back at the version it replaced")
    p.add_argument("alias")
    p.add_argument("--to", default=None, help="a specific earlier version, e.g. support-v2")
    p.add_argument("--reason", default=None)
    p.add_argument("--registry", default=None, help=REGISTRY_HELP)
    p.set_defaults(func=_rollback)

    p = sub.add_parser("registry", help="list aliases or show an alias/version")
    rsub = p.add_subparsers(dest="registry_command", required=True)
    q = rsub.add_parser("list", help="aliases, their current version and versions")
    q.add_argument("--registry", default=None, help=REGISTRY_HELP)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_registry_list)
    q = rsub.add_parser("show", help="an alias (with history) or a version (entry)")
    q.add_argument("name", help="alias or version name (support, support-v2)")
    q.add_argument("--registry", default=None, help=REGISTRY_HELP)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_registry_show)

    p = sub.add_parser("serve-sync", help="load promoted versions into a running vLLM and smoke-test them",
                       description="For each alias (or --alias), load its current version under its versioned "
                       "name via /v1/load_lora_adapter (never in place), send a smoke request with "
                       "model=<versioned name>, and leave earlier versions loaded.")
    p.add_argument("--url", required=True, help="vLLM server, e.g. http://localhost:8000")
    p.add_argument("--alias", default=None)
    p.add_argument("--registry", default=None, help=REGISTRY_HELP)
    p.add_argument("--prompt", default="Say hello.", help="smoke request prompt")
    p.add_argument("--chat", action="store_true", help="smoke-test /v1/chat/completions instead of /v1/completions")
    p.add_argument("--api-key", default=None, help="bearer token (default: $VLLM_API_KEY)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request")
    p.add_argument("--keep", type=int, default=None, metavar="N",
                   help="keep only the N latest earlier versions of each alias loaded (default: unload nothing)")
    p.set_defaults(func=_serve_sync)

    p = sub.add_parser("merge", help="merge an adapter into its base and save a plain model (atomic)")
    p.add_argument("adapter", help="adapter folder, or alias/version name with --registry")
    p.add_argument("--out", required=True)
    p.add_argument("--base", default=None, help="base model folder (default: from lineage.json / adapter_config)")
    p.add_argument("--registry", default=None, help=REGISTRY_HELP)
    p.set_defaults(func=_merge)

    p = sub.add_parser("chat", help="load base + promoted adapter locally and answer prompts")
    p.add_argument("--alias", required=True, help="alias or version name")
    p.add_argument("--registry", default=None, help=REGISTRY_HELP)
    p.add_argument("--prompt", action="append", default=None, help="answer this and exit (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=_chat)

    p = sub.add_parser("monitor", help="production signals per model version and period; exit 1 on regression",
                       description="Per model version (base, adapter) and period: turns, accept/edit rates, mean "
                       "edit cost, regenerations per turn, rephrase/abandon/thumbs-down rates, each with a "
                       "bootstrap interval clustered by user. Compares the newest version with the one before.")
    p.add_argument("logs", nargs="+", help="capture logs (files, folders, globs)")
    p.add_argument("--out", required=True, help="report folder: monitor.json, monitor.md, *.png")
    p.add_argument("--period", choices=["day", "week", "none"], default="none")
    p.add_argument("--margin", action="append", default=None, metavar="[METRIC=]VALUE",
                   help="how much worse counts as a regression: one value for all metrics, or METRIC=VALUE "
                   "(repeatable); default 0.02 (regen_rate 0.05)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_monitor)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)


def _promote(args) -> int:
    from serving.registry import RegistryError, promote

    try:
        entry = promote(args.adapter, args.gate, args.alias, registry=args.registry,
                        force=args.force, reason=args.reason)
    except RegistryError as exc:
        return _fail(exc)
    forced = f" (FORCED: {entry['override']['reason']})" if entry["forced"] else ""
    print(f"promoted {entry['name']} -> alias {entry['alias']}{forced}")
    print(f"  adapter_sha256 {entry['adapter']['adapter_sha256']}  rank {entry['adapter']['rank']}")
    print(f"  stored at {entry['path']}")
    from serving.registry import Registry

    for server in Registry(args.registry).serving_manifest()["servers"]:
        print(f"  serve with: {server['command_line']}")
    return 0


def _rollback(args) -> int:
    from serving.registry import RegistryError, rollback

    try:
        entry = rollback(args.alias, registry=args.registry, to=args.to, reason=args.reason)
    except RegistryError as exc:
        return _fail(exc)
    print(f"alias {args.alias} -> {entry['name']} (adapter_sha256 {entry['adapter']['adapter_sha256']})")
    return 0


def _registry_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from serving.registry import list_registry

    rows = list_registry(args.registry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table("alias", "current", "previous", "versions", "events", "updated", "forced")
    for r in rows:
        table.add_row(r["alias"], r["current"] or "-", r["previous"] or "-", ", ".join(r["versions"]),
                      str(r["events"]), r["updated"] or "-", "yes" if r["forced"] else "")
    Console(width=160).print(table)
    return 0


def _registry_show(args) -> int:
    from serving.registry import RegistryError, show

    try:
        info = show(args.name, registry=args.registry)
    except RegistryError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if "history" in info:
        print(f"alias {info['alias']} -> {info['current']}")
        for e in info["history"]:
            extra = f"  FORCED over {','.join(e['overridden'])}" if e.get("forced") else ""
            why = f"  reason: {e['reason']}" if e.get("reason") else ""
            print(f"  #{e['seq']} {e['at']} {e['action']:8} {e['from'] or '-'} -> {e['to']}  by {e['by']}{extra}{why}")
        if info["unreferenced_versions"]:
            print(f"  unreferenced (interrupted promotions): {', '.join(info['unreferenced_versions'])}")
    else:
        gate = info.get("gate") or {}
        print(f"{info['name']}  created {info['created']} by {info['created_by']}")
        print(f"  path            {info['path']}")
        print(f"  adapter_sha256  {info['adapter']['adapter_sha256']}  intact: {info['intact']}")
        print(f"  base            {info['base'].get('path')} ({info['base'].get('weights_sha256')})")
        print(f"  eval set        {(info.get('eval_set') or {}).get('path')}")
        print(f"  gate            {gate.get('decision')} {gate.get('source_path')}")
        if info.get("forced"):
            print(f"  FORCED          {info['override']['reason']}")
    return 0


def _serve_sync(args) -> int:
    import os

    from serving.registry import RegistryError
    from serving.sync import ServeSyncError, serve_sync

    try:
        results = serve_sync(args.url, alias=args.alias, registry=args.registry, prompt=args.prompt,
                             chat=args.chat, api_key=args.api_key or os.environ.get("VLLM_API_KEY"),
                             timeout=args.timeout, keep=args.keep)
    except (ServeSyncError, RegistryError) as exc:
        return _fail(exc)
    for r in results:
        print(f"{r['alias']}: {r['name']} {r['action']}; smoke {r['smoke']['endpoint']} -> {r['smoke']['text']!r}")
        if r["loaded_before"]:
            print(f"  still loaded for rollback: {', '.join(r['loaded_before'])}")
        if r["unloaded"]:
            print(f"  unloaded: {', '.join(r['unloaded'])}")
    return 0


def _merge(args) -> int:
    from serving.merge import merge_adapter

    try:
        out = merge_adapter(args.adapter, args.out, base=args.base, registry=args.registry)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(exc)
    print(f"merged model written to {out}")
    return 0


def _chat(args) -> int:
    from serving.chat import chat_loop
    from serving.registry import RegistryError

    try:
        return chat_loop(args.alias, registry=args.registry, prompts=args.prompt,
                         max_new_tokens=args.max_new_tokens)
    except RegistryError as exc:
        return _fail(exc)


def _monitor(args) -> int:
    from serving.monitor import monitor, parse_margins

    try:
        margins = parse_margins(args.margin)
    except ValueError as exc:
        return _fail(exc)
    try:
        report = monitor(args.logs, args.out, period=args.period, margins=margins, n_boot=args.bootstrap,
                         seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(exc)
    if report["set_aside"]["quarantined_lines"]:
        print(f"warning: {report['set_aside']['quarantined_lines']} lines are not valid capture events and were "
              "left out (check them with `flywheel data validate`), e.g.:", file=sys.stderr)
        for q in report["quarantine_examples"]:
            print(f"  {q['source']}:{q['line']}: {q['field']}: {q['reason']}", file=sys.stderr)
    print(report["summary"])
    return 1 if report["alert"] else 0
