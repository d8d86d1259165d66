"""`langfuse`: Langfuse's scheduled blob-storage export (JSON lines, CSV or Parquet) of traces, observations
(the legacy tables or the enriched `observations_v2`) and scores, plus score lists from the public scores API
(v1/v2 in camelCase, v3 with a `subject`), where `CORRECTION` scores (the value is the corrected output) live.

A record's table is told from its fields, so the three tables may sit in one folder or one file:
a score has `data_type`/`dataType`; an observation has `type` and `trace_id`; anything else with an `id` is a
trace. `GENERATION` observations are the LLM calls; spans and events are context.
"""

from __future__ import annotations

from data.importers.common import maybe_json, to_millis
from data.importers.traced import Feedback, Node

FORMAT = "langfuse"
_CAMEL = {"traceId": "trace_id", "observationId": "observation_id", "sessionId": "session_id",
          "dataType": "data_type", "stringValue": "string_value", "parentObservationId": "parent_observation_id",
          "startTime": "start_time", "userId": "user_id", "providedModelName": "provided_model_name",
          "createdAt": "created_at", "traceName": "trace_name"}


def read_langfuse(rec: dict) -> Node | Feedback | str:
    rec = {_CAMEL.get(k, k): v for k, v in rec.items()}
    if not isinstance(rec.get("id"), str) or not rec["id"]:
        return "missing_id"
    if "data_type" in rec:
        return _score(rec)
    if "type" in rec and "trace_id" in rec:
        return _observation(rec)
    return Node(id=rec["id"], trace_id=rec["id"], is_root=True, is_call=False, ts=to_millis(rec.get("timestamp")),
                name=rec.get("name"), user=rec.get("user_id"), session=rec.get("session_id"),
                tags=_tags(rec.get("tags")), input=rec.get("input"), output=rec.get("output"))


def _observation(rec: dict) -> Node | str:
    if not rec.get("trace_id"):
        return "missing_trace_id"
    model = rec.get("provided_model_name") or rec.get("model")
    # Enriched observations carry their trace's fields; legacy ones are joined to their trace by the index.
    return Node(id=rec["id"], trace_id=rec["trace_id"], is_root=False,
                is_call=str(rec.get("type", "")).upper() == "GENERATION", ts=to_millis(rec.get("start_time")),
                name=rec.get("trace_name"), user=rec.get("user_id"), session=rec.get("session_id"),
                tags=_tags(rec.get("tags")), input=rec.get("input"), output=rec.get("output"),
                model=model if isinstance(model, str) else None)


def _score(rec: dict) -> Feedback | str:
    subject = rec.get("subject") or {}
    if isinstance(subject, dict) and subject.get("kind"):  # scores API v3
        kind = subject["kind"]
        if kind == "observation":
            rec.setdefault("observation_id", subject.get("id"))
            rec.setdefault("trace_id", subject.get("traceId") or subject.get("trace_id"))
        elif kind == "trace":
            rec.setdefault("trace_id", subject.get("id"))
        else:
            return f"{kind}_score"  # a session or experiment score judges no single output
    if not rec.get("trace_id") and not rec.get("observation_id"):
        return "session_score" if rec.get("session_id") else "missing_trace_id"
    data_type = str(rec.get("data_type", "")).upper()
    value = rec.get("string_value") if data_type in ("CATEGORICAL", "CORRECTION", "TEXT") else rec.get("value")
    if data_type in ("CATEGORICAL", "CORRECTION", "TEXT") and value is None:
        value = rec.get("value")
    return Feedback(id=rec["id"], target=rec.get("observation_id") or rec.get("trace_id"),
                    trace_id=rec.get("trace_id"), name=str(rec.get("name")), value=value,
                    ts=to_millis(rec.get("timestamp")), comment=rec.get("comment"),
                    correction=(value if value is not None else "") if data_type == "CORRECTION" else None)


def _tags(raw) -> list | None:
    raw = maybe_json(raw)
    return [t for t in raw if isinstance(t, str)] if isinstance(raw, list) else None
