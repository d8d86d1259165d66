"""The demo on its smallest settings: every artefact is there and the artefacts agree with each other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.demo import DemoSettings, run_demo
from flywheel.files import file_hashes, model_weights_sha256, sha256_file


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, DemoSettings.for_size("test"))
    return out, summary


def test_summary_has_the_promised_shape(demo):
    out, summary = demo
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["gate"]["decision_rule"] and on_disk["gate"]["checks"]
    assert all(c["role"] in ("required", "advisory") for c in on_disk["gate"]["checks"].values())
    for period in ("period_0", "period_1"):
        for metric in ("edit_cost", "edit_rate", "regen_rate", "abandon_rate"):
            value = on_disk[period][metric]
            lo, hi = on_disk[period]["intervals"][metric]
            assert lo <= value <= hi
    assert on_disk["period_0"]["model"]["adapter"] is None


def test_every_artefact_is_there_and_linked(demo):
    out, summary = demo
    art = {k: Path(v) for k, v in summary["artefacts"].items()}
    for log in (art["log_0"], art["log_1"]):
        assert log.stat().st_size > 0
        assert log.with_name(log.name.replace(".jsonl", ".turns.jsonl")).exists()
    for kind in ("sft", "dpo", "kto"):
        assert (art["build"] / kind / "dataset_dict.json").exists()
    assert (art["build"] / "manifest.json").exists() and (art["build"] / "README.md").exists()
    assert (art["eval_set"] / "eval_set.json").exists()
    for stage in ("sft", "dpo"):
        for name in ("adapter_config.json", "adapter_model.safetensors", "lineage.json", "recipe.yaml"):
            assert (art[stage] / name).exists(), (stage, name)
    for name in ("gate_report.json", "gate_report.md", "gate_report.html", "items.jsonl"):
        assert (art["gate"] / name).exists(), name
    assert list(art["monitor"].glob("*.png"))
    index = (out / "index.html").read_text()
    for target in ("logs/period0.jsonl", "gate/gate_report.html", "monitor/monitor.md", "datasets/period0/README.md"):
        assert target in index


def test_gate_registry_and_monitor_agree(demo):
    out, summary = demo
    report = json.loads((Path(summary["artefacts"]["gate"]) / "gate_report.json").read_text())
    dpo = Path(summary["artefacts"]["dpo"])
    # The gate measured exactly the adapter that was trained, on the base and eval set the demo used.
    assert report["adapter"]["files"] == {k: v for k, v in file_hashes(dpo).items() if k in report["adapter"]["files"]}
    assert report["base"]["weights_sha256"] == model_weights_sha256(summary["base_model"])
    assert report["eval_set"]["sha256"] == summary["eval_set"]["sha256"]

    # On the smallest settings too the adapter passes the gate and is promoted (the test model and every seed are
    # fixed, so this is the same run each time).
    assert report["decision"] == "pass", report["reasons"]
    promotion = summary["promotion"]
    assert promotion is not None
    entry = json.loads((Path(promotion["registry"]) / "versions" / promotion["version"] / "entry.json").read_text())
    assert entry["adapter"]["adapter_sha256"] == report["adapter"]["adapter_sha256"]
    assert entry["base"]["weights_sha256"] == report["base"]["weights_sha256"]
    stored = Path(promotion["path"])
    for name, sha in report["adapter"]["files"].items():
        if (stored / name).exists():
            assert sha256_file(stored / name) == sha
    assert entry["gate"]["report_sha256"] == sha256_file(Path(summary["artefacts"]["gate"]) / "gate_report.json")
    # The monitor saw period 1 served by the promoted version.
    assert summary["period_1"]["model"]["adapter"] == promotion["version"]
    alias = json.loads((Path(promotion["registry"]) / "aliases" / "assistant.json").read_text())
    assert alias["current"] == promotion["version"]


def test_the_promoted_adapter_makes_period_1_better_than_period_0(demo):
    """What the demo claims, at its smallest settings: the users edit less after one turn of the wheel."""
    out, summary = demo
    p0, p1 = summary["period_0"], summary["period_1"]
    assert summary["promotion"] is not None
    assert p1["edit_cost"] < p0["edit_cost"]
    # Not a trend inside the noise: period 1's interval (clustered by user) lies wholly below period 0's estimate.
    assert p1["intervals"]["edit_cost"][1] < p0["edit_cost"]
