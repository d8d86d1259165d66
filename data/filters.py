"""Example-level filters. Each finds the examples it removes, and `mark` labels them with its reason in the `drop`
column (null = kept); an example keeps the first reason that hit it. Filters look only at examples still kept, so
each count is what that filter removed on its own, in pipeline order. They work on keys and sizes computed once
per event (`event_features`), and gather texts only where a filter must read them (trivial edits, tokens).

A filter returns what it drops as an expression over the table's columns, as the positions of the examples, or
as a mask as long as the table.
With a `store` (the build's spill), `mark` makes each new `drop` column a window of rows at a time and holds it on
disk, like every other column of the tables: the labels are a byte an example that does not stay in memory."""

from __future__ import annotations

from typing import Callable, Iterator

import polars as pl

from data import rules
from data.config import BuildConfig
from data.rules import DROP_REASON, flags, key_part, meta_of, rows_sharing

# What a filter drops: an expression over the example table's columns, the examples' positions (UInt32), or a
# mask as long as the table (Boolean: a bit an example, where positions cost 4 bytes a dropped example).
Dropped = pl.Expr | pl.Series


def mark(df: pl.DataFrame, dropped: Dropped, reason: str, store=None) -> pl.DataFrame:
    """`df` with the kept examples that `dropped` selects labelled `reason`. `store.hold_pieces` (the build's
    spill) holds the new `drop` column, made a window of rows at a time (`rules.GATHER_WINDOW_ROWS`)."""
    is_mask = isinstance(dropped, pl.Series) and dropped.dtype == pl.Boolean
    if isinstance(dropped, pl.Series) and not is_mask:
        if len(dropped) == 0:
            return df
        dropped = dropped.cast(pl.UInt32).sort()
    if store is None:
        mask = dropped if isinstance(dropped, pl.Expr) else pl.lit(dropped if is_mask else flags(len(df), dropped))
        return df.with_columns(drop=_labelled(mask, reason))

    def windows():
        size = rules.GATHER_WINDOW_ROWS
        for start in range(0, len(df), size):
            window = df.slice(start, size)
            if isinstance(dropped, pl.Expr):
                mask = dropped
            elif is_mask:
                mask = pl.lit(dropped.slice(start, len(window)))
            else:
                lo, hi = dropped.search_sorted(start), dropped.search_sorted(start + len(window))
                mask = pl.lit(flags(len(window), dropped.slice(lo, hi - lo) - start))
            yield window.select(drop=_labelled(mask, reason)).to_series()
            rules.after_window()

    return df.with_columns(store.hold_pieces("drop", windows(), DROP_REASON))


def _labelled(mask: pl.Expr, reason: str) -> pl.Expr:
    return pl.when(pl.col("drop").is_null() & mask.fill_null(False)).then(pl.lit(reason, DROP_REASON)) \
        .otherwise(pl.col("drop"))


def _kept_in_windows(df: pl.DataFrame, where: pl.Expr, columns: list[str]) -> Iterator[pl.DataFrame]:
    """The kept examples that `where` selects, with their positions (`_i`) and `columns`, a window of the table's
    rows at a time: a filter that reads every such example holds one window's, not the table's."""
    size = rules.GATHER_WINDOW_ROWS
    for start in range(0, len(df), size):
        yield df.slice(start, size).lazy().with_row_index("_i", offset=start).filter(_alive() & where) \
            .select("_i", *columns).collect()
        rules.after_window()


# The filters that compare examples by prompt key look at the examples of one part of the prompt keys at a time,
# about this many examples each: what they hold does not grow with the table.
KEY_PART_ROWS = 250_000


def _by_prompt_part(df: pl.DataFrame, fn: Callable[[pl.Expr], pl.Series]) -> pl.Series:
    """fn(mask of one part of the prompt keys) for each part; the positions it returns, concatenated. Examples
    that a filter compares share a prompt key, so they are always in one part."""
    parts = max(1, -(-len(df) // KEY_PART_ROWS))
    if parts == 1:
        return fn(pl.lit(True))
    found = [fn(key_part("_pk", parts, p)) for p in range(parts)]
    return pl.concat(found)


def _alive() -> pl.Expr:
    return pl.col("drop").is_null()


# The order in which a filter keeps the first of several examples: by time, then by the ids of the example's turn
# and generation (their keys), then by the event rows it was built from (no two examples of a kind share both).
# Never by place in the table: which of two examples is kept must not depend on the order the tables were built.
ORDER = ["ts", "request_key", "generation_key", "meta_row", "text_row"]


def normalised(text: pl.Expr) -> pl.Expr:
    """Text with case, whitespace and punctuation removed: what a trivial edit does not change."""
    return text.str.to_lowercase().str.replace_all(r"[\s\p{P}\p{S}]+", "")


def event_features(events: pl.DataFrame) -> pl.DataFrame:
    """Per event row: prompt key and size (generations), text key, size and blankness (generation output or
    edit's edited_output). Computed once; examples gather them by row."""
    def per_text(f) -> pl.Expr:
        return pl.coalesce(f(pl.col("output")), f(pl.col("edited_output")))

    return events.select(
        # hash() of a null is not null in Polars: keep nulls null so coalesce picks the right column.
        pk=pl.when(pl.col("messages").is_not_null()).then(pl.col("messages").hash(11)),
        plen=pl.col("messages").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum(),
        tk=per_text(lambda c: pl.when(c.is_not_null()).then(c.hash(13))),
        tlen=per_text(lambda c: c.str.len_chars()),
        tblank=per_text(lambda c: c.str.contains(r"^\s*$")),
    )


Take = Callable[[pl.Series | pl.DataFrame, pl.Series], pl.Series | pl.DataFrame]


def gather_rows(column: pl.Series | pl.DataFrame, rows: pl.Series) -> pl.Series | pl.DataFrame:
    if isinstance(column, pl.DataFrame):
        return column.select(pl.all().gather(rows))
    return column.gather(rows)


def gather_text(events: pl.DataFrame, rows: pl.Series, take: Take = gather_rows) -> pl.Series:
    """The text an event row holds (a generation's output or an edit's edited_output). `take(columns, rows)`
    gathers (the build passes one that reads texts kept on disk window by window)."""
    both = take(events.select("output", "edited_output"), rows)
    return both.select(pl.coalesce("output", "edited_output")).to_series()


def empty_outputs(kind: str) -> pl.Expr:
    empty = pl.col("_tblank")
    if kind == "dpo":
        empty = empty | pl.col("_rblank")
    return empty


# Filters that read texts do it this many examples at a time: only one slice of texts is ever held in memory.
TEXT_SLICE_ROWS = 25_000


def _in_slices(live: pl.DataFrame, fn: Callable[[pl.DataFrame], pl.Series]) -> pl.Series:
    """fn over slices of `live`, results concatenated: what a text-reading filter holds is one slice's texts."""
    parts = [fn(live.slice(start, TEXT_SLICE_ROWS)) for start in range(0, len(live), TEXT_SLICE_ROWS)]
    return pl.concat(parts) if parts else pl.Series([], dtype=pl.UInt32)


def identical_pairs() -> pl.Expr:
    """A regeneration pair whose two texts are the same is no pair. Only exact copies are caught (by hash):
    reading their texts is not worth it."""
    return (pl.col("_tk") == pl.col("_rk")) & (pl.col("signal") != "edit")


def trivial_edits(df: pl.DataFrame, events: pl.DataFrame, min_edit_chars: int,
                  take: Take = gather_rows) -> pl.Series:
    """An edit that changes only whitespace/case/punctuation, or fewer than `min_edit_chars` characters, says
    nothing about preference."""
    found = [_in_slices(live, lambda part: _trivial_edits(part, events, min_edit_chars, take))
             for live in _kept_in_windows(df, pl.col("signal") == "edit", ["text_row", "rejected_row"])]
    return pl.concat(found) if found else pl.Series([], dtype=pl.UInt32)


def _trivial_edits(live: pl.DataFrame, events: pl.DataFrame, min_edit_chars: int, take: Take) -> pl.Series:
    """The `_i` of the edit pairs in `live` that change nothing that counts."""
    chosen = gather_text(events, live["text_row"], take)
    rejected = gather_text(events, live["rejected_row"], take)
    # The two normalisations (regex replacements over every edit pair's texts) run on two threads.
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        a, b = pool.map(lambda s: pl.select(normalised(pl.lit(s))).to_series(), (chosen, rejected))
    same = a == b
    trivial = live["_i"].filter(same)
    if min_edit_chars > 0:
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cpdist

        dist = cpdist(chosen.filter(~same).to_list(), rejected.filter(~same).to_list(),
                      scorer=Levenshtein.distance, score_cutoff=min_edit_chars, workers=1)
        trivial = pl.concat([trivial, live["_i"].filter(~same).filter(pl.Series(dist < min_edit_chars))])
    return trivial


def prompts_too_long(max_prompt_chars: int) -> pl.Expr:
    return pl.col("_plen") > max_prompt_chars


def completions_too_long(kind: str, max_completion_chars: int) -> pl.Expr:
    longest = pl.col("_tlen")
    if kind == "dpo":
        longest = pl.max_horizontal(longest, pl.col("_rlen"))
    return longest > max_completion_chars


def too_many_tokens(df: pl.DataFrame, kind: str, events: pl.DataFrame, cfg: BuildConfig,
                    take: Take = gather_rows) -> pl.Series:
    """Prompt + longest completion in tokens, with a fast tokenizer in batches."""
    rows = ["prompt_row", "text_row"] + (["rejected_row"] if kind == "dpo" else [])
    found = [_in_slices(live, lambda part: _too_many_tokens(part, kind, events, cfg, take))
             for live in _kept_in_windows(df, pl.lit(True), rows)]
    return pl.concat(found) if found else pl.Series([], dtype=pl.UInt32)


def _too_many_tokens(live: pl.DataFrame, kind: str, events: pl.DataFrame, cfg: BuildConfig, take: Take) -> pl.Series:
    from data.tokens import count_tokens

    prompts = take(events["messages"], live["prompt_row"])
    prompt_text = pl.select(pl.lit(prompts).list.eval(pl.element().struct.field("content")).list.join("\n")) \
        .to_series().to_list()
    n = count_tokens(cfg.tokenizer, prompt_text)
    longest = count_tokens(cfg.tokenizer, gather_text(events, live["text_row"], take).to_list())
    if kind == "dpo":
        rej = count_tokens(cfg.tokenizer, gather_text(events, live["rejected_row"], take).to_list())
        longest = [max(a, b) for a, b in zip(longest, rej)]
    over = pl.Series([a + b > cfg.max_tokens for a, b in zip(n, longest)], dtype=pl.Boolean)
    return live["_i"].filter(over)


def preference_conflicts(df: pl.DataFrame) -> pl.Series:
    """The same prompt with A over B and B over A: neither pair is used."""
    def conflicting(part: pl.Expr) -> pl.Series:
        live = df.lazy().with_row_index("_i").filter(_alive() & part).select("_i", "_pk", "_tk", "_rk").collect()
        reversed_ = live.select("_pk", pl.col("_rk").alias("_tk"), pl.col("_tk").alias("_rk")).unique()
        return live.join(reversed_, on=["_pk", "_tk", "_rk"], how="semi")["_i"]

    return _by_prompt_part(df, conflicting)


def kto_label_conflicts(df: pl.DataFrame) -> pl.Series:
    """The same prompt and completion labelled both ways: no label is used. (A generation judged both ways is
    `_conflict`, marked before any other filter.)"""
    def conflicting(part: pl.Expr) -> pl.Series:
        # Only pairs that occur more than once can disagree (found by sorting, see rules.rows_sharing).
        live = df.lazy().with_row_index("_i").filter(_alive() & part).select("_i", "_pk", "_tk", "label").collect()
        shared = rows_sharing(live.drop_nulls(["_pk", "_tk"]), ["_pk", "_tk"])
        return shared.filter(pl.col("label").n_unique().over("_pk", "_tk") > 1)["_i"]

    return _by_prompt_part(df, conflicting)


def exact_duplicates(df: pl.DataFrame, keys: list[str], events: pl.DataFrame) -> pl.Series:
    """Identical examples but the earliest."""
    def later_copies(part: pl.Expr) -> pl.Series:
        live = df.lazy().with_row_index("_i").filter(_alive() & part).select("_i", "meta_row", "text_row", *keys) \
            .collect()
        copies = rows_sharing(live, keys)  # only these need ordering
        copies = copies.with_columns(meta_of(events, copies, "ts", "request_key", "generation_key")).sort(ORDER)
        return copies.filter(pl.int_range(pl.len()).over(keys) > 0)["_i"]

    return _by_prompt_part(df, later_copies)


def near_duplicate_prompts(df: pl.DataFrame, events: pl.DataFrame, take: Take = gather_rows) -> pl.Series:
    """The examples of every turn but the earliest per normalised prompt text."""
    live = df.lazy().with_row_index("_i").filter(_alive()).select("_i", "prompt_row", "meta_row", "text_row") \
        .collect()
    if live.is_empty():
        return pl.Series([], dtype=pl.UInt32)
    live = live.with_columns(meta_of(events, live, "request_key", "ts", "generation_key"))
    def keys(part: pl.DataFrame) -> pl.Series:
        prompts = take(events["messages"], part["prompt_row"])
        return pl.select(normalised(pl.lit(prompts).list.eval(pl.element().struct.field("content")).list.join(" "))
                         .hash(17)).to_series()

    live = live.with_columns(_nk=_in_slices(live, keys)).sort(ORDER)
    live = live.with_columns(_first=pl.col("request_key").first().over("_nk"))
    return live.filter(pl.col("request_key") != pl.col("_first"))["_i"]


def over_regeneration_cap(df: pl.DataFrame, cap: int, events: pl.DataFrame) -> pl.Series:
    """Regeneration pairs beyond `cap` per turn: pairs over the final answer first, latest regeneration first."""
    def over_cap(part: pl.Expr) -> pl.Series:
        # The regeneration pairs of a turn share its final answer's prompt (`prompt_row`), so one part of the
        # prompt keys holds all of them.
        ranked = df.lazy().with_row_index("_i").filter(_alive() & pl.col("_rank").is_not_null() & part) \
            .select("_i", "_rank", "meta_row", "text_row").collect()
        ranked = ranked.with_columns(meta_of(events, ranked, "request_key", "generation_key")) \
            .sort("_rank", *ORDER[2:])
        return ranked.filter(pl.int_range(pl.len()).over("request_key") >= cap)["_i"]

    return _by_prompt_part(df, over_cap)


def apply_filters(tables: dict[str, pl.DataFrame], events: pl.DataFrame, cfg: BuildConfig,
                  take: Take = gather_rows, store=None) -> dict[str, pl.DataFrame]:
    """Each kind's filters; the kinds are independent, so they run on two threads (DPO's, the heaviest, on one).
    The filters that read texts gather them with `take(column, rows)`; `store` holds the labels (see `mark`)."""
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {kind: pool.submit(_filter_kind, kind, df, events, cfg, take, store)
                   for kind, df in sorted(tables.items(), key=lambda kv: kv[0] != "dpo")}
    return {kind: futures[kind].result() for kind in tables}


def filters_of(kind: str, events: pl.DataFrame, cfg: BuildConfig,
               take: Take) -> list[tuple[str, Callable[[pl.DataFrame], Dropped]]]:
    """A kind's filters in the order they run: (reason, what it drops from the table as the earlier ones left
    it)."""
    steps = []
    if kind == "kto":
        steps.append(("kto_label_conflict", lambda df: pl.col("_conflict")))
    if cfg.drop_empty:
        steps.append(("empty_output", lambda df: empty_outputs(kind)))
    if kind == "dpo":
        steps.append(("identical_pair", lambda df: identical_pairs()))
        steps.append(("trivial_edit", lambda df: trivial_edits(df, events, cfg.min_edit_chars, take)))
    if cfg.max_prompt_chars is not None:
        steps.append(("prompt_too_long", lambda df: prompts_too_long(cfg.max_prompt_chars)))
    if cfg.max_completion_chars is not None:
        steps.append(("completion_too_long", lambda df: completions_too_long(kind, cfg.max_completion_chars)))
    if cfg.tokenizer and cfg.max_tokens is not None:
        steps.append(("too_many_tokens", lambda df: too_many_tokens(df, kind, events, cfg, take)))
    if kind == "dpo":
        steps.append(("preference_conflict", preference_conflicts))
    elif kind == "kto":
        steps.append(("kto_label_conflict", kto_label_conflicts))
    keys = {"dpo": ["_pk", "_tk", "_rk"], "kto": ["_pk", "_tk", "label"]}.get(kind, ["_pk", "_tk"])
    steps.append(("duplicate_example", lambda df: exact_duplicates(df, keys, events)))
    if cfg.near_duplicate_prompts:
        steps.append(("near_duplicate_prompt", lambda df: near_duplicate_prompts(df, events, take)))
    if kind == "dpo" and cfg.max_pairs_per_turn > 0:
        steps.append(("regeneration_cap", lambda df: over_regeneration_cap(df, cfg.max_pairs_per_turn, events)))
    return steps


def _filter_kind(kind: str, df: pl.DataFrame, events: pl.DataFrame, cfg: BuildConfig, take: Take,
                 store=None) -> pl.DataFrame:
    for reason, dropped in filters_of(kind, events, cfg, take):
        df = mark(df, dropped(df), reason, store)
    return df
