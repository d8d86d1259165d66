"""The rules compare ids by 64-bit keys (data.events.KEY_COLUMNS): two different ids that share a key must never be
taken for one."""

from __future__ import annotations

import polars as pl
import pytest

from data import events as ev
from data import rules
from tests.data.conftest import Log


def _log_of_two_users() -> Log:
    log = Log()
    log.gen("g1", "r1", "First answer.", user="alice")
    log.accept("g1", user="alice")
    log.gen("g2", "r2", "Second answer.", user="bobby")  # as long as alice: the same key below
    log.edit("g2", "Second answer, with the detail that was missing.", user="bobby")
    return log


def collide_keys(set_attr, collide_with_seeds) -> None:
    """Make every id of one length share a key under the given seeds, wherever keys are computed (the reader and
    the build). `set_attr`: monkeypatch.setattr, or setattr outside a test (scripts/compare_builds.py)."""
    import data.build

    real = ev.id_key

    def id_key(column, seed=ev.KEY_SEED):
        if seed not in collide_with_seeds:
            return real(column, seed)
        col = pl.col(column) if isinstance(column, str) else column
        return pl.when(col.is_not_null()).then(col.str.len_bytes().cast(pl.UInt64))

    set_attr(ev, "id_key", id_key)
    set_attr(data.build, "id_key", id_key)


def _rows(out, kind):
    import datasets

    rows = datasets.load_from_disk(str(out / kind))["train"].to_list()
    return sorted(rows, key=lambda r: (r["request_id"], r["signal"], str(r)))


@pytest.mark.parametrize("part_rows", [10**9, 2], ids=["keys-checked-at-once", "keys-checked-by-part"])
def test_ids_that_share_a_key_are_keyed_again_and_build_the_same_examples(build, monkeypatch, part_rows):
    import data.build as b

    monkeypatch.setattr(b, "LINK_PART_ROWS", part_rows)  # 2: the key check spills its pairs by part of the keys
    log = _log_of_two_users()
    plain, plain_out = build(log)
    assert plain["id_keys"] == {"seed": ev.KEY_SEED, "collisions": []}
    collide_keys(monkeypatch.setattr, {ev.KEY_SEED})
    m, out = build(log)
    assert m["id_keys"]["seed"] == ev.KEY_SEED + 1
    assert len(m["id_keys"]["collisions"]) == 1 and "share the 64-bit key" in m["id_keys"]["collisions"][0]
    for kind in ("sft", "dpo", "kto"):
        assert _rows(out, kind) == _rows(plain_out, kind)
    assert m["accounting"] == plain["accounting"] and m["drops"] == plain["drops"]


def test_keys_that_keep_colliding_stop_the_build(build, monkeypatch):
    from data.build import KEY_ATTEMPTS, KeyCollision

    seeds = {ev.KEY_SEED + k for k in range(KEY_ATTEMPTS)}
    collide_keys(monkeypatch.setattr, seeds)
    with pytest.raises(KeyCollision, match=r"two different values of \w+ share the 64-bit key"):
        build(_log_of_two_users())


def test_events_whose_keys_collide_are_not_taken_for_copies():
    events = pl.DataFrame({
        "row": pl.Series([0, 1, 2, 3], dtype=pl.UInt32),
        "event_id": ["a", "b", "a", "b"],
        "event_key": pl.Series([7, 7, 7, 7], dtype=pl.UInt64),  # one key for two ids
        "output": ["x", "y", "x", "z"],
        "source": "log.jsonl", "line": [1, 2, 3, 4],
    })
    repeated, conflicting = rules.dedupe_events(events)
    assert repeated.to_list() == [2]  # "a" repeated with the same content
    assert sorted(conflicting["row"].to_list()) == [1, 3]  # "b" twice with different outputs


def test_the_tenant_error_names_the_tenants_not_their_keys(build):
    from data.build import TenantError

    log = Log()
    log.gen("g1", "r1", "An answer.", user="alice", tenant="acme")
    log.gen("g2", "r2", "Another answer.", user="bob", tenant="globex")
    log.gen("g3", "r3", "A third answer.", user="bob", tenant="globex")
    with pytest.raises(TenantError, match=r"globex: 2, acme: 1"):
        build(log)
