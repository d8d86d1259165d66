"""`flywheel data import`: turn another tool's logs into capture events v1.

    import_logs("langfuse", ["export/"], "captures/langfuse.jsonl", map_file="map.yaml")

writes the capture log, `<log>.report.json` (records read, events written by type, records skipped by reason)
and `<log>.quarantine` (every skipped record, whole, with its file, record number and reason), all three renamed
into place together once the log has validated. See docs/importers.md.
"""

from __future__ import annotations

import os
from typing import Iterable

from data.importers.common import ImportReport, ImportSink, InvalidImport
from data.importers.mapfile import ImportMap, MapError, load_map
from data.importers.sources import expand

FORMATS = ("langfuse", "langsmith", "openai", "preference")

__all__ = ["FORMATS", "ImportMap", "ImportReport", "InvalidImport", "MapError", "import_logs", "load_map"]


def import_logs(fmt: str, paths: Iterable[str | os.PathLike] | str, out: str | os.PathLike,
                map_file: str | os.PathLike | ImportMap | None = None, validate: bool = True,
                progress=None) -> ImportReport:
    """`progress(text)`, if given, hears each stage as it starts."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    files = expand([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    mapping = map_file if isinstance(map_file, ImportMap) else load_map(map_file)
    sink = ImportSink(out, ImportReport(format=fmt), progress)
    try:
        _run(fmt, files, sink, mapping, validate)
        if validate and fmt != "openai":  # the openai importer checks its events as it stages them
            sink.stage("checking the events against the capture schema")
            _validate(sink)
    except BaseException:
        sink.abort()
        raise
    return sink.commit()


def _run(fmt: str, files: list[str], sink: ImportSink, mapping: ImportMap, validate: bool) -> None:
    if fmt == "openai":
        from data.importers.openai_logs import import_openai

        import_openai(files, sink, mapping, validate)
    elif fmt == "preference":
        from data.importers.preference import import_preference

        import_preference(files, sink, mapping)
    else:
        from data.importers.traced import import_traced

        if fmt == "langfuse":
            from data.importers.langfuse import read_langfuse as read
        else:
            from data.importers.langsmith import read_langsmith as read
        import_traced(fmt, files, sink, mapping, read)


def _validate(sink: ImportSink) -> None:
    from data.validate import validate_paths

    sink.flush()
    report = validate_paths([sink.staged_log], keep_errors=5)
    if not report.ok:
        raise InvalidImport(f"{sink.log}: {report.invalid} imported event(s) fail the capture schema: "
                            + "; ".join(report.error_lines(5)))
