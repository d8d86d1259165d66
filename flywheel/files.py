"""Atomic writes and content hashes: the seams between stages.

Every artefact a stage hands to the next (dataset builds, adapters, eval sets, gate reports, registry entries) is
written next to its final place and renamed into it, so a crash leaves either the old state or the new one, and
is identified by sha256 hashes that the next stage checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


def file_hashes(root: str | os.PathLike, pattern: str = "**/*") -> dict[str, str]:
    """sha256 of every file below `root`, keyed by its POSIX path relative to `root`."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


def tree_sha256(root: str | os.PathLike, pattern: str = "**/*", exclude: tuple[str, ...] = ()) -> str:
    """One hash for a folder: the hash of its sorted (relative path, file hash) list."""
    hashes = {k: v for k, v in file_hashes(root, pattern).items() if k not in exclude}
    return sha256_json(hashes)


def model_weights_sha256(model_dir: str | os.PathLike) -> str:
    """Identity of a model's weights: the hash of its *.safetensors (or *.bin) files, not its config or tokenizer."""
    model_dir = Path(model_dir)
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(model_dir.glob(pattern))
        if files:
            return sha256_json({p.name: sha256_file(p) for p in files})
    raise FileNotFoundError(f"{model_dir}: no *.safetensors or *.bin weights found")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On any exception (or a kill) the temporary folder is left behind under a dot-name or removed, and `final` is
    untouched. An existing `final` is swapped out by rename first, so there is no moment without a complete folder
    at a path a reader resolves (the old one is deleted only after the new one is in place).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists")
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), so parallel processes build a shared cache entry once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
