"""Every page the demo writes, opened in a real headless Chromium: links resolve, images load, nothing is wider
than a 1280 px window, and each page states the decision its JSON holds.

Skipped where no Chromium is installed (`.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from flywheel.page_check import browser_page, check_page, chromium_path


# Decided before any fixture runs, so a machine without a browser does not run the demo for nothing.
pytestmark = pytest.mark.skipif(chromium_path() is None, reason=(
    "no Chromium installed (apt-get install chromium, as .ci/run does): the browser checks of the report pages did "
    "not run"))


@pytest.fixture(scope="module")
def page():
    with browser_page() as p:
        yield p


def test_every_page_the_demo_writes_reads_in_a_browser(demo, page):
    out, _ = demo
    pages = sorted(out.rglob("*.html"))
    names = {p.relative_to(out).as_posix() for p in pages}
    assert {"index.html", "gate/gate_report.html", "monitor/monitor.html"} <= names, names
    for path in pages:
        assert check_page(page, path) == [], path


def test_each_page_states_the_decision_its_json_holds(demo, page):
    out, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    check_page(page, out / "index.html")
    assert page.locator("h2", has_text="Gate:").first.inner_text() == f"Gate: {summary['gate']['decision'].upper()}"
    # The sentence at the top says which way the decision went.
    lead = page.locator("p.lead").inner_text()
    assert ("passed the gate" in lead) == (summary["gate"]["decision"] == "pass"), lead
    # Real replies of both periods, each with what the user kept of it.
    assert page.locator("pre.reply").count() >= 2

    gate = json.loads((out / "gate" / "gate_report.json").read_text())
    check_page(page, out / "gate" / "gate_report.html")
    assert page.locator("h1").inner_text() == f"Gate report: {gate['decision'].upper()}"
    assert page.locator("p.basis").inner_text().startswith(gate["decision"].upper())

    monitor = json.loads((out / "monitor" / "monitor.json").read_text())
    check_page(page, out / "monitor" / "monitor.html")
    word = "ALERT" if monitor["alert"] else ("OK" if monitor["comparison"] else "NOTHING TO COMPARE")
    assert page.locator("h1").inner_text() == f"Production monitor: {word}"


@pytest.fixture(scope="module")
def demo_copy(demo, tmp_path_factory):
    """A copy of the demo's folder, to break pages in without touching the demo's own."""
    out, _ = demo
    copy = tmp_path_factory.mktemp("broken") / "demo"
    shutil.copytree(out, copy)
    return copy


def _variant(folder, name, edit) -> object:
    index = (folder / "index.html").read_text()
    changed = edit(index)
    assert changed != index, "the edit did not apply: the page changed shape"
    (folder / name).write_text(changed)
    return folder / name


def test_a_broken_link_is_caught(demo_copy, page):
    path = _variant(demo_copy, "broken-link.html",
                    lambda s: s.replace("href='gate/gate_report.html'", "href='gate/no_such_report.html'"))
    problems = check_page(page, path)
    assert problems == [f"link to a missing file: {demo_copy / 'gate' / 'no_such_report.html'}"]


def test_a_missing_image_is_caught(demo_copy, page):
    path = _variant(demo_copy, "missing-image.html", lambda s: s.replace("src='periods.png'", "src='gone.png'"))
    assert check_page(page, path) == ["image did not load: gone.png"]


def test_an_overflowing_chart_is_caught(demo_copy, page):
    # A chart drawn at a fixed width wider than the window.
    path = _variant(demo_copy, "wide-chart.html",
                    lambda s: s.replace("</style>", "img{max-width:none;width:1600px}</style>", 1))
    problems = check_page(page, path)
    assert problems and all(re.match(r"wider than the 1280 px window: img alt=", p) for p in problems), problems
