"""Capture events v1: typed records, and the per-event checks that mirror the shipped JSON Schema.

`data/schema/capture-event-v1.schema.json` is the machine-readable contract for producers (validate with any JSON
Schema library). The builder does not run a generic JSON Schema engine on every line (that costs ~50 us a line);
`check_event` implements the same rules as plain type checks, plus the one the schema cannot express (messages end
with the user's turn). `tests/data/test_schema.py` keeps the two in agreement.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

SCHEMA_PATH = Path(__file__).parent / "schema" / "capture-event-v1.schema.json"
SCHEMA_VERSION = 1
MAX_TS = (1 << 63) - 1

EVENT_TYPES = ("generation", "edit", "regenerate", "accept", "rating", "rephrase", "abandon", "forget")
FEEDBACK_ON_GENERATION = ("edit", "regenerate", "accept", "rating")
FEEDBACK_ON_REQUEST = ("rephrase", "abandon")
ROLES = frozenset(("system", "user", "assistant", "tool"))

# Type-specific required fields: (name, kind); kinds: id = non-empty string, str = any string.
_REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "generation": (("generation_id", "id"), ("request_id", "id"), ("messages", "messages"), ("output", "str"),
                   ("model", "model")),
    "edit": (("generation_id", "id"), ("edited_output", "str")),
    "regenerate": (("generation_id", "id"),),
    "accept": (("generation_id", "id"),),
    "rating": (("generation_id", "id"), ("value", "rating")),
    "rephrase": (("request_id", "id"), ("new_request_id", "id")),
    "abandon": (("request_id", "id"),),
    "forget": (),
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_ts(value: Any) -> int | None:
    """ts -> integer milliseconds since the epoch (UTC); None when it is neither an int in [0, 2^63) (the event
    table stores Int64) nor RFC 3339."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TS else None
    if type(value) is str and _RFC3339.match(value):
        try:
            dt = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        except ValueError:
            return None
        return (dt - _EPOCH) // _MS
    return None


from datetime import timedelta as _td  # noqa: E402

_MS = _td(milliseconds=1)


def _check_field(obj: dict, name: str, kind: str) -> str | None:
    v = obj.get(name)
    if v is None:
        return "missing" if name not in obj else "must not be null"
    if kind == "id":
        if type(v) is not str:
            return f"must be a string, got {type(v).__name__}"
        if not v:
            return "must not be empty"
    elif kind == "str":
        if type(v) is not str:
            return f"must be a string, got {type(v).__name__}"
    elif kind == "rating":
        if type(v) is not int or v not in (1, -1):
            return f"must be +1 or -1, got {v!r}"
    elif kind == "model":
        if type(v) is not dict:
            return f"must be an object {{base, revision?, adapter?}}, got {type(v).__name__}"
        base = v.get("base")
        if type(base) is not str or not base:
            return "base: must be a non-empty string"
        for opt in ("revision", "adapter"):
            if v.get(opt) is not None and type(v[opt]) is not str:
                return f"{opt}: must be a string or null"
    elif kind == "messages":
        if type(v) is not list:
            return f"must be a list of {{role, content}}, got {type(v).__name__}"
        if not v:
            return "must not be empty"
        for i, m in enumerate(v):
            if type(m) is not dict:
                return f"[{i}]: must be an object {{role, content}}"
            if type(m.get("role")) is not str or m["role"] not in ROLES:
                return f"[{i}].role: must be one of system/user/assistant/tool, got {m.get('role')!r}"
            if type(m.get("content")) is not str:
                return f"[{i}].content: must be a string"
        if v[-1]["role"] != "user":
            return "must end with the user's turn"
    return None


_ID_FIELDS = {t: ("event_id", "session_id", "user_id") + tuple(name for name, kind in req if kind == "id")
              for t, req in _REQUIRED.items()}
_STR_ONLY = {str}


def check_event(obj: Any) -> tuple[str | None, str | None, int | None]:
    """(field, reason, None) for an invalid event; (None, None, ts_ms) for a valid one.

    A fast path accepts a well-formed event with a handful of type tests (it runs once per input line); anything
    it does not accept goes through `explain_event`, which finds the first problem and words it."""
    if type(obj) is dict:
        t = obj.get("type")
        ids = _ID_FIELDS.get(t) if type(t) is str else None
        if ids is not None:
            g = obj.get
            ts = g("ts")
            if type(ts) is not int or ts < 0 or ts > MAX_TS:
                ts = parse_ts(ts)
            ok = ts is not None
            for name in ids:
                v = g(name)
                if type(v) is not str or not v:
                    ok = False
                    break
            if ok:
                tenant = g("tenant")
                tags = g("tags")
                if tenant is not None and type(tenant) is not str:
                    ok = False
                elif tags is not None and (type(tags) is not list or (tags and set(map(type, tags)) != _STR_ONLY)):
                    ok = False
                elif t == "generation":
                    msgs = g("messages")
                    model = g("model")
                    params = g("params")
                    ok = (type(g("output")) is str and type(msgs) is list and len(msgs) > 0
                          and type(model) is dict and type(model.get("base")) is str and model["base"] != ""
                          and (model.get("revision") is None or type(model["revision"]) is str)
                          and (model.get("adapter") is None or type(model["adapter"]) is str)
                          and (params is None or type(params) is dict))
                    if ok:
                        for m in msgs:
                            if (type(m) is not dict or type(m.get("role")) is not str or m["role"] not in ROLES
                                    or type(m.get("content")) is not str):
                                ok = False
                                break
                        ok = ok and msgs[-1]["role"] == "user"
                elif t == "edit":
                    ok = type(g("edited_output")) is str
                elif t == "rating":
                    v = g("value")
                    comment = g("comment")
                    ok = type(v) is int and (v == 1 or v == -1) and (comment is None or type(comment) is str)
                if ok:
                    return None, None, ts
    return explain_event(obj)


def explain_event(obj: Any) -> tuple[str | None, str | None, int | None]:
    """The thorough check: the first problem of an event as (field, reason, None), else (None, None, ts_ms)."""
    if type(obj) is not dict:
        return "$", f"must be a JSON object, got {type(obj).__name__}", None
    t = obj.get("type")
    if type(t) is not str:
        return "type", "missing" if t is None else "must be a string", None
    required = _REQUIRED.get(t)
    if required is None:
        return "type", f"unknown event type {t!r}", None
    for name in ("event_id", "session_id", "user_id"):
        reason = _check_field(obj, name, "id")
        if reason:
            return name, reason, None
    if "ts" not in obj:
        return "ts", "missing", None
    ts = parse_ts(obj["ts"])
    if ts is None:
        return "ts", f"must be integer milliseconds in [0, 2^63) or an RFC 3339 date-time with offset, got {obj['ts']!r}", None
    tenant = obj.get("tenant")
    if tenant is not None and type(tenant) is not str:
        return "tenant", "must be a string", None
    tags = obj.get("tags")
    if tags is not None and (type(tags) is not list or any(type(x) is not str for x in tags)):
        return "tags", "must be a list of strings", None
    for name, kind in required:
        reason = _check_field(obj, name, kind)
        if reason:
            return name, reason, None
    if t == "generation" and obj.get("params") is not None and type(obj["params"]) is not dict:
        return "params", "must be an object", None
    if t == "rating" and obj.get("comment") is not None and type(obj["comment"]) is not str:
        return "comment", "must be a string", None
    return None, None, ts


def load_json_schema() -> dict:
    import json

    return json.loads(SCHEMA_PATH.read_text())


# Typed records: what a producer writes. `to_dict()` gives the JSON object of one capture-log line.
@dataclass
class _Event:
    event_id: str
    ts: int | str
    session_id: str
    user_id: str
    tenant: Optional[str] = field(default=None, kw_only=True)
    tags: Optional[list[str]] = field(default=None, kw_only=True)

    type = ""

    def to_dict(self) -> dict:
        d = {"type": self.type, **asdict(self)}
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class Generation(_Event):
    generation_id: str
    request_id: str
    messages: list[dict]
    output: str
    model: dict
    params: Optional[dict] = field(default=None, kw_only=True)
    type = "generation"


@dataclass
class Edit(_Event):
    generation_id: str
    edited_output: str
    type = "edit"


@dataclass
class Regenerate(_Event):
    generation_id: str
    type = "regenerate"


@dataclass
class Accept(_Event):
    generation_id: str
    type = "accept"


@dataclass
class Rating(_Event):
    generation_id: str
    value: int
    comment: Optional[str] = field(default=None, kw_only=True)
    type = "rating"


@dataclass
class Rephrase(_Event):
    request_id: str
    new_request_id: str
    type = "rephrase"


@dataclass
class Abandon(_Event):
    request_id: str
    type = "abandon"


@dataclass
class Forget(_Event):
    type = "forget"


RECORD_TYPES = {cls.type: cls for cls in (Generation, Edit, Regenerate, Accept, Rating, Rephrase, Abandon, Forget)}
