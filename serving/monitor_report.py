"""`monitor.html`: the production monitor's report as a page, its verdict and what it rests on first.

Rendering only: the figures are `serving.monitor.monitor`'s report dict, the charts the PNG files it wrote beside.
"""

from __future__ import annotations

import html
from typing import Any

from flywheel.report_style import page, value_with_interval, verdict


def basis(report: dict[str, Any]) -> str:
    """One line: the verdict and the evidence it rests on."""
    cmp_ = report["comparison"]
    level = int(report["bootstrap"]["level"] * 100)
    if not cmp_:
        return f"{report['summary']}. The figures per version below stand alone."
    return (f"{report['summary']}. It rests on {cmp_['newer']} against {cmp_['older']} over {report['turns']} turns: "
            f"a metric alerts when it is worse by more than its margin and the {level} % interval of the difference "
            f"(bootstrap over users, {report['bootstrap']['n']} resamples) lies on the worse side of zero.")


def _metric_table(first: list[str], rows: list[tuple[list[str], dict[str, Any]]], names: list[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in first) + "".join(f"<th>{esc(n.replace('_', ' '))}</th>"
                                                                  for n in names)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells)
                   + "".join(f"<td class='num'>{value_with_interval(fig[n], fig['intervals'][n])}</td>"
                             for n in names) + "</tr>" for cells, fig in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _comparison_table(cmp_: dict[str, Any]) -> str:
    rows = []
    for name, c in cmp_["metrics"].items():
        rows.append(f"<tr><td>{html.escape(name)}</td><td class='num'>{c['older']:.3f}</td>"
                    f"<td class='num'>{c['newer']:.3f}</td><td class='num'>{value_with_interval(c['diff'], c['interval'])}"
                    f"</td><td>{html.escape(str(c['worse_is']))}</td><td class='num'>{c['margin']}</td>"
                    f"<td>{verdict(False, 'REGRESSED') if c['regressed'] else verdict(True, 'no')}</td></tr>")
    return (f"<h2>{html.escape(cmp_['newer'])} against {html.escape(cmp_['older'])}</h2>"
            "<table><tr><th>metric</th><th>older</th><th>newer</th><th>difference<br><small>95 % interval</small></th>"
            "<th>worse is</th><th>margin</th><th>regressed</th></tr>" + "".join(rows) + "</table>")


def headline_word(report: dict[str, Any]) -> str:
    """ALERT, OK (the newest version compared, nothing regressed), or NOTHING TO COMPARE (a single version)."""
    if report["alert"]:
        return "ALERT"
    return "OK" if report["comparison"] else "NOTHING TO COMPARE"


def render_html(report: dict[str, Any]) -> str:
    esc = html.escape
    names = list(report["metrics"])
    word = headline_word(report)
    parts = [f"<h1>Production monitor: {verdict(word != 'ALERT', word)}</h1>",
             f"<p class='basis'>{esc(basis(report))}</p>",
             f"<p><small>inputs: {esc(', '.join(report['inputs']))}</small></p>"]
    if report["comparison"]:
        parts.append(_comparison_table(report["comparison"]))
    parts.append("<h2>Per version</h2>" + _metric_table(
        ["version", "turns", "users"],
        [([label, str(v["turns"]), str(v["users"])], v) for label, v in report["versions"].items()], names))
    if report["period"] != "none" and report["by_period"]:
        parts.append(f"<h2>Per {esc(report['period'])}</h2>" + _metric_table(
            ["period", "version", "turns"], [([r["period"], r["version"], str(r["turns"])], r)
                                             for r in report["by_period"]], names))
    for chart in report.get("charts", []):
        parts.append(f"<p><img src='{esc(chart)}' alt='{esc(chart)}'></p>")
    parts.append("<h2>Metrics</h2><ul>" + "".join(f"<li><b>{esc(n)}</b>: {esc(d)}</li>"
                                                  for n, d in report["metrics"].items()) + "</ul>")
    return page(f"Production monitor: {word}", "\n".join(parts))
