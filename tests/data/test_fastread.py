"""The msgspec fast read path gives exactly what the per-line Python path gives, bad lines included."""

from __future__ import annotations

import copy
import json

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from data import events as ev
from data import fastread
from tests.data.conftest import Log
from tests.data.test_inputs import MALFORMED, small_log
from tests.data.test_schema import VALID

GEN = VALID[0]


def _gen(**changes) -> bytes:
    obj = copy.deepcopy(GEN)
    obj.update(changes)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# Lines where the two JSON readers could disagree, or that only the Python path can read.
EDGE_LINES = [
    b'{"event_id":"d1","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1",'
    b'"generation_id":"g2"}',  # repeated key: the last counts
    b'{"event_id":"d2","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":7,'
    b'"generation_id":"g2"}',  # the first copy has the wrong type
    b'{"event_id":"d3","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1",'
    b'"generation_id":7}',
    _gen(event_id="d4").replace(b'"role":"user"', b'"role":"system","role":"user"'),  # repeated key in a message
    _gen(event_id="d5").replace(b'"base":"m"', b'"base":"x","base":"m"'),  # and in the model
    _gen(event_id="d6", params={"seed": 10**30}),  # beyond 64 bits: orjson reads a float
    _gen(event_id="d7", params={"a": 1, "b": [1.5, "\u00e9", None]}),
    _gen(event_id="d8", params=None),
    _gen(event_id="d9", params=[1, 2]),  # not an object
    _gen(event_id="d10").replace(b'"temperature":0.7', b'"temperature":NaN'),
    _gen(event_id="d11").replace(b'"temperature":0.7', b'"temperature":1e400'),
    _gen(event_id="d12").replace(b'"temperature":0.7}', b'"temperature":0.7,}'),  # trailing comma
    _gen(event_id="d13", ts=2**63),  # does not fit the Int64 column: left to the Python path
    _gen(event_id="d14", ts="2026-11-02T09:14:03Z"),  # RFC 3339: the Python path converts it
    _gen(event_id="d15", ts=-1),
    _gen(event_id="d16", ts=1.0),
    _gen(event_id="d17", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
    _gen(event_id="d18", messages=[]),
    _gen(event_id="d19", messages=[{"role": "robot", "content": "a"}]),
    _gen(event_id="d20", messages=[{"role": "user", "content": "a", "name": "x"}]),  # extra key: ignored
    _gen(event_id="d21", model={"base": "m", "revision": None, "adapter": "a", "extra": 1}),
    _gen(event_id="d22", model={"base": ""}),
    _gen(event_id="d23", tags=[]),
    _gen(event_id="d24", tags=["a", 1]),
    _gen(event_id="d25", tenant=None, tags=None),
    _gen(event_id="d26", source_app="web"),  # a field outside the contract: kept in `extra`
    _gen(event_id="d27", output="caf\u00e9 \U0001F600 \\ \" \n"),
    _gen(event_id="d28").replace(b'"output":"hi"', b'"output":"\\ud83d\\ude00 \\u00e9"'),
    _gen(event_id="d29").replace(b'"output":"hi"', b'"output":"\\ud800"'),  # lone surrogate
    _gen(event_id="d30").replace(b'"output":"hi"', b'"output":"\xff"'),  # not UTF-8
    _gen(event_id="d31") + b"\r",
    b"\xef\xbb\xbf" + _gen(event_id="d32"),  # byte order mark
    b"  " + _gen(event_id="d33") + b"  ",
    b'{"event_id":"d34","type":"rating","ts":5,"session_id":"s","user_id":"u","generation_id":"g1","value":true}',
    b'{"event_id":"d35","type":"rating","ts":5,"session_id":"s","user_id":"u","generation_id":"g1","value":1.0}',
    b'{"event_id":"d36","type":"rating","ts":5,"session_id":"s","user_id":"u","generation_id":"g1","value":1,'
    b'"comment":null}',
    b'{"event_id":"d37","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1","value":1}',
    b'{"event_id":"d38","type":"forget","ts":5,"session_id":"s","user_id":"u","tenant":"acme"}',
    b'{"event_id":"d39","type":"edit","ts":5,"session_id":"s","user_id":"u","generation_id":"g1","edited_output":5}',
    b'{"event_id":"d40","type":"accept","ts":5,"session_id":"s","user_id":"","generation_id":"g1"}',
    b'{"event_id":"d41","type":"Accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1"}',
    b'{"event_id":"d42","type":"accept","ts":-0,"session_id":"s","user_id":"u","generation_id":"g1"}',
    b'{"type":"accept","event_id":"d43","user_id":"u","session_id":"s","generation_id":"g1","ts":5}',
    b"{\"event_id\":\"d44\",\"type\":\"abandon\",\"ts\":5,\"session_id\":\"s\",\"user_id\":\"u\",\"request_id\":\"r1\""
    b",\"x\":" + b"[" * 600 + b"]" * 600 + b"}",  # deep nesting outside the contract
    b"",
    b"   \t",
    b'{"event_id": "d45", "type": "accept", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g1"}',
    b'{"event_id":"d46","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1"} x',
    b'{"event_id":"d47","type":"accept","ts":5,"session_id":"s","user_id":"u","generation_id":"g1"}'
    b'{"event_id":"d48"}',
]


def _lines() -> list[bytes]:
    log = small_log()
    good = [orjson.dumps(e) for e in log.events] + [json.dumps(e).encode() for e in VALID]
    bad = EDGE_LINES + [line for line, _, _ in MALFORMED]
    return [x for pair in zip(good * 8, bad) for x in pair] + good


def _read_block(lines: list[bytes], fast: bool, max_line_bytes: int = 2000):
    result = ev.ReadResult(events=ev.empty_events())
    table = ev._BlockParser("log.jsonl", max_line_bytes, result, fast=fast).parse(lines, 1)
    return table, [q.to_dict() for q in result.quarantine], result.blank_lines, result.oversized


def _assert_same(lines: list[bytes], max_line_bytes: int = 2000) -> None:
    fast, python = _read_block(lines, True, max_line_bytes), _read_block(lines, False, max_line_bytes)
    if python[0] is None:
        assert fast[0] is None
    else:
        assert_frame_equal(fast[0], python[0])
    assert fast[1:] == python[1:]


def test_fast_and_python_paths_read_every_kind_of_line_the_same():
    lines = _lines() + [b'{"event_id":"big","type":"accept","pad":"' + b"x" * 3000 + b'"}']
    _assert_same(lines)
    table, quarantine, blank, oversized = _read_block(lines, True)
    assert blank == 2 and len(oversized) == 1
    assert {"d1", "d2", "d4", "d5", "d6", "d14", "d26", "d28", "d31", "d43"} <= set(table["event_id"])
    raws = {q["raw"] for q in quarantine}
    for k in (2, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 21, 23, 28, 29, 31, 33, 34, 38, 39, 40, 47, 48):
        assert EDGE_LINES[k].decode("utf-8", errors="backslashreplace") in raws, k
    row = table.filter(pl.col("event_id") == "d1").row(0, named=True)
    assert row["generation_id"] == "g2"  # the last of repeated keys, as orjson reads it
    assert table.filter(pl.col("event_id") == "d6")["params"][0] == '{"seed":1e+30}'
    assert table.filter(pl.col("event_id") == "d26")["extra"][0] == '{"source_app":"web"}'


def test_fast_path_takes_the_ordinary_lines():
    """Not a vacuous equality: msgspec decodes every well-formed contract line itself."""
    ordinary = [orjson.dumps(e) for e in small_log().events] + [
        json.dumps(e).encode() for e in VALID if type(e["ts"]) is int]
    records, taken, left = fastread.decode_lines(ordinary, 10_000)
    assert left == [] and fastread.resolve_params(records) == []
    assert taken == list(range(len(ordinary)))


def test_build_writes_the_same_bytes_and_manifest_with_either_path(build, tmp_path, monkeypatch):
    log = Log()
    for i in range(40):
        user = f"u{i % 6}"
        log.gen(f"g{i}", f"r{i}", f"Answer number {i}, with some detail.", prompt=f"Question {i % 9}?", user=user)
        [log.accept, log.regen, log.abandon][i % 3](f"g{i}" if i % 3 < 2 else f"r{i}", user=user)
        if i % 3 == 1:
            log.gen(f"g{i}b", f"r{i}", f"Second answer {i}.", prompt=f"Question {i % 9}?", user=user)
            log.edit(f"g{i}b", f"Second answer {i}, edited by the user to be right.", user=user)
    path = tmp_path / "log.jsonl"
    body = [orjson.dumps(e) for e in log.events]
    for k, line in enumerate(EDGE_LINES + [line for line, _, _ in MALFORMED]):
        body.insert(3 * k + 1, line)
    path.write_bytes(b"\n".join(body) + b"\n")
    results = []
    for fast in (True, False):
        monkeypatch.setattr(ev, "FAST_PATH", fast)
        m, out = build([path], test_fraction=0.3)
        for key in ("created", "timings_s", "cpu_s"):
            m.pop(key, None)
        files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                 if p.is_file() and p.name not in ("manifest.json", "README.md")}
        results.append((m, files))
    (m_fast, f_fast), (m_python, f_python) = results
    assert m_fast == m_python
    assert f_fast == f_python
    assert m_fast["quarantined"] > 30 and m_fast["examples"]["sft"]["train"] > 0


# Mutations of a valid event: each keeps or breaks the contract in a way one of the readers could see differently.
MUTATIONS = [
    lambda e: e,
    lambda e: {k: v for k, v in e.items() if k != "ts"},
    lambda e: {**e, "ts": str(e["ts"])},
    lambda e: {**e, "ts": float(e["ts"]) if type(e["ts"]) is int else e["ts"]},
    lambda e: {**e, "user_id": None},
    lambda e: {**e, "user_id": 3},
    lambda e: {**e, "tenant": 5},
    lambda e: {**e, "tags": ["x", None]},
    lambda e: {**e, "extra_field": {"n": 2**70}},
    lambda e: {**e, "value": 1},
    lambda e: {**e, "comment": "c"},
    lambda e: {**e, "messages": [{"role": "user", "content": 1}]},
    lambda e: {**e, "model": {"base": "m", "adapter": 3}},
    lambda e: {**e, "params": {"big": -(2**64)}},
    lambda e: {**e, "type": "unknown"},
]
TEXT_MUTATIONS = [
    lambda b: b,
    lambda b: b[:-3],
    lambda b: b.replace(b'"event_id"', b'"event_id":"x","event_id"', 1),
    lambda b: b.replace(b"}", b",}", 1),
    lambda b: b.replace(b'"', b"'", 2),
    lambda b: b + b" \r",
    lambda b: b.replace(b":", b": ", 3),
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(range(len(VALID))), st.sampled_from(MUTATIONS),
                          st.sampled_from(TEXT_MUTATIONS)), min_size=1, max_size=12))
def test_random_mutations_read_the_same_on_both_paths(cases):
    lines = []
    for i, (k, mutate, mutate_text) in enumerate(cases):
        event = mutate({**copy.deepcopy(VALID[k]), "event_id": f"m{i}"})
        try:
            text = orjson.dumps(event)
        except TypeError:  # orjson writes no int beyond 64 bits
            text = json.dumps(event).encode()
        lines.append(mutate_text(text))
    _assert_same(lines)
