"""Gate report files: gate_report.json (the contract), items.jsonl, and readable gate_report.md / .html with plots.

The plots show each check's statistic with its interval against its threshold, and each slice's interval, because
a decision a reviewer cannot see the evidence for will not be trusted (or will be trusted when it should not be).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from flywheel.files import write_json_atomic, write_text_atomic


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
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 0.9 * len(rows) + 0.6), squeeze=False)
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
        ax.set_yticklabels([name], fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_title("Checks: statistic (adapter - base, or share) with 95% interval; dashed = threshold",
                         fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plot_slices(check: dict | None) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not check or not check.get("slices"):
        return None
    metrics = sorted({s["metric"] for s in check["slices"]})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 0.35 * max(
        sum(s["metric"] == m for s in check["slices"]) for m in metrics) + 1.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = [s for s in check["slices"] if s["metric"] == metric]
        for y, s in enumerate(rows):
            lo, hi = s["interval"]
            ax.errorbar([s["value"]], [y], xerr=[[s["value"] - lo], [hi - s["value"]]], fmt="o", capsize=3,
                        color="tab:red" if s["regressed"] else "tab:blue")
        ax.axvline(0.5 if metric == "movement_share" else 0.0, color="black", linewidth=0.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{s['slice']} (n={s['n']})" for s in rows], fontsize=7)
        ax.set_title(metric, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _check_table(checks: dict) -> list[list[str]]:
    rows = []
    for name, c in checks.items():
        rows.append([name, c.get("role", "required"),
                     "PASS" if c["passed"] else ("INSUFFICIENT_DATA" if c.get("status") ==
                                                 "INSUFFICIENT_DATA" else "FAIL"),
                     _num(c.get("base")), _num(c.get("adapter")), _num(c.get("value", c.get("diff"))),
                     _num(c.get("interval")), _num(c.get("mde")), _num(c.get("threshold")), _num(c.get("n")),
                     _num(c.get("n_users"))])
    return rows


HEADER = ["check", "role", "result", "base", "adapter", "statistic", "95% interval", "MDE (80% power)",
          "threshold", "n", "users"]


def render_markdown(report: dict, images: dict[str, bytes]) -> str:
    lines = [f"# Gate report: {report['decision'].upper()}", ""]
    lines += [f"- adapter: `{report['adapter']['path']}` (sha256 {report['adapter']['adapter_sha256'][:12]})",
              f"- base: `{report['base']['path']}` (weights sha256 {report['base']['weights_sha256'][:12]})",
              f"- eval set: `{report['eval_set']['path']}` version {report['eval_set']['version']} "
              f"(sha256 {report['eval_set']['sha256'][:12]})",
              f"- base scores: {report['scoring'].get('base_scores')}; seed {report['seed']}",
              f"- decision rule: {report.get('decision_rule', '')}", ""]
    if report["reasons"]:
        lines += ["## Reasons", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    lines += ["## Checks", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _check_table(report["checks"])]
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


def render_html(report: dict, images: dict[str, bytes]) -> str:
    esc = html.escape
    color = "#1a7f37" if report["decision"] == "pass" else "#cf222e"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Gate report</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}.fail{color:#cf222e}.pass{color:#1a7f37}"
        "</style></head><body>",
        f"<h1>Gate report: <span style='color:{color}'>{esc(report['decision'].upper())}</span></h1>",
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
    parts.append("<h2>Checks</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr>")
    for row in _check_table(report["checks"]):
        cls = "pass" if row[1] == "PASS" else "fail"
        parts.append("<tr>" + "".join(f"<td class='{cls}'>{esc(v)}</td>" if i == 1 else f"<td>{esc(v)}</td>"
                                      for i, v in enumerate(row)) + "</tr>")
    parts.append("</table>")
    for name, png in images.items():
        parts.append(f"<p><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>")
    parts.append("<h2>Methods</h2><ul>" + "".join(f"<li><b>{esc(n)}</b>: {esc(str(c.get('method')))}</li>"
                                                  for n, c in report["checks"].items()) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
