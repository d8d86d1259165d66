"""`openai`: request logs that hold each chat-completions request and its response, in the shape NVIDIA's
data-flywheel blueprint stores (`timestamp` in epoch seconds, `workload_id`, `client_id`, `request`, `response`),
with optional `user_id` and `session_id` (or `conversation_id`) beside them.

Every logged response becomes a `generation`. Regenerations are inferred: the same conversation (the request's
messages, byte for byte) asked again by the same user within the map's window means the earlier answer was
regenerated away; the asks share one `request_id` and each earlier one gets a `regenerate` event.

Each record is parsed once. A large JSON-lines file is cut into one byte range per CPU, each handled by a worker
process. The first pass converts records into generation lines with a placeholder `request_id` (a staged file
per range) and keeps three numbers a record (conversation key, time, answer key); Polars then finds the turns
over all of them; the second pass, in the workers again, writes each staged line with its turn's `request_id`
and the regenerate events, and checks both against the capture schema; the parent joins the parts in order.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from array import array
from collections import Counter
from itertools import accumulate
from pathlib import Path

import orjson
import polars as pl

from data.importers.common import (ImportReport, ImportSink, InvalidImport, capture_messages, event_id, prompt_problem,
                                   quarantine_line, text_of, to_millis)
from data.importers.mapfile import ImportMap
from data.importers.sources import Malformed, json_lines, records

FORMAT = "openai"
PARALLEL_MIN_BYTES = 32 << 20
PLACEHOLDER = b'{"request_id":"-",'
ASK_COLUMNS = ("key", "ts", "answer")  # per staged line: conversation key, time, answer (generation id) key
_SIMPLE_ROLES = frozenset(("system", "user", "assistant", "tool"))
_NOT_PARAMS = frozenset(("messages", "model", "user"))


def import_openai(files: list[str], sink: ImportSink, mapping: ImportMap, validate: bool = True) -> None:
    with tempfile.TemporaryDirectory(dir=sink.log.parent, prefix=f".{sink.log.name}.") as tmp:
        ranges = [r for f in files for r in _ranges(f)]
        parts = [str(Path(tmp) / f"part-{k}") for k in range(len(ranges))]
        sink.stage(f"converting {len(ranges)} part(s) of {len(files)} file(s)")
        converted = _run("_convert_range", [(*r, mapping, part) for r, part in zip(ranges, parts)], Path(tmp))
        asks = _merge_parts(files, ranges, parts, converted, sink)
        sink.stage("finding regenerations")
        turns = _turns(asks, mapping.window_ms)
        sink.stage("writing and checking the events")
        bounds = list(accumulate((c["report"].used for c in converted), initial=0))
        finished = _run("_finish_part", [(part, turns.slice(a, b - a).rows(), validate)
                                         for part, a, b in zip(parts, bounds, bounds[1:])], Path(tmp))
        for part, done in zip(parts, finished):
            sink.report.events.update(done)
            sink.append_file(f"{part}.events")
        for part in parts:
            sink.append_file(f"{part}.regenerate")


def _run(function: str, jobs: list[tuple], tmp: Path) -> list:
    """`function` of this module on each job: here for one job, else in worker processes."""
    if len(jobs) == 1:
        return [globals()[function](*jobs[0])]
    return _in_processes(function, jobs, tmp)


def _in_processes(function: str, jobs: list[tuple], tmp: Path) -> list:
    """Each job in a plain subprocess, at most one per CPU at a time. Not multiprocessing: its spawn re-runs the
    caller's __main__ (a script without a main guard, a notebook), and fork does not mix with Polars' threads."""
    import pickle
    import subprocess
    import sys

    code = "import sys; from data.importers.openai_logs import _worker_main; _worker_main(sys.argv[1], sys.argv[2])"
    running: list = []
    for k, job in enumerate(jobs):
        (tmp / f"{function}-{k}").write_bytes(pickle.dumps(job))
        if len(running) == (os.cpu_count() or 1):
            _wait(running.pop(0))
        running.append(subprocess.Popen([sys.executable, "-c", code, function, str(tmp / f"{function}-{k}")]))
    for proc in running:
        _wait(proc)
    results = [pickle.loads((tmp / f"{function}-{k}.result").read_bytes()) for k in range(len(jobs))]
    for r in results:
        if isinstance(r, dict) and "error" in r:
            raise (InvalidImport if r["error"] == "InvalidImport" else RuntimeError)(r["message"])
    return results


def _wait(proc) -> None:
    if proc.wait() != 0 and not os.path.exists(f"{proc.args[-1]}.result"):
        raise RuntimeError(f"an import worker exited with status {proc.returncode}")


def _worker_main(function: str, job_file: str) -> None:
    import pickle

    try:
        result = globals()[function](*pickle.loads(Path(job_file).read_bytes()))
    except Exception as exc:  # handed to the parent, which raises it with the import's context
        result = {"error": type(exc).__name__, "message": str(exc)}
    Path(f"{job_file}.result").write_bytes(pickle.dumps(result))


def _ranges(path: str) -> list[tuple[str, int | None, int | None]]:
    """A large plain JSON-lines file cut at line starts into one range per CPU; anything else whole. (The build's
    reader cuts its files the same way, in data/events.py; the importers use only data/'s public functions.)"""
    workers = os.cpu_count() or 1
    if workers < 2 or not path.endswith((".jsonl", ".ndjson")) or os.path.getsize(path) < PARALLEL_MIN_BYTES:
        return [(path, None, None)]
    size = os.path.getsize(path)
    starts = [0]
    with open(path, "rb") as f:
        for k in range(1, workers):
            f.seek(max(size * k // workers - 1, starts[-1]))
            f.readline()
            if starts[-1] < f.tell() < size:
                starts.append(f.tell())
    return [(path, a, b) for a, b in zip(starts, starts[1:] + [size])]


def _range_records(path: str, start: int | None, end: int | None):
    return records(path) if start is None else json_lines(path, start, end, blanks=True)


def _convert_range(path: str, start, end, mapping: ImportMap, staged: str) -> dict:
    """One file or byte range: staged generation lines and quarantine lines in files, counts and the
    (conversation key, time) of each staged line in arrays. Line numbers count from the range's first line."""
    report = ImportReport(format=FORMAT)
    asks = {name: array("q") for name in ASK_COLUMNS}
    keys, times, answers = asks["key"].append, asks["ts"].append, asks["answer"].append
    dumps, placements, lines = orjson.dumps, {}, 0
    with open(staged, "wb", buffering=1 << 20) as out, open(f"{staged}.quarantine", "wb") as quarantine:
        for number, rec in _range_records(path, start, end):
            lines = number
            if rec is None:  # a blank line of a byte range: counted for the line numbers after it
                continue
            report.records_read += 1
            if isinstance(rec, Malformed):
                report.skipped["malformed_record"] += 1
                quarantine.write(quarantine_line("malformed_record", path, number, rec.text, rec.reason))
                continue
            result = _generation(rec, mapping, placements, report.dropped_from_messages)
            if isinstance(result, str):
                report.skipped[result] += 1
                quarantine.write(quarantine_line(result, path, number, rec))
                continue
            ev, messages_json, user = result
            out.write(PLACEHOLDER + dumps(ev)[1:] + b"\n")
            # Same user and same conversation, byte for byte: one turn asked again.
            keys(_key(user.encode() + b"\0" + messages_json))
            times(ev["ts"])
            answers(zlib.crc32(ev["generation_id"].encode()))  # told apart from the turn's next answer only
            report.used += 1
    return {"report": report, "asks": asks, "lines": lines}


def _key(data: bytes) -> int:
    """A stable 64-bit hash (Python's `hash` differs between the worker processes)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _check(path: str) -> None:
    from data.validate import validate_paths

    result = validate_paths([path], keep_errors=5)
    if not result.ok:
        raise InvalidImport(f"{result.invalid} imported event(s) fail the capture schema: "
                                  + "; ".join(result.error_lines(5)))


def _merge_parts(files, ranges, parts, converted, sink: ImportSink) -> dict[str, array]:
    """The workers' counts into the report, their quarantines (line numbers made file-relative) into the sink."""
    report = sink.report
    report.files.extend(files)
    asks = {name: array("q") for name in ASK_COLUMNS}
    offset, current = 0, None
    for (path, _, _), staged, part in zip(ranges, parts, converted):
        if path != current:
            offset, current = 0, path
        r = part["report"]
        report.records_read += r.records_read
        report.used += r.used
        report.skipped.update(r.skipped)
        report.dropped_from_messages.update(r.dropped_from_messages)
        with open(f"{staged}.quarantine", "rb") as f:
            for line in f:
                entry = orjson.loads(line)
                entry["line"] += offset
                sink.quarantine_raw(orjson.dumps(entry) + b"\n")
        offset += part["lines"]
        for name in ASK_COLUMNS:
            asks[name].extend(part["asks"][name])
    return asks


def _generation(rec: dict, mapping: ImportMap, placements: dict, dropped: Counter):
    """The generation event of one log record (without `request_id`), its messages' JSON and its user; or the
    reason it cannot be one."""
    request, response = rec.get("request"), rec.get("response")
    if not isinstance(request, dict):
        return "missing_request"
    ts = rec.get("timestamp")
    ts = (ts * 1000 if ts < 100_000_000_000 else ts) if type(ts) is int else to_millis(ts)
    if ts is None or ts < 0:
        return "bad_timestamp"
    raw = request.get("messages")
    messages = raw if _in_capture_shape(raw) else capture_messages(raw, dropped)
    if problem := prompt_problem(messages):
        return problem
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
        return "missing_output"
    if len(choices) > 1:
        dropped["extra_choices"] += len(choices) - 1
    message = choices[0]["message"]
    output = text_of(message.get("content"), dropped)
    if not output:
        return "tool_call_output" if message.get("tool_calls") else "missing_output"
    user = rec.get("user_id") or request.get("user") or rec.get("client_id")
    if not isinstance(user, str) or not user:
        return "missing_user"
    session = rec.get("session_id") or rec.get("conversation_id") or user
    workload = rec.get("workload_id")
    if workload not in placements:
        placements[workload] = mapping.placement(workload)
    tenant, tags = placements[workload]
    messages_json = orjson.dumps(messages)
    gen_id = str(response.get("id") or event_id(FORMAT, "g", orjson.dumps(rec, option=orjson.OPT_SORT_KEYS)))
    # The response id names the answer: the same record imported twice gives the same event, a duplicate.
    ev = {"event_id": "openai-g-" + gen_id, "type": "generation", "ts": ts,
          "session_id": str(session), "user_id": user, "tenant": tenant, "tags": tags,
          "generation_id": gen_id, "messages": orjson.Fragment(messages_json), "output": output,
          "model": {"base": str(request.get("model") or response.get("model") or "unknown")},
          "params": {k: v for k, v in request.items() if k not in _NOT_PARAMS} or None}
    if message.get("tool_calls"):
        ev["output_tool_calls"] = message["tool_calls"]
    return ev, messages_json, user


def _in_capture_shape(messages) -> bool:
    """The common case, checked cheaply: a list of `{role, content}` with a role the schema knows and text."""
    if type(messages) is not list or not messages:
        return False
    for m in messages:
        if type(m) is not dict or len(m) != 2 or m.get("role") not in _SIMPLE_ROLES \
                or type(m.get("content")) is not str:
            return False
    return True


def _turns(asks: dict[str, array], window_ms: int) -> pl.DataFrame:
    """Per staged row, in row order: its turn (conversation key, time of its first ask) and, when a later ask of
    the same turn regenerated it away, the time of that ask (null otherwise). A turn is a run of asks with one conversation key, each
    within `window_ms` of the one before; a repeated record (the same answer logged twice) regenerates nothing."""
    df = pl.DataFrame({name: pl.Series(values, dtype=pl.Int64) for name, values in asks.items()}) \
        .with_row_index("row")
    ordered = df.sort(["key", "ts", "row"]).with_columns(
        new=(pl.col("key") != pl.col("key").shift(1)).fill_null(True)
        | ((pl.col("ts") - pl.col("ts").shift(1)) > window_ms).fill_null(True))
    ordered = ordered.with_columns(turn=pl.col("new").cum_sum())
    ordered = ordered.with_columns(
        head_ts=pl.col("ts").first().over("turn"),
        regenerated_at=pl.when((pl.col("turn") == pl.col("turn").shift(-1))
                               & (pl.col("answer") != pl.col("answer").shift(-1))).then(pl.col("ts").shift(-1)))
    return ordered.sort("row").select("key", "head_ts", "regenerated_at")


def _finish_part(staged: str, turns: list[tuple], validate: bool) -> Counter:
    """A staged part's lines with their turns' request ids (to `<part>.events`), the regenerate events of its
    rows (to `<part>.regenerate`), both checked against the capture schema."""
    loads, dumps = orjson.loads, orjson.dumps
    cut = len(PLACEHOLDER)
    counts: Counter = Counter()
    with open(staged, "rb") as f, open(f"{staged}.events", "wb", buffering=1 << 20) as out, \
            open(f"{staged}.regenerate", "wb", buffering=1 << 20) as regen:
        for line, (key, head_ts, later) in zip(f, turns):
            out.write(b'{"request_id":"openai-r-%d-%d",' % (key, head_ts) + line[cut:])
            if later is not None:
                g = loads(line)
                regen.write(dumps({
                    "event_id": event_id(FORMAT, "regenerate", g["generation_id"]), "type": "regenerate",
                    "ts": later, "session_id": g["session_id"], "user_id": g["user_id"], "tenant": g["tenant"],
                    "tags": g["tags"], "generation_id": g["generation_id"]}) + b"\n")
                counts["regenerate"] += 1
        counts["generation"] = len(turns)
    if validate:
        _check(f"{staged}.events")
        _check(f"{staged}.regenerate")
    return counts
