"""The spec's rules as steps over Polars tables: events -> linked events -> SFT/DPO/KTO example tables.

Every step is a small function that returns its output and reports, per named reason, which event rows (`row`, the
event's position in the read) it dropped. `data.build` runs them in order and does the accounting.
Example tables carry `src0`, `src1`, ...: the event rows each example was built from, so that every event that ends up
in no example can be given the reason why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from data.records import FEEDBACK_ON_GENERATION, FEEDBACK_ON_REQUEST

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
    """Event rows dropped by one step, by reason (reasons in the order the step reports them). With a `store`
    (the build's spill, see `InMemory`), each step's rows go to disk as they are added: they wait there until
    the accounting, 4 bytes a dropped event (a forgotten user's every event, every superseded signal)."""

    steps: list[tuple[str, pl.Series]] = field(default_factory=list)  # (reason, rows)
    store: object = None

    def add(self, rows: pl.Series | pl.DataFrame, reason: str) -> None:
        if isinstance(rows, pl.DataFrame):
            rows = rows["row"]
        if len(rows):
            rows = rows.cast(pl.UInt32).rename("row")
            if self.store is not None:
                rows = self.store.hold_pieces(f"drops-{reason}", [rows], pl.UInt32).rename("row")
            self.steps.append((reason, rows))


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


def dedupe_events(events: pl.DataFrame, rows_of=None, parts: int = 1,
                  release=lambda: None) -> tuple[pl.Series, pl.DataFrame]:
    """Same event_id twice: same content -> duplicate (the first copy in input order is kept); other content ->
    every copy is a conflict. Returns (rows of the repeated copies, full rows of the conflicting copies).

    The candidates are found by key (`event_key` where the table has keys), then grouped by the id strings
    themselves: two ids that share a key are never taken for copies of one event. `rows_of(events, rows)` reads
    the candidates' full rows (the build's reads them from disk). With keys, the candidates are sought in `parts`
    passes, each over the events whose key falls in one part; `release()` after each (the build hands back the
    mapped pages a pass read)."""
    by = "event_key" if "event_key" in events.columns else "event_id"
    if by != "event_key" or parts == 1:
        rows = rows_sharing(events.select("row", by), [by])["row"].sort()
    else:
        found = []
        for p in range(parts):
            # A mask (a bit an event) rather than an expression in windows: the windows' pieces are chunks, and
            # rows_sharing's sort would copy the part's rows to join them (~12 MB, against 2 at 16M events).
            rows = events.select("row", by).filter(in_key_part(events[by], parts, p))
            found.append(rows_sharing(rows, [by])["row"])
            release()
        rows = pl.concat(found).sort()
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


def key_part(key: str, parts: int, part: int) -> pl.Expr:
    """Whether each 64-bit key of column `key` falls in part `part` of `parts` (key modulo parts; a null key:
    part 0). As a filter of a lazy query, or of `select_where`, it costs no column as long as the table (Polars
    runs it in morsels; `select_where` a window at a time); a mask made beforehand and passed in as a literal
    makes a lazy query hold several bytes a row."""
    return (pl.col(key) % parts).fill_null(0) == part


def in_key_part(keys: pl.Series, parts: int, part: int) -> pl.Series:
    """`key_part` as a mask (a bit a row), computed in windows (`mask_of`): the remainders of a whole column would
    be a column as long as it."""
    return mask_of(keys.to_frame(), key_part(keys.name, parts, part))


def select_where(frame: pl.DataFrame, columns: list, mask: pl.Series | pl.Expr) -> pl.DataFrame:
    """`frame.select(columns).filter(mask)`, a window of GATHER_WINDOW_ROWS rows at a time (see `after_window`).
    `mask`: a Boolean Series as long as the frame, or an expression over the frame's columns (evaluated a window
    at a time: no mask as long as the frame is ever made)."""
    def one(window: pl.DataFrame, start: int) -> pl.DataFrame:
        if isinstance(mask, pl.Expr):  # only the columns the mask and `columns` read are filtered
            return window.select(_read_by([mask, *columns])).filter(mask).select(columns)
        return window.select(columns).filter(mask.slice(start, len(window)))

    if len(frame) <= GATHER_WINDOW_ROWS:
        return one(frame, 0)
    out = []
    for start in range(0, len(frame), GATHER_WINDOW_ROWS):
        out.append(one(frame.slice(start, GATHER_WINDOW_ROWS), start))
        after_window()
    return pl.concat(out)


def _read_by(exprs: list) -> list[str]:
    """The columns that expressions (or column names) read, in a stable order."""
    names = set()
    for e in exprs:
        names.update([e] if isinstance(e, str) else e.meta.root_names())
    return sorted(names)


def mask_of(frame: pl.DataFrame, where: pl.Expr, store=None, name: str = "mask") -> pl.Series:
    """The Boolean expression `where` over `frame` (a null is false), a window of GATHER_WINDOW_ROWS rows at a
    time; held by `store` (the build's spill: a bit a row in a file, mapped back) as it is made."""
    def windows():
        for start in range(0, max(len(frame), 1), GATHER_WINDOW_ROWS):
            yield frame.slice(start, GATHER_WINDOW_ROWS).select(where.fill_null(False)).to_series()
            after_window()

    return (store or InMemory()).hold_pieces(name, windows(), pl.Boolean)


def flags(n: int, positions: pl.Series) -> pl.Series:
    """A Boolean Series of length n, true at `positions`."""
    flags = pl.repeat(False, n, dtype=pl.Boolean, eager=True)
    return flags.scatter(positions, True) if len(positions) else flags


class Parts:
    """A table built in parts, in memory (the build's spill holds them on disk instead: `TextSpill.batches`)."""

    def __init__(self):
        self.parts: list[pl.DataFrame] = []

    def write(self, part: pl.DataFrame) -> None:
        self.parts.append(part)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.parts)


class InMemory:
    """Where the steps put what they build in parts when the build keeps nothing on disk. The build's spill
    (`data.textspill.TextSpill`) has the same three methods and writes to files instead."""

    def scratch(self, name: str, n: int, dtype):
        import numpy as np

        return np.zeros(n, dtype=dtype)

    def batches(self, name: str) -> Parts:
        return Parts()

    def hold_pieces(self, name: str, pieces, dtype: pl.DataType) -> pl.Series:
        pieces = [p.cast(dtype) for p in pieces]
        if dtype == pl.Boolean:  # as the spill holds a mask
            pieces = [p.fill_null(False) for p in pieces]
        return pl.concat(pieces, rechunk=dtype == pl.Boolean).alias(name) if pieces else pl.Series(name, [], dtype)


def link_events(events: pl.DataFrame, drops: Drops, gone: pl.Series | None = None, parts: int = 1,
                release=lambda: None, store=InMemory()) -> tuple[pl.DataFrame, pl.Series, pl.Series]:
    """Tie feedback to its generation; set aside orphans, a second generation claiming a known id, and requests
    spread over several users or sessions.

    Adds `owner_row` to every row: the row of the event whose owner, tenant and turn a row has (the generation a
    feedback row is about; the first generation of the request a rephrase or abandon is about; the row itself for
    generations and forgets; null for an orphan). The other tables read the owner's columns through it
    (`by_owner`). The rows it sets aside stay in the table: `alive` says which rows are still in play, and the
    steps after it narrow it down, so the events are copied once, at the end (`turns_in_play`), not once a step.
    `gone`: rows that take no part (repeated and conflicting copies, counted by dedupe). Returns (linked events,
    alive, orphan rows).

    The joins run in `parts` passes, each over the generations and feedback whose generation (then request) key
    falls in one part: what a pass holds is a part's; `release()` after each. The (feedback row, owner) pairs a
    pass finds go to `store`, sorted by row; `owner_row` is then made from them a window of rows at a time and
    held by `store` (4 bytes an event that a build keeps on disk), like the masks of the rows out of play and of
    the rows alive (a bit an event). Which rows a pass reads is an expression over the table, evaluated a window
    at a time (`select_where`): no other mask as long as the log is made."""
    gone = gone if gone is not None else pl.Series("row", [], pl.UInt32)
    events = events.with_columns(mask_of(events, pl.col("row").is_in(gone.implode()), store, "_out"))  # out of play
    on_gen = pl.col("type").is_in(FEEDBACK_ON_GENERATION)
    on_req = pl.col("type").is_in(FEEDBACK_ON_REQUEST)
    is_gen = (pl.col("type") == "generation") & ~pl.col("_out")
    found_owners = []  # a table per pass: (row, owner) sorted by row

    def link(rows: pl.Expr, key: str, found: pl.DataFrame) -> None:  # owner of the feedback `rows` by `key`
        asks = select_where(events, ["row", key], rows)
        hit = asks.join(found, on=key, how="inner").select("row", "owner").sort("row")
        if len(hit):
            table = store.batches(f"owners-{len(found_owners)}")
            table.write(hit)
            found_owners.append(table.frame())

    # Feedback on a generation: joined by the generation's id. A second generation with a known id is set aside
    # (the first, by time then row, keeps it).
    second = []
    for p in range(parts):
        part = key_part("generation_key", parts, p)
        gens = select_where(events, ["row", "ts", "generation_key"], is_gen & part)
        reused = rows_sharing(gens, ["generation_key"]).sort("ts", "row")
        later = reused.filter(~pl.col("generation_key").is_first_distinct())["row"]
        if len(later):
            second.append(later)
            gens = gens.filter(~pl.col("row").is_in(later.implode()))
        link(on_gen & part, "generation_key", gens.select("generation_key", owner="row"))
        release()
    second = pl.concat(second) if second else pl.Series("row", [], pl.UInt32)
    drops.add(second, "duplicate_generation_id")
    if len(second):
        events = events.with_columns(mask_of(events, pl.col("_out") | pl.col("row").is_in(second.implode()), store,
                                             "_out"))

    # Regenerations of one turn share its request_id; a request whose generations name different users or
    # sessions cannot be put on one side of a split, so none of it is used. A rephrase or abandon is about the
    # request's first generation's owner.
    bad = []
    for p in range(parts):
        part = key_part("request_key", parts, p)
        gens = select_where(events, ["row", "request_key", "user_key", "session_key"], is_gen & part)
        by_req = gens.group_by("request_key").agg(
            pl.col("row").min().alias("owner"),
            ((pl.col("user_key").n_unique() > 1) | (pl.col("session_key").n_unique() > 1)).alias("_bad"))
        bad.append(by_req.filter(pl.col("_bad"))["request_key"])
        link(on_req & part, "request_key", by_req.select("request_key", "owner"))
        release()
    bad = pl.concat(bad)

    events = events.with_columns(store.hold_pieces(
        "owner_row", _owners_by_window(events, on_gen | on_req, found_owners), pl.UInt32))
    orphan = (on_gen | on_req) & pl.col("owner_row").is_null() & ~pl.col("_out")
    orphans = select_where(events, ["row"], orphan)["row"]
    drops.add(orphans, "orphan")
    in_play = ~orphan & ~pl.col("_out")
    if not len(bad):
        alive = mask_of(events, in_play, store, "alive")
        return events.drop("_out"), alive, orphans
    # A generation, the feedback on it and its request's rephrase or abandon: all in the turn.
    bad, inconsistent = bad.implode(), []

    def alive_in(part: pl.DataFrame, turn: pl.Series) -> pl.Series:
        found = part.with_columns(_turn=turn).select(
            "row", _alive=in_play, _bad=pl.col("_turn").is_in(bad).fill_null(False) & (pl.col("type") != "forget"))
        inconsistent.append(found["row"].filter(found["_alive"] & found["_bad"]))
        return found["_alive"] & ~found["_bad"]

    alive = store.hold_pieces("alive", by_owner(events, "request_key", alive_in), pl.Boolean)
    drops.add(pl.concat(inconsistent), "inconsistent_request")
    return events.drop("_out"), alive, orphans


def _owners_by_window(events: pl.DataFrame, feedback: pl.Expr, found: list[pl.DataFrame]):
    """`owner_row`, a window of GATHER_WINDOW_ROWS rows at a time: a row's own row, or for feedback (the rows
    `feedback` selects) the owner a pass of `link_events` found for it (`found`: tables of (row, owner), each
    sorted by row), else null."""
    for start in range(0, len(events), GATHER_WINDOW_ROWS):
        window = events.slice(start, GATHER_WINDOW_ROWS)
        owner = window.select(pl.when(feedback).then(None).otherwise(pl.col("row")).cast(pl.UInt32)).to_series()
        for table in found:
            lo, hi = table["row"].search_sorted(pl.Series([start, start + len(window)], dtype=pl.UInt32),
                                                side="left").to_list()
            if hi > lo:
                hit = table.slice(lo, hi - lo)
                owner = owner.scatter(hit["row"] - start, hit["owner"])
        yield owner.alias("owner_row")
        after_window()


# Rows the steps after link read at a time, where they read the columns of each row's owner.
OWNER_SLICE_ROWS = 1_000_000


def by_owner(events: pl.DataFrame, column: str, fn):
    """fn(slice of the table, `column` of each of its rows' owners) over the table slice by slice (see
    `link_events`), so that the owners' values are never gathered for the whole table at once. A generator: each
    slice's result is made when the caller asks for it."""
    values = events.select(column)
    for start in range(0, max(len(events), 1), OWNER_SLICE_ROWS):  # an empty table: one slice
        part = events.slice(start, OWNER_SLICE_ROWS)
        yield fn(part, gather_in_windows(values, part["owner_row"]).to_series())


def apply_forget(events: pl.DataFrame, alive: pl.Series, drops: Drops,
                 store=InMemory()) -> tuple[pl.Series, pl.Series]:
    """Take out every event of a user who asked to be forgotten, and feedback about their generations.

    Returns (alive without both, held by `store` like link's, the rows of the forget events themselves)."""
    events = events.with_columns(_alive=alive)
    is_forget = pl.col("type") == "forget"
    forget_rows = select_where(events, ["row", "user_key"], is_forget & pl.col("_alive"))
    if forget_rows.is_empty():
        return alive, forget_rows["row"]
    forgotten, gone = forget_rows["user_key"].unique().implode(), []

    def alive_in(part: pl.DataFrame, owner_user: pl.Series) -> pl.Series:
        found = part.with_columns(_owner=owner_user).select(
            "row", "_alive", _forget=is_forget,
            _about=(pl.col("user_key").is_in(forgotten) | pl.col("_owner").is_in(forgotten)).fill_null(False))
        gone.append(found["row"].filter(found["_alive"] & ~found["_forget"] & found["_about"]))
        return found["_alive"] & ~found["_forget"] & ~found["_about"]

    alive = store.hold_pieces("alive", by_owner(events, "user_key", alive_in), pl.Boolean)
    drops.add(pl.concat(gone), "forgotten_user")
    return alive, forget_rows["row"]


def tenants_of(events: pl.DataFrame, alive: pl.Series) -> dict[int | None, int]:
    """Rows in play per tenant (key) of their owner."""
    counts = pl.concat(by_owner(events.with_columns(_alive=alive), "tenant_key", lambda part, tenant: (
        tenant.filter(part["_alive"]).value_counts(name="len")))).rename({"tenant_key": "t"})
    counts = counts.group_by("t").agg(pl.col("len").sum())
    return {r["t"]: r["len"] for r in counts.iter_rows(named=True)}


def drop_other_tenants(events: pl.DataFrame, alive: pl.Series, tenant: int, drops: Drops,
                       store=InMemory()) -> pl.Series:
    """Take the rows in play whose owner is of another tenant out of play (`other_tenant`). Returns alive, held
    by `store` like link's."""
    other = []

    def alive_in(part: pl.DataFrame, t: pl.Series) -> pl.Series:
        mine = part["_alive"] & ~t.ne_missing(tenant)
        other.append(part["row"].filter(part["_alive"] & ~mine))
        return mine

    alive = store.hold_pieces("alive", by_owner(events.with_columns(_alive=alive), "tenant_key", alive_in),
                              pl.Boolean)
    drops.add(pl.concat(other), "other_tenant")
    return alive


def supersede(events: pl.DataFrame, alive: pl.Series, drops: Drops) -> pl.Series:
    """One signal of each kind per target: the latest edit/rating/accept/regenerate of a generation counts, the
    latest rephrase/abandon of a request counts; the earlier ones are dropped as superseded."""
    target = pl.when(pl.col("type").is_in(FEEDBACK_ON_REQUEST)).then(pl.col("request_key")) \
        .otherwise(pl.col("generation_key"))
    feedback = events.select("row", "type", "ts", _target=target).filter(alive & (events["type"] != "generation"))
    # Only targets with several signals of one kind need ordering.
    several = rows_sharing(feedback, ["type", "_target"])
    stale = _latest_first(several).filter(pl.int_range(pl.len()).over("type", "_target") > 0)
    for t in stale["type"].unique().sort().to_list():
        drops.add(stale.filter(pl.col("type") == t), f"superseded_{t}")
    return alive & ~events["row"].is_in(stale["row"].implode()) if len(stale) else alive


# What the rules after dedupe read: event_key served dedupe, and new_request_id is in no rule. Ids as 64-bit keys
# (data.events.KEY_COLUMNS): the strings wait on disk.
LIGHT_COLUMNS = ["row", "type", "ts", "user_key", "session_key", "tenant_key", "request_key", "generation_key",
                 "value"]
# What the example rules read of the events still in play (the one copy `turns_in_play` makes); `gen_row`: the
# generation a feedback row is about.
TURN_COLUMNS = ["row", "type", "ts", "request_key", "generation_key",
                pl.when(pl.col("type").is_in(FEEDBACK_ON_GENERATION)).then(pl.col("owner_row")).alias("gen_row"),
                "value"]


def turn_buckets(events: pl.DataFrame, n: int, store=InMemory()) -> pl.Series:
    """The bucket (0 to n-1) of each row's turn: the request key of its owner (the row or, for feedback, the
    generation it is about; see `link_events`). Every row a turn's rules read (supersede, the generation table,
    the examples) is in the turn's bucket, so the buckets are built one at a time. Held by `store` as it is made
    (2 bytes an event that a build keeps on disk)."""
    return store.hold_pieces("turn_bucket", by_owner(
        events, "request_key", lambda part, turn: (turn % n).fill_null(0).cast(pl.UInt16)), pl.UInt16)


def turns_in_play(events: pl.DataFrame, alive: pl.Series | pl.Expr, drops: Drops) -> pl.DataFrame:
    """The rows in play (`alive`: a mask, or an expression over the table such as a bucket's) after supersede,
    with the columns the example rules read: whole turns only (see `turn_buckets`)."""
    part = select_where(events, TURN_COLUMNS, alive)
    return part.filter(supersede(part, pl.repeat(True, len(part), dtype=pl.Boolean, eager=True), drops))


def examples_of(turns: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The SFT, DPO and KTO example tables of whole turns in play."""
    gens = generation_table(turns)
    finals = final_answers(gens)
    return {"sft": sft_examples(finals), "dpo": dpo_examples(gens, finals), "kto": kto_examples(gens)}


def generation_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per generation (`row`), with the rows of the (latest) feedback on it and of the turn-level signals
    of its request. Only ids and row numbers: texts stay in the event table until the write."""
    gens = events.lazy().filter(pl.col("type") == "generation").select(
        "row", "generation_key", "request_key", "ts").collect()

    # Each signal's columns are joined onto the generations' key alone and set beside them, so the growing table
    # is never copied. Superseding left at most one signal of a kind per target, so each join keeps the rows.
    # Joined on the generation's row number (set by link_events): integer joins, not string ones.
    def beside(on: str, found: pl.DataFrame) -> list[pl.Series]:
        return gens.select(on).join(found, on=on, how="left", maintain_order="left").drop(on).get_columns()

    def feedback(t: str, *cols: str) -> pl.DataFrame:
        return events.lazy().filter(pl.col("type") == t).select(
            pl.col("gen_row").alias("row"), pl.col("row").alias(f"{t}_row"), *cols).collect()

    # The final answer is chosen by the time of its accept or edit; no rule reads the others' times.
    gens = gens.with_columns(*beside("row", feedback("edit", pl.col("ts").alias("edit_ts"))),
                             *beside("row", feedback("accept", pl.col("ts").alias("accept_ts"))),
                             *beside("row", feedback("regenerate")), *beside("row", feedback("rating", "value")))
    # Turn-level: the last generation of a request is the one a rephrase or an abandon judges.
    last = gens.select("ts", "row", "request_key").sort("ts", "row").group_by("request_key") \
        .agg(pl.col("row").last())["row"]
    is_last = gens["row"].is_in(last.implode())
    turn = [events.lazy().filter(pl.col("type") == t).select("request_key", pl.col("row").alias(f"{t}_row"))
            .collect() for t in FEEDBACK_ON_REQUEST]
    return gens.with_columns(is_last.alias("is_last"), *(
        pl.when(is_last).then(column).alias(column.name) for t in turn for column in beside("request_key", t)))


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
    cands = gens.select("row", "request_key", "accept_row", "accept_ts", "edit_row", "edit_ts").filter(
        pl.col("accept_row").is_not_null() | pl.col("edit_row").is_not_null())
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


def attach(examples: pl.DataFrame, features: pl.DataFrame, kind: str) -> pl.DataFrame:
    """Give each example the per-row features (prompt key and size, text key and size) it needs for filtering,
    by gathering from the per-event table (no text is copied). Its ids and time stay in the event table: the
    steps that need them gather them by `meta_row` (`meta_of`)."""
    prompt = gather_in_windows(features.select(_pk="pk", _plen="plen"), examples["prompt_row"])
    text = gather_in_windows(features.select(_tk="tk", _tlen="tlen", _tblank="tblank"), examples["text_row"])
    cols = prompt.get_columns() + text.get_columns()
    if kind == "dpo":
        rejected = gather_in_windows(features.select(_rk="tk", _rlen="tlen", _rblank="tblank"),
                                     examples["rejected_row"])
        cols += rejected.get_columns()
    return examples.with_columns(cols).with_columns(drop=pl.lit(None, DROP_REASON))


def meta_of(events: pl.DataFrame, examples: pl.DataFrame, *columns: str) -> list[pl.Series]:
    """Columns of the examples' `meta_row` events (kept once, in the event table, rather than in every example
    table: 40 bytes an example)."""
    return gather_in_windows(events.select(columns), examples["meta_row"]).get_columns()


# Called after each window of a pass over the event table (`gather_in_windows`, `select_where`, `mask_of`,
# `in_key_part`). The build sets it, while it runs, to hand back the mapped pages the window read
# (data.textspill): a pass over whole columns in one call would map all of them at once, as much as the log,
# faster than a pager thread can take them back (and some Polars calls hold the GIL it needs).
after_window = lambda: None  # noqa: E731


# The event table's columns are mapped from disk (data.textspill). A gather at random rows maps the pages around
# every row it reads (the kernel maps 64 KB at each fault), so one gather over a whole column maps all of it at
# once: as much as the log, before anything can hand the pages back. Gathered a window of this many of the
# column's rows at a time (8 MB of an 8-byte column), what is mapped at once is a window's, which the build's
# pager hands back.
GATHER_WINDOW_ROWS = 1 << 20


def gather_in_windows(columns: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """`columns.select(pl.all().gather(rows))`, reading one window of GATHER_WINDOW_ROWS rows of the columns at
    a time, in row order."""
    n = len(columns)
    if n <= GATHER_WINDOW_ROWS or len(rows) < 2:
        return columns.select(pl.all().gather(rows))
    if rows.null_count():  # a null row gives nulls
        missing = rows.is_null()
        return gather_in_windows(columns, rows.fill_null(0)).select(
            pl.when(pl.lit(missing)).then(None).otherwise(pl.col(c)).alias(c) for c in columns.columns)
    rows = rows.cast(pl.UInt32)
    order = rows.arg_sort()
    in_order = rows.gather(order)
    ends = in_order.search_sorted(pl.Series(range(GATHER_WINDOW_ROWS, n, GATHER_WINDOW_ROWS), dtype=pl.UInt32),
                                  side="left").to_list() + [len(rows)]
    pieces, at = [], 0
    for window, end in enumerate(ends):
        if end > at:
            start = window * GATHER_WINDOW_ROWS
            pieces.append(columns.slice(start, GATHER_WINDOW_ROWS)
                          .select(pl.all().gather(in_order.slice(at, end - at) - start)))
            after_window()
        at = end
    return pl.concat(pieces).select(pl.all().gather(order.arg_sort()))
