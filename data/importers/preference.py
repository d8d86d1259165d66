"""`preference`: prompt/chosen/rejected datasets (Parquet, JSON lines, or a folder `datasets.save_to_disk`
wrote), in TRL's conversational form (message lists, with an explicit `prompt` or with the prompt implicit in
`chosen` and `rejected`) or as text with "Human:"/"Assistant:" turns (Anthropic HH, and its copies with the
prompt split off).

Each pair becomes one turn as a product would have logged it: the rejected answer is generated and regenerated
away, then the chosen answer is generated and accepted. Datasets hold no users or times: every pair is its own
user and session (so a split by user splits pairs), unless the record has `user_id`/`session_id`; times are
synthetic (a fixed epoch plus the record's position) unless it has `ts` or `timestamp`.
"""

from __future__ import annotations

import re
from collections import Counter

import orjson

from data.importers.common import ImportSink, capture_messages, event_id, prompt_problem, to_millis
from data.importers.mapfile import ImportMap
from data.importers.sources import Malformed, records

FORMAT = "preference"
EPOCH_MS = 1_700_000_000_000
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def import_preference(files: list[str], sink: ImportSink, mapping: ImportMap) -> None:
    report = sink.report
    position = 0
    for path in files:
        report.files.append(path)
        tenant, tags = mapping.placement(None)
        for number, rec in records(path):
            report.records_read += 1
            position += 1
            if isinstance(rec, Malformed):
                sink.skip("malformed_record", path, number, rec.text, rec.reason)
                continue
            pair = read_pair(rec, report.dropped_from_messages)
            if isinstance(pair, str):
                sink.skip(pair, path, number, rec)
                continue
            for ev in _turn_events(rec, *pair, position, tenant, tags):
                sink.event(ev)
            report.used += 1


def read_pair(rec: dict, dropped: Counter) -> tuple[list[dict], str, str] | str:
    """(prompt messages, chosen text, rejected text), or the reason the record is not a usable pair."""
    chosen, rejected, prompt = rec.get("chosen"), rec.get("rejected"), rec.get("prompt")
    if chosen is None or rejected is None:
        return "missing_chosen_or_rejected"
    if isinstance(chosen, str) and isinstance(rejected, str):
        parsed = _text_pair(prompt, chosen, rejected)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        parsed = _conversational_pair(prompt, chosen, rejected, dropped)
    else:
        return "unreadable_pair"
    if isinstance(parsed, str):
        return parsed
    messages, chosen_text, rejected_text = parsed
    if problem := prompt_problem(messages):
        return problem
    if not chosen_text or not rejected_text:
        return "empty_answer"
    if chosen_text == rejected_text:
        return "chosen_equals_rejected"
    return messages, chosen_text, rejected_text


def _conversational_pair(prompt, chosen: list, rejected: list, dropped: Counter):
    chosen_msgs, rejected_msgs = capture_messages(chosen, dropped), capture_messages(rejected, dropped)
    if not chosen_msgs or not rejected_msgs:
        return "unreadable_pair"
    if chosen_msgs[-1]["role"] != "assistant" or rejected_msgs[-1]["role"] != "assistant":
        return "answer_not_from_assistant"
    if len(chosen_msgs) > 1 or len(rejected_msgs) > 1:  # the prompt is implicit: the shared prefix
        if chosen_msgs[:-1] != rejected_msgs[:-1]:
            return "prompts_differ"
        messages = chosen_msgs[:-1]  # an explicit prompt beside it repeats the first turn (TRL's HH copy)
    else:
        messages = capture_messages(prompt, dropped) if isinstance(prompt, (list, str)) else None
        if isinstance(prompt, str) and _TURN.search(prompt):
            messages = _hh_turns(prompt)
    return messages, chosen_msgs[-1]["content"], rejected_msgs[-1]["content"]


def _text_pair(prompt, chosen: str, rejected: str):
    if isinstance(prompt, str) and prompt.strip():
        messages = _hh_turns(prompt) if _TURN.search(prompt) else [{"role": "user", "content": prompt.strip()}]
        return messages, chosen.strip(), rejected.strip()
    chosen_turns, rejected_turns = _hh_turns(chosen), _hh_turns(rejected)
    if not chosen_turns or not rejected_turns:
        return "unreadable_pair"
    if chosen_turns[-1]["role"] != "assistant" or rejected_turns[-1]["role"] != "assistant":
        return "answer_not_from_assistant"
    if chosen_turns[:-1] != rejected_turns[:-1]:
        return "prompts_differ"
    return chosen_turns[:-1], chosen_turns[-1]["content"], rejected_turns[-1]["content"]


def _hh_turns(text: str) -> list[dict] | None:
    """"\\n\\nHuman: ...\\n\\nAssistant: ..." -> messages; a trailing empty "Assistant:" (the cue for the
    answer, when the prompt is split off) is dropped. None when the text has no such turns."""
    parts = _TURN.split(text)
    if len(parts) < 3:
        return None
    turns = [{"role": "user" if who == "Human" else "assistant", "content": body.strip()}
             for who, body in zip(parts[1::2], parts[2::2])]
    if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()
    return turns or None


def _turn_events(rec: dict, messages: list[dict], chosen: str, rejected: str, position: int, tenant, tags):
    key = orjson.dumps([messages, chosen, rejected])
    pair = event_id(FORMAT, "pair", key)
    user = str(rec.get("user_id") or pair)
    session = str(rec.get("session_id") or pair)
    t = to_millis(rec.get("ts") if rec.get("ts") is not None else rec.get("timestamp")) or EPOCH_MS + position * 10
    common = {"session_id": session, "user_id": user, "tenant": tenant, "tags": tags}
    model = {"base": str(rec.get("model") or "unknown")}
    rejected_id, chosen_id = f"{pair}-rejected", f"{pair}-chosen"
    generation = {"type": "generation", "request_id": pair, "messages": messages, "model": model, **common}
    yield {"event_id": event_id(FORMAT, "g", rejected_id), "ts": t, **generation, "generation_id": rejected_id,
           "output": rejected}
    yield {"event_id": event_id(FORMAT, "r", rejected_id), "type": "regenerate", "ts": t + 1, **common,
           "generation_id": rejected_id}
    yield {"event_id": event_id(FORMAT, "g", chosen_id), "ts": t + 2, **generation, "generation_id": chosen_id,
           "output": chosen}
    yield {"event_id": event_id(FORMAT, "a", chosen_id), "type": "accept", "ts": t + 3, **common,
           "generation_id": chosen_id}
