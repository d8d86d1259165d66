"""Each rule of the capture-event spec, on small hand-written logs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.data.conftest import SYSTEM, Log, rows

A = "Open Billing > Invoices and choose Export > CSV."
B = "Invoices can only be downloaded as PDF files from the portal."
C = "I'm not sure; please contact support about exporting invoices."


def texts(rs, key):
    return sorted(r[key][-1]["content"] for r in rs)


def test_accept_gives_sft_and_desirable_kto(log, build):
    log.gen("g1", "r1", A)
    log.accept("g1")
    m, out = build(log)
    sft = rows(out, "sft")
    assert len(sft) == 1
    assert sft[0]["messages"] == [SYSTEM, {"role": "user", "content": "How do I export my invoices?"},
                                  {"role": "assistant", "content": A}]
    assert sft[0]["signal"] == "final" and sft[0]["generation_id"] == "g1" and sft[0]["model_adapter"] == "v1"
    kto = rows(out, "kto")
    assert [(k["label"], k["signal"], k["completion"]) for k in kto] == [
        (True, "accept", [{"role": "assistant", "content": A}])]
    assert rows(out, "dpo") == []
    assert m["accounting"]["used"] == 2


def test_edit_gives_final_answer_and_edit_pair(log, build):
    log.gen("g1", "r1", B)
    log.edit("g1", A)
    log.accept("g1")
    _, out = build(log)
    assert texts(rows(out, "sft"), "messages") == [A]
    (pair,) = rows(out, "dpo")
    assert pair["chosen"] == [{"role": "assistant", "content": A}]
    assert pair["rejected"] == [{"role": "assistant", "content": B}]
    assert pair["prompt"][-1] == {"role": "user", "content": "How do I export my invoices?"}
    assert pair["signal"] == "edit" and pair["generation_id"] == "g1"
    # An accepted but edited output is not a desirable KTO example as it was.
    assert rows(out, "kto") == []


def test_edit_without_accept_is_the_final_answer(log, build):
    log.gen("g1", "r1", B)
    log.edit("g1", A)
    _, out = build(log)
    assert texts(rows(out, "sft"), "messages") == [A]


def test_latest_of_several_edits_counts(log, build):
    log.gen("g1", "r1", B)
    log.edit("g1", C)
    log.edit("g1", A)
    m, out = build(log)
    assert texts(rows(out, "sft"), "messages") == [A]
    assert [p["chosen"][0]["content"] for p in rows(out, "dpo")] == [A]
    assert m["drops"] == {"superseded_edit": 1}


def test_edits_arriving_out_of_order_latest_timestamp_wins(log, build, tmp_path):
    log.gen("g1", "r1", B)
    late = log.edit("g1", A)
    early = log.edit("g1", C)
    early["ts"], late["ts"] = late["ts"], early["ts"]  # the file order is not the time order
    _, out = build(log)
    assert texts(rows(out, "sft"), "messages") == [A]


def test_regeneration_chain_without_edit(log, build):
    log.gen("g1", "r1", C)
    log.regen("g1")
    log.gen("g2", "r1", B)
    log.regen("g2")
    log.gen("g3", "r1", A)
    log.accept("g3")
    m, out = build(log)
    dpo = rows(out, "dpo")
    assert sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in dpo) == sorted([(A, C), (A, B)])
    assert {p["signal"] for p in dpo} == {"regenerate"}
    # Metadata names the rejected generation.
    assert sorted(p["generation_id"] for p in dpo) == ["g1", "g2"]
    kto = {k["generation_id"]: (k["label"], k["signal"]) for k in rows(out, "kto")}
    assert kto == {"g1": (False, "regenerate"), "g2": (False, "regenerate"), "g3": (True, "accept")}
    assert texts(rows(out, "sft"), "messages") == [A]
    assert m["accounting"]["used"] == 6


def test_regeneration_chain_ending_in_an_edit(log, build):
    log.gen("g1", "r1", C)
    log.regen("g1")
    log.gen("g2", "r1", B)
    log.edit("g2", A)
    log.accept("g2")
    _, out = build(log)
    pairs = sorted((p["signal"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in rows(out, "dpo"))
    assert pairs == sorted([
        ("edit", A, B),  # the edit itself
        ("regenerate", A, C),  # the final answer over the regenerated-away output
        ("regenerate", B, C),  # the accepted original over it too
    ])


def test_regeneration_without_final_answer_gives_no_pair(log, build):
    log.gen("g1", "r1", C)
    log.regen("g1")
    log.gen("g2", "r1", B)
    log.abandon("r1")
    _, out = build(log)
    assert rows(out, "dpo") == [] and rows(out, "sft") == []
    kto = {k["generation_id"]: (k["label"], k["signal"]) for k in rows(out, "kto")}
    assert kto == {"g1": (False, "regenerate"), "g2": (False, "abandon")}


def test_per_turn_cap_on_regeneration_pairs(log, build):
    for i in range(6):
        log.gen(f"g{i}", "r1", f"{C} Attempt number {i}.")
        log.regen(f"g{i}")
    log.gen("g9", "r1", A)
    log.accept("g9")
    m, out = build(log, max_pairs_per_turn=2)
    dpo = rows(out, "dpo")
    assert len(dpo) == 2
    # The capped pairs' events still feed KTO (regenerated away), so only the example count shows the cap.
    assert m["example_drops"]["dpo"] == {"regeneration_cap": 4} and "regeneration_cap" not in m["drops"]
    # The most recent regenerations are kept.
    assert sorted(p["generation_id"] for p in dpo) == ["g4", "g5"]
    _, out = build(log, max_pairs_per_turn=0)
    assert len(rows(out, "dpo")) == 6


@pytest.mark.parametrize("edited", [B.upper(), B.replace(".", "!"), "  " + B + "\n", B.replace("portal", "portals")])
def test_trivial_edits_give_no_pair_but_stay_the_final_answer(log, build, edited):
    log.gen("g1", "r1", B)
    log.edit("g1", edited)
    log.accept("g1")
    m, out = build(log, min_edit_chars=3)
    assert rows(out, "dpo") == []
    assert texts(rows(out, "sft"), "messages") == [edited]


def test_small_edit_counts_when_min_edit_chars_allows_it(log, build):
    log.gen("g1", "r1", "The limit is 600 requests per minute.")
    log.edit("g1", "The limit is 60 requests per minute.")
    _, out = build(log, min_edit_chars=1)
    assert len(rows(out, "dpo")) == 1


def test_ratings(log, build):
    log.gen("g1", "r1", A)
    log.rating("g1", 1)
    log.gen("g2", "r2", B, prompt="Can I get a CSV?")
    log.rating("g2", -1, comment="wrong")
    log.gen("g3", "r3", A, prompt="Export to CSV?")
    log.accept("g3")
    log.rating("g3", 1)
    _, out = build(log)
    kto = {k["generation_id"]: (k["label"], k["signal"]) for k in rows(out, "kto")}
    assert kto == {"g1": (True, "rating"), "g2": (False, "rating"), "g3": (True, "rating")}


def test_rephrase_judges_the_last_output_of_the_turn(log, build):
    log.gen("g1", "r1", C, prompt="csv?")
    log.regen("g1")
    log.gen("g2", "r1", B, prompt="csv?")
    log.rephrase("r1", "r2")
    log.gen("g3", "r2", A)
    log.accept("g3")
    _, out = build(log)
    kto = {k["generation_id"]: (k["label"], k["signal"]) for k in rows(out, "kto")}
    assert kto == {"g1": (False, "regenerate"), "g2": (False, "rephrase"), "g3": (True, "accept")}


def test_abandon_judges_the_latest_generation_whatever_the_file_order(log, build):
    first = log.gen("g1", "r1", C)
    log.regen("g1")
    latest = log.gen("g3", "r1", A)
    middle = log.gen("g2", "r1", B)
    log.regen("g2")
    log.abandon("r1")
    # File order g1, g3, g2; time order g1, g2, g3.
    first["ts"], middle["ts"], latest["ts"] = 1_790_000_000_000, 1_790_000_001_500, 1_790_000_003_000
    _, out = build(log)
    kto = {k["generation_id"]: (k["label"], k["signal"]) for k in rows(out, "kto")}
    assert kto == {"g1": (False, "regenerate"), "g2": (False, "regenerate"), "g3": (False, "abandon")}


def test_signals_both_ways_on_one_output_are_a_kto_conflict(log, build):
    log.gen("g1", "r1", A)
    log.accept("g1")
    log.rating("g1", -1)
    m, out = build(log)
    assert rows(out, "kto") == []
    assert len(rows(out, "sft")) == 1  # the accept still makes the final answer
    assert m["drops"] == {"kto_label_conflict": 1}  # the rating led nowhere else


def test_opposite_preferences_on_one_prompt_are_both_dropped(log, build):
    log.gen("g1", "r1", B, user="u1")
    log.edit("g1", A, user="u1")
    log.gen("g2", "r2", A, user="u2")
    log.edit("g2", B, user="u2")
    m, out = build(log)
    assert rows(out, "dpo") == []
    assert m["drops"].get("preference_conflict", 0) == 0  # the edits still make SFT examples: used
    assert len(rows(out, "sft")) == 2


def test_exact_duplicate_examples_are_kept_once(log, build):
    for u in ("u1", "u2"):
        log.gen(f"g-{u}", f"r-{u}", A, user=u)
        log.accept(f"g-{u}", user=u)
    m, out = build(log)
    assert len(rows(out, "sft")) == 1 and len(rows(out, "kto")) == 1
    assert m["drops"] == {"duplicate_example": 2}


def test_duplicate_and_conflicting_event_lines(log, build, tmp_path):
    g = log.gen("g1", "r1", A)
    a = log.accept("g1")
    r = log.rating("g1", 1)
    other = dict(r, value=-1)  # same event_id, other content
    path = log.write(tmp_path / "dups.jsonl", [g, a, a, g, r, other])
    m, out = build([path])
    assert m["duplicates"] == 2
    assert m["quarantined"] == 2
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert {x["line"] for x in q} == {5, 6} and all("conflicting duplicate" in x["reason"] for x in q)
    assert len(rows(out, "sft")) == 1


def test_orphans_are_set_aside_and_picked_up_on_rebuild(log, build, tmp_path):
    log.gen("g1", "r1", A)
    gen_part = list(log.events)
    log.accept("g1")
    log.abandon("r-missing")
    feedback = log.write(tmp_path / "feedback.jsonl", log.events[1:])
    m, out = build([feedback])
    assert m["drops"] == {"orphan": 2}
    orphans = [json.loads(x) for x in (out / "orphans.jsonl").read_text().splitlines()]
    assert {o["event"]["event_id"] for o in orphans} == {"e2", "e3"}
    assert all(o["source"].endswith("feedback.jsonl") and o["line"] in (1, 2) for o in orphans)
    generations = log.write(tmp_path / "generations.jsonl", gen_part)
    m, out = build([feedback, generations])
    assert m["drops"] == {"orphan": 1}  # the abandon names a request no input holds
    assert len(rows(out, "sft")) == 1


def test_forget_removes_everything_of_the_user_whatever_its_time(log, build):
    log.gen("g1", "r1", A, user="dev", prompt="my email is dev@example.com")
    log.accept("g1", user="dev")
    log.gen("g2", "r2", A, user="ana")
    log.accept("g2", user="ana")
    log.forget("dev")
    log.gen("g3", "r3", B, user="dev", prompt="later question")  # after the forget: still excluded
    log.rating("g3", 1, user="dev")
    log.rating("g1", 1, user="ana")  # someone else's feedback on dev's generation
    m, out = build(log)
    for kind in ("sft", "dpo", "kto"):
        for r in rows(out, kind):
            assert r["user_id"] != "dev"
            assert "dev@example.com" not in json.dumps(r)
    assert m["drops"] == {"forgotten_user": 5}
    assert m["accounting"]["used"] == 3  # ana's generation and accept, and the applied forget


def test_multi_turn_conversation(log, build):
    turn1 = [SYSTEM, {"role": "user", "content": "How do I reset my password?"}]
    log.gen("g1", "r1", "Use Settings > Security.", messages=turn1)
    log.accept("g1")
    turn2 = turn1 + [{"role": "assistant", "content": "Use Settings > Security."},
                     {"role": "user", "content": "I never got the e-mail."}]
    log.gen("g2", "r2", "Wait.", messages=turn2)
    log.edit("g2", "Check your spam folder, then request a new link.")
    log.accept("g2")
    _, out = build(log)
    sft = {r["request_id"]: r["messages"] for r in rows(out, "sft")}
    assert sft["r2"] == turn2 + [{"role": "assistant", "content": "Check your spam folder, then request a new link."}]
    assert sft["r1"] == turn1 + [{"role": "assistant", "content": "Use Settings > Security."}]
    (pair,) = rows(out, "dpo")
    assert pair["prompt"] == turn2


def test_empty_outputs_are_dropped(log, build):
    log.gen("g1", "r1", "   \n")
    log.accept("g1")
    m, out = build(log)
    assert rows(out, "sft") == [] and rows(out, "kto") == []
    assert m["drops"] == {"empty_output": 2}


def test_character_limits(log, build):
    log.gen("g1", "r1", "x" * 50)
    log.accept("g1")
    log.gen("g2", "r2", A, prompt="y" * 200)
    log.accept("g2")
    m, out = build(log, max_completion_chars=40, max_prompt_chars=150)
    assert rows(out, "sft") == []
    assert m["drops"] == {"completion_too_long": 2, "prompt_too_long": 2}


def test_near_duplicate_prompts_keep_one_turn(log, build):
    log.gen("g1", "r1", A, prompt="How do I export invoices?", user="u1")
    log.accept("g1", user="u1")
    log.gen("g2", "r2", B, prompt="how do I export   invoices", user="u2")
    log.accept("g2", user="u2")
    _, out = build(log)
    assert len(rows(out, "sft")) == 2
    m, out = build(log, near_duplicate_prompts=True)
    assert [r["request_id"] for r in rows(out, "sft")] == ["r1"]
    assert m["drops"] == {"near_duplicate_prompt": 2}


def test_generation_with_no_feedback_is_dropped_with_a_reason(log, build):
    log.gen("g1", "r1", A)
    m, _ = build(log)
    assert m["drops"] == {"no_signal": 1}


def test_tenants_are_never_mixed_by_accident(log, build):
    from data.build import TenantError

    log.gen("g1", "r1", A, tenant="acme", user="u1")
    log.accept("g1", user="u1")  # feedback without a tenant belongs to its generation's tenant
    log.gen("g2", "r2", B, tenant="globex", user="u2")
    log.accept("g2", user="u2", tenant="globex")
    with pytest.raises(TenantError, match="acme.*globex|globex.*acme"):
        build(log)
    m, out = build(log, tenant="acme")
    assert [r["tenant"] for r in rows(out, "sft")] == ["acme"]
    assert m["drops"] == {"other_tenant": 2}
    m, out = build(log, all_tenants=True)
    assert sorted(r["tenant"] for r in rows(out, "sft")) == ["acme", "globex"]


def test_redaction_counts_each_kind(log, build):
    log.gen("g1", "r1", "Write to help@acme.example or call +1 415-555-0132.",
            prompt="My card 4111 1111 1111 1111 and key sk-abcdefghijklmnopqrstuvwx fail")
    log.accept("g1")
    m, out = build(log, redact=["email", "phone", "card", "api_key"])
    (sft,) = rows(out, "sft")
    text = json.dumps(sft)
    for secret in ("help@acme.example", "415-555-0132", "4111 1111", "sk-abcdef"):
        assert secret not in text
    assert "[EMAIL]" in text and "[PHONE]" in text and "[CARD]" in text and "[API_KEY]" in text
    assert m["redactions"] == {"email": 1, "api_key": 1, "card": 1, "phone": 1}
    _, out = build(log)
    assert "help@acme.example" in json.dumps(rows(out, "sft"))


def test_token_limit_with_a_fast_tokenizer(log, build, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    log.gen("g1", "r1", "short answer")
    log.accept("g1")
    log.gen("g2", "r2", " ".join(["word"] * 100), prompt="long one")
    log.accept("g2")
    m, out = build(log, tokenizer=str(tmp_path), max_tokens=50)
    assert [r["request_id"] for r in rows(out, "sft")] == ["r1"]
    assert m["drops"] == {"too_many_tokens": 2}


def test_events_split_across_files_and_out_of_order_build_the_same_bytes(build, tmp_path):
    import random

    log = Log()
    for t in range(12):
        u = f"u{t % 4}"
        log.gen(f"g{t}a", f"r{t}", f"{C} ({t})", user=u, prompt=f"question {t}")
        log.regen(f"g{t}a", user=u)
        log.gen(f"g{t}b", f"r{t}", f"{B} ({t})", user=u, prompt=f"question {t}")
        log.edit(f"g{t}b", f"{A} ({t})", user=u)
        log.accept(f"g{t}b", user=u)
    m1, out1 = build(log, test_fraction=0.5)
    shuffled = list(log.events)
    random.Random(0).shuffle(shuffled)
    a = log.write(tmp_path / "part-a.jsonl", shuffled[::2])
    b = log.write(tmp_path / "part-b.jsonl", shuffled[1::2])
    m2, out2 = build([b, a], test_fraction=0.5)
    assert m1["outputs"] == m2["outputs"]
    assert m1["examples"] == m2["examples"]
    assert m1["examples"]["dpo"]["train"] + m1["examples"]["dpo"]["test"] == 36


@pytest.fixture(params=[10**9, 1], ids=["one-pass", "a-pass-per-event"])
def link_passes(request, monkeypatch):
    """The link step in one pass, or with its joins in as many passes as there are events."""
    import data.build as b
    from data import rules

    monkeypatch.setattr(b, "LINK_PART_ROWS", request.param)
    monkeypatch.setattr(rules, "OWNER_SLICE_ROWS", min(request.param, 3))
    monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", min(request.param, 3))  # owner_row made in many windows


def test_a_request_spread_over_two_users_is_not_used(log, build, link_passes):
    log.gen("g1", "r1", B, user="u1")
    log.regen("g1", user="u1")
    log.gen("g2", "r1", C, user="u2")
    log.accept("g2", user="u2")
    log.rephrase("r1", "r9", user="u2")
    log.gen("g3", "r3", A, user="u3")
    log.accept("g3", user="u3")
    m, out = build(log)
    assert m["drops"] == {"inconsistent_request": 5}
    assert [r["generation_id"] for r in rows(out, "sft")] == ["g3"]
    assert rows(out, "dpo") == []


def test_a_second_generation_with_a_known_id_is_set_aside(log, build, link_passes):
    log.gen("g1", "r1", B)
    log.gen("g1", "r2", C, prompt="Another question")
    log.edit("g1", A)
    log.accept("g1")
    m, out = build(log)
    assert m["drops"] == {"duplicate_generation_id": 1}
    (sft,) = rows(out, "sft")
    assert sft["messages"][1:] == [{"role": "user", "content": "How do I export my invoices?"},
                                   {"role": "assistant", "content": A}]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in rows(out, "dpo")] == [(A, B)]


def test_a_gather_in_windows_equals_a_plain_gather(monkeypatch):
    """Rows in any order, repeated, null, across every window and none; the columns' dtypes kept."""
    import random

    from polars.testing import assert_frame_equal, assert_series_equal

    from data import rules

    monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", 7)
    rng = random.Random(0)
    for n in (0, 1, 7, 8, 50, 200):
        table = pl.DataFrame({"a": pl.int_range(n, eager=True), "b": [str(i) if i % 3 else None for i in range(n)],
                              "e": pl.Series([["x", "y"][i % 2] for i in range(n)], dtype=pl.Enum(["x", "y"]))})
        for _ in range(30):
            m = rng.randrange(3 * n + 2)
            rows = pl.Series([rng.randrange(n) if n and rng.random() > 0.1 else None for _ in range(m)],
                             dtype=pl.UInt32)
            assert_frame_equal(rules.gather_in_windows(table, rows), table.select(pl.all().gather(rows)))
        for _ in range(10):  # a filter in windows, too
            mask = pl.Series([rng.random() < 0.3 if rng.random() > 0.1 else None for _ in range(n)], dtype=pl.Boolean)
            columns = ["e", "a", (pl.col("a") * 2).alias("twice")]
            assert_frame_equal(rules.select_where(table, columns, mask), table.select(columns).filter(mask))
            # An expression over the table: evaluated a window at a time, the same rows.
            where = (pl.col("a") % rng.randrange(1, 5) == 0) & pl.col("b").is_not_null()
            assert_frame_equal(rules.select_where(table, columns, where), table.filter(where).select(columns))
            assert_series_equal(rules.mask_of(table, where), table.select(where.fill_null(False)).to_series(),
                                check_names=False)
