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
from data.rules import SPLIT, meta_of
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


def _slices(df: pl.DataFrame):
    return (df.slice(start, SLICE_ROWS) for start in range(0, max(len(df), 1), SLICE_ROWS))


def assign_split(tables: dict[str, pl.DataFrame], cfg: BuildConfig, events: pl.DataFrame,
                 take=None, release=lambda: None) -> dict[str, pl.DataFrame]:
    """Examples carry the unit as a key (`user_key`, `session_key`) in the event table; the unit's id string, which
    the hash needs, is read from it (`take(column, rows)` gathers) for one example of each unit. `release()` is
    called after each slice (the build hands back the mapped pages the gathers touched)."""
    unit = "user_key" if cfg.split_by == "user" else "session_key"
    take = take or (lambda column, rows: column.gather(rows))
    # The unit of each example is its generation's, in the event table.
    units = []
    for t in tables.values():
        for part in _slices(t.select("meta_row")):
            units.append(part.with_columns(meta_of(events, part, unit)).unique(subset=unit, keep="first"))
            release()
    units = pl.concat(units).unique(subset=unit, keep="first")
    ids = take(events[unit.replace("_key", "_id")], units["meta_row"]).to_list()
    test = [k for k, u in zip(units[unit].to_list(), ids) if stable_fraction(u, cfg.split_seed) < cfg.test_fraction]
    test_set = pl.Series(test, dtype=pl.UInt64).implode()
    del units, ids
    cut = cutoff_ms(cfg.time_cutoff)
    side = pl.when(pl.col(unit).is_in(test_set)).then(pl.lit("test", SPLIT)).otherwise(pl.lit("train", SPLIT))
    wrong_side = pl.lit(False) if cut is None else (
        ((pl.col("split") == "test") & (pl.col("ts") < cut)) | ((pl.col("split") == "train") & (pl.col("ts") >= cut)))
    out = {}
    for kind, df in tables.items():
        parts = []
        for part in _slices(df.select("meta_row")):
            part = part.with_columns(meta_of(events, part, unit, "ts")).select(split=side, ts="ts")
            parts.append(part.select("split", _wrong=wrong_side.fill_null(False)))
            release()
        parts = pl.concat(parts)
        df = df.with_columns(parts["split"])
        out[kind] = mark(df, pl.lit(parts["_wrong"]), "split_time_cutoff") if cut is not None else df
    if cfg.remove_test_prompts_from_train:
        test_prompts = pl.concat([t.lazy().filter(pl.col("drop").is_null() & (pl.col("split") == "test"))
                                  .select("_pk").unique().collect()["_pk"] for t in out.values()]).unique().implode()
        out = {k: mark(t, (pl.col("split") == "train") & pl.col("_pk").is_in(test_prompts), "prompt_in_test")
               for k, t in out.items()}
    return out
