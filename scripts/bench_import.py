"""Benchmark of `flywheel data import openai` against `flywheel data build` on the events it writes.

    python scripts/bench_import.py --records 1000000 --workdir /tmp/fw-bench-import

Generates request logs in the NVIDIA data-flywheel shape (`timestamp`, `workload_id`, `client_id`, `request`,
`response`, and a user in `request.user`): single and multi-turn conversations, one ask in five asked again
within the window (a regeneration), a few tool calls. Then, each in its own process and alternating `--repeat`
times: the import (with its validation of the log it writes) and the build of that imported log. Prints records
per second of the import, events per second of the build, and their ratio (the goal: at least 0.5). The machine
is shared: compare the ratio, not the seconds, and note the load average printed with each figure.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import SYSTEM, WORDS, run_build  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}}}}]


def generate_requests(path: Path, n: int, seed: int = 0, users: int = 20_000) -> dict:
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
                 for _ in range(4000)]
    written, t0 = 0, 1_790_000_000
    with open(path, "wb") as f:
        buf: list[bytes] = []
        while written < n:
            user = f"u{rng.randrange(users)}"
            msgs = [SYSTEM]
            if rng.random() < 0.3:
                msgs += [{"role": "user", "content": " ".join(rng.choices(sentences, k=2))},
                         {"role": "assistant", "content": " ".join(rng.choices(sentences, k=4))}]
            msgs.append({"role": "user", "content": " ".join(rng.choices(sentences, k=rng.randint(1, 3)))})
            asks = 2 if rng.random() < 0.2 else 1
            for k in range(asks):
                t = t0 + written
                message = {"role": "assistant", "content": " ".join(rng.choices(sentences, k=rng.randint(4, 12)))}
                request = {"model": "llama-3.1-70b-instruct", "messages": msgs, "temperature": 0.3,
                           "max_tokens": 1024, "user": user}
                if rng.random() < 0.02:
                    request["tools"] = TOOLS
                buf.append(orjson.dumps({
                    "timestamp": t + k * 30, "workload_id": rng.choice(("support-chat", "billing", "search")),
                    "client_id": "acme-prod", "request": request,
                    "response": {"id": f"chatcmpl-{written}", "object": "chat.completion", "created": t,
                                 "model": "llama-3.1-70b-instruct",
                                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100}}}))
                written += 1
            if len(buf) >= 10_000:
                f.write(b"\n".join(buf) + b"\n")
                buf.clear()
        if buf:
            f.write(b"\n".join(buf) + b"\n")
    return {"records": written, "bytes": path.stat().st_size}


def run_import(requests: Path, out: Path, check: bool = True) -> dict:
    code = (
        "import json, resource, sys, time\n"
        "t = time.perf_counter()\n"
        "from data.importers import import_logs\n"
        f"r = import_logs('openai', [{str(requests)!r}], {str(out)!r}, validate={check})\n"
        "wall = time.perf_counter() - t\n"
        "me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime\n"
        "rss = max(me.ru_maxrss, kids.ru_maxrss) / 1024\n"
        "print(json.dumps({'wall_s': wall, 'cpu_s': cpu, 'peak_rss_mb': rss,"
        " 'report': r.to_dict()}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    if res.returncode:
        print(res.stderr)
        raise SystemExit(res.returncode)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/fw-bench-import")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=2, help="import/build pairs, alternating")
    ap.add_argument("--reuse", action="store_true", help="reuse the generated requests if present")
    ap.add_argument("--compare-no-check", action="store_true",
                    help="also import without the schema check of the written events (validate=False), each pair")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    requests = work / f"requests-{args.records}.jsonl"
    if not (args.reuse and requests.exists()):
        info = generate_requests(requests, args.records, args.seed)
        print(f"generated {info['records']:,} request records, {info['bytes'] / 1e9:.2f} GB")
    log = work / "imported.jsonl"
    ratios = []
    for i in range(args.repeat):
        imp = run_import(requests, log)
        events = imp["report"]["events_total"]
        load_import = os.getloadavg()[0]
        build = run_build(log, work / "build", ["{}"])
        import_rate = imp["report"]["records_read"] / imp["wall_s"]
        build_rate = build["accounting"]["read"] / build["wall_s"]
        ratios.append(import_rate / build_rate)
        if args.compare_no_check:
            bare = run_import(requests, work / "imported-unchecked.jsonl", check=False)
            bare_rate = bare["report"]["records_read"] / bare["wall_s"]
            print(f"pair {i + 1}, without the check: {bare['wall_s']:.2f} s ({bare_rate:,.0f} records/s, CPU "
                  f"{bare['cpu_s']:.1f} s); ratio to the build below {bare_rate / build_rate:.2f}", flush=True)
        print(f"pair {i + 1}: import {imp['report']['records_read']:,} records -> {events:,} events "
              f"{imp['report']['events']} in {imp['wall_s']:.2f} s ({import_rate:,.0f} records/s, CPU "
              f"{imp['cpu_s']:.1f} s, peak RSS {imp['peak_rss_mb']:.0f} MB (largest process), load {load_import:.2f}); "
              f"build of those {build['accounting']['read']:,} events in {build['wall_s']:.2f} s "
              f"({build_rate:,.0f} events/s, CPU {build['cpu_s']:.1f} s, load {os.getloadavg()[0]:.2f}); "
              f"ratio {ratios[-1]:.2f}", flush=True)
    print(f"import speed / build speed: {', '.join(f'{r:.2f}' for r in ratios)} (goal >= 0.5); "
          f"cpu count {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
