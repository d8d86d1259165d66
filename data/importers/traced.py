"""Importing an observability tool's traces and feedback (Langfuse, LangSmith): the part both share.

A format's adapter reads each record as a `Node` (a trace or root run, a span, or an LLM call) or a `Feedback`
(a score, a feedback record, a correction). Three passes over the files, each streaming one record at a time:

1. index: for every trace, its user, session, tags and name, and its latest LLM call (the output a trace-level
   score judges); only ids and short strings are kept, never inputs or outputs;
2. generations: every LLM call becomes a `generation`; a trace with no LLM call becomes one from its own
   input and output; spans and traces that hold calls are context;
3. feedback: each score or feedback record becomes a rating, accept, regenerate or edit of the generation it
   names (or of its trace's latest call), as the map says; a correction is always an edit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

from data.importers.common import ImportSink, event_id, input_messages, output_text, prompt_problem
from data.importers.mapfile import ImportMap
from data.importers.sources import Malformed, records


@dataclass
class Node:
    id: str
    trace_id: str
    is_root: bool
    is_call: bool
    ts: int | None
    name: str | None = None
    user: str | None = None
    session: str | None = None
    tags: list | None = None
    input: object = None
    output: object = None
    model: str | None = None


@dataclass
class Feedback:
    id: str
    target: str | None
    trace_id: str | None
    name: str
    value: object
    ts: int | None
    correction: object = None  # the corrected output, when the record is a correction
    comment: str | None = None


@dataclass
class _Trace:
    user: str | None = None
    session: str | None = None
    tags: list | None = None
    name: str | None = None
    latest_call: tuple | None = None  # (ts, id) of its latest LLM call


Reader = Callable[[dict], "Node | Feedback | str"]


def import_traced(fmt: str, files: list[str], sink: ImportSink, mapping: ImportMap, read: Reader) -> None:
    traces: dict[str, _Trace] = {}
    calls: set[str] = set()
    sink.stage("indexing traces")
    for _, _, item, _ in _items(files, read):
        if isinstance(item, Node):
            _index(item, traces, calls)
    imported: dict[str, tuple] = {}
    sink.stage("writing generations")
    for path, number, item, rec in _items(files, read):
        if not isinstance(item, Feedback):
            sink.report.records_read += 1
            _generation_of(fmt, (path, number, rec), item, traces, imported, sink, mapping)
    sink.stage("writing feedback")
    for path, number, item, rec in _items(files, read):
        if isinstance(item, Feedback):
            sink.report.records_read += 1
            _feedback_of(fmt, (path, number, rec), item, traces, calls, imported, sink, mapping)
    sink.report.files.extend(files)


def _items(files, read: Reader):
    for path in files:
        for number, rec in records(path):
            # (file, record number, what the adapter read, the record itself for the quarantine)
            if isinstance(rec, Malformed):
                yield path, number, rec, rec.text
            else:
                item = read(rec)
                yield path, number, item, rec


def _index(node: Node, traces: dict, calls: set) -> None:
    t = traces.setdefault(node.trace_id, _Trace())
    if node.is_root or t.user is None:
        t.user = node.user or t.user
        t.session = node.session or t.session
    if node.is_root:
        t.tags, t.name = node.tags, node.name
    if node.is_call:
        calls.add(node.id)
        key = (node.ts or 0, node.id)
        if t.latest_call is None or key > t.latest_call:
            t.latest_call = key


def _generation_of(fmt, where, item, traces, imported, sink: ImportSink, mapping: ImportMap) -> None:
    if isinstance(item, Malformed):
        sink.skip("malformed_record", *where, item.reason)
        return
    if isinstance(item, str):  # the adapter could not read the record: this is why
        sink.skip(item, *where)
        return
    t = traces.get(item.trace_id) or _Trace()
    if not item.is_call and not (item.is_root and t.latest_call is None):
        sink.report.context += 1  # a span, or a trace whose LLM calls carry its generations
        return
    reason = _emit_generation(fmt, item, t, imported, sink, mapping)
    if reason:
        sink.skip(reason, *where)
    else:
        sink.report.used += 1


def _emit_generation(fmt, node: Node, t: _Trace, imported: dict, sink: ImportSink, mapping: ImportMap):
    dropped: Counter = sink.report.dropped_from_messages
    messages = input_messages(node.input, dropped)
    if problem := prompt_problem(messages):
        return problem
    output, tool_calls = output_text(node.output, dropped)
    if not output:
        return "tool_call_output" if tool_calls else "missing_output"
    if node.ts is None:
        return "bad_timestamp"
    # Without a user id the session, then the trace, stands for the user: splits and forget act on it.
    user = str(node.user or t.user or node.session or t.session or f"trace:{node.trace_id}")
    session = str(node.session or t.session or f"trace:{node.trace_id}")
    tenant, tags = mapping.placement(t.name or node.name)
    tags = list(dict.fromkeys((tags or []) + [x for x in (t.tags or node.tags or []) if isinstance(x, str)]))
    ev = {"event_id": event_id(fmt, "generation", node.id), "type": "generation", "ts": node.ts,
          "session_id": session, "user_id": user, "tenant": tenant, "tags": tags or None,
          "generation_id": node.id, "request_id": node.id, "messages": messages, "output": output,
          "model": {"base": node.model or "unknown"}, "trace_id": str(node.trace_id)}
    if tool_calls:
        ev["output_tool_calls"] = tool_calls
    sink.event(ev)
    imported[node.id] = (user, session, tenant, tags or None)
    return None


def _feedback_of(fmt, where, fb: Feedback, traces, calls, imported, sink: ImportSink, mapping) -> None:
    target = fb.target if fb.target in imported else None
    if target is None and fb.target not in calls:
        # A trace-level score judges the trace's latest LLM call (or the trace itself when it has none).
        t = traces.get(fb.target) or traces.get(fb.trace_id)
        trace_id = fb.target if fb.target in traces else fb.trace_id
        if t is not None:
            target = t.latest_call[1] if t.latest_call else trace_id
            target = target if target in imported else None
    if target is None:
        known = fb.target in calls or fb.target in traces or fb.trace_id in traces
        sink.skip("target_not_imported" if known else "target_not_found", *where)
        return
    user, session, tenant, tags = imported[target]
    base = {"event_id": event_id(fmt, "feedback", fb.id), "ts": fb.ts, "session_id": session, "user_id": user,
            "tenant": tenant, "tags": tags, "generation_id": target}
    if fb.ts is None:
        sink.skip("bad_timestamp", *where)
        return
    event = _feedback_event(fb, mapping, sink.report.dropped_from_messages)
    if isinstance(event, str):
        sink.skip(event, *where)
        return
    sink.event({**base, **event})
    sink.report.used += 1


def _feedback_event(fb: Feedback, mapping: ImportMap, dropped: Counter) -> dict | str:
    """The event's own fields, or the reason there is none."""
    if fb.correction is not None:
        text, _ = output_text(fb.correction, dropped)
        return {"type": "edit", "edited_output": text, "feedback_name": fb.name} if text else "empty_correction"
    meaning = mapping.score(fb.name)
    if meaning is None:
        return "unknown_score_name"
    if meaning.meaning == "ignore":
        return "ignored_by_map"
    if meaning.meaning == "edit":
        text, _ = output_text(fb.value, dropped) if fb.value is not None else (None, None)
        return {"type": "edit", "edited_output": text, "feedback_name": fb.name} if text else "empty_correction"
    if meaning.meaning in ("accept", "regenerate"):
        return {"type": meaning.meaning, "feedback_name": fb.name}
    value = meaning.rating(fb.value)
    if value is None:
        return "neutral_score"
    out = {"type": "rating", "value": value, "feedback_name": fb.name}
    if isinstance(fb.comment, str):
        out["comment"] = fb.comment
    return out
