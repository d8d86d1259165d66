"""The look shared by the HTML reports (the demo's page, the gate report, the monitor report).

One stylesheet so that the three pages read alike and none of them runs off a 1280 px window: images and charts
shrink to the page, long paths break, and a figure's interval goes on a line of its own instead of widening a table.
"""

from __future__ import annotations

import html
import io

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:1.2em auto;padding:0 1.2em;
  color:#1f2328;line-height:1.45;font-size:15px}
h1{font-size:1.7em;margin:.2em 0 .4em}h2{font-size:1.3em;margin:1.4em 0 .5em;border-bottom:1px solid #d0d7de}
img{max-width:100%;height:auto;display:block}
table{border-collapse:collapse;margin:.4em 0}
td,th{padding:4px 9px;border-bottom:1px solid #d0d7de;text-align:left;vertical-align:top;font-size:14px}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{overflow-wrap:anywhere}td,li{overflow-wrap:break-word}
small,.muted{color:#59636e}
.pass{color:#1a7f37;font-weight:700}.fail{color:#cf222e;font-weight:700}.advisory{color:#59636e}
.lead{font-size:1.15em;margin:.3em 0 .8em}
.basis{background:#f6f8fa;border-left:4px solid #59636e;padding:.5em .8em;margin:.6em 0}
.reply{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:13px;margin:0}
"""


def page(title: str, body: str) -> str:
    """A whole HTML document with the shared stylesheet."""
    return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def verdict(passed: bool | None, text: str | None = None) -> str:
    """PASS / FAIL (or `text`) in the page's pass/fail colour."""
    word = text or ("PASS" if passed else "FAIL")
    return f"<span class='{'pass' if passed else 'fail'}'>{html.escape(word)}</span>"


def value_with_interval(value: float | None, interval: list[float] | None, digits: int = 3) -> str:
    """A figure with its interval below it, so a row of figures stays narrow."""
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    if interval:
        text += f"<br><small>[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]</small>"
    return text


def png_bytes(fig, dpi: int = 100) -> bytes:
    """A laid-out matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
