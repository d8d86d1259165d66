"""Arrow tables appended to raw buffer files and mapped back as one array a column (data.rawarrow)."""

from __future__ import annotations

import mmap

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from data import rawarrow

MESSAGES = pa.large_list(pa.struct([("role", pa.string_view()), ("content", pa.string_view())]))


def _frame(seed: int, n: int) -> pl.DataFrame:
    """Strings short (inside their views) and long (in data buffers), nulls at every level, lists of structs."""
    rows = []
    for i in range(n):
        k = seed * 1000 + i
        rows.append({
            "text": None if k % 7 == 0 else ("s" * (k % 12) if k % 3 else f"a long text number {k} " * (1 + k % 4)),
            "messages": None if k % 11 == 0 else [
                {"role": "user" if j % 2 == 0 else None, "content": None if k % 13 == j else f"turn {j} of {k}, " * 3}
                for j in range(k % 4)],
            "tags": None if k % 5 == 0 else [f"tag-{k % 3}", "a tag long enough to leave its view"][:1 + k % 2],
            "number": None if k % 6 == 0 else k * 1_000_003,
            "flag": None if k % 9 == 0 else k % 2 == 0,
        })
    return pl.DataFrame(rows, schema={"text": pl.String, "messages": pl.List(pl.Struct({"role": pl.String,
                                                                                         "content": pl.String})),
                                      "tags": pl.List(pl.String), "number": pl.Int64, "flag": pl.Boolean})


def _arrow(frame: pl.DataFrame) -> pa.Table:
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())


def _mapper(maps: list):
    def map_file(path):
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        maps.append(mapped)
        return mapped
    return map_file


def test_batches_map_back_as_one_array_a_column_equal_to_what_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(rawarrow, "WASTE_SLACK", 0)
    monkeypatch.setattr(rawarrow, "COPY_ROWS", 7)  # a slice's strings are copied out 7 rows at a time
    frames = [_frame(s, n) for s, n in enumerate([40, 1, 0, 77, 23])]
    big = _frame(9, 200)
    # Slices: offsets into every buffer, and buffers shared with rows not written (copied out, not written whole).
    frames += [big.slice(13, 50), big.slice(150, 3)]
    writer = rawarrow.RawTableWriter(tmp_path / "t")
    for frame in frames:
        writer.write_table(_arrow(frame))
    writer.close()
    assert _arrow(frames[0]).column("text").type == pa.string_view()
    assert _arrow(frames[0]).column("messages").type == MESSAGES
    table, batches, _ = rawarrow.map_table(tmp_path / "t", _mapper([]))
    assert batches == [len(f) for f in frames]
    assert all(column.num_chunks == 1 for column in table.columns)
    assert_frame_equal(pl.from_arrow(table), pl.concat(frames))
    # Only the strings the slices use were written, not the 200 rows' buffers they point into.
    used = sum(len(s.encode()) for f in frames for s in f["text"] if s is not None and len(s.encode()) > 12)
    assert used < (tmp_path / "t" / "c0.data").stat().st_size <= 2 * used


def test_the_files_do_not_multiply_with_the_batches(tmp_path):
    """A column's files are the same set whether it was written in one batch or in many: what a reader maps (and
    holds bookkeeping for) does not grow with the number of batches."""
    frame = _frame(1, 300)
    one, many = rawarrow.RawTableWriter(tmp_path / "one"), rawarrow.RawTableWriter(tmp_path / "many")
    one.write_table(_arrow(frame))
    for start in range(0, 300, 7):
        many.write_table(_arrow(frame.slice(start, 7)))
    one.close()
    many.close()
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "many").iterdir())
    for folder in ("one", "many"):
        table, _, _ = rawarrow.map_table(tmp_path / folder, _mapper([]))
        assert_frame_equal(pl.from_arrow(table), frame)


def test_strings_beyond_a_part_go_to_the_next_part(tmp_path, monkeypatch):
    """A view's offset is 32 bits: a column's bytes are split into parts of at most PART_BYTES (here 1 KB)."""
    monkeypatch.setattr(rawarrow, "PART_BYTES", 1024)
    frames = [_frame(s, 10) for s in range(30)]
    writer = rawarrow.RawTableWriter(tmp_path / "t")
    for frame in frames:
        writer.write_table(_arrow(frame))
    writer.close()
    table, _, _ = rawarrow.map_table(tmp_path / "t", _mapper([]))
    assert len(table.column("text").chunk(0).buffers()) > 4  # validity, views, several parts
    assert_frame_equal(pl.from_arrow(table), pl.concat(frames))


def test_a_folder_without_a_finished_table_maps_to_nothing_and_schemas_must_match(tmp_path):
    writer = rawarrow.RawTableWriter(tmp_path / "t")
    writer.write_table(_arrow(_frame(0, 5)))
    assert rawarrow.map_table(tmp_path / "t", _mapper([])) is None  # not closed: no table.json
    with pytest.raises(TypeError, match="appended to one of"):
        writer.write_table(_arrow(_frame(0, 5).drop("flag")))
    assert rawarrow.map_table(tmp_path / "never-written", _mapper([])) is None
