"""The on-disk run store. ``<root>/<experiment>/<run_id>/`` holds run.json (id, experiment,
version, config; written once), status.json, metrics.jsonl (one JSON object per line),
provenance.json and the ``.claim`` lock file; ``<root>/index.sqlite`` caches them for fast
listing. The directories are the truth. Writes are atomic (or fsynced appends); nothing is
pickled.

One concern per module: :mod:`~jaxlearn.runner.store.paths` (names, run directories, run
references), :mod:`~jaxlearn.runner.store.records` (atomic writes, JSON and JSON lines),
:mod:`~jaxlearn.runner.store.claims` (run claims), :mod:`~jaxlearn.runner.store.index` (the
SQLite index) and :mod:`~jaxlearn.runner.store.provenance`; all re-exported here.
"""

from jaxlearn.runner.store.claims import RunClaim
from jaxlearn.runner.store.index import Index
from jaxlearn.runner.store.paths import StoreError, check_name, resolve_run, run_dir, run_dirs
from jaxlearn.runner.store.provenance import provenance
from jaxlearn.runner.store.records import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    now_iso,
    read_json,
    read_jsonl,
    truncate_jsonl,
    write_new_json,
)

__all__ = ["Index", "RunClaim", "StoreError", "append_jsonl", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "check_name", "now_iso", "provenance", "read_json", "read_jsonl", "resolve_run",
           "run_dir", "run_dirs", "truncate_jsonl", "write_new_json"]
