"""Peak memory of one data build, stage by stage: where does the memory go?

    python scripts/profile_build_memory.py /tmp/fw-bench/capture-2000000.jsonl --out /tmp/fw-profile

Builds the log in this process (default config) while a thread samples /proc/self/statm every 3 ms, and prints
for each stage (read, events, examples, filters, split, write and the gaps between them) the highest resident
memory seen, split into anonymous memory and file pages (the texts mapped from disk, shared libraries). The
benchmark (`scripts/bench_data.py`) gives the build's overall peak; this says which step reaches it. Linux only.
A sample every 3 ms can miss a spike shorter than that: the printed `ru_maxrss` is the true peak.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import data.build as build

    page = os.sysconf("SC_PAGE_SIZE")
    stage = ["start"]
    peaks: dict[str, tuple[int, int, int]] = {}  # stage -> (resident, anonymous, file) bytes at its highest
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with open("/proc/self/statm") as f:
                fields = f.read().split()
            resident, file_pages = int(fields[1]) * page, int(fields[2]) * page
            name = stage[0]
            if resident > peaks.get(name, (0, 0, 0))[0]:
                peaks[name] = (resident, resident - file_pages, file_pages)
            time.sleep(0.003)

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
