"""The shipped JSON Schema, the fast per-line check and the thorough check agree; typed records produce valid events."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.records import (RECORD_TYPES, Abandon, Accept, Edit, Forget, Generation, Rating, Regenerate, Rephrase,
                          check_event, explain_event, load_json_schema)

BASE = {"event_id": "e1", "ts": 1790000000000, "session_id": "s1", "user_id": "u1"}
VALID = [
    Generation(**BASE, generation_id="g1", request_id="r1", output="hi",
               messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hello"}],
               model={"base": "m", "revision": "main", "adapter": None}, params={"temperature": 0.7},
               tags=["a"], tenant="acme").to_dict(),
    Edit(**BASE, generation_id="g1", edited_output="hey").to_dict(),
    Regenerate(**BASE, generation_id="g1").to_dict(),
    Accept(**{**BASE, "ts": "2026-11-02T09:14:03.250+01:00"}, generation_id="g1").to_dict(),
    Rating(**BASE, generation_id="g1", value=-1, comment="bad").to_dict(),
    Rephrase(**BASE, request_id="r1", new_request_id="r2").to_dict(),
    Abandon(**BASE, request_id="r1").to_dict(),
    Forget(**BASE).to_dict(),
]


def schema_valid(obj) -> bool:
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_json_schema())
    ok = validator.is_valid(obj)
    # The one rule JSON Schema cannot state: messages end with the user's turn.
    if ok and obj.get("type") == "generation":
        ok = obj["messages"][-1]["role"] == "user"
    return ok


def test_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(load_json_schema())


@pytest.mark.parametrize("event", VALID, ids=[e["type"] for e in VALID])
def test_typed_records_are_valid_for_all_three_checks(event):
    assert schema_valid(event)
    assert check_event(event)[0] is None
    assert explain_event(event)[0] is None
    assert set(RECORD_TYPES) == {e["type"] for e in VALID}


def test_ts_forms():
    assert check_event({**VALID[2], "ts": "2026-11-02T08:14:03Z"})[2] == 1793607243000
    assert check_event({**VALID[2], "ts": "2026-11-02T09:14:03+01:00"})[2] == 1793607243000
    assert check_event({**VALID[2], "ts": "2026-11-02T09:14:03"})[0] == "ts"  # no offset: ambiguous
    assert check_event({**VALID[2], "ts": -1})[0] == "ts"


# Mutations that hypothesis applies to valid events: drop a field, or set one to a value of some other type.
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3), st.just(""),
                       st.lists(st.text(max_size=2), max_size=2), st.just({"base": ""}), st.just({}),
                       st.just([{"role": "user", "content": 1}]), st.just([{"role": "bot", "content": "x"}]),
                       st.just("2026-01-01T00:00:00Z"), st.just(1.5))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fast_check_thorough_check_and_json_schema_agree(event, data):
    obj = copy.deepcopy(event)
    keys = sorted(set(obj) | {"messages", "model", "value", "tags", "tenant", "comment", "params"})
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            obj.pop(key, None)
        else:
            obj[key] = data.draw(ODD_VALUES)
    fast, thorough, schema = check_event(obj)[0] is None, explain_event(obj)[0] is None, schema_valid(obj)
    assert fast == thorough == schema, (json.dumps(obj), check_event(obj), explain_event(obj), schema)
