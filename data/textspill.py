"""The event texts and ids kept on disk between the read and the write, so the build's memory does not grow with them.

The rules need every event's ids at once (feedback may come anywhere, in any file), but only to compare them: they
work on 64-bit keys of the ids. The texts (prompts, outputs, edits, comments, params) and the id strings are needed
only at the end: to compute per-event features, to read the edit pairs and to write the datasets. The reader
therefore appends each block's `SPILLED_COLUMNS` to raw files of their Arrow buffers (a folder per input range, a
record batch of ~BATCH_BYTES at a time: `data.rawarrow`); `TextSpill.open()` maps the files back as zero-copy
Polars columns, a chunk per batch, so the event table looks the same to every step. Once the read is done, the
other columns (keys, times, line numbers, and the Enums' codes: type, file) follow them (`TextSpill.hold`), so
no column of the events stays in the process's own memory. Pages of a mapped file
count in the process's RSS once touched, so the steps that read texts gather them one record batch at a time
(`TextSpill.gather`) and hand the pages back as they go, and a thread (`TextSpill.paging`) hands back whatever the
steps have mapped beyond a bound: the pages stay in the page cache, which the kernel may evict.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from itertools import accumulate
from pathlib import Path

import polars as pl

# Every string column: the texts, and the ids and models the examples copy (the rules work on 64-bit keys of the
# ids, `data.events.KEY_COLUMNS`). What stays in memory is a few bytes of numbers per event.
SPILLED_COLUMNS = ["messages", "output", "edited_output", "comment", "model_revision", "params", "extra",
                   "event_id", "user_id", "session_id", "tenant", "tags", "request_id", "generation_id",
                   "model_base", "model_adapter", "new_request_id"]
# Blocks are gathered into record batches of about this size: gathers over a column with few chunks are fast, and
# only this much text is ever held in memory by a writer.
BATCH_BYTES = 32 << 20
# Mapped pages kept before they are handed back (a release costs the refaults of what is read again).
RELEASE_BYTES = 192 << 20
# The mapped pages a gather lets pile up before handing them back (a page read maps its neighbours too: 64 KB of
# the file for each row a random gather touches).
WINDOW_RELEASE_BYTES = 96 << 20
# The pager (`TextSpill.paging`) keeps the file pages in memory (shared libraries included, ~70 MB) under this,
# looking every PAGER_EVERY_S.
PAGER_BYTES = 128 << 20
PAGER_EVERY_S = 0.01
_VIEWS = pl.CompatLevel.newest()
# Polars 2 views an enum's codes as the enum without a copy (`Series.cat.to`); older ones hold it as Arrow.
ENUM_FROM_CODES = hasattr(pl.Series([], dtype=pl.Enum([])).cat, "to")


class SegmentWriter:
    """Takes event frames in row order: writes their text columns to the folder `path` (`data.rawarrow`). The
    rest (numbers) it returns, or with `numbers=True` writes to files beside `path` too (`numbers_files()`), so
    that a reader holds neither."""

    def __init__(self, path: str | os.PathLike, numbers: bool = False):
        self.path = Path(path)
        self.pending: list[pl.DataFrame] = []
        self.pending_bytes = 0
        from data.rawarrow import RawTableWriter

        self.writer = RawTableWriter(self.path)  # a batch a flush, each column appended to its own files
        self.numbers = [] if numbers else None  # frames waiting for the next flush
        self.numbers_paths: list[Path] = []
        self.numbers_writer = None

    def take(self, df: pl.DataFrame) -> pl.DataFrame | None:
        texts = df.select(SPILLED_COLUMNS)
        self.pending.append(texts)
        self.pending_bytes += texts.estimated_size()
        rest = df.drop(SPILLED_COLUMNS)
        if self.numbers is not None:
            self.numbers.append(rest)
            rest = None
        if self.pending_bytes >= BATCH_BYTES:
            self._flush()
        return rest

    def numbers_files(self) -> list[Path]:
        """The files of the numbers taken (after `close`), in row order: one folder of raw buffer files, or, where
        Polars cannot view an enum's codes as the enum, IPC files."""
        return list(self.numbers_paths)

    def _flush(self) -> None:
        if self.numbers and ENUM_FROM_CODES:
            # Raw buffer files too (one array a column once mapped, not a chunk a batch: the chunks' bookkeeping
            # grew with the log while the read's columns waited to be held), the Enums as their codes.
            numbers, meta = _enums_as_codes(pl.concat(self.numbers, rechunk=True))
            if self.numbers_writer is None:
                from data.rawarrow import RawTableWriter

                path = self.path.with_name(f"{self.path.name}-numbers")
                self.numbers_writer = RawTableWriter(path, meta)
                self.numbers_paths.append(path)
            self.numbers_writer.write_table(numbers)
            self.numbers = []
        elif self.numbers:
            # Polars' own IPC files: its Enum columns come back as they were.
            path = self.path.with_name(f"{self.path.stem}-numbers-{len(self.numbers_paths):05d}.arrow")
            pl.concat(self.numbers, rechunk=True).write_ipc(path)
            self.numbers_paths.append(path)
            self.numbers = []
        if not self.pending:
            return
        table = pl.concat(self.pending, rechunk=True).to_arrow(compat_level=_VIEWS)
        self.pending, self.pending_bytes = [], 0
        self.writer.write_table(table)

    def close(self) -> None:
        self._flush()
        self.writer.close()
        if self.numbers_writer is not None:
            self.numbers_writer.close()


class TextSpill:
    """The text files of one read, in row order, and the memory maps they are read back through."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.paths: list[Path] = []
        self.maps: list[mmap.mmap] = []
        self._naming = threading.Lock()

    def fresh_path(self, stem: str, suffix: str, folder: bool = False) -> Path:
        """A path in the folder that no file has had (created empty, or as an empty folder, so that a step on
        another thread cannot take it too): a mapped file must never be written again."""
        with self._naming:
            path, n = self.folder / f"{stem}{suffix}", 0
            while path.exists():
                n += 1
                path = self.folder / f"{stem}-{n:05d}{suffix}"
            path.mkdir() if folder else path.touch()
            return path

    def segment_path(self) -> Path:
        """The folder of the next range of rows' texts (a reader subprocess writes it itself)."""
        path = self.folder / f"texts-{len(self.paths):05d}"
        self.paths.append(path)
        return path

    def segment(self, numbers: bool = False) -> SegmentWriter:
        return SegmentWriter(self.segment_path(), numbers)

    def map_numbers(self, paths: list) -> pl.DataFrame | None:
        """The number files a segment wrote (`SegmentWriter.numbers_files`), mapped, as one frame."""
        frames = [self._map_batches(Path(p)) if Path(p).is_dir() else self._map(Path(p)) for p in paths]
        return pl.concat(frames, rechunk=False) if frames else None

    def _map(self, path: Path) -> pl.DataFrame:
        """An Arrow IPC file as a Polars frame over a read-only map of it (zero-copy)."""
        import pyarrow as pa

        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.maps.append(mapped)
        return pl.from_arrow(pa.ipc.open_file(pa.py_buffer(mapped)).read_all(), rechunk=False)

    def hold(self, frame: pl.DataFrame, columns: list[str] | None = None, prefix: str = "column") -> pl.DataFrame:
        """`frame` with `columns` (default: all) moved to disk and mapped back: one file and one chunk a column (a
        gather by row over one chunk is ~10x faster than over many). The columns then cost page cache, which
        `release` hands back and the kernel can evict, instead of the process's own memory. A file is never
        written twice (a mapped file must not change under its map): a second hold of a name gets a new file."""
        mapped = []
        for name in frame.columns if columns is None else columns:
            column = frame.get_column(name)
            enum = isinstance(column.dtype, pl.Enum) and ENUM_FROM_CODES
            raw = (column.dtype.is_integer() or column.dtype.is_float() or enum) and len(column) > 0
            path = self.fresh_path(f"{prefix}-{name}", ".raw" if raw else ".arrow")
            if raw and enum:
                # Its codes, mapped, viewed as the enum again: read back from an Arrow file (a dictionary array),
                # Polars would copy the codes into memory (a byte an event for the event type).
                codes = self._hold_fixed_width(column.to_physical(), path)
                mapped.append(codes.cat.to(column.dtype).alias(name))
                continue
            if raw:
                mapped.append(self._hold_fixed_width(column, path))
                continue
            # One record batch (Polars writes batches of 128k rows by default): a frame whose columns' chunks
            # differ is copied into memory by Polars' eager select to align them.
            column.rechunk().to_frame().write_ipc(path, record_batch_size=max(1, len(frame)))
            mapped.append(self._map(path).to_series())
        return frame.with_columns(mapped)

    def _hold_fixed_width(self, column: pl.Series, path: Path) -> pl.Series:
        """A column of numbers as one chunk over a map of a raw file of its values, written chunk by chunk: unlike
        an Arrow file of one record batch, it needs no copy of the whole column in memory first (8 bytes an
        event for a key or a time)."""
        return self._write_fixed_width(column.get_chunks(), column.dtype, path).alias(column.name)

    def hold_pieces(self, name: str, pieces, dtype: pl.DataType) -> pl.Series:
        """The column of numbers made of `pieces` (Series, in row order, each consumed before the next is made),
        written to disk as they come and mapped back as one chunk: a column built a window at a time is never
        in memory whole."""
        if isinstance(dtype, pl.Enum) and not ENUM_FROM_CODES:
            return self.hold(pl.concat([p.cast(dtype) for p in pieces]).alias(name).to_frame(), prefix=name)[name]
        if isinstance(dtype, pl.Enum):  # its codes, viewed as the enum again (see `hold`)
            codes = self.hold_pieces(name, (p.cast(dtype).to_physical() for p in pieces),
                                     pl.Series(dtype=dtype).to_physical().dtype)
            return codes.cat.to(dtype)
        path = self.fresh_path(name, ".raw")
        if dtype == pl.Boolean:
            return self._write_bits(pieces, path).alias(name)
        chunks = (chunk for piece in pieces for chunk in piece.cast(dtype).get_chunks())
        return self._write_fixed_width(chunks, dtype, path).alias(name)

    def _write_bits(self, pieces, path: Path) -> pl.Series:
        """Boolean pieces (a null is false) -> a Series of one chunk over a map of a raw file of their bits (Arrow's
        layout: a bit a row, the first row in the lowest bit). A mask as long as the log costs page cache, not
        the process's memory."""
        import pyarrow as pa

        from data.rawarrow import BitFile

        bits = BitFile(path)
        for piece in pieces:
            values = piece.fill_null(False).to_arrow()
            bits.append(values.buffers()[1], values.offset, len(values))
            self.release_over(WINDOW_RELEASE_BYTES)
        bits.close()
        n = bits.n
        if n == 0:
            return pl.Series(dtype=pl.Boolean)
        return pl.from_arrow(pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(self._map_raw(path))]))

    def _write_fixed_width(self, chunks, dtype: pl.DataType, path: Path) -> pl.Series:
        """Chunks of one number type -> a Series of one chunk over a map of a raw file of their values. Its
        validity bits, if it has nulls, go to a file beside it (made in memory first: an eighth of a byte a row)."""
        import pyarrow as pa

        arrow_type = pl.Series(dtype=dtype).to_arrow().type
        width = arrow_type.bit_width // 8
        valid, nulls, n = [], 0, 0
        with open(path, "wb") as f:
            for chunk in chunks:
                if len(chunk) == 0:
                    continue
                values = chunk.to_arrow()
                data = memoryview(values.buffers()[1]).cast("B")
                f.write(data[values.offset * width:(values.offset + len(values)) * width])
                f.flush()  # on disk (in the page cache) before the next chunk is made
                del values, data
                n += len(chunk)
                nulls += chunk.null_count()
                valid.append(chunk.is_not_null() if chunk.null_count() else len(chunk))
                self.release_over(WINDOW_RELEASE_BYTES)  # the chunk may be mapped (a range's number file)
        validity = None
        if nulls:
            bits = pl.concat([v if isinstance(v, pl.Series) else pl.repeat(True, v, dtype=pl.Boolean, eager=True)
                              for v in valid]).rechunk().to_arrow()
            buffer = bits.buffers()[1] if bits.offset == 0 else pa.array(bits.to_pylist()).buffers()[1]
            bits_path = path.with_suffix(".valid")
            with open(bits_path, "wb") as f:
                f.write(buffer)
            del bits, buffer
            validity = pa.py_buffer(self._map_raw(bits_path))
        del valid
        if n == 0:
            return pl.Series(dtype=dtype)
        values = pa.Array.from_buffers(arrow_type, n, [validity, pa.py_buffer(self._map_raw(path))],
                                       null_count=nulls)
        return pl.from_arrow(values)

    def _map_raw(self, path: Path) -> mmap.mmap:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.maps.append(mapped)
        return mapped

    def scratch(self, name: str, n: int, dtype):
        """A numpy array of `n` zeros over a writable map of a new file: a work array as long as the log whose
        pages the pager hands back like the others' (the kernel keeps them in the page cache, or writes them out)."""
        import numpy as np

        dtype = np.dtype(dtype)
        if n == 0:
            return np.zeros(0, dtype=dtype)
        path = self.fresh_path(name, ".raw")
        with open(path, "r+b") as f:
            f.truncate(n * dtype.itemsize)  # a file of zeros, not written until a value is set
            mapped = mmap.mmap(f.fileno(), 0)
        self.maps.append(mapped)
        return np.frombuffer(mapped, dtype=dtype)

    def hold_batches(self, name: str, parts) -> pl.DataFrame:
        """Frames of the same columns (an iterable, each consumed before the next is made) written to disk as they
        come (`data.rawarrow`) and mapped back: the result has one chunk per part."""
        from data.rawarrow import RawTableWriter

        path = self.fresh_path(name, "", folder=True)
        writer = RawTableWriter(path)
        for part in parts:
            writer.write_table(part.rechunk().to_arrow(compat_level=_VIEWS))
        writer.close()
        return self._map_batches(path)

    def _map_batches(self, folder: Path) -> pl.DataFrame | None:
        """A `RawTableWriter`'s table (None if it wrote none) as a frame with a chunk per batch written: each
        column is one array over maps of its files, sliced (a chunk of a slice costs a few hundred bytes, one
        read from an IPC file 1-5 KB: docs/performance.md, session 12)."""
        from data.rawarrow import map_table

        mapped = map_table(folder, self._map_raw)
        if mapped is None:
            return None
        table, batches, meta = mapped
        whole = pl.from_arrow(table, rechunk=False)
        if meta.get("enums"):  # written as their codes
            whole = whole.with_columns(whole[n].cat.to(pl.Enum(c)) for n, c in meta["enums"].items())
        if len(batches) <= 1:
            return whole
        starts = accumulate(batches, initial=0)
        return pl.concat([whole.slice(start, n) for start, n in zip(starts, batches)], rechunk=False)

    def batches(self, name: str) -> "BatchFile":
        """A table to build part by part (`BatchFile`)."""
        return BatchFile(self, name)

    def open(self, rows: int) -> pl.DataFrame:
        """The text columns of every row, zero-copy over the mapped files (a range without rows has no file)."""
        frames = [frame for frame in map(self._map_batches, self.paths) if frame is not None]
        if not frames:
            from data.events import empty_events

            return empty_events().select(SPILLED_COLUMNS).clear(rows)
        texts = pl.concat(frames, rechunk=False)
        if len(texts) != rows:
            raise RuntimeError(f"text spill holds {len(texts)} rows for {rows} events")
        return texts

    def gather(self, column: pl.Series | pl.DataFrame, rows: pl.Series) -> pl.Series | pl.DataFrame:
        """`column.gather(rows)` for a mapped column (or a frame of mapped columns, gathered together: one pass
        over the files for all of them), one record batch at a time in file order (Polars gathers from one chunk
        ~20x faster than across several). A gather's texts still point into the map; when the rows are spread over
        more than two batches (a shuffled split, every edit pair), each batch's texts are copied out and its pages
        handed back before the next, so such a gather never maps the whole file at once. The caller hands back
        the pages of a narrow gather once it has used the texts (`release_over`)."""
        frame = column if isinstance(column, pl.DataFrame) else column.to_frame()
        if len(rows) <= 1 or rows.null_count():
            out = frame.select(pl.all().gather(rows))
        else:
            out = self._gather_by_batch(frame, rows)
        return out if isinstance(column, pl.DataFrame) else out.to_series().alias(column.name)

    def _gather_by_batch(self, frame: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
        # The spilled columns share one layout: a chunk per record batch.
        starts = list(accumulate((len(c) for c in frame.to_series(0).get_chunks()), initial=0))
        rows = rows.cast(pl.UInt32)
        order = rows.arg_sort()
        in_order = rows.gather(order)
        batch_of = pl.Series(starts[1:], dtype=pl.UInt32).search_sorted(in_order, side="right").rle()
        spread = len(batch_of) > 2
        pieces, at = [], 0
        for n, k in zip(batch_of.struct.field("len").to_list(), batch_of.struct.field("value").to_list()):
            chunk = frame.slice(starts[k], starts[k + 1] - starts[k])
            piece = chunk.select(pl.all().gather(in_order.slice(at, n) - starts[k]))
            at += n
            if spread:
                pieces.append(pl.from_arrow(piece.to_arrow(compat_level=pl.CompatLevel.oldest())))  # a copy
                self.release_over(WINDOW_RELEASE_BYTES)
            else:
                pieces.append(piece)
        return pl.concat(pieces, rechunk=True).select(pl.all().gather(order.arg_sort()))

    def release(self) -> None:
        """Hand the mapped pages back to the page cache (they are read again from it when touched)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        for mapped in list(self.maps):  # the pager thread's copy: a step may map a file meanwhile
            try:
                mapped.madvise(mmap.MADV_DONTNEED)
            except ValueError:  # closed
                pass

    def release_over(self, limit: int = RELEASE_BYTES) -> None:
        """`release()` once the mapped pages in memory exceed `limit` bytes (all of them where that is unknown)."""
        if _file_rss() > limit:
            self.release()

    @contextlib.contextmanager
    def paging(self, limit: int = PAGER_BYTES, every_s: float = PAGER_EVERY_S):
        """While inside, a thread hands the mapped pages back whenever more than `limit` bytes of file pages are
        resident (checked every `every_s`). A step that gathers rows at random from a mapped column touches pages
        all over it within one Polars call, before any step boundary could hand them back: without this, the
        resident pages of such a step grow with the column, that is with the log. Handing back is safe at any
        moment: the maps are read-only, a page touched again is read from the page cache."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            yield
            return
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(every_s):
                if _file_rss() > limit:
                    self.release()

        thread = threading.Thread(target=watch, name="flywheel-pager", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


class BatchFile:
    """A table built a part at a time: each part appended to raw buffer files as it comes (`write`), the parts one
    frame at the end (`frame`, a chunk a part, slices of one array a column). Only the part being made is ever in
    memory, and what the frame costs to hold does not grow with the number of parts (`data.rawarrow`)."""

    def __init__(self, spill: TextSpill, name: str):
        self.spill, self.name = spill, name
        self.parts: list[pl.DataFrame] = []  # mapped parts, where Polars cannot view an enum's codes as the enum
        self.writer = self.folder = self.table = None

    def write(self, part: pl.DataFrame) -> None:
        if not ENUM_FROM_CODES:
            # A file a part, never one already mapped (a build that starts its rules again makes new tables).
            path = self.spill.fresh_path(f"{self.name}-{len(self.parts):05d}", ".arrow")
            part.write_ipc(path)
            self.parts.append(self.spill._map(path))
            return
        table, meta = _enums_as_codes(part)
        if self.writer is None:
            from data.rawarrow import RawTableWriter

            self.folder = self.spill.fresh_path(self.name, "", folder=True)
            self.writer = RawTableWriter(self.folder, meta)
        self.writer.write_table(table)

    def frame(self) -> pl.DataFrame:
        if self.writer is not None and self.table is None:
            self.writer.close()
            self.table = self.spill._map_batches(self.folder)
        return self.table if self.table is not None else pl.concat(self.parts, rechunk=False)


def _enums_as_codes(frame: pl.DataFrame):
    """`frame` as Arrow for a `RawTableWriter`, its Enums as their codes, and the writer's meta that names them:
    `TextSpill._map_batches` views the codes as the Enums again (read back as Arrow dictionaries, Polars would copy
    the codes into memory; see `TextSpill.hold`)."""
    enums = {n: t for n, t in frame.schema.items() if isinstance(t, pl.Enum)}
    table = frame.with_columns(pl.col(n).to_physical() for n in enums).to_arrow(compat_level=_VIEWS)
    return table, {"enums": {n: t.categories.to_list() for n, t in enums.items()}}


def _file_rss() -> int:
    """Resident file-backed and shared pages of this process (Linux), else a number over any limit."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[2]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 1 << 62
