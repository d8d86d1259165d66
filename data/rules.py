"""The spec's rules as steps over Polars tables: events -> linked events -> SFT/DPO/KTO example tables.

Every step is a small function that returns its output and reports, per named reason, which event rows (`row`, the
event's position in the read) it dropped. `data.build` runs them in order and does the accounting.
Example tables carry `src0`, `src1`, ...: the event rows each example was built from, so that every event that ends up
in no example can be given the reason why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

META_COLUMNS = ["signal", "request_id", "session_id", "user_id", "tenant", "tags", "ts", "generation_id",
                "model_base", "model_adapter"]
# Example-level drop reasons, in the order their steps run: an event that ends up in no kept example is reported
# under the first of these that removed an example built from it.
EXAMPLE_REASONS = [
    "kind_not_built", "kto_label_conflict", "empty_output", "trivial_edit", "identical_pair", "prompt_too_long",
    "completion_too_long", "too_many_tokens", "preference_conflict", "duplicate_example", "near_duplicate_prompt",
    "regeneration_cap", "split_time_cutoff", "prompt_in_test",
]
# The example tables' label columns as Enums (a byte an example, where a string costs 16): `drop` (null = kept),
# `signal` (categories sorted, so that sorting by it sorts by name) and `split`.
DROP_REASON = pl.Enum(EXAMPLE_REASONS)
SIGNAL = pl.Enum(sorted(["final", "edit", "regenerate", "accept", "rating", "rephrase", "abandon"]))
SPLIT = pl.Enum(["train", "test"])


@dataclass
class Drops:
    """Event rows dropped by one step, by reason (reasons in the order the step reports them)."""

    frames: list[pl.DataFrame] = field(default_factory=list)

    def add(self, rows: pl.Series | pl.DataFrame, reason: str) -> None:
        if isinstance(rows, pl.DataFrame):
            rows = rows["row"]
        if len(rows):
            self.frames.append(rows.cast(pl.UInt32).rename("row").to_frame()
                               .with_columns(reason=pl.lit(reason, pl.String)))


def split_off(df: pl.DataFrame, mask: pl.Expr, reason: str, drops: Drops) -> pl.DataFrame:
    """Remove the rows matching `mask` from `df`, recording them under `reason`."""
    mask = mask.fill_null(False)
    gone = df.filter(mask)
    drops.add(gone, reason)
    return df.filter(~mask)


def rows_sharing(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """The rows of `df` whose `by` values occur more than once (in `by` order). Found by sorting, which holds
    less than half the memory of Polars' is_duplicated() (its hash groups) and is faster."""
    if df.is_empty():
        return df
    df = df.sort(by)
    same_prev = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(1)) for c in by).fill_null(False)
    same_next = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(-1)) for c in by).fill_null(False)
    return df.filter(same_prev | same_next)


def _latest_first(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(["ts", "row"], descending=[True, True])


def dedupe_events(events: pl.DataFrame, rows_of=None) -> tuple[pl.Series, pl.DataFrame]:
    """Same event_id twice: same content -> duplicate (the first copy in input order is kept); other content ->
    every copy is a conflict. Returns (rows of the repeated copies, full rows of the conflicting copies).

    The candidates are found by key (`event_key` where the table has keys), then grouped by the id strings
    themselves: two ids that share a key are never taken for copies of one event. `rows_of(events, rows)` reads
    the candidates' full rows (the build's reads them from disk)."""
    by = "event_key" if "event_key" in events.columns else "event_id"
    rows = rows_sharing(events.select("row", by), [by])["row"].sort()
    dups = rows_of(events, rows) if rows_of is not None else events.filter(pl.col("row").is_in(rows.implode()))
    if dups.is_empty():
        return pl.Series("row", [], pl.UInt32), dups
    content = [c for c in events.columns if c not in ("row", "source", "line") and not c.endswith("_key")]
    dups = dups.with_columns(_h=pl.struct(content).hash(7))
    dups = dups.with_columns(_v=pl.col("_h").n_unique().over("event_id"))
    conflicting = dups.filter(pl.col("_v") > 1).drop("_h", "_v")
    same = dups.filter(pl.col("_v") == 1).sort("row")
    repeated = same.filter(pl.int_range(pl.len()).over("event_id") > 0)["row"]
    return repeated, conflicting


def link_events(events: pl.DataFrame, drops: Drops, gone: pl.Series | None = None) -> tuple[pl.DataFrame,
                                                                                            pl.DataFrame]:
    """Tie feedback to its generation; set aside orphans, a second generation claiming a known id, and requests
    spread over several users or sessions.

    Adds `gen_user`, `gen_tenant` (owner and tenant of the generation or request a row is about) and `gen_row`
    (the row of the generation a row is about) to every row. `gone`: rows that take no part and are left out
    (repeated and conflicting copies, counted by dedupe), in the same copy of the events as the orphans. Returns
    (linked events, orphans)."""
    gone = gone if gone is not None else pl.Series("row", [], pl.UInt32)
    gens = events.filter(pl.col("type") == "generation").select(
        "row", "ts", "generation_key", "user_key", "session_key", "tenant_key", "request_key")
    if len(gone):
        gens = gens.filter(~pl.col("row").is_in(gone.implode()))
    reused = rows_sharing(gens, ["generation_key"]).sort("ts", "row")  # usually none
    second = reused.filter(~pl.col("generation_key").is_first_distinct())
    if len(second):
        drops.add(second, "duplicate_generation_id")
        gens = gens.filter(~pl.col("row").is_in(second["row"].implode()))
        gone = pl.concat([gone, second["row"].cast(pl.UInt32)])
    out = pl.col("row").is_in(gone.implode())

    by_gen = gens.select("generation_key", pl.col("user_key").alias("gen_user"),
                         pl.col("tenant_key").alias("gen_tenant"), pl.col("request_key").alias("gen_request"),
                         pl.col("row").alias("gen_row"))
    by_req = (gens.group_by("request_key").agg(pl.col("user_key").first().alias("req_user"),
                                              pl.col("tenant_key").first().alias("req_tenant")))
    # Joined on one key at a time and set beside the events: the event columns are not copied.
    events = events.with_columns(events.select("generation_key").join(
        by_gen, on="generation_key", how="left", maintain_order="left").drop("generation_key"))
    events = events.with_columns(events.select("request_key").join(
        by_req, on="request_key", how="left", maintain_order="left").drop("request_key"))
    on_gen = pl.col("type").is_in(["edit", "regenerate", "accept", "rating"])
    on_req = pl.col("type").is_in(["rephrase", "abandon"])
    orphan = ((on_gen & pl.col("gen_user").is_null()) | (on_req & pl.col("req_user").is_null())).fill_null(False) \
        & ~out
    # Regenerations of one turn share its request_id; a request whose generations name different users or
    # sessions cannot be put on one side of a split, so none of it is used.
    spread = gens.group_by("request_key").agg(
        ((pl.col("user_key").n_unique() > 1) | (pl.col("session_key").n_unique() > 1)).alias("_bad"))
    bad = spread.filter(pl.col("_bad"))["request_key"].implode()
    inconsistent = ((pl.col("type") == "generation") & pl.col("request_key").is_in(bad)
                    | on_gen & pl.col("gen_request").is_in(bad)
                    | on_req & pl.col("request_key").is_in(bad)).fill_null(False) & ~orphan & ~out
    fate = events.select("row", _orphan=orphan, _inconsistent=inconsistent, _out=out)
    orphans = events.filter(fate["_orphan"]).drop("gen_user", "gen_tenant", "gen_request", "gen_row",
                                                  "req_user", "req_tenant")
    drops.add(fate.filter("_orphan"), "orphan")
    drops.add(fate.filter("_inconsistent"), "inconsistent_request")
    if len(orphans) or fate["_inconsistent"].any() or len(gone):  # one copy of the events for all three
        events = events.filter(~fate["_orphan"] & ~fate["_inconsistent"] & ~fate["_out"])
    events = events.with_columns(
        gen_user=pl.when(on_req).then(pl.col("req_user")).otherwise(pl.col("gen_user"))
        .fill_null(pl.col("user_key")),
        gen_tenant=pl.when(pl.col("type") == "generation").then(pl.col("tenant_key"))
        .when(on_req).then(pl.col("req_tenant")).when(on_gen).then(pl.col("gen_tenant"))
        .otherwise(pl.col("tenant_key")),
    ).drop("req_user", "req_tenant", "gen_request")
    return events, orphans


def apply_forget(events: pl.DataFrame, drops: Drops) -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """Remove every event of a user who asked to be forgotten, and feedback about their generations.

    Returns (remaining events without forget rows, the forget rows themselves, forgotten users' keys)."""
    is_forget = pl.col("type") == "forget"
    forget_rows = events.filter(is_forget)
    forgotten = forget_rows["user_key"].unique().implode()
    gone = (~is_forget & (pl.col("user_key").is_in(forgotten) | pl.col("gen_user").is_in(forgotten))).fill_null(False)
    drops.add(events.filter(gone), "forgotten_user")
    if len(forget_rows):  # one copy of the events, without both
        events = events.filter(~is_forget & ~gone)
    return events, forget_rows, set(forget_rows["user_key"].unique().to_list())


def tenants_of(events: pl.DataFrame) -> dict[str | None, int]:
    counts = events.group_by("gen_tenant").len()
    return {r["gen_tenant"]: r["len"] for r in counts.iter_rows(named=True)}


def supersede(events: pl.DataFrame, drops: Drops) -> pl.DataFrame:
    """One signal of each kind per target: the latest edit/rating/accept/regenerate of a generation counts, the
    latest rephrase/abandon of a request counts; the earlier ones are dropped as superseded."""
    target = pl.when(pl.col("type").is_in(["rephrase", "abandon"])).then(pl.col("request_key")) \
        .otherwise(pl.col("generation_key"))
    feedback = events.filter(pl.col("type") != "generation").select("row", "type", "ts", _target=target)
    # Only targets with several signals of one kind need ordering.
    several = rows_sharing(feedback, ["type", "_target"])
    stale = _latest_first(several).filter(pl.int_range(pl.len()).over("type", "_target") > 0)
    for t in stale["type"].unique().sort().to_list():
        drops.add(stale.filter(pl.col("type") == t), f"superseded_{t}")
    return events.filter(~pl.col("row").is_in(stale["row"].implode())) if len(stale) else events


# What the rules after dedupe read (each step copies these rows, so no column more: event_key served dedupe, and
# new_request_id is in no rule). Ids as 64-bit keys (data.events.KEY_COLUMNS): the strings wait on disk.
LIGHT_COLUMNS = ["row", "type", "ts", "user_key", "session_key", "tenant_key", "request_key", "generation_key",
                 "value"]


def generation_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per generation (`row`), with the rows of the (latest) feedback on it and of the turn-level signals
    of its request. Only ids and row numbers: texts stay in the event table until the write."""
    gens = events.filter(pl.col("type") == "generation").select("row", "generation_key", "request_key", "ts")

    # Joined on the generation's row number (set by link_events): integer joins, not string ones.
    def feedback(t: str, *cols: pl.Expr | str) -> pl.DataFrame:
        return events.filter(pl.col("type") == t).select(
            pl.col("gen_row").alias("row"), pl.col("row").alias(f"{t}_row"), pl.col("ts").alias(f"{t}_ts"), *cols)

    gens = (gens.join(feedback("edit"), on="row", how="left")
            .join(feedback("accept"), on="row", how="left")
            .join(feedback("regenerate"), on="row", how="left")
            .join(feedback("rating", "value"), on="row", how="left"))
    # Turn-level: the last generation of a request is the one a rephrase or an abandon judges.
    last = gens.sort("ts", "row").group_by("request_key").agg(pl.col("row").last())["row"]
    gens = gens.with_columns(is_last=pl.col("row").is_in(last.implode()))
    for t in ("rephrase", "abandon"):
        turn = events.filter(pl.col("type") == t).select("request_key", pl.col("row").alias(f"{t}_row"))
        gens = gens.join(turn, on="request_key", how="left").with_columns(
            pl.when(pl.col("is_last")).then(pl.col(f"{t}_row")).alias(f"{t}_row"))
    return gens


def _src(*cols: str) -> list[pl.Expr]:
    """The event rows an example was built from, as columns `src0`, `src1`, ... (null where a signal is absent);
    plain columns rather than one list column, which costs microseconds a row to build."""
    return [pl.col(c).cast(pl.UInt32).alias(f"src{i}") for i, c in enumerate(cols)]


def src_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("src")]


def final_answers(gens: pl.DataFrame) -> pl.DataFrame:
    """The final answer of each turn: the accepted generation (latest accept) or, without an accept, the last
    edited one; its text is the (latest) edit if there is one, else the output. `final_row` is the event row
    holding that text (the edit, or the generation)."""
    cands = gens.filter(pl.col("accept_row").is_not_null() | pl.col("edit_row").is_not_null())
    cands = cands.with_columns(
        _accepted=pl.col("accept_row").is_not_null(),
        _when=pl.when(pl.col("accept_row").is_not_null()).then(pl.col("accept_ts")).otherwise(pl.col("edit_ts")),
    ).sort(["_accepted", "_when", "row"], descending=[True, True, True])
    finals = cands.unique(subset="request_key", keep="first", maintain_order=True).drop("_accepted", "_when")
    return finals.with_columns(final_row=pl.coalesce("edit_row", "row"),
                               final_is_edit=pl.col("edit_row").is_not_null())


# Example tables hold event rows, not texts: `prompt_row` (the generation whose messages are the prompt),
# `text_row` (completion / chosen: a generation's output or an edit's edited_output), `rejected_row` (DPO),
# `meta_row` (the generation judged or rejected, whose ids and model are the example's metadata), `src` (every
# event the example was built from).
def sft_examples(finals: pl.DataFrame) -> pl.DataFrame:
    return finals.select(
        pl.col("row").alias("prompt_row"), pl.col("final_row").alias("text_row"), pl.col("row").alias("meta_row"),
        pl.lit("final", SIGNAL).alias("signal"), *_src("row", "accept_row", "edit_row"))


def dpo_examples(gens: pl.DataFrame, finals: pl.DataFrame) -> pl.DataFrame:
    """Edit pairs (edited over original) and regeneration rankings (final answer over each regenerated-away
    generation of the turn, plus the original over them when the final answer is an edit). `_rank` orders the
    regeneration pairs of a turn for the per-turn cap."""
    edits = gens.filter(pl.col("edit_row").is_not_null()).select(
        pl.col("row").alias("prompt_row"), pl.col("edit_row").alias("text_row"),
        pl.col("row").alias("rejected_row"), pl.col("row").alias("meta_row"), pl.lit("edit", SIGNAL).alias("signal"),
        *_src("row", "edit_row"), pl.lit(None, pl.Int64).alias("_rank"))
    f = finals.select("request_key", "final_row", "final_is_edit", pl.col("row").alias("f_row"),
                      pl.col("accept_row").alias("f_accept"), pl.col("edit_row").alias("f_edit"))
    away = gens.filter(pl.col("regenerate_row").is_not_null()).select(
        "request_key", pl.col("ts").alias("r_ts"), pl.col("row").alias("r_row"), "regenerate_row")
    pairs = away.join(f, on="request_key", how="inner").filter(pl.col("r_row") != pl.col("f_row"))
    over_final = pairs.select(
        pl.col("f_row").alias("prompt_row"), pl.col("final_row").alias("text_row"),
        pl.col("r_row").alias("rejected_row"), pl.col("r_row").alias("meta_row"),
        pl.lit("regenerate", SIGNAL).alias("signal"),
        *_src("f_row", "f_accept", "f_edit", "r_row", "regenerate_row"), (pl.col("r_ts") * -1).alias("_rank"))
    over_original = pairs.filter(pl.col("final_is_edit")).select(
        pl.col("f_row").alias("prompt_row"), pl.col("f_row").alias("text_row"),
        pl.col("r_row").alias("rejected_row"), pl.col("r_row").alias("meta_row"),
        pl.lit("regenerate", SIGNAL).alias("signal"),
        *_src("f_row", "f_accept", "f_edit", "r_row", "regenerate_row"),
        (pl.col("r_ts") * -1 + (1 << 50)).alias("_rank"))  # after every final-answer pair of the turn
    return pl.concat([edits, over_final, over_original], how="diagonal_relaxed")


def kto_examples(gens: pl.DataFrame) -> pl.DataFrame:
    """One row per judged generation: desirable (accepted unedited, +1) or undesirable (-1, regenerated away,
    last output before a rephrase or an abandon). A generation with signals both ways is returned with
    `_conflict` set so the filters drop it with a reason."""
    accepted_plain = pl.col("accept_row").is_not_null() & pl.col("edit_row").is_null()
    good = accepted_plain | (pl.col("value") == 1)
    bad = ((pl.col("value") == -1) | pl.col("regenerate_row").is_not_null() | pl.col("rephrase_row").is_not_null()
           | pl.col("abandon_row").is_not_null())
    judged = gens.with_columns(_good=good.fill_null(False), _bad=bad.fill_null(False)).filter(
        pl.col("_good") | pl.col("_bad"))
    signal = (pl.when(pl.col("value").is_not_null()).then(pl.lit("rating"))
              .when(pl.col("_good")).then(pl.lit("accept"))
              .when(pl.col("regenerate_row").is_not_null()).then(pl.lit("regenerate"))
              .when(pl.col("rephrase_row").is_not_null()).then(pl.lit("rephrase"))
              .otherwise(pl.lit("abandon")))
    return judged.select(
        pl.col("row").alias("prompt_row"), pl.col("row").alias("text_row"), pl.col("_good").alias("label"),
        pl.col("row").alias("meta_row"), signal.cast(SIGNAL).alias("signal"),
        *_src("row", "accept_row", "rating_row", "regenerate_row", "rephrase_row", "abandon_row"),
        (pl.col("_good") & pl.col("_bad")).alias("_conflict"))


def attach(examples: pl.DataFrame, features: pl.DataFrame, meta: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Give each example the per-row features (prompt key and size, text key and size) and metadata it needs
    for filtering and splitting, by gathering from the per-event tables (no text is copied)."""
    idx = {c: examples[c] for c in ("prompt_row", "text_row", "meta_row")}
    cols = [
        features["pk"].gather(idx["prompt_row"]).alias("_pk"),
        features["plen"].gather(idx["prompt_row"]).alias("_plen"),
        features["tk"].gather(idx["text_row"]).alias("_tk"),
        features["tlen"].gather(idx["text_row"]).alias("_tlen"),
        features["tblank"].gather(idx["text_row"]).alias("_tblank"),
    ]
    if kind == "dpo":
        rej = examples["rejected_row"]
        cols += [features["tk"].gather(rej).alias("_rk"), features["tlen"].gather(rej).alias("_rlen"),
                 features["tblank"].gather(rej).alias("_rblank")]
    m = meta.select("request_key", "session_key", "user_key", "ts", "generation_key")
    cols += [m[c].gather(idx["meta_row"]) for c in m.columns]
    return examples.with_columns(cols).with_columns(drop=pl.lit(None, DROP_REASON))
