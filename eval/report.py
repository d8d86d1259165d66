"""Gate report files: gate_report.json (the contract), items.jsonl, and readable gate_report.md / .html with plots.

The plots show each check's statistic with its interval against its threshold, and each slice's interval, because
a decision a reviewer cannot see the evidence for will not be trusted (or will be trusted when it should not be).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from flywheel.files import write_json_atomic, write_text_atomic
from flywheel.report_style import page, png_bytes, verdict


def _num(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
        return f"[{_num(float(x[0]))}, {_num(float(x[1]))}]"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_num(v)}" for k, v in x.items())
    return str(x)


def _threshold_value(check: dict) -> float | None:
    for k, v in (check.get("threshold") or {}).items():
        # Only thresholds on the plotted interval; e.g. a significance level is not a point on this axis.
        if k.startswith("interval_") and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _plot_checks(checks: dict) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, c) for name, c in checks.items() if c.get("interval")]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.9 * len(rows) + 0.7), squeeze=False)
    for ax, (name, c) in zip(axes[:, 0], rows):
        point = c.get("value", c.get("diff"))
        lo, hi = c["interval"]
        color = "tab:green" if c["passed"] else "tab:red"
        ax.errorbar([point], [0], xerr=[[point - lo], [hi - point]], fmt="o", color=color, capsize=4)
        t = _threshold_value(c)
        if t is not None:
            ax.axvline(t, color="grey", linestyle="--", linewidth=1)
        ax.axvline(0.5 if "value" in c and "share" in c.get("statistic", "") else 0.0, color="black", linewidth=0.5)
        ax.set_yticks([0])
        ax.set_yticklabels([name], fontsize=10)
        ax.tick_params(axis="x", labelsize=9)
    axes[0, 0].set_title("Checks: statistic (adapter - base, or share) with 95% interval; dashed = threshold",
                         fontsize=10)
    return png_bytes(fig)


def _plot_slices(check: dict | None) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not check or not check.get("slices"):
        return None
    metrics = sorted({s["metric"] for s in check["slices"]})
    # Two panels a row at most, so the chart keeps the page's width however many metrics are sliced.
    ncols = min(2, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    tallest = max(sum(s["metric"] == m for s in check["slices"]) for m in metrics)
    fig, axes = plt.subplots(nrows, ncols, figsize=(10.5, nrows * (0.3 * tallest + 1.0)), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        rows = [s for s in check["slices"] if s["metric"] == metric]
        for y, s in enumerate(rows):
            lo, hi = s["interval"]
            ax.errorbar([s["value"]], [y], xerr=[[s["value"] - lo], [hi - s["value"]]], fmt="o", capsize=3,
                        color="tab:red" if s["regressed"] else "tab:blue")
        ax.axvline(0.5 if metric == "movement_share" else 0.0, color="black", linewidth=0.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{s['slice']} (n={s['n']})" for s in rows], fontsize=9)
        ax.set_title(f"{metric} per slice, 95% interval (red: regressed)", fontsize=10)
        ax.tick_params(axis="x", labelsize=9)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    return png_bytes(fig)


def _result(check: dict) -> str:
    if check["passed"]:
        return "PASS"
    return "INSUFFICIENT_DATA" if check.get("status") == "INSUFFICIENT_DATA" else "FAIL"


def _check_table(checks: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the checks table; the role and minimum detectable effect columns where the gate gives them."""
    with_role = any("role" in c for c in checks.values())
    with_mde = any(c.get("mde") is not None for c in checks.values())
    header = ["check"] + (["role"] if with_role else []) + ["result", "base", "adapter", "statistic",
                                                             "95% interval"]
    with_users = any(c.get("n_users") is not None for c in checks.values())
    header += (["smallest detectable"] if with_mde else []) + ["threshold", "n"] + (["users"] if with_users else [])
    rows = []
    for name, c in checks.items():
        row = [name] + ([c.get("role", "")] if with_role else []) + [
            _result(c), _num(c.get("base")), _num(c.get("adapter")), _num(c.get("value", c.get("diff"))),
            _num(c.get("interval"))]
        rows.append(row + ([_num(c.get("mde"))] if with_mde else []) + [_num(c.get("threshold")), _num(c.get("n"))]
                    + ([_num(c.get("n_users"))] if with_users else []))
    return header, rows


def decision_basis(decision: str, checks: dict, reasons: list[str] | None = None, rule: str | None = None) -> str:
    """One line: what the gate's decision rests on (its rule, and which checks decided it)."""
    deciding = [n for n, c in checks.items() if c.get("role", "required") == "required"]
    advisory = [n for n in checks if n not in deciding]
    failed = [n for n in deciding if not checks[n]["passed"]]
    kind = "required checks" if advisory or any("role" in c for c in checks.values()) else "checks"
    if failed:
        line = f"{decision.upper()}: {len(failed)} of {len(deciding)} {kind} failed ({', '.join(failed)})"
    else:
        line = f"{decision.upper()}: all {len(deciding)} {kind} passed ({', '.join(deciding)})"
    if advisory:
        line += f"; advisory, not deciding: {', '.join(advisory)}"
    # Reasons that are no check's own (e.g. the eval set changed) decide too.
    own = {c.get("reason") for c in checks.values()}
    others = [r for r in reasons or [] if r not in own and not any(r.startswith(f"{n}:") for n in checks)]
    if others:
        line += "; also: " + "; ".join(others)
    return line + (f". Rule: {rule}" if rule else "")


def render_markdown(report: dict, images: dict[str, bytes]) -> str:
    lines = [f"# Gate report: {report['decision'].upper()}", "", basis_of(report), ""]
    lines += [f"- adapter: `{report['adapter']['path']}` (sha256 {report['adapter']['adapter_sha256'][:12]})",
              f"- base: `{report['base']['path']}` (weights sha256 {report['base']['weights_sha256'][:12]})",
              f"- eval set: `{report['eval_set']['path']}` version {report['eval_set']['version']} "
              f"(sha256 {report['eval_set']['sha256'][:12]})",
              f"- base scores: {report['scoring'].get('base_scores')}; seed {report['seed']}",
              ""]
    if report["reasons"]:
        lines += ["## Reasons", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    header, rows = _check_table(report["checks"])
    lines += ["## Checks", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    for name in images:
        lines += [f"![{name}]({name})", ""]
    slices = (report["checks"].get("slices") or {}).get("slices") or []
    if slices:
        lines += ["## Slices", "", "| slice | metric | value | 95% interval | n | users | adjusted p | regressed |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s['slice']} | {s['metric']} | {_num(s['value'])} | {_num(s['interval'])} | {s['n']} | "
                  f"{s['n_users']} | {_num(s['p_adjusted'])} | {'yes' if s['regressed'] else 'no'} |"
                  for s in slices]
        lines.append("")
    lines += ["## Methods", ""] + [f"- **{n}**: {c.get('method')}" for n, c in report["checks"].items()
                                   if c.get("method")]
    return "\n".join(lines) + "\n"


def basis_of(report: dict) -> str:
    return decision_basis(report["decision"], report["checks"], report.get("reasons"), report.get("decision_rule"))


def _html_table(header: list[str], rows: list[list[str]], result_col: int | None = None) -> str:
    esc = html.escape
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = [verdict(v == "PASS", v) if i == result_col else esc(v) for i, v in enumerate(row)]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def render_html(report: dict, images: dict[str, bytes]) -> str:
    esc = html.escape
    header, rows = _check_table(report["checks"])
    parts = [
        f"<h1>Gate report: {verdict(report['decision'] == 'pass', report['decision'].upper())}</h1>",
        f"<p class='basis'>{esc(basis_of(report))}</p>",
        "<ul>",
        f"<li>adapter: <code>{esc(report['adapter']['path'])}</code> "
        f"(sha256 {esc(report['adapter']['adapter_sha256'][:12])})</li>",
        f"<li>base: <code>{esc(report['base']['path'])}</code> "
        f"(weights sha256 {esc(report['base']['weights_sha256'][:12])})</li>",
        f"<li>eval set: <code>{esc(report['eval_set']['path'])}</code> version {esc(str(report['eval_set']['version']))}"
        f" (sha256 {esc(report['eval_set']['sha256'][:12])})</li></ul>",
    ]
    if report["reasons"]:
        parts.append("<h2>Reasons</h2><ul>" + "".join(f"<li>{esc(r)}</li>" for r in report["reasons"]) + "</ul>")
    if report.get("warnings"):
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{esc(w)}</li>" for w in report["warnings"]) + "</ul>")
    parts.append("<h2>Checks</h2>" + _html_table(header, rows, result_col=header.index("result")))
    for name, png in images.items():
        parts.append(f"<p><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
    slices = (report["checks"].get("slices") or {}).get("slices") or []
    if slices:
        parts.append("<h2>Slices</h2>" + _html_table(
            ["slice", "metric", "value", "95% interval", "n", "regressed"],
            [[s["slice"], s["metric"], _num(s["value"]), _num(s["interval"]), str(s["n"]),
              "yes" if s["regressed"] else "no"] for s in slices]))
    parts.append("<h2>Methods</h2><ul>" + "".join(f"<li><b>{esc(n)}</b>: {esc(str(c.get('method')))}</li>"
                                                  for n, c in report["checks"].items()) + "</ul>")
    return page(f"Gate report: {report['decision'].upper()}", "\n".join(parts))


def write_reports(report: dict, items: list[dict], out: Path) -> None:
    out = Path(out)
    write_json_atomic(out / "gate_report.json", report)
    with open(out / "items.jsonl", "w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    images = {}
    for name, png in (("checks.png", _plot_checks(report["checks"])),
                      ("slices.png", _plot_slices(report["checks"].get("slices")))):
        if png:
            (out / name).write_bytes(png)
            images[name] = png
    write_text_atomic(out / "gate_report.md", render_markdown(report, images))
    write_text_atomic(out / "gate_report.html", render_html(report, images))
