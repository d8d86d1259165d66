"""The fast read path: decode well-formed capture lines straight into typed records with msgspec.

The per-line Python path (`data.events._BlockParser._parse`: orjson + `data.records.check_event`) is the reference.
This path decodes each line against typed structs that encode the same rules (a tagged union on `type`, non-empty
ids, `ts` an integer in [0, 2^63), `value` +1 or -1, roles from the four allowed, no field a type does not
define), so decoding, checking and building the record is one call in C. A line it does not accept, for any
reason, goes back to the Python path by its line number; that path quarantines it with its reason, or reads it
if it is valid after all (an RFC 3339 `ts`, fields outside the contract kept in `extra`, ...). So the table and
the quarantine of a block are the same whichever path read a line; `tests/data/test_fastread.py` checks that on
logs with every kind of bad line.

Where msgspec and orjson could read the same text differently, the line is not taken here or the value is parsed
by orjson itself: `params` is kept as raw JSON and parsed by orjson (once per distinct text), since orjson turns
integers beyond 64 bits into floats and msgspec does not; a generation whose messages do not end with the user's
turn is handed back (a rule the structs cannot express). Both readers keep the last of repeated keys, reject
invalid UTF-8, lone surrogates, NaN, trailing commas and numbers out of range (checked in the tests).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec
import orjson
from msgspec import Meta, Raw, Struct

Id = Annotated[str, Meta(min_length=1)]
Millis = Annotated[int, Meta(ge=0, le=(1 << 63) - 1)]  # the event table stores ts as Int64


class Message(Struct, gc=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class Model(Struct, gc=False):
    base: Id
    revision: Optional[str] = None
    adapter: Optional[str] = None


class _NoModel:
    """What `model` reads as on records of types without one, so `model.base` etc. read as None."""

    base = revision = adapter = None


NO_MODEL = _NoModel()


class _Event(Struct, forbid_unknown_fields=True, tag_field="type", kw_only=True, gc=False):
    event_id: Id
    ts: Millis
    session_id: Id
    user_id: Id
    tenant: Optional[str] = None
    tags: Optional[list[str]] = None
    # Plain class attributes (no annotation) are not fields: every record reads every column, None where its type
    # has no such field (a subclass's field of the same name takes over), so each column is one attrgetter away.
    generation_id = request_id = messages = output = params = edited_output = value = comment = None
    new_request_id = None
    model = NO_MODEL


class Generation(_Event, tag="generation"):
    generation_id: Id
    request_id: Id
    messages: Annotated[list[Message], Meta(min_length=1)]
    output: str
    model: Model
    params: Raw = Raw()  # empty when absent (msgspec takes no Optional[Raw])


class Edit(_Event, tag="edit"):
    generation_id: Id
    edited_output: str


class Regenerate(_Event, tag="regenerate"):
    generation_id: Id


class Accept(_Event, tag="accept"):
    generation_id: Id


class Rating(_Event, tag="rating"):
    generation_id: Id
    value: Literal[1, -1]
    comment: Optional[str] = None


class Rephrase(_Event, tag="rephrase"):
    request_id: Id
    new_request_id: Id


class Abandon(_Event, tag="abandon"):
    request_id: Id


class Forget(_Event, tag="forget"):
    pass


RECORDS = (Generation, Edit, Regenerate, Accept, Rating, Rephrase, Abandon, Forget)
for _cls in RECORDS:
    _cls.type_name = _cls.__struct_config__.tag  # the `type` column (the tag itself is not an attribute)
# Read in C, one call per record: map(attrgetter) then zip(*rows) builds every column without a Python loop.
COLUMNS = ("type_name", "event_id", "ts", "user_id", "session_id", "tenant", "request_id", "generation_id", "output",
           "edited_output", "model.base", "model.revision", "model.adapter", "value", "comment", "new_request_id",
           "params")
_decode = msgspec.json.Decoder(Union[RECORDS]).decode  # type: ignore[valid-type]


def decode_lines(lines: list[bytes], max_line_bytes: int) -> tuple[list, list[int], list[int]]:
    """(records, their positions in `lines`, positions of the lines left to the Python path)."""
    records: list = []
    taken: list[int] = []
    left: list[int] = []
    add, take, leave = records.append, taken.append, left.append
    decode = _decode
    for i, line in enumerate(lines):
        if len(line) > max_line_bytes:
            leave(i)
            continue
        try:
            add(decode(line))
        except Exception:  # any decode or validation error, invalid UTF-8 included: the Python path says why
            leave(i)
            continue
        take(i)
    return records, taken, left


def resolve_params(records: list) -> list[int]:
    """Turn each generation's raw `params` into the text the Python path stores (orjson's parse, compact JSON);
    return the positions (in `records`) of the records to hand back: params not an object, or messages that do
    not end with the user's turn."""
    cache: dict[bytes, str | None | bool] = {}
    back = []
    for k, r in enumerate(records):
        if r.messages is None:
            continue
        if r.messages[-1].role != "user":
            back.append(k)
            continue
        key = bytes(r.params)
        if not key:
            r.params = None
            continue
        text = cache.get(key)
        if text is None and key not in cache:
            try:
                value = orjson.loads(key)
            except orjson.JSONDecodeError:
                value = False
            text = None if value is None else orjson.dumps(value).decode() if type(value) is dict else False
            cache[key] = text
        if text is False:
            back.append(k)
        else:
            r.params = text
    return back
