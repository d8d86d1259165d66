"""`flywheel data validate`: check capture logs against the v1 contract without building anything."""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field
from typing import Iterable

from data.events import (DEFAULT_MAX_LINE_BYTES, InputFile, QuarantinedLine, ReadResult, empty_events,
                         expand_inputs, read_blocks)


@dataclass
class ValidationReport:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    valid: int = 0
    blank: int = 0
    oversized: int = 0
    invalid: int = 0  # every invalid line
    errors: list[QuarantinedLine] = field(default_factory=list)  # the first of them
    events: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.invalid == 0

    def error_lines(self, limit: int | None = 20) -> list[str]:
        """`file:line: field: reason`, the first `limit` of them."""
        return [f"{e.source}:{e.line}: {e.field}: {e.reason}" for e in self.errors[:limit]]


def validate_paths(paths: Iterable[str | os.PathLike] | str, max_line_bytes: int | None = None,
                   keep_errors: int = 1000) -> ValidationReport:
    """Check every line, a block at a time: the events are counted, not kept, so memory does not grow with the
    logs. `errors` holds the first `keep_errors` invalid lines in input order; `invalid` counts them all."""
    files = expand_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    report = ValidationReport(files=files)
    counts: dict[str, int] = {}
    for path in files:
        first = _FirstErrors(keep_errors)
        result, info = ReadResult(events=empty_events(), quarantine=first), InputFile(path=path)
        for block in read_blocks(path, result, info, max_line_bytes or DEFAULT_MAX_LINE_BYTES):
            report.valid += len(block)
            for t, n in block["type"].value_counts().iter_rows():
                counts[t] = counts.get(t, 0) + n
        report.lines += info.lines
        report.blank += result.blank_lines
        report.oversized += len(result.oversized)
        report.invalid += first.count + len(result.oversized)
        # The file's invalid lines in line order: the parse's, and the oversized ones, set aside before parsing.
        oversized = (QuarantinedLine(path, line, "$", f"line of {size} bytes exceeds max_line_bytes", "")
                     for _, line, size in result.oversized)
        for error in heapq.merge(first.lines, oversized, key=lambda e: e.line):
            if len(report.errors) == keep_errors:
                break
            report.errors.append(error)
    report.events = dict(sorted(counts.items()))
    return report


class _FirstErrors:
    """A file's quarantine, as `validate_paths` keeps it: its first `keep` entries and a count of all."""

    def __init__(self, keep: int):
        self.keep, self.lines, self.count = keep, [], 0

    def append(self, q: QuarantinedLine) -> None:
        self.count += 1
        if len(self.lines) < self.keep:
            self.lines.append(q)
