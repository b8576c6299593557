"""Exclusive claims of runs across processes (``flock`` on a run directory's ``.claim``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import socket

from jaxlearn.runner.store.records import now_iso

__all__ = ["RunClaim"]

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
