"""Peak memory of one data build, stage by stage: where does the memory go?

    python scripts/profile_build_memory.py /tmp/fw-bench/capture-2000000.jsonl --out /tmp/fw-profile

Builds the log in this process (default config) while a thread samples /proc/self/statm every 3 ms, and prints
for each stage (read, events, examples, filters, split, write and the gaps between them) the highest resident
memory seen, split into anonymous memory and file pages (the texts mapped from disk, shared libraries). The
benchmark (`scripts/bench_data.py`) gives the build's overall peak; this says which step reaches it. Linux only.
A sample every 3 ms can miss a spike shorter than that: the printed `ru_maxrss` is the true peak. It also prints
the peak size of the build's spill folder on disk.

    --steps           also the anonymous memory at the start, peak and end of each rule function (and of the
                      write's parts: a kind's kept examples read in order, a chunk made into Arrow, the split's
                      summary; the two kinds are written side by side, so `materialize` counts both); the work the
                      build does on background threads runs in line, so that a step's figure is its own. Set
                      _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 to see what a step holds rather than
                      what Polars' allocator keeps.
    --piece-scale F   multiply the sizes of the build's pieces (turn buckets, key parts, write ranges) by F
    --write-workers N write N kinds at once (default 2): 1 gives each part of the write's figure its own
    --read-only       only read the log as the build does (texts and numbers to a spill folder under --out) and
                      print the anonymous memory the read leaves held, with the number of column chunks the
                      mapped events have (the same allocator setting as --steps). Two logs give what the read
                      holds per million events; it does not say what holds it (docs/performance.md, sessions 11
                      and 12: until the texts went to raw buffer files, mostly the text chunks' bookkeeping)
    --where           also, for each place in `data/` where a thread of the build was when a sample was taken
                      (its innermost two frames), the highest file pages and anonymous memory seen there: which
                      code maps pages, or holds memory, at the peaks. Threads run side by side, so a place is
                      charged with what the others hold at the same moment too; look for the place common to
                      the top rows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--piece-scale", type=float, default=1.0)
    ap.add_argument("--where", action="store_true")
    ap.add_argument("--write-workers", type=int, default=None)
    ap.add_argument("--read-only", action="store_true")
    args = ap.parse_args()
    if args.read_only:
        return read_only(args.log, Path(args.out))
    import data.build as build
    import data.filters as filters
    import data.rules as rules
    import data.split as split

    if args.write_workers:
        build.WRITE_WORKERS = args.write_workers
    for module, name in ((build, "LINK_PART_ROWS"), (build, "TURN_BUCKET_ROWS"), (build, "WRITE_RANGE_ROWS"),
                         (filters, "KEY_PART_ROWS")):
        setattr(module, name, max(1, int(getattr(module, name) * args.piece_scale)))

    page = os.sysconf("SC_PAGE_SIZE")
    stage = ["start"]
    peaks: dict[str, tuple[int, int, int]] = {}  # stage -> (resident, anonymous, file) bytes at its highest
    done = threading.Event()
    step = [None]  # the rule function running (with --steps)
    steps: dict[str, list[int]] = {}  # function -> [anonymous at start, peak, at end] bytes
    out = Path(args.out)
    spill_peak = [0]
    places: dict[str, tuple[int, int]] = {}  # place in data/ -> (highest file pages, highest anonymous) bytes
    data_dir = str(Path(__file__).resolve().parents[1] / "data")
    quiet = ("textspill.py:watch", "hfdisk.py:_drain")  # the pager and the hashing writer wait most of the time

    def where() -> list[str]:
        out = []
        for frame in sys._current_frames().values():
            names = []
            while frame is not None:
                if frame.f_code.co_filename.startswith(data_dir):
                    names.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}:{frame.f_lineno}")
                frame = frame.f_back
            if names and not names[0].startswith(quiet):
                out.append(" < ".join(names[:2]))
        return out

    def spill_bytes() -> int:
        return sum(f.stat().st_size for d in out.parent.glob(f".{out.name}.texts-*") for f in d.rglob("*")
                   if f.is_file())

    def sample() -> None:
        n = 0
        while not done.is_set():
            with open("/proc/self/statm") as f:
                fields = f.read().split()
            resident, file_pages = int(fields[1]) * page, int(fields[2]) * page
            name = stage[0]
            if resident > peaks.get(name, (0, 0, 0))[0]:
                peaks[name] = (resident, resident - file_pages, file_pages)
            if step[0] in steps:
                steps[step[0]][1] = max(steps[step[0]][1], resident - file_pages)
            if args.where:
                for place in where():
                    old = places.get(place, (0, 0))
                    places[place] = (max(old[0], file_pages), max(old[1], resident - file_pages))
            n += 1
            if n % 100 == 0:
                try:
                    spill_peak[0] = max(spill_peak[0], spill_bytes())
                except OSError:  # a file removed while listed
                    pass
            time.sleep(0.001 if args.where else 0.003)

    def watched(module, name: str) -> None:
        fn = getattr(module, name)

        def run(*a, **k):
            outer, step[0] = step[0], name
            steps.setdefault(name, [_anonymous(), 0, 0])
            try:
                return fn(*a, **k)
            finally:
                steps[name][2] = _anonymous()
                step[0] = outer

        setattr(module, name, run)

    if args.steps:
        for module, names in ((rules, ["dedupe_events", "link_events", "apply_forget", "turns_in_play",
                                       "examples_of", "attach"]),
                              (build, ["select_tenant", "account", "write_build", "_check_keys",
                                       "_event_features", "_kept_with_order_keys", "materialize",
                                       "_split_summary"]),
                              (filters, ["apply_filters"]), (split, ["assign_split"])):
            for name in names:
                watched(module, name)
        build._in_background = lambda fn, *a: (lambda result: lambda: result)(fn(*a))

    timed = build._timed

    @contextlib.contextmanager
    def timed_stage(state, name):
        stage[0] = name
        with timed(state, name):
            yield
        stage[0] = f"after {name}"

    build._timed = timed_stage
    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    build.build_datasets([args.log], args.out, progress=lambda name, _: stage.__setitem__(0, name))
    done.set()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"build {time.perf_counter() - t:.2f} s wall, ru_maxrss {maxrss:.0f} MB")
    for name, (resident, anon, file_pages) in peaks.items():
        print(f"{name:16s} {resident / 1e6:7.0f} MB  (anonymous {anon / 1e6:.0f}, file {file_pages / 1e6:.0f})")
    print(f"spill folder on disk: peak {spill_peak[0] / 1e6:.0f} MB (sampled every ~0.3 s)")
    if places:
        print("highest file pages (anonymous) seen with a thread at:")
        for place, (file_pages, anon) in sorted(places.items(), key=lambda kv: -kv[1][0])[:25]:
            print(f"  {file_pages / 1e6:5.0f} MB ({anon / 1e6:4.0f})  {place}")
    for name, (start, peak, end) in steps.items():
        print(f"step {name:18s} anonymous MB: start {start / 1e6:5.0f}  peak {max(peak, start, end) / 1e6:5.0f}"
              f"  end {end / 1e6:5.0f}")
    return 0


def read_only(log: str, out: Path) -> int:
    import gc
    import shutil

    from data.events import read_events

    out.mkdir(parents=True, exist_ok=True)
    spill = Path(tempfile.mkdtemp(dir=out, prefix="spill-"))
    try:
        start = _anonymous()
        read = read_events([log], spill_dir=spill, keys=True)
        read.texts.release()
        gc.collect()
        held = _anonymous()
        chunks = sum(read.events[c].n_chunks() for c in read.events.columns)
        print(f"{log}: {read.lines_read} lines; anonymous memory {start / 1e6:.1f} MB before the read, "
              f"{held / 1e6:.1f} MB held after it; the mapped events: {len(read.events.columns)} columns, "
              f"{chunks} chunks")
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return 0


def _anonymous() -> int:
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":
    sys.exit(main())
