"""The documentation site builds with ``mkdocs build --strict`` (mkdocs.yml): every page in the nav,
every docstring of the API reference parsed without a warning, every anchor into a page found.

It runs in the float64 process (``make test`` runs the two processes side by side, and this one
compiles nothing): a subprocess of ~5 s on the 2-core dev machine.
"""

import os
import subprocess
import sys

import pytest

from tests.docs.markdown import ROOT


@pytest.mark.float64
def test_site_builds_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "api" / "kernels.html").exists()
