"""The demo's `index.html`: what happened, in one sentence and one chart, then the gate, real replies, artefacts.

The page takes a list of periods (each with the monitor's per-period figures and intervals), so a run of several
periods draws the same chart and sentence as the demo's two.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from flywheel.demo import METRICS
from flywheel.files import write_text_atomic
from flywheel.report_style import page, png_bytes, value_with_interval, verdict

# The three figures the page leads with: what a user of the product feels (metric key, label, unit word).
HEADLINE_METRICS = (("edit_cost", "edit cost", "edit distance, reply to kept text"),
                    ("regen_rate", "regenerations per turn", "regenerations per turn"),
                    ("abandon_rate", "abandon rate", "share of turns abandoned"))
CHART = "periods.png"


def period_label(index: int, figures: dict[str, Any]) -> str:
    model = figures.get("model") or {}
    return f"period {index} ({model.get('adapter') or 'base model'})"


def period_chart(periods: list[dict[str, Any]]) -> bytes:
    """One panel per headline metric: each period's mean with its interval, periods left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [period_label(i, p).replace(" (", "\n(") for i, p in enumerate(periods)]
    fig, axes = plt.subplots(1, len(HEADLINE_METRICS), figsize=(11.8, 3.5), squeeze=False)
    for ax, (key, title, ylabel) in zip(axes[0], HEADLINE_METRICS):
        values = [p[key] for p in periods]
        lows = [v - p["intervals"][key][0] for v, p in zip(values, periods)]
        highs = [p["intervals"][key][1] - v for v, p in zip(values, periods)]
        xs = range(len(periods))
        ax.errorbar(xs, values, yerr=[lows, highs], fmt="o-", color="#0969da", ecolor="#57606a", capsize=6,
                    linewidth=2, markersize=7)
        for x, v in zip(xs, values):
            ax.annotate(f"{v:.3f}", (x, v), textcoords="offset points", xytext=(10, 0), va="center", fontsize=11)
        ax.set_title(title, fontsize=13)
        ax.set_ylabel(ylabel, fontsize=10)
        ax.set_xticks(list(xs), labels, fontsize=10)
        ax.set_xlim(-0.4, len(periods) - 0.4)
        ax.set_ylim(bottom=0)
        ax.tick_params(axis="y", labelsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("The same simulated users, period by period: mean with 95 % interval (bootstrap over users)",
                 fontsize=11)
    return png_bytes(fig)


def _change(before: float, after: float) -> str:
    moved = f"from {before:.3f} to {after:.3f}"
    return f"{moved} ({(after - before) / before:+.0%})" if before else moved


def headline(summary: dict[str, Any], periods: list[dict[str, Any]]) -> str:
    """The page's one sentence: how the users' figures moved from the first period to the last, and why."""
    first, last = periods[0], periods[-1]
    moves = [f"{title} {_change(first[key], last[key])}" for key, title, _ in HEADLINE_METRICS]
    promo = summary.get("promotion")
    if promo:
        why = (f"the adapter passed the gate and was promoted as {promo['version']}, "
               f"which served period {len(periods) - 1}")
    else:
        why = f"the gate did not pass, nothing was promoted, and period {len(periods) - 1} ran on the base model"
    moves[0] = moves[0].replace(" from ", " went from ", 1)
    return (f"From period 0 to period {len(periods) - 1} the simulated users' {moves[0]}, "
            f"{', '.join(moves[1:-1]) + ', ' if moves[1:-1] else ''}and {moves[-1]}: {why}.")


def turn_texts(log: str | Path) -> dict[str, dict[str, Any]]:
    """Single-turn requests of a capture log -> {request text: what the model replied and what the user kept}.

    A turn's reply is its last shown generation; what the user kept follows the capture contract's final answer
    (the accepted generation's latest edit, else its output); an abandoned turn kept nothing. Requests that open a
    conversation are the ones a reader can follow without the turns before them.
    """
    import polars as pl

    from data.events import load_events
    from flywheel.textdist import edit_cost

    events = load_events([str(log)]).with_row_index("row")
    gens = (events.filter(pl.col("type") == "generation").sort(["ts", "row"])
            .group_by("request_id", maintain_order=True).last()
            .select("request_id", "generation_id", "messages", "output", "model_adapter"))
    edits = (events.filter(pl.col("type") == "edit").sort(["ts", "row"])
             .group_by("generation_id", maintain_order=True).last().select("generation_id", "edited_output"))
    accepted = set(events.filter(pl.col("type") == "accept")["generation_id"].to_list())
    regens = events.filter(pl.col("type") == "regenerate").join(
        events.filter(pl.col("type") == "generation").select("generation_id", "request_id"), on="generation_id")
    n_regens = dict(regens.group_by("request_id").len().iter_rows())
    out: dict[str, dict[str, Any]] = {}
    for row in gens.join(edits, on="generation_id", how="left").iter_rows(named=True):
        users = [m for m in row["messages"] if m["role"] == "user"]
        if len(users) != 1 or any(m["role"] == "assistant" for m in row["messages"]):
            continue
        edited = row["edited_output"]
        final = edited if edited is not None else (row["output"] if row["generation_id"] in accepted else None)
        out.setdefault(users[0]["content"], {
            "request": users[0]["content"], "reply": row["output"], "edited": edited, "kept": final,
            "accepted": row["generation_id"] in accepted, "regenerations": n_regens.get(row["request_id"], 0),
            "edit_cost": edit_cost(row["output"], final), "model": row["model_adapter"] or "base model",
        })
    return out


def pick_examples(before: dict[str, dict], after: dict[str, dict], k: int = 3) -> list[tuple[dict, dict]]:
    """Up to `k` requests asked in both periods, those the user edited before first, in a fixed order."""
    shared = sorted(set(before) & set(after), key=lambda r: (before[r]["edited"] is None, r))
    return [(before[r], after[r]) for r in shared[:k]]


def _gate_section(gate: dict[str, Any], promo: dict[str, Any] | None) -> str:
    from eval.report import decision_basis

    esc = html.escape
    rows = []
    for name, c in gate["checks"].items():
        role = c.get("role") or "required"
        # As the gate report shows it: a share check's statistic is its share, the others' the difference.
        statistic = c.get("value") if c.get("value") is not None else c.get("diff")
        diff = value_with_interval(statistic, c.get("interval"), digits=3)
        mde = "–" if c.get("mde") is None else f"{c['mde']:.3f}"
        rows.append(f"<tr><td>{esc(name)}</td><td class='{'' if role == 'required' else 'advisory'}'>{esc(role)}</td>"
                    f"<td>{verdict(c['passed'])}</td><td class='num'>{_figure(c.get('base'))}</td>"
                    f"<td class='num'>{_figure(c.get('adapter'))}</td><td class='num'>{diff}</td>"
                    f"<td class='num'>{mde}</td><td class='num'>{c.get('n') if c.get('n') is not None else '–'}</td>"
                    "</tr>")
    promoted = (f"Promoted <b>{esc(promo['version'])}</b> as alias <code>{esc(promo['alias'])}</code>."
                if promo else "Nothing was promoted.")
    basis = decision_basis(gate["decision"], gate["checks"], gate.get("reasons"), gate.get("decision_rule"))
    return (f"<h2>Gate: {verdict(gate['decision'] == 'pass', gate['decision'].upper())}</h2>"
            f"<p class='basis'>{esc(basis)}</p><p>{promoted}</p>"
            "<table><tr><th>check</th><th>role</th><th>result</th><th>base</th><th>adapter</th>"
            "<th>difference (or share)<br><small>95 % interval</small></th><th>smallest detectable</th><th>n</th>"
            "</tr>" + "".join(rows) + "</table>")


def _figure(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("–" if v is None else html.escape(str(v)))


def _kept(turn: dict[str, Any]) -> str:
    if turn["edited"] is not None:
        return f"<pre class='reply'>{html.escape(turn['edited'])}</pre>"
    if turn["accepted"]:
        return "<span class='muted'>kept as it was</span>"
    return "<span class='muted'>nothing kept: the user rephrased or left</span>"


def _examples_section(examples: list[tuple[dict, dict]], labels: tuple[str, str]) -> str:
    if not examples:
        return "<h2>Real replies, before and after</h2><p>No request was asked in both periods.</p>"
    esc = html.escape
    rows = []
    for pair in examples:
        rows.append(f"<tr><th colspan='4'>“{esc(pair[0]['request'])}”</th></tr>")
        for label, turn in zip(labels, pair):
            regens = f"<br><small>after {turn['regenerations']} regeneration(s)</small>" if turn["regenerations"] else ""
            rows.append(f"<tr><td>{esc(label)}{regens}</td><td><pre class='reply'>{esc(turn['reply'])}</pre></td>"
                        f"<td>{_kept(turn)}</td><td class='num'>{turn['edit_cost']:.2f}</td></tr>")
    return ("<h2>Real replies, before and after</h2><p>Requests that opened a conversation in both periods, "
            "with the model's last reply and what the simulated user kept of it.</p>"
            "<table><tr><th>period</th><th>model's reply</th><th>user's edit</th><th>edit cost</th></tr>"
            + "".join(rows) + "</table>")


def _artefacts_section(summary: dict[str, Any], out: Path) -> str:
    art = {k: Path(v) for k, v in summary["artefacts"].items()}
    entries = [
        (art["log_0"], "capture log, period 0"), (art["log_1"], "capture log, period 1"),
        (art["build"] / "README.md", "dataset card"), (art["build"] / "manifest.json", "dataset manifest"),
        (art["eval_set"] / "eval_set.json", "eval set"),
        (art["sft"] / "lineage.json", "SFT adapter lineage"), (art["dpo"] / "lineage.json", "DPO adapter lineage"),
        (art["gate"] / "gate_report.html", "gate report"), (art["gate"] / "gate_report.json", "gate report (JSON)"),
        (art["monitor"] / "monitor.html", "monitor report"),
        (art["monitor"] / "monitor.md", "monitor report (Markdown)"), (out / "summary.json", "summary.json"),
    ]
    if summary.get("promotion"):  # the registry is written by the first promotion
        entries.insert(9, (art["registry"], "registry"))
    items = []
    for path, text in entries:
        rel = path.relative_to(out) if path.is_relative_to(out) else path
        items.append(f"<li><a href='{html.escape(rel.as_posix())}'>{html.escape(text)}</a> "
                     f"<small><code>{html.escape(str(rel))}</code></small></li>")
    return "<h2>Artefacts</h2><ul>" + "".join(items) + "</ul>"


def _figures_table(periods: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(period_label(i, p))}</th>" for i, p in enumerate(periods))
    rows = "".join(
        f"<tr><td>{m.replace('_', ' ')}</td>"
        + "".join(f"<td class='num'>{value_with_interval(p[m], p['intervals'][m])}</td>" for p in periods)
        + "</tr>" for m in METRICS)
    return f"<table><tr><th>metric (95 % interval)</th>{head}</tr>{rows}</table>"


def render_demo_page(summary: dict[str, Any], out: Path, periods: list[dict[str, Any]],
                     examples: list[tuple[dict, dict]]) -> str:
    labels = (period_label(0, periods[0]), period_label(len(periods) - 1, periods[-1]))
    body = "\n".join([
        f"<h1>Flywheel demo: {len(periods)} periods of simulated users</h1>",
        f"<p class='lead'>{html.escape(headline(summary, periods))}</p>",
        f"<img src='{CHART}' alt='edit cost, regenerations per turn and abandon rate per period, with 95 % intervals'>",
        _figures_table(periods),
        _gate_section(summary["gate"], summary.get("promotion")),
        _examples_section(examples, labels),
        _artefacts_section(summary, Path(out)),
    ])
    return page("Flywheel demo", body)


def write_demo_page(summary: dict[str, Any], out: str | Path, periods: list[dict[str, Any]],
                    logs: list[str | Path]) -> Path:
    """Write the chart and `index.html` into the demo's folder `out`.

    `periods` holds each period's figures (`flywheel.demo._period_figures`), `logs` each period's capture log; the
    replies shown come from the first and the last.
    """
    out = Path(out)
    examples = pick_examples(turn_texts(logs[0]), turn_texts(logs[-1]))
    (out / CHART).write_bytes(period_chart(periods))
    write_text_atomic(out / "index.html", render_demo_page(summary, out, periods, examples))
    return out / "index.html"
