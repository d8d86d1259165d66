"""Redaction of personal data and secrets in every text field, counted per kind.

Patterns are deliberately conservative (few false positives on code and prose); each match is replaced with a
typed placeholder such as `[EMAIL]` so a model learns the shape of the answer, not the secret.
"""

from __future__ import annotations

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


def redact_events(events: pl.DataFrame, rows: pl.Series, kinds: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact messages' contents, outputs, edited outputs and rating comments of the event `rows` still in play
    (indexed by the `row` column); return the new table and the number of replacements per kind."""
    totals = {k: 0 for k in ORDER if k in kinds}
    live = events.filter(pl.col("row").is_in(rows.implode())).select("row", "output", "edited_output", "comment")
    updates = {}
    for name in ("output", "edited_output", "comment"):
        new, counts = _redact(pl.col(name), kinds)
        got = live.select(new.alias(name), **counts)
        for k in totals:
            totals[k] += int(got[k][0] or 0) if len(got) else 0
        updates[name] = got[name]
    live = live.with_columns(**updates)
    msgs = (events.filter(pl.col("row").is_in(rows.implode()) & pl.col("messages").is_not_null())
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
    # Rows outside `rows` keep their text; they appear in no dataset.
    out = events.update(live.select("row", "output", "edited_output", "comment"), on="row")
    with_msgs = live.filter(pl.col("messages").is_not_null()).select("row", "messages")
    out = out.update(with_msgs, on="row")
    return out, totals
