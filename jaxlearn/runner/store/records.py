"""How the run store writes and reads its records: atomic replacement (temporary file, fsync,
rename), write-once files, fsynced JSON-lines appends whose torn last line is ignored, and UTC
timestamps. Nothing is pickled."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Iterable

from jaxlearn.runner.store.paths import StoreError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "write_new_json", "read_json",
           "append_jsonl", "read_jsonl", "truncate_jsonl", "now_iso"]

def _fsync_dir(directory) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: pathlib.Path, data: bytes) -> str:
    """Write ``data`` durably to a new temporary file next to ``path``; return its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path, data: bytes) -> None:
    """Replace ``path`` (parent directories created) with ``data`` atomically and durably:
    readers see the old or the new content, and no temporary file is left, even on error."""
    path = pathlib.Path(path)
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _dump(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path, obj) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented, key-sorted JSON (NaN refused)."""
    atomic_write_bytes(path, _dump(obj))


def write_new_json(path, obj) -> None:
    """Like :func:`atomic_write_json`, but raise :class:`StoreError` if ``path`` exists. The
    finished temporary file is hard-linked to ``path`` (atomic create-if-absent), so of two
    racing writers exactly one succeeds."""
    path = pathlib.Path(path)
    tmp = _write_temp(path, _dump(obj))
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise StoreError(f"{path} exists; use --force") from None
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)


def read_json(path) -> Any:
    """Parse the JSON file at ``path``; unparsable content raises :class:`StoreError`."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as e:  # bad JSON or bad UTF-8
        raise StoreError(f"{path}: not valid JSON ({e})") from None


def append_jsonl(path, records: Iterable[dict]) -> None:
    """Append one compact JSON line per record (dicts) in a single ``write``, then fsync.
    A torn last line (no trailing newline, left by a crash mid-append) is cut off first."""
    lines = []
    for record in records:
        if not isinstance(record, dict):
            raise StoreError(f"{path}: records must be dicts, got {type(record).__name__}")
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True))
    if not lines:
        return
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # rare: read it all to find the cut
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        written = os.write(fd, data)
        while written < len(data):  # short writes only happen on exotic filesystems
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete_lines(path) -> list[tuple[bytes, dict]]:
    """(raw line, record) per complete line; a torn or unparsable final line is dropped."""
    try:
        lines = pathlib.Path(path).read_bytes().split(b"\n")[:-1]  # after the last \n: torn
    except FileNotFoundError:
        return []
    out = []
    for n, line in enumerate(lines):
        if line.strip():
            try:
                out.append((line, json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                if n < len(lines) - 1:
                    raise StoreError(f"{path}: line {n + 1} is not valid JSON ({e})") from None
    return out


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file, without a torn final line; a missing file gives []."""
    return [record for _, record in _complete_lines(path)]


def truncate_jsonl(path, keep: Callable[[dict], bool]) -> None:
    """Atomically rewrite ``path`` with only its complete lines whose record satisfies
    ``keep``, copied byte for byte. A missing file stays missing."""
    if os.path.exists(path):
        kept = [line + b"\n" for line, record in _complete_lines(path) if keep(record)]
        atomic_write_bytes(path, b"".join(kept))


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. ``2025-01-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
