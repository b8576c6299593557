"""jaxlearn from a wheel, as ``pip install jaxlearn`` gives it: the studies come with the package.

The wheel is built from a copy of the sources (no network: no build isolation) and installed,
without dependencies, into a fresh virtual environment that reuses this test environment's
packages (``--system-site-packages`` reaches the base interpreter's; a ``.pth`` line adds this
environment's site-packages, which hold jax and the rest, but not their ``.pth`` hooks, so the
editable jaxlearn of a development install is not seen); this environment's pip installs it
(``pip --python``), so the new one needs none. From an empty directory, without the
repository on any path, ``jaxlearn run population_digits --variant smoke`` must find the study and
its config by name among the installed ones, train and pass its check.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "jaxlearn", "experiments", "configs")


def _run(command, cwd, env, timeout=300):
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command))} exited {done.returncode}:\n{done.stdout[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_the_studies_and_runs_one_by_name_from_an_empty_directory(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "--wheel-dir", tmp_path / "dist", source], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("jaxlearn-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                tmp_path, env).strip())
    (purelib / "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
         tmp_path, env)

    empty = tmp_path / "empty"
    empty.mkdir()
    found = _run([python, "-c", "import jaxlearn, jaxlearn.experiments.population_digits as m; "
                                "from jaxlearn.runner.sweep import installed_configs; "
                                "print(jaxlearn.__file__, m.__file__, installed_configs())"], empty, env).split()
    assert all(pathlib.Path(p).is_relative_to(venv) for p in found), found  # the wheel's files, not the clone's
    names = [{p.name for p in pathlib.Path(folder).glob("*.yaml")} for folder in (found[2], REPO / "configs")]
    assert names[0] == names[1]
    out = _run([venv / "bin" / "jaxlearn", "run", "population_digits", "--variant", "smoke", "--check", "--quiet",
                "--no-plot"], empty, env)
    assert "4 computed" in out and "check passed" in out, out
    assert sorted(p.name for p in empty.iterdir()) == ["runs"]  # nothing else written where it ran
