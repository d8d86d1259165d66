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


def assign_split(tables: dict[str, pl.DataFrame], cfg: BuildConfig, events: pl.DataFrame,
                 take=None) -> dict[str, pl.DataFrame]:
    """Examples carry the unit as a key (`user_key`, `session_key`); the unit's id string, which the hash needs,
    is read from the event table (`take(column, rows)` gathers) for one example of each unit."""
    unit = "user_key" if cfg.split_by == "user" else "session_key"
    take = take or (lambda column, rows: column.gather(rows))
    # The unit and time of each example, from its generation in the event table.
    tables = {k: t.with_columns(meta_of(events, t, unit, "ts")) for k, t in tables.items()}
    units = pl.concat([t.select(unit, "meta_row") for t in tables.values()]).unique(subset=unit, keep="first")
    ids = take(events[unit.replace("_key", "_id")], units["meta_row"]).to_list()
    test = [k for k, u in zip(units[unit].to_list(), ids) if stable_fraction(u, cfg.split_seed) < cfg.test_fraction]
    test_set = pl.Series(test, dtype=pl.UInt64).implode()
    cut = cutoff_ms(cfg.time_cutoff)
    out = {}
    for kind, df in tables.items():
        df = df.with_columns(split=pl.when(pl.col(unit).is_in(test_set)).then(pl.lit("test", SPLIT))
                             .otherwise(pl.lit("train", SPLIT)))
        if cut is not None:
            wrong_side = ((pl.col("split") == "test") & (pl.col("ts") < cut)) | (
                (pl.col("split") == "train") & (pl.col("ts") >= cut))
            df = mark(df, wrong_side, "split_time_cutoff")
        out[kind] = df.drop(unit, "ts")
    if cfg.remove_test_prompts_from_train:
        test_prompts = pl.concat([t.filter(pl.col("drop").is_null() & (pl.col("split") == "test"))["_pk"]
                                  for t in out.values()]).unique().implode()
        out = {k: mark(t, (pl.col("split") == "train") & pl.col("_pk").is_in(test_prompts), "prompt_in_test")
               for k, t in out.items()}
    return out
