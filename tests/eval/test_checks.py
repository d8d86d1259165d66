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
    # The p-value is a paired t test over the 12 users, not a McNemar over 60 pairs.
    assert not check["passed"] and check["pvalue"] < 1e-3 and check["diff"] == pytest.approx(-0.75)


def test_a_slice_that_regresses_fails_the_gate_while_the_whole_improves():
    cfg = load_config({"checks": {"slices": {"min_n": 10}}})
    good = [dict(p, margin_diff=1.0) for p in _pairs(60, signal="edit")]
    bad = [dict(p, id=f"b{p['id']}", margin_diff=-1.0) for p in _pairs(20, users=10, signal="regenerate")]
    check = checks.check_slices(good + bad, [], cfg)
    assert not check["passed"] and "signal=regenerate" in check["reason"]
    tiny = checks.check_slices(good + bad[:5], [], cfg)
    assert tiny["passed"] and {"slice": "signal=regenerate", "metric": "movement_share", "n": 5, "n_users": 5,
                               "status": "insufficient"} in tiny["skipped"]


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


def test_a_slice_of_one_users_items_is_insufficient_not_regressed():
    cfg = load_config(None)
    good = [dict(p, margin_diff=1.0) for p in _pairs(60, signal="edit")]
    one_user = [dict(p, id=f"o{p['id']}", user_id="u-alone", margin_diff=-1.0) for p in _pairs(30, signal="rate")]
    check = checks.check_slices(good + one_user, [], cfg)
    assert check["passed"], check.get("reason")
    skipped = [s for s in check["skipped"] if s["slice"] == "signal=rate"]
    assert skipped and skipped[0]["n_users"] == 1 and skipped[0]["status"] == "insufficient"
    assert all(s["interval"][1] > s["interval"][0] for s in check["slices"] if s["metric"] == "movement_share"
               and s["value"] not in (0.5,))


def test_slices_are_corrected_for_multiplicity():
    cfg = load_config(None)
    # 20 tags, each a slice of 10 users with 4 pairs each; in tag0 the users' shares moved toward are borderline
    # low (one-sided t p about 0.012: alone it would fail), which among 20 slices is what chance gives: Holm does
    # not call it a regression, an uncorrected test would.
    tag0_toward = [1, 1, 1, 2, 1, 1, 2, 3, 1, 1]  # of 4 pairs per user
    rows = []
    for tag in range(20):
        for u in range(10):
            toward = tag0_toward[u] if tag == 0 else 2 + (u % 3 - 1)
            for k in range(4):
                rows.append({"id": f"{tag}-{u}-{k}", "user_id": f"u{u}", "signal": "edit", "tenant": "t",
                             "tags": [f"tag{tag}"], "margin_diff": 1.0 if k < toward else -1.0})
    check = checks.check_slices(rows, [], cfg)
    tag0 = next(s for s in check["slices"] if s["slice"] == "tags=tag0")
    assert tag0["pvalue"] < 0.025 < tag0["p_adjusted"]
    assert check["passed"]
    uncorrected = checks.check_slices(rows, [], load_config({"checks": {"slices": {"correction": "bh"}}}))
    assert uncorrected["threshold"]["correction"] == "bh"


def test_decision_is_all_required_checks_passed():
    from eval.gate import decide

    def c(passed, reason=None):
        return {"passed": passed, **({"reason": reason} if reason else {})}

    roles = load_config(None)["roles"]
    decision, reasons, warnings = decide({"fit_nll": c(True), "preference_ranking_summed": c(False, "worse")}, roles)
    assert decision == "pass" and reasons == [] and warnings == ["advisory check failed: worse"]
    decision, reasons, _ = decide({"fit_nll": c(False), "preference_ranking_summed": c(True)}, roles)
    assert decision == "fail" and reasons == ["fit_nll: failed"]  # a failure without a reason still fails
    decision, reasons, _ = decide({"preference_ranking_summed": c(True)}, roles)
    assert decision == "fail" and reasons == ["no required checks enabled"]
    cfg = load_config({"roles": {"fit_nll": "advisory"}})
    assert decide({"fit_nll": c(False), "general_nll": c(True)}, cfg["roles"])[0] == "pass"
    with pytest.raises(GateConfigError, match="roles.fit_nll"):
        load_config({"roles": {"fit_nll": "optional"}})
