"""The monitor's figures against numbers worked out by hand on a small capture log."""

from __future__ import annotations

import json

import pytest

from flywheel.cli import main as flywheel_main
from serving.monitor import monitor

BASE = "tiny-base"


class Log:
    def __init__(self):
        self.events = []

    def _add(self, type_, user, ts, **fields):
        self.events.append({"event_id": f"e{len(self.events)}", "type": type_, "ts": ts,
                            "session_id": f"s-{user}", "user_id": user, **fields})

    def gen(self, user, ts, req, gen, output, adapter=None):
        self._add("generation", user, ts, request_id=req, generation_id=gen, output=output,
                  messages=[{"role": "user", "content": f"question {req}"}],
                  model={"base": BASE, "adapter": adapter})

    def on_gen(self, type_, user, ts, gen, **fields):
        self._add(type_, user, ts, generation_id=gen, **fields)

    def on_req(self, type_, user, ts, req, **fields):
        self._add(type_, user, ts, request_id=req, **fields)

    def write(self, path):
        path.write_text("".join(json.dumps(e) + "\n" for e in self.events))
        return path


def hand_log(path):
    log = Log()
    d1, d2 = "2026-11-02T10:00:{:02d}Z", "2026-11-03T10:00:{:02d}Z"
    # Base model, day 1. u1: an edit ("abcd" -> "abcx": 1 of 4 characters), then a regeneration then an accept.
    log.gen("u1", d1.format(0), "r1", "g1", "abcd")
    log.on_gen("edit", "u1", d1.format(1), "g1", edited_output="abcx")
    log.on_gen("accept", "u1", d1.format(2), "g1")
    log.gen("u1", d1.format(3), "r2", "g2", "hello")
    log.on_gen("regenerate", "u1", d1.format(4), "g2")
    log.gen("u1", d1.format(5), "r2", "g3", "world")
    log.on_gen("accept", "u1", d1.format(6), "g3")
    # u2: abandons a turn; thumbs-down then rephrases another; accepts the rephrased turn's answer.
    log.gen("u2", d1.format(7), "r3", "g4", "aaaa")
    log.on_req("abandon", "u2", d1.format(8), "r3")
    log.gen("u2", d1.format(9), "r4", "g5", "xyz")
    log.on_gen("rating", "u2", d1.format(10), "g5", value=-1)
    log.on_req("rephrase", "u2", d1.format(11), "r4", new_request_id="r5")
    log.gen("u2", d1.format(12), "r5", "g6", "xyz!")
    log.on_gen("accept", "u2", d1.format(13), "g6")
    log.events.append(dict(log.events[-1]))  # an exact duplicate line counts once
    # Adapter support-v1, day 2. u1 accepts; u3 edits 2 of 10 characters without accepting, then regenerates
    # twice and abandons.
    log.gen("u1", d2.format(0), "r6", "g7", "abcd", adapter="support-v1")
    log.on_gen("accept", "u1", d2.format(1), "g7")
    log.gen("u3", d2.format(2), "r7", "g8", "abcdefghij", adapter="support-v1")
    log.on_gen("edit", "u3", d2.format(3), "g8", edited_output="abcdefghXY")
    log.gen("u3", d2.format(4), "r8", "g9", "q", adapter="support-v1")
    log.on_gen("regenerate", "u3", d2.format(5), "g9")
    log.gen("u3", d2.format(6), "r8", "g10", "r", adapter="support-v1")
    log.on_gen("regenerate", "u3", d2.format(7), "g10")
    log.gen("u3", d2.format(8), "r8", "g11", "s", adapter="support-v1")
    log.on_req("abandon", "u3", d2.format(9), "r8")
    return log.write(path)


def test_figures_match_hand_computation(tmp_path):
    report = monitor([hand_log(tmp_path / "log.jsonl")], tmp_path / "out", period="day", n_boot=2000)
    base, adapter = report["versions"]["base"], report["versions"]["support-v1"]
    assert list(report["versions"]) == ["base", "support-v1"]  # ordered by first appearance
    assert (base["turns"], base["users"], adapter["turns"], adapter["users"]) == (5, 2, 3, 2)
    # Base, 5 turns: r1 accept+edit cost 1/4; r2 accept, 1 regeneration, cost 0; r3 abandon, no answer: 1.0;
    # r4 thumbs-down + rephrase, no answer: 1.0; r5 accept: 0.
    assert base["accept_rate"] == pytest.approx(3 / 5)
    assert base["edit_rate"] == pytest.approx(1 / 5)
    assert base["edit_cost"] == pytest.approx((0.25 + 0 + 1 + 1 + 0) / 5)
    assert base["regen_rate"] == pytest.approx(1 / 5)
    assert base["rephrase_rate"] == base["abandon_rate"] == base["thumbs_down_rate"] == pytest.approx(1 / 5)
    # Adapter, 3 turns: r6 accept 0; r7 edit without accept, final = the edit: 2/10; r8 2 regenerations, abandon: 1.
    assert adapter["accept_rate"] == pytest.approx(1 / 3)
    assert adapter["edit_rate"] == pytest.approx(1 / 3)
    assert adapter["edit_cost"] == pytest.approx((0 + 0.2 + 1) / 3)
    assert adapter["regen_rate"] == pytest.approx(2 / 3)
    assert adapter["abandon_rate"] == pytest.approx(1 / 3)
    assert adapter["rephrase_rate"] == adapter["thumbs_down_rate"] == 0
    # Two users: a replicate draws u1 twice (p 1/4), u2 twice (1/4) or both, so the 95 % interval runs exactly
    # from one user's mean to the other's: edit cost u1 (0.25 + 0) / 2, u2 (1 + 1 + 0) / 3.
    assert base["intervals"]["edit_cost"] == pytest.approx([0.125, 2 / 3])
    assert adapter["intervals"]["edit_cost"] == pytest.approx([0.0, 0.6])  # u1: 0; u3: (0.2 + 1) / 2

    cmp_ = report["comparison"]
    assert (cmp_["older"], cmp_["newer"]) == ("base", "support-v1")
    assert cmp_["metrics"]["edit_cost"]["diff"] == pytest.approx(0.4 - 0.45)
    assert cmp_["metrics"]["regen_rate"]["diff"] == pytest.approx(2 / 3 - 1 / 5)
    # Worse regen rate, but one user drives it: the interval spans zero, so no alert.
    assert cmp_["metrics"]["regen_rate"]["interval"][0] < 0 and not report["alert"]
    assert report["set_aside"]["duplicate_events"] == 1

    assert [(r["period"], r["version"], r["turns"]) for r in report["by_period"]] == [
        ("2026-11-02", "base", 5), ("2026-11-03", "support-v1", 3)]
    out = tmp_path / "out"
    assert json.loads((out / "monitor.json").read_text())["versions"]["base"]["turns"] == 5
    assert "| base | 5 | 2 |" in (out / "monitor.md").read_text()
    page = (out / "monitor.html").read_text()
    assert "<h1>Production monitor: <span class='pass'>OK</span></h1>" in page
    assert "It rests on support-v1 against base over 8 turns" in page
    assert "src='versions.png'" in page and "src='periods.png'" in page
    assert sorted(p.name for p in out.glob("*.png")) == ["periods.png", "versions.png"]
    assert (out / "versions.png").read_bytes()[:4] == b"\x89PNG"


def _regression_log(path, users=12):
    """Every user accepts the base's answers unchanged, then abandons half the adapter's turns."""
    log = Log()
    for i in range(users):
        u = f"u{i}"
        for k in range(2):
            log.gen(u, f"2026-11-02T1{k}:00:{i:02d}Z", f"b{i}-{k}", f"gb{i}-{k}", "fine answer")
            log.on_gen("accept", u, f"2026-11-02T1{k}:01:{i:02d}Z", f"gb{i}-{k}")
            log.gen(u, f"2026-11-09T1{k}:00:{i:02d}Z", f"a{i}-{k}", f"ga{i}-{k}", "worse answer", adapter="v2")
            if k == 0:
                log.on_req("abandon", u, f"2026-11-09T1{k}:01:{i:02d}Z", f"a{i}-{k}")
            else:
                log.on_gen("accept", u, f"2026-11-09T1{k}:01:{i:02d}Z", f"ga{i}-{k}")
    return log.write(path)


def test_alert_and_exit_code_when_newer_version_is_worse(tmp_path, capsys):
    log = _regression_log(tmp_path / "log.jsonl")
    code = flywheel_main(["monitor", str(log), "--out", str(tmp_path / "out"), "--period", "week",
                          "--bootstrap", "500"])
    assert code == 1
    assert "ALERT: v2 is worse than base" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert report["regressions"] == ["accept_rate", "edit_cost", "abandon_rate"]
    assert report["comparison"]["metrics"]["abandon_rate"]["diff"] == pytest.approx(0.5)
    assert [r["period"] for r in report["by_period"]] == ["2026-W45", "2026-W46"]
    # A margin wider than the drop silences it.
    assert flywheel_main(["monitor", str(log), "--out", str(tmp_path / "out2"), "--margin", "0.6",
                          "--bootstrap", "200"]) == 0


def test_monitor_agrees_with_the_simulators_ground_truth(tmp_path):
    """The simulator writes what really happened in each turn beside its log; the monitor sees only the log."""
    import random

    from simulation.simulate import SimConfig, simulate

    def replies(conversations, seed):  # no model: replies of varied quality, so every outcome occurs
        rng = random.Random(seed)
        return [rng.choice(["Hello! Sure.\n- Open Settings.\n- Click Reset.\nNext step: check your inbox. Thanks!",
                            "Open settings and click reset.",
                            "ok"]) for _ in conversations]

    config = SimConfig(p_abandon=0.05, p_rephrase_after_limit=0.3, p_abandon_after_limit=0.3, p_rate=0.5)
    periods = []
    for period, (adapter, seed) in enumerate([(None, 0), ("support-v1", 1)]):
        log = tmp_path / f"period{period}.jsonl"
        simulate(tmp_path / "base-model", log, adapter=adapter, users=12, turns=8, seed=seed, config=config,
                 generate=replies)
        periods.append(log)
    report = monitor([str(p) for p in periods], tmp_path / "out", n_boot=200)

    for log, label in zip(periods, ["base", "support-v1"]):
        truth = [json.loads(line) for line in log.with_name(log.stem + ".turns.jsonl").read_text().splitlines()]
        seen = report["versions"][label]
        assert seen["turns"] == len(truth)
        outcomes = [t["outcome"] for t in truth]
        assert seen["edit_cost"] == pytest.approx(sum(t["edit_cost"] for t in truth) / len(truth))
        assert seen["regen_rate"] == pytest.approx(sum(t["n_regenerations"] for t in truth) / len(truth))
        assert seen["edit_rate"] == pytest.approx(outcomes.count("edit") / len(truth))
        assert seen["accept_rate"] == pytest.approx((outcomes.count("accept") + outcomes.count("edit")) / len(truth))
        assert seen["abandon_rate"] == pytest.approx(outcomes.count("abandon") / len(truth))
        assert seen["rephrase_rate"] == pytest.approx(outcomes.count("rephrase") / len(truth))
        assert 0 < seen["edit_cost"] < 1 and len(set(outcomes)) >= 3  # edits, regenerations and exits all occur


def test_invalid_lines_are_named_and_left_out(tmp_path, capsys):
    log = hand_log(tmp_path / "log.jsonl")
    n_lines = len(log.read_text().splitlines())
    with open(log, "a") as f:
        f.write('{"event_id": "broken", "type": "generation"}\n')
    assert flywheel_main(["monitor", str(log), "--out", str(tmp_path / "out"), "--bootstrap", "100"]) == 0
    err = capsys.readouterr().err
    assert "1 lines are not valid capture events" in err and f"log.jsonl:{n_lines + 1}:" in err
    report = json.loads((tmp_path / "out" / "monitor.json").read_text())
    assert report["set_aside"]["quarantined_lines"] == 1 and report["turns"] == 8
