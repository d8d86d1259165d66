"""What a build dir holds: DatasetDicts that `datasets` loads, the manifest, the card; splits; atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.conftest import Log, read_split

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "capture-sample.jsonl"


def many_users_log(n_users: int = 40) -> Log:
    log = Log()
    for i in range(n_users):
        u = f"user{i}"
        for t in range(2):
            rid, sess = f"r{i}-{t}", f"s{i}-{t}"
            log.gen(f"g{i}-{t}a", rid, f"Bad answer {i} {t}", user=u, session=sess, prompt=f"question {i} {t}")
            log.regen(f"g{i}-{t}a", user=u, session=sess)
            log.gen(f"g{i}-{t}b", rid, f"Draft answer {i} {t}", user=u, session=sess, prompt=f"question {i} {t}")
            log.edit(f"g{i}-{t}b", f"Much better answer number {i} {t}", user=u, session=sess)
            log.accept(f"g{i}-{t}b", user=u, session=sess)
    return log


def test_sample_log_builds_and_datasets_loads_it(build):
    import datasets

    m, out = build([SAMPLE], test_fraction=0.3)
    assert set(p.name for p in out.iterdir()) == {"sft", "dpo", "kto", "manifest.json", "quarantine.jsonl",
                                                  "orphans.jsonl", "README.md"}
    for kind, head in (("sft", ["messages"]), ("dpo", ["prompt", "chosen", "rejected"]),
                       ("kto", ["prompt", "completion", "label"])):
        dd = datasets.load_from_disk(str(out / kind))
        assert set(dd) == {"train", "test"}
        assert dd["train"].column_names == head + ["signal", "request_id", "session_id", "user_id", "tenant",
                                                   "tags", "ts", "generation_id", "model_base", "model_adapter"]
        assert dd["train"].features["ts"].dtype == "int64"
        assert [len(dd[s]) for s in ("train", "test")] == [m["examples"][kind][s] for s in ("train", "test")]
    # The sample shows every kind of event and every fate of a line.
    assert set(m["events"]) == {"generation", "edit", "regenerate", "accept", "rating", "rephrase", "abandon",
                                "forget"}
    assert m["duplicates"] == 1 and m["quarantined"] == 1
    assert {"orphan", "forgotten_user", "no_signal"} <= set(m["drops"])


def test_our_writer_matches_datasets_save_to_disk(tmp_path):
    import datasets
    import pyarrow as pa

    from data.build import arrow_schema
    from data.hfdisk import save_dataset_dict

    schema = arrow_schema("kto")
    table = pa.Table.from_pylist([
        {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}],
         "label": True, "signal": "accept", "request_id": "r", "session_id": "s", "user_id": "u", "tenant": None,
         "tags": ["a"], "ts": 5, "generation_id": "g", "model_base": "m", "model_adapter": None}], schema=schema)
    ours = tmp_path / "ours"
    save_dataset_dict({"train": table, "test": table.slice(0, 0)}, ours)
    theirs = tmp_path / "theirs"
    datasets.DatasetDict({"train": datasets.Dataset(table), "test": datasets.Dataset(table.slice(0, 0))}) \
        .save_to_disk(str(theirs), num_shards={"train": 1, "test": 1})
    a, b = datasets.load_from_disk(str(ours)), datasets.load_from_disk(str(theirs))
    assert a["train"].features == b["train"].features
    assert a["train"].to_list() == b["train"].to_list() and len(a["test"]) == 0
    for f in ("dataset_info.json",):
        assert json.loads((ours / "train" / f).read_text()) == json.loads((theirs / "train" / f).read_text())
    assert (ours / "dataset_dict.json").read_text() == (theirs / "dataset_dict.json").read_text()


def test_manifest_follows_the_architecture_contract(build):
    m, out = build([SAMPLE])
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["outputs"] == m["outputs"]
    for key in ("kind", "format_version", "inputs", "config", "events", "examples", "drops", "duplicates",
                "quarantined", "accounting", "split", "outputs", "versions", "created"):
        assert key in m, key
    assert m["kind"] == "flywheel.dataset_build" and m["format_version"] == 1
    from flywheel.files import sha256_file, tree_sha256

    assert m["inputs"] == [{"path": str(SAMPLE), "sha256": sha256_file(SAMPLE), "lines": 34}]
    for kind in ("sft", "dpo", "kto"):
        assert m["outputs"][kind]["sha256"] == tree_sha256(out / kind, pattern="**/*.arrow")
    assert m["config"]["min_edit_chars"] == 3 and m["config"]["test_fraction"] == 0.0
    card = (out / "README.md").read_text()
    assert "| orphan | 1 |" in card and "forgotten_user" in card and "| 34 |" in card


def test_same_input_same_bytes(build):
    m1, _ = build([SAMPLE], test_fraction=0.3)
    m2, _ = build([SAMPLE], test_fraction=0.3)
    assert m1["outputs"] == m2["outputs"]


def test_the_bits_past_the_last_row_of_a_validity_bitmap_do_not_reach_the_file():
    """Polars may leave bits set past a column's last row in its validity bitmap (a chunk of two examples with a
    null tenant held 0xfc where another build of the same examples held 0x00): the write clears them, so the
    same examples always give the same bytes."""
    import pyarrow as pa

    from data.build import _with_unused_bits_cleared

    def table(last_byte: int) -> pa.Table:
        tenant = pa.Array.from_buffers(pa.string(), 2, [pa.py_buffer(bytes([last_byte])), pa.py_buffer(bytes(12)),
                                                        pa.py_buffer(b"")], null_count=2)
        tags = pa.array([["a"], None], type=pa.list_(pa.string()))
        return pa.table({"text": ["x", "y"], "tenant": tenant, "tags": tags})

    def file_bytes(t: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as writer:
            writer.write_table(t)
        return sink.getvalue().to_pybytes()

    dirty, clean = table(0xFC), table(0x00)
    assert file_bytes(dirty) != file_bytes(clean)  # the file carries the stray bits as they are
    assert file_bytes(_with_unused_bits_cleared(dirty)) == file_bytes(_with_unused_bits_cleared(clean)) \
        == file_bytes(clean)
    assert _with_unused_bits_cleared(dirty).equals(dirty)  # the same values
    assert _with_unused_bits_cleared(clean) is clean  # nothing to clear, nothing copied


def test_split_by_user_keeps_users_sessions_and_turns_on_one_side(build):
    m, out = build(many_users_log(), test_fraction=0.5)
    sides: dict[str, dict[str, set]] = {"user_id": {}, "session_id": {}, "request_id": {}}
    for kind in ("sft", "dpo", "kto"):
        for split in ("train", "test"):
            for r in read_split(out, kind, split):
                for key in sides:
                    sides[key].setdefault(r[key], set()).add(split)
    for key, seen in sides.items():
        assert all(len(s) == 1 for s in seen.values()), key
    assert 0 < m["examples"]["sft"]["test"] < 80
    assert m["split"]["units"]["test"]["users"] + m["split"]["units"]["train"]["users"] == 40


def test_split_by_session(build):
    _, out = build(many_users_log(), test_fraction=0.5, split_by="session")
    seen: dict[str, set] = {}
    for kind in ("sft", "dpo", "kto"):
        for split in ("train", "test"):
            for r in read_split(out, kind, split):
                seen.setdefault(r["session_id"], set()).add(split)
    assert all(len(s) == 1 for s in seen.values())
    users = {}
    for split in ("train", "test"):
        for r in read_split(out, "sft", split):
            users.setdefault(r["user_id"], set()).add(split)
    assert any(len(s) == 2 for s in users.values())  # a user's sessions may land on both sides


def test_train_examples_whose_prompt_is_in_test_are_removed(build):
    log = Log()
    for i in range(30):
        log.gen(f"g{i}", f"r{i}", f"Answer variant {i}", user=f"u{i}", prompt="The one shared question")
        log.accept(f"g{i}", user=f"u{i}")
    m, out = build(log, test_fraction=0.5)
    assert m["examples"]["sft"]["train"] == 0 and m["examples"]["sft"]["test"] > 0
    assert m["drops"]["prompt_in_test"] > 0
    assert m["split"]["removed_from_train_prompt_in_test"] > 0
    m, out = build(log, test_fraction=0.5, remove_test_prompts_from_train=False)
    assert m["examples"]["sft"]["train"] > 0


def test_time_cutoff(build):
    log = many_users_log(20)
    cutoff = log.events[len(log.events) // 2]["ts"]
    m, out = build(log, test_fraction=0.5, time_cutoff=cutoff)
    assert all(r["ts"] < cutoff for r in read_split(out, "sft", "train"))
    assert all(r["ts"] >= cutoff for r in read_split(out, "sft", "test"))
    assert m["drops"]["split_time_cutoff"] > 0


def test_kinds_selects_the_datasets_written(build):
    m, out = build([SAMPLE], kinds=["sft"])
    assert list(m["examples"]) == ["sft"] and list(m["outputs"]) == ["sft"]
    assert (out / "sft").is_dir() and not (out / "dpo").exists() and not (out / "kto").exists()
    # Regenerated-away answers, ratings, rephrases and abandons only feed DPO/KTO.
    assert m["drops"]["kind_not_built"] > 0
    full, _ = build([SAMPLE])
    assert m["examples"]["sft"] == full["examples"]["sft"]


def test_kto_rows_are_shuffled_with_a_fixed_seed(build):
    log = Log()
    for i in range(40):
        log.gen(f"g{i}", f"r{i}", f"Answer {i}", prompt=f"q{i}")
        (log.accept if i % 2 else log.regen)(f"g{i}")
    m1, out1 = build(log)
    labels = [r["label"] for r in read_split(out1, "kto")]
    assert sorted(labels) != labels and sorted(labels, reverse=True) != labels
    assert sum(labels) == 20
    _, out2 = build(log)
    assert [r["label"] for r in read_split(out2, "kto")] == labels
    _, out3 = build(log, shuffle_seed=1)
    assert [r["label"] for r in read_split(out3, "kto")] != labels


def test_build_is_atomic(build, tmp_path, monkeypatch):
    import data.build as b

    m, out = build([SAMPLE])
    before = (out / "manifest.json").read_text()

    def crash(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(b, "materialize", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        b.build_datasets([str(SAMPLE)], out, test_fraction=0.0)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_accounting_error_is_loud(build, monkeypatch):
    import data.build as b

    original = b.run_rules

    def lose_a_row(state):
        tables = original(state)
        state.read.lines_read += 1  # a line the books cannot place
        return tables

    monkeypatch.setattr(b, "run_rules", lose_a_row)
    with pytest.raises(b.AccountingError, match="does not balance"):
        build([SAMPLE])


def test_an_event_both_used_and_dropped_is_loud(build, monkeypatch):
    import polars as pl

    import data.build as b

    original = b.run_rules

    def drop_a_used_row(state):
        tables = original(state)
        used = tables["sft"].filter(pl.col("drop").is_null())["src0"].head(1)
        state.drops.add(used, "orphan")  # a step that also drops an event some kept example uses
        return tables

    monkeypatch.setattr(b, "run_rules", drop_a_used_row)
    with pytest.raises(b.AccountingError, match="both dropped and used"):
        build([SAMPLE])


def test_cli_build_prints_summary_and_writes_dir(tmp_path, capsys):
    from flywheel.cli import main

    out = tmp_path / "b"
    assert main(["data", "build", str(SAMPLE), "--out", str(out), "--test-fraction", "0.3"]) == 0
    err = capsys.readouterr().err
    assert "every input line" in err and "orphan" in err
    assert (out / "manifest.json").exists()
    cfg = tmp_path / "build.yaml"
    cfg.write_text("min_edit_chars: 100\ntest_fraction: 0.0\n")
    assert main(["data", "build", str(SAMPLE), "--out", str(out), "--config", str(cfg), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["min_edit_chars"] == 100
    cfg.write_text("min_edit_char: 1\n")
    assert main(["data", "build", str(SAMPLE), "--out", str(out), "--config", str(cfg), "--quiet"]) == 1
    assert "unknown build config key" in capsys.readouterr().err
