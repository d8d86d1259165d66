"""`flywheel data build`: capture logs -> SFT, DPO and KTO datasets, with every input line accounted for.

The pipeline, top to bottom (each step a small function over Polars tables that reports what it drops and why):

    read -> dedupe events -> link feedback to generations (orphans) -> forget -> tenant -> supersede -> redact
         -> build examples (SFT, DPO, KTO) -> filters -> conflicts and duplicates -> split -> write

Supersede and the example rules see one turn at a time: they run over buckets of whole turns (`TURN_BUCKET_ROWS`).

Accounting: every line read is exactly one of used (an event some kept example was built from, or an applied
forget request), dropped (with a named reason), duplicate, or quarantined. `account()` checks that the numbers add
up and raises `AccountingError` if they ever do not.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import accumulate, chain
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import polars as pl

from data import rules
from data.config import BuildConfig
from data.events import KEYED_IDS, Quarantine, QuarantinedLine, ReadResult, id_key, read_events
from data.records import FEEDBACK_ON_GENERATION, SCHEMA_VERSION, parse_ts
from data.rules import Drops

KINDS = ("sft", "dpo", "kto")
EXAMPLE_REASONS = rules.EXAMPLE_REASONS


class BuildError(RuntimeError):
    pass


class TenantError(BuildError):
    pass


class AccountingError(BuildError):
    pass


class StrictModeError(BuildError):
    pass


class KeyCollision(BuildError):
    pass


@dataclass
class BuildState:
    """What the steps hand each other: the events still in play and everything set aside so far."""

    config: BuildConfig
    read: ReadResult
    drops: Drops = field(default_factory=Drops)
    duplicates: int = 0
    applied: pl.Series | None = None  # forget rows (used: they were applied)
    # Conflicting duplicates the rules set aside (the read's quarantined lines are `read.quarantine`).
    conflicts: Quarantine = field(default_factory=Quarantine)
    redactions: dict[str, int] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    orphans: pl.Series | None = None  # event rows
    dedupe_rows: pl.Series | None = None
    event_counts: dict[str, int] = field(default_factory=dict)  # unique valid events by type
    texts: pl.DataFrame | None = None  # the full event table (texts redacted if asked), indexed by row
    timings: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of this process (all threads) per stage
    key_collisions: list[str] = field(default_factory=list)  # each made the build compute the id keys again

    @property
    def quarantined(self) -> int:
        return len(self.read.quarantine) + len(self.conflicts)

    def quarantine(self) -> Iterator[QuarantinedLine]:
        """Every quarantined line: the read's, then the conflicting duplicates."""
        return chain(self.read.quarantine, self.conflicts)


def _resolve_config(config: BuildConfig | dict | str | Path | None, overrides: dict) -> BuildConfig:
    if config is None:
        cfg = BuildConfig()
    elif isinstance(config, BuildConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = BuildConfig.from_dict(config)
    else:
        cfg = BuildConfig.from_yaml(config)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return cfg.replace(**overrides) if overrides else cfg


def build_datasets(
    inputs: list[str] | str,
    out: str | Path,
    config: BuildConfig | dict | str | Path | None = None,
    progress: Callable[[str, int], None] | None = None,  # (stage, lines read since the last call)
    **overrides: Any,
) -> dict:
    """Build `out/{sft,dpo,kto}` (DatasetDicts), `manifest.json`, `quarantine.jsonl`, `orphans.jsonl`, `README.md`.

    `config` is a BuildConfig, a dict or a YAML path; keyword `overrides` replace single fields (None = keep).
    Returns the manifest. Raises TenantError (several tenants, none chosen), StrictModeError (strict and a line
    was quarantined), AccountingError (the books do not balance: a bug, never silenced).
    """
    cfg = _resolve_config(config, overrides)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The event texts wait on disk beside the output (data.textspill): memory holds ids and row numbers only.
    try:
        with _spill_folder(out) as spill_dir:
            return _build(inputs, out, cfg, progress, spill_dir)
    except OSError as exc:
        if exc.errno != errno.ENOSPC and "No space left" not in str(exc):
            raise
        free = shutil.disk_usage(out.parent).free
        raise BuildError(
            f"{out.parent}: no space left on device while building {out.name} ({free / 1e6:.0f} MB free now). A "
            "build needs room beside its output for the event texts, ids and times it keeps on disk until the write "
            f"(about 1.7x the logs' size, 2.6x with redaction) and for the datasets; {out} was left as it was.") \
            from exc


@contextlib.contextmanager
def _spill_folder(out: Path):
    if not SPILL_TEXTS:
        yield None
        return
    import tempfile

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.texts-",
                                     ignore_cleanup_errors=True) as folder:
        yield folder


# False keeps every text in memory from the read to the write (the same output; tests compare the two).
SPILL_TEXTS = True


def _build(inputs: list, out: Path, cfg: BuildConfig, progress, spill_dir: str | None) -> dict:
    from flywheel.files import atomic_dir

    t0, c0 = time.perf_counter(), _cpu()
    read = read_events([str(p) for p in inputs], max_line_bytes=cfg.max_line_bytes,
                       progress=(lambda n: progress("read", n)) if progress else None, spill_dir=spill_dir,
                       keys=True)
    # From here on a thread keeps the spill's mapped pages in memory under a bound (TextSpill.paging).
    with read.texts.paging() if read.texts is not None else contextlib.nullcontext(), _arrow_system_memory(), \
            _release_after_windows(read.texts):
        state = BuildState(config=cfg, read=read, conflicts=Quarantine(spill_dir), drops=Drops(store=read.texts))
        _release(state)  # the pages the read mapped
        state.timings["read"] = time.perf_counter() - t0
        state.cpu["read"] = _cpu() - c0
        if cfg.strict and read.quarantine:
            q = read.quarantine[0]
            raise StrictModeError(f"{q.source}:{q.line}: {q.field}: {q.reason} (strict mode; "
                                  f"{len(read.quarantine)} invalid line(s) in all)")
        if progress:
            progress("rules", 0)
        for attempt in range(KEY_ATTEMPTS):
            try:
                examples = run_rules(state)
                break
            except KeyCollision as exc:
                if attempt + 1 == KEY_ATTEMPTS:
                    raise
                # Keys from another seed (the manifest says which); the rules start again from the read.
                state.key_collisions = [*state.key_collisions, str(exc)]
                read.events = rekeyed(read.events, read.key_seed + 1, read.texts)
                read.key_seed += 1
                state = BuildState(config=cfg, read=read, conflicts=Quarantine(spill_dir),
                                   drops=Drops(store=read.texts), timings=state.timings, cpu=state.cpu,
                                   key_collisions=state.key_collisions)
        manifest_base = account(state, examples)
        if progress:
            progress("write", 0)
        with atomic_dir(out) as tmp:
            t1, c1 = time.perf_counter(), _cpu()
            manifest = write_build(Path(tmp), state, examples, manifest_base)
            state.timings["write"] = time.perf_counter() - t1
            state.cpu["write"] = _cpu() - c1
            state.timings["total"] = time.perf_counter() - t0
            state.cpu["total"] = _cpu() - c0
            manifest["timings_s"] = {k: round(v, 3) for k, v in state.timings.items()}
            # Reader subprocesses not included (the benchmark adds them).
            manifest["cpu_s"] = {k: round(v, 3) for k, v in state.cpu.items()}
            from flywheel.files import write_json_atomic

            write_json_atomic(Path(tmp) / "manifest.json", manifest)
        return manifest


@contextlib.contextmanager
def _release_after_windows(texts):
    """While inside, the rules' passes over the event table hand back the mapped pages after each window
    (`rules.after_window`)."""
    if texts is None:
        yield
        return
    from data.textspill import WINDOW_RELEASE_BYTES

    before = rules.after_window
    rules.after_window = lambda: texts.release_over(WINDOW_RELEASE_BYTES)
    try:
        yield
    finally:
        rules.after_window = before


@contextlib.contextmanager
def _arrow_system_memory():
    """Arrow's allocations (the write's casts) from the C library's allocator while the build runs. Arrow's default,
    mimalloc, keeps what the write frees for reuse (~55 MB more at the peak, measured at 1M and 4M events, than the C
    library's, at no measured cost in time). glibc keeps ~60 MB of the write's freed blocks too; a fixed mmap
    threshold gave them back but cost ~1.5 s at 1M events (docs/performance.md, session 10)."""
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


@contextlib.contextmanager
def _timed(state: BuildState, name: str):
    start, cpu = time.perf_counter(), _cpu()
    try:
        yield
    finally:
        _release(state)
        state.timings[name] = state.timings.get(name, 0.0) + time.perf_counter() - start
        state.cpu[name] = state.cpu.get(name, 0.0) + _cpu() - cpu


def _release(state: BuildState) -> None:
    """Hand the mapped event columns and texts the last steps read back to the page cache (once over a limit)."""
    if state.read.texts is not None:
        state.read.texts.release_over()


def _window_release(state: BuildState):
    """A function that hands back the mapped pages once more than WINDOW_RELEASE_BYTES are in memory: for steps
    that go a slice at a time over tables mapped from disk."""
    from data.textspill import WINDOW_RELEASE_BYTES

    texts = state.read.texts
    return (lambda: texts.release_over(WINDOW_RELEASE_BYTES)) if texts is not None else (lambda: None)


def _cpu() -> float:
    return time.process_time()


def run_rules(state: BuildState) -> dict[str, pl.DataFrame]:
    """Events -> example tables (event rows + keys; `drop`: null = kept, else the reason; `split`)."""
    from data import filters

    cfg = state.config
    full = state.read.events.with_row_index("row")
    if state.read.texts is not None:  # like every column of the events (4 bytes an event)
        full = state.read.texts.hold(full, ["row"], prefix="events")
    # Per-event text features need only the texts: without redaction they are computed beside the event rules
    # (Polars releases the GIL, so the two use both cores).
    features = None if cfg.redact else _in_background(_event_features, full, state.read.texts)
    ids = [c for pair in KEYED_IDS.items() if pair[0] != "event_key" for c in pair]
    check_keys = _in_background(_check_keys, full.select(ids), state.read.texts)
    with _timed(state, "events"):
        repeated, conflicting = rules.dedupe_events(full, _rows_of(state), release=_window_release(state),
                                                    parts=max(1, -(-len(full) // LINK_PART_ROWS)))
        state.duplicates = len(repeated)
        state.dedupe_rows = pl.concat([repeated, conflicting["row"]]).cast(pl.UInt32)
        for r in conflicting.iter_rows(named=True):
            state.conflicts.append(QuarantinedLine(
                r["source"], r["line"], "event_id",
                f"conflicting duplicate: event_id {r['event_id']!r} appears with different content",
                _row_json(r)))
        if cfg.strict and len(conflicting):
            r = conflicting.row(0, named=True)
            raise StrictModeError(f"{r['source']}:{r['line']}: event_id: conflicting duplicate {r['event_id']!r}")
        # event_key served dedupe; nothing later reads it.
        full = full.drop("event_key")
        state.read.events = state.read.events.drop("event_key")
        events = full.select(rules.LIGHT_COLUMNS)  # the same columns, not a copy
        state.event_counts = dict(sorted(
            events.lazy().select("row", "type").filter(~pl.col("row").is_in(state.dedupe_rows.implode()))
            .group_by("type").len().collect().iter_rows()))
        _release(state)
        # Link, forget and tenant narrow down one mask of the rows in play (`alive`) over the same table; linking
        # leaves out the repeated and conflicting copies.
        # The mapped columns a step read are handed back after it (they are clean pages of the page cache).
        events, alive, state.orphans = rules.link_events(events, state.drops, gone=state.dedupe_rows,
                                                         parts=max(1, -(-len(events) // LINK_PART_ROWS)),
                                                         release=_window_release(state), store=_store(state))
        _release(state)
        alive, state.applied = rules.apply_forget(events, alive, state.drops, _store(state))
        alive = select_tenant(events, alive, cfg, state.drops, full, _take(state), state.read.key_seed, _store(state))
        _release(state)
        # From here on the rules are per turn: the turns go in buckets of about TURN_BUCKET_ROWS rows in play,
        # built one at a time, so that their working tables are as big as a bucket, not as the log.
        n_buckets = max(1, -(-int(alive.sum()) // TURN_BUCKET_ROWS))
        events = events.with_columns(_alive=alive)
        if n_buckets > 1:
            events = events.with_columns(_bucket=rules.turn_buckets(events, n_buckets, _store(state)))
        _release(state)
        turns, sizes, release = _collector(state, "turns"), [], _window_release(state)
        for b in range(n_buckets):
            # Which rows: an expression over the (mapped) mask and buckets, evaluated a window at a time.
            in_bucket = pl.col("_alive") & (pl.col("_bucket") == b) if n_buckets > 1 else pl.col("_alive")
            part = rules.turns_in_play(events, in_bucket, state.drops)
            sizes.append(len(part))
            turns.write(part)
            # Before the next bucket is made (a loop's variables outlive it: the last bucket's rows would be held
            # through the filters).
            del part
            release()
        del events, alive
        # The one copy of the events the rules make: the rows still in play, the columns the examples read.
        turns = turns.frame()
    if cfg.redact:
        with _timed(state, "redact"):
            from data.redact import redact_events

            full, state.redactions = redact_events(full, turns["row"], cfg.redact, state.read.texts)
    state.texts = full
    with _timed(state, "examples"):
        features = features() if features is not None else _event_features(full, state.read.texts)
        tables = {k: _collector(state, k) for k in KINDS}
        for start, size in zip(accumulate(sizes, initial=0), sizes):
            examples = rules.examples_of(turns.slice(start, size))
            for k in KINDS:  # each table let go once it is on disk
                t = rules.attach(examples.pop(k), features, k)
                if k not in cfg.kinds:
                    t = t.with_columns(drop=pl.lit("kind_not_built", rules.DROP_REASON))
                tables[k].write(t)
                del t
            release()
        # Written once, read by every later step: mapped from disk like the events. The filters and the split
        # make their labels (`drop`, `split`: a byte an example) a window at a time onto disk too. A column a file,
        # in one chunk: the columns those steps add have one chunk, and Polars copies a table whose columns'
        # chunks differ into memory to align them.
        tables = {k: _one_chunk(state, t.frame(), k) for k, t in tables.items()}
        del features, turns
    with _timed(state, "filters"):
        tables = filters.apply_filters(tables, full, cfg, _take(state), store=state.read.texts)
    with _timed(state, "split"):
        from data.split import assign_split

        tables = assign_split(tables, cfg, full, _take(state), release=_window_release(state),
                              store=state.read.texts)
    check_keys()
    # The filters' columns go (memory per example); the write orders the examples by their keys in the events.
    return {kind: t.drop(c for c in t.columns if c in FILTER_ONLY_COLUMNS) for kind, t in tables.items()}


# Events per pass of the dedupe and link steps' searches and joins (see rules.link_events).
LINK_PART_ROWS = 1_000_000
# Rows in play per turn bucket (see run_rules): what the examples stage holds in memory at once is a bucket's.
TURN_BUCKET_ROWS = 500_000


def _store(state: BuildState):
    """Where the steps put what they build in parts: the spill's files, mapped back (data.textspill), or memory."""
    return state.read.texts if state.read.texts is not None else rules.InMemory()


def _collector(state: BuildState, name: str):
    """Where a table built in parts goes: a file of the spill, mapped back (data.textspill.BatchFile), or memory."""
    return _store(state).batches(name)


def _one_chunk(state: BuildState, table: pl.DataFrame, name: str, columns: list[str] | None = None) -> pl.DataFrame:
    if state.read.texts is not None:
        return state.read.texts.hold(table, columns, prefix=name)
    return table.rechunk() if columns is None else table.with_columns(table[c].rechunk() for c in columns)


FILTER_ONLY_COLUMNS = {"_pk", "_plen", "_tlen", "_tblank", "_rk", "_rlen", "_rblank", "_conflict", "_rank"}


def _check_keys(full: pl.DataFrame, texts) -> None:
    """The rules compare ids by their 64-bit keys: make sure no two different ids of a column share one. Each id
    gets a second, independent hash; a key with two second hashes is a collision (`KeyCollision`: the build
    computes the keys again with another seed). Column by column and slice by slice, so only (key, hash) pairs
    are held; with the spill, they go to disk by part of the keys and each part is checked alone."""
    parts = max(1, -(-len(full) // LINK_PART_ROWS)) if texts is not None else 1
    for key, name in KEYED_IDS.items():
        if key not in full.columns:  # event_key: dedupe compares the event_id strings themselves
            continue
        # What waits in memory for all parts together is bounded (parts grow with the log), down to a floor
        # that keeps the files (and maps) each part makes few.
        buffer_rows = max(_Buffered.MIN_ROWS, _Buffered.TOTAL_ROWS // parts)
        by_part = [_Buffered(texts.batches(f"keys-{key}") if parts > 1 else rules.Parts(), buffer_rows)
                   for _ in range(parts)]
        for pairs in _slices(full, texts, lambda part: pl.DataFrame(
                {"k": part[key], "h": part[name].hash(0xC0FFEE)}).drop_nulls("k").unique()):
            for p, part in enumerate(by_part):
                part.write(pairs.filter(pl.col("k") % parts == p) if parts > 1 else pairs)
        for part in by_part:
            # Sorted by key and hash, a collision is a key equal to the one before with another hash. (A unique()
            # and a search for repeated keys held ten times the pairs' size.)
            pairs = part.frame().sort("k", "h")
            clash = pairs.filter((pl.col("k") == pl.col("k").shift(1)) & (pl.col("h") != pl.col("h").shift(1)))
            del pairs
            if texts is not None:
                texts.release_over()
            if len(clash):
                raise KeyCollision(f"two different values of {name} share the 64-bit key {clash['k'][0]} (a hash "
                                   "collision, about once in 10^19 pairs of ids)")


class _Buffered:
    """Parts gathered in memory up to `rows` rows, then written to `into` as one (fewer, larger files)."""

    TOTAL_ROWS = 2_000_000  # over all the buffers of one check: 32 MB of (key, hash) pairs
    MIN_ROWS = 50_000

    def __init__(self, into, rows: int):
        self.into, self.pending, self.rows, self.written, self.limit = into, [], 0, False, rows

    def write(self, part: pl.DataFrame) -> None:
        self.pending.append(part)
        self.rows += len(part)
        if self.rows >= self.limit:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.into.write(pl.concat(self.pending))
            self.written = True
        self.pending, self.rows = [], 0

    def frame(self) -> pl.DataFrame:
        self._flush()
        return self.into.frame() if self.written else pl.DataFrame(schema={"k": pl.UInt64, "h": pl.UInt64})


# Seeds tried before a build gives up on keys that collide (each try fails with a chance of ~n^2 / 2^65 for n
# distinct ids of a column: one in ~370,000 for ten million).
KEY_ATTEMPTS = 3


def rekeyed(events: pl.DataFrame, seed: int, texts) -> pl.DataFrame:
    """The event table with its keys computed from the id strings again with `seed`."""
    parts = _per_slice(events, texts, lambda part: part.select(
        **{key: id_key(name, seed) for key, name in KEYED_IDS.items()}))
    return events.with_columns(pl.concat(parts, rechunk=True)) if parts else events


FEATURE_ROWS = 100_000


def _per_slice(frame: pl.DataFrame, texts, fn) -> list:
    return list(_slices(frame, texts, fn))


def _slices(frame: pl.DataFrame, texts, fn):
    """fn over slices of FEATURE_ROWS rows of the event table. Its strings are mapped from disk (`texts`): the
    pages a slice read are handed back after it, so they never all count in memory at once."""
    from data.textspill import WINDOW_RELEASE_BYTES

    for start in range(0, len(frame), FEATURE_ROWS):
        yield fn(frame.slice(start, FEATURE_ROWS))
        if texts is not None:
            texts.release_over(WINDOW_RELEASE_BYTES)


def _event_features(full: pl.DataFrame, texts) -> pl.DataFrame:
    """`filters.event_features`, in slices when the texts are mapped from disk, each slice's written to disk as
    it is made; then mapped back a column a file (26 bytes an event, read by the examples)."""
    from data import filters

    if texts is None or len(full) <= FEATURE_ROWS:
        return filters.event_features(full)
    parts = texts.batches("feature-slice")
    for part in _slices(full, texts, filters.event_features):
        parts.write(part)
    return texts.hold(parts.frame(), prefix="feature")


def _in_background(fn, *args):
    """Start fn(*args) on a thread; return a function that waits for its result (re-raising its error)."""
    import concurrent.futures as cf

    pool = cf.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)
    return future.result


def select_tenant(events: pl.DataFrame, alive: pl.Series, cfg: BuildConfig, drops: Drops, full: pl.DataFrame,
                  take, key_seed: int, store=rules.InMemory()) -> pl.Series:
    if cfg.tenant is not None:
        key = pl.select(id_key(pl.lit(cfg.tenant, pl.String), key_seed)).item()
        return rules.drop_other_tenants(events, alive, key, drops, store)
    tenants = rules.tenants_of(events, alive)
    if len(tenants) > 1 and not cfg.all_tenants:
        # The names of the keys: one row of each tenant (only on this error path).
        first = (full.select("row", "tenant_key").filter(pl.col("tenant_key").is_in(pl.Series(list(tenants))
                 .drop_nulls().implode())).unique(subset="tenant_key", keep="first", maintain_order=True))
        names = dict(zip(first["tenant_key"].to_list(), take(full["tenant"], first["row"]).to_list()))
        listing = ", ".join(f"{names[t] if t is not None else '(no tenant)'}: {n}" for t, n in
                            sorted(tenants.items(), key=lambda kv: (-kv[1], names.get(kv[0]) or "")))
        raise TenantError(f"the input holds events of {len(tenants)} tenants ({listing}); data of different tenants "
                          "is never mixed by accident: pass --tenant T (or tenant: T) for one, or --all-tenants")
    return alive


def _row_json(r: dict) -> str:
    from data.events import event_to_dict

    return orjson.dumps(event_to_dict(r)).decode()


def account(state: BuildState, tables: dict[str, pl.DataFrame]) -> dict:
    """Give every line one fate; check read = used + dropped + duplicate + quarantined. Works on flags of event
    rows (a byte an event, in files of the spill where the build has one) and counts, one table column at a time:
    no table and no array as long as the log is built in memory."""
    import numpy as np

    read = state.read
    n_events = len(read.events)
    release = _window_release(state)

    def flags_of(name: str, rows: pl.Series | None = None):
        """A byte per event row, 1 at `rows`: a work array of the spill (page cache, not the process's memory)."""
        flags = _store(state).scratch(name, n_events, np.uint8)
        if rows is not None and len(rows):
            flags[rows.cast(pl.UInt32).to_numpy()] = 1
        return flags

    def windows():
        for i in range(0, n_events, SCAN_ROWS):
            yield slice(i, i + SCAN_ROWS)
            release()

    def sources(t: pl.DataFrame, kept: bool):
        """(rows, drop) of the events the examples were built from, a slice of the table and a column at a time
        (as much as the slice's examples: the whole table's would grow with the log)."""
        which = pl.col("drop").is_null() if kept else pl.col("drop").is_not_null()
        for start in range(0, len(t), SCAN_ROWS):
            part = t.slice(start, SCAN_ROWS)
            for c in rules.src_columns(t):
                yield part.lazy().filter(which & pl.col(c).is_not_null()).select(pl.col(c).alias("row"), "drop") \
                    .collect()
            release()

    gone = flags_of("gone", state.dedupe_rows)
    used = flags_of("used", state.applied)
    for t in tables.values():
        for src in sources(t, kept=True):
            if len(src):
                used[src["row"].cast(pl.UInt32).to_numpy()] = 1
    # Step drops: each row under the one reason its step gave it (a row dropped twice is a bug). Set step by step
    # (the rows wait on disk: concatenated, they would be 4 bytes a dropped event in memory).
    step = state.drops.steps
    dropped = flags_of("dropped")
    for _, rows in step:
        rows = rows.to_numpy()
        if dropped[rows].any():
            raise AccountingError("an event was dropped by two steps")
        dropped[rows] = 1
        release()
    drops: dict[str, int] = {}
    for reason, rows in step:
        n = len(rows) - int(gone[rows.to_numpy()].sum(dtype=np.int64))
        if n:
            drops[reason] = drops.get(reason, 0) + n
    # One pass over the flags: check them, count the used rows, and turn `used` into the rows settled (used,
    # dropped or gone).
    settled, n_used, n_dropped = used, 0, 0
    for w in windows():
        both = np.flatnonzero(used[w] & dropped[w])
        if len(both):
            raise AccountingError(f"event(s) both dropped and used, e.g. row {w.start + int(both[0])}")
        # Rows the dedupe step removed are counted as duplicate or quarantined, not as events.
        if (used[w] & gone[w]).any():
            raise AccountingError("an event counted as duplicate or quarantined was also used")
        n_used += int(used[w].sum(dtype=np.int64))
        n_dropped += int(dropped[w].sum(dtype=np.int64))
        settled[w] |= dropped[w] | gone[w]
    if n_dropped != sum(len(rows) for _, rows in step):
        raise AccountingError("an event was dropped by two steps")  # or twice by one
    del dropped, gone
    # An event in no kept example and dropped by no step: the first reason (in filter order, which is the order of
    # the Enum) that removed an example built from it; else it carried no signal.
    # Per event, the first example reason, as 255 - its Enum code (0: none, so that a new array is all zeros): a
    # byte an event, in a file of the spill where the build has one.
    first = flags_of("first-reason")
    for t in tables.values():
        for src in sources(t, kept=False):
            rows = src["row"].cast(pl.UInt32).to_numpy()
            unsettled = settled[rows] == 0
            np.maximum.at(first, rows[unsettled],
                          255 - src["drop"].to_physical().to_numpy().astype(np.uint8)[unsettled])
    # By window: np.bincount works on a copy of its input as machine-wide integers (8 bytes an event).
    counts = np.zeros(256, dtype=np.int64)
    for w in windows():
        counts += np.bincount(first[w], minlength=256)
    counts = counts[::-1]  # by Enum code; 255: no example reason
    del first
    for code, n in enumerate(counts[:len(EXAMPLE_REASONS)].tolist()):
        if n:
            drops[EXAMPLE_REASONS[code]] = drops.get(EXAMPLE_REASONS[code], 0) + n
    if counts[len(EXAMPLE_REASONS):255].any():
        raise AccountingError("an example reason outside the known ones (a bug in the builder)")
    # Counted row by row, not by subtraction from the total, so that a row counted twice or never breaks the
    # balance below: the rows neither settled nor given an example reason (only unsettled rows get one).
    unsettled = n_events - sum(int(settled[w].sum(dtype=np.int64)) for w in windows())
    no_signal = unsettled - (n_events - int(counts[255]))
    if no_signal:
        drops["no_signal"] = no_signal
    if read.blank_lines:
        drops["blank_line"] = read.blank_lines
    if read.oversized:
        drops["oversized_line"] = len(read.oversized)
    drops = dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0])))
    used = n_used
    dropped = sum(drops.values())
    quarantined = state.quarantined
    total = used + dropped + state.duplicates + quarantined
    accounting = {"read": read.lines_read, "used": used, "dropped": dropped, "duplicate": state.duplicates,
                  "quarantined": quarantined, "balanced": total == read.lines_read}
    if total != read.lines_read:
        raise AccountingError(
            f"accounting does not balance: read {read.lines_read} != used {used} + dropped {dropped} + duplicate "
            f"{state.duplicates} + quarantined {quarantined} = {total}. This is a bug in the builder; the build "
            "was not written.")
    return {"drops": drops, "accounting": accounting}


def _message_list_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def arrow_schema(kind: str):
    import pyarrow as pa

    msg = _message_list_type()
    meta = [("signal", pa.string()), ("request_id", pa.string()), ("session_id", pa.string()),
            ("user_id", pa.string()), ("tenant", pa.string()), ("tags", pa.list_(pa.string())),
            ("ts", pa.int64()), ("generation_id", pa.string()), ("model_base", pa.string()),
            ("model_adapter", pa.string())]
    head = {"sft": [("messages", msg)],
            "dpo": [("prompt", msg), ("chosen", msg), ("rejected", msg)],
            "kto": [("prompt", msg), ("completion", msg), ("label", pa.bool_())]}[kind]
    return pa.schema(head + meta)


# Polars' concat_list on struct lists costs ~4 us a row; these two build the same lists ~15x faster.
def one_assistant_message(text: pl.Series) -> pl.Series:
    """[{"role": "assistant", "content": t}] for each t: one Arrow list array over the structs."""
    import pyarrow as pa

    # Arrow string views (Polars' own layout): no copy of the texts.
    structs = pl.select(pl.struct(role=pl.lit("assistant"), content=pl.lit(text))).to_series() \
        .to_arrow(compat_level=pl.CompatLevel.newest())
    offsets = pl.int_range(len(text) + 1, dtype=pl.Int64, eager=True).to_arrow()
    return pl.from_arrow(pa.LargeListArray.from_arrays(offsets, structs))


def with_assistant_message(prompt: pl.Series, text: pl.Series) -> pl.Series:
    """Each prompt's messages followed by {"role": "assistant", "content": text}."""
    idx = pl.int_range(len(prompt), dtype=pl.UInt32, eager=True)
    turns = pl.DataFrame({"i": idx, "m": prompt}).explode("m")
    answer = pl.DataFrame({"i": idx, "m": pl.select(pl.struct(role=pl.lit("assistant"), content=pl.lit(text)))
                           .to_series()})
    # A stable sort keeps each prompt's messages in order, then its answer (stacked after all prompts).
    return pl.concat([turns, answer]).sort("i", maintain_order=True).group_by("i", maintain_order=True) \
        .agg("m")["m"]


def _rows_of(state: BuildState):
    """A function (event table, rows) -> those rows, every column. A filter over the table would read the string
    views of every row of every column from disk (16 bytes each: ~0.5 GB at 2M events); this reads the rows'."""
    from data.textspill import SPILLED_COLUMNS

    take = _take(state)

    def rows_of(events: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
        rows = rows.cast(pl.UInt32)
        mapped = [c for c in events.columns if c in SPILLED_COLUMNS]
        here = rules.gather_in_windows(events.select(pl.exclude(mapped)), rows)
        return pl.concat([here, take(events.select(mapped), rows)], how="horizontal").select(events.columns)

    return rows_of


def _take(state: BuildState):
    """How the steps gather texts: from memory, or from the mapped files batch by batch (data.textspill)."""
    from data.filters import gather_rows

    spill = state.read.texts
    return gather_rows if spill is None else spill.gather


def materialize(kind: str, df: pl.DataFrame, texts: pl.DataFrame, take=None):
    """Example rows (event row numbers, and the time, `ts`, that `_in_write_order` read with them) -> the Arrow
    table TRL reads: texts and metadata gathered by row. The metadata are the generation's (`meta_row`): its
    tenant is the turn's, whatever its feedback says."""
    from data.filters import gather_rows

    take = take or gather_rows
    meta = [name for name in META_NAMES[1:] if name != "ts"]
    wants = {"prompt_row": ["messages"], "meta_row": meta, "text_row": ["output", "edited_output"]}
    if kind == "dpo":
        wants["rejected_row"] = ["output", "edited_output"]
    got = _gather_by_rows(texts, df, wants, take)
    text = got["text_row"].select(pl.coalesce("output", "edited_output")).to_series()
    prompt = got["prompt_row"]["messages"]
    if kind == "sft":
        head = [with_assistant_message(prompt, text).alias("messages")]
    elif kind == "dpo":
        rejected = got["rejected_row"].select(pl.coalesce("output", "edited_output")).to_series()
        head = [prompt.alias("prompt"), one_assistant_message(text).alias("chosen"),
                one_assistant_message(rejected).alias("rejected")]
    else:
        head = [prompt.alias("prompt"), one_assistant_message(text).alias("completion"), df["label"]]
    ts = df["ts"]
    metadata = [df["signal"].cast(pl.String)] + [
        ts if name == "ts" else got["meta_row"][name] for name in META_NAMES[1:]]
    out = pl.DataFrame(head + [s.alias(n) for s, n in zip(metadata, META_NAMES)])
    schema = arrow_schema(kind)
    # The texts are copied once, here: Polars hands over its string views, the cast lays them out as `datasets`
    # reads them (an export to plain strings, then a cast of their offsets, would copy them twice).
    return _with_unused_bits_cleared(out.to_arrow(compat_level=pl.CompatLevel.newest()).cast(schema))


def _with_unused_bits_cleared(table):
    """`table` with the columns whose validity bitmaps have bits set past their last row copied by an Arrow kernel
    (a take of every row), which clears them. Polars leaves those bits as they were in memory, and the file would
    carry them: the same examples could give other bytes, and another content hash. Looking costs a byte a
    bitmap; the copy is made only where a stray bit is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    stray = [i for i, column in enumerate(table.columns) if any(_stray_bits(chunk) for chunk in column.chunks)]
    if not stray:
        return table
    every_row = pa.array(range(table.num_rows), type=pa.int64())
    return pa.Table.from_arrays([pc.take(c, every_row) if i in stray else c for i, c in enumerate(table.columns)],
                                schema=table.schema)


def _stray_bits(array) -> bool:
    """Whether a validity bitmap of `array`, or of an array nested in it, has bits set in its last byte past its
    last row (the bytes an Arrow file takes of it)."""
    import pyarrow as pa

    validity = array.buffers()[0]
    end = array.offset + len(array)
    if validity is not None and end % 8 and memoryview(validity)[end // 8] >> (end % 8):
        return True
    t = array.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _stray_bits(array.values)
    if pa.types.is_struct(t):
        return any(_stray_bits(array.field(i)) for i in range(t.num_fields))
    return False


def _gather_by_rows(texts: pl.DataFrame, df: pl.DataFrame, wants: dict[str, list[str]], take) -> dict:
    """{row column of df: its event rows' `wants` columns}. Row columns that hold the same rows (a KTO example's
    prompt, text and metadata are all its generation's) are read in one pass over the files."""
    groups: list[tuple[pl.Series, list[str], list[str]]] = []  # (rows, row columns, event columns)
    for by, columns in wants.items():
        for rows, bys, cols in groups:
            if rows.equals(df[by]):
                bys.append(by)
                cols.extend(c for c in columns if c not in cols)
                break
        else:
            groups.append((df[by], [by], list(columns)))
    got = {}
    for rows, bys, cols in groups:
        frame = take(texts.select(cols), rows)
        for by in bys:
            got[by] = frame
    return got


WRITE_CHUNK_ROWS = 20_000


def _materialized_chunks(kind: str, parts, state: BuildState):
    """Example rows (frames, in order) -> Arrow tables of WRITE_CHUNK_ROWS rows each whatever the frames' sizes
    (the same rows give the same bytes), so only one slice of texts is ever copied out at a time."""
    take, release = _take(state), _window_release(state)
    for chunk in _in_chunks(parts, WRITE_CHUNK_ROWS):
        table = materialize(kind, chunk, state.texts, take)
        release()  # the slice holds its own copy of the texts now
        yield table


def _in_chunks(frames, rows: int):
    pending, n = [], 0
    for frame in frames:
        pending.append(frame)
        n += len(frame)
        while n >= rows:
            joined = pl.concat(pending)
            yield joined.slice(0, rows)
            pending, n = [joined.slice(rows)], n - rows
    if n:
        yield pl.concat(pending)


# A split is sorted and written a range of its first sort key at a time, of about this many examples: what the
# write holds at once does not grow with the split.
WRITE_RANGE_ROWS = 250_000
# The example tables are scanned this many rows at a time.
SCAN_ROWS = 100_000


def _in_write_order(kind: str, table: pl.DataFrame, split: str, state: BuildState):
    """The kept examples of one split (their rows, frame by frame), in the datasets' order:
    - SFT and DPO by content, not input position, so the same events in any order or files give the same bytes:
      time, turn and generation ids (their keys), signal, text key; last, the event rows (rows equal in all the
      rest hold the same content).
    - KTO shuffled with a fixed seed, as KTO reads its rows in order: by a seeded hash of the generation's key.
    The split's kept examples are first read once in table order, with the event values the order needs (and
    the time, which the dataset carries), into a table on disk: read in write order instead, a KTO split would
    gather them at random over the whole event table for every slice it writes. That table is then cut into
    ranges of its first sort key (quantiles of a sample), each read slice by slice, sorted and written before
    the next: together the ranges are the whole split in order."""
    needs = ["prompt_row", "text_row", "meta_row", "signal"] + {"dpo": ["rejected_row"], "kto": ["label"]}.get(kind, [])
    order = ["_first", "meta_row"] if kind == "kto" else \
        ["_first", "request_key", "generation_key", "signal", "_tk", "meta_row", "text_row"]
    is_kept = pl.col("drop").is_null() & (pl.col("split") == split)
    n = int(table.select(is_kept.sum()).item())
    if n == 0:
        return
    kept = _kept_with_order_keys(kind, split, table, is_kept, list(dict.fromkeys(needs + ["_tk"])), state)
    release = _window_release(state)

    def slices():
        for start in range(0, len(kept), SCAN_ROWS):
            yield kept.slice(start, SCAN_ROWS)
            release()

    bounds: list = []
    n_ranges = -(-n // WRITE_RANGE_ROWS)
    if n_ranges > 1:
        sample = kept["_first"].gather_every(max(1, n // 100_000)).sort(nulls_last=False)
        bounds = sample.gather([len(sample) * i // n_ranges for i in range(1, n_ranges)]).unique().sort().to_list()
    written = 0
    for i in range(len(bounds) + 1):
        # Nulls sort first: they belong to the first range.
        lo = pl.col("_first") >= bounds[i - 1] if i else pl.lit(True)
        hi = (pl.col("_first") < bounds[i]) if i < len(bounds) else pl.lit(True)
        if i == 0:
            hi = hi | pl.col("_first").is_null()
        part = pl.concat([p.filter(lo & hi) for p in slices()])
        part = part.sort(order, nulls_last=False).select(needs + ["ts"])
        written += len(part)
        yield part
    if written != n:
        raise AccountingError(f"{kind}/{split}: {written} examples written of {n} kept (a bug in the builder)")


def _kept_with_order_keys(kind: str, split: str, table: pl.DataFrame, is_kept: pl.Expr, columns: list[str],
                          state: BuildState) -> pl.DataFrame:
    """The kept examples' `columns`, their time, and their sort keys from the events (`_first`: the time, or for
    KTO the seeded hash of the generation's key; SFT and DPO also order by the turn's and generation's keys), read
    a slice of the table at a time in table order and held on disk."""
    seed = state.config.shuffle_seed
    meta = ["ts", "generation_key"] if kind == "kto" else ["ts", "request_key", "generation_key"]
    out, release = _collector(state, f"{kind}-{split}-kept"), _window_release(state)
    for start in range(0, len(table), SCAN_ROWS):
        part = table.slice(start, SCAN_ROWS).lazy().filter(is_kept).select(columns).collect()
        part = part.with_columns(rules.meta_of(state.texts, part, *meta))
        first = pl.col("generation_key").hash(seed) if kind == "kto" else pl.col("ts")
        out.write(part.with_columns(first.alias("_first")).drop("generation_key" if kind == "kto" else []))
        release()
    return out.frame()


META_NAMES = ["signal", "request_id", "session_id", "user_id", "tenant", "tags", "ts", "generation_id",
              "model_base", "model_adapter"]


def write_build(tmp: Path, state: BuildState, tables: dict[str, pl.DataFrame], base: dict) -> dict:
    from data.hfdisk import save_dataset_dict
    from flywheel.files import sha256_json, write_json_atomic, write_text_atomic

    cfg = state.config
    examples: dict[str, dict[str, int]] = {}
    outputs: dict[str, dict] = {}

    def write_kind(kind: str) -> dict[str, tuple[str, int]]:
        splits = {split: _materialized_chunks(kind, _in_write_order(kind, tables[kind], split, state), state)
                  for split in ("train", "test")}
        return save_dataset_dict(splits, tmp / kind, schema=arrow_schema(kind))

    # The kinds are written side by side: gathering texts (Polars) and hashing and writing the files (hashlib,
    # the kernel) release the GIL, and writing to the page cache costs as much CPU here as building the tables.
    import concurrent.futures as cf

    kinds = [k for k in KINDS if k in cfg.kinds]
    with cf.ThreadPoolExecutor(max_workers=WRITE_WORKERS) as pool:
        futures = {kind: pool.submit(write_kind, kind) for kind in kinds}
    for kind in kinds:
        written = futures[kind].result()
        examples[kind] = {name.split("/")[0]: rows for name, (_, rows) in written.items()}
        # = flywheel.files.tree_sha256(tmp / kind, pattern="**/*.arrow"), from the hashes taken while writing.
        outputs[kind] = {"sha256": sha256_json({name: digest for name, (digest, _) in sorted(written.items())})}

    with open(tmp / "quarantine.jsonl", "wb") as f:
        for q in state.quarantine():
            f.write(orjson.dumps(q.to_dict()) + b"\n")
    with open(tmp / "orphans.jsonl", "wb") as f:
        if state.orphans is not None and len(state.orphans):
            rows = _rows_of(state)(state.texts, state.orphans.sort())
            for r in rows.iter_rows(named=True):
                target = r["generation_id"] if r["type"] in FEEDBACK_ON_GENERATION \
                    else r["request_id"]
                f.write(orjson.dumps({"source": r["source"], "line": r["line"],
                                      "reason": f"orphan: no input holds {target!r}",
                                      "event": orjson.loads(_row_json(r))}) + b"\n")
    manifest = {
        "kind": "flywheel.dataset_build",
        "format_version": 1,
        "schema_version": SCHEMA_VERSION,
        "inputs": [{"path": i.path, "sha256": i.sha256, "lines": i.lines} for i in state.read.inputs],
        "config": cfg.to_dict(),
        "events": state.event_counts,
        "examples": examples,
        "drops": base["drops"],
        "example_drops": _example_drops(tables),
        "duplicates": state.duplicates,
        "quarantined": state.quarantined,
        "accounting": base["accounting"],
        "redactions": state.redactions,
        "id_keys": {"seed": state.read.key_seed, "collisions": state.key_collisions},
        "split": _split_summary(tables, cfg, state.texts, _window_release(state), _store(state)),
        "outputs": outputs,
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(tmp / "manifest.json", manifest)
    from data.card import dataset_card

    write_text_atomic(tmp / "README.md", dataset_card(manifest))
    return manifest


def _example_drops(tables: dict[str, pl.DataFrame]) -> dict[str, dict[str, int]]:
    """Examples each filter removed, per kind (an event can lose one example and still be used by another, so
    these are not the line counts of `drops`)."""
    rank = {r: i for i, r in enumerate(EXAMPLE_REASONS)}
    out = {}
    for kind, t in tables.items():
        counts = t["drop"].drop_nulls().value_counts(name="len").iter_rows()  # the labels alone, not the rows
        out[kind] = dict(sorted(counts, key=lambda kv: rank.get(kv[0], len(rank))))
    return out


# Kinds written at once (see write_build).
WRITE_WORKERS = 2
# The distinct users and sessions of a split are counted over parts of the key space, each of at most this many
# of the split's examples: what is held at once is a part's keys, not all of them.
DISTINCT_PART_ROWS = 1_000_000


def _split_summary(tables: dict[str, pl.DataFrame], cfg: BuildConfig, events: pl.DataFrame,
                   release=lambda: None, store=rules.InMemory()) -> dict:
    """The split's settings and its distinct users and sessions per side. The tables are read a slice at a time
    to flag the events the kept examples come from (a byte an event, in a scratch file of the spill where the
    build has one); the flagged events' keys are then counted a part of the key space at a time
    (`DISTINCT_PART_ROWS`), read in windows of the event table."""
    import numpy as np

    n = len(events)
    used = {split: store.scratch(f"split-used-{split}", n, np.uint8) for split in ("train", "test")}
    examples = dict.fromkeys(used, 0)
    for t in tables.values():
        for start in range(0, len(t), SCAN_ROWS):
            part = t.slice(start, SCAN_ROWS).lazy().filter(pl.col("drop").is_null()).select("meta_row", "split") \
                .collect()
            for split in used:
                rows = part.filter(pl.col("split") == split)["meta_row"]
                if len(rows):
                    used[split][rows.cast(pl.UInt32).to_numpy()] = 1
                    examples[split] += len(rows)
            release()
    units = {}
    if sum(examples.values()):
        for split, flags in used.items():
            # As a mask beside the keys (a bit an event, held by `store`), made a window at a time.
            mask = store.hold_pieces(f"split-used-{split}", (
                pl.Series(flags[i:i + SCAN_ROWS]) > 0 for i in range(0, max(n, 1), SCAN_ROWS)), pl.Boolean)
            parts = max(1, -(-examples[split] // DISTINCT_PART_ROWS))
            units[split] = {name: sum(_distinct_keys(events.select(unit).with_columns(_used=mask), unit, parts, p)
                                      for p in range(parts))
                            for name, unit in (("users", "user_key"), ("sessions", "session_key"))}
            del mask
    del used
    return {"by": cfg.split_by, "test_fraction": cfg.test_fraction, "seed": cfg.split_seed,
            "time_cutoff": cfg.time_cutoff, "units": units,
            "removed_from_train_prompt_in_test": int(sum(
                (t["drop"] == "prompt_in_test").sum() for t in tables.values()))}


def _distinct_keys(keys: pl.DataFrame, key: str, parts: int, part: int) -> int:
    """Distinct values (a null counts as one) of column `key` of `keys` where `_used`, among those in part `part`
    of `parts`."""
    where = pl.col("_used") & rules.key_part(key, parts, part)
    return rules.select_where(keys, [key], where).to_series().unique().len()


def _versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("flywheel", "polars", "pyarrow", "datasets", "orjson"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


__all__ = ["BuildConfig", "build_datasets", "BuildError", "TenantError", "AccountingError", "StrictModeError",
           "parse_ts"]
