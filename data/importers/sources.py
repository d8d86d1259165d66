"""Reading an export one record at a time: JSON lines line by line, CSV and Parquet in Arrow batches, a JSON
document (an API response page) whole, a `datasets.save_to_disk` folder through its memory-mapped Arrow files.
Nothing holds more than one batch."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

BATCH_ROWS = 4096
SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class Malformed:
    """A record that is not a JSON object: kept as text for the quarantine."""

    reason: str
    text: str


def expand(paths) -> list[str]:
    """Files as given; folders searched recursively for export files (a `datasets` folder is kept whole)."""
    out = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and any((p / name).exists() for name in ("dataset_info.json", "dataset_dict.json")):
            out.append(str(p))
        elif p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.endswith(SUFFIXES))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no export file ({', '.join(SUFFIXES)})")
            out.extend(found)
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def records(path: str) -> Iterator[tuple[int, dict | Malformed]]:
    """(record number, record) for every record of one file; line numbers for JSON lines and CSV (the header is
    line 1), row numbers from 1 for the rest."""
    if os.path.isdir(path):
        return _dataset_rows(path)
    name = path.lower()
    if name.endswith(".parquet"):
        return _parquet_rows(path)
    if name.endswith(".csv"):
        return _csv_rows(path)
    if name.endswith(".json"):
        return _json_document(path)
    return json_lines(path)


def json_lines(path: str, start: int = 0, end: int | None = None,
               blanks: bool = False) -> Iterator[tuple[int, dict | Malformed | None]]:
    """A JSON-lines file, or the lines of one byte range of it (`start` at a line's start; the line that
    crosses `end` is the range's last); line numbers count from the range's first line. `blanks`: blank lines
    come as None (a range's reader needs its line count)."""
    opener = gzip.open if path.endswith(".gz") else open
    loads = orjson.loads
    with opener(path, "rb") as f:
        if start:
            f.seek(start)
        pos = start
        for number, line in enumerate(f, 1):
            pos += len(line)
            if line.isspace():  # not strip(): that copies every line
                if blanks:
                    yield number, None
            else:
                try:
                    obj = loads(line)
                except orjson.JSONDecodeError as exc:
                    obj = Malformed(f"not valid JSON ({exc})", line[:2000].decode("utf-8", "replace"))
                yield number, obj if isinstance(obj, (dict, Malformed)) else \
                    Malformed("not a JSON object", line[:2000].decode())
            if end is not None and pos >= end:
                break


def _json_document(path: str) -> Iterator[tuple[int, dict | Malformed]]:
    """A JSON file: a list of records, or an API response page whose records are under `data` (Langfuse) or
    `runs`/`feedback` (LangSmith). Pages are small by design of those APIs, so the file is read whole."""
    with open(path, "rb") as f:
        try:
            doc = orjson.loads(f.read())
        except orjson.JSONDecodeError as exc:
            yield 1, Malformed(f"not valid JSON ({exc})", "")
            return
    if isinstance(doc, dict):
        doc = next((doc[k] for k in ("data", "runs", "feedback", "items") if isinstance(doc.get(k), list)), [doc])
    if not isinstance(doc, list):
        yield 1, Malformed("neither a list of records nor an object", "")
        return
    for number, obj in enumerate(doc, 1):
        yield number, obj if isinstance(obj, dict) else Malformed("not a JSON object", repr(obj)[:2000])


def _batches_to_rows(batches, first: int) -> Iterator[tuple[int, dict]]:
    number = first
    for batch in batches:
        for row in batch.to_pylist():
            yield number, row
            number += 1


def _parquet_rows(path: str) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    return _batches_to_rows(pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS), 1)


def _csv_rows(path: str) -> Iterator[tuple[int, dict | Malformed]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    bad: list = []

    def invalid_row(row) -> str:  # a row with the wrong number of fields: quarantined, the file goes on
        bad.append(row)
        return "skip"

    parse = pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid_row)
    names = pcsv.open_csv(path, parse_options=parse).schema.names
    # Every column as text: exports put JSON, ids and numbers in the same files, and a column's type must not
    # be guessed from its first block. Nested fields are parsed per record (`common.maybe_json`).
    convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True)
    reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 22), convert_options=convert,
                           parse_options=parse)
    number = 2
    for batch in reader:
        for row in batch.to_pylist():
            yield number, row
            number += 1
        for row in bad:
            yield row.number or number, Malformed(f"{row.actual_columns} fields where the header has "
                                                  f"{row.expected_columns}", row.text[:2000])
        bad.clear()


def _dataset_rows(path: str) -> Iterator[tuple[int, dict]]:
    import datasets

    ds = datasets.load_from_disk(path)
    splits = ds.values() if isinstance(ds, datasets.DatasetDict) else [ds]
    number = 1
    for split in splits:
        for batch in split.iter(batch_size=BATCH_ROWS):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                yield number, dict(zip(keys, values))
                number += 1
