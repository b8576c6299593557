"""Names and paths of the run store: safe names, run directories under a root, and a user's
reference to a run (an id, a unique prefix, or ``experiment/run_id``)."""

from __future__ import annotations

import os
import pathlib
import re

__all__ = ["StoreError", "check_name", "run_dir", "run_dirs", "resolve_run"]

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



def _subdirs(path) -> list[os.DirEntry]:
    """The valid-named subdirectories of ``path`` (none if it is absent)."""
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if _NAME.fullmatch(e.name) and e.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def run_dirs(base):
    """(experiment, run_id, path string, reached through a symlink) of each ``base/*/*``."""
    for exp in _subdirs(base):
        for run in _subdirs(exp.path):
            yield exp.name, run.name, run.path, exp.is_symlink() or run.is_symlink()


def resolve_run(root: str | os.PathLike, ref: str) -> pathlib.Path:
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
    runs = [(exp, rid) for exp, rid, _, _ in run_dirs(base) if rid.startswith(ref)]
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
