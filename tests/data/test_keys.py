"""The rules compare ids by 64-bit keys (data.events.KEY_COLUMNS): two different ids that share a key must never be
taken for one."""

from __future__ import annotations

import polars as pl
import pytest

from data import events as ev
from data import rules
from tests.data.conftest import Log


def test_ids_that_share_a_key_stop_the_build(build, monkeypatch):
    from data.build import BuildError

    log = Log()
    log.gen("g1", "r1", "First answer.", user="alice")
    log.accept("g1", user="alice")
    log.gen("g2", "r2", "Second answer.", user="bobby")  # same length as alice: the same key below
    log.accept("g2", user="bobby")
    # A key that collides on purpose: the length of the id.
    monkeypatch.setattr(ev, "id_key", lambda name: pl.when(pl.col(name).is_not_null()).then(
        pl.col(name).str.len_bytes().cast(pl.UInt64)))
    with pytest.raises(BuildError, match=r"two different values of \w+ share the 64-bit key"):
        build(log)


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
