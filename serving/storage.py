"""Where the registry keeps its files: a local folder, or any fsspec filesystem (s3://, gs://, memory://, file://).

The registry needs five things from a store: read a file, write a file so that readers see the old or the new
content and nothing in between, copy a local folder in under a name that appears only once it is complete, list a
folder, and a lock that serialises writers. Local folders get all five from POSIX (rename, fcntl). fsspec stores
get them as far as the backend allows: a single object PUT is atomic on S3/GCS, a folder copy is not, so a folder
is uploaded under a temporary name and moved; the lock is a local fcntl lock keyed by the registry URL, which
serialises promotions made from one machine (see docs/registry.md for running several promoters).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator

from flywheel.files import atomic_dir, write_text_atomic

LOCK_NAME = ".lock"


class RegistryLocked(RuntimeError):
    """Another promotion held the registry lock for longer than the timeout."""


def _flock(lock_path: Path, timeout_s: float) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryLocked(
                        f"{lock_path}: another promotion holds the registry lock (waited {timeout_s:.0f} s)"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            # The kernel drops the lock when the process dies, so a killed promotion never leaves it held.
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class LocalStorage:
    """A registry in a local folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = str(Path(root).expanduser().resolve())
        self.url = self.root

    def join(self, *parts: str) -> str:
        return str(Path(self.root, *parts))

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def read_text(self, path: str) -> str:
        return Path(path).read_text()

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write_text(self, path: str, text: str) -> None:
        write_text_atomic(path, text)
        os.chmod(path, 0o644)  # mkstemp makes 0600; the serving host may run as another user

    def remove(self, path: str) -> None:
        p = Path(path)
        if p.is_dir():
            for c in [p, *p.rglob("*")]:  # entries are read-only; rmtree needs write on folders
                if c.is_dir():
                    c.chmod(0o755)
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def listdir(self, path: str) -> list[str]:
        p = Path(path)
        return sorted(c.name for c in p.iterdir()) if p.is_dir() else []

    def put_dir(self, files: dict[str, Path | bytes], dest: str) -> None:
        """Write `files` (relative name -> local source file or content) as the new folder `dest`.

        `dest` must not exist yet; it appears in one rename, complete, or not at all.
        """
        with atomic_dir(dest, overwrite=False) as tmp:
            for name, src in files.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(src, bytes):
                    target.write_bytes(src)
                else:
                    shutil.copyfile(src, target)
            for p in tmp.rglob("*"):  # entries are immutable: make that visible to anyone who opens them
                p.chmod(0o444 if p.is_file() else 0o755)
            tmp.chmod(0o755)

    def local_path(self, path: str) -> Path | None:
        return Path(path)

    def url_for(self, path: str) -> str:
        return path

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 600.0) -> Iterator[None]:
        Path(self.root).mkdir(parents=True, exist_ok=True)
        yield from _flock(Path(self.root, LOCK_NAME), timeout_s)


class FsspecStorage:
    """A registry on any fsspec filesystem."""

    def __init__(self, url: str):
        import fsspec.core

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def read_text(self, path: str) -> str:
        return self.fs.cat_file(path).decode()

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def write_text(self, path: str, text: str) -> None:
        # Upload under a temporary name, then move: on object stores the final PUT is atomic per object.
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(tmp, text.encode())
        self.fs.mv(tmp, path)

    def remove(self, path: str) -> None:
        self.fs.rm(path, recursive=True)

    def listdir(self, path: str) -> list[str]:
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))

    def put_dir(self, files: dict[str, Path | bytes], dest: str) -> None:
        if self.fs.exists(dest):
            raise FileExistsError(f"{dest} already exists")
        parent, name = dest.rsplit("/", 1)
        tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex}"
        for rel, src in files.items():
            self.fs.makedirs(f"{tmp}/{rel}".rsplit("/", 1)[0], exist_ok=True)
            if isinstance(src, bytes):
                self.fs.pipe_file(f"{tmp}/{rel}", src)
            else:
                self.fs.put_file(str(src), f"{tmp}/{rel}")
        self.fs.mv(tmp, dest, recursive=True)

    def local_path(self, path: str) -> Path | None:
        return Path(path) if self.protocol in ("file", "local") else None

    def url_for(self, path: str) -> str:
        """What a reader outside this process opens: a plain path for local files, else the full URL."""
        return path if self.protocol in ("file", "local") else self.fs.unstrip_protocol(path)

    @contextlib.contextmanager
    def lock(self, timeout_s: float = 600.0) -> Iterator[None]:
        cache = Path(os.environ.get("FLYWHEEL_CACHE", Path.home() / ".cache" / "flywheel"))
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        yield from _flock(cache / "registry-locks" / f"{key}.lock", timeout_s)


def open_storage(registry: str | os.PathLike | None) -> LocalStorage | FsspecStorage:
    """`registry` is a folder or an fsspec URL; None means $FLYWHEEL_REGISTRY, else ./registry."""
    if registry is None:
        registry = os.environ.get("FLYWHEEL_REGISTRY", "registry")
    text = str(registry)
    if "://" in text:
        return FsspecStorage(text)
    return LocalStorage(text)
