"""Frozen eval sets: what a build's test split becomes, and that it cannot change silently."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from eval.freeze import GENERAL_DIR, EvalSetError, freeze, general_texts, load_eval_set
from flywheel.cli import main as flywheel_main
from tests.eval.planted import TINY_GENERAL


def test_freeze_writes_the_contract_with_slice_keys_and_read_only_files(planted_build, eval_set_dir):
    meta = json.loads((eval_set_dir / "eval_set.json").read_text())
    assert meta["kind"] == "flywheel.eval_set" and len(meta["sha256"]) == 64 and meta["version"]
    assert meta["source_build"]["path"] == str(planted_build.resolve())
    assert meta["counts"]["pairs"] == 80 and meta["counts"]["answers"] == 80 and meta["counts"]["users"] == 10
    loaded = load_eval_set(eval_set_dir)
    pair = loaded["pairs"][0]
    assert {"prompt", "chosen", "rejected", "user_id", "tenant", "signal", "tags", "request_id"} <= set(pair)
    answer = loaded["answers"][0]
    assert answer["prompt"][-1]["role"] == "user" and answer["answer"].endswith("Let me know if you need more help.")
    assert len(loaded["general"]) == meta["counts"]["general"] >= 40
    for name in ("eval_set.json", "pairs.jsonl", "answers.jsonl", "general.jsonl"):
        assert not os.access(eval_set_dir / name, os.W_OK) or os.geteuid() == 0
        assert (eval_set_dir / name).stat().st_mode & 0o222 == 0


def test_same_build_gives_the_same_hash_and_an_existing_eval_set_is_never_replaced(planted_build, eval_set_dir,
                                                                                   tmp_path):
    again = freeze(planted_build, tmp_path / "again", general=TINY_GENERAL)
    assert again["sha256"] == json.loads((eval_set_dir / "eval_set.json").read_text())["sha256"]
    # Another general set is another eval set.
    assert freeze(planted_build, tmp_path / "english")["sha256"] != again["sha256"]
    with pytest.raises(EvalSetError, match="immutable"):
        freeze(planted_build, tmp_path / "again")


def test_a_changed_item_file_is_detected(eval_set_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(eval_set_dir, copy)
    (copy / "pairs.jsonl").chmod(0o644)
    lines = (copy / "pairs.jsonl").read_text().splitlines()
    (copy / "pairs.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(EvalSetError, match="changed after it was frozen"):
        load_eval_set(copy)


def test_cli_freeze_and_its_errors(planted_build, tmp_path, capsys):
    assert flywheel_main(["eval", "freeze", str(planted_build), "--out", str(tmp_path / "es"),
                          "--version", "v1"]) == 0
    assert "version v1" in capsys.readouterr().out
    assert flywheel_main(["eval", "freeze", str(tmp_path), "--out", str(tmp_path / "es2")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    # --general picks the general set (a file or a folder); a missing one is a usage error naming it.
    assert flywheel_main(["eval", "freeze", str(planted_build), "--out", str(tmp_path / "es3"),
                          "--general", str(TINY_GENERAL)]) == 0
    general = load_eval_set(tmp_path / "es3")["general"]
    assert len(general) == 40 and {g["source"] for g in general} == {"general.jsonl"}
    assert flywheel_main(["eval", "freeze", str(planted_build), "--out", str(tmp_path / "es4"),
                          "--general", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: general set not found" in capsys.readouterr().err


def test_shipped_general_set_is_plain_english_outside_the_product_domains():
    texts = general_texts(GENERAL_DIR)
    assert len(texts) >= 40 and len({t["id"] for t in texts}) == len(texts)
    domain_words = ("refund", "order #", "invitation", "router", "password", "recipe", "flight", "meeting")
    assert not [t["id"] for t in texts if any(w in t["text"].lower() for w in domain_words)]


def test_freeze_warns_when_the_held_out_users_are_too_few_for_the_gate(planted_build, tmp_path, capsys):
    from eval.freeze import power_warning

    assert "needs at least 10" in power_warning(8)
    assert power_warning(10) is None
    assert "needs at least 15" in power_warning(10, {"power": {"effect_size": 0.8}})  # smaller effects, more users
    # The planted build holds out 10 users: enough for one standard deviation, not for the 0.8 this config plans.
    config = tmp_path / "gate.yaml"
    config.write_text("power: {effect_size: 0.8}\n")
    code = flywheel_main(["eval", "freeze", str(planted_build), "--out", str(tmp_path / "es"),
                          "--general", str(TINY_GENERAL), "--gate-config", str(config)])
    assert code == 0 and "warning: 10 held-out users" in capsys.readouterr().err
    assert json.loads((tmp_path / "es" / "eval_set.json").read_text())["warnings"]
    plain = freeze(planted_build, tmp_path / "es2", general=TINY_GENERAL)
    assert plain["warnings"] == []
