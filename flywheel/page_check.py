"""Open the HTML reports in a real headless Chromium and say what a reader would trip over.

A page passes when every link to a local file resolves to a file that exists, every image loaded, and nothing is
wider than the window (1280 px by default). The browser is the system's Chromium (Debian's `chromium` package),
driven through Playwright; `chromium_path()` is None where none is installed.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

WIDTH = 1280
HEIGHT = 900
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs in the page: every link's resolved URL, every image that did not load, and the elements that stick out
# past the window's right edge (the outermost ones, so one wide table is one problem, not one per cell).
_INSPECT = """() => {
  const width = document.documentElement.clientWidth;
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const broken = [...document.querySelectorAll('img')]
    .filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.getAttribute('src').slice(0, 120));
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.right > width + 1 && !wide.some(w => w.contains(el))) wide.push(el);
  }
  const describe = el => el.tagName.toLowerCase() + (el.getAttribute('alt') ? ` alt="${el.getAttribute('alt')}"` : '')
    + ` (right edge ${Math.round(el.getBoundingClientRect().right)} px)`;
  return {links, broken, wide: wide.map(describe), scrollWidth: document.documentElement.scrollWidth, width};
}"""


def chromium_path() -> str | None:
    """The Chromium to drive: $FLYWHEEL_CHROMIUM, else the first of CANDIDATES on the PATH; None when there is none."""
    chosen = os.environ.get("FLYWHEEL_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else None
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@contextmanager
def browser_page(width: int = WIDTH, height: int = HEIGHT) -> Iterator:
    """A Playwright page in headless Chromium with a `width` px wide window."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(f"no Chromium found (looked for $FLYWHEEL_CHROMIUM and {', '.join(CANDIDATES)}); "
                           "on Debian: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def _link_problem(url: str, page_file: Path) -> str | None:
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None  # only the report's own files are checked; the reports link nothing else
    target = Path(unquote(parsed.path))
    if target == page_file and parsed.fragment:
        return None
    return None if target.exists() else f"link to a missing file: {target}"


def check_page(page, path: str | Path) -> list[str]:
    """Load `path` in `page`; return what is wrong with it (empty when nothing is)."""
    path = Path(path).resolve()
    page.goto(path.as_uri(), wait_until="load")
    seen = page.evaluate(_INSPECT)
    problems = [p for url in seen["links"] if (p := _link_problem(url, path))]
    problems += [f"image did not load: {src}" for src in seen["broken"]]
    problems += [f"wider than the {seen['width']} px window: {w}" for w in seen["wide"]]
    if seen["scrollWidth"] > seen["width"] and not seen["wide"]:
        problems.append(f"page scrolls sideways: {seen['scrollWidth']} px in a {seen['width']} px window")
    return problems
