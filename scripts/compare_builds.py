"""Differential check of the data build: this tree against another checkout, on random capture logs.

    git worktree add /tmp/fw-before <commit>
    python scripts/compare_builds.py --baseline-tree /tmp/fw-before --examples 300

Hypothesis draws logs from the property tests' strategy (every event type, junk lines, exact repeats, conflicting
ids, tenants, forgets) and a config (split fraction and unit, near-duplicate prompts, a tenant, a minimum edit,
two kinds, redaction, a time cutoff). Each log is built by both codes: the baseline in one long-lived subprocess
started in its tree. They must agree on the manifest's counts (drops, example drops, accounting, examples, split
units, events, duplicates, quarantined, redactions), the datasets' rows (as sets: the order of rows with equal
times may differ), the quarantine and the orphans; or both must fail. For refactors of `data/` that should change
no result.
`--collide` makes every id of one length share a key in this tree, so each build goes through the re-keying.
`--piece-rows 5` links this tree's events in many passes, builds its turns in many small buckets and writes each
split in many small ranges, gathers the event columns in small windows, and keeps only 5 quarantined lines in
memory (the rest go to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = """
import json, sys
from data.build import build_datasets
for line in sys.stdin:
    req = json.loads(line)
    try:
        build_datasets([req["path"]], req["out"], **req["cfg"])
        print(json.dumps({"ok": True}), flush=True)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""
MANIFEST_KEYS = ("drops", "example_drops", "accounting", "examples", "split", "events", "duplicates", "quarantined",
                 "redactions")


def results(out: Path) -> tuple:
    import datasets

    m = json.loads((out / "manifest.json").read_text())
    rows = {}
    for kind in ("sft", "dpo", "kto"):
        if (out / kind).exists():
            for split, part in datasets.load_from_disk(str(out / kind)).items():
                rows[(kind, split)] = sorted(json.dumps(r, sort_keys=True) for r in part.to_list())
    return ({k: m[k] for k in MANIFEST_KEYS}, rows, sorted((out / "quarantine.jsonl").read_text().splitlines()),
            sorted((out / "orphans.jsonl").read_text().splitlines()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-tree", type=Path, required=True)
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--collide", action="store_true")
    ap.add_argument("--piece-rows", type=int, default=None,
                    help="build this tree in pieces of this many rows: link passes, turn buckets, write ranges, scans, "
                         "quarantined lines held in memory")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import datasets
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from data.build import build_datasets
    from tests.data.test_properties import capture_log

    datasets.disable_progress_bars()
    if args.piece_rows:
        import data.build

        import data.rules

        for name in ("LINK_PART_ROWS", "TURN_BUCKET_ROWS", "WRITE_RANGE_ROWS", "SCAN_ROWS", "DISTINCT_PART_ROWS"):
            setattr(data.build, name, args.piece_rows)
        data.rules.OWNER_SLICE_ROWS = data.rules.GATHER_WINDOW_ROWS = args.piece_rows
        import data.filters

        data.filters.KEY_PART_ROWS = args.piece_rows
        import data.split

        data.split.SLICE_ROWS = data.split.UNIT_PART_ROWS = args.piece_rows
        import data.events

        data.events.Quarantine.MEMORY_LINES = args.piece_rows
    if args.collide:
        from data.events import KEY_SEED
        from tests.data.test_keys import collide_keys

        collide_keys(setattr, {KEY_SEED})
    baseline = subprocess.Popen([sys.executable, "-c", SERVER], cwd=args.baseline_tree, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(args.baseline_tree)})
    work = Path(tempfile.mkdtemp(prefix="flywheel-compare-"))
    seen = {"logs": 0, "both_failed": 0}

    @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(lines=capture_log(), fraction=st.sampled_from([0.0, 0.3, 0.5]), by=st.sampled_from(["user", "session"]),
           extra=st.sampled_from([{}, {"near_duplicate_prompts": True}, {"tenant": "acme"}, {"min_edit_chars": 5},
                                  {"kinds": ["sft", "kto"]}, {"redact": ["email"]}, {"time_cutoff": 5_000}]))
    def check(lines, fraction, by, extra):
        seen["logs"] += 1
        folder = work / str(seen["logs"])
        folder.mkdir()
        log = folder / "log.jsonl"
        log.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
        cfg = {"test_fraction": fraction, "split_by": by, **extra}
        if "tenant" not in extra:
            cfg["all_tenants"] = True
        error = None
        try:
            build_datasets([str(log)], folder / "this", **cfg)
        except Exception as exc:  # compared with the baseline's outcome below
            error = f"{type(exc).__name__}: {exc}"
        baseline.stdin.write(json.dumps({"path": str(log), "out": str(folder / "baseline"), "cfg": cfg}) + "\n")
        baseline.stdin.flush()
        theirs = json.loads(baseline.stdout.readline())
        if error is not None or not theirs["ok"]:
            assert (error is None) == theirs["ok"], f"{log}: this tree: {error}; baseline: {theirs}"
            seen["both_failed"] += 1
            return
        mine, other = results(folder / "this"), results(folder / "baseline")
        for name, a, b in zip(("manifest counts", "dataset rows", "quarantine", "orphans"), mine, other):
            assert a == b, f"{log}: {name} differ"

    check()
    baseline.stdin.close()
    print(f"{seen['logs']} random logs built by both codes: identical results "
          f"({seen['both_failed']} failed in both){' with every id key colliding here' if args.collide else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
