"""Property tests: any log, however odd, balances its books and never leaks a user or session across the split."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.conftest import read_split

USERS = ["u0", "u1", "u2", "u3", "u4"]
GENS = [f"g{i}" for i in range(8)]
REQS = [f"r{i}" for i in range(4)]
TEXTS = ["Alpha answer.", "alpha answer", "Beta reply here.", "Gamma text, longer than the rest.", "", "Delta."]
PROMPTS = ["How?", "Why?", "What now?"]


@st.composite
def event(draw, n: int) -> bytes:
    kind = draw(st.sampled_from(["generation"] * 4 + ["edit", "regenerate", "accept", "accept", "rating",
                                                     "rephrase", "abandon", "forget", "junk", "dup"]))
    user = draw(st.sampled_from(USERS))
    base = {"event_id": f"e{draw(st.integers(0, n + 3))}", "type": kind, "ts": draw(st.integers(0, 10_000)),
            "session_id": f"s-{user}-{draw(st.integers(0, 1))}", "user_id": user}
    if draw(st.booleans()):
        base["tenant"] = "acme"
    gid, rid = draw(st.sampled_from(GENS)), draw(st.sampled_from(REQS))
    if kind == "generation":
        base.update(generation_id=gid, request_id=rid, output=draw(st.sampled_from(TEXTS)),
                    messages=[{"role": "user", "content": draw(st.sampled_from(PROMPTS))}],
                    model={"base": "m", "adapter": draw(st.sampled_from([None, "v1"]))})
    elif kind == "edit":
        base.update(generation_id=gid, edited_output=draw(st.sampled_from(TEXTS)))
    elif kind in ("regenerate", "accept"):
        base.update(generation_id=gid)
    elif kind == "rating":
        base.update(generation_id=gid, value=draw(st.sampled_from([1, -1])))
    elif kind == "rephrase":
        base.update(request_id=rid, new_request_id=draw(st.sampled_from(REQS)))
    elif kind == "abandon":
        base.update(request_id=rid)
    elif kind == "junk":
        return draw(st.sampled_from([b"{", b"null", b'{"type": "x"}', b"\xff\xfe", b"", b'{"event_id": 3}']))
    line = json.dumps(base).encode()
    return line


@st.composite
def capture_log(draw) -> list[bytes]:
    n = draw(st.integers(0, 40))
    lines = [draw(event(n)) for _ in range(n)]
    # Exact repeats of earlier lines, like an exporter retry.
    for _ in range(draw(st.integers(0, 3))):
        if lines:
            lines.append(draw(st.sampled_from(lines)))
    return lines


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(lines=capture_log(), fraction=st.sampled_from([0.0, 0.3, 0.5]), by=st.sampled_from(["user", "session"]))
def test_books_balance_and_split_does_not_leak(tmp_path_factory, lines, fraction, by):
    from data.build import build_datasets

    tmp = tmp_path_factory.mktemp("prop")
    path = tmp / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if lines else b""))
    m = build_datasets([str(path)], tmp / "out", test_fraction=fraction, split_by=by, all_tenants=True)
    acc = m["accounting"]
    assert acc["read"] == len(lines)
    assert acc["read"] == acc["used"] + acc["dropped"] + acc["duplicate"] + acc["quarantined"]
    assert acc["dropped"] == sum(m["drops"].values())
    unit = "user_id" if by == "user" else "session_id"
    keys = [unit, "session_id", "request_id"]
    seen: dict[tuple, set] = {}
    for kind in ("sft", "dpo", "kto"):
        for split in ("train", "test"):
            for r in read_split(tmp / "out", kind, split):
                for k in keys:
                    seen.setdefault((k, r[k]), set()).add(split)
    assert all(len(sides) == 1 for sides in seen.values())
