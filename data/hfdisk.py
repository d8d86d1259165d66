"""Write a `datasets.DatasetDict` folder exactly as `save_to_disk` lays it out, straight from Arrow tables.

`datasets.load_from_disk` reads it back (tests/data/test_hfdisk.py checks that, and that the bytes match what
`datasets` itself writes). Writing it ourselves skips importing `datasets` (about a second) and its row-batched
writer, and gives a fingerprint derived from the content, so the same build writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa

ARROW_FILE = "data-00000-of-00001.arrow"


def features_of(t: pa.DataType) -> dict:
    """The `datasets` Features JSON of an Arrow type (the subset our datasets use)."""
    if pa.types.is_struct(t):
        return {f.name: features_of(f.type) for f in t}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"feature": features_of(t.value_type), "_type": "List"}
    names = {pa.string(): "string", pa.large_string(): "large_string", pa.int64(): "int64", pa.int32(): "int32",
             pa.int8(): "int8", pa.bool_(): "bool", pa.float64(): "float64", pa.float32(): "float32"}
    if t not in names:
        raise TypeError(f"no datasets feature for Arrow type {t}")
    return {"dtype": names[t], "_type": "Value"}


class _HashingFile:
    """A write-only file that hashes what goes through it (no second read of a file just written).

    Hashing and writing happen on a background thread (hashlib and file writes release the GIL), so they overlap
    with building the next slice of the dataset. At most `QUEUE_BYTES` wait for it: when the disk is slower than
    the build, the build waits rather than holding the dataset in memory."""

    QUEUE_BYTES = 32 << 20

    def __init__(self, path: Path):
        import queue
        import threading

        self.f = open(path, "wb")
        self.h = hashlib.sha256()
        self.closed = False
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue()
        self.queued = 0  # bytes in the queue
        self.room = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.h.update(data)
                    self.f.write(data)
                except BaseException as exc:  # re-raised in the writing thread by close()
                    self.error = exc
            with self.room:
                self.queued -= len(data)
                self.room.notify()

    def write(self, data) -> int:
        if self.error is not None:
            raise self.error
        # Arrow hands over immutable Buffers (and bytes): kept alive by the queue, they need no copy. Anything
        # mutable is copied, since its owner may reuse it once write() returns.
        chunk = data if isinstance(data, (bytes, pa.Buffer)) else bytes(data)
        with self.room:
            self.room.wait_for(lambda: self.queued < self.QUEUE_BYTES or self.error is not None)
            self.queued += len(chunk)
        self.queue.put(chunk)
        return len(chunk)

    def flush(self) -> None:
        pass  # close() drains the queue and closes the file

    def close(self) -> None:
        if self.closed:
            return
        self.queue.put(None)
        self.thread.join()
        self.f.close()
        self.closed = True
        if self.error is not None:
            raise self.error


def save_dataset(table: pa.Table | Iterable[pa.Table], path: Path, schema: pa.Schema | None = None) -> tuple[str, int]:
    """Write one split from a table, or from successive tables of one `schema` (so a large split never has to be
    in memory at once); return (sha256 of its Arrow file, rows written)."""
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(table, pa.Table):
        schema, parts = table.schema, [table]
    else:
        parts = table
    features = {f.name: features_of(f.type) for f in schema}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    sink = _HashingFile(path / ARROW_FILE)
    rows = 0
    try:
        with pa.ipc.new_stream(sink, schema) as writer:
            for part in parts:
                rows += part.num_rows
                for batch in part.cast(schema).to_batches(max_chunksize=10_000):
                    writer.write_batch(batch)
    finally:
        sink.close()
    digest = sink.h.hexdigest()
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    state = {"_data_files": [{"filename": ARROW_FILE}], "_fingerprint": digest[:16],
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": None}
    (path / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (path / "state.json").write_text(json.dumps(state, indent=2))
    return digest, rows


def save_dataset_dict(splits: dict[str, pa.Table | Iterable[pa.Table]], path: Path,
                      schema: pa.Schema | None = None) -> dict[str, tuple[str, int]]:
    """Write a DatasetDict folder; return {relative path of each Arrow file: (its sha256, its rows)}."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    out = {f"{name}/{ARROW_FILE}": save_dataset(table, path / name, schema) for name, table in splits.items()}
    (path / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    return out
