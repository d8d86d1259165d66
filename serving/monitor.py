"""`flywheel monitor`: did the promoted version serve users better? Production signals per model version and period.

A turn is one `request_id` (its regenerations share it). Each turn is attributed to the model version that produced
its last shown generation, and to the period of its first generation. Per turn:

    accept        the user accepted one of the turn's generations
    edit          the user edited one of them
    edit_cost     flywheel.textdist.edit_cost(last shown output, final answer); no final answer costs 1.0
    regenerations generations of the turn the user regenerated away (count)
    rephrase      the user asked the same thing again in other words
    abandon       the user left at this turn
    thumbs_down   a -1 rating on one of its generations (the latest rating of each generation counts)

The final answer follows the capture contract: the accepted generation's latest edit, else its output; without an
accept, the latest edit of the last edited generation; else none. Per version (and per period) each figure is the
mean over turns, with a percentile bootstrap interval that resamples users (a user's turns are not independent).
The newest version (first seen last) is compared with the one before it: the difference's interval comes from
resampling users jointly, so a user seen under both versions is paired with themself. An alert is raised when a
figure is worse by more than its margin and the interval of the difference lies on the worse side of zero.
"""

from __future__ import annotations

import itertools
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from flywheel.files import atomic_dir
from flywheel.textdist import edit_cost
from serving.monitor_report import render_html

# name (also the per-turn field) -> (+1 if higher is worse, -1 if lower is worse; what it measures)
METRICS: dict[str, tuple[int, str]] = {
    "accept_rate": (-1, "turns with an accepted answer"),
    "edit_rate": (+1, "turns whose answer the user edited"),
    "edit_cost": (+1, "mean normalised edit distance, last shown answer -> final answer (none = 1.0)"),
    "regen_rate": (+1, "regenerations per turn"),
    "rephrase_rate": (+1, "turns the user rephrased"),
    "abandon_rate": (+1, "turns the user abandoned"),
    "thumbs_down_rate": (+1, "turns with a thumbs-down"),
}
DEFAULT_MARGIN = 0.02
DEFAULT_MARGINS = {name: DEFAULT_MARGIN for name in METRICS} | {"regen_rate": 0.05}
LEVEL = 0.95


def parse_margins(values: list[str] | None) -> dict[str, float]:
    """`["0.03"]` sets every metric; `["edit_cost=0.05"]` one; both may be given (specific ones win)."""
    margins = dict(DEFAULT_MARGINS)
    specific = {}
    for raw in values or []:
        name, sep, number = raw.partition("=")
        if not sep:
            margins = {k: float(raw) for k in METRICS}
            continue
        if name not in METRICS:
            raise ValueError(f"--margin {raw}: unknown metric {name!r} (known: {', '.join(METRICS)})")
        specific[name] = float(number)
    return margins | specific


# ---------------------------------------------------------------------------------------------------------------
# Events -> turns


def _latest(events, kind: str, key: str, cols: list[str]):
    import polars as pl

    return (events.filter(pl.col("type") == kind).sort(["ts", "row"], descending=[True, True])
            .unique(subset=key, keep="first").select(key, *cols))


def turns_table(events) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One dict per turn (see the module docstring) from `data.events.load_events` rows; plus what was set aside."""
    import polars as pl

    from data.rules import dedupe_events

    events = events.with_row_index("row")
    repeated, conflicting = dedupe_events(events)
    drop_rows = pl.concat([repeated.cast(pl.UInt32), conflicting["row"].cast(pl.UInt32)])
    events = events.filter(~pl.col("row").is_in(drop_rows.implode()))
    forgotten = events.filter(pl.col("type") == "forget")["user_id"].unique()
    n_forgotten_events = events.filter(pl.col("user_id").is_in(forgotten.implode())).height
    events = events.filter(~pl.col("user_id").is_in(forgotten.implode()))

    gens = (events.filter(pl.col("type") == "generation").sort(["ts", "row"])
            .unique(subset="generation_id", keep="first", maintain_order=True)
            .select("row", "ts", "user_id", "request_id", "generation_id", "output", "model_base", "model_adapter"))
    edits = _latest(events, "edit", "generation_id", ["edited_output", pl.col("ts").alias("edit_ts")])
    accepts = _latest(events, "accept", "generation_id", [pl.col("ts").alias("accept_ts")])
    ratings = _latest(events, "rating", "generation_id", ["value"])
    regens = (events.filter(pl.col("type") == "regenerate").select("generation_id").unique()
              .with_columns(regenerated=pl.lit(True)))
    gens = (gens.join(edits, on="generation_id", how="left").join(accepts, on="generation_id", how="left")
            .join(ratings, on="generation_id", how="left").join(regens, on="generation_id", how="left")
            .sort(["request_id", "ts", "row"]))
    rephrased = set(events.filter(pl.col("type") == "rephrase")["request_id"].to_list())
    abandoned = set(events.filter(pl.col("type") == "abandon")["request_id"].to_list())

    turns = []
    # One pass over plain dicts grouped by request (sorted above); Polars' per-group frames cost 50 us a turn.
    for request_id, group in itertools.groupby(gens.to_dicts(), key=lambda r: r["request_id"]):
        rows = list(group)
        last = rows[-1]
        accepted = [r for r in rows if r["accept_ts"] is not None]
        edited = [r for r in rows if r["edited_output"] is not None]
        if accepted:
            chosen = max(accepted, key=lambda r: (r["accept_ts"], r["row"]))
            final = chosen["edited_output"] if chosen["edited_output"] is not None else chosen["output"]
        elif edited:
            final = max(edited, key=lambda r: (r["edit_ts"], r["row"]))["edited_output"]
        else:
            final = None
        turns.append({
            "request_id": request_id,
            "user_id": rows[0]["user_id"],
            "ts": rows[0]["ts"],
            "model_base": last["model_base"],
            "model_adapter": last["model_adapter"],
            "accept_rate": float(bool(accepted)),
            "edit_rate": float(bool(edited)),
            "edit_cost": edit_cost(last["output"] or "", final),
            "regen_rate": float(sum(1 for r in rows if r["regenerated"])),
            "rephrase_rate": float(request_id in rephrased),
            "abandon_rate": float(request_id in abandoned),
            "thumbs_down_rate": float(any(r["value"] == -1 for r in rows)),
        })
    set_aside = {"duplicate_events": repeated.len(), "conflicting_events": conflicting.height,
                 "forgotten_user_events": n_forgotten_events}
    return turns, set_aside


def period_of(ts_ms: int, period: str) -> str:
    if period == "none":
        return "all"
    when = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    if period == "day":
        return when.strftime("%Y-%m-%d")
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


# ---------------------------------------------------------------------------------------------------------------
# Statistics


def _weights(n_users: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each user is drawn in each bootstrap replicate (n_boot x n_users)."""
    return rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot).astype(float)


def _percentiles(samples: np.ndarray) -> tuple[float, float]:
    alpha = (1 - LEVEL) / 2
    lo, hi = np.nanquantile(samples, [alpha, 1 - alpha])
    return float(lo), float(hi)


def summarise(turns: list[dict[str, Any]], n_boot: int, rng: np.random.Generator) -> dict[str, Any]:
    """Turn-weighted means with user-clustered bootstrap intervals."""
    users, inverse = np.unique([t["user_id"] for t in turns], return_inverse=True)
    counts = np.bincount(inverse, minlength=len(users)).astype(float)
    w = _weights(len(users), n_boot, rng)
    out: dict[str, Any] = {"turns": len(turns), "users": len(users), "intervals": {}}
    for name in METRICS:
        sums = np.bincount(inverse, weights=[t[name] for t in turns], minlength=len(users))
        out[name] = float(sums.sum() / counts.sum())
        out["intervals"][name] = list(_percentiles((w @ sums) / (w @ counts)))
    return out


def compare(older: list[dict[str, Any]], newer: list[dict[str, Any]], margins: dict[str, float], n_boot: int,
            rng: np.random.Generator) -> dict[str, Any]:
    """newer - older per metric, with a bootstrap interval that resamples the union of users jointly."""
    users = sorted({t["user_id"] for t in older} | {t["user_id"] for t in newer})
    index = {u: i for i, u in enumerate(users)}
    w = _weights(len(users), n_boot, rng)
    idx_o = np.array([index[t["user_id"]] for t in older])
    idx_n = np.array([index[t["user_id"]] for t in newer])
    cnt_o = np.bincount(idx_o, minlength=len(users)).astype(float)
    cnt_n = np.bincount(idx_n, minlength=len(users)).astype(float)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, (worse_sign, _) in METRICS.items():
            s_o = np.bincount(idx_o, weights=[t[name] for t in older], minlength=len(users))
            s_n = np.bincount(idx_n, weights=[t[name] for t in newer], minlength=len(users))
            diff = s_n.sum() / cnt_n.sum() - s_o.sum() / cnt_o.sum()
            boot = (w @ s_n) / (w @ cnt_n) - (w @ s_o) / (w @ cnt_o)
            lo, hi = _percentiles(boot)
            worse_by, worse_lo = (diff, lo) if worse_sign > 0 else (-diff, -hi)
            out[name] = {
                "older": float(s_o.sum() / cnt_o.sum()), "newer": float(s_n.sum() / cnt_n.sum()),
                "diff": float(diff), "interval": [lo, hi], "margin": margins[name],
                "worse_is": "higher" if worse_sign > 0 else "lower",
                "regressed": bool(worse_by > margins[name] and worse_lo > 0),
            }
    return out


# ---------------------------------------------------------------------------------------------------------------
# Report


def _labels(turns: list[dict[str, Any]]) -> None:
    bases = {t["model_base"] for t in turns}
    for t in turns:
        name = t["model_adapter"] or "base"
        t["version"] = name if len(bases) == 1 else f"{t['model_base']}+{name}"


def _fmt(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _markdown(report: dict[str, Any]) -> str:
    names = list(METRICS)
    lines = ["# Production monitor", "", f"Inputs: {', '.join(report['inputs'])}  ",
             f"{report['turns']} turns; intervals: {int(LEVEL * 100)} % bootstrap over users "
             f"({report['bootstrap']['n']} resamples, seed {report['bootstrap']['seed']}).", "",
             "## Per version", "", "| version | turns | users | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---|" * len(names)]
    for label, v in report["versions"].items():
        cells = [_fmt(v[n], v["intervals"][n]) for n in names]
        lines.append(f"| {label} | {v['turns']} | {v['users']} | " + " | ".join(cells) + " |")
    if report["period"] != "none":
        lines += ["", f"## Per {report['period']}", "", "| period | version | turns | " + " | ".join(names) + " |",
                  "|---|---|---:|" + "---|" * len(names)]
        for row in report["by_period"]:
            cells = [_fmt(row[n], row["intervals"][n]) for n in names]
            lines.append(f"| {row['period']} | {row['version']} | {row['turns']} | " + " | ".join(cells) + " |")
    cmp_ = report["comparison"]
    if cmp_:
        lines += ["", f"## {cmp_['newer']} vs {cmp_['older']}", "",
                  "| metric | older | newer | diff [interval] | worse is | margin | regressed |",
                  "|---|---:|---:|---|---|---:|---|"]
        for name, c in cmp_["metrics"].items():
            lines.append(f"| {name} | {c['older']:.3f} | {c['newer']:.3f} | {_fmt(c['diff'], c['interval'])} | "
                         f"{c['worse_is']} | {c['margin']} | {'**YES**' if c['regressed'] else 'no'} |")
    lines += ["", report["summary"], ""]
    return "\n".join(lines)


def _charts(report: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = list(METRICS)
    labels = list(report["versions"])
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.4))
    for ax, name in zip(axes.flat, names):
        values = [report["versions"][v][name] for v in labels]
        lo = [values[i] - report["versions"][v]["intervals"][name][0] for i, v in enumerate(labels)]
        hi = [report["versions"][v]["intervals"][name][1] - values[i] for i, v in enumerate(labels)]
        ax.bar(range(len(labels)), values, yerr=[lo, hi], capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.set_title(name)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(0, 0.5, f"{report['turns']} turns\nbars: mean; whiskers: {int(LEVEL * 100)} % bootstrap "
                       "over users", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "versions.png", dpi=84)
    plt.close(fig)
    written.append("versions.png")
    if report["period"] != "none" and report["by_period"]:
        fig, axes = plt.subplots(2, 4, figsize=(14, 6.4))
        periods = sorted({r["period"] for r in report["by_period"]})
        for ax, name in zip(axes.flat, names):
            for label in labels:
                rows = [r for r in report["by_period"] if r["version"] == label]
                xs = [periods.index(r["period"]) for r in rows]
                ax.errorbar(xs, [r[name] for r in rows], fmt="o-", capsize=3, label=label,
                            yerr=[[r[name] - r["intervals"][name][0] for r in rows],
                                  [r["intervals"][name][1] - r[name] for r in rows]])
            ax.set_xticks(range(len(periods)), periods, rotation=30, fontsize=7)
            ax.set_title(name)
        axes.flat[0].legend(fontsize=7)
        axes.flat[-1].axis("off")
        fig.tight_layout()
        fig.savefig(out / "periods.png", dpi=84)
        plt.close(fig)
        written.append("periods.png")
    return written


def monitor(
    logs: Iterable[str | os.PathLike] | str,
    out: str | os.PathLike,
    period: str = "none",
    margins: dict[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute the monitor report for capture `logs`, write it to `out` (monitor.json, .md, .html, PNG charts).

    Returns the report: `versions` (label -> {base, adapter, turns, users, first_ts, last_ts, <metric>: mean,
    intervals: {<metric>: [lo, hi]}}; labels are the adapter name, or "base" for the plain base model),
    `by_period` (the same per period), `comparison` (newest version vs the one before: per metric older, newer,
    diff, interval, margin, regressed), `alert` (True when any metric regressed) and a one-line `summary`.
    Metric keys: accept_rate, edit_rate, edit_cost, regen_rate, rephrase_rate, abandon_rate, thumbs_down_rate.
    """
    from data.events import expand_inputs, read_events

    if period not in ("day", "week", "none"):
        raise ValueError(f"period must be day, week or none, not {period!r}")
    margins = {**DEFAULT_MARGINS, **(margins or {})}
    inputs = expand_inputs([logs] if isinstance(logs, (str, os.PathLike)) else logs)
    # read_events is what data.events.load_events wraps; it also says which lines were not valid events.
    read = read_events(inputs, hash_inputs=False)
    turns, set_aside = turns_table(read.events)
    set_aside["quarantined_lines"] = read.quarantined
    _labels(turns)
    rng = np.random.default_rng(seed)

    by_version: dict[str, list[dict[str, Any]]] = {}
    for t in sorted(turns, key=lambda t: t["ts"]):
        by_version.setdefault(t["version"], []).append(t)
    versions = {}
    for label, ts in by_version.items():  # ordered by first appearance
        versions[label] = {"base": ts[0]["model_base"], "adapter": ts[0]["model_adapter"],
                           "first_ts": ts[0]["ts"], "last_ts": ts[-1]["ts"], **summarise(ts, n_boot, rng)}
    by_period = []
    for label, ts in by_version.items():
        groups: dict[str, list[dict[str, Any]]] = {}
        for t in ts:
            groups.setdefault(period_of(t["ts"], period), []).append(t)
        for p, group in sorted(groups.items()):
            by_period.append({"period": p, "version": label, **summarise(group, n_boot, rng)})

    comparison, regressions = None, []
    if len(by_version) >= 2:
        older, newer = list(by_version)[-2:]
        metrics = compare(by_version[older], by_version[newer], margins, n_boot, rng)
        comparison = {"older": older, "newer": newer, "metrics": metrics}
        regressions = [n for n, c in metrics.items() if c["regressed"]]
    if comparison is None:
        summary = f"{len(turns)} turns, {len(versions)} version(s): nothing to compare"
    elif regressions:
        parts = [f"{n} {comparison['metrics'][n]['older']:.3f} -> {comparison['metrics'][n]['newer']:.3f}"
                 for n in regressions]
        summary = f"ALERT: {comparison['newer']} is worse than {comparison['older']}: " + "; ".join(parts)
    else:
        c = comparison["metrics"]["edit_cost"]
        summary = (f"OK: {comparison['newer']} vs {comparison['older']}: no regression beyond margins "
                   f"(edit_cost {c['older']:.3f} -> {c['newer']:.3f})")
    report = {
        "kind": "flywheel.monitor_report", "format_version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs, "period": period, "turns": len(turns), "set_aside": set_aside,
        "quarantine_examples": [q.to_dict() for q in read.quarantine[:5]],
        "bootstrap": {"n": n_boot, "seed": seed, "cluster": "user_id", "level": LEVEL},
        "metrics": {n: d for n, (_, d) in METRICS.items()},
        "versions": versions, "by_period": by_period, "comparison": comparison,
        "alert": bool(regressions), "regressions": regressions, "summary": summary,
    }
    with atomic_dir(out) as tmp:
        report["charts"] = _charts(report, tmp) if versions else []
        (tmp / "monitor.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "monitor.md").write_text(_markdown(report))
        (tmp / "monitor.html").write_text(render_html(report))
    return report
