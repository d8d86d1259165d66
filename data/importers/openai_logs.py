"""`openai`: request logs that hold each chat-completions request and its response, in the shape NVIDIA's
data-flywheel blueprint stores (`timestamp` in epoch seconds, `workload_id`, `client_id`, `request`, `response`),
with optional `user_id` and `session_id` (or `conversation_id`) beside them.

Every logged response becomes a `generation`. Regenerations are inferred: the same conversation (the request's
messages, byte for byte) asked again by the same user within the map's window means the earlier answer was
regenerated away; the asks share one `request_id` and each earlier one gets a `regenerate` event.

Two passes, and the records are parsed once: the first converts every record into a generation line without
its `request_id` (written to a temporary file) and keeps three numbers a record (conversation key, time, row);
Polars then finds the chains; the second pass copies the lines, prefixing each with its `request_id`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import Counter

import orjson
import polars as pl

from data.importers.common import ImportSink, capture_messages, event_id, prompt_problem, text_of, to_millis
from data.importers.mapfile import ImportMap
from data.importers.sources import Malformed, records

FORMAT = "openai"
_SIMPLE_ROLES = frozenset(("system", "user", "assistant", "tool"))
_NOT_PARAMS = frozenset(("messages", "model", "user"))


def import_openai(files: list[str], sink: ImportSink, mapping: ImportMap) -> None:
    fd, staged = tempfile.mkstemp(dir=sink.log.parent, prefix=f".{sink.log.name}.", suffix=".stage")
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            keys, times = _convert_all(files, sink, mapping, out)
        turns = _turns(keys, times, mapping.window_ms)
        _write_with_request_ids(staged, turns, sink)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def _convert_all(files, sink: ImportSink, mapping: ImportMap, out) -> tuple[list[int], list[int]]:
    report = sink.report
    keys: list[int] = []
    times: list[int] = []
    dumps = orjson.dumps
    placements: dict = {}
    for path in files:
        report.files.append(path)
        for number, rec in records(path):
            report.records_read += 1
            if isinstance(rec, Malformed):
                sink.skip("malformed_record", path, number, rec.text, rec.reason)
                continue
            result = _generation(rec, mapping, placements, report.dropped_from_messages)
            if isinstance(result, str):
                sink.skip(result, path, number, rec)
                continue
            ev, messages_json, user = result
            out.write(dumps(ev) + b"\n")
            # Same user and same conversation, byte for byte: one turn asked again.
            keys.append(int.from_bytes(hashlib.blake2b(user.encode() + b"\0" + messages_json,
                                                       digest_size=8).digest(), "little", signed=True))
            times.append(ev["ts"])
            report.used += 1
    return keys, times


def _generation(rec: dict, mapping: ImportMap, placements: dict, dropped: Counter):
    """The generation event of one log record (without `request_id`), its messages' JSON and its user; or the
    reason it cannot be one."""
    request, response = rec.get("request"), rec.get("response")
    if not isinstance(request, dict):
        return "missing_request"
    ts = to_millis(rec.get("timestamp"))
    if ts is None or ts < 0:
        return "bad_timestamp"
    raw = request.get("messages")
    if type(raw) is list and raw and all(type(m) is dict and len(m) == 2 and type(m.get("content")) is str
                                         and m.get("role") in _SIMPLE_ROLES for m in raw):
        messages = raw  # the common case, already in the capture schema's shape
    else:
        messages = capture_messages(raw, dropped)
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
    gen_id = response.get("id") or event_id(FORMAT, "g", orjson.dumps(rec, option=orjson.OPT_SORT_KEYS))
    ev = {"event_id": event_id(FORMAT, "generation", gen_id, ts), "type": "generation", "ts": ts,
          "session_id": str(session), "user_id": user, "tenant": tenant, "tags": tags,
          "generation_id": str(gen_id), "messages": orjson.Fragment(messages_json), "output": output,
          "model": {"base": str(request.get("model") or response.get("model") or "unknown")},
          "params": {k: v for k, v in request.items() if k not in _NOT_PARAMS} or None}
    if message.get("tool_calls"):
        ev["output_tool_calls"] = message["tool_calls"]
    if workload is not None:
        ev["workload_id"] = workload
    return ev, messages_json, user


def _turns(keys: list[int], times: list[int], window_ms: int) -> pl.DataFrame:
    """Per staged row, in row order: its turn's request id and, when a later ask of the same turn regenerated
    it away, the time of that ask (null otherwise)."""
    df = pl.DataFrame({"key": pl.Series(keys, dtype=pl.Int64), "ts": pl.Series(times, dtype=pl.Int64)}) \
        .with_row_index("row")
    ordered = df.sort(["key", "ts", "row"]).with_columns(
        new=(pl.col("key") != pl.col("key").shift(1)).fill_null(True)
        | ((pl.col("ts") - pl.col("ts").shift(1)) > window_ms).fill_null(True))
    ordered = ordered.with_columns(turn=pl.col("new").cum_sum())
    ordered = ordered.with_columns(
        head_ts=pl.col("ts").first().over("turn"),
        regenerated_at=pl.when(pl.col("turn") == pl.col("turn").shift(-1)).then(pl.col("ts").shift(-1)))
    ordered = ordered.with_columns(request_id=pl.format("openai-r-{}-{}", pl.col("key"), pl.col("head_ts")))
    return ordered.sort("row").select("request_id", "regenerated_at")


def _write_with_request_ids(staged: str, turns: pl.DataFrame, sink: ImportSink) -> None:
    write, report = sink.write_line, sink.report
    loads, dumps = orjson.loads, orjson.dumps
    request_ids = turns["request_id"].to_list()
    regenerated = turns["regenerated_at"].to_list()
    with open(staged, "rb") as f:
        for line, rid, later in zip(f, request_ids, regenerated):
            write(b'{"request_id":"' + rid.encode() + b'",' + line[1:])
            if later is not None:
                g = loads(line)
                sink.event({"event_id": event_id(FORMAT, "regenerate", g["generation_id"]), "type": "regenerate",
                            "ts": later, "session_id": g["session_id"], "user_id": g["user_id"],
                            "tenant": g["tenant"], "tags": g["tags"], "generation_id": g["generation_id"]})
    report.events["generation"] += len(request_ids)
