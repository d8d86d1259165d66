"""Arrow tables appended batch after batch to raw files of their buffers, mapped back as one array a column.

An Arrow IPC file holds a table as record batches; mapped back, each batch is a chunk of every column, and each
chunk costs the reading process 1-5 KB of bookkeeping in Arrow and Polars (more for a text column made of many
small buffers, as Polars' builders make them). The event texts are written in ~32 MB batches, ~270 column chunks a
million events: read back that way, their bookkeeping grew with the log, ~1.1 MB a million events
(docs/performance.md, session 12). Here each buffer of a column (validity bits, list offsets, string views, string
bytes) goes to a file of its own, appended to with every batch, so the column maps back as one array whatever the
number of batches: what the reader holds for it no longer depends on the length of the log.

Types: the ones the spilled event columns have (`string_view`, `large_list`, `struct`), fixed-width numbers,
Booleans and nulls; an Enum goes as its codes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

# A string view points into a data buffer with a 32-bit offset: a column's bytes go to parts of at most this size.
PART_BYTES = (1 << 31) - 1
# A batch's strings are copied into fresh buffers first when their buffers hold more than this many times the
# bytes the views use, plus WASTE_SLACK (an array sliced or filtered from a larger one shares that one's buffers).
WASTE_FACTOR = 2
WASTE_SLACK = 1 << 16
COPY_ROWS = 16_384


def unpack_bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    """Bits `offset` to `offset + n` of an Arrow bitmap, a bool each."""
    bytes_ = np.frombuffer(buffer, dtype=np.uint8, count=(offset + n + 7) // 8)
    return np.unpackbits(bytes_, bitorder="little")[offset:offset + n].astype(bool)


class BitFile:
    """A bitmap appended to at any bit offset (validity bits, Booleans, masks), kept a byte-aligned file."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.carry = np.zeros(0, dtype=bool)
        self.n = 0
        self.nulls = 0  # unset bits

    def append(self, buffer: pa.Buffer | None, offset: int, n: int) -> None:
        bits = np.ones(n, dtype=bool) if buffer is None else unpack_bits(buffer, offset, n)
        self.n += n
        self.nulls += int(n - np.count_nonzero(bits))
        if len(self.carry):  # the bits that did not fill the file's last byte
            bits = np.concatenate([self.carry, bits])
        whole = len(bits) // 8 * 8
        self.file.write(np.packbits(bits[:whole], bitorder="little").tobytes())
        self.carry = bits[whole:]

    def close(self) -> dict:
        if len(self.carry):
            self.file.write(np.packbits(self.carry, bitorder="little").tobytes())
        self.file.close()
        return {"file": self.path.name, "nulls": self.nulls}


class _Column:
    """One array's buffers (and its children's), each to a file in `folder` named after `name`."""

    def __init__(self, folder: Path, name: str, dtype: pa.DataType):
        self.dtype, self.n = dtype, 0
        self.valid = BitFile(folder / f"{name}.valid")
        self.children: list[_Column] = []
        if pa.types.is_string_view(dtype):
            self.views = open(folder / f"{name}.views", "wb")
            self.data = open(folder / f"{name}.data", "wb")
            self.parts = [0]  # where each part of the data file starts; the last one is being filled
            self.data_bytes = 0
        elif pa.types.is_large_list(dtype):
            self.offsets = open(folder / f"{name}.offsets", "wb")
            self.offsets.write(np.zeros(1, dtype=np.int64).tobytes())
            self.children = [_Column(folder, f"{name}.item", dtype.value_type)]
        elif pa.types.is_struct(dtype):
            self.children = [_Column(folder, f"{name}.{i}", dtype.field(i).type) for i in range(dtype.num_fields)]
        elif pa.types.is_boolean(dtype):
            self.values = BitFile(folder / f"{name}.values")
        elif pa.types.is_null(dtype):  # no buffers: all its rows are null
            pass
        elif dtype.bit_width % 8 == 0 and not pa.types.is_nested(dtype) and dtype.num_buffers == 2:
            self.values = open(folder / f"{name}.values", "wb")
        else:
            raise TypeError(f"no raw layout for Arrow type {dtype}")

    def append(self, array: pa.Array) -> None:
        if array.type != self.dtype:
            raise TypeError(f"a batch of type {array.type} appended to a column of {self.dtype}")
        n, offset, buffers = len(array), array.offset, array.buffers()
        if pa.types.is_null(self.dtype):
            self.valid.append(pa.py_buffer(bytes((n + 7) // 8)), 0, n)
            self.n += n
            return
        self.valid.append(buffers[0], offset, n)
        if pa.types.is_string_view(self.dtype):
            self._append_views(array)
        elif pa.types.is_large_list(self.dtype):
            offsets = np.frombuffer(buffers[1], dtype=np.int64, count=offset + n + 1)[offset:]
            first, last = int(offsets[0]), int(offsets[-1])
            self.offsets.write((offsets[1:] - first + self.children[0].n).tobytes())
            self.children[0].append(array.values.slice(first, last - first))
        elif pa.types.is_struct(self.dtype):
            for i, child in enumerate(self.children):
                child.append(array.field(i))  # sliced to the struct's rows
        elif pa.types.is_boolean(self.dtype):
            self.values.append(buffers[1], offset, n)
        else:
            width = self.dtype.bit_width // 8
            self.values.write(memoryview(buffers[1]).cast("B")[offset * width:(offset + n) * width])
        self.n += n

    def _append_views(self, array: pa.Array, copied: bool = False) -> None:
        n = len(array)
        views = np.frombuffer(array.buffers()[1], dtype=np.int32).reshape(-1, 4)[array.offset:array.offset + n]
        data = array.buffers()[2:]
        long = views[:, 0] > 12  # a longer string is in a data buffer; a shorter one inside its view
        if array.null_count:  # a null's view may hold anything
            long &= unpack_bits(array.buffers()[0], array.offset, n)
        used = int(views[long, 0].sum(dtype=np.int64))
        if not copied and sum(b.size for b in data) > WASTE_FACTOR * used + WASTE_SLACK:
            # Copy the strings out of buffers that hold much more (a slice of a larger array), a few rows at a
            # time: the copies are all this costs in memory. (A copy's buffer holds its short strings too.)
            for start in range(0, n, COPY_ROWS):
                self._append_views(array.slice(start, COPY_ROWS).cast(pa.large_string()).cast(pa.string_view()),
                                   copied=True)
            return
        # Every buffer's bytes go on the end of the data file, so a view's (buffer, offset) becomes (part, offset in
        # the part): a vectorised rewrite of the views, no string copied.
        part_of, start_in_part = np.zeros(len(data), dtype=np.int32), np.zeros(len(data), dtype=np.int64)
        for i, buffer in enumerate(data):
            if buffer.size > PART_BYTES:
                raise ValueError(f"a string buffer of {buffer.size} bytes (more than {PART_BYTES})")
            if self.data_bytes + buffer.size - self.parts[-1] > PART_BYTES:
                self.parts.append(self.data_bytes)
            part_of[i], start_in_part[i] = len(self.parts) - 1, self.data_bytes - self.parts[-1]
            self.data.write(memoryview(buffer).cast("B"))
            self.data_bytes += buffer.size
        views = views.copy()
        which = views[long, 2]
        views[long, 3] = (views[long, 3] + start_in_part[which]).astype(np.int32)
        views[long, 2] = part_of[which]
        self.views.write(views.tobytes())

    def close(self) -> dict:
        meta = {"n": self.n, "valid": self.valid.close(), "children": [c.close() for c in self.children]}
        if pa.types.is_string_view(self.dtype):
            self.views.close()
            self.data.close()
            meta.update(views=Path(self.views.name).name, data=Path(self.data.name).name,
                        parts=self.parts + [self.data_bytes])
        elif pa.types.is_large_list(self.dtype):
            self.offsets.close()
            meta["offsets"] = Path(self.offsets.name).name
        elif pa.types.is_boolean(self.dtype):
            meta["values"] = self.values.close()["file"]
        elif hasattr(self, "values"):
            self.values.close()
            meta["values"] = Path(self.values.name).name
        return meta


class RawTableWriter:
    """Appends record batches (pyarrow Tables of one schema) to raw buffer files in `folder`; `close` writes
    `table.json` last, with each batch's rows, so a folder without it holds no finished table."""

    def __init__(self, folder: str | os.PathLike, meta: dict | None = None):
        self.folder = Path(folder)
        self.meta = meta or {}  # kept in `table.json` for the reader
        self.columns: list[_Column] | None = None
        self.schema: pa.Schema | None = None
        self.batches: list[int] = []

    def write_table(self, table: pa.Table) -> None:
        if self.columns is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            self.columns = [_Column(self.folder, f"c{i}", field.type) for i, field in enumerate(table.schema)]
        elif table.schema != self.schema:
            raise TypeError(f"a table of schema {table.schema} appended to one of {self.schema}")
        for column, chunked in zip(self.columns, table.columns):
            for chunk in chunked.chunks:
                column.append(chunk)
        self.batches.append(table.num_rows)

    def close(self) -> None:
        if self.columns is None:
            return
        meta = {"names": self.schema.names, "types": [_type_code(f.type) for f in self.schema],
                "batches": self.batches, "columns": [c.close() for c in self.columns], "meta": self.meta}
        path = self.folder / "table.json"
        path.with_suffix(".tmp").write_bytes(orjson.dumps(meta))
        os.replace(path.with_suffix(".tmp"), path)
        self.columns = None


def _type_code(dtype: pa.DataType) -> str:
    """The type as the bytes of an empty IPC schema message (hex): Arrow's own serialisation of any type."""
    return pa.schema([pa.field("t", dtype)]).serialize().to_pybytes().hex()


def _type_of(code: str) -> pa.DataType:
    return pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(code))).field(0).type


def map_table(folder: str | os.PathLike, map_file) -> tuple[pa.Table, list[int], dict] | None:
    """The table a `RawTableWriter` left in `folder` (None when it wrote none), each column one array over maps of
    its files (`map_file(path)` returns a buffer); the rows of each batch written; the writer's `meta`."""
    folder = Path(folder)
    if not (folder / "table.json").exists():
        return None
    meta = orjson.loads((folder / "table.json").read_bytes())

    def buffer(name: str) -> pa.Buffer:
        path = folder / name
        return pa.py_buffer(map_file(path)) if path.stat().st_size else pa.py_buffer(b"")

    def array(dtype: pa.DataType, m: dict) -> pa.Array:
        n, nulls = m["n"], m["valid"]["nulls"]
        valid = buffer(m["valid"]["file"]) if nulls else None
        children = [array(dtype.field(i).type if pa.types.is_struct(dtype) else dtype.value_type, c)
                    for i, c in enumerate(m["children"])]
        if pa.types.is_string_view(dtype):
            data = buffer(m["data"])
            bounds = m["parts"]
            parts = [data.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
            return pa.Array.from_buffers(dtype, n, [valid, buffer(m["views"]), *parts], null_count=nulls)
        if pa.types.is_large_list(dtype):
            return pa.Array.from_buffers(dtype, n, [valid, buffer(m["offsets"])], null_count=nulls,
                                         children=children)
        if pa.types.is_struct(dtype):
            return pa.Array.from_buffers(dtype, n, [valid], null_count=nulls, children=children)
        if pa.types.is_null(dtype):
            return pa.nulls(n)
        return pa.Array.from_buffers(dtype, n, [valid, buffer(m["values"])], null_count=nulls)

    arrays = [array(_type_of(t), m) for t, m in zip(meta["types"], meta["columns"])]
    return pa.Table.from_arrays(arrays, names=meta["names"]), meta["batches"], meta["meta"]
