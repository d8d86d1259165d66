"""Screenshots of the demo's three report pages at 1280 px, for the README and docs/.

    make demo                                   # or: flywheel demo --out demo-out
    .venv/bin/python scripts/screenshot_reports.py --demo-out demo-out --out docs

Each page is opened in headless Chromium (flywheel.page_check), checked (links, images, width) and captured whole;
the PNG is reduced to a 256-colour palette, which keeps text sharp at a fraction of the size. A page with problems
is reported and not captured, so a screenshot never shows a broken page.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

from flywheel.page_check import WIDTH, browser_page, check_page

PAGES = {"index.html": "demo-page.png", "gate/gate_report.html": "demo-gate-report.png",
         "monitor/monitor.html": "demo-monitor-report.png"}


def small_png(png: bytes) -> bytes:
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def screenshot_reports(demo_out: Path, out: Path, width: int = WIDTH) -> dict[str, list[str]]:
    """Capture each page of PAGES found under `demo_out` into `out`; return each page's problems (empty: captured)."""
    out.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}
    with browser_page(width=width) as page:
        for name, target in PAGES.items():
            path = demo_out / name
            if not path.exists():
                problems[name] = [f"{path}: no such page (run the demo first)"]
                continue
            problems[name] = check_page(page, path)
            if not problems[name]:
                png = small_png(page.screenshot(full_page=True))
                (out / target).write_bytes(png)
                width, height = Image.open(io.BytesIO(png)).size
                print(f"{out / target}: {width}x{height} px, {len(png) / 1024:.0f} KiB")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-out", type=Path, default=Path("demo-out"), help="a demo's folder (default: demo-out)")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="where the PNGs go (default: docs)")
    ap.add_argument("--width", type=int, default=WIDTH, help=f"window width in px (default: {WIDTH})")
    args = ap.parse_args()
    problems = screenshot_reports(args.demo_out, args.out, args.width)
    bad = {name: p for name, p in problems.items() if p}
    for name, found in bad.items():
        print(f"{name}: not captured:", *found, sep="\n  ", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
