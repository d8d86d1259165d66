"""Reading capture logs: formats, file sets, malformed lines, strict mode, validate, load_events."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.data.conftest import Log, rows


def small_log() -> Log:
    log = Log()
    log.gen("g1", "r1", "Open Billing > Invoices and choose Export > CSV.")
    log.accept("g1")
    log.gen("g2", "r2", "Wrong answer about seats.", prompt="How many seats?", user="u2")
    log.regen("g2", user="u2")
    log.gen("g3", "r2", "The Team plan has 10 seats.", prompt="How many seats?", user="u2")
    log.accept("g3", user="u2")
    return log


def test_gzip_zstd_parquet_folder_and_glob_give_the_same_datasets(build, tmp_path):
    import polars as pl
    import zstandard

    log = small_log()
    plain = log.write(tmp_path / "plain" / "log.jsonl")
    m_plain, _ = build([plain])
    data = plain.read_bytes()

    gz = tmp_path / "gz" / "log.jsonl.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(data))
    zst = tmp_path / "zst" / "log.jsonl.zst"
    zst.parent.mkdir()
    zst.write_bytes(zstandard.ZstdCompressor().compress(data))
    pq = tmp_path / "pq" / "log.parquet"
    pq.parent.mkdir()
    pl.read_ndjson(plain).write_parquet(pq)

    for source in ([gz], [zst], [pq], [tmp_path / "zst"], [str(tmp_path / "g*" / "*.gz")]):
        m, _ = build(source)
        assert m["outputs"] == m_plain["outputs"], source
        assert m["accounting"] == m_plain["accounting"], source


def test_fsspec_url(build, tmp_path):
    import fsspec

    log = small_log()
    fs = fsspec.filesystem("memory")
    with fs.open("/captures/day1.jsonl", "w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in log.events))
    m_url, _ = build(["memory://captures/day1.jsonl"])
    m_dir, _ = build(["memory://captures"])
    m_file, _ = build([log.write(tmp_path / "day1.jsonl")])
    assert m_url["outputs"] == m_file["outputs"] == m_dir["outputs"]
    assert len(m_url["inputs"][0]["sha256"]) == 64


def test_folder_holds_only_capture_logs(tmp_path):
    from data.events import expand_inputs

    log = small_log()
    log.write(tmp_path / "day" / "a.jsonl")
    log.write(tmp_path / "day" / "sub" / "b.jsonl")
    log.write(tmp_path / "day" / "a.turns.jsonl")  # the simulator's ground truth, not capture events
    (tmp_path / "day" / "manifest.json").write_text("{}")
    assert expand_inputs([tmp_path / "day"]) == [str(tmp_path / "day" / "a.jsonl"),
                                                 str(tmp_path / "day" / "sub" / "b.jsonl")]


def test_missing_input_is_a_clear_error(build, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        build([tmp_path / "nothing-here.jsonl"])


MALFORMED = [
    (b'{"event_id": "x1", "type": "accept", "ts": 1790000000000, "session_id": "s", "user_id": "u"', "$", "JSON"),
    (b'{"event_id": "x2", "type": "rating", "ts": 1, "session_id": "s", "user_id": "u", "generation_id": "g1", '
     b'"value": "up"}', "value", "+1 or -1"),
    (b'{"event_id": "x3", "type": "accept", "ts": "yesterday", "session_id": "s", "user_id": "u", '
     b'"generation_id": "g1"}', "ts", "RFC 3339"),
    (b'{"event_id": "x4", "type": "edit", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g1", '
     b'"edited_output": 42}', "edited_output", "string"),
    (b'{"event_id": "x5", "type": "accept", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g1", '
     b'"note": "caf\xe9"}', "$", "UTF-8"),
    (b'{"event_id": "x6", "type": "accept", "ts": 5, "session_id": "s", "user_id": "u"}', "generation_id",
     "missing"),
    (b'{"type": "accept", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g1"}', "event_id",
     "missing"),
    (b'{"event_id": "x8", "type": "like", "ts": 5, "session_id": "s", "user_id": "u"}', "type", "unknown"),
    (b'{"event_id": "x9", "type": "generation", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g9",'
     b' "request_id": "r9", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],'
     b' "output": "x", "model": {"base": "m"}}', "messages", "user's turn"),
    (b'{"event_id": "x10", "type": "generation", "ts": 5, "session_id": "s", "user_id": "u", "generation_id": "g10",'
     b' "request_id": "r10", "messages": "hello", "output": "x", "model": {"base": "m"}}', "messages", "list"),
    (b'[1, 2, 3]', "$", "object"),
    (b'{"event_id": "x12", "type": "accept", "ts": true, "session_id": "s", "user_id": "u", "generation_id": "g1"}',
     "ts", "milliseconds"),
    (b'{"event_id": "x13", "type": "accept", "ts": 5, "session_id": "s", "user_id": 7, "generation_id": "g1"}',
     "user_id", "string"),
]


def test_malformed_lines_are_quarantined_with_file_line_field_and_reason(build, tmp_path):
    log = small_log()
    good = b"".join(json.dumps(e).encode() + b"\n" for e in log.events)
    big = json.dumps({"event_id": "big", "type": "accept", "ts": 5, "session_id": "s", "user_id": "u",
                      "generation_id": "g1", "pad": "x" * 10_000_000}).encode()
    body = good + b"\n".join(line for line, _, _ in MALFORMED) + b"\n\n   \n" + big + b"\n"
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(body)
    m, out = build([path])
    n_good = len(log.events)
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == len(MALFORMED) == m["quarantined"]
    for entry, (line, field, words) in zip(q, MALFORMED):
        assert entry["source"] == str(path)
        assert entry["line"] == n_good + MALFORMED.index((line, field, words)) + 1
        assert entry["field"] == field, entry
        assert words.lower() in entry["reason"].lower(), entry
        assert entry["raw"]  # the raw line is kept (non-UTF-8 bytes as escapes)
    assert "\\xe9" in q[4]["raw"]
    assert m["drops"]["blank_line"] == 2
    assert m["drops"]["oversized_line"] == 1
    assert m["accounting"]["read"] == n_good + len(MALFORMED) + 3
    assert len(rows(out, "sft")) == 2  # the good lines still build


def test_strict_mode_stops_at_the_first_invalid_line(build, tmp_path):
    from data.build import StrictModeError

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in small_log().events) + MALFORMED[1][0] + b"\n")
    with pytest.raises(StrictModeError, match=r"bad.jsonl:7: value"):
        build([path], strict=True)
    assert not (tmp_path / "build1").exists()


def test_validate_reports_summary_and_first_errors(tmp_path, capsys):
    from data.validate import validate_paths
    from flywheel.cli import main

    good = small_log().write(tmp_path / "good.jsonl")
    assert validate_paths([good]).ok
    assert main(["data", "validate", str(good)]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(line for line, _, _ in MALFORMED[:3]) + b"\n")
    report = validate_paths([good, bad])
    assert not report.ok and report.invalid == 3 and report.valid == 6
    assert report.error_lines()[0] == f"{bad}:1: $: " + report.errors[0].reason
    capsys.readouterr()
    assert main(["data", "validate", str(good), str(bad)]) == 1
    printed = capsys.readouterr().out
    assert "7 valid" not in printed and "6 valid, 3 invalid" in printed
    assert f"{bad}:2: value: must be +1 or -1" in printed


def test_validate_counts_every_invalid_line_and_keeps_the_first_in_order(tmp_path):
    """validate counts events block by block, so a large log is never held; of its invalid lines it keeps the
    first few, file by file in the order given, the parse's and the oversized ones (set aside before parsing) in
    line order, and counts all."""
    from data.validate import validate_paths

    log = small_log()
    lines = [json.dumps(e).encode() for e in log.events]
    lines[2:2] = [b'{"truncated": ' + str(i).encode() for i in range(50)]
    lines.insert(1, b'{"pad": "' + b"x" * 3000 + b'"}')  # oversized, before every other invalid line
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"\n".join(lines) + b"\n")
    b.write_bytes(b'{"truncated"\n')
    report = validate_paths([b, a], max_line_bytes=2000, keep_errors=4)
    assert report.invalid == 52 and report.oversized == 1 and report.valid == len(log.events)
    assert report.events == {t: sum(e["type"] == t for e in log.events) for t in {e["type"] for e in log.events}}
    assert [(e.source, e.line) for e in report.errors] == [(str(b), 1), (str(a), 2), (str(a), 4), (str(a), 5)]
    assert "exceeds max_line_bytes" in report.errors[1].reason


def test_load_events_gives_typed_columns_for_other_stages(tmp_path):
    import polars as pl

    from data.events import EVENT_COLUMNS, load_events

    log = small_log()
    log.rating("g3", -1, user="u2", comment="meh")
    log.events[0]["ts"] = "2026-11-02T09:14:03+01:00"
    log.events[0]["custom_field"] = {"ab_test": "B"}
    df = load_events([log.write(tmp_path / "log.jsonl")])
    assert df.columns == EVENT_COLUMNS
    assert df.schema["ts"] == pl.Int64 and df.schema["value"] == pl.Int8
    assert df["ts"][0] == 1793607243000  # 08:14:03 UTC
    first = df.row(0, named=True)
    assert first["model_base"] == "tiny-llama" and first["model_adapter"] == "v1"
    assert first["messages"][-1] == {"role": "user", "content": "How do I export my invoices?"}
    assert json.loads(first["extra"]) == {"custom_field": {"ab_test": "B"}}
    assert df.filter(pl.col("type") == "rating")["comment"].to_list() == ["meh"]
    assert df["line"].to_list() == list(range(1, len(log.events) + 1))
    # An exporter retry (the same line twice) is one event for a reader of rates.
    twice = log.write(tmp_path / "twice.jsonl", log.events + log.events[:2])
    assert len(load_events([twice])) == len(log.events)
    assert len(load_events([twice], dedupe=False)) == len(log.events) + 2


def test_parallel_ranges_read_the_same_as_one_pass(tmp_path, monkeypatch):
    import data.events as events

    log = Log()
    for i in range(300):
        log.gen(f"g{i}", f"r{i}", f"answer {i} " * 20, user=f"u{i % 7}")
        log.accept(f"g{i}", user=f"u{i % 7}")
    path = tmp_path / "log.jsonl"
    lines = [json.dumps(e).encode() for e in log.events]
    lines.insert(123, b'{"truncated": ')
    path.write_bytes(b"\n".join(lines))  # no newline at the end
    one = events.read_events([path], workers=1)
    monkeypatch.setattr(events, "PARALLEL_MIN_BYTES", 1)
    two = events.read_events([path], workers=3)
    assert one.events.equals(two.events)
    assert [(q.line, q.source) for q in one.quarantine] == [(q.line, q.source) for q in two.quarantine] == [
        (124, str(path))]
    assert one.lines_read == two.lines_read == 601
    assert one.inputs[0].sha256 == two.inputs[0].sha256


def test_many_bad_lines_wait_on_disk_and_come_back_in_order(build, tmp_path, monkeypatch):
    """A log of many bad lines (each kept raw) does not fill memory: past the first few, the quarantined lines of
    a build go to a file as they are read, by one process or several, and the quarantine file lists all of them
    in input order, then the conflicting duplicates."""
    import data.build as b
    import data.events as events

    log = Log()
    lines = []
    for i in range(200):
        log.gen(f"g{i}", f"r{i}", f"answer {i}", user=f"u{i % 7}")
        lines.append(json.dumps(log.events[-1]).encode())
        lines.append(b'{"truncated": ' + str(i).encode())
    conflict = dict(log.events[0], output="other content")
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines + [json.dumps(conflict).encode()]) + b"\n")
    monkeypatch.setattr(events.Quarantine, "MEMORY_LINES", 3)
    held = []
    read_events = events.read_events

    def reading(*a, **k):
        result = read_events(*a, **k)
        held.append((len(result.quarantine.first), result.quarantine.path))
        return result

    monkeypatch.setattr(b, "read_events", reading)
    got = []
    for parallel_from in (64 << 20, 1):
        monkeypatch.setattr(events, "PARALLEL_MIN_BYTES", parallel_from)
        m, out = build([path])
        got.append((out / "quarantine.jsonl").read_bytes())
        q = [json.loads(x) for x in got[-1].splitlines()]
        assert m["quarantined"] == len(q) == 202  # the first copy of g0 conflicts with the last line as well
        assert [e["line"] for e in q[:200]] == list(range(2, 401, 2))
        assert all(e["raw"] == '{"truncated": ' + str(i) and e["source"] == str(path) for i, e in enumerate(q[:200]))
        assert {e["line"] for e in q[200:]} == {1, 401} and {e["field"] for e in q[200:]} == {"event_id"}
    assert got[0] == got[1]
    assert [n for n, _ in held] == [3, 3] and all(p is not None for _, p in held)


def test_reader_subprocess_falls_back_to_the_temp_folder_when_shared_memory_is_small(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import data.events as events

    log = small_log()
    path = log.write(tmp_path / "log.jsonl")
    one = events.read_events([path], workers=1)
    assert events._handover_dir(10) in ("/dev/shm", None)
    monkeypatch.setattr(events.os, "statvfs", lambda p: SimpleNamespace(f_bavail=0, f_frsize=4096))
    assert events._handover_dir(path.stat().st_size) is None  # a container's 64 MB /dev/shm, say
    monkeypatch.setattr(events, "PARALLEL_MIN_BYTES", 1)
    two = events.read_events([path], workers=2)
    assert one.events.equals(two.events) and one.lines_read == two.lines_read
