"""Runner test helper: collect a child process's output without leaving it behind."""

import subprocess


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
