"""Example-level filters. Each marks the examples it removes with a reason in the `drop` column (null = kept);
an example keeps the first reason that hit it. Filters look only at examples still kept, so each count is what
that filter removed on its own, in pipeline order."""

from __future__ import annotations

import polars as pl

from data.config import BuildConfig


def mark(df: pl.DataFrame, mask: pl.Expr, reason: str) -> pl.DataFrame:
    return df.with_columns(
        drop=pl.when(pl.col("drop").is_null() & mask.fill_null(False)).then(pl.lit(reason))
        .otherwise(pl.col("drop")))


def _mark_keys(df: pl.DataFrame, keys: pl.DataFrame, on: list[str], reason: str) -> pl.DataFrame:
    flagged = df.join(keys.unique().with_columns(_hit=pl.lit(True)), on=on, how="left")
    return mark(flagged, pl.col("_hit"), reason).drop("_hit")


def _alive() -> pl.Expr:
    return pl.col("drop").is_null()


def _prompt_chars() -> pl.Expr:
    return pl.col("_prompt").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()


def _normalised(text: pl.Expr) -> pl.Expr:
    """Text with case, whitespace and punctuation removed: what a trivial edit does not change."""
    return text.str.to_lowercase().str.replace_all(r"[\s\p{P}\p{S}]+", "")


def with_keys(df: pl.DataFrame, kind: str) -> pl.DataFrame:
    df = df.with_columns(_pk=pl.col("_prompt").hash(11), _tk=pl.col("_text").hash(13))
    if kind == "dpo":
        df = df.with_columns(_rk=pl.col("_rejected_text").hash(13))
    return df


def empty_outputs(df: pl.DataFrame, kind: str) -> pl.DataFrame:
    empty = pl.col("_text").str.strip_chars().str.len_chars() == 0
    if kind == "dpo":
        empty = empty | (pl.col("_rejected_text").str.strip_chars().str.len_chars() == 0)
    return mark(df, empty, "empty_output")


def trivial_pairs(df: pl.DataFrame, min_edit_chars: int) -> pl.DataFrame:
    """An edit that changes only whitespace/case/punctuation, or fewer than `min_edit_chars` characters, says
    nothing about preference; a regeneration pair whose texts are the same that way is no pair either."""
    same = _normalised(pl.col("_text")) == _normalised(pl.col("_rejected_text"))
    df = mark(df, same & (pl.col("signal") == "edit"), "trivial_edit")
    df = mark(df, same, "identical_pair")
    if min_edit_chars > 0:
        idx = df.with_row_index("_i").filter(_alive() & (pl.col("signal") == "edit"))
        if len(idx):
            from rapidfuzz.distance import Levenshtein
            from rapidfuzz.process import cpdist

            dist = cpdist(idx["_text"].to_list(), idx["_rejected_text"].to_list(), scorer=Levenshtein.distance,
                          score_cutoff=min_edit_chars, workers=1)
            small = idx["_i"].filter(pl.Series(dist < min_edit_chars))
            df = mark(df, pl.int_range(pl.len()).is_in(small.implode()), "trivial_edit")
    return df


def length_limits(df: pl.DataFrame, kind: str, cfg: BuildConfig) -> pl.DataFrame:
    if cfg.max_prompt_chars is not None:
        df = mark(df, _prompt_chars() > cfg.max_prompt_chars, "prompt_too_long")
    if cfg.max_completion_chars is not None:
        longest = pl.col("_text").str.len_chars()
        if kind == "dpo":
            longest = pl.max_horizontal(longest, pl.col("_rejected_text").str.len_chars())
        df = mark(df, longest > cfg.max_completion_chars, "completion_too_long")
    return df


def token_limits(tables: dict[str, pl.DataFrame], cfg: BuildConfig) -> dict[str, pl.DataFrame]:
    """Prompt + completion tokens with a fast tokenizer, in batches; only when a tokenizer path is given."""
    if not cfg.tokenizer or cfg.max_tokens is None:
        return tables
    from data.tokens import count_tokens

    out = {}
    for kind, df in tables.items():
        idx = df.with_row_index("_i").filter(_alive())
        prompt_text = idx.select(pl.col("_prompt").list.eval(pl.element().struct.field("content"))
                                 .list.join("\n")).to_series().to_list()
        n = count_tokens(cfg.tokenizer, prompt_text)
        longest = count_tokens(cfg.tokenizer, idx["_text"].to_list())
        if kind == "dpo":
            rej = count_tokens(cfg.tokenizer, idx["_rejected_text"].to_list())
            longest = [max(a, b) for a, b in zip(longest, rej)]
        over = idx["_i"].filter(pl.Series([a + b > cfg.max_tokens for a, b in zip(n, longest)], dtype=pl.Boolean))
        out[kind] = mark(df, pl.int_range(pl.len()).is_in(over.implode()), "too_many_tokens")
    return out


def preference_conflicts(df: pl.DataFrame) -> pl.DataFrame:
    """The same prompt with A over B and B over A: neither pair is used."""
    alive = df.filter(_alive()).select("_pk", "_tk", "_rk").unique()
    reversed_ = alive.select("_pk", pl.col("_rk").alias("_tk"), pl.col("_tk").alias("_rk"))
    both = alive.join(reversed_, on=["_pk", "_tk", "_rk"], how="semi")
    return _mark_keys(df, both, ["_pk", "_tk", "_rk"], "preference_conflict")


def kto_conflicts(df: pl.DataFrame) -> pl.DataFrame:
    df = mark(df, pl.col("_conflict"), "kto_label_conflict")
    alive = df.filter(_alive()).group_by("_pk", "_tk").agg(pl.col("label").n_unique().alias("_n"))
    both = alive.filter(pl.col("_n") > 1).select("_pk", "_tk")
    return _mark_keys(df, both, ["_pk", "_tk"], "kto_label_conflict")


def exact_duplicates(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Keep the earliest of identical examples."""
    df = df.with_row_index("_i")
    order = df.filter(_alive()).sort("ts", "_i")
    later = order.filter(pl.int_range(pl.len()).over(keys) > 0)["_i"]
    return mark(df, pl.col("_i").is_in(later.implode()), "duplicate_example").drop("_i")


def near_duplicate_prompts(df: pl.DataFrame) -> pl.DataFrame:
    """Keep the examples of one turn per normalised prompt text (the earliest turn)."""
    text = pl.col("_prompt").list.eval(pl.element().struct.field("content")).list.join(" ")
    df = df.with_columns(_nk=_normalised(text).hash(17))
    first = (df.filter(_alive()).sort("ts").group_by("_nk", maintain_order=True)
             .agg(pl.col("request_id").first().alias("_first")))
    df = df.join(first, on="_nk", how="left")
    return mark(df, pl.col("request_id") != pl.col("_first"), "near_duplicate_prompt").drop("_nk", "_first")


def regeneration_cap(df: pl.DataFrame, cap: int) -> pl.DataFrame:
    """At most `cap` regeneration pairs per turn: pairs over the final answer first, latest regeneration first."""
    if cap <= 0:
        return df
    df = df.with_row_index("_i")
    ranked = df.filter(_alive() & pl.col("_rank").is_not_null()).sort("_rank", "_i")
    over = ranked.filter(pl.int_range(pl.len()).over("request_id") >= cap)["_i"]
    return mark(df, pl.col("_i").is_in(over.implode()), "regeneration_cap").drop("_i")


def apply_filters(tables: dict[str, pl.DataFrame], cfg: BuildConfig) -> dict[str, pl.DataFrame]:
    out = {}
    for kind, df in tables.items():
        df = with_keys(df, kind)
        if kind == "kto":
            df = mark(df, pl.col("_conflict"), "kto_label_conflict")
        if cfg.drop_empty:
            df = empty_outputs(df, kind)
        if kind == "dpo":
            df = trivial_pairs(df, cfg.min_edit_chars)
        df = length_limits(df, kind, cfg)
        out[kind] = df
    out = token_limits(out, cfg)
    for kind, df in out.items():
        if kind == "dpo":
            df = preference_conflicts(df)
            df = exact_duplicates(df, ["_pk", "_tk", "_rk"])
        elif kind == "kto":
            df = kto_conflicts(df)
            df = exact_duplicates(df, ["_pk", "_tk", "label"])
        else:
            df = exact_duplicates(df, ["_pk", "_tk"])
        if cfg.near_duplicate_prompts:
            df = near_duplicate_prompts(df)
        if kind == "dpo":
            df = regeneration_cap(df, cfg.max_pairs_per_turn)
        out[kind] = df
    return out
