"""Reading capture logs: files, folders, globs and URLs -> one typed table of valid events + a quarantine list.

Each line is first decoded by msgspec into a typed record that encodes the contract (`data.fastread`); the
records' fields become Polars/Arrow columns once per block. The lines msgspec does not take go to the reference
path: parsed with orjson and checked (`data.records.check_event`, which mirrors the shipped JSON Schema) in one
tight loop that appends the event's fields to flat column lists. Both paths give the same rows. Lines that fail go
to the quarantine list with their source, line number, field and reason; nothing is lost and nothing crashes the
read. Large plain files are read as byte ranges by several processes.
"""

from __future__ import annotations

import contextlib
import gc
import glob as globlib
import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson
import polars as pl

from data.records import EVENT_TYPES, check_event
from data.textspill import ENUM_FROM_CODES, WINDOW_RELEASE_BYTES, SegmentWriter, TextSpill

try:  # the fast path (data/fastread.py) needs msgspec; without it every line takes the Python path
    import msgspec  # noqa: F401

    FAST_PATH = True
except ImportError:  # pragma: no cover
    FAST_PATH = False

# A line larger than this is filtered with reason `oversized_line` before parsing (a 10 MB prompt is a logging bug,
# not a training example, and parsing it would cost more than the rest of the block).
DEFAULT_MAX_LINE_BYTES = 1_000_000
# Blocks under glibc's largest mmap threshold (32 MB): a freed block's memory is reused by the next one instead
# of being unmapped and faulted in again (page faults cost ~1 us a page on the development machine).
BLOCK_BYTES = 4 << 20
INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".parquet")  # what a folder is searched for

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
EVENT_COLUMNS = [
    "type", "event_id", "ts", "user_id", "session_id", "tenant", "tags", "request_id", "generation_id",
    "messages", "output", "edited_output", "model_base", "model_revision", "model_adapter", "value", "comment",
    "new_request_id", "params", "extra", "source", "line",
]
# With `read_events(..., keys=True)` (what the build reads): every id also as a 64-bit key, the key the rules join
# and group on. The strings can then wait on disk with the texts (data.textspill): a key is 8 bytes in memory, an
# id string 16 bytes of view plus its text, and joins on integers are faster. `data.build` checks that no two
# different ids of a column share a key before it trusts them.
KEYED_IDS = {"event_key": "event_id", "user_key": "user_id", "session_key": "session_id", "tenant_key": "tenant",
             "request_key": "request_id", "generation_key": "generation_id"}
KEY_COLUMNS = list(KEYED_IDS)
KEY_SEED = 0x5EED
# Sorted, so that sorting by type sorts by name, as on strings.
EVENT_TYPE = pl.Enum(sorted(EVENT_TYPES))


def id_key(column: str | pl.Expr, seed: int = KEY_SEED) -> pl.Expr:
    """The 64-bit key of an id column (null stays null): Polars' hash, stable within one Polars version, which is
    all a build needs (keys never leave the process)."""
    col = pl.col(column) if isinstance(column, str) else column
    return pl.when(col.is_not_null()).then(col.hash(seed))


def with_keys(df: pl.DataFrame, seed: int = KEY_SEED) -> pl.DataFrame:
    return df.with_columns(type=pl.col("type").cast(EVENT_TYPE),
                           **{key: id_key(name, seed) for key, name in KEYED_IDS.items()})


@dataclass
class QuarantinedLine:
    source: str
    line: int
    field: str
    reason: str
    raw: str

    def to_dict(self) -> dict:
        return {"source": self.source, "line": self.line, "field": self.field, "reason": self.reason,
                "raw": self.raw}


class Quarantine:
    """Quarantined lines in the order they were found. The first `memory_lines` stay in memory (the first errors,
    which strict mode names); with a folder, the rest go to a JSON-lines file there as they come, so a log with
    many bad lines (each kept raw, up to 100 KB) does not fill memory. Iterating gives them all, in order."""

    MEMORY_LINES = 1000

    def __init__(self, folder: str | os.PathLike | None = None, memory_lines: int | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.memory_lines = self.MEMORY_LINES if memory_lines is None else memory_lines
        self.first: list[QuarantinedLine] = []
        self.path: Path | None = None  # the file of the rest, once there is a rest
        self._file = None
        self._count = 0

    def append(self, q: QuarantinedLine) -> None:
        self._count += 1
        if self.folder is None or len(self.first) < self.memory_lines:
            self.first.append(q)
            return
        if self._file is None:
            import tempfile

            fd, name = tempfile.mkstemp(prefix="quarantine-", suffix=".jsonl", dir=self.folder)
            self._file, self.path = os.fdopen(fd, "wb"), Path(name)
        self._file.write(orjson.dumps(q.to_dict()) + b"\n")

    def close(self) -> None:
        """Done appending: the file, if any, is complete and closed."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> QuarantinedLine:
        return self.first[i]

    def __iter__(self) -> Iterator[QuarantinedLine]:
        yield from self.first
        if self.path is not None:
            if self._file is not None:
                self._file.flush()
            yield from quarantine_file(self.path)


def quarantine_file(path: str | os.PathLike) -> Iterator[QuarantinedLine]:
    """The entries of a quarantine file (`Quarantine.path`), one at a time."""
    with open(path, "rb") as f:
        for line in f:
            yield QuarantinedLine(**orjson.loads(line))


@dataclass
class InputFile:
    path: str
    lines: int = 0
    # The digest, or a function that waits for the hashing thread: the hash of a large log finishes while the
    # build's rules run (mostly on one core) instead of holding up the read.
    digest: str | Callable[[], str] = ""

    @property
    def sha256(self) -> str:
        if callable(self.digest):
            self.digest = self.digest()
        return self.digest


@dataclass
class ReadResult:
    """Everything the reader saw: valid events, quarantined lines, and lines filtered before parsing."""

    events: pl.DataFrame
    quarantine: Quarantine = field(default_factory=Quarantine)
    inputs: list[InputFile] = field(default_factory=list)
    # With `read_events(..., spill_dir=...)`: the files the text columns of `events` are mapped from.
    texts: TextSpill | None = None
    lines_read: int = 0
    key_seed: int = KEY_SEED  # of the KEY_COLUMNS, where the table has them
    blank_lines: int = 0
    oversized: list[tuple[str, int, int]] = field(default_factory=list)  # (source, line, bytes)

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files, folders (searched recursively for capture logs), globs and fsspec URLs -> a sorted, unique file list."""
    out: list[str] = []
    for raw in paths:
        p = str(raw)
        if "://" in p and not p.startswith("file://"):
            out.extend(_expand_url(p))
            continue
        p = p.removeprefix("file://")
        if any(ch in p for ch in "*?["):
            matches = sorted(m for m in globlib.glob(p, recursive=True) if os.path.isfile(m))
            if not matches:
                raise FileNotFoundError(f"{p}: the pattern matches no file")
            out.extend(matches)
        elif os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and _is_capture_file(f.name))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no capture log ({', '.join(INPUT_SUFFIXES)})")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file, folder or pattern")
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _is_capture_file(name: str) -> bool:
    return name.endswith(INPUT_SUFFIXES) and not name.endswith(".turns.jsonl")


def _expand_url(url: str) -> list[str]:
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(url)
    if any(ch in url for ch in "*?["):
        return sorted(fs.unstrip_protocol(p) for p in paths)
    if fs.isdir(paths[0]):
        return sorted(fs.unstrip_protocol(p) for p in fs.find(paths[0]) if _is_capture_file(p))
    return [url]


def _open_binary(path: str):
    if "://" in path and not path.startswith("file://"):
        import fsspec

        f = fsspec.open(path, "rb").open()
    else:
        f = open(path.removeprefix("file://"), "rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=f)
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)
    return f


def iter_line_blocks(path: str, block_bytes: int = BLOCK_BYTES) -> Iterator[list[bytes]]:
    """Lines of a (possibly compressed, possibly remote) file, in blocks of about `block_bytes`."""
    with _open_binary(path) as f:
        yield from _line_blocks(f, block_bytes)


def _line_blocks(f, block_bytes: int, limit: int | None = None) -> Iterator[list[bytes]]:
    """Split what `f` reads (at most `limit` bytes) into lists of lines; a last line without a newline counts."""
    rest = b""
    left = limit
    while left is None or left > 0:
        chunk = f.read(block_bytes if left is None else min(block_bytes, left))
        if not chunk:
            break
        if left is not None:
            left -= len(chunk)
        # Split first, then mend the line cut by the previous read: no copy of the whole chunk.
        lines = chunk.split(b"\n")
        del chunk
        lines[0] = rest + lines[0]
        rest = lines.pop()
        if lines:
            yield lines
    if rest:
        yield [rest]


def _raw_text(line: bytes, limit: int = 100_000) -> str:
    # The quarantine file keeps the raw line; bytes that are not UTF-8 survive as \x.. escapes.
    text = line[:limit].decode("utf-8", errors="backslashreplace")
    return text if len(line) <= limit else text + f"...[{len(line) - limit} more bytes]"


class _BlockParser:
    """Checks lines one by one and, in the same pass, appends each valid event's fields to flat column lists that
    become Arrow arrays once per block (cheaper than a second parse: Polars' NDJSON reader spends most of its time
    on the nested `messages`)."""

    def __init__(self, source: str, max_line_bytes: int, result: ReadResult, fast: bool | None = None,
                 keys: bool = False):
        self.source = source
        self.max_line_bytes = max_line_bytes
        self.result = result
        self.fast = FAST_PATH if fast is None else fast
        self.keys = keys

    def parse(self, lines: list[bytes], first_line: int) -> pl.DataFrame | None:
        df = self._parse_block(lines, first_line)
        return with_keys(df) if self.keys and df is not None else df

    def _parse_block(self, lines: list[bytes], first_line: int) -> pl.DataFrame | None:
        # The loop allocates millions of short-lived containers; Python's cyclic GC would rescan the growing
        # column lists again and again (it doubled the read time). Nothing here makes cycles.
        enabled = gc.isenabled()
        gc.disable()
        try:
            if self.fast:
                return self._parse_fast(lines, first_line)
            return self._parse(lines, first_line)
        finally:
            if enabled:
                gc.enable()

    def _parse_fast(self, lines: list[bytes], first_line: int) -> pl.DataFrame | None:
        """msgspec decodes the lines it can certify (`data.fastread`); the rest go through `_parse`, which gives
        the same rows for valid lines and the quarantine entries, blank and oversized counts for the others."""
        from data import fastread

        records, taken, left = fastread.decode_lines(lines, self.max_line_bytes)
        back = fastread.resolve_params(records)
        if back:
            gone = set(back)
            left = sorted(left + [taken[k] for k in back])
            records = [r for k, r in enumerate(records) if k not in gone]
            taken = [i for k, i in enumerate(taken) if k not in gone]
        fast = self._records_table(records, [first_line + i for i in taken]) if records else None
        slow = self._parse([lines[i] for i in left], first_line, [first_line + i for i in left]) if left else None
        if slow is None:
            return fast
        if fast is None:
            return slow
        return pl.concat([fast, slow]).sort("line")  # rare: a valid line only the Python path reads

    def _records_table(self, records: list, numbers: list[int]) -> pl.DataFrame:
        from itertools import accumulate, chain
        from operator import attrgetter

        from data.fastread import COLUMNS

        values = zip(*map(attrgetter(*COLUMNS), records))
        cols = {name.replace("model.", "model_").replace("type_name", "type"): v for name, v in zip(COLUMNS, values)}
        cols["extra"] = [None] * len(records)
        cols["line"] = numbers
        msgs = [r.messages for r in records]
        has_msgs = [m is not None for m in msgs]
        flat = list(chain.from_iterable(m for m in msgs if m is not None))
        offsets = list(accumulate((len(m) if m is not None else 0 for m in msgs), initial=0))
        tags = [r.tags for r in records]
        tag_values = list(chain.from_iterable(t for t in tags if t is not None))
        tag_offsets = list(accumulate((len(t) if t is not None else 0 for t in tags), initial=0))
        return self._table(cols, list(map(attrgetter("role"), flat)), list(map(attrgetter("content"), flat)),
                           offsets, has_msgs, tag_values, tag_offsets, [t is not None for t in tags])

    def _parse(self, lines: list[bytes], first_line: int, numbers: list[int] | None = None) -> pl.DataFrame | None:
        cols: dict[str, list] = {name: [] for name in _FLAT}
        a = {name: cols[name].append for name in _FLAT}
        roles: list[str] = []
        contents: list[str] = []
        offsets = [0]
        has_msgs: list[bool] = []
        # List columns are passed flat (values + offsets): building them from Python lists costs a Series each.
        tag_values: list[str] = []
        tag_offsets = [0]
        has_tags: list[bool] = []
        n_tags = 0
        a_type, a_eid, a_ts, a_user, a_sess = a["type"], a["event_id"], a["ts"], a["user_id"], a["session_id"]
        a_ten, a_req, a_gen, a_out = a["tenant"], a["request_id"], a["generation_id"], a["output"]
        a_edit, a_base, a_rev, a_adp, a_val = (a["edited_output"], a["model_base"], a["model_revision"],
                                               a["model_adapter"], a["value"])
        a_com, a_new, a_par, a_ext, a_line = a["comment"], a["new_request_id"], a["params"], a["extra"], a["line"]
        loads = orjson.loads
        dumps = orjson.dumps
        known = _KNOWN_FIELDS
        quarantine = self.result.quarantine
        max_bytes = self.max_line_bytes
        n_msgs = 0
        for i, line in enumerate(lines):
            num = first_line + i if numbers is None else numbers[i]
            if len(line) > max_bytes:
                self.result.oversized.append((self.source, num, len(line)))
                continue
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():
                    self.result.blank_lines += 1
                    continue
                reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else f"not valid JSON ({exc})"
                quarantine.append(QuarantinedLine(self.source, num, "$", reason, _raw_text(line)))
                continue
            field_, reason, ts = check_event(obj)
            if field_ is not None:
                quarantine.append(QuarantinedLine(self.source, num, field_, reason, _raw_text(line)))
                continue
            get = obj.get
            t = obj["type"]
            a_type(t)
            a_eid(obj["event_id"])
            a_ts(ts)
            a_user(obj["user_id"])
            a_sess(obj["session_id"])
            a_ten(get("tenant"))
            tags = get("tags")
            if tags is not None:
                tag_values.extend(tags)
                n_tags += len(tags)
            tag_offsets.append(n_tags)
            has_tags.append(tags is not None)
            a_req(get("request_id"))
            a_gen(get("generation_id"))
            a_line(num)
            if t == "generation":
                a_out(obj["output"])
                model = obj["model"]
                a_base(model["base"])
                a_rev(model.get("revision"))
                a_adp(model.get("adapter"))
                for m in obj["messages"]:
                    roles.append(m["role"])
                    contents.append(m["content"])
                n_msgs += len(obj["messages"])
                has_msgs.append(True)
                params = get("params")
                a_par(dumps(params).decode() if params is not None else None)
            else:
                a_out(None)
                a_base(None)
                a_rev(None)
                a_adp(None)
                has_msgs.append(False)
                a_par(None)
            offsets.append(n_msgs)
            a_edit(get("edited_output"))
            a_val(get("value"))
            a_com(get("comment"))
            a_new(get("new_request_id"))
            if len(obj) > 8 and not known.issuperset(obj):
                a_ext(dumps({k: obj[k] for k in sorted(obj.keys() - known)}).decode())
            else:
                a_ext(None)
        if not cols["type"]:
            return None
        return self._table(cols, roles, contents, offsets, has_msgs, tag_values, tag_offsets, has_tags)

    def add_rows(self, rows: list[dict], first_line: int) -> pl.DataFrame | None:
        """Parquet rows (already decoded): the same checks and extraction as JSON lines."""
        lines = []
        for row in rows:
            row = {k: v for k, v in row.items() if v is not None}
            if "ts" in row and hasattr(row["ts"], "timestamp"):
                dt = row["ts"] if row["ts"].tzinfo else row["ts"].replace(tzinfo=_UTC)
                row["ts"] = int(dt.timestamp() * 1000)
            lines.append(orjson.dumps(row, default=str))
        return self.parse(lines, first_line)

    def _table(self, cols, roles, contents, offsets, has_msgs, tag_values, tag_offsets, has_tags) -> pl.DataFrame:
        # Series are built by Polars, not pyarrow.array(): the latter imports pandas on first use (about a second).
        import pyarrow as pa

        values = pl.DataFrame({"role": pl.Series(roles, dtype=pl.String),
                               "content": pl.Series(contents, dtype=pl.String)}) \
            .to_struct("m").to_arrow(compat_level=_VIEWS)
        mask = (~pl.Series(has_msgs, dtype=pl.Boolean)).to_arrow()
        messages = pa.ListArray.from_arrays(pl.Series(offsets, dtype=pl.Int32).to_arrow(), values, mask=mask)
        n = len(has_msgs)
        data = {name: pl.Series(name, cols[name], dtype=_POLARS_TYPES[name]) for name in _FLAT}
        data["messages"] = pl.from_arrow(messages).alias("messages")
        tags = pa.ListArray.from_arrays(pl.Series(tag_offsets, dtype=pl.Int32).to_arrow(),
                                        pl.Series(tag_values, dtype=pl.String).to_arrow(compat_level=_VIEWS),
                                        mask=(~pl.Series(has_tags, dtype=pl.Boolean)).to_arrow())
        data["tags"] = pl.from_arrow(tags).alias("tags")
        data["source"] = pl.repeat(self.source, n, dtype=pl.String, eager=True).alias("source")
        return pl.DataFrame([data[name] for name in EVENT_COLUMNS])


from datetime import timezone as _tz  # noqa: E402

_UTC = _tz.utc
# Arrow string views are Polars' own layout: handing them back through Arrow copies no text (3x faster here).
_VIEWS = pl.CompatLevel.newest()
_FLAT = [c for c in EVENT_COLUMNS if c not in ("messages", "source", "tags")]
_POLARS_TYPES = {name: pl.String for name in _FLAT}
_POLARS_TYPES.update(ts=pl.Int64, line=pl.Int64, value=pl.Int8, tags=pl.List(pl.String))
_KNOWN_FIELDS = frozenset(
    ["event_id", "type", "ts", "session_id", "user_id", "tenant", "tags", "generation_id", "request_id",
     "messages", "output", "model", "params", "edited_output", "value", "comment", "new_request_id"]
)


def empty_events(keys: bool = False) -> pl.DataFrame:
    schema = {
        "type": pl.String, "event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "session_id": pl.String,
        "tenant": pl.String, "tags": pl.List(pl.String), "request_id": pl.String, "generation_id": pl.String,
        "messages": pl.List(MESSAGE), "output": pl.String, "edited_output": pl.String, "model_base": pl.String,
        "model_revision": pl.String, "model_adapter": pl.String, "value": pl.Int8, "comment": pl.String,
        "new_request_id": pl.String, "params": pl.String, "extra": pl.String, "source": pl.String,
        "line": pl.Int64,
    }
    empty = pl.DataFrame(schema=schema)
    return with_keys(empty) if keys else empty


def read_events(
    paths: Iterable[str | os.PathLike] | str,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    hash_inputs: bool = True,
    progress=None,
    workers: int | None = None,
    fast: bool | None = None,
    spill_dir: str | os.PathLike | None = None,
    keys: bool = False,
) -> ReadResult:
    """Read every input; return valid events (one row each, in input order), quarantined lines and counts.

    A large plain local JSONL file is split at line boundaries into `workers` byte ranges (default: the CPU count,
    at most 4) read in parallel, one range in this process and the others in spawned processes. `fast` chooses
    the msgspec path with the Python path for the lines it leaves (default when msgspec is installed) or the
    Python path for every line; both give the same result. With `spill_dir`, the texts
    (`data.textspill.SPILLED_COLUMNS`) are written there block by block as they are read and mapped back at the
    end: memory holds only the other columns, and `result.texts` gathers texts without keeping their pages.
    With `keys`, the table also has `KEY_COLUMNS` (64-bit keys of the ids), `type` is an Enum and `source` an Enum
    of the files read: the compact form the build's rules work on."""
    fast = FAST_PATH if fast is None else fast
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = expand_inputs(paths)
    workers = workers or min(os.cpu_count() or 1, 4)
    result = ReadResult(events=empty_events(keys), quarantine=Quarantine(spill_dir))
    spill = TextSpill(spill_dir) if spill_dir is not None else None
    # Each frame read, with the number of the line before its first (a range read by a subprocess counts its
    # lines from 1) and its file.
    pieces: list[tuple[pl.DataFrame, int, str]] = []
    # One small integer per row instead of the file's name (the same for millions of rows).
    source = pl.Enum(files) if keys else pl.String
    # A thread keeps the pages of the spill's files that the read maps back under a bound (TextSpill.paging).
    with spill.paging() if spill is not None else contextlib.nullcontext():
        for path in files:
            info = InputFile(path=path)
            if workers > 1 and _splittable(path) and not path.endswith(".parquet"):
                pieces.extend((frame, offset, path) for frame, offset in _read_parallel(
                    path, max_line_bytes, workers, result, info, progress, fast, spill, keys))
            else:
                segment = spill.segment(numbers=True) if spill is not None else None
                blocks = read_blocks(path, result, info, max_line_bytes, progress, fast, keys)
                if segment is None:
                    pieces.extend((df, 0, path) for df in blocks)
                else:
                    for df in blocks:
                        segment.take(df)  # texts and numbers to files: the reader holds one block
                    segment.close()
                    numbers = spill.map_numbers(segment.numbers_files())
                    if numbers is not None:
                        pieces.append((numbers, 0, path))
            # Hashed after it was parsed (from the page cache), on a thread: it overlaps the next file and the
            # build's rules, which leave a core free, rather than the parse, which keeps both busy.
            info.digest = _start_hash(path) if hash_inputs else ""
            result.lines_read += info.lines
            result.inputs.append(info)
        if pieces:
            # With a spill, the line numbers and the files are made a frame at a time straight into files: made
            # in memory for the whole read, they cost 8 and 1 bytes an event until held.
            made_on_disk = spill is not None and keys and ENUM_FROM_CODES
            if made_on_disk:
                codes = pl.Series(dtype=source).to_physical().dtype
                line = spill.hold_pieces("column-line", (
                    chunk + offset for df, offset, _ in pieces for chunk in df["line"].get_chunks()),
                    pl.Int64).alias("line")
                files_column = spill.hold_pieces("column-source", (
                    pl.repeat(files.index(path), len(chunk), dtype=codes, eager=True)
                    for df, _, path in pieces for chunk in df["line"].get_chunks()), codes)
                files_column = files_column.cat.to(source).alias("source")
                frames = [df.drop("line", "source") for df, _, _ in pieces]
            else:
                frames = [df.with_columns(pl.col("line") + offset, source=pl.lit(path, dtype=source))
                          for df, offset, path in pieces]
            del pieces
            events = pl.concat(frames, how="vertical", rechunk=False)
            del frames
            # One contiguous buffer per column: the build gathers rows by number, ~10x slower over many chunks.
            # Column by column, so only one column is ever held twice. With a spill, the other columns (times, line
            # numbers, keys, types, values, files) go to disk too and are mapped back: nothing of an event stays in
            # memory.
            for name in events.columns:
                if spill is not None:
                    events = spill.hold(events, [name])
                    spill.release_over(WINDOW_RELEASE_BYTES)  # the pages of the ranges' files this column was read from
                else:
                    events = events.with_columns(events.get_column(name).rechunk())
            if made_on_disk:
                events = events.with_columns(line, files_column)
            if spill is not None:
                events = pl.concat([events, spill.open(len(events))], how="horizontal")
            events = events.select(EVENT_COLUMNS + (KEY_COLUMNS if keys else []))
            result.events = events
    result.texts = spill
    return result


def read_blocks(path: str, result: ReadResult, info: InputFile, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                progress=None, fast: bool | None = None, keys: bool = False) -> Iterator[pl.DataFrame]:
    """One file's valid events a block at a time, read in this process. Its quarantined, blank and oversized
    lines go to `result`, its line count to `info`."""
    parser = _BlockParser(path, max_line_bytes, result, fast, keys)
    return _read_parquet(path, parser, info) if path.endswith(".parquet") else \
        _read_lines(path, parser, info, progress)


def _read_lines(path: str, parser: _BlockParser, info: InputFile, progress) -> Iterator[pl.DataFrame]:
    for lines in iter_line_blocks(path):
        df = parser.parse(lines, info.lines + 1)
        info.lines += len(lines)
        if df is not None:
            yield df
        if progress is not None:
            progress(len(lines))


PARALLEL_MIN_BYTES = 64 << 20


def _splittable(path: str) -> bool:
    local = "://" not in path or path.startswith("file://")
    return (local and not path.endswith((".gz", ".zst"))
            and os.path.getsize(path.removeprefix("file://")) >= PARALLEL_MIN_BYTES)


def _range_starts(path: str, parts: int) -> list[int]:
    """Byte offsets that start a line, cutting the file into about `parts` equal ranges."""
    size = os.path.getsize(path)
    starts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(size * k // parts - 1, starts[-1]))
            f.readline()
            pos = f.tell()
            if pos < size and pos > starts[-1]:
                starts.append(pos)
    return starts + [size]


def _iter_range_blocks(path: str, start: int, end: int, block_bytes: int = BLOCK_BYTES) -> Iterator[list[bytes]]:
    with open(path, "rb") as f:
        f.seek(start)
        yield from _line_blocks(f, block_bytes, limit=end - start)


def _read_range(path: str, start: int, end: int, max_line_bytes: int, progress=None, fast: bool = True,
                segment: SegmentWriter | None = None, keys: bool = False,
                quarantine: Quarantine | None = None) -> dict:
    """One byte range of a file, with line numbers counted from the range's first line (1-based); with `segment`,
    the text columns go to its file, and the rest to the table or, if it takes numbers too, to its number files.
    Its quarantined lines go to `quarantine`."""
    result = ReadResult(events=empty_events(), quarantine=quarantine if quarantine is not None else Quarantine())
    parser = _BlockParser(path, max_line_bytes, result, fast, keys)
    frames = []
    n = 0
    for lines in _iter_range_blocks(path, start, end):
        df = parser.parse(lines, n + 1)
        n += len(lines)
        if df is not None:
            rest = segment.take(df) if segment is not None else df
            if rest is not None:
                frames.append(rest)
        if progress is not None:
            progress(len(lines))
    if segment is not None:
        segment.close()
    events = pl.concat(frames, how="vertical", rechunk=False) if frames else None
    # With a segment that writes numbers too, the range's table is in those files (`numbers`), not in `events`.
    numbers = [str(p) for p in segment.numbers_files()] if segment is not None else []
    return {"events": events, "numbers": numbers, "quarantine": result.quarantine, "blank": result.blank_lines,
            "oversized": result.oversized, "lines": n}


def _range_worker_main(argv: list[str]) -> None:
    """Entry point of a reader subprocess: read one byte range, leave the table and the rest in `outdir`."""
    path, start, end, max_line_bytes, outdir = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    segment = SegmentWriter(argv[6], numbers=True) if argv[6] != "-" else None
    quarantine = Quarantine(outdir, memory_lines=0)  # every entry to a file, none held

    def report(lines: int) -> None:  # to the build's process (`_relay_progress`)
        import sys

        sys.stdout.write(f"{lines}\n")
        sys.stdout.flush()

    part = _read_range(path, start, end, max_line_bytes, progress=report if argv[8] == "progress" else None,
                       fast=argv[5] == "fast", segment=segment, keys=argv[7] == "keys", quarantine=quarantine)
    if part["events"] is not None:
        part["events"].write_ipc(outdir / "events.arrow", compression="uncompressed")
    quarantine.close()
    meta = {"quarantine": str(quarantine.path) if quarantine.path else None, "blank": part["blank"],
            "oversized": part["oversized"], "lines": part["lines"], "numbers": part["numbers"]}
    (outdir / "meta.json").write_bytes(orjson.dumps(meta))


def _handover_dir(file_bytes: int) -> str | None:
    """Where reader subprocesses leave their tables: shared memory when it has room for twice the file (writing
    them to a disk-backed /tmp cost ~2.5 CPU-s a GB of kernel time on the development machine, ten times more than
    tmpfs; containers often give /dev/shm only 64 MB), else the default temporary folder."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    room = st.f_bavail * st.f_frsize
    return "/dev/shm" if room >= 2 * file_bytes and os.access("/dev/shm", os.W_OK) else None


def _read_parallel(path: str, max_line_bytes: int, workers: int, result: ReadResult, info: InputFile,
                   progress, fast: bool, spill: TextSpill | None = None,
                   keys: bool = False) -> list[tuple[pl.DataFrame, int]]:
    """Each range in a plain subprocess (not multiprocessing: spawn would re-run the caller's __main__, fork does
    not mix with Polars' threads), which hands back its table in files and reports its lines as it goes. Returns each
    range's frame with the number of the file's line before the range's first (its lines count from 1)."""
    import subprocess
    import sys
    import tempfile

    local = path.removeprefix("file://")
    starts = _range_starts(local, workers)
    ranges = list(zip(starts[:-1], starts[1:]))
    with tempfile.TemporaryDirectory(prefix="flywheel-read-", dir=_handover_dir(os.path.getsize(local))) as tmp:
        # Every range, the first too, is parsed by a subprocess: a parse in this process leaves ~26 MB behind in
        # its allocators for the rest of the build (docs/performance.md, session 11), and this process would only
        # wait for the others at the end anyway. The texts and numbers of each range go to files, in row order.
        procs = []
        for k, (a, b) in enumerate(ranges):
            out = Path(tmp) / str(k)
            out.mkdir()
            code = "import sys; from data.events import _range_worker_main; _range_worker_main(sys.argv[1:])"
            with open(out / "stderr", "wb") as err:
                procs.append((out, subprocess.Popen(
                    [sys.executable, "-c", code, local, str(a), str(b), str(max_line_bytes), str(out),
                     "fast" if fast else "python", str(spill.segment_path()) if spill is not None else "-",
                     "keys" if keys else "-", "progress" if progress is not None else "-"],
                    cwd=str(Path(__file__).resolve().parents[1]), stderr=err,
                    stdout=subprocess.PIPE if progress is not None else subprocess.DEVNULL)))
        if progress is not None:
            _relay_progress([proc for _, proc in procs], progress)
        parts = []
        for out, proc in procs:
            proc.wait()
            if proc.returncode != 0:
                err = (out / "stderr").read_bytes()
                raise RuntimeError(f"reader subprocess for {path} failed:\n{err.decode(errors='replace')[-2000:]}")
            meta = orjson.loads((out / "meta.json").read_bytes())
            events = pl.read_ipc(out / "events.arrow") if (out / "events.arrow").exists() else None
            parts.append({"events": events, "numbers": meta["numbers"],
                          "quarantine": quarantine_file(meta["quarantine"]) if meta["quarantine"] else [],
                          "blank": meta["blank"], "oversized": [tuple(o) for o in meta["oversized"]],
                          "lines": meta["lines"]})
        # Inside the folder: the subprocesses' quarantine files are read here, an entry at a time.
        frames = []
        for part in parts:
            offset = info.lines
            events = part["events"] if part["events"] is not None else (
                spill.map_numbers(part["numbers"]) if spill is not None else None)
            if events is not None:
                frames.append((events, offset))
            for q in part["quarantine"]:
                q.source, q.line = path, q.line + offset
                result.quarantine.append(q)
            result.blank_lines += part["blank"]
            result.oversized.extend((path, line + offset, size) for _, line, size in part["oversized"])
            info.lines += part["lines"]
    return frames


def _relay_progress(procs: list, progress) -> None:
    """Pass on the lines the reader subprocesses report (a count a line on their stdout) until all have ended."""
    import selectors

    with selectors.DefaultSelector() as selector:
        for proc in procs:
            selector.register(proc.stdout, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                line = key.fileobj.readline()
                if line:
                    progress(int(line))
                else:  # the subprocess ended
                    selector.unregister(key.fileobj)
                    key.fileobj.close()


def _start_hash(path: str):
    """Hash the file on a thread (hashlib releases the GIL on large buffers); return a function waiting for it."""
    import concurrent.futures as cf

    pool = cf.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(_hash_file(path))
    pool.shutdown(wait=False)
    return future.result


def _hash_file(path: str):
    from flywheel.files import sha256_file

    if "://" in path and not path.startswith("file://"):
        import hashlib

        def remote() -> str:
            h = hashlib.sha256()
            with _open_binary_raw(path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            return h.hexdigest()

        return remote
    return lambda: sha256_file(path.removeprefix("file://"))


def _open_binary_raw(path: str):
    import fsspec

    return fsspec.open(path, "rb").open()


def _read_parquet(path: str, parser: _BlockParser, info: InputFile) -> Iterator[pl.DataFrame]:
    import pyarrow.parquet as pq

    with _open_binary_raw(path) if "://" in path else open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=65536):
            rows = batch.to_pylist()
            df = parser.add_rows(rows, info.lines + 1)
            info.lines += len(rows)
            if df is not None:
                yield df


def event_to_dict(row: dict) -> dict:
    """A row of the event table back to the capture-event JSON object (for quarantine and orphan files)."""
    out: dict = {}
    for k in ("event_id", "type", "ts", "session_id", "user_id", "tenant", "tags", "generation_id", "request_id",
              "messages", "output", "edited_output", "value", "comment", "new_request_id"):
        if row.get(k) is not None:
            out[k] = row[k]
    if row.get("model_base") is not None:
        out["model"] = {"base": row["model_base"], "revision": row.get("model_revision"),
                        "adapter": row.get("model_adapter")}
    if row.get("params"):
        out["params"] = orjson.loads(row["params"])
    if row.get("extra"):
        out.update(orjson.loads(row["extra"]))
    return out


def load_events(paths: Iterable[str | os.PathLike] | str, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                dedupe: bool = True) -> pl.DataFrame:
    """All valid capture events of `paths` as one Polars DataFrame, one row per event, in input order.

    Invalid lines are skipped (use `read_events` or `data.validate.validate_paths` to see them). With `dedupe`,
    exact repeats of an event (same event_id, same content) are dropped, keeping the first; events that share an
    event_id with *different* content are all kept (the build quarantines them). Forget requests are *not*
    applied: filter out `user_id`s that have a `forget` event if you report on people.

    Columns (null where the event type has no such field):
      type            str   generation | edit | regenerate | accept | rating | rephrase | abandon | forget
      event_id        str   idempotency key
      ts              i64   milliseconds since the Unix epoch, UTC (RFC 3339 strings are converted)
      user_id         str
      session_id      str
      tenant          str   nullable
      tags            list[str]  nullable
      request_id      str   generation, rephrase, abandon (the turn; regenerations share it)
      generation_id   str   generation and the feedback on it (edit, regenerate, accept, rating)
      messages        list[struct{role: str, content: str}]   generation only; ends with the user's turn
      output          str   generation only
      edited_output   str   edit only
      model_base      str   generation only (model.base)
      model_revision  str   generation only, nullable
      model_adapter   str   generation only, nullable (null = the base model without adapter)
      value           i8    rating only: +1 or -1
      comment         str   rating only, nullable
      new_request_id  str   rephrase only: the turn that replaced `request_id`
      params          str   generation's `params` as JSON text, nullable
      extra           str   fields outside the v1 contract, as a JSON object text, nullable
      source          str   input file
      line            i64   1-based line (or Parquet row) number in `source`

    Feedback rows carry no model: join them to their generation on `generation_id` (or `request_id` for
    rephrase/abandon) to attribute them to a model version, e.g. per-model accept/edit/regenerate rates.
    """
    events = read_events(paths, max_line_bytes=max_line_bytes, hash_inputs=False).events
    if dedupe:
        from data.rules import dedupe_events

        repeated, _ = dedupe_events(events.with_row_index("row"))
        if len(repeated):
            events = events.with_row_index("row").filter(~pl.col("row").is_in(repeated.implode())).drop("row")
    return events


__all__ = [
    "EVENT_TYPES", "EVENT_COLUMNS", "ReadResult", "QuarantinedLine", "InputFile", "expand_inputs", "read_events",
    "load_events", "empty_events",
]
