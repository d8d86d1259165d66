"""Frozen eval sets: the test splits of one build, written once, hashed, and never changed.

A gate is only comparable with another gate on the same items. A build's test split moves whenever new logs arrive,
so the gate never reads a build directly: `freeze` copies the held-out items into a folder of its own, hashes it,
and makes the files read-only. `load_eval_set` re-checks every hash before a gate uses it.

Item files (JSONL, one object a line, sorted by id so the hash does not depend on dataset order):
- `pairs.jsonl`: held-out preference pairs from the build's DPO test split: `prompt` (messages ending with the
  user's turn), `chosen`, `rejected` (assistant texts) and the slice keys.
- `answers.jsonl`: held-out final answers from the SFT test split: `prompt` and `answer`, the text the user kept.
  Used for in-domain fit (NLL of the answer) and for generation (reply to `prompt`, edit cost against `answer`).
- `general.jsonl`: the general English set shipped in `eval/general/`, copied so the set is self-contained.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from flywheel.files import atomic_dir, sha256_file, sha256_json, write_json_atomic

EVAL_SET_KIND = "flywheel.eval_set"
FORMAT_VERSION = 1
ITEM_FILES = ("pairs.jsonl", "answers.jsonl", "general.jsonl")
GENERAL_DIR = Path(__file__).parent / "general"
SLICE_KEYS = ("user_id", "session_id", "request_id", "tenant", "signal", "tags")


class EvalSetError(ValueError):
    """An eval set or a build that cannot be used (bad path, changed files, missing splits)."""


def _text(message_list: Any, where: str) -> str:
    """The content of a one-message assistant list, as the build writes `chosen`/`rejected`/`completion`."""
    if isinstance(message_list, str):
        return message_list
    if isinstance(message_list, list) and message_list and isinstance(message_list[-1], dict):
        return str(message_list[-1].get("content", ""))
    raise EvalSetError(f"{where}: expected a list of messages ending with an assistant message, got {message_list!r}")


def _slice_keys(row: dict) -> dict:
    tags = row.get("tags") or []
    return {
        "user_id": row.get("user_id"),
        "session_id": row.get("session_id"),
        "request_id": row.get("request_id"),
        "tenant": row.get("tenant"),
        "signal": row.get("signal"),
        "tags": list(tags),
    }


def prompt_key(messages: list[dict]) -> str:
    """Identity of a prompt for overlap checks: its messages' roles and whitespace-normalised contents."""
    canon = [[m.get("role"), " ".join(str(m.get("content", "")).split())] for m in messages]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def _load_split(build: Path, kind: str, split: str):
    from datasets import load_from_disk

    path = build / kind
    if not path.exists():
        return None
    dsd = load_from_disk(str(path))
    if split not in dsd:
        raise EvalSetError(f"{path}: no {split!r} split (found {list(dsd.keys())})")
    return dsd[split]


def pairs_from_build(build: Path) -> list[dict]:
    ds = _load_split(build, "dpo", "test")
    if ds is None:
        return []
    items = []
    for i, row in enumerate(ds):
        where = f"{build / 'dpo'} test row {i}"
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt:
            raise EvalSetError(f"{where}: field 'prompt' must be a non-empty list of messages")
        items.append(
            {
                "prompt": prompt,
                "chosen": _text(row.get("chosen"), f"{where} field 'chosen'"),
                "rejected": _text(row.get("rejected"), f"{where} field 'rejected'"),
                **_slice_keys(row),
            }
        )
    return items


def answers_from_build(build: Path) -> list[dict]:
    ds = _load_split(build, "sft", "test")
    if ds is None:
        return []
    items = []
    for i, row in enumerate(ds):
        where = f"{build / 'sft'} test row {i} field 'messages'"
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) < 2 or messages[-1].get("role") != "assistant":
            raise EvalSetError(f"{where}: must be a list of messages ending with the assistant's final answer")
        items.append({"prompt": messages[:-1], "answer": str(messages[-1]["content"]), **_slice_keys(row)})
    return items


def general_texts(general: str | os.PathLike = GENERAL_DIR) -> list[dict]:
    """`{"text"}` rows of a JSONL file, or of every *.jsonl in a folder."""
    general = Path(general)
    if not general.exists():
        raise EvalSetError(f"{general}: general set not found (a JSONL file of {{\"text\"}} rows, or a folder of them)")
    items = []
    for path in [general] if general.is_file() else sorted(general.glob("*.jsonl")):
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    text = obj["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise EvalSetError(f"{path}:{line_no}: expected a JSON object with a 'text' field ({exc})") from exc
                items.append({"id": obj.get("id") or f"{path.stem}-{line_no}", "text": text, "source": path.name})
    return items


def _with_ids(items: list[dict], prefix: str) -> list[dict]:
    """Give every item a content-derived id, then sort by it: the file hash no longer depends on row order."""
    out = []
    for item in items:
        digest = sha256_json(item)[:16]
        out.append({"id": f"{prefix}-{digest}", **item})
    out.sort(key=lambda x: x["id"])
    return out


def _write_jsonl(path: Path, items: Iterable[dict]) -> int:
    n = 0
    with open(path, "w") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def _counts(pairs: list[dict], answers: list[dict], general: list[dict]) -> dict:
    def by(key: str) -> dict:
        c: dict[str, int] = {}
        for item in pairs + answers:
            values = item.get(key) or [] if key == "tags" else [item.get(key)]
            for v in values:
                c[str(v)] = c.get(str(v), 0) + 1
        return dict(sorted(c.items()))

    return {
        "pairs": len(pairs),
        "answers": len(answers),
        "general": len(general),
        "users": len({i.get("user_id") for i in pairs + answers}),
        "by_signal": by("signal"),
        "by_tenant": by("tenant"),
        "by_tag": by("tags"),
    }


def power_warning(n_users: int, gate_config: str | os.PathLike | dict | None = None) -> str | None:
    """A warning when `n_users` held-out users are too few for the gate's checks to detect the effect its config
    plans for (`power.effect_size` standard deviations of the users' differences, 80 % power, one-sided alpha/2)."""
    from eval import stats
    from eval.config import load_config

    cfg = load_config(gate_config)
    d = cfg["power"]["effect_size"]
    needed = stats.users_needed(d, cfg["alpha"])
    if n_users >= needed:
        return None
    return (f"{n_users} held-out users: the gate's checks average each user's items and test over users, and "
            f"detecting an effect of {d:g} standard deviations of the users' differences with 80 % power needs at "
            f"least {needed}; hold out more users (a larger test fraction, or more users in the logs) or expect "
            "only large effects to pass")


def freeze(build_dir: str | os.PathLike, out: str | os.PathLike, version: str | None = None,
           general: str | os.PathLike = GENERAL_DIR, gate_config: str | os.PathLike | dict | None = None) -> dict:
    """Write an eval set from `build_dir`'s test splits to `out`; return its `eval_set.json`.

    `general`: the general-text set frozen beside the held-out items (a JSONL file or a folder of them); it must be
    text the base model models well, or non-inferiority on it means nothing. The default is the English set shipped
    in eval/general/; a recipe for another kind of model ships its own (recipes/tiny/general.jsonl).

    Refuses an existing `out`: an eval set, once written, is never replaced under the same path. `meta["warnings"]`
    says when the held-out users are too few for the gate (`gate_config`'s power settings; see `power_warning`).
    """
    build = Path(build_dir)
    out = Path(out)
    manifest_path = build / "manifest.json"
    if not manifest_path.is_file():
        raise EvalSetError(f"{build}: not a build dir (no manifest.json)")
    if out.exists():
        raise EvalSetError(f"{out}: already exists; eval sets are immutable, freeze to a new path")
    pairs = _with_ids(pairs_from_build(build), "pair")
    answers = _with_ids(answers_from_build(build), "answer")
    general = sorted(general_texts(general), key=lambda x: x["id"])
    if not pairs and not answers:
        raise EvalSetError(f"{build}: no held-out items (dpo/test and sft/test are missing or empty)")
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with atomic_dir(out, overwrite=False) as tmp:
        _write_jsonl(tmp / "pairs.jsonl", pairs)
        _write_jsonl(tmp / "answers.jsonl", answers)
        _write_jsonl(tmp / "general.jsonl", general)
        files = {name: sha256_file(tmp / name) for name in ITEM_FILES}
        sha = sha256_json(files)
        meta = {
            "kind": EVAL_SET_KIND,
            "format_version": FORMAT_VERSION,
            "version": version or f"{created:%Y%m%d}-{sha[:8]}",
            "sha256": sha,
            "created": created.isoformat(),
            "source_build": {"path": str(build.resolve()), "manifest_sha256": sha256_file(manifest_path)},
            "files": files,
            "counts": _counts(pairs, answers, general),
        }
        meta["warnings"] = [w for w in [power_warning(meta["counts"]["users"], gate_config)] if w]
        write_json_atomic(tmp / "eval_set.json", meta)
        for p in tmp.iterdir():
            p.chmod(0o444)
    return meta


def load_eval_set(path: str | os.PathLike) -> dict:
    """Read an eval set, verifying every file's hash; returns meta plus `pairs`, `answers`, `general` lists."""
    path = Path(path)
    meta_path = path / "eval_set.json"
    if not meta_path.is_file():
        raise EvalSetError(f"{path}: not an eval set (no eval_set.json); make one with `flywheel eval freeze`")
    meta = json.loads(meta_path.read_text())
    if meta.get("kind") != EVAL_SET_KIND:
        raise EvalSetError(f"{meta_path}: field 'kind' is {meta.get('kind')!r}, expected {EVAL_SET_KIND!r}")
    files = meta.get("files") or {}
    for name in ITEM_FILES:
        expected = files.get(name)
        actual = sha256_file(path / name) if (path / name).is_file() else None
        if expected is None or actual != expected:
            raise EvalSetError(f"{path / name}: sha256 {actual} does not match eval_set.json ({expected}); "
                               "the eval set was changed after it was frozen")
    if sha256_json(files) != meta.get("sha256"):
        raise EvalSetError(f"{meta_path}: field 'sha256' does not match its file hashes")
    loaded = dict(meta)
    loaded["path"] = str(path.resolve())
    for name in ITEM_FILES:
        with open(path / name) as f:
            loaded[name.removesuffix(".jsonl")] = [json.loads(line) for line in f if line.strip()]
    return loaded
