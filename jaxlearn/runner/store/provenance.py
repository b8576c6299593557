"""Where and how a run was produced (git, Python, packages, host, command line)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys

from jaxlearn.runner.store.records import now_iso

__all__ = ["provenance"]

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
