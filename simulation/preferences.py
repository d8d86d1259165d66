"""Simulated users' latent preferences: concrete textual rules, how to check them, and how a user edits toward them.

The rules are what a small LoRA can learn from edited answers: a fixed opener line, a fixed sign-off line, a body
made of bullet points, a "Next step:" line, a length band. The base style (`simulation.corpus`) meets none of the
first four, so the base model's replies miss them until the flywheel turns. The pipeline never reads these rules;
only the simulator knows them, and it writes how many a reply met into the per-turn ground-truth record.

Everything here is pure: text in, text or bools out.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

OPENER = "Hi there!"
SIGN_OFF = "Hope this helps!"
NEXT_STEP_PREFIX = "Next step:"
NEXT_STEP_LINE = "Next step: reply here if anything is still unclear."
BULLET = "- "

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Style:
    """The concrete text of a family's rules: the shared opener and sign-off lines, the list form of the body, the
    extra line some users want, and where it goes."""

    opener: str = OPENER
    sign_off: str = SIGN_OFF
    numbered: bool = False  # body as "1. ", "2. " lines instead of "- " bullets
    next_step_prefix: str = NEXT_STEP_PREFIX
    next_step_line: str = NEXT_STEP_LINE


HOUSE = Style()
# The second family, written once and never used to tune the tiny model, the recipes or the training settings
# (every one of those was chosen on "house" users): a "Sure." opener and "Feel free to ask again." closing (phrases
# the tiny model has seen in some chat replies, as "Hi there!" and "Hope this helps!" it has seen in letters), a
# numbered body instead of bullets, a "Note:" line, and shorter length bands.
PLAIN = Style(opener="Sure.", sign_off="Feel free to ask again.", numbered=True, next_step_prefix="Note:",
              next_step_line="Note: ask again if you want more detail.")


@dataclass(frozen=True)
class Preference:
    """One user's rules. `opener` and `sign_off` are shared by everyone; the rest are personal."""

    opener: bool = True
    sign_off: bool = True
    bullets: bool = False
    next_step: bool = False
    max_words: int | None = None  # upper end of the length band of the body (bullets/sentences), in words
    min_words: int = 6
    style: Style = HOUSE

    def rule_names(self) -> list[str]:
        names = []
        if self.opener:
            names.append("opener")
        if self.sign_off:
            names.append("sign_off")
        if self.bullets:
            names.append("bullets")
        if self.next_step:
            names.append("next_step")
        if self.max_words is not None:
            names.append("length")
        return names


@dataclass(frozen=True)
class PopulationConfig:
    """How personal rules are spread over users (the shared ones apply to all)."""

    p_bullets: float = 0.6
    p_next_step: float = 0.5
    p_length_band: float = 0.7
    max_words_choices: tuple[int, ...] = (30, 40, 55)


@dataclass(frozen=True)
class Family:
    """A population of users: the text of their rules and how the personal rules are spread."""

    style: Style
    population: PopulationConfig


FAMILIES = {
    "house": Family(HOUSE, PopulationConfig()),
    "plain": Family(PLAIN, PopulationConfig(p_bullets=0.5, p_next_step=0.4, p_length_band=0.8,
                                            max_words_choices=(25, 35, 45))),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown preference family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def sample_preference(rng: random.Random, pop: PopulationConfig = PopulationConfig(),
                      style: Style = HOUSE) -> Preference:
    bullets = rng.random() < pop.p_bullets
    next_step = rng.random() < pop.p_next_step
    max_words = rng.choice(pop.max_words_choices) if rng.random() < pop.p_length_band else None
    return Preference(bullets=bullets, next_step=next_step, max_words=max_words, style=style)


@dataclass
class Parsed:
    """A reply split into the parts the rules talk about."""

    opener: str | None
    body_lines: list[str]
    next_step: str | None
    sign_off: str | None
    extra: list[str] = field(default_factory=list)


def parse(text: str, style: Style = HOUSE) -> Parsed:
    lines = [ln.rstrip() for ln in text.strip().split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    opener = sign_off = next_step = None
    if lines and lines[0].strip() == style.opener:
        opener = lines.pop(0).strip()
    if lines and lines[-1].strip() == style.sign_off:
        sign_off = lines.pop().strip()
    body = []
    for ln in lines:
        if ln.strip().startswith(style.next_step_prefix) and next_step is None:
            next_step = ln.strip()
        else:
            body.append(ln)
    return Parsed(opener, body, next_step, sign_off)


_NUMBER = re.compile(r"^\d+\.\s+")


def _unmark(line: str, style: Style) -> str:
    """A body line without its list marker."""
    if style.numbered:
        return _NUMBER.sub("", line)
    return line[1:].strip() if line.startswith(BULLET.strip()) else line


def list_lines(sentences: list[str], style: Style = HOUSE) -> list[str]:
    if style.numbered:
        return [f"{i}. {s}" for i, s in enumerate(sentences, 1)]
    return [BULLET + s for s in sentences]


def body_sentences(body_lines: list[str], style: Style = HOUSE) -> list[str]:
    sentences = []
    for ln in body_lines:
        ln = _unmark(ln.strip(), style)
        sentences += [s.strip() for s in _SENTENCE_END.split(ln) if s.strip()]
    return sentences


def word_count(lines: list[str], style: Style = HOUSE) -> int:
    if style.numbered:
        return sum(len(_NUMBER.sub("", ln.strip()).split()) for ln in lines)
    return sum(len(ln.replace(BULLET, " ").split()) for ln in lines)


def is_bulleted(body_lines: list[str], style: Style = HOUSE) -> bool:
    if style.numbered:
        return len(body_lines) >= 1 and all(ln.strip().startswith(f"{i}. ") for i, ln in enumerate(body_lines, 1))
    return len(body_lines) >= 1 and all(ln.strip().startswith(BULLET) for ln in body_lines)


def check(pref: Preference, text: str) -> dict[str, bool]:
    """Which of the user's rules `text` meets."""
    st = pref.style
    p = parse(text, st)
    result = {}
    if pref.opener:
        result["opener"] = p.opener is not None
    if pref.sign_off:
        result["sign_off"] = p.sign_off is not None
    if pref.bullets:
        result["bullets"] = is_bulleted(p.body_lines, st)
    if pref.next_step:
        result["next_step"] = p.next_step is not None
    if pref.max_words is not None:
        result["length"] = pref.min_words <= word_count(p.body_lines, st) <= pref.max_words
    return result


_WORD = re.compile(r"[a-z]+")
_STOP = frozenset("""the and for you your with that this from have will are can was were been be is it its
they them their there then than also into more most some any all not only just when what which who how about
after before over under very much many each every one two three four five""".split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3 and w not in _STOP}


def on_topic(reply: str, reference: str, threshold: float = 0.3) -> bool:
    """Does `reply` answer the request? Judged against `reference`, a base-style answer to the same request.

    Users care first that the reply answers what they asked: a tiny model often writes a fluent answer to another
    request (a recipe for a refund question). Fewer than `threshold` of the reference's content words in the reply
    means it answered something else; slot values (names, days) differ between the two, template words do not.
    """
    ref = content_words(reference)
    return not ref or len(ref & content_words(reply)) / len(ref) >= threshold


# Words of a request that say what to do with the previous reply, not what it is about.
_REQUEST_WORDS = frozenset("""could would should please make write shorter longer fewer words little bit warmer
friendlier formal simpler again another rewrite rephrase give tell want need help thanks thank know like""".split())


def on_topic_of_requests(reply: str, requests: list[str]) -> bool:
    """Does `reply` speak to what the user asked in this conversation? Judged by the user's own words, not by a
    reference answer, so a model writing its own free English is judged on what it says, not how.

    On topic when the reply uses at least one content word of the conversation's requests (a name, an object, a
    place: "keyboard", "Prague", "password"); a follow-up ("Can you make that shorter?") carries no topic of its own,
    so the earlier requests count.
    """
    wanted = set().union(*(content_words(r) for r in requests)) - _REQUEST_WORDS if requests else set()
    return not wanted or bool(wanted & content_words(reply))


def edit_toward(pref: Preference, text: str) -> str:
    """What the user turns `text` into: fix each rule it misses, keep everything else as the model wrote it.

    Edits are modest on purpose (add the opener and sign-off, bulletize, add the next-step line, cut trailing
    sentences to the length band), so a reply meeting the rules costs nothing and one missing them costs a clear
    but partial rewrite. While at it, the user drops a sentence the model cut off mid-way or repeated.
    """
    st = pref.style
    met = check(pref, text)
    p = parse(text, st)
    sentences = body_sentences(p.body_lines, st)
    if sentences and sentences[-1][-1] not in ".!?":
        sentences = sentences[:-1] or [sentences[-1] + "."]
    sentences = list(dict.fromkeys(sentences))  # a sentence the model repeated is kept once
    body_lines = p.body_lines
    rewrite_body = not all(met.values())  # a user touching the reply also drops a cut-off trailing fragment
    if pref.max_words is not None and not met.get("length", True):
        while len(sentences) > 1 and word_count(sentences, st) > pref.max_words:
            sentences = sentences[:-1]
        if word_count(sentences, st) > pref.max_words:  # one long sentence: cut it at a word boundary
            words = sentences[0].split()[: pref.max_words]
            sentences = [" ".join(words).rstrip(",;:") + "."]
    if rewrite_body:
        if pref.bullets or is_bulleted(p.body_lines, st):
            body_lines = list_lines(sentences, st)
        else:
            body_lines = [" ".join(sentences)] if sentences else []
    out = []
    if pref.opener or p.opener:
        out.append(st.opener)
    out += body_lines
    if p.next_step:
        out.append(p.next_step)
    elif pref.next_step:
        out.append(st.next_step_line)
    if pref.sign_off or p.sign_off:
        out.append(st.sign_off)
    return "\n".join(out)
