"""What every importer shares: the output (a capture log, its report and its quarantine, written atomically),
deterministic event ids, timestamps and chat messages in the capture schema's shape."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROLES = {"system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
         "ai": "assistant", "tool": "tool", "function": "tool"}


class InvalidImport(RuntimeError):
    """The importer wrote an event the capture schema rejects: a bug, so nothing is committed."""


@dataclass
class ImportReport:
    """Every record read is counted once: it gave events (`used`), was read for its context only (a trace, a
    span: `context`), or was skipped under a named reason and written to the quarantine."""

    format: str
    files: list[str] = field(default_factory=list)
    records_read: int = 0
    used: int = 0
    context: int = 0
    skipped: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    dropped_from_messages: Counter = field(default_factory=Counter)
    log: str = ""
    quarantine: str = ""

    def to_dict(self) -> dict:
        return {"format": self.format, "files": self.files, "records_read": self.records_read, "used": self.used,
                "context": self.context, "skipped": dict(sorted(self.skipped.items())),
                "skipped_total": sum(self.skipped.values()), "events": dict(sorted(self.events.items())),
                "events_total": sum(self.events.values()),
                "dropped_from_messages": dict(sorted(self.dropped_from_messages.items())),
                "log": self.log, "quarantine": self.quarantine}

    def check(self) -> None:
        accounted = self.used + self.context + sum(self.skipped.values())
        if accounted != self.records_read:
            raise AssertionError(f"import accounting: {self.records_read} records read, {accounted} accounted for")


def report_path(log: str | os.PathLike) -> Path:
    return Path(f"{log}.report.json")


def quarantine_path(log: str | os.PathLike) -> Path:
    # Not *.jsonl: a build over the log's folder would take the quarantine for a capture log.
    return Path(f"{log}.quarantine")


class ImportSink:
    """Writes events and quarantined records to temporary files beside `log`; `commit` renames the log, its
    quarantine and its report into place together, so a failed import leaves the previous ones untouched."""

    def __init__(self, log: str | os.PathLike, report: ImportReport, progress=None):
        self.log = Path(log)
        self.report = report
        self._progress = progress
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: list[str] = []
        self._events = self._open(self.log)
        self._quarantine = self._open(quarantine_path(self.log))

    def _open(self, final: Path):
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self._tmp.append(tmp)
        return os.fdopen(fd, "wb", buffering=1 << 20)

    def stage(self, text: str) -> None:
        """Where a long import is, for the command line's status line."""
        if self._progress is not None:
            self._progress(text)

    def event(self, ev: dict) -> None:
        self._events.write(orjson.dumps(ev) + b"\n")
        self.report.events[ev["type"]] += 1

    def skip(self, reason: str, source: str, line: int, record, detail: str = "") -> None:
        """A record that could not be mapped: counted under `reason` and kept whole in the quarantine."""
        self.report.skipped[reason] += 1
        self._quarantine.write(quarantine_line(reason, source, line, record, detail))

    def quarantine_raw(self, line: bytes) -> None:
        """A quarantine line written elsewhere (by a worker), already counted in the report."""
        self._quarantine.write(line)

    def append_file(self, path: str | os.PathLike) -> None:
        """Events another process wrote (and counted) join the log."""
        import shutil

        with open(path, "rb") as f:
            shutil.copyfileobj(f, self._events, 1 << 20)

    @property
    def staged_log(self) -> str:
        return self._tmp[0]

    def flush(self) -> None:
        self._events.flush()

    def commit(self) -> ImportReport:
        self.report.check()
        self.report.log, self.report.quarantine = str(self.log), str(quarantine_path(self.log))
        for f in (self._events, self._quarantine):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        from flywheel.files import write_json_atomic

        umask = os.umask(0)
        os.umask(umask)
        for tmp in self._tmp:  # mkstemp makes files only their owner can read; a log is shared like any other
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(self._tmp[0], self.log)
        os.replace(self._tmp[1], quarantine_path(self.log))
        write_json_atomic(report_path(self.log), self.report.to_dict())
        return self.report

    def abort(self) -> None:
        for f in (self._events, self._quarantine):
            f.close()
        for tmp in self._tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def quarantine_line(reason: str, source: str, line: int, record, detail: str = "") -> bytes:
    entry = {"source": source, "line": line, "reason": reason, "detail": detail, "record": record}
    return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def event_id(fmt: str, *parts) -> str:
    """The same source record always gives the same id, so importing an export twice writes duplicates the build
    counts as such, never conflicts."""
    key = "\x1f".join(str(p) for p in parts)
    return f"{fmt}-{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}"


def to_millis(value) -> int | None:
    """Epoch seconds or milliseconds, a datetime, or an ISO-8601 string (a time without an offset is UTC, as the
    exports document) -> integer milliseconds; None when it is none of these."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        # Epoch seconds stay below 1e11 until the year 5138; milliseconds are above it since 1973.
        return int(value * 1000) if abs(value) < 1e11 else int(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_millis(int(text))
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            return None
        return to_millis(dt)
    return None


def maybe_json(value):
    """CSV exports hold nested fields as JSON text; JSON and Parquet exports hold them either way."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def text_of(content, dropped: Counter) -> str | None:
    """A message's content as text: a string as is; a list of parts keeps its text parts (joined by a newline)
    and counts the others (images, audio, files) as dropped."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text") \
                    and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                dropped[f"content_part:{part.get('type') if isinstance(part, dict) else type(part).__name__}"] += 1
        return "\n".join(texts)
    return None


def capture_message(m, dropped: Counter) -> dict | None:
    """One chat message in the capture schema's shape, or None if it cannot be one. Tool calls and tool-call ids
    stay on the message as extra keys (the schema allows them, the build reads role and content); an assistant
    turn that only calls tools gets an empty content."""
    if not isinstance(m, dict):
        return None
    if "kwargs" in m and isinstance(m.get("id"), list):  # a LangChain-serialised message
        kind = m["id"][-1].removesuffix("MessageChunk").removesuffix("Message").lower()
        m = {"role": kind, **m["kwargs"]}
    elif "role" not in m and "type" in m:  # LangChain's message_to_dict form, or {"type": "human", "content": ...}
        m = {"role": m["type"], **(m.get("data") or m)}
    role = ROLES.get(str(m.get("role", "")).lower())
    if role is None:
        dropped[f"role:{m.get('role')}"] += 1
        return None
    tool_calls = m.get("tool_calls") or (m.get("additional_kwargs") or {}).get("tool_calls")
    content = text_of(m.get("content"), dropped)
    if content is None:
        if not tool_calls:
            return None
        content = ""
    out = {"role": role, "content": content}
    if tool_calls:
        out["tool_calls"] = tool_calls
    for key in ("tool_call_id", "name"):
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


def capture_messages(raw, dropped: Counter) -> list[dict] | None:
    """A conversation (a list of messages, or a single prompt string) -> capture messages; None when any message
    cannot be mapped or the result is empty."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        return None
    out = []
    for m in raw:
        cm = capture_message(m, dropped)
        if cm is None:
            return None
        out.append(cm)
    return out


def prompt_problem(messages: list[dict] | None) -> str | None:
    """Why these messages cannot be a generation's prompt, as a skip reason; None if they can."""
    if not messages:
        return "unreadable_input"
    if messages[-1]["role"] != "user":
        return "prompt_not_ending_with_user"
    return None


def input_messages(raw, dropped: Counter) -> list[dict] | None:
    """A traced call's input as a conversation: a message list; `{"messages": [...]}` (LangChain nests one list
    per prompt of a batch: the first is taken); `{"prompts": [text]}`; or an object whose only text field is the
    user's question (a chain's `{"question": ...}`)."""
    raw = maybe_json(raw)
    if isinstance(raw, dict):
        if "messages" in raw:
            raw = raw["messages"]
            if isinstance(raw, list) and raw and isinstance(raw[0], list):
                raw = raw[0]
        elif isinstance(raw.get("prompts"), list) and raw["prompts"]:
            raw = raw["prompts"][0]
        else:
            texts = [v for v in raw.values() if isinstance(v, str)]
            raw = texts[0] if len(texts) == 1 else None
    return capture_messages(raw, dropped)


def output_text(raw, dropped: Counter) -> tuple[str | None, list | None]:
    """A traced call's output as (text, tool calls): a string; an assistant message; a chat-completions response
    (`choices`); LangChain's `{"generations": [[{"text" | "message"}]]}`; or an object whose only text field is
    the answer. Text is None when there is none."""
    raw = maybe_json(raw)
    if isinstance(raw, str) or raw is None:
        return raw, None
    if isinstance(raw, list):
        raw = raw[-1] if raw and isinstance(raw[-1], dict) else None
    if not isinstance(raw, dict):
        return None, None
    if isinstance(raw.get("choices"), list) and raw["choices"]:
        raw = raw["choices"][0].get("message") or raw["choices"][0]
    elif isinstance(raw.get("generations"), list) and raw["generations"]:
        gen = raw["generations"][0]
        gen = gen[0] if isinstance(gen, list) and gen else gen
        raw = gen.get("message") or {"content": gen.get("text")} if isinstance(gen, dict) else {}
    elif isinstance(raw.get("output"), (dict, str)) or isinstance(raw.get("outputs"), (dict, str)):
        return output_text(raw.get("output") or raw.get("outputs"), dropped)
    if "kwargs" in raw and isinstance(raw.get("id"), list):
        raw = raw["kwargs"]
    if "content" in raw or "tool_calls" in raw:
        calls = raw.get("tool_calls") or (raw.get("additional_kwargs") or {}).get("tool_calls")
        return text_of(raw.get("content"), dropped), calls or None
    texts = [v for v in raw.values() if isinstance(v, str)]
    return (texts[0] if len(texts) == 1 else None), None
