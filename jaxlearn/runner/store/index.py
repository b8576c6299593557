"""The SQLite index of a run store (``<root>/index.sqlite``): a cache of the run directories,
rebuildable from them."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import time
from typing import Iterable

from jaxlearn.runner.store.paths import StoreError, run_dir, run_dirs
from jaxlearn.runner.store.records import read_json

__all__ = ["Index"]

_run_dir = run_dir  # for methods whose argument is called run_dir

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
        for exp, rid, path, linked in run_dirs(self.root):
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
