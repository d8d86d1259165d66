"""Redaction of personal data and secrets in every text field, counted per kind.

Patterns are deliberately conservative (few false positives on code and prose); each match is replaced with a
typed placeholder such as `[EMAIL]` so a model learns the shape of the answer, not the secret.
"""

from __future__ import annotations

from itertools import accumulate

import polars as pl

PATTERNS: dict[str, tuple[str, str]] = {
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]"),
    # Secret-looking tokens with a known prefix (OpenAI/Anthropic sk-, GitHub, AWS, Slack, Google, HF).
    "api_key": (r"\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9-]{10,}"
                r"|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,})\b", "[API_KEY]"),
    # 13-19 digits, optionally grouped by spaces or dashes (payment-card numbers).
    "card": (r"\b(?:\d[ -]?){12,18}\d\b", "[CARD]"),
    # International or North-American style phone numbers with at least 9 digits.
    "phone": (r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}\b", "[PHONE]"),
}
# Order matters: a card number must not be half-eaten by the phone pattern.
ORDER = ("email", "api_key", "card", "phone")


def _redact(col: pl.Expr, kinds: list[str]) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    """The redacted text and, per kind, the number of matches (each pattern sees the text after the previous
    replacements, as the replacement itself does)."""
    counts = {}
    for kind in ORDER:
        if kind not in kinds:
            continue
        pattern, placeholder = PATTERNS[kind]
        counts[kind] = col.str.count_matches(pattern).sum()
        col = col.str.replace_all(pattern, placeholder)
    return col, counts


TEXT_COLUMNS = ["messages", "output", "edited_output", "comment"]


def redact_events(events: pl.DataFrame, rows: pl.Series, kinds: list[str], spill=None) -> tuple[pl.DataFrame,
                                                                                                 dict[str, int]]:
    """Redact messages' contents, outputs, edited outputs and rating comments of the event `rows` still in play
    (indexed by the `row` column); return the new table and the number of replacements per kind.

    Chunk by chunk of the text columns (with `spill`, a `data.textspill.TextSpill`: its record batches, whose
    redacted copies go to a file of the spill and are mapped back with the same chunks), so that only one chunk of
    texts is ever held in memory."""
    totals = {k: 0 for k in ORDER if k in kinds}
    if events.is_empty():
        return events, totals
    keep = rows.implode()

    def redact(start_and_length: tuple[int, int]) -> tuple[pl.DataFrame, dict[str, int]]:
        start, length = start_and_length
        counts = dict.fromkeys(totals, 0)
        return _redact_part(events.slice(start, length).select("row", *TEXT_COLUMNS), keep, kinds, counts), counts

    def parts():
        lengths = [len(chunk) for chunk in events.get_column("output").get_chunks()]
        starts = list(accumulate(lengths, initial=0))[:-1]
        # Two chunks at a time on two threads (Polars' regexes release the GIL), in order, a few ahead at most.
        for part, counts in _in_order_on_threads(redact, list(zip(starts, lengths))):
            for k, n in counts.items():
                totals[k] += n
            yield part
            if spill is not None:
                spill.release_over()

    if spill is None:
        redacted = pl.concat(list(parts()), rechunk=False) if len(events) else events.select(TEXT_COLUMNS)
    else:
        redacted = spill.hold_batches("redacted", parts())
        before = [len(c) for c in events.get_column("output").get_chunks()]
        if [len(c) for c in redacted.get_column("output").get_chunks()] != before:
            raise RuntimeError("redacted texts lost the spill's record batches")  # gathers rely on one layout
    return events.with_columns(redacted.get_columns()), totals


def _redact_part(part: pl.DataFrame, keep: pl.Series, kinds: list[str], totals: dict[str, int]) -> pl.DataFrame:
    """The text columns of `part` with the rows in `keep` redacted; adds the replacements to `totals`."""
    live = part.filter(pl.col("row").is_in(keep)).select("row", "output", "edited_output", "comment")
    updates = {}
    for name in ("output", "edited_output", "comment"):
        new, counts = _redact(pl.col(name), kinds)
        got = live.select(new.alias(name), **counts)
        for k in totals:
            totals[k] += int(got[k][0] or 0) if len(got) else 0
        updates[name] = got[name]
    live = live.with_columns(**updates)
    msgs = (part.filter(pl.col("row").is_in(keep) & pl.col("messages").is_not_null())
            .select("row", "messages").explode("messages")
            .select("row", pl.col("messages").struct.field("role").alias("role"),
                    pl.col("messages").struct.field("content").alias("content")))
    new, counts = _redact(pl.col("content"), kinds)
    got = msgs.select(**counts) if len(msgs) else None
    for k in totals:
        totals[k] += int(got[k][0] or 0) if got is not None else 0
    msgs = (msgs.with_columns(content=new).group_by("row", maintain_order=True)
            .agg(pl.struct("role", "content").alias("messages")))
    live = live.join(msgs, on="row", how="left")
    # Rows outside `keep` keep their text; they appear in no dataset.
    out = part.update(live.select("row", "output", "edited_output", "comment"), on="row")
    out = out.update(live.filter(pl.col("messages").is_not_null()).select("row", "messages"), on="row")
    return out.select(TEXT_COLUMNS)


def _in_order_on_threads(fn, items: list, ahead: int = 2):
    """fn over items on two threads, results in order, with at most `ahead` results waiting beyond the one the
    caller holds (a plain pool.map would run ahead through every item and hold all their results)."""
    import concurrent.futures as cf
    from collections import deque

    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
