"""Simulated users: real generations from the tiny model, capture events v1, rates that follow the configuration."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from flywheel.textdist import edit_cost
from simulation import corpus
from simulation.preferences import check, edit_toward
from simulation.simulate import SimConfig, logs_paths, population, simulate


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def period0(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "period0.jsonl"
    summary = simulate(tiny_model_dir, out, users=12, turns=8, seed=0)
    return summary, out


def test_same_seed_same_log_byte_for_byte(tiny_model_dir, period0, tmp_path):
    summary, log = period0
    again = simulate(tiny_model_dir, tmp_path / "period0.jsonl", users=12, turns=8, seed=0)
    assert (tmp_path / "period0.jsonl").read_bytes() == log.read_bytes()
    assert (tmp_path / "period0.turns.jsonl").read_bytes() == logs_paths(log)[1].read_bytes()
    assert again["edit_cost"] == summary["edit_cost"]
    other = simulate(tiny_model_dir, tmp_path / "seed1.jsonl", users=4, turns=3, seed=1)
    assert (tmp_path / "seed1.jsonl").read_bytes() != log.read_bytes()
    # another seed is another period of the same users, later in time
    first = min(e["ts"] for e in read_jsonl(tmp_path / "seed1.jsonl"))
    assert first > max(e["ts"] for e in read_jsonl(log))
    assert other["turns"] == 4 * 3


def test_log_is_valid_capture_events_with_a_turn_record_each(period0):
    from data.validate import validate_paths

    summary, log = period0
    report = validate_paths([str(log)])
    assert report.errors == [] and report.valid == report.lines > 0
    events = read_jsonl(log)
    gens = [e for e in events if e["type"] == "generation"]
    assert len(gens) == summary["generations"] >= summary["turns"] == 12 * 8
    assert all(g["model"] == {"base": "flywheel-tiny-test", "adapter": None} for g in gens)
    assert all(g["messages"][-1]["role"] == "user" for g in gens)
    assert len({e["event_id"] for e in events}) == len(events)
    turns = read_jsonl(logs_paths(log)[1])
    assert len(turns) == summary["turns"]
    assert {t["request_id"] for t in turns} == {g["request_id"] for g in gens}
    # the sidecar's edit cost is flywheel.textdist.edit_cost(last shown output, final answer)
    last_output = {g["request_id"]: g["output"] for g in gens}
    edited = {e["generation_id"]: e["edited_output"] for e in events if e["type"] == "edit"}
    final_by_request = {}
    for e in events:
        if e["type"] == "accept":
            g = next(x for x in gens if x["generation_id"] == e["generation_id"])
            final_by_request[g["request_id"]] = edited.get(e["generation_id"], g["output"])
    for t in turns:
        final = final_by_request.get(t["request_id"])
        assert t["edit_cost"] == pytest.approx(edit_cost(last_output[t["request_id"]], final))
        assert (final is None) == (t["outcome"] in ("abandon", "rephrase"))
    # multi-turn sessions carry the earlier final answers as the assistant's turns
    assert any(len(g["messages"]) >= 3 for g in gens)


def test_edits_move_the_models_text_toward_the_users_preference(period0):
    _, log = period0
    events = read_jsonl(log)
    prefs = {f"user-{i:04d}": p for i, p in enumerate(population(12, SimConfig()))}
    outputs = {e["generation_id"]: e["output"] for e in events if e["type"] == "generation"}
    request_of = {e["generation_id"]: e["request_id"] for e in events if e["type"] == "generation"}
    on_topic = {t["request_id"]: t["on_topic"] for t in read_jsonl(logs_paths(log)[1])}
    edits = [e for e in events if e["type"] == "edit"]
    assert len(edits) >= 10
    for e in edits:
        pref, original = prefs[e["user_id"]], outputs[e["generation_id"]]
        before, after = check(pref, original), check(pref, e["edited_output"])
        assert sum(after.values()) > sum(before.values()), (original, e["edited_output"])
        assert all(after.values())
        if on_topic[request_of[e["generation_id"]]]:  # an edit, not the user's own answer to a missed request
            assert 0.0 < edit_cost(original, e["edited_output"]) < 0.9


def test_builds_sft_dpo_and_kto_datasets_of_reasonable_size(period0, tmp_path):
    from data.build import build_datasets

    summary, log = period0
    manifest = build_datasets([str(log)], tmp_path / "build")
    ex = manifest["examples"]
    n_final = summary["outcomes"].get("accept", 0) + summary["outcomes"].get("edit", 0)
    sft = ex["sft"]["train"] + ex["sft"]["test"]
    assert 0.5 * n_final <= sft <= n_final  # one per turn with a final answer, less exact duplicates
    assert ex["dpo"]["train"] + ex["dpo"]["test"] >= 0.5 * summary["outcomes"].get("edit", 0)
    assert ex["kto"]["train"] + ex["kto"]["test"] >= summary["events"].get("regenerate", 0) * 0.5
    assert manifest["quarantined"] == 0


def test_with_an_adapter_every_generation_names_its_version(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = tmp_path / "registry" / "versions" / "v0007" / "adapter"
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    (adapter.parent / "entry.json").write_text(json.dumps({"name": "v0007"}))
    summary = simulate(tiny_model_dir, tmp_path / "p1.jsonl", adapter=adapter, users=3, turns=2, seed=5)
    gens = [e for e in read_jsonl(tmp_path / "p1.jsonl") if e["type"] == "generation"]
    assert gens and all(g["model"] == {"base": "flywheel-tiny-test", "adapter": "v0007"} for g in gens)
    assert summary["model"]["adapter"] == "v0007"
    simulate(tiny_model_dir, tmp_path / "p2.jsonl", adapter=adapter, users=1, turns=1, adapter_version="canary-3")
    assert read_jsonl(tmp_path / "p2.jsonl")[0]["model"]["adapter"] == "canary-3"


# --- the users alone: behaviour rates over many turns, with a stand-in model (the rates do not depend on it) ------


def base_style_model(conversations, seed):
    """Replies in the base style, as the tiny base model writes them, without the cost of generating."""
    rng = random.Random(seed)
    return [corpus.sample_conversation(rng, max_turns=1).turns[0].reply for _ in conversations]


def test_event_mix_follows_the_configured_rates(tmp_path):
    config = SimConfig(p_rate=0.4, p_abandon=0.05, max_regenerations=1, p_abandon_after_limit=0.3,
                       p_rephrase_after_limit=0.3, p_bullets=1.0)  # bullets: every user regenerates base replies
    s = simulate("stand-in", tmp_path / "log.jsonl", users=60, turns=40, seed=0, config=config,
                 generate=base_style_model)
    turns = read_jsonl(tmp_path / "log.turns.jsonl")
    assert s["turns"] == len(turns) == 60 * 40
    n = len(turns)
    kept = [t for t in turns if t["outcome"] in ("accept", "edit")]
    # the spontaneous abandon comes first, then (every reply misses 3+ rules) one regeneration, then the split
    abandon_first = sum(1 for t in turns if t["outcome"] == "abandon" and t["n_regenerations"] == 0) / n
    assert abandon_first == pytest.approx(0.05, abs=0.015)
    reached_limit = [t for t in turns if t["n_regenerations"] == 1]
    split = {o: sum(1 for t in reached_limit if t["outcome"] == o) / len(reached_limit)
             for o in ("abandon", "rephrase", "edit")}
    # abandon after the limit also includes the 5 % spontaneous abandons on the regenerated reply
    assert split["abandon"] == pytest.approx(0.05 + 0.95 * 0.3, abs=0.04)
    assert split["rephrase"] == pytest.approx(0.95 * 0.3, abs=0.04)
    assert split["edit"] == pytest.approx(0.95 * 0.4, abs=0.04)
    assert s["events"]["rating"] / len(kept) == pytest.approx(0.4, abs=0.04)
    assert s["events"]["regenerate"] == sum(t["n_regenerations"] for t in turns)
    assert s["events"]["rephrase"] == sum(1 for t in turns if t["outcome"] == "rephrase")


def test_a_model_that_meets_the_rules_is_accepted_without_edits(tmp_path):
    prefs = population(20, SimConfig())

    def compliant_model(conversations, seed):
        # Every user's rules at once: the opener, bullets, next step, sign-off, short enough for any band.
        return [edit_toward(prefs[0].__class__(bullets=True, next_step=True, max_words=30),
                            "Restart the router and wait a minute. Then try again.") for _ in conversations]

    s = simulate("stand-in", tmp_path / "log.jsonl", users=20, turns=10, seed=0,
                 config=SimConfig(p_abandon=0.0, check_topic=False), generate=compliant_model)
    assert s["outcomes"] == {"accept": 200} and s["edit_cost"] == 0.0 and s["regen_rate"] == 0.0
    ratings = [e["value"] for e in read_jsonl(tmp_path / "log.jsonl") if e["type"] == "rating"]
    assert ratings and set(ratings) == {1}


def test_config_file_and_unknown_settings(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("p_rate: 0.5\nmax_words_choices: [20, 25]\n")
    c = SimConfig.from_file(cfg)
    assert c.p_rate == 0.5 and c.max_words_choices == (20, 25)
    cfg.write_text("p_rat: 0.5\n")
    with pytest.raises(ValueError, match=r"sim.yaml: unknown simulation setting\(s\) \['p_rat'\]"):
        SimConfig.from_file(cfg)


def test_cli_simulate_writes_the_log(tiny_model_dir, tmp_path, capsys):
    from flywheel.cli import main

    code = main(["simulate", "--model", str(tiny_model_dir), "--users", "2", "--turns", "2", "--seed", "3",
                 "--out", str(tmp_path / "cli.jsonl.gz")])
    assert code == 0
    assert (tmp_path / "cli.jsonl.gz").exists() and (tmp_path / "cli.turns.jsonl").exists()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["turns"] == 4


def test_the_plain_family_is_selectable_and_changes_only_the_users(tmp_path):
    house = simulate("stand-in", tmp_path / "house.jsonl", users=12, turns=5, seed=0, generate=base_style_model)
    plain = simulate("stand-in", tmp_path / "plain.jsonl", users=12, turns=5, seed=0, generate=base_style_model,
                     preferences="plain")
    assert plain["config"]["preferences"] == "plain" and house["config"]["preferences"] == "house"
    edits = [e["edited_output"] for e in read_jsonl(tmp_path / "plain.jsonl") if e["type"] == "edit"]
    assert edits and all(e.startswith("Sure.\n") and e.endswith("\nFeel free to ask again.") for e in edits)
    with pytest.raises(ValueError, match="unknown preference family"):
        simulate("stand-in", tmp_path / "x.jsonl", users=1, turns=1, generate=base_style_model, preferences="fancy")


def test_request_judge_keeps_a_free_english_answer_that_differs_from_the_reference(tmp_path):
    def own_words(conversations, seed):  # on the request's topic, in words no corpus template uses
        return [f"Regarding '{c[0]['content']}': here is my take, written my own way." for c in conversations]

    for name, judge in (("a", "reference"), ("b", "request")):
        simulate("stand-in", tmp_path / f"{name}.jsonl", users=10, turns=4, seed=0,
                 config=SimConfig(p_abandon=0.0, topic_judge=judge), generate=own_words)
    by_reference, by_request = (
        [json.loads(line)["on_topic"] for line in (tmp_path / f"{n}.turns.jsonl").read_text().splitlines()]
        for n in ("a", "b"))
    assert all(by_request)
    assert sum(by_reference) / len(by_reference) < 0.5  # the reference judge wants the corpus's own words
    with pytest.raises(ValueError, match="topic_judge"):
        SimConfig.from_file(None, {"topic_judge": "vibes"})
