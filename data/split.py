"""Train/test split without leakage.

The unit (user or session) is hashed with a seed to a number in [0, 1); units below `test_fraction` are held out.
All examples of a unit land on one side, so (splitting by user) no user, session or turn is on both sides. With a
time cutoff, test examples must also be at/after it and train examples before it; the rest are dropped
(`split_time_cutoff`). Last, a training example whose prompt also occurs in the test split is removed
(`prompt_in_test`), across SFT, DPO and KTO.
"""

from __future__ import annotations

import hashlib

import polars as pl

from data.config import BuildConfig
from data.filters import mark
from data.rules import SPLIT, InMemory, key_part, meta_of, select_where
from data.records import parse_ts


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) from a key, the same on every machine and Python version (not Python's hash())."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def cutoff_ms(value: str | int | None) -> int | None:
    if value is None:
        return None
    ms = parse_ts(value)
    if ms is None:
        raise ValueError(f"time_cutoff: expected integer milliseconds or an RFC 3339 date-time, got {value!r}")
    return ms


# Examples are given their side a slice of this many at a time: their unit and time, gathered from the event
# table, are held for one slice.
SLICE_ROWS = 200_000
# The units (users or sessions) are given their side a part of their keys at a time, about this many units each;
# and the prompts of the test split are looked for in train a part of the prompt keys at a time, about this many
# test examples each. What is held at once is a part's, not every unit's or every test prompt's.
UNIT_PART_ROWS = 1_000_000


def _slices(df: pl.DataFrame):
    return (df.slice(start, SLICE_ROWS) for start in range(0, max(len(df), 1), SLICE_ROWS))


def assign_split(tables: dict[str, pl.DataFrame], cfg: BuildConfig, events: pl.DataFrame,
                 take=None, release=lambda: None, store=None) -> dict[str, pl.DataFrame]:
    """Examples carry the unit as a key (`user_key`, `session_key`) in the event table; the unit's id string, which
    the hash needs, is read from it (`take(column, rows)` gathers) for one example of each unit. `release()` is
    called after each slice (the build hands back the mapped pages the gathers touched). `store` (the build's
    spill) holds what is built a slice at a time: the units, the `split` column, the `drop` labels."""
    unit = "user_key" if cfg.split_by == "user" else "session_key"
    take = take or (lambda column, rows: column.gather(rows))
    spill_or_memory = store if store is not None else InMemory()
    test_set = _test_units(tables, cfg, events, unit, take, release, spill_or_memory).implode()
    cut = cutoff_ms(cfg.time_cutoff)
    side = pl.when(pl.col(unit).is_in(test_set)).then(pl.lit("test", SPLIT)).otherwise(pl.lit("train", SPLIT))
    wrong_side = ((pl.col("split") == "test") & (pl.col("ts") < cut)) | \
        ((pl.col("split") == "train") & (pl.col("ts") >= cut)) if cut is not None else None
    needs = [unit] if wrong_side is None else [unit, "ts"]
    out = {}
    for kind, df in tables.items():
        wrong = []  # whether each example is on the wrong side of the time cutoff (a bit an example)

        def sides():
            for part in _slices(df.select("meta_row")):
                part = part.with_columns(meta_of(events, part, *needs)).with_columns(split=side)
                if wrong_side is not None:
                    wrong.append(part.select(wrong_side.fill_null(False)).to_series())
                yield part["split"]
                release()

        df = df.with_columns(spill_or_memory.hold_pieces(f"{kind}-split", sides(), SPLIT).alias("split"))
        out[kind] = mark(df, pl.concat(wrong).rechunk(), "split_time_cutoff", store) if wrong else df
    if cfg.remove_test_prompts_from_train:
        out = _remove_test_prompts_from_train(out, store)
    return out


def _test_units(tables: dict[str, pl.DataFrame], cfg: BuildConfig, events: pl.DataFrame, unit: str, take,
                release, store) -> pl.Series:
    """The keys of the units on the test side. Each slice's distinct units (with one example's event row, to read
    the unit's id by) go to `store`; they are then given their side a part of the keys at a time."""
    units = store.batches(f"split-{unit}")
    for t in tables.values():
        for part in _slices(t.select("meta_row")):
            units.write(part.with_columns(meta_of(events, part, unit)).unique(subset=unit, keep="first"))
            release()
    units = units.frame()
    parts = max(1, -(-len(units) // UNIT_PART_ROWS))
    test = []
    for p in range(parts):
        mine = units if parts == 1 else select_where(units, [unit, "meta_row"], key_part(unit, parts, p))
        mine = mine.unique(subset=unit, keep="first")
        ids = take(events[unit.replace("_key", "_id")], mine["meta_row"]).to_list()
        test.append(pl.Series([k for k, u in zip(mine[unit].to_list(), ids)
                               if stable_fraction(u, cfg.split_seed) < cfg.test_fraction], dtype=pl.UInt64))
        del mine, ids
        release()
    return pl.concat(test)


def _remove_test_prompts_from_train(tables: dict[str, pl.DataFrame], store) -> dict[str, pl.DataFrame]:
    """Drop the kept training examples, across SFT, DPO and KTO, whose prompt a kept test example has: a part of
    the prompt keys at a time (of about UNIT_PART_ROWS test examples). Each part's drops are marked as an
    expression over the tables, not as a list of positions (4 bytes a dropped example, a third of the training
    examples in a log whose users share prompts)."""
    in_test = pl.col("drop").is_null() & (pl.col("split") == "test")
    n_test = sum(int(t.select(in_test.sum()).item()) for t in tables.values())
    parts = max(1, -(-n_test // UNIT_PART_ROWS))
    for p in range(parts):
        part = pl.lit(True) if parts == 1 else key_part("_pk", parts, p)
        prompts = pl.concat([t.lazy().filter(in_test & part).select("_pk").unique().collect()["_pk"]
                             for t in tables.values()]).unique()
        if prompts.is_empty():
            continue
        # The examples of other parts have other keys: a part's marks never touch the test prompts of the next.
        dropped = part & (pl.col("split") == "train") & pl.col("_pk").is_in(prompts.implode())
        tables = {kind: mark(t, dropped, "prompt_in_test", store) for kind, t in tables.items()}
        del prompts, dropped
    return tables
