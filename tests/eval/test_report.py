"""The gate report's first line: what the decision rests on, with and without the roles a gate may give."""

from __future__ import annotations

from eval.report import _check_table, decision_basis


def _check(passed, reason=None, **extra):
    return {"passed": passed, "reason": reason, "base": 0.5, "adapter": 0.4, "diff": -0.1,
            "interval": [-0.2, -0.05], "n": 40, **extra}


def test_without_roles_every_check_decides():
    checks = {"movement": _check(True), "nll": _check(False, "nll: worse"), "general": _check(True)}
    assert decision_basis("fail", checks, ["nll: worse"]) == "FAIL: 1 of 3 checks failed (nll)"
    header, rows = _check_table(checks)
    assert "role" not in header and "smallest detectable" not in header
    assert [r[1] for r in rows] == ["PASS", "FAIL", "PASS"]


def test_roles_rule_and_reasons_that_are_no_checks_are_stated():
    checks = {"movement": _check(True, role="required", mde=0.08), "nll": _check(True, role="required"),
              "slices": _check(False, "slices: one regressed", role="advisory")}
    line = decision_basis("fail", checks, ["slices: one regressed", "EVAL_SET_CHANGED: gated on another set"],
                          rule="pass when every required check passes")
    assert line == ("FAIL: all 2 required checks passed (movement, nll); advisory, not deciding: slices; also: "
                    "EVAL_SET_CHANGED: gated on another set. Rule: pass when every required check passes")
    header, rows = _check_table(checks)
    assert header[:3] == ["check", "role", "result"] and "smallest detectable" in header
    assert rows[0][header.index("smallest detectable")] == "0.08" and rows[1][header.index("smallest detectable")] == "–"
