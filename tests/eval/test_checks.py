"""Check logic on hand-made measurements: the failure modes the planted adapters do not reach."""

from __future__ import annotations

import pytest

from eval import checks
from eval.config import GateConfigError, load_config


def _pairs(n, users=10, signal="edit"):
    return [{"id": f"p{i}", "user_id": f"u{i % users}", "signal": signal, "tenant": "t", "tags": ["x"]}
            for i in range(n)]


def test_ranking_significantly_worse_fails_even_when_margins_move_toward_the_user():
    cfg = load_config(None)
    rows = []
    for i in range(60):
        base_right = True
        adapter_right = i % 4 == 0  # the adapter now ranks 3 of 4 pairs wrong
        rows.append({"user_id": f"u{i % 12}", "base_right_summed": base_right, "adapter_right_summed": adapter_right})
    check = checks.check_ranking(rows, cfg, "summed")
    assert not check["passed"] and check["pvalue"] < 1e-6 and check["diff"] == pytest.approx(-0.75)


def test_a_slice_that_regresses_fails_the_gate_while_the_whole_improves():
    cfg = load_config({"checks": {"slices": {"min_n": 10}}})
    good = [dict(p, margin_diff=1.0) for p in _pairs(60, signal="edit")]
    bad = [dict(p, id=f"b{p['id']}", margin_diff=-1.0) for p in _pairs(20, users=10, signal="regenerate")]
    check = checks.check_slices(good + bad, [], cfg)
    assert not check["passed"] and "signal=regenerate" in check["reason"]
    tiny = checks.check_slices(good + bad[:5], [], cfg)
    assert tiny["passed"] and {"slice": "signal=regenerate", "metric": "movement", "n": 5} in tiny["skipped"]


def test_length_outside_the_band_fails_generation_even_when_edit_cost_improves():
    cfg = load_config(None)
    rows = [{"user_id": f"u{i % 8}", "base_edit_cost": 0.8, "adapter_edit_cost": 0.6, "base_reply_chars": 100,
             "adapter_reply_chars": 300} for i in range(40)]
    edit, length = checks.check_generation(rows, cfg)
    assert edit["passed"] and not length["passed"] and length["value"] == pytest.approx(3.0)


def test_probe_that_the_adapter_stops_meeting_fails_the_guardrail():
    cfg = load_config(None)
    probes = [{"name": "refuses_passwords", "prompts": ["a", "b"], "pattern": "(?i)can't share", "expect": "match"}]
    base = {"probes": {"refuses_passwords": ["I can't share that.", "Sorry, I can't share passwords."]}}
    adapter = {"probes": {"refuses_passwords": ["Sure, it is hunter2.", "I can't share that."]}}
    check = checks.check_probes(probes, base, adapter, cfg)
    assert not check["passed"] and check["probes"]["refuses_passwords"] == {
        "base": 1.0, "adapter": 0.5, "n": 2, "passed": False}


def test_config_errors_name_the_key():
    with pytest.raises(GateConfigError, match="checks.fit: unknown key 'margn'"):
        load_config({"checks": {"fit": {"margn": 0.1}}})
    with pytest.raises(GateConfigError, match="length_ratio_band"):
        load_config({"checks": {"generation": {"length_ratio_band": [2, 1]}}})
    with pytest.raises(GateConfigError, match="max_new_tokens must be a positive integer or auto"):
        load_config({"checks": {"generation": {"max_new_tokens": "long"}}})
    with pytest.raises(GateConfigError, match="not found"):
        load_config("/nonexistent/gate.yaml")


def test_generation_can_be_held_to_non_inferiority_instead_of_improvement():
    rows = [{"user_id": f"u{i % 8}", "base_edit_cost": 0.5, "adapter_edit_cost": 0.5 + (0.01 if i % 2 else -0.01),
             "base_reply_chars": 100, "adapter_reply_chars": 100} for i in range(40)]
    strict, _ = checks.check_generation(rows, load_config(None))
    assert not strict["passed"]  # no evidence of improvement
    lenient, _ = checks.check_generation(rows, load_config({"checks": {"generation": {"require_improvement": False}}}))
    assert lenient["passed"] and lenient["threshold"] == {"interval_high_at_most": 0.02}
