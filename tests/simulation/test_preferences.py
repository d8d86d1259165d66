"""The users' rules: the base style misses them, an edit fixes what it misses and nothing else."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.textdist import edit_cost
from simulation import corpus
from simulation.preferences import (
    FAMILIES,
    NEXT_STEP_LINE,
    OPENER,
    PLAIN,
    SIGN_OFF,
    Preference,
    check,
    edit_toward,
    family,
    sample_preference,
)

preferences = st.builds(
    Preference,
    bullets=st.booleans(),
    next_step=st.booleans(),
    max_words=st.one_of(st.none(), st.sampled_from([30, 40, 55])),
)


def base_reply(seed: int) -> str:
    return corpus.sample_conversation(random.Random(seed), max_turns=1).turns[0].reply


@settings(max_examples=200, deadline=None)
@given(pref=preferences, seed=st.integers(0, 10_000))
def test_edit_meets_every_rule_the_base_reply_missed(pref, seed):
    reply = base_reply(seed)
    edited = edit_toward(pref, reply)
    before, after = check(pref, reply), check(pref, edited)
    assert all(after.values()), (pref, reply, edited, after)
    assert sum(after.values()) > sum(before.values())  # the base style always misses the shared opener/sign-off


@settings(max_examples=100, deadline=None)
@given(pref=preferences, seed=st.integers(0, 10_000))
def test_a_reply_meeting_the_rules_is_left_alone(pref, seed):
    compliant = edit_toward(pref, base_reply(seed))
    assert edit_toward(pref, compliant) == compliant
    assert edit_cost(compliant, edit_toward(pref, compliant)) == 0.0


def test_the_edit_keeps_the_models_words_and_costs_a_partial_rewrite():
    costs = []
    for seed in range(200):
        pref = sample_preference(random.Random(seed))
        reply = base_reply(seed)
        edited = edit_toward(pref, reply)
        assert edited.startswith(OPENER + "\n") and edited.endswith("\n" + SIGN_OFF)
        assert (NEXT_STEP_LINE in edited) == pref.next_step
        first_sentence = reply.split(". ")[0]
        assert first_sentence in edited  # bulleted or trimmed, the model's own text survives
        costs.append(edit_cost(reply, edited))
    mean = sum(costs) / len(costs)
    assert 0.15 < mean < 0.6, mean
    assert min(costs) > 0.05


def test_base_style_corpus_never_uses_the_preferred_patterns():
    rng = random.Random(0)
    for _ in range(2000):
        for turn in corpus.sample_conversation(rng, max_turns=3).turns:
            met = check(Preference(bullets=True, next_step=True), turn.reply)
            assert not met["opener"] and not met["sign_off"] and not met["bullets"] and not met["next_step"]


def test_rules_are_checked_on_structure_not_on_words():
    pref = Preference(bullets=True, next_step=True, max_words=10)
    text = "\n".join([OPENER, "- Restart the router and the modem.", "- Then try again.", NEXT_STEP_LINE, SIGN_OFF])
    assert check(pref, text) == {"opener": True, "sign_off": True, "bullets": True, "next_step": True, "length": True}
    # the same words without the line structure meet nothing but the length band
    flat = text.replace("\n", " ")
    assert check(pref, flat) == {"opener": False, "sign_off": False, "bullets": False, "next_step": False,
                                 "length": False}


def test_a_reply_to_another_request_is_off_topic():
    from simulation.preferences import on_topic

    rng = random.Random(0)
    same, other = [], []
    for _ in range(300):
        a = corpus.sample_conversation(rng, domain="support", max_turns=1).turns[0]
        b = corpus.sample_conversation(rng, domain="cooking", max_turns=1).turns[0]
        again = corpus.sample_conversation(random.Random(rng.random()), domain="support", max_turns=1).turns[0]
        other.append(on_topic(b.reply, a.reply))
        if again.request.split()[:3] == a.request.split()[:3]:  # the same kind of request, other slot values
            same.append(on_topic(again.reply, a.reply))
    assert sum(other) / len(other) < 0.05
    assert same and sum(same) / len(same) > 0.8
    # an edit toward the preference keeps a reply on topic
    assert on_topic(edit_toward(Preference(bullets=True, next_step=True), a.reply), a.reply)


plain_preferences = st.builds(
    Preference,
    bullets=st.booleans(),
    next_step=st.booleans(),
    max_words=st.one_of(st.none(), st.sampled_from([25, 35, 45])),
    style=st.just(PLAIN),
)


@settings(max_examples=200, deadline=None)
@given(pref=plain_preferences, seed=st.integers(0, 10_000))
def test_plain_family_edits_meet_its_rules_and_are_idempotent(pref, seed):
    reply = base_reply(seed)
    edited = edit_toward(pref, reply)
    assert all(check(pref, edited).values()), (pref, reply, edited)
    assert edit_toward(pref, edited) == edited
    assert edited.startswith(PLAIN.opener + "\n") and edited.endswith("\n" + PLAIN.sign_off)


def test_plain_family_is_its_own_text_not_the_house_rules():
    house = Preference(bullets=True, next_step=True)
    plain = Preference(bullets=True, next_step=True, style=PLAIN)
    text = "\n".join([PLAIN.opener, "1. Restart the router.", "2. Then try again.", PLAIN.next_step_line,
                      PLAIN.sign_off])
    assert all(check(plain, text).values())
    assert not any(check(house, text).values())  # nothing of the house family's rules
    assert not check(plain, text.replace("2. Then", "3. Then"))["bullets"]  # numbered in order
    users = [sample_preference(random.Random(i), FAMILIES["plain"].population, PLAIN) for i in range(200)]
    assert {u.max_words for u in users} == {None, 25, 35, 45}
    with pytest.raises(ValueError, match="unknown preference family 'fancy'"):
        family("fancy")


def test_a_free_english_reply_is_judged_on_topic_by_the_users_own_words():
    from simulation.preferences import on_topic_of_requests

    request = "Order #59377 came with a cracked keyboard."
    own_words = ("I'm sorry your keyboard arrived damaged! You can ask for a replacement from your account: open "
                 "the order, choose 'Report a problem' and attach a photo.")
    assert on_topic_of_requests(own_words, [request])
    assert not on_topic_of_requests("Preheat the oven to 200 degrees and roast the potatoes for 40 minutes.",
                                    [request])
    # a follow-up carries no topic of its own: the conversation's earlier request decides
    follow_up = [request, "Can you make that shorter?"]
    assert on_topic_of_requests("Ask for a replacement keyboard from the order page.", follow_up)
    assert not on_topic_of_requests("Sure, here is a shorter version that I could make.", follow_up)
    # the rules and the edit work on any English, not only on the corpus's sentences
    pref = Preference(bullets=True, next_step=True, max_words=30)
    edited = edit_toward(pref, own_words)
    assert all(check(pref, edited).values()) and "keyboard" in edited
