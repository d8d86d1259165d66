"""Each format's importer on fixtures written from the tool's documented fields: exact counts of records read,
used, kept as context and skipped by reason; events by type; the quarantine holds every skipped record; the log
validates, builds, and a second import writes the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.importers import import_logs
from data.validate import validate_paths

FIXTURES = Path(__file__).parent / "fixtures"


def events_of(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def quarantine_of(log: Path) -> list[dict]:
    return [json.loads(line) for line in Path(f"{log}.quarantine").read_text().splitlines()]


def imported(tmp_path, fmt, *paths, map_name="map.yaml"):
    out = tmp_path / f"{fmt}.jsonl"
    map_file = FIXTURES / fmt / map_name
    report = import_logs(fmt, [str(p) for p in paths], out, map_file=map_file if map_file.exists() else None)
    return out, report.to_dict()


def counts(report: dict) -> tuple:
    """(records read, used, context, skipped by reason)."""
    return report["records_read"], report["used"], report["context"], report["skipped"]


def check_written(out: Path, report: dict) -> list[dict]:
    """What every import promises: report on disk = report returned; quarantine = skipped; the log validates."""
    assert json.loads(Path(f"{out}.report.json").read_text()) == report
    assert report["records_read"] == report["used"] + report["context"] + report["skipped_total"]
    reasons = [q["reason"] for q in quarantine_of(out)]
    assert {r: reasons.count(r) for r in set(reasons)} == report["skipped"]
    check = validate_paths([str(out)])
    assert check.ok, check.error_lines()
    assert check.events == report["events"]
    return events_of(out)


def test_langfuse_export_and_v3_scores(tmp_path):
    out, report = imported(tmp_path, "langfuse", FIXTURES / "langfuse")
    assert counts(report) == (21, 10, 5, {"malformed_record": 1, "missing_output": 1, "session_score": 1,
                                          "target_not_found": 1, "target_not_imported": 1, "unknown_score_name": 1})
    assert report["events"] == {"edit": 1, "generation": 4, "rating": 5}
    events = check_written(out, report)
    by_gen = {}
    for e in events:
        by_gen.setdefault(e["generation_id"], []).append(e)
    # A trace-level score judges the trace's latest call; two scores on g1 stay two ratings; the v3 correction
    # is an edit of g2.
    assert sorted((e["type"], e.get("value")) for e in by_gen["g1"]) == [("generation", None), ("rating", -1),
                                                                         ("rating", -1)]
    assert sorted(e["type"] for e in by_gen["g2"]) == ["edit", "generation", "rating"]
    assert by_gen["t2"][0]["messages"] == [{"role": "user", "content": "Can I export invoices as CSV?"}]
    g4 = by_gen["g4"][0]
    assert g4["user_id"] == "s-dev-1" and g4["tenant"] == "acme"  # no user id: the session stands in
    assert g4["messages"][2]["tool_calls"][0]["id"] == "call_1" and g4["messages"][2]["content"] == ""
    assert g4["messages"][3] == {"role": "tool", "content": "21C, sunny", "tool_call_id": "call_1"}
    assert by_gen["g1"][0]["tags"] == ["support", "web"]


def test_langfuse_csv_and_parquet_give_the_same_events(tmp_path):
    import polars as pl

    jsonl, _ = imported(tmp_path, "langfuse", FIXTURES / "langfuse")
    for kind in ("csv", "parquet"):
        folder = tmp_path / kind
        for table in ("traces", "observations", "scores"):
            src = FIXTURES / "langfuse" / table / f"{table}.jsonl"
            rows = []
            for line in src.read_text().splitlines():
                try:
                    rows.append({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                                 for k, v in json.loads(line).items()})
                except json.JSONDecodeError:
                    continue
            frame = pl.DataFrame(rows, infer_schema_length=None)
            frame = frame.with_columns(pl.all().cast(pl.String))
            (folder / table).mkdir(parents=True)
            getattr(frame, f"write_{kind}")(folder / table / f"{table}.{kind}")
        (folder / "scores" / "v3.json").write_text((FIXTURES / "langfuse/scores/scores-v3-page1.json").read_text())
        out, report = imported(tmp_path / kind, "langfuse", folder)
        assert report["records_read"] == 20  # the malformed JSON line has no CSV or Parquet twin
        assert report["events"] == {"edit": 1, "generation": 4, "rating": 5}
        check_written(out, report)
        assert sorted(map(json.dumps, events_of(out))) == sorted(map(json.dumps, events_of(jsonl)))


def test_langsmith_runs_and_feedback(tmp_path):
    out, report = imported(tmp_path, "langsmith", FIXTURES / "langsmith")
    assert counts(report) == (17, 8, 3, {"malformed_record": 1, "missing_output": 1, "neutral_score": 1,
                                         "target_not_found": 1, "target_not_imported": 1, "unknown_score_name": 1})
    assert report["events"] == {"accept": 1, "edit": 1, "generation": 3, "rating": 3}
    events = check_written(out, report)
    gens = {e["generation_id"]: e for e in events if e["type"] == "generation"}
    assert gens["r2"]["messages"] == [{"role": "system", "content": "You are Acme's support assistant."},
                                      {"role": "user", "content": "How do I reset my password?"}]
    assert gens["r2"]["output"] == "Click 'Forgot password' on the login page."
    assert gens["r2"]["model"] == {"base": "gpt-4o-mini"} and gens["r2"]["session_id"] == "th-ana-1"
    assert gens["r5"]["output"] == "Yes: Billing > Invoices > Export." and gens["r5"]["tags"] == ["faq"]
    feedback = {(e["type"], e["generation_id"], e.get("value")) for e in events if e["type"] != "generation"}
    # f3 names the root run: it judges the trace's latest LLM call, r4.
    assert feedback == {("rating", "r2", 1), ("rating", "r2", -1), ("rating", "r4", 1), ("edit", "r4", None),
                        ("accept", "r5", None)}


def test_openai_request_logs_infer_regenerations(tmp_path):
    out, report = imported(tmp_path, "openai", FIXTURES / "openai")
    assert counts(report) == (10, 6, 0, {"malformed_record": 1, "missing_output": 1,
                                         "prompt_not_ending_with_user": 1, "tool_call_output": 1})
    assert report["events"] == {"generation": 6, "regenerate": 1}
    assert report["dropped_from_messages"] == {"content_part:image_url": 1, "extra_choices": 1}
    events = check_written(out, report)
    gens = {e["generation_id"]: e for e in events if e["type"] == "generation"}
    # Asked again by the same user within the window: one turn, the first answer regenerated away. An hour
    # later, or by another user, it is a new turn.
    assert gens["chatcmpl-1"]["request_id"] == gens["chatcmpl-2"]["request_id"]
    assert len({gens[g]["request_id"] for g in ("chatcmpl-1", "chatcmpl-3", "chatcmpl-4")}) == 3
    regen = [e for e in events if e["type"] == "regenerate"]
    assert [(e["generation_id"], e["ts"]) for e in regen] == [("chatcmpl-1", 1794128460000)]
    assert gens["chatcmpl-1"]["tenant"] == "acme" and gens["chatcmpl-1"]["tags"] == ["hr"]
    assert gens["chatcmpl-1"]["params"] == {"temperature": 0.2, "max_tokens": 1024}
    tool = gens["chatcmpl-10"]
    assert tool["user_id"] == "u-dev" and tool["session_id"] == "conv-dev-1"
    assert tool["messages"][2]["tool_calls"][0]["function"]["name"] == "wikipedia"


def test_openai_window_comes_from_the_map(tmp_path):
    (tmp_path / "map.yaml").write_text("regeneration: {window_seconds: 10}\n")
    out = tmp_path / "o.jsonl"
    report = import_logs("openai", [str(FIXTURES / "openai")], out, map_file=tmp_path / "map.yaml")
    assert report.events["regenerate"] == 0  # 60 s apart is two turns with a 10 s window


def test_preference_text_pairs(tmp_path):
    out, report = imported(tmp_path, "preference", FIXTURES / "preference" / "hh.jsonl")
    assert report["records_read"] == 6
    assert report["used"] == 3
    assert report["skipped"] == {"chosen_equals_rejected": 1, "malformed_record": 1, "prompts_differ": 1}
    assert report["events"] == {"accept": 3, "generation": 6, "regenerate": 3}
    events = check_written(out, report)
    multi = [e for e in events if e["type"] == "generation" and len(e["messages"]) == 3]
    assert multi[0]["messages"] == [{"role": "user", "content": "What is the capital of France?"},
                                    {"role": "assistant", "content": "Paris."},
                                    {"role": "user", "content": "And of Italy?"}]
    assert sorted(e["output"] for e in multi) == ["I do not know.", "Rome."]
    split = [e for e in events if e["type"] == "generation" and "spider" in e["messages"][0]["content"]]
    assert sorted(e["output"] for e in split) == ["Eight.", "Six."]


CONVERSATIONAL = [
    {"prompt": [{"role": "user", "content": "Name a prime number."}],
     "chosen": [{"role": "assistant", "content": "Seven."}], "rejected": [{"role": "assistant", "content": "Nine."}]},
    {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
     "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]},
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "user", "content": "oops"}],
     "rejected": [{"role": "assistant", "content": "Hello"}]},
]


@pytest.mark.parametrize("form", ["jsonl", "parquet", "datasets"])
def test_preference_conversational_forms(tmp_path, form):
    import datasets

    src = tmp_path / "src"
    if form == "jsonl":
        src = tmp_path / "pairs.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in CONVERSATIONAL))
    else:
        rows = [{**r, "prompt": r.get("prompt")} for r in CONVERSATIONAL]
        ds = datasets.Dataset.from_list(rows)
        if form == "parquet":
            src = tmp_path / "pairs.parquet"
            ds.to_parquet(str(src))
        else:
            datasets.DatasetDict({"train": ds}).save_to_disk(str(src))
    out = tmp_path / "p.jsonl"
    report = import_logs("preference", [str(src)], out).to_dict()
    assert report["records_read"] == 3 and report["used"] == 2
    assert report["skipped"] == {"answer_not_from_assistant": 1}
    events = check_written(out, report)
    outputs = {e["output"]: e["messages"] for e in events if e["type"] == "generation"}
    assert outputs["Seven."] == [{"role": "user", "content": "Name a prime number."}]
    assert outputs["4"] == outputs["5"] == [{"role": "user", "content": "2+2?"}]


@pytest.mark.parametrize("fmt", ["langfuse", "langsmith", "openai", "preference"])
def test_reimport_is_byte_identical(tmp_path, fmt):
    first, _ = imported(tmp_path / "a", fmt, FIXTURES / fmt)
    second, _ = imported(tmp_path / "b", fmt, FIXTURES / fmt)
    assert first.read_bytes() == second.read_bytes()
    ids = [e["event_id"] for e in events_of(first)]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("fmt", ["langfuse", "langsmith", "openai", "preference"])
def test_imported_log_builds(tmp_path, fmt):
    from data.build import build_datasets

    out, report = imported(tmp_path, fmt, FIXTURES / fmt)
    manifest = build_datasets([str(out)], tmp_path / "build", all_tenants=True, test_fraction=0.0)
    acc = manifest["accounting"]
    assert acc["read"] == report["events_total"]
    assert acc["quarantined"] == 0


def test_failed_import_leaves_the_previous_log(tmp_path, monkeypatch):
    import data.importers as importers

    out, _ = imported(tmp_path, "openai", FIXTURES / "openai")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(sink):
        raise importers.InvalidImport("simulated")

    monkeypatch.setattr(importers, "_validate", broken)
    with pytest.raises(importers.InvalidImport):
        import_logs("preference", [str(FIXTURES / "preference")], out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left either


def test_openai_byte_ranges_in_parallel_give_the_same_log(tmp_path, monkeypatch):
    import os

    from data.importers import openai_logs

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: files are never cut into ranges")
    whole, whole_report = imported(tmp_path / "whole", "openai", FIXTURES / "openai")
    monkeypatch.setattr(openai_logs, "PARALLEL_MIN_BYTES", 0)
    assert len(openai_logs._ranges(str(FIXTURES / "openai" / "requests.jsonl"))) >= 2
    ranged, ranged_report = imported(tmp_path / "ranged", "openai", FIXTURES / "openai")
    assert ranged.read_bytes() == whole.read_bytes()
    assert ranged_report["skipped"] == whole_report["skipped"]
    assert [(q["line"], q["reason"]) for q in quarantine_of(ranged)] == \
        [(q["line"], q["reason"]) for q in quarantine_of(whole)]


def test_openai_record_logged_twice_is_a_duplicate_not_a_regeneration(tmp_path):
    from data.build import build_datasets

    lines = (FIXTURES / "openai" / "requests.jsonl").read_text().splitlines(keepends=True)
    src = tmp_path / "twice.jsonl"
    src.write_text("".join(lines) + lines[1])  # chatcmpl-2, the answer that replaced chatcmpl-1, again
    out = tmp_path / "o.jsonl"
    report = import_logs("openai", [str(src)], out).to_dict()
    assert report["events"] == {"generation": 7, "regenerate": 1}
    regen = [e["generation_id"] for e in events_of(out) if e["type"] == "regenerate"]
    assert regen == ["chatcmpl-1"]
    manifest = build_datasets([str(out)], tmp_path / "b", all_tenants=True, test_fraction=0.0)
    assert manifest["accounting"]["duplicate"] == 1


@pytest.mark.parametrize("text, message", [
    ("scores: {x: {meaning: love}}", "scores.x.meaning"),
    ("score: {}", "unknown key"),
    ("workloads: {w: {tenant: 42}}", "workloads.w.tenant"),
    ("tags: support", "tags"),
    ("regeneration: {window_seconds: -1}", "window_seconds"),
])
def test_map_errors_name_the_field(tmp_path, text, message):
    from data.importers import MapError, load_map

    (tmp_path / "map.yaml").write_text(text + "\n")
    with pytest.raises(MapError, match=message):
        load_map(tmp_path / "map.yaml")


def test_map_meanings_turn_scores_into_events():
    from data.importers.mapfile import ScoreMeaning

    stars = ScoreMeaning("rating", up_at_least=4, down_at_most=2)
    assert [stars.rating(v) for v in (5, 4, 3, 2, "1", "x")] == [1, 1, None, -1, -1, None]
    thumbs = ScoreMeaning("rating")
    assert [thumbs.rating(v) for v in (True, False, 1, 0, "True", 0.5)] == [1, -1, 1, -1, 1, None]
    helpful = ScoreMeaning("rating", up=("yes",), down=("no",))
    assert [helpful.rating(v) for v in ("yes", "no", "maybe")] == [1, -1, None]


def test_numeric_ids_in_an_export_become_text(tmp_path):
    src = tmp_path / "traces.jsonl"
    src.write_text(json.dumps({"id": "t9", "timestamp": "2026-11-02 10:00:00", "user_id": 42, "session_id": 7,
                               "input": "Hello?", "output": "Hi."}) + "\n")
    out = tmp_path / "lf.jsonl"
    report = import_logs("langfuse", [str(src)], out).to_dict()
    assert report["events"] == {"generation": 1}
    (gen,) = check_written(out, report)
    assert (gen["user_id"], gen["session_id"]) == ("42", "7")


def test_cli_import_without_the_check_writes_the_same_log(tmp_path):
    from flywheel.cli import main

    checked, _ = imported(tmp_path, "openai", FIXTURES / "openai")
    out = tmp_path / "unchecked.jsonl"
    assert main(["data", "import", "openai", str(FIXTURES / "openai"), "--out", str(out), "--no-check",
                 "--map", str(FIXTURES / "openai" / "map.yaml")]) == 0
    assert out.read_bytes() == checked.read_bytes()
    assert main(["data", "import", "openai", str(tmp_path / "missing"), "--out", str(out)]) == 1


def test_progress_hears_each_stage(tmp_path):
    stages: list[str] = []
    import_logs("langsmith", [str(FIXTURES / "langsmith")], tmp_path / "ls.jsonl", progress=stages.append)
    assert stages == ["indexing traces", "writing generations", "writing feedback",
                      "checking the events against the capture schema"]
