"""Runner test helpers: a child process's XLA flags, and its output collected without leaving it behind."""

import os
import subprocess

DEVICE_FLAG = "--xla_force_host_platform_device_count"


def xla_flags(devices: int) -> str:
    """The session's ``XLA_FLAGS`` (e.g. the float32 process's optimisation level) with the number
    of emulated CPU devices set to ``devices``: a child compiles as the test process does."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
    return " ".join([f"{DEVICE_FLAG}={devices}", *kept])


def finish(child: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """``(exit code, stdout)`` of ``child`` once it exits; killed (and reaped) if it is still
    running after ``timeout`` seconds or if collecting fails."""
    try:
        output = child.communicate(timeout=timeout)[0]
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return child.returncode, output
