"""The demo on its smallest settings, run once for every test of its artefacts and pages."""

from __future__ import annotations

import pytest

from flywheel.demo import DemoSettings, run_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, DemoSettings.for_size("test"))
    return out, summary
