"""Texts kept on disk between the read and the write (data.textspill): the same events, the same build bytes."""

from __future__ import annotations

import random

import orjson
import polars as pl
from polars.testing import assert_frame_equal, assert_series_equal

from data import events as ev
from data import textspill
from tests.data.conftest import Log
from tests.data.test_fastread import EDGE_LINES
from tests.data.test_inputs import MALFORMED


def _log_with_every_kind_of_line(path) -> None:
    """Rules of every kind, an orphan, a forget, exact and conflicting duplicates, comments, and every bad line
    of the reader tests (blank, oversized, invalid, lines only the Python reader takes)."""
    log = Log()
    for i in range(60):
        user = f"u{i % 7}"
        log.gen(f"g{i}", f"r{i}", f"Answer number {i}, with some detail.", prompt=f"Question {i % 9}?", user=user,
                tags=["t", str(i % 3)], model={"base": "m", "adapter": None if i % 4 else "a1"})
        [log.accept, log.regen, log.abandon, log.rephrase][i % 4](
            *((f"g{i}",) if i % 4 < 2 else (f"r{i}",) if i % 4 == 2 else (f"r{i}", f"r{i}x")), user=user)
        if i % 3 == 1:
            log.gen(f"g{i}b", f"r{i}", f"Second answer {i}.", prompt=f"Question {i % 9}?", user=user)
            log.edit(f"g{i}b", f"Second answer {i}, edited by the user to be right.", user=user)
        if i % 5 == 0:
            log.rating(f"g{i}", 1 if i % 2 else -1, user=user, comment=f"comment {i}")
    log.accept("no-such-generation")
    log.forget("u6")
    body = [orjson.dumps(e) for e in log.events]
    body.insert(9, body[4])  # an exact repeat
    body.insert(12, orjson.dumps({**log.events[6], "output": "other content"}))  # a conflicting duplicate
    for k, line in enumerate(EDGE_LINES + [line for line, _, _ in MALFORMED] + [b"x" * 3000]):
        body.insert(3 * k + 1, line)
    path.write_bytes(b"\n".join(body) + b"\n")


def _small_batches(monkeypatch) -> None:
    """Blocks of 4 KB, each its own record batch: the mapped columns have many chunks, gathers cross them."""
    read_blocks = ev.iter_line_blocks
    monkeypatch.setattr(ev, "iter_line_blocks", lambda path, block_bytes=0: read_blocks(path, 4096))
    read_range = ev._iter_range_blocks
    monkeypatch.setattr(ev, "_iter_range_blocks", lambda path, start, end, block_bytes=0: read_range(
        path, start, end, 4096))
    monkeypatch.setattr(textspill, "BATCH_BYTES", 1)


def _outputs(m: dict, out) -> tuple[dict, dict]:
    for key in ("created", "timings_s", "cpu_s"):
        m.pop(key, None)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and p.name not in ("manifest.json", "README.md")}
    return m, files


def test_build_with_texts_on_disk_or_in_pieces_writes_the_same_bytes(build, tmp_path, monkeypatch):
    """In memory or on disk, read by one process or several, built and written in one piece or in many: the same
    bytes."""
    import data.build as b

    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    _small_batches(monkeypatch)
    from data import filters, rules, split

    buckets, turn_buckets = [], rules.turn_buckets
    monkeypatch.setattr(rules, "turn_buckets", lambda events, n, *a: buckets.append(n) or turn_buckets(events, n, *a))
    for config in ({"test_fraction": 0.3, "max_line_bytes": 2000},
                   {"test_fraction": 0.3, "max_line_bytes": 2000, "redact": ["email"], "near_duplicate_prompts": True},
                   {"kinds": ["sft", "kto"], "split_by": "session", "max_line_bytes": 2000, "test_fraction": 0.4,
                    "time_cutoff": 1_790_000_120_000}):
        results = []
        ways = [(False, 64 << 20, 10**9), (True, 64 << 20, 10**9), (True, 64 << 20, 7), (False, 64 << 20, 7)]
        if "redact" in config:
            ways.append((True, 1, 10**9))
        for spill, parallel_from, rows in ways:
            monkeypatch.setattr(b, "SPILL_TEXTS", spill)
            monkeypatch.setattr(ev, "PARALLEL_MIN_BYTES", parallel_from)  # 1: read in ranges by subprocesses
            # 7: linked in many passes, the turns in many buckets, each split sorted and written in many ranges,
            # the event columns gathered in many windows, the split's users and sessions counted in many parts
            for name in ("LINK_PART_ROWS", "TURN_BUCKET_ROWS", "WRITE_RANGE_ROWS", "SCAN_ROWS", "DISTINCT_PART_ROWS"):
                monkeypatch.setattr(b, name, rows)
            monkeypatch.setattr(rules, "OWNER_SLICE_ROWS", rows)
            monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", rows)
            monkeypatch.setattr(filters, "KEY_PART_ROWS", rows)
            monkeypatch.setattr(split, "SLICE_ROWS", rows)
            monkeypatch.setattr(split, "UNIT_PART_ROWS", rows)  # the units given their side in many parts
            results.append(_outputs(*build([path], **config)))
        assert all(r == results[0] for r in results[1:]) and len(results) >= 4
        assert max(buckets) >= 5
        m = results[0][0]
        assert m["quarantined"] > 30 and m["duplicates"] >= 1 and m["drops"]["orphan"] == 1
        assert m["drops"]["oversized_line"] >= 1 and m["drops"]["forgotten_user"] > 0
    assert m["drops"]["split_time_cutoff"] > 0 and m["examples"]["kto"]["test"] > 0
    assert not list(tmp_path.glob(".*texts-*"))  # the text files are removed with the build


def test_events_read_with_texts_on_disk_equal_those_in_memory(tmp_path, monkeypatch):
    paths = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for path in paths:
        _log_with_every_kind_of_line(path)
    in_memory = {keys: ev.read_events(paths, keys=keys) for keys in (False, True)}
    text_files = {}
    for keys in (False, True):  # a record batch a range
        whole = tmp_path / f"whole-{keys}"
        whole.mkdir()
        ev.read_events(paths, spill_dir=whole, keys=keys)
        text_files[keys] = {p.relative_to(whole) for p in whole.glob("texts-*/*")}
    _small_batches(monkeypatch)
    for parallel_from in (64 << 20, 1):
        monkeypatch.setattr(ev, "PARALLEL_MIN_BYTES", parallel_from)
        for keys in (False, True):
            folder = tmp_path / f"spill{parallel_from}-{keys}"
            folder.mkdir()
            spilled = ev.read_events(paths, spill_dir=folder, keys=keys)
            # A record batch per block, a chunk each once mapped (subprocesses, which read in full-size blocks:
            # one a range) ...
            assert spilled.events["messages"].n_chunks() >= (5 if parallel_from > 1 else len(paths) * 2)
            assert_frame_equal(spilled.events, in_memory[keys].events)
            assert spilled.texts is not None and in_memory[keys].texts is None
            # ... appended to the same files as one batch a range would be, texts and numbers (data.rawarrow).
            if parallel_from > 1:
                assert {p.relative_to(folder) for p in folder.glob("texts-*/*")} == text_files[keys]


def test_the_keyed_table_is_all_mapped_from_disk(tmp_path):
    """What the build reads: every string column mapped from disk, and the other columns (times, lines, the ids'
    64-bit keys, which equal the keys of the strings, types, values, files) written there too, one file a
    column: no column of the events stays in memory."""
    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    read = ev.read_events([path], spill_dir=tmp_path, keys=True)
    events = read.events
    numbers = [c for c in events.columns if c not in textspill.SPILLED_COLUMNS]
    assert sorted(numbers) == sorted(["type", "ts", "value", "source", "line"] + ev.KEY_COLUMNS)
    assert all(events[c].dtype in (pl.Int8, pl.Int64, pl.UInt64) or isinstance(events[c].dtype, pl.Enum)
               for c in numbers)
    for key, name in ev.KEYED_IDS.items():
        assert_series_equal(events[key], events.select(ev.id_key(name)).to_series(), check_names=False)
        assert events[key].null_count() == events[name].null_count()
    held = {p.name.removeprefix("column-").rsplit(".", 1)[0]: p for p in tmp_path.glob("column-*")
            if p.suffix != ".valid"}
    assert sorted(held) == sorted(numbers)
    # Raw files of fixed-width values: numbers, and the Enums' codes (in Arrow, Polars would copy the codes).
    assert {p.suffix for p in held.values()} == ({".raw"} if textspill.ENUM_FROM_CODES else {".arrow", ".raw"})
    for name, file in held.items():
        assert events[name].n_chunks() == 1
        if file.suffix == ".arrow":
            assert_series_equal(events[name], pl.read_ipc(file).to_series())
        else:  # the values, a fixed width each (a null's slot holds anything), and the validity bits beside them
            import numpy as np

            column = events[name].to_physical()
            values = pl.Series(name, np.fromfile(file, dtype=column.fill_null(0).to_numpy().dtype))
            assert_series_equal(values.filter(column.is_not_null()), column.drop_nulls())
            bits = file.with_suffix(".valid")
            assert bits.exists() == (column.null_count() > 0)
            if bits.exists():
                valid = np.unpackbits(np.fromfile(bits, dtype=np.uint8), bitorder="little")[:len(column)]
                assert_series_equal(pl.Series(name, valid.astype(bool)), column.is_not_null())


def test_gather_batch_by_batch_equals_a_plain_gather(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    _small_batches(monkeypatch)
    read = ev.read_events([path], spill_dir=tmp_path)
    assert read.events["output"].n_chunks() > 4
    n = len(read.events)
    rng = random.Random(0)
    for rows in ([], [3], list(range(n)), [rng.randrange(n) for _ in range(3 * n)], [n - 1, 0, n - 1]):
        rows = pl.Series(rows, dtype=pl.UInt32)
        for name in textspill.SPILLED_COLUMNS:
            column = read.events[name]
            assert_series_equal(read.texts.gather(column, rows), column.gather(rows))


def test_held_columns_come_back_in_one_chunk(tmp_path):
    """Polars writes IPC files in batches of 128k rows, and an eager select over a frame whose columns' chunks
    differ copies the frame into memory to align them: a held column must come back in one chunk, like the
    columns the steps add to it. A table built in parts comes back whole."""
    spill = textspill.TextSpill(tmp_path)
    n = 300_000
    frame = pl.DataFrame({"a": pl.int_range(n, dtype=pl.UInt32, eager=True), "b": pl.int_range(n, eager=True)})
    held = spill.hold(frame)
    assert held["a"].n_chunks() == held["b"].n_chunks() == 1
    assert_frame_equal(held, frame)
    built = spill.batches("parts")
    for start in range(0, n, 100_000):
        built.write(frame.slice(start, 100_000))
    assert_frame_equal(built.frame(), frame)
    # Parts of every kind of column the steps write (Enums, Booleans, strings, nulls only): a chunk a part, and
    # the same files however many parts (what holding the table costs does not grow with them).
    reason = pl.Enum(["kept", "dropped"])
    table = pl.DataFrame({"row": pl.int_range(1000, dtype=pl.UInt32, eager=True),
                          "drop": pl.Series(["dropped", None, "kept", "kept"] * 250, dtype=reason),
                          "flag": [i % 3 == 0 for i in range(1000)], "id": [f"id-{i:020d}" for i in range(1000)],
                          "none": pl.Series([None] * 1000, dtype=pl.Null)})
    files = {}
    for parts in (1, 7):
        built = spill.batches(f"kinds-{parts}")
        for start in range(0, 1000, -(-1000 // parts)):
            built.write(table.slice(start, -(-1000 // parts)))
        got = built.frame()
        assert_frame_equal(got, table)
        assert got["row"].n_chunks() == parts and got["drop"].dtype == reason
        if textspill.ENUM_FROM_CODES:  # else a Polars IPC file a part
            files[parts] = sorted(p.name for p in (tmp_path / f"kinds-{parts}").iterdir())
    assert files.get(1) == files.get(7)
    # Number columns are raw files written chunk by chunk: empty chunks, nulls only, slices, no rows.
    empty = pl.Series("c", [], dtype=pl.UInt64)
    for column in (pl.concat([empty, pl.Series("c", [None, None], dtype=pl.UInt64), empty], rechunk=False),
                   pl.Series("c", [None] * 5, dtype=pl.Int8), pl.Series("c", [], dtype=pl.UInt32),
                   pl.concat([pl.Series("c", [1, None, 3]), pl.Series("c", [4, 5, None])], rechunk=False).slice(1, 4)):
        held = spill.hold(column.to_frame())
        assert held["c"].n_chunks() == 1
        assert_frame_equal(held, column.to_frame())
    # Enums (codes of 8 and 16 bits) come back as the same Enum, nulls included.
    small, large = pl.Enum(["train", "test"]), pl.Enum([f"reason {i}" for i in range(300)])
    for column in (pl.Series("e", ["test", None, "train"] * 1000, dtype=small),
                   pl.Series("e", [f"reason {i % 300}" for i in range(1000)], dtype=large),
                   pl.Series("e", [None, None], dtype=small)):
        held = spill.hold(column.to_frame())["e"]
        assert held.dtype == column.dtype and held.n_chunks() == 1
        assert_series_equal(held, column)
        assert_series_equal(held.to_physical(), column.to_physical())


def test_a_column_built_in_pieces_is_written_as_it_comes_and_mapped_back_whole(tmp_path):
    spill = textspill.TextSpill(tmp_path)
    pieces = [pl.Series([1, None, 3]), pl.Series([], dtype=pl.Int64), pl.Series(range(10)),
              pl.concat([pl.Series([None, 5]), pl.Series([6])], rechunk=False)]
    made = []

    def one_at_a_time():
        for piece in pieces:
            made.append(len(made))
            yield piece
            assert (tmp_path / "owners.raw").stat().st_size == 4 * sum(len(p) for p in pieces[:len(made)])

    held = spill.hold_pieces("owners", one_at_a_time(), pl.UInt32)
    assert held.n_chunks() == 1 and held.name == "owners" and len(made) == len(pieces)
    assert_series_equal(held, pl.concat(pieces).cast(pl.UInt32), check_names=False)
    assert (tmp_path / "owners.valid").exists()
    for name, pieces_ in (("none", [pl.Series(range(5)), pl.Series(range(3))]), ("empty", [])):
        held = spill.hold_pieces(name, iter(pieces_), pl.UInt16)
        expected = pl.concat(pieces_).cast(pl.UInt16) if pieces_ else pl.Series([], dtype=pl.UInt16)
        assert_series_equal(held, expected, check_names=False)
    assert not (tmp_path / "none.valid").exists()  # no nulls, no validity bits


def test_a_read_in_subprocesses_reports_every_line_as_it_goes(tmp_path, monkeypatch):
    """Every range of a large file is parsed by a subprocess (none by the build's process, whose allocators would
    keep the parse's remnants); their lines reach the progress callback, all of them."""
    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    monkeypatch.setattr(ev, "PARALLEL_MIN_BYTES", 1)
    parsed_here = []
    monkeypatch.setattr(ev, "_read_range", lambda *a, **k: parsed_here.append(a) or {})
    calls = []
    read = ev.read_events([path], spill_dir=tmp_path, keys=True, progress=calls.append)
    assert not parsed_here
    assert sum(calls) == read.lines_read == sum(1 for _ in open(path, "rb")) and len(calls) >= 2


def test_a_mask_built_in_pieces_is_a_bit_a_row_on_disk(tmp_path):
    """Masks as long as the log (the rows alive) go to disk as they are made: a bit a row, in Arrow's layout, so
    they map back as one chunk whatever the pieces' lengths; a null is false, as a filter takes it."""
    from data import rules

    spill = textspill.TextSpill(tmp_path)
    rng = random.Random(3)
    for case in range(20):
        pieces = [pl.Series([rng.random() < 0.4 if rng.random() > 0.1 else None for _ in range(rng.randrange(30))],
                            dtype=pl.Boolean) for _ in range(rng.randrange(6))]
        held = spill.hold_pieces(f"m{case}", iter(pieces), pl.Boolean)
        expected = pl.concat(pieces).fill_null(False) if pieces else pl.Series([], dtype=pl.Boolean)
        assert_series_equal(held, expected, check_names=False)
        assert held.n_chunks() <= 1 and held.null_count() == 0
        n = len(expected)
        if n:
            assert (tmp_path / f"m{case}.raw").stat().st_size == -(-n // 8)
        # The same in memory (the build without a spill).
        in_memory = rules.InMemory().hold_pieces("m", iter(pieces), pl.Boolean)
        assert_series_equal(in_memory, expected, check_names=False)


def test_the_masks_and_flags_of_the_events_wait_on_disk(build, tmp_path, monkeypatch):
    """What the rules, the accounting and the split summary keep per event (the rows alive, out of play, used,
    dropped, in each split) is made into files of the spill, not arrays as long as the log in memory."""
    import numpy as np

    import data.build as b

    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    monkeypatch.setattr(b, "SPILL_TEXTS", True)
    made = []
    scratch, hold_pieces = textspill.TextSpill.scratch, textspill.TextSpill.hold_pieces
    monkeypatch.setattr(textspill.TextSpill, "scratch", lambda self, name, n, dtype: made.append(
        (name, n, np.dtype(dtype).itemsize)) or scratch(self, name, n, dtype))
    monkeypatch.setattr(textspill.TextSpill, "hold_pieces", lambda self, name, pieces, dtype: (
        made.append((name, None, dtype)) if dtype == pl.Boolean else None) or hold_pieces(self, name, pieces, dtype))
    m, _ = build([path], test_fraction=0.3, max_line_bytes=2000)
    events = m["accounting"]["read"] - m["quarantined"] - m["drops"]["oversized_line"] - m["drops"].get("blank_line", 0)
    flags = {name: n for name, n, width in made if n is not None and width == 1}
    assert set(flags) >= {"gone", "used", "dropped", "first-reason", "split-used-train", "split-used-test"}
    assert set(flags.values()) == {events}
    assert {name for name, n, _ in made if n is None} >= {"_out", "alive", "split-used-train", "split-used-test"}


def test_link_and_the_turn_buckets_keep_their_columns_on_disk(tmp_path, monkeypatch):
    """owner_row (4 bytes an event) and the turn buckets (2) are made a window at a time straight into files:
    the same values as in memory, never a column as long as the log in the process's memory."""
    from data import rules

    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", 5)
    monkeypatch.setattr(rules, "OWNER_SLICE_ROWS", 5)
    read = ev.read_events([path], spill_dir=tmp_path, keys=True)
    events = read.events.with_row_index("row").select(rules.LIGHT_COLUMNS)
    results = {}
    for name, store in (("memory", rules.InMemory()), ("disk", read.texts)):
        drops = rules.Drops(store=read.texts if name == "disk" else None)
        linked, alive, orphans = rules.link_events(events, drops, parts=3, store=store)
        results[name] = (linked, alive, orphans, drops.steps, rules.turn_buckets(linked, 4, store))
    memory, disk = results["memory"], results["disk"]
    assert_frame_equal(disk[0], memory[0])
    for a, b_ in zip(disk[1:3] + disk[4:], memory[1:3] + memory[4:]):
        assert_series_equal(a, b_)
    assert [(r, rows.to_list()) for r, rows in disk[3]] == [(r, rows.to_list()) for r, rows in memory[3]]
    assert memory[0]["owner_row"].null_count() == len(memory[2]) > 0  # orphans have no owner
    for column, file, width in ((disk[0]["owner_row"], "owner_row.raw", 4), (disk[4], "turn_bucket.raw", 2)):
        assert column.n_chunks() == 1 and (tmp_path / file).stat().st_size == len(column) * width
    assert len(list(tmp_path.glob("owners-*/table.json"))) >= 2  # the pairs each pass found, on disk too
    # The masks of the rows out of play and alive: a bit an event, on disk.
    assert disk[1].n_chunks() == 1 and disk[1].sum() < len(disk[1])
    for stem in ("_out", "alive"):
        files = list(tmp_path.glob(f"{stem}*.raw"))
        assert files and all(f.stat().st_size == -(-len(events) // 8) for f in files)
    # The rows each step dropped wait on disk for the accounting (4 bytes a dropped event).
    for reason, rows in disk[3]:
        files = list(tmp_path.glob(f"drops-{reason}*.raw"))
        assert len(files) == 1 and files[0].stat().st_size == 4 * len(rows) and rows.n_chunks() == 1


def test_the_labels_of_the_filters_are_made_a_window_at_a_time_onto_disk(tmp_path, monkeypatch):
    """A filter's `drop` labels (a byte an example), given as an expression, as positions or as a mask, are made
    a window of rows at a time into a file: the same labels as in memory, and an example keeps the first
    reason."""
    from data import filters, rules

    monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", 4)
    spill = textspill.TextSpill(tmp_path)
    df = pl.DataFrame({"x": range(11), "drop": pl.Series([None] * 3 + ["empty_output"] + [None] * 7,
                                                         dtype=rules.DROP_REASON)})
    marked = {}
    forms = {"expression": pl.col("x") % 3 == 0, "positions": pl.Series([10, 0, 3, 7, 5], dtype=pl.UInt32),
             "mask": pl.Series([i in (0, 3, 5, 7, 10) for i in range(11)])}
    for form, dropped in forms.items():
        memory = filters.mark(df, dropped, "duplicate_example")
        disk = filters.mark(df, dropped, "duplicate_example", spill)
        assert_frame_equal(disk, memory)
        assert disk["drop"].n_chunks() == 1
        marked[form] = memory["drop"].to_list()
    assert marked["expression"] == ["duplicate_example", None, None, "empty_output", None, None,
                                    "duplicate_example", None, None, "duplicate_example", None]
    assert marked["positions"] == marked["mask"] == [
        "duplicate_example", None, None, "empty_output", None, "duplicate_example", None, "duplicate_example", None,
        None, "duplicate_example"]
    files = sorted(tmp_path.glob("drop*.raw"))
    assert len(files) == 3 and all(f.stat().st_size == len(df) for f in files)  # the codes, a byte an example
    assert filters.mark(df, pl.Series([], dtype=pl.UInt32), "duplicate_example", spill) is df  # nothing to write


def test_a_scratch_array_lives_in_a_file_and_keeps_its_values_when_its_pages_are_handed_back(tmp_path):
    """account's byte an event: zeros to start with, in a file of the spill; the pager may hand its pages back at
    any moment, and what was set is still there."""
    import numpy as np

    spill = textspill.TextSpill(tmp_path)
    first = spill.scratch("first-reason", 100_000, np.uint8)
    assert first.dtype == np.uint8 and len(first) == 100_000 and not first.any()
    np.maximum.at(first, np.array([5, 5, 99_999]), np.array([3, 7, 1], dtype=np.uint8))
    spill.release()
    assert first[5] == 7 and first[99_999] == 1 and int(first.sum()) == 8
    assert [p.stat().st_size for p in tmp_path.glob("first-reason*.raw")] == [100_000]
    assert len(spill.scratch("empty", 0, np.uint8)) == 0


def test_a_pass_over_mapped_columns_hands_back_their_pages_after_each_window(tmp_path, monkeypatch):
    """A filter over whole mapped columns in one call maps all of them, faster than the pager can take them back;
    the rules' passes go a window at a time and call `rules.after_window` after each, which the build points at
    the spill, so what stays mapped is a window's."""
    from data import build, rules

    spill = textspill.TextSpill(tmp_path)
    n = 8_000_000  # 64 MB of int64
    frame = spill.hold(pl.DataFrame({"v": pl.int_range(n, eager=True)}))
    mask = pl.int_range(n, eager=True) % 1000 == 0
    spill.release()
    base = textspill._file_rss()
    whole = frame.filter(mask)
    assert textspill._file_rss() > base + (48 << 20)  # one call: the whole column mapped
    spill.release()
    monkeypatch.setattr(rules, "GATHER_WINDOW_ROWS", 1 << 19)  # 4 MB windows
    monkeypatch.setattr(textspill, "WINDOW_RELEASE_BYTES", base + (8 << 20))
    calls = []
    release_over = spill.release_over
    monkeypatch.setattr(spill, "release_over", lambda limit: calls.append(textspill._file_rss()) or release_over(limit))
    with build._release_after_windows(spill):
        windowed = rules.select_where(frame, ["v"], mask)
    assert_frame_equal(windowed, whole)
    assert len(calls) == -(-n // (1 << 19))  # one hand-back a window
    rules.after_window()
    assert len(calls) == -(-n // (1 << 19))  # the build's hook is gone after it
    assert max(calls) < base + (16 << 20) and textspill._file_rss() <= base + (8 << 20)


def test_the_pager_keeps_mapped_pages_under_its_bound_and_the_data_intact(tmp_path):
    """A random gather over a mapped column touches pages all over it within one call; the pager hands them back
    while the step runs, and what the step reads is unchanged."""
    import time

    spill = textspill.TextSpill(tmp_path)
    n = 16_000_000  # 128 MB of int64
    column = spill.hold(pl.DataFrame({"v": pl.int_range(n, eager=True)}))["v"]
    spill.release()
    base = textspill._file_rss()
    rows = pl.Series(random.Random(1).sample(range(n), 200_000), dtype=pl.UInt32)
    unpaged = column.gather(rows)
    assert textspill._file_rss() > base + (64 << 20)  # a sparse gather maps most of the file
    spill.release()
    bound = base + (16 << 20)
    with spill.paging(limit=bound, every_s=0.001):
        for start in range(0, len(rows), 10_000):
            part = column.gather(rows.slice(start, 10_000))
            assert_series_equal(part, unpaged.slice(start, 10_000))
            # What a slice touches can pass the bound until the pager's next look, which on a loaded machine
            # comes late; nothing here hands pages back but the pager, and they never pile up.
            deadline = time.monotonic() + 5
            while textspill._file_rss() > bound + (16 << 20) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert textspill._file_rss() <= bound + (16 << 20)
    assert_series_equal(column.gather(rows), unpaged)


def test_a_full_disk_is_a_clear_error_and_leaves_the_old_output(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import pytest

    from data.build import BuildError, build_datasets

    sample = Path(__file__).resolve().parents[2] / "data" / "samples" / "capture-sample.jsonl"
    out = tmp_path / "build"
    out.mkdir()
    (out / "previous.txt").write_text("the last good build")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def polars_no_space(*args, **kwargs):  # how Polars' writers say it: an OSError without an errno
        raise OSError("No space left on device (os error 28)")

    # The texts and numbers of the readers, then the columns mapped after the read.
    for cls, method, fail in ((textspill.SegmentWriter, "_flush", no_space),
                              (textspill.TextSpill, "hold", polars_no_space)):
        with monkeypatch.context() as patch:
            patch.setattr(cls, method, fail)
            with pytest.raises(BuildError, match=r"no space left on device while building build .*about 1.7x"):
                build_datasets([sample], out, test_fraction=0.3)
        assert [p.name for p in out.iterdir()] == ["previous.txt"]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build")]  # no spill or temp folder left


def test_filters_that_read_texts_in_slices_keep_the_same_examples(build, tmp_path, monkeypatch):
    """Trivial edits, token limits and near-duplicate prompts read their texts a slice at a time (so memory holds
    one slice of texts): slices of 3 examples give the bytes of one slice for all."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from data import filters

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "log.jsonl"
    _log_with_every_kind_of_line(path)
    config = {"test_fraction": 0.3, "max_line_bytes": 2000, "near_duplicate_prompts": True, "min_edit_chars": 40,
              "tokenizer": str(tmp_path), "max_tokens": 18}
    whole = _outputs(*build([path], **config))
    monkeypatch.setattr(filters, "TEXT_SLICE_ROWS", 3)
    sliced = _outputs(*build([path], **config))
    assert sliced == whole
    drops = whole[0]["example_drops"]
    # Each filter removed some examples and kept others, so a slice that went wrong would show.
    assert drops["dpo"]["trivial_edit"] > 0 and drops["sft"]["near_duplicate_prompt"] > 0
    assert drops["sft"]["too_many_tokens"] > 0 and sum(whole[0]["examples"]["sft"].values()) > 0
