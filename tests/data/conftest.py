"""Helpers for the data stage's tests: write capture logs event by event, build them, read the datasets back."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
MODEL = {"base": "tiny-llama", "adapter": "v1"}


class Log:
    """A capture log under construction; every event gets the next event_id and a later timestamp."""

    def __init__(self, t0: int = 1_790_000_000_000):
        self.events: list[dict] = []
        self.t = t0
        self.n = 0

    def add(self, type_: str, user: str = "u1", session: str | None = None, **fields) -> dict:
        self.n += 1
        self.t += 1000
        ev = {"event_id": f"e{self.n}", "type": type_, "ts": self.t, "session_id": session or f"s-{user}",
              "user_id": user, **fields}
        self.events.append(ev)
        return ev

    def gen(self, gid: str, rid: str, output: str, prompt: str = "How do I export my invoices?", user: str = "u1",
            messages: list[dict] | None = None, **fields) -> dict:
        msgs = messages or [SYSTEM, {"role": "user", "content": prompt}]
        return self.add("generation", user, generation_id=gid, request_id=rid, messages=msgs, output=output,
                        model=fields.pop("model", MODEL), **fields)

    def edit(self, gid: str, text: str, user: str = "u1", **f) -> dict:
        return self.add("edit", user, generation_id=gid, edited_output=text, **f)

    def accept(self, gid: str, user: str = "u1", **f) -> dict:
        return self.add("accept", user, generation_id=gid, **f)

    def regen(self, gid: str, user: str = "u1", **f) -> dict:
        return self.add("regenerate", user, generation_id=gid, **f)

    def rating(self, gid: str, value: int, user: str = "u1", **f) -> dict:
        return self.add("rating", user, generation_id=gid, value=value, **f)

    def rephrase(self, rid: str, new_rid: str, user: str = "u1", **f) -> dict:
        return self.add("rephrase", user, request_id=rid, new_request_id=new_rid, **f)

    def abandon(self, rid: str, user: str = "u1", **f) -> dict:
        return self.add("abandon", user, request_id=rid, **f)

    def forget(self, user: str, **f) -> dict:
        return self.add("forget", user, **f)

    def write(self, path: Path, events: list[dict] | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e) + "\n" for e in (self.events if events is None else events)))
        return path


def read_split(build_dir: Path, kind: str, split: str = "train") -> list[dict]:
    """Rows of one split, read straight from the Arrow file (the test of the datasets round trip is separate)."""
    with pa.memory_map(str(build_dir / kind / split / "data-00000-of-00001.arrow")) as src:
        return pa.ipc.open_stream(src).read_all().to_pylist()


def rows(build_dir: Path, kind: str) -> list[dict]:
    return read_split(build_dir, kind, "train") + read_split(build_dir, kind, "test")


def check_accounting(m: dict) -> None:
    acc = m["accounting"]
    assert acc["read"] == acc["used"] + acc["dropped"] + acc["duplicate"] + acc["quarantined"]
    assert acc["dropped"] == sum(m["drops"].values())
    assert acc["balanced"] is True


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def build(tmp_path):
    """build(log_or_paths, **config) -> (manifest, build dir); everything in train unless told otherwise."""
    from data.build import build_datasets

    counter = {"n": 0}

    def _build(source, **cfg):
        counter["n"] += 1
        if isinstance(source, Log):
            source = [source.write(tmp_path / f"log{counter['n']}.jsonl")]
        out = tmp_path / f"build{counter['n']}"
        cfg.setdefault("test_fraction", 0.0)
        m = build_datasets([str(s) for s in source], out, **cfg)
        check_accounting(m)
        return m, out

    return _build
