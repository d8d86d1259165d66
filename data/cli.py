"""`flywheel data validate`, `flywheel data build` and `flywheel data import`: thin layers over data.validate,
data.build and data.importers."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="validate capture logs; build SFT/DPO/KTO datasets")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    v = sub.add_parser("validate", help="check capture logs against the v1 schema")
    v.add_argument("paths", nargs="+", help="files, folders, globs or fsspec URLs")
    v.add_argument("--max-errors", type=int, default=20, help="errors to print (default 20)")
    v.set_defaults(func=cmd_validate)

    b = sub.add_parser("build", help="build SFT, DPO and KTO datasets from capture logs")
    b.add_argument("paths", nargs="+", help="files, folders, globs or fsspec URLs (JSONL, .gz, .zst, Parquet)")
    b.add_argument("--out", required=True, help="build dir to write (replaced atomically)")
    b.add_argument("--config", help="YAML build config (see docs/data.md); flags below override it")
    b.add_argument("--strict", action="store_true", default=None, help="fail on the first invalid line")
    t = b.add_mutually_exclusive_group()
    t.add_argument("--tenant", help="build only this tenant's data")
    t.add_argument("--all-tenants", action="store_true", default=None, help="build all tenants' data together")
    b.add_argument("--tokenizer", help="fast tokenizer (tokenizer.json or model folder) for the max-tokens filter")
    b.add_argument("--max-tokens", type=int)
    b.add_argument("--test-fraction", type=float)
    b.add_argument("--split-by", choices=["user", "session"])
    b.add_argument("--split-seed", type=int)
    b.add_argument("--time-cutoff", help="test at/after, train before this time (RFC 3339 or ms)")
    b.add_argument("--redact", nargs="?", const="email,phone,card,api_key",
                   help="redact these kinds (comma list; bare flag = all: email,phone,card,api_key)")
    b.add_argument("--near-duplicate-prompts", action="store_true", default=None,
                   help="keep one turn per normalised prompt")
    b.add_argument("--kinds", help="datasets to build, comma list (default: sft,dpo,kto)")
    b.add_argument("--quiet", action="store_true", help="no progress display or summary table")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("import", help="capture events from Langfuse, LangSmith, OpenAI-format or preference data")
    i.add_argument("format", choices=["langfuse", "langsmith", "openai", "preference"])
    i.add_argument("paths", nargs="+", help="export files or folders (JSON lines, JSON, CSV, Parquet, a datasets folder)")
    i.add_argument("--out", required=True, help="capture log to write (with LOG.report.json and LOG.quarantine)")
    i.add_argument("--map", dest="map_file", help="YAML: score names -> meanings, workload ids -> tenant/tags")
    i.add_argument("--no-check", action="store_true",
                   help="do not re-read the written events with data.validate (a third of an openai import's CPU)")
    i.set_defaults(func=cmd_import)


def cmd_validate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from data.validate import validate_paths

    console = Console(highlight=False, soft_wrap=True)  # error lines stay whole, for grep and editors
    try:
        report = validate_paths(args.paths, keep_errors=args.max_errors)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(f"{len(report.files)} file(s), {report.lines} line(s): {report.valid} valid, "
                  f"{report.invalid} invalid, {report.blank} blank")
    if report.events:
        console.print("events: " + ", ".join(f"{t} {n}" for t, n in report.events.items()))
    for line in report.error_lines(None):
        console.print(line, markup=False)
    if report.invalid > len(report.errors):
        console.print(f"... and {report.invalid - len(report.errors)} more")
    return 0 if report.ok else 1


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from data.build import BuildError, build_datasets

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    overrides = {
        "strict": args.strict, "tenant": args.tenant, "all_tenants": args.all_tenants,
        "tokenizer": args.tokenizer, "max_tokens": args.max_tokens, "test_fraction": args.test_fraction,
        "split_by": args.split_by, "split_seed": args.split_seed, "time_cutoff": args.time_cutoff,
        "near_duplicate_prompts": args.near_duplicate_prompts,
        "redact": [k.strip() for k in args.redact.split(",") if k.strip()] if args.redact else None,
        "kinds": [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None,
    }
    if args.time_cutoff is not None and args.time_cutoff.isdigit():
        overrides["time_cutoff"] = int(args.time_cutoff)
    try:
        if args.quiet:
            manifest = build_datasets(args.paths, args.out, config=args.config, **overrides)
        else:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} lines"),
                          TimeElapsedColumn(), console=console, transient=True) as prog:
                task = prog.add_task("reading capture logs", total=None)

                stages = {"read": "reading capture logs", "rules": "applying the rules to",
                          "write": "writing datasets from"}

                def progress(stage: str, n: int) -> None:
                    prog.update(task, advance=n, description=stages.get(stage, stage))

                manifest = build_datasets(args.paths, args.out, config=args.config, progress=progress, **overrides)
    except (BuildError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True)
        return 1
    if not args.quiet:
        print_summary(manifest, args.out, console)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from rich.console import Console

    from data.importers import InvalidImport, MapError, import_logs

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        with console.status(f"{args.format}: reading") as status:
            report = import_logs(args.format, args.paths, args.out, map_file=args.map_file,
                                 validate=not args.no_check,
                                 progress=lambda text: status.update(f"{args.format}: {text}"))
    except (MapError, InvalidImport, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    r = report.to_dict()
    console.print(f"{r['records_read']} record(s) read: {r['used']} used, {r['context']} context, "
                  f"{r['skipped_total']} skipped")
    console.print("events: " + (", ".join(f"{t} {n}" for t, n in r["events"].items()) or "none"))
    for reason, n in r["skipped"].items():
        console.print(f"  skipped {reason}: {n}")
    console.print(f"wrote {report.log} ({report.log}.report.json; skipped records in {report.quarantine})")
    return 0


def print_summary(m: dict, out: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    acc = m["accounting"]
    t = Table(title="examples", show_header=True)
    t.add_column("kind")
    t.add_column("train", justify="right")
    t.add_column("test", justify="right")
    for kind, s in m["examples"].items():
        t.add_row(kind, str(s["train"]), str(s["test"]))
    console.print(t)
    a = Table(title="every input line", show_header=True)
    for col in ("read", "used", "dropped", "duplicate", "quarantined"):
        a.add_column(col, justify="right")
    a.add_row(*(str(acc[c]) for c in ("read", "used", "dropped", "duplicate", "quarantined")))
    console.print(a)
    if m["drops"]:
        d = Table(title="dropped, by reason", show_header=True)
        d.add_column("reason")
        d.add_column("lines", justify="right")
        for r, n in m["drops"].items():
            d.add_row(r, str(n))
        console.print(d)
    ex = m.get("example_drops") or {}
    reasons = sorted({r for d in ex.values() for r in d})
    if reasons:
        e = Table(title="examples removed by the filters", show_header=True)
        e.add_column("reason")
        for kind in ex:
            e.add_column(kind, justify="right")
        for r in reasons:
            e.add_row(r, *(str(ex[k].get(r, 0)) for k in ex))
        console.print(e)
    if m.get("redactions"):
        console.print("redacted: " + ", ".join(f"{k} {n}" for k, n in m["redactions"].items()))
    if acc["quarantined"]:
        console.print(f"{acc['quarantined']} invalid line(s) set aside in {out}/quarantine.jsonl")
    seconds = m.get("timings_s", {}).get("total")
    console.print(f"wrote {out} (manifest.json, README.md)" + (f" in {seconds:.1f} s" if seconds else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
