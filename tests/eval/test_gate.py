"""The gate's proof on planted adapters (tests/eval/planted.py): a real one passes, broken ones fail, no false pass.

Order matters for speed only: the first gate scores the base and caches it; the later ones reuse it.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from eval.config import GateConfigError
from eval.gate import GateEvaluationError, run_gate
from flywheel.cli import main as flywheel_main


def _cli_gate(adapter, eval_set, out, config_path, *extra):
    return flywheel_main(["eval", "gate", "--adapter", str(adapter), "--eval", str(eval_set), "--config",
                          str(config_path), "--out", str(out), "--quiet", *extra])


def _write_config(tmp_path, cfg):
    import yaml

    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_adapter_trained_on_real_signals_passes_with_full_report(planted, eval_set_dir, gate_config, tmp_path,
                                                                 capsys):
    cfg = copy.deepcopy(gate_config)
    cfg["tracker"] = {"report_to": "wandb", "project": "flywheel-tests"}
    out = tmp_path / "report"
    code = _cli_gate(planted("real"), eval_set_dir, out, _write_config(tmp_path, cfg))
    printed = capsys.readouterr().out
    report = json.loads((out / "gate_report.json").read_text())
    assert code == 0, printed
    assert report["decision"] == "pass" and report["reasons"] == [] and report["warnings"] == []
    movement = report["checks"]["preference_movement"]
    assert movement["interval"][0] > 0.5 and movement["pvalue"] < 0.01
    assert report["checks"]["generation_edit_cost"]["interval"][1] < 0
    # The contract's fields, with hashes that identify what was gated.
    assert report["kind"] == "flywheel.gate_report"
    for name, check in report["checks"].items():
        assert {"passed", "base", "adapter", "diff", "interval", "n", "method"} <= set(check), name
    assert set(report["adapter"]["files"]) >= {"adapter_config.json", "adapter_model.safetensors", "lineage.json"}
    assert len(report["base"]["weights_sha256"]) == 64 and len(report["eval_set"]["sha256"]) == 64
    assert report["seed"] == 0 and report["config"]["alpha"] == 0.05 and report["versions"]["torch"]
    # Readable reports with the plots inside, and one line per scored item.
    html = (out / "gate_report.html").read_text()
    assert "data:image/png;base64," in html and "PASS" in html
    assert "![checks.png](checks.png)" in (out / "gate_report.md").read_text()
    meta = json.loads((eval_set_dir / "eval_set.json").read_text())
    lines = (out / "items.jsonl").read_text().splitlines()
    assert len(lines) == meta["counts"]["pairs"] + meta["counts"]["answers"] + meta["counts"]["general"]
    # Its own tracker run, offline, linked to the training run named in the lineage.
    tracker = report["tracker"]
    assert tracker["mode"] == "offline" and tracker["training_run_id"] == "planted-real"
    run_dirs = list((tmp_path / "wandb-root" / "wandb").glob(f"offline-run-*-{tracker['run_id']}"))
    assert run_dirs, "no offline wandb run written"


def test_adapter_trained_with_chosen_and_rejected_swapped_fails_in_domain(planted, eval_set_dir, gate_config,
                                                                          tmp_path):
    out = tmp_path / "report"
    code = _cli_gate(planted("swapped"), eval_set_dir, out, _write_config(tmp_path, gate_config))
    report = json.loads((out / "gate_report.json").read_text())
    assert code == 1 and report["decision"] == "fail"
    movement = report["checks"]["preference_movement"]
    assert not movement["passed"] and movement["interval"][1] < 0.5  # moved away from the users' choice
    assert any(r.startswith("preference_movement") for r in report["reasons"])
    assert report["scoring"]["base_scores"] == "cache"  # the base was scored once, by the first gate


def test_adapter_that_wrecks_general_text_fails_non_inferiority(planted, eval_set_dir, gate_config, tmp_path):
    report = run_gate(planted("wreck"), eval_set_dir, tmp_path / "report", config=gate_config, show_progress=False)
    assert report["decision"] == "fail"
    general = report["checks"]["general_nll"]
    assert not general["passed"] and general["interval"][0] > report["config"]["checks"]["general"]["margin"]


def test_zero_adapter_is_the_base_and_fails_for_lack_of_improvement(planted, eval_set_dir, gate_config, tmp_path):
    report = run_gate(planted("zero"), eval_set_dir, tmp_path / "report", config=gate_config, show_progress=False)
    assert report["decision"] == "fail"
    movement = report["checks"]["preference_movement"]
    assert movement["value"] == 0.5 and movement["ties"] == movement["n"] and not movement["passed"]
    assert not report["checks"]["generation_edit_cost"]["passed"]
    # Nothing moved, so nothing regressed either: it fails only for lack of improvement.
    assert report["checks"]["general_nll"]["passed"] and report["checks"]["guardrail_chosen_logp"]["passed"]


def test_eval_set_change_needs_an_explicit_rebaseline(planted, eval_set_dir, gate_config, tmp_path):
    cfg = copy.deepcopy(gate_config)
    cfg["checks"]["generation"]["enabled"] = False
    other = "0" * 64
    refused = run_gate(planted("real"), eval_set_dir, tmp_path / "a", config=cfg, production_eval_sha256=other,
                       show_progress=False)
    assert refused["decision"] == "fail"
    assert any(r.startswith("EVAL_SET_CHANGED") for r in refused["reasons"])
    accepted = run_gate(planted("real"), eval_set_dir, tmp_path / "b", config=cfg, production_eval_sha256=other,
                        rebaseline=True, show_progress=False)
    assert accepted["decision"] == "pass" and accepted["baseline"]["rebaseline"] is True
    assert "re-baselined" in accepted["baseline"]["note"]


def test_too_few_items_is_insufficient_data_and_fails(planted, eval_set_dir, gate_config, tmp_path):
    cfg = copy.deepcopy(gate_config)
    cfg["checks"]["generation"]["enabled"] = False
    cfg["min_items"] = 500
    report = run_gate(planted("real"), eval_set_dir, tmp_path / "r", config=cfg, show_progress=False)
    assert report["decision"] == "fail"
    assert report["checks"]["preference_movement"]["status"] == "INSUFFICIENT_DATA"
    assert any(r.startswith("INSUFFICIENT_DATA") for r in report["reasons"])


def _copy_adapter(src, dst, **lineage_changes):
    shutil.copytree(src, dst)
    lineage = json.loads((dst / "lineage.json").read_text())
    for key, value in lineage_changes.items():
        lineage[key] = value
    (dst / "lineage.json").write_text(json.dumps(lineage))
    return dst


def test_eval_set_overlapping_the_training_data_is_refused_with_exit_2(planted, planted_build, eval_set_dir,
                                                                      gate_config, tmp_path):
    from datasets import DatasetDict, load_from_disk

    # A build whose training split is the eval set's held-out split: what training on the test data looks like.
    leaky = tmp_path / "leaky-build"
    shutil.copytree(planted_build, leaky)
    for kind in ("dpo", "sft"):
        d = load_from_disk(str(planted_build / kind))
        shutil.rmtree(leaky / kind)
        DatasetDict({"train": d["test"], "test": d["test"]}).save_to_disk(str(leaky / kind))
    from flywheel.files import sha256_file

    adapter = _copy_adapter(planted("zero"), tmp_path / "adapter", datasets=[
        {"path": str(leaky), "manifest_sha256": sha256_file(leaky / "manifest.json"), "weight": 1.0, "kind": "dpo"}])
    with pytest.raises(GateConfigError, match="overlaps the adapter's training data"):
        run_gate(adapter, eval_set_dir, tmp_path / "r", config=gate_config, show_progress=False)
    assert _cli_gate(adapter, eval_set_dir, tmp_path / "r", _write_config(tmp_path, gate_config)) == 2
    assert not (tmp_path / "r").exists()


def test_unverifiable_lineage_and_wrong_base_are_usage_errors(planted, eval_set_dir, gate_config, tmp_path,
                                                              tiny_model_dir):
    moved = _copy_adapter(planted("zero"), tmp_path / "moved", datasets=[
        {"path": str(tmp_path / "gone"), "manifest_sha256": "x", "weight": 1.0, "kind": "dpo"}])
    with pytest.raises(GateConfigError, match="not there to check"):
        run_gate(moved, eval_set_dir, tmp_path / "r", config=gate_config, show_progress=False)
    wrong = _copy_adapter(planted("zero"), tmp_path / "wrong", base_model={
        "path": str(tiny_model_dir), "revision": None, "weights_sha256": "f" * 64})
    with pytest.raises(GateConfigError, match="weights sha256"):
        run_gate(wrong, eval_set_dir, tmp_path / "r", config=gate_config, show_progress=False)
    bad_config = dict(gate_config, thresholds={"x": 1})
    with pytest.raises(GateConfigError, match="unknown key 'thresholds'"):
        run_gate(planted("zero"), eval_set_dir, tmp_path / "r", config=bad_config, show_progress=False)


def test_a_crash_while_scoring_is_an_evaluation_error_with_exit_3(planted, eval_set_dir, gate_config, tmp_path,
                                                                 tiny_model_dir):
    broken_base = tmp_path / "broken-base"
    shutil.copytree(tiny_model_dir, broken_base)
    (broken_base / "model.safetensors").write_bytes(b"not a safetensors file")
    adapter = _copy_adapter(planted("zero"), tmp_path / "adapter", base_model={
        "path": str(broken_base), "revision": None, "weights_sha256": None})
    with pytest.raises(GateEvaluationError):
        run_gate(adapter, eval_set_dir, tmp_path / "r", config=gate_config, show_progress=False)
    assert _cli_gate(adapter, eval_set_dir, tmp_path / "r", _write_config(tmp_path, gate_config)) == 3


def test_auto_max_new_tokens_leaves_room_for_the_longest_held_out_answer(tiny_model_dir, eval_set_dir):
    from transformers import AutoTokenizer

    from eval.freeze import load_eval_set
    from eval.gate import auto_max_new_tokens
    from eval.scorer import tokenize_chat

    answers = load_eval_set(eval_set_dir)["answers"][:8]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    longest = max(len(tokenize_chat(tok, a["prompt"], [a["answer"]])[1][0]) for a in answers)
    n = auto_max_new_tokens(str(tiny_model_dir), answers)
    assert longest > 16 and n >= 1.25 * longest and n < 1.25 * longest + 1
    short = [{**answers[0], "answer": "Yes."}]
    assert auto_max_new_tokens(str(tiny_model_dir), short) == 16


def test_a_general_set_the_base_cannot_model_is_flagged(planted, planted_build, gate_config, tmp_path):
    """The shipped English set is near chance for the tiny model: the report says non-inferiority on it means little."""
    from eval.freeze import freeze

    english = freeze(planted_build, tmp_path / "english-evalset")
    assert english["counts"]["general"] >= 40
    report = run_gate(planted("zero"), tmp_path / "english-evalset", tmp_path / "report", config=gate_config,
                      show_progress=False)
    assert len(report["warnings"]) == 1 and "near chance" in report["warnings"][0]
    assert "## Warnings" in (tmp_path / "report" / "gate_report.md").read_text()


def test_general_set_warning_threshold():
    from eval.gate import general_set_warning

    assert general_set_warning({"base": 2.1}, 4096) is None  # the tiny model on its own general text
    assert "near chance" in general_set_warning({"base": 13.3}, 4096)
    assert general_set_warning({"base": None}, 4096) is None and general_set_warning(None, 4096) is None
