"""The demo on its smallest settings: every artefact is there and the artefacts agree with each other."""

from __future__ import annotations

import json
from pathlib import Path

from flywheel.files import file_hashes, model_weights_sha256, sha256_file


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
    for target in ("logs/period0.jsonl", "gate/gate_report.html", "monitor/monitor.html", "datasets/period0/README.md"):
        assert target in index


def test_gate_registry_and_monitor_agree(demo):
    out, summary = demo
    report = json.loads((Path(summary["artefacts"]["gate"]) / "gate_report.json").read_text())
    dpo = Path(summary["artefacts"]["dpo"])
    # The gate measured exactly the adapter that was trained, on the base and eval set the demo used.
    assert report["adapter"]["files"] == {k: v for k, v in file_hashes(dpo).items() if k in report["adapter"]["files"]}
    assert report["base"]["weights_sha256"] == model_weights_sha256(summary["base_model"])
    assert report["eval_set"]["sha256"] == summary["eval_set"]["sha256"]

    # On the smallest settings (9 held-out users, 20 generated prompts) the gate fails, and for one reason only:
    # generation is not shown non-inferior. Its interval over 9 users is about 0.26 wide, and the report says why
    # (the smallest change this eval set detects is several times the 0.02 margin); every other required check
    # passes. The test model and every seed are fixed, so this is the same run each time.
    assert report["decision"] == "fail"
    failed = [n for n, c in report["checks"].items() if not c["passed"]]
    assert failed == ["generation_edit_cost"], report["reasons"]
    gen = report["checks"]["generation_edit_cost"]
    assert gen["role"] == "required" and gen["n_users"] == 9
    assert gen["mde"] > 5 * gen["threshold"]["interval_high_at_most"]
    assert gen["interval"][0] < gen["diff"] < 0 < gen["interval"][1]
    assert report["checks"]["preference_movement"]["passed"] and report["checks"]["fit_nll"]["passed"]
    # Nothing promoted: period 1 ran on the base model, and the monitor saw no adapter.
    assert summary["promotion"] is None
    assert summary["period_1"]["model"]["adapter"] is None
    assert not (Path(summary["artefacts"]["registry"]) / "aliases" / "assistant.json").exists()
