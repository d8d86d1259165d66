"""Promotion, refusals, rollback and history, on real adapters and real files."""

from __future__ import annotations

import json
import os
import stat

import pytest

from flywheel.cli import main as flywheel_main
from serving import registry as R
from serving.registry import PromotionRefused, Registry, RegistryError, list_registry, promote, rollback, show


def _history(reg_dir, alias):
    return json.loads((reg_dir / "aliases" / f"{alias}.json").read_text())["history"]


def test_promote_stores_immutable_entry_and_moves_alias(bench):
    adapter, gate = bench.gated_adapter("a1", seed=1)
    entry = promote(adapter, gate, "support", registry=bench.registry)

    assert entry["name"] == "support-v1" and entry["version"] == 1
    stored = bench.registry / "versions" / "support-v1"
    assert (stored / "adapter" / "adapter_model.safetensors").read_bytes() == \
        (adapter / "adapter_model.safetensors").read_bytes()
    assert json.loads((stored / "gate_report.json").read_text())["decision"] == "pass"
    assert entry["lineage"]["base_model"]["weights_sha256"] == bench.base_sha
    assert entry["adapter"]["rank"] == 4
    # Immutable on disk, not only by convention.
    assert not os.stat(stored / "adapter" / "adapter_model.safetensors").st_mode & stat.S_IWUSR

    adapter2, gate2 = bench.gated_adapter("a2", seed=2)
    entry2 = promote(adapter2, gate2, "support", registry=bench.registry)
    assert entry2["name"] == "support-v2"
    assert show("support", registry=bench.registry)["current"] == "support-v2"
    history = _history(bench.registry, "support")
    assert [(e["action"], e["from"], e["to"]) for e in history] == [
        ("promote", None, "support-v1"), ("promote", "support-v1", "support-v2")]

    manifest = json.loads((bench.registry / "serving" / "manifest.json").read_text())
    (server,) = manifest["servers"]
    assert server["base"]["weights_sha256"] == bench.base_sha
    assert [(a["name"], a["role"]) for a in server["adapters"]] == [("support-v2", "current"),
                                                                    ("support-v1", "previous")]
    assert server["command"][:5] == ["vllm", "serve", str(bench.base_dir), "--enable-lora", "--lora-modules"]
    assert f"support-v2={bench.registry / 'versions' / 'support-v2' / 'adapter'}" in server["command"]
    assert server["command"][-4:] == ["--max-lora-rank", "8", "--max-loras", "2"]  # rank 4 rounds up to 8
    script = (bench.registry / "serving" / "vllm_serve.sh").read_text()
    assert server["command_line"] in script and "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in script


def _refused(bench, adapter, gate, code, **kwargs) -> PromotionRefused:
    """Promote, expect a refusal whose first reason is `code`, and check the alias did not move."""
    before = Registry(bench.registry).alias_state("support")
    with pytest.raises(PromotionRefused) as exc_info:
        promote(adapter, gate, "support", registry=bench.registry, **kwargs)
    assert exc_info.value.refusals[0].code == code, str(exc_info.value)
    assert Registry(bench.registry).alias_state("support") == before
    return exc_info.value


def test_refuses_without_gate_report(bench):
    adapter = bench.adapter("a", seed=1)
    err = _refused(bench, adapter, bench.root / "no-gate", "no_gate_report")
    assert err.exit_code == R.EXIT_NO_GATE_REPORT and "gate_report.json does not exist" in str(err)
    assert not (bench.registry / "aliases" / "support.json").exists()


def test_refuses_failed_gate(bench):
    adapter = bench.adapter("a", seed=1)
    gate = bench.gate("g", adapter, bench.eval_set("e", "2026-11-01T00:00:00+00:00"), decision="fail")
    err = _refused(bench, adapter, gate, "gate_failed")
    assert err.exit_code == R.EXIT_GATE_FAILED and "pref_accuracy" in str(err)


def test_refuses_adapter_changed_after_gating(bench):
    adapter, gate = bench.gated_adapter("a", seed=1)
    bench_weights = adapter / "adapter_model.safetensors"
    bench_weights.write_bytes(bench_weights.read_bytes()[:-4] + b"\0\0\0\0")
    err = _refused(bench, adapter, gate, "hash_mismatch")
    assert err.exit_code == R.EXIT_HASH_MISMATCH and "changed after gating" in str(err)
    # With a failed gate too, the changed files decide the exit code: forcing would ship ungated weights.
    failed = bench.gate("failed", bench.adapter("b", seed=2), bench.eval_set("e", "2026-11-01T00:00:00+00:00"),
                        decision="fail")
    tampered = bench.root / "adapters" / "b" / "adapter_model.safetensors"
    tampered.write_bytes(tampered.read_bytes()[:-4] + b"\0\0\0\0")
    err = _refused(bench, tampered.parent, failed, "hash_mismatch")
    assert [r.code for r in err.refusals][-1] == "gate_failed" and err.exit_code == R.EXIT_HASH_MISMATCH


def test_refuses_changed_eval_set(bench):
    adapter, gate = bench.gated_adapter("a", seed=1)
    eval_set = bench.root / "eval_sets" / "es-a"
    (eval_set / "pairs.jsonl").write_text('{"id": "swapped"}\n')
    assert "pairs.jsonl" in str(_refused(bench, adapter, gate, "hash_mismatch"))


def test_refuses_adapter_for_another_base(bench):
    # Trained on other weights than the ones the gate (and the alias) ran on.
    adapter = bench.adapter("a", seed=1, base_sha="0" * 64)
    gate = bench.gate("g", adapter, bench.eval_set("e", "2026-11-01T00:00:00+00:00"))
    err = _refused(bench, adapter, gate, "wrong_base")
    assert err.exit_code == R.EXIT_WRONG_BASE and "0000000000" in str(err)

    # Gated consistently on other weights, but the alias serves a version on this base: still another base.
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    other = bench.adapter("other", seed=2, base_sha="0" * 64)
    gate = bench.gate("g-other", other, bench.eval_set("e2", "2026-11-02T00:00:00+00:00"), base_sha="0" * 64)
    err = _refused(bench, other, gate, "hash_mismatch")  # the weights at the gate's base path are not "000..."
    assert "alias 'support' serves support-v1 on base weights" in str(err)
    assert [r.code for r in err.refusals] == ["hash_mismatch", "wrong_base"]
    # Without a gate report, the adapter's own lineage still names its base.
    err = _refused(bench, other, bench.root / "no-gate", "wrong_base")
    assert [r.code for r in err.refusals] == ["wrong_base", "no_gate_report"]


def test_refuses_eval_set_older_than_the_alias_last_gate(bench):
    new_set = bench.eval_set("new", "2026-11-20T00:00:00+00:00")
    old_set = bench.eval_set("old", "2026-11-01T00:00:00+00:00")
    promote(*bench.gated_adapter("a1", seed=1, eval_set=new_set), "support", registry=bench.registry)
    adapter2, gate2 = bench.gated_adapter("a2", seed=2, eval_set=old_set)
    err = _refused(bench, adapter2, gate2, "eval_set_older")
    assert err.exit_code == R.EXIT_EVAL_SET_OLDER and "older" in str(err)
    # The same eval set, or a newer one, is fine.
    promote(*bench.gated_adapter("a3", seed=3, eval_set=new_set), "support", registry=bench.registry)


def test_force_overrides_and_records_reason(bench):
    adapter = bench.adapter("a", seed=1)
    gate = bench.gate("g", adapter, bench.eval_set("e", "2026-11-01T00:00:00+00:00"), decision="fail")
    with pytest.raises(RegistryError, match="--reason"):
        promote(adapter, gate, "support", registry=bench.registry, force=True)
    entry = promote(adapter, gate, "support", registry=bench.registry, force=True, reason="hotfix approved by Ana")
    assert entry["forced"] and entry["override"]["reason"] == "hotfix approved by Ana"
    (event,) = _history(bench.registry, "support")
    assert event["forced"] and event["reason"] == "hotfix approved by Ana" and event["overridden"] == ["gate_failed"]


def test_unservable_adapter_refused_even_with_force(bench):
    adapter = bench.adapter("a", seed=1, config={"use_dora": True})
    gate = bench.gate("g", adapter, bench.eval_set("e", "2026-11-01T00:00:00+00:00"))
    assert "DoRA" in str(_refused(bench, adapter, gate, "not_servable", force=True, reason="try"))


def test_rollback_moves_alias_back_and_keeps_history(bench):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        rollback("support", registry=bench.registry)
    promote(*bench.gated_adapter("a2", seed=2), "support", registry=bench.registry)
    promote(*bench.gated_adapter("a3", seed=3), "support", registry=bench.registry)

    assert rollback("support", registry=bench.registry, reason="edit rate up")["name"] == "support-v2"
    assert rollback("support", registry=bench.registry)["name"] == "support-v1"
    assert show("support", registry=bench.registry)["current"] == "support-v1"
    history = _history(bench.registry, "support")
    assert [(e["action"], e["to"]) for e in history] == [
        ("promote", "support-v1"), ("promote", "support-v2"), ("promote", "support-v3"),
        ("rollback", "support-v2"), ("rollback", "support-v1")]
    assert history[3]["reason"] == "edit rate up"
    # Every version stays stored; a rollback to a later one is explicit.
    assert rollback("support", registry=bench.registry, to="support-v3")["name"] == "support-v3"
    (row,) = list_registry(bench.registry)
    assert row["current"] == "support-v3" and row["versions"] == ["support-v1", "support-v2", "support-v3"]


def test_cli_exit_codes_and_registry_commands(bench, capsys):
    adapter, gate = bench.gated_adapter("a1", seed=1)
    reg = str(bench.registry)
    assert flywheel_main(["promote", str(adapter), "--gate", str(bench.root / "none"), "--alias", "s",
                          "--registry", reg]) == R.EXIT_NO_GATE_REPORT
    assert "no_gate_report" in capsys.readouterr().err
    assert flywheel_main(["promote", str(adapter), "--gate", str(gate), "--alias", "s", "--registry", reg]) == 0
    assert "s-v1" in capsys.readouterr().out
    assert flywheel_main(["rollback", "s", "--registry", reg]) == R.EXIT_REGISTRY
    assert flywheel_main(["registry", "list", "--registry", reg]) == 0
    assert "s-v1" in capsys.readouterr().out
    assert flywheel_main(["registry", "show", "s-v1", "--registry", reg, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "s-v1" and shown["intact"] is True


def test_promoting_stored_weights_again_reuses_their_version(bench):
    a1 = bench.gated_adapter("a1", seed=1)
    a2 = bench.gated_adapter("a2", seed=2)
    promote(*a1, "support", registry=bench.registry)
    promote(*a2, "support", registry=bench.registry)
    assert promote(*a2, "support", registry=bench.registry)["name"] == "support-v2"  # already current: no-op
    rollback("support", registry=bench.registry)
    # Same weights as support-v2: the alias goes back to it; no support-v3 copy for vLLM to load twice.
    assert promote(*a2, "support", registry=bench.registry)["name"] == "support-v2"
    history = _history(bench.registry, "support")
    assert [(e["action"], e["to"]) for e in history] == [
        ("promote", "support-v1"), ("promote", "support-v2"), ("rollback", "support-v1"), ("promote", "support-v2")]
    assert sorted(p.name for p in (bench.registry / "versions").iterdir()) == ["support-v1", "support-v2"]


def test_hand_edited_alias_file_is_a_clear_error(bench, capsys):
    promote(*bench.gated_adapter("a1", seed=1), "support", registry=bench.registry)
    alias_file = bench.registry / "aliases" / "support.json"
    alias_file.write_text(alias_file.read_text()[:-20])
    with pytest.raises(RegistryError, match=r"support\.json: not valid JSON"):
        promote(*bench.gated_adapter("a2", seed=2), "support", registry=bench.registry)
    assert flywheel_main(["registry", "show", "support", "--registry", str(bench.registry)]) == R.EXIT_REGISTRY
    assert "support.json: not valid JSON" in capsys.readouterr().err
