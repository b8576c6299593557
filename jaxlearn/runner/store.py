"""The on-disk run store. ``<root>/<experiment>/<run_id>/`` holds run.json (id, experiment,
version, config; written once), status.json, metrics.jsonl (one JSON object per line),
provenance.json and the ``.claim`` lock file; ``<root>/index.sqlite`` caches them for fast
listing. The directories are the truth. Writes are atomic (or fsynced appends); nothing is
pickled.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_MIN_PREFIX, _MAX_SHOWN = 4, 5


class StoreError(ValueError):
    """A bad name, a missing or ambiguous run, or a refused or unreadable store file."""


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is 1 to 128 characters of ``[A-Za-z0-9_.-]`` not starting with
    ``.`` (a safe single path component), else raise :class:`StoreError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StoreError(f"{what} {name!r}: expected 1 to 128 characters of [A-Za-z0-9_.-] "
                         "not starting with '.'")
    return name


def run_dir(root, experiment: str, run_id: str) -> pathlib.Path:
    """The absolute directory ``<root>/<experiment>/<run_id>``, after checking both names and
    that its resolved path lies inside the resolved root (no traversal, no symlink escape)."""
    check_name(experiment, "experiment")
    check_name(run_id, "run id")
    base = pathlib.Path(root).resolve()
    path = base / experiment / run_id
    if not path.resolve().is_relative_to(base):
        raise StoreError(f"run directory {path} resolves to {path.resolve()}, outside the run "
                         f"root {base}")
    return path


_run_dir = run_dir  # for methods whose argument is called run_dir


def _subdirs(path) -> list[os.DirEntry]:
    """The valid-named subdirectories of ``path`` (none if it is absent)."""
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if _NAME.fullmatch(e.name) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _run_dirs(base):
    """(experiment, run_id, path string, reached through a symlink) of each ``base/*/*``."""
    for exp in _subdirs(base):
        for run in _subdirs(exp.path):
            yield exp.name, run.name, run.path, exp.is_symlink() or run.is_symlink()


def resolve_run(root, ref: str) -> pathlib.Path:
    """The directory of the run a user refers to as ``"experiment/run_id"``, a full run id or
    a unique prefix (at least 4 characters) of one, searched in every ``<root>/<experiment>/``.
    A bad, missing or ambiguous reference raises :class:`StoreError` (naming up to 5 runs)."""
    base = pathlib.Path(root)
    if isinstance(ref, str) and "/" in ref:
        parts = ref.split("/")
        if len(parts) != 2:
            raise StoreError(f"run reference {ref!r}: expected 'experiment/run_id', a run id "
                             "or a prefix of one")
        path = run_dir(base, *parts)
        if not path.is_dir():
            raise StoreError(f"no run {ref!r} under {base}")
        return path
    check_name(ref, "run reference")
    runs = [(exp, rid) for exp, rid, _, _ in _run_dirs(base) if rid.startswith(ref)]
    found = [run for run in runs if run[1] == ref] or (runs if len(ref) >= _MIN_PREFIX else [])
    if len(found) == 1:
        return run_dir(base, *found[0])
    if not found:
        hint = f" (a prefix needs at least {_MIN_PREFIX} characters)" if runs else ""
        raise StoreError(f"no run {ref!r} under {base}{hint}")
    shown = ", ".join(f"{e}/{r}" for e, r in sorted(found)[:_MAX_SHOWN])
    more = f", ... ({len(found)} in all)" if len(found) > _MAX_SHOWN else ""
    raise StoreError(f"run reference {ref!r} is ambiguous: {shown}{more}; give more characters "
                     "or 'experiment/run_id'")


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


class RunClaim:
    """Exclusive claim of a run by this process: ``flock(LOCK_EX | LOCK_NB)`` on ``<dir>/.claim``.

    Released by :meth:`release` (or leaving a ``with`` block) or by the kernel when the process
    dies, even by SIGKILL, so a crashed run can be re-claimed. The lock belongs to the open
    file: a second claim in the same process fails too, and child processes do not inherit
    it. The ``.claim`` file is never deleted (that would race).
    """

    def __init__(self, directory: pathlib.Path, fd: int):
        self.directory, self._fd = directory, fd

    @classmethod
    def try_acquire(cls, directory) -> RunClaim | None:
        """Claim ``directory`` (created if absent); None if another claim holds it."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".claim", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            note = {"pid": os.getpid(), "host": socket.gethostname(), "time": now_iso()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, BlockingIOError):
                return None
            raise
        return cls(directory, fd)

    @property
    def held(self) -> bool:
        """Whether this claim has not been released yet."""
        return self._fd is not None

    def release(self) -> None:
        """Give the claim up (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:  # unlock explicitly: a forked child may share the open file
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


_SCHEMA = 1
_COLUMNS = ("experiment", "run_id", "version", "status", "step", "grp", "diverged_step",
            "started", "updated", "config", "final_metrics", "dir", "mtime_ns", "stamp")
_SELECT = f"SELECT {', '.join(_COLUMNS[:12])} FROM runs"
_INSERT = f"INSERT OR REPLACE INTO runs VALUES ({', '.join('?' * len(_COLUMNS))})"


def _stamp(st: os.stat_result | None) -> str | None:
    """Change marker of status.json: mtime, size and inode (new at every atomic write)."""
    return None if st is None else f"{st.st_mtime_ns}:{st.st_ino}:{st.st_size}"


def _stat(path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class Index:
    """SQLite index of the runs under ``root`` at ``<root>/index.sqlite``: a cache, rebuildable
    from the directories. WAL journal, 30 s busy timeout, one connection per instance; several
    processes may use it at once. :meth:`sync` catches up with directories written by others.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.root / "index.sqlite", timeout=30.0,
                                     isolation_level=None)
        try:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            deadline = time.monotonic() + 30.0
            while True:  # switching a new file to WAL can fail at once instead of waiting
                try:
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
            if self._schema() != _SCHEMA:  # create it, or drop another version's: a cache
                with self._transaction() as c:
                    if self._schema() != _SCHEMA:  # unless another process was quicker
                        c.execute("DROP TABLE IF EXISTS runs")
                        c.execute(f"CREATE TABLE runs ({', '.join(_COLUMNS)}, "
                                  "PRIMARY KEY (experiment, run_id))")
                        c.execute("CREATE INDEX runs_order ON runs (experiment, started, run_id)")
                        c.execute(f"PRAGMA user_version = {_SCHEMA}")
        except BaseException:
            self.close()
            raise

    def _schema(self) -> int:
        return self._c.execute("PRAGMA user_version").fetchone()[0]

    @property
    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"index of {self.root} is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self):
        c = self._c
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _record(self, directory: str) -> tuple:
        """The row of a run directory, from its run.json and status.json only."""
        run = read_json(os.path.join(directory, "run.json"))
        parent, rid = os.path.split(directory)
        if not isinstance(run, dict) or (run.get("experiment"), run.get("run_id")) != (
                os.path.basename(parent), rid):
            raise StoreError(f"{directory}/run.json does not describe run "
                             f"{os.path.basename(parent)}/{rid}")
        status_path = os.path.join(directory, "status.json")
        st = _stat(status_path)  # before reading, so a later change shows at the next sync
        status = {} if st is None else read_json(status_path)
        if not isinstance(status, dict):
            raise StoreError(f"{directory}/status.json: expected a JSON object")
        return (run["experiment"], run["run_id"], json.dumps(run.get("version")),
                status.get("status"), status.get("step"), status.get("group"),
                status.get("diverged_step"), status.get("started"), status.get("updated"),
                json.dumps(run.get("config") or {}, sort_keys=True),
                json.dumps(status.get("final_metrics") or {}, sort_keys=True),
                str(directory), None if st is None else st.st_mtime_ns, _stamp(st))

    def upsert(self, run_dir) -> None:
        """Insert or replace the row of one run directory (reads run.json and status.json)."""
        given = pathlib.Path(run_dir).absolute()
        expected = _run_dir(self.root, given.parent.name, given.name)
        if given.resolve() != expected.resolve():
            raise StoreError(f"{given} is not a run directory of the index's root {self.root}")
        self._c.execute(_INSERT, self._record(str(expected)))

    def remove(self, experiment: str, run_id: str) -> None:
        """Drop the row of a run (its directory is untouched)."""
        self._c.execute("DELETE FROM runs WHERE experiment = ? AND run_id = ?",
                        (experiment, run_id))

    def rows(self, experiment: str | None = None, status: str | None = None,
             run_ids: Iterable[str] | None = None) -> list[dict]:
        """Rows matching every given filter, sorted by (experiment, started, run_id); each has
        run_id, experiment, version, status, step, group, diverged_step, started, updated,
        config (dict), final_metrics (dict) and dir (absolute path string)."""
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be an iterable of run ids, not a string")
        where, args = [], []
        for column, value in (("experiment", experiment), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if run_ids is not None:
            where.append("run_id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(run_ids)))
        sql = _SELECT + "".join(f" {'AND' if i else 'WHERE'} {w}" for i, w in enumerate(where))
        values = self._c.execute(sql + " ORDER BY experiment, started, run_id", args).fetchall()
        loads = json.loads
        return [{"experiment": e, "run_id": r, "version": loads(v), "status": s, "step": n,
                 "group": g, "diverged_step": d, "started": t0, "updated": t1,
                 "config": loads(cfg), "final_metrics": loads(fm), "dir": path}
                for e, r, v, s, n, g, d, t0, t1, cfg, fm, path in values]

    def _scan(self) -> dict[tuple[str, str], str]:
        """Every ``<root>/<experiment>/<run_id>`` directory holding a run.json."""
        found = {}
        for exp, rid, path, linked in _run_dirs(self.root):
            if linked:
                path = str(run_dir(self.root, exp, rid))
            if os.path.exists(os.path.join(path, "run.json")):
                found[exp, rid] = path
        return found

    def _replace_all(self, records: Iterable[tuple]) -> None:
        """Replace the whole table with ``records`` (column tuples) in one transaction."""
        with self._transaction() as c:
            c.execute("DELETE FROM runs")
            c.executemany(_INSERT, records)

    def rebuild(self) -> int:
        """Re-index every run directory from scratch; returns the number of runs indexed."""
        records = [self._record(d) for d in self._scan().values()]
        self._replace_all(records)
        return len(records)

    def sync(self) -> None:
        """Cheap repair: re-read runs whose status.json changed (mtime, size or inode) since
        indexed, add unindexed run directories, drop rows whose directory or run.json vanished.
        """
        known = {(e, r): s for e, r, s in self._c.execute(
            "SELECT experiment, run_id, stamp FROM runs")}
        on_disk = self._scan()
        # Files are read outside the write transaction so other writers are not held up; a row
        # overwritten meanwhile by an older read keeps the older stamp and is redone next time.
        stale = [self._record(d) for key, d in on_disk.items()
                 if key not in known
                 or known[key] != _stamp(_stat(os.path.join(d, "status.json")))]
        gone = list(known.keys() - on_disk.keys())
        if stale or gone:
            with self._transaction() as c:
                c.executemany("DELETE FROM runs WHERE experiment = ? AND run_id = ?", gone)
                c.executemany(_INSERT, stale)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _git(*args: str) -> str | None:
    """Stdout of ``git args`` in the working directory, or None on any failure."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(argv: list[str] | None = None) -> dict:
    """Where and how a run was produced: git commit and dirty flag of the working directory's
    repository (None outside one), Python version, platform, hostname, versions of jax,
    jaxlib, flax, optax, numpy and jaxlearn (None when missing), the command line
    (``sys.argv`` by default) and the UTC time. Never raises; does not import jax."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit is not None else None
    return {"git_commit": None if commit is None else commit.strip(),
            "git_dirty": None if status is None else bool(status.strip()),
            "python": platform.python_version(), "platform": platform.platform(),
            "hostname": socket.gethostname(),
            "packages": {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy",
                                                  "jaxlearn")},
            "argv": list(sys.argv if argv is None else argv), "time": now_iso()}


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. ``2025-01-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
