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


def redact_text(col: pl.Expr, kinds: list[str]) -> tuple[pl.Expr, dict[str, pl.Expr]]:
    counts = {}
    for kind in ORDER:
        if kind not in kinds:
            continue
        pattern, placeholder = PATTERNS[kind]
        counts[kind] = col.str.count_matches(pattern).sum()
        col = col.str.replace_all(pattern, placeholder)
    return col, counts


def redact_events(events: pl.DataFrame, kinds: list[str]) -> tuple[pl.DataFrame, dict[str, int]]:
    """Redact messages' contents, outputs, edited outputs and rating comments; return the counts per kind."""
    totals = {k: 0 for k in ORDER if k in kinds}
    # Count sequentially (each pattern sees the text after the previous replacements, like the replacement does).
    exprs = {}
    for name in ("output", "edited_output", "comment"):
        new, counts = redact_text(pl.col(name), kinds)
        exprs[name] = new
        got = events.select(**{k: v for k, v in _sequential_counts(pl.col(name), kinds).items()})
        for k in totals:
            totals[k] += int(got[k][0] or 0)
    msgs = events.select("row", "messages").filter(pl.col("messages").is_not_null()).explode("messages")
    msgs = msgs.with_columns(pl.col("messages").struct.field("role").alias("role"),
                             pl.col("messages").struct.field("content").alias("content"))
    got = msgs.select(**_sequential_counts(pl.col("content"), kinds))
    for k in totals:
        totals[k] += int(got[k][0] or 0)
    new_content, _ = redact_text(pl.col("content"), kinds)
    msgs = (msgs.with_columns(content=new_content)
            .group_by("row", maintain_order=True)
            .agg(pl.struct("role", "content").alias("messages")))
    events = events.with_columns(**exprs).drop("messages").join(msgs, on="row", how="left")
    return events, totals


def _sequential_counts(col: pl.Expr, kinds: list[str]) -> dict[str, pl.Expr]:
    counts = {}
    for kind in ORDER:
        if kind not in kinds:
            continue
        pattern, placeholder = PATTERNS[kind]
        counts[kind] = col.str.count_matches(pattern).sum()
        col = col.str.replace_all(pattern, placeholder)
    return counts
