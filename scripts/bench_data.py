"""Benchmark of `flywheel data build`: generate a capture log, build it, report wall time and peak memory.

    python scripts/bench_data.py --events 1000000 --workdir /tmp/fw-bench

Prints, side by side: the time to merely parse the file with the fastest JSON readers at hand (the floor), and
the full build (read, check, rules, filters, split, write) as a separate process so its peak RSS is its own, with
wall and CPU seconds per stage. `--compare-python-read` builds once more with every line through the per-line
Python reader (no msgspec fast path), in the same run. Pin threads for comparable numbers (POLARS_MAX_THREADS,
OMP_NUM_THREADS). Note the load average (printed) with every figure: on a
shared machine wall times follow the other jobs; CPU seconds are steadier.

Does memory grow with the log? Peak memory at several sizes, and the same builds with the code of an earlier
commit, alternating, in one run:

    git worktree add /tmp/fw-before <commit>
    python scripts/bench_data.py --sizes 500000,1000000,2000000,4000000 --reuse --baseline-tree /tmp/fw-before
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

WORDS = ("the a to of and in is you your for on with that this it can be we our account plan invoice export "
         "settings click open select page api key request limit minute seat team billing support password reset "
         "link email spam folder retry webhook backoff seconds status csv pdf download upload error code token "
         "model answer please check first then again later each new old user admin role access project report "
         "data file format table column row value number date time zone region server client browser app").split()
SYSTEM = {"role": "system",
          "content": "You are a helpful support assistant for a software product. Be brief and exact."}


def _text(rng: random.Random, pool: list[str], n: int) -> str:
    return " ".join(rng.choice(pool) for _ in range(n))


def generate_log(path: Path, n_events: int, seed: int = 0, users: int = 20_000) -> dict:
    """A realistic mix: regeneration chains, edits, accepts, ratings, rephrases, abandons, a few forgets,
    duplicates and invalid lines. About 0.7 KB an event on average."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
                 for _ in range(4000)]
    counts: dict[str, int] = {}
    written = 0
    turn = 0
    t0 = 1_790_000_000_000
    dumps = orjson.dumps
    with open(path, "wb") as f:
        buf: list[bytes] = []

        def emit(ev: dict) -> None:
            nonlocal written
            buf.append(dumps(ev))
            counts[ev["type"]] = counts.get(ev["type"], 0) + 1
            written += 1
            if len(buf) >= 10_000:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()

        while written < n_events:
            turn += 1
            u = rng.randrange(users)
            user, session, req = f"u{u}", f"s{u}-{turn // 50}", f"r{turn}"
            ts = t0 + turn * 1000
            msgs = [SYSTEM]
            if rng.random() < 0.3:
                msgs += [{"role": "user", "content": _text(rng, sentences, 2)},
                         {"role": "assistant", "content": _text(rng, sentences, 4)}]
            msgs.append({"role": "user", "content": _text(rng, sentences, rng.randint(1, 3))})
            common = {"session_id": session, "user_id": user, "tags": ["support", "en"]}
            n_gen = 1
            while rng.random() < 0.25 and n_gen < 5:
                n_gen += 1
            for g in range(n_gen):
                gid = f"g{turn}-{g}"
                emit({"event_id": f"e{written}", "type": "generation", "ts": ts + g * 10, **common,
                      "generation_id": gid, "request_id": req, "messages": msgs,
                      "output": _text(rng, sentences, rng.randint(4, 12)),
                      "model": {"base": "tiny-llama", "adapter": "v1" if u % 2 else None},
                      "params": {"temperature": 0.7}})
                if g < n_gen - 1:
                    emit({"event_id": f"e{written}", "type": "regenerate", "ts": ts + g * 10 + 5, **common,
                          "generation_id": gid})
            last = f"g{turn}-{n_gen - 1}"
            r = rng.random()
            if r < 0.5:
                emit({"event_id": f"e{written}", "type": "accept", "ts": ts + 100, **common, "generation_id": last})
            elif r < 0.72:
                emit({"event_id": f"e{written}", "type": "edit", "ts": ts + 90, **common, "generation_id": last,
                      "edited_output": _text(rng, sentences, rng.randint(3, 9))})
                emit({"event_id": f"e{written}", "type": "accept", "ts": ts + 100, **common, "generation_id": last})
            elif r < 0.82:
                emit({"event_id": f"e{written}", "type": "rephrase", "ts": ts + 100, **common, "request_id": req,
                      "new_request_id": f"r{turn + 1}"})
            elif r < 0.92:
                emit({"event_id": f"e{written}", "type": "abandon", "ts": ts + 100, **common, "request_id": req})
            if rng.random() < 0.1:
                emit({"event_id": f"e{written}", "type": "rating", "ts": ts + 110, **common, "generation_id": last,
                      "value": rng.choice((1, -1))})
            if rng.random() < 0.002:  # an exporter retry: the same line again
                buf.append(buf[-1])
                written += 1
            if rng.random() < 0.001:
                buf.append(b'{"event_id": "bad' + str(written).encode() + b'", "type": "rating", "ts": ')
                written += 1
            if rng.random() < 0.0002:
                emit({"event_id": f"e{written}", "type": "forget", "ts": ts + 200, **common})
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return {"events": written, "bytes": path.stat().st_size, "types": counts}


def parse_floor(path: Path) -> dict[str, float]:
    """The floor: seconds to parse the file and nothing else, with each fast reader at hand."""
    out = {}
    t = time.perf_counter()
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            try:
                loads(line)
            except orjson.JSONDecodeError:
                pass
    out["orjson, one line at a time"] = time.perf_counter() - t
    try:  # DuckDB is not a dependency of the project; measured when present
        import duckdb

        t = time.perf_counter()
        query = f"SELECT * FROM read_json('{path}', format='newline_delimited', ignore_errors=true)"
        duckdb.sql(query).arrow().read_all()
        out["duckdb read_json (all cores, bad lines skipped)"] = time.perf_counter() - t
    except ImportError:
        pass
    # Polars' NDJSON reader stops at the first truncated line, so it cannot read a log with bad lines at all.
    return out


def _constant(setting: str) -> tuple[str, str, str]:
    """'data.textspill.PAGER_EVERY_S=0.001' -> (module, name, value as Python source)."""
    target, value = setting.split("=", 1)
    module, name = target.rsplit(".", 1)
    return module, name, value


def run_build(log: Path, out: Path, extra: list[str], fast_read: bool = True, tree: Path | None = None,
              constants: list[str] = ()) -> dict:
    """The build in a child process: its own wall time and peak RSS. `fast_read=False`: every line through the
    per-line Python reader (the reference the fast path must match), for side-by-side comparisons. `tree`: run
    the build code of another checkout (e.g. `git worktree add /tmp/before <commit>`), for before/after."""
    code = (
        "import json, resource, sys, threading, time\n"
        # Peak anonymous memory of the build process, sampled: ru_maxrss also counts file pages it has mapped
        # (the texts the build keeps on disk), which the kernel can take back without writing anything.
        "anon = [0]\n"
        "def sample():\n"
        "    while True:\n"
        "        try:\n"
        "            f = open('/proc/self/status')\n"
        "        except OSError:\n"
        "            return  # not Linux: ru_maxrss only\n"
        "        with f:\n"
        "            kb = [int(l.split()[1]) for l in f if l.startswith('RssAnon')]\n"
        "        anon[0] = max(anon[0], kb[0] if kb else 0)\n"
        "        time.sleep(0.02)\n"
        "threading.Thread(target=sample, daemon=True).start()\n"
        "t = time.perf_counter()\n"
        f"import data.events; data.events.FAST_PATH = data.events.FAST_PATH and {fast_read}\n"
        "import importlib\n"
        + "".join(f"setattr(importlib.import_module({module!r}), {name!r}, {value})\n"
                  for module, name, value in map(_constant, constants)) +
        "from data.build import build_datasets\n"
        f"m = build_datasets([{str(log)!r}], {str(out)!r}, **json.loads(sys.argv[1]))\n"
        "wall = time.perf_counter() - t\n"
        "me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        # Linux folds the spawning process's high-water mark into ru_maxrss at exec: after the parse floor, the
        # parent's (DuckDB's table of the whole log) would be reported as the build's. VmHWM is this process's own.
        "try:\n"
        "    with open('/proc/self/status') as f:\n"
        "        own = [int(l.split()[1]) for l in f if l.startswith('VmHWM')][0]\n"
        "except (OSError, IndexError):\n"
        "    own = me.ru_maxrss\n"
        "rss = max(own, kids.ru_maxrss) / 1024\n"
        "cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime\n"
        "print(json.dumps({'wall_s': wall, 'cpu_s': cpu, 'peak_rss_mb': rss, 'peak_anon_mb': anon[0] / 1024,"
        " 'examples': m['examples'],"
        " 'accounting': m['accounting'], 'drops': m['drops'], 'timings_s': m.get('timings_s'), 'stage_cpu_s': m.get('cpu_s')}))\n"
    )
    overrides = json.loads(extra[0]) if extra else {}
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, json.dumps(overrides)], capture_output=True, text=True,
                         cwd=tree or Path(__file__).resolve().parents[1])
    if res.returncode:
        print(res.stderr)
        raise SystemExit(res.returncode)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/fw-bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse the generated log if present")
    ap.add_argument("--overrides", default="{}", help="BuildConfig overrides as JSON, e.g. '{\"redact\": [\"email\"]}'")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="set a module constant in the build process, e.g. data.textspill.PAGER_EVERY_S=0.001 "
                    "(repeatable; with --sizes, this tree only)")
    ap.add_argument("--compare-python-read", action="store_true",
                    help="also build with the per-line Python reader (no msgspec fast path), in the same run")
    ap.add_argument("--sizes", help="comma-separated event counts: build each (fresh process each) and print peak "
                    "memory against log size, and its growth per million events")
    ap.add_argument("--baseline-tree", type=Path,
                    help="with --sizes: also build each log with the code of this checkout, alternating, side by side")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if args.sizes:
        return scaling(work, [int(n) for n in args.sizes.split(",")], args)
    log = work / f"capture-{args.events}.jsonl"
    if not (args.reuse and log.exists()):
        t = time.perf_counter()
        info = generate_log(log, args.events, args.seed)
        print(f"generated {info['events']:,} events, {info['bytes'] / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s")
    print(f"log: {log} ({log.stat().st_size / 1e9:.2f} GB)")
    floor = parse_floor(log)
    for name, s in floor.items():
        print(f"floor, parse only ({name}): {s:.2f} s")
    runs = [("build", True)] + ([("build, Python reader", False)] if args.compare_python_read else [])
    for name, fast in runs:
        res = run_build(log, work / "build", [args.overrides], fast_read=fast, constants=args.set)
        print(f"{name}: {res['wall_s']:.2f} s wall in-process ({res['process_wall_s']:.2f} s with interpreter start), "
              f"peak RSS {res['peak_rss_mb']:.0f} MB (largest process; anonymous memory of the build process "
              f"{res['peak_anon_mb']:.0f} MB, sampled), CPU {res['cpu_s']:.1f} s (all processes), "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"stages, wall (s): {res['timings_s']}")
        print(f"stages, CPU of the main process (s): {res['stage_cpu_s']}")
    print(f"examples: {res['examples']}")
    print(f"accounting: {res['accounting']}")
    print(f"cpu count: {os.cpu_count()}, load average: {os.getloadavg()}")
    return 0


def scaling(work: Path, sizes: list[int], args) -> int:
    """Peak memory against the log's size: does it grow with the log? Each size is built in a fresh process;
    with a baseline tree, the two codes alternate on the same log."""
    trees = [("this tree", None)] + ([("baseline", args.baseline_tree)] if args.baseline_tree else [])
    rows = []
    for n in sizes:
        log = work / f"capture-{n}.jsonl"
        if not (args.reuse and log.exists()):
            generate_log(log, n, args.seed)
        for name, tree in trees:
            res = run_build(log, work / "build", [args.overrides], tree=tree,
                            constants=args.set if tree is None else ())
            rows.append((name, n, log.stat().st_size / 1e9, res))
            print(f"{name:9s} {n:>9,} events ({log.stat().st_size / 1e9:.2f} GB): {res['wall_s']:6.2f} s wall, "
                  f"peak RSS {res['peak_rss_mb']:6.0f} MB (anonymous {res['peak_anon_mb']:.0f} MB), "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for name, _ in trees:
        mine = [(n, r["peak_rss_mb"]) for who, n, _, r in rows if who == name]
        if len(mine) >= 2:
            (n0, m0), (n1, m1) = mine[-2], mine[-1]
            print(f"{name}: peak RSS grows {(m1 - m0) / ((n1 - n0) / 1e6):.0f} MB per million events between "
                  f"{n0:,} and {n1:,} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
