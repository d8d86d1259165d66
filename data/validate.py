"""`flywheel data validate`: check capture logs against the v1 contract without building anything."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from data.events import QuarantinedLine, read_events


@dataclass
class ValidationReport:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    valid: int = 0
    blank: int = 0
    oversized: int = 0
    errors: list[QuarantinedLine] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)

    @property
    def invalid(self) -> int:
        return len(self.errors)

    @property
    def ok(self) -> bool:
        return self.invalid == 0

    def error_lines(self, limit: int | None = 20) -> list[str]:
        """`file:line: field: reason`, the first `limit` of them."""
        return [f"{e.source}:{e.line}: {e.field}: {e.reason}" for e in self.errors[:limit]]


def validate_paths(paths: Iterable[str | os.PathLike] | str, max_line_bytes: int | None = None) -> ValidationReport:
    kwargs = {"max_line_bytes": max_line_bytes} if max_line_bytes else {}
    result = read_events(paths, hash_inputs=False, **kwargs)
    report = ValidationReport(
        files=[i.path for i in result.inputs], lines=result.lines_read, valid=len(result.events),
        blank=result.blank_lines, oversized=len(result.oversized), errors=list(result.quarantine))
    for source, line, size in result.oversized:
        report.errors.append(QuarantinedLine(source, line, "$", f"line of {size} bytes exceeds max_line_bytes", ""))
    report.errors.sort(key=lambda e: (report.files.index(e.source) if e.source in report.files else 0, e.line))
    if len(result.events):
        report.events = dict(sorted(result.events.group_by("type").len().iter_rows()))
    return report
