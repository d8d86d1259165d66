"""Could an out-of-core engine bound the rules' memory? One step of them (linking), engine by engine.

    python scripts/bench_out_of_core.py /tmp/fw-bench/capture-4000000.jsonl --workdir /tmp/fw-ooc

Reads the log as the build does, writes the columns the rules read (keys, types, times, row numbers) to Arrow IPC
and Parquet, then runs the link step (generations joined to the feedback on them and to their requests, then a
filter) in a fresh process per engine and prints its wall time and peak RSS (VmHWM; Linux): Polars in memory
(what the build does), Polars' streaming engine from and to files, the same with Polars' out-of-core budget
(`POLARS_OOC_MEMORY_BUDGET_MB`), and DuckDB with memory limits (measured when DuckDB is installed; it is not a
dependency of the project).
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

POLARS = """
import json, sys, time
import polars as pl
mode, light, out = sys.argv[1:4]
t = time.perf_counter()
lf = pl.read_ipc(light).lazy() if mode == "memory" else pl.scan_ipc(light)
gens = lf.filter(pl.col("type") == "generation")
by_gen = gens.select("generation_key", pl.col("user_key").alias("gen_user"), pl.col("tenant_key").alias("gen_tenant"),
                     pl.col("request_key").alias("gen_request"), pl.col("row").alias("gen_row"))
by_req = gens.group_by("request_key").agg(pl.col("user_key").first().alias("req_user"),
                                          pl.col("tenant_key").first().alias("req_tenant"))
linked = lf.join(by_gen, on="generation_key", how="left").join(by_req, on="request_key", how="left") \\
    .filter(pl.col("type") != "forget")
if mode == "memory":
    linked.collect().write_ipc(out)
else:
    linked.sink_ipc(out, engine="streaming")
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"wall_s": time.perf_counter() - t, "peak_rss_mb": hwm / 1024}))
"""

DUCKDB = """
import json, sys, time
import duckdb
limit, light, out, spill = sys.argv[1:5]
t = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET memory_limit='{limit}'; SET threads=2; SET temp_directory='{spill}'; "
            "SET preserve_insertion_order=false")
con.execute(f'''COPY (
  WITH ev AS (SELECT * FROM '{light}'),
  g AS (SELECT generation_key, user_key gen_user, tenant_key gen_tenant, request_key gen_request, "row" gen_row
        FROM ev WHERE type = 'generation'),
  rq AS (SELECT request_key, first(user_key) req_user, first(tenant_key) req_tenant FROM ev
         WHERE type = 'generation' GROUP BY request_key)
  SELECT ev.*, g.* EXCLUDE (generation_key), rq.* EXCLUDE (request_key)
  FROM ev LEFT JOIN g USING (generation_key) LEFT JOIN rq USING (request_key) WHERE ev.type <> 'forget'
) TO '{out}' (FORMAT parquet)''')
# VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"wall_s": time.perf_counter() - t, "peak_rss_mb": hwm / 1024}))
"""


def run(code: str, args: list[str], env: dict | None = None) -> str:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if res.returncode:
        return "failed: " + (res.stderr.strip().splitlines() or ["?"])[-1][:160]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return f"{r['wall_s']:6.2f} s wall, peak RSS {r['peak_rss_mb']:6.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--budgets-mb", default="100", help="Polars out-of-core budgets to try, comma-separated")
    ap.add_argument("--duckdb-limits", default="4GB,200MB,100MB")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import polars as pl

    from data import rules
    from data.events import read_events

    work = Path(args.workdir or tempfile.mkdtemp(prefix="flywheel-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    light_ipc, light_pq = work / "light.arrow", work / "light.parquet"
    with tempfile.TemporaryDirectory(dir=work) as spill:
        light = read_events([args.log], spill_dir=spill, keys=True).events.with_row_index("row") \
            .select(rules.LIGHT_COLUMNS)
        light.write_ipc(light_ipc)
        light.with_columns(pl.col("type").cast(pl.String)).write_parquet(light_pq)
        rows, size = len(light), light_ipc.stat().st_size
        del light
    print(f"{rows:,} events; the rules' columns: {size / 1e6:.0f} MB of Arrow")
    out = str(work / "linked")
    print(f"polars, in memory:            {run(POLARS, ['memory', str(light_ipc), out])}")
    print(f"polars, streaming:            {run(POLARS, ['streaming', str(light_ipc), out])}")
    for mb in filter(None, args.budgets_mb.split(",")):
        print(f"polars, streaming, {mb:>4} MB:   "
              f"{run(POLARS, ['streaming', str(light_ipc), out], {'POLARS_OOC_MEMORY_BUDGET_MB': mb})}")
    try:
        import duckdb  # noqa: F401
    except ImportError:
        print("duckdb: not installed")
        return 0
    for limit in filter(None, args.duckdb_limits.split(",")):
        print(f"duckdb, memory_limit {limit:>5}: "
              f"{run(DUCKDB, [limit, str(light_pq), out + '.parquet', str(work / 'duckdb-spill')])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
