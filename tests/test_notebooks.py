"""The notebooks of ``notebooks/`` (issue 28): they execute, their ``.ipynb`` is their script's, and their
Colab badges and install cells derive from ``[project.urls]``.

Execution: each notebook runs with ``FAST`` on in a fresh Jupyter kernel of this interpreter, in float32 at
XLA's backend optimisation level 0 on 8 emulated devices, from a scratch directory (tests/notebooks.py).
All six take about 40 s of kernel CPU time (their budget: 90 s of wall time on two idle cores; 64 s of wall
time measured at a load average of 10), nearly all of it kernel start-up, imports and compilation, so each
section of a notebook is one jitted function rather than eager calls that compile op by op. Like
``tests/docs/test_examples.py::test_examples_run`` they are marked ``float64`` so that they run from the
float64 process of ``make test``, which has the slack, and start their own float32 kernels. The other
checks are cheap and run in the float32 process.
"""

import json
import pathlib
import re
import sys
import tomllib

import pytest

from tests import notebooks

ROOT = notebooks.ROOT
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]
REPOSITORY = URLS["Repository"].rstrip("/")
GITHUB = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", REPOSITORY)
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
# any Colab link or pip-from-git requirement, wherever it points: each must be one derived from REPOSITORY
# (a backslash ends a URL: in the .ipynb's JSON strings a quote after it is escaped)
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"'\\]+")
GIT_URL = re.compile(r"git\+[^\s\"'\\]+")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


def colab_url(name: str) -> str:
    return f"https://colab.research.google.com/github/{GITHUB.group(1)}/blob/main/notebooks/{name}.ipynb"


def badge(name: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(name)})"


@pytest.fixture(scope="module")
def kernel_name():
    with notebooks.kernelspec(notebooks.kernel_env(fast=True)) as name:
        yield name


@pytest.mark.float64
@pytest.mark.slow
@pytest.mark.parametrize("name", notebooks.NAMES)
def test_notebook_runs(name, kernel_name, tmp_path):
    from nbclient.exceptions import CellExecutionError

    try:
        executed = notebooks.execute(notebooks.NOTEBOOKS / f"{name}.py", tmp_path, kernel_name, cell_timeout=120)
    except CellExecutionError as err:
        pytest.fail(f"notebooks/{name}.ipynb: a cell failed:\n{ANSI.sub('', str(err))}", pytrace=False)
    assert notebooks.kernel_python(executed) == sys.executable, "the kernel is not this test environment's Python"
    devices = "".join(o.get("text", "") for o in executed.cells[-2].outputs)
    assert "CpuDevice" in devices, f"the last cell should print jax.devices(), got {devices!r}"


def test_there_are_six_notebooks_and_nothing_else():
    found = {p.name for p in notebooks.NOTEBOOKS.iterdir() if not p.name.startswith(".")}
    assert found == {f"{n}{ext}" for n in notebooks.NAMES for ext in (".py", ".ipynb")}


@pytest.mark.parametrize("name", notebooks.NAMES)
def test_ipynb_is_its_scripts_conversion(name):
    script = notebooks.NOTEBOOKS / f"{name}.py"
    stored = script.with_suffix(".ipynb").read_text(encoding="utf-8")
    assert stored == notebooks.ipynb_text(script), (
        f"notebooks/{name}.ipynb is not what jupytext makes of notebooks/{name}.py: run `make notebooks-sync`")
    cells = json.loads(stored)["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), "outputs must be stripped"


@pytest.mark.parametrize("name", notebooks.NAMES)
def test_notebook_layout(name):
    cells = json.loads((notebooks.NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells]
    assert cells[0]["cell_type"] == "markdown" and sources[0].startswith(badge(name) + "\n"), (
        f"the first cell must open with the notebook's Colab badge:\n{badge(name)}")
    code = [(c, s) for c, s in zip(cells, sources) if c["cell_type"] == "code"]
    install, parameters = code[0], code[1]
    assert "except" in install[1] or "find_spec" in install[1], "the first code cell installs jaxlearn when missing"
    assert f"git+{REPOSITORY}" in install[1] and "[cuda12]" in install[1] and "nvidia-smi" in install[1]
    assert "parameters" in parameters[0]["metadata"].get("tags", []), "the second code cell is the parameters cell"
    assert 'FAST = os.environ.get("JAXLEARN_NOTEBOOK_FAST", "0") == "1"' in parameters[1]
    assert code[-1][1].strip() == "print(jax.devices())", "the notebook ends by printing the device that ran it"


@pytest.mark.parametrize("path", [*(f"notebooks/{n}{e}" for n in notebooks.NAMES for e in (".py", ".ipynb")),
                                  "README.md"])
def test_urls_derive_from_project_urls(path):
    """Every Colab link and pip-from-git URL is the one derived from [project.urls] Repository: changing the
    project's home is one edit in pyproject.toml, and this test names every place still pointing elsewhere."""
    assert GITHUB, f"[project.urls] Repository must be https://github.com/OWNER/NAME, got {REPOSITORY!r}"
    text = (ROOT / path).read_text(encoding="utf-8")
    allowed = {colab_url(n) for n in notebooks.NAMES}
    wrong = [u for u in COLAB_LINK.findall(text) if u not in allowed]
    wrong += [u for u in GIT_URL.findall(text) if u != f"git+{REPOSITORY}"]
    assert not wrong, f"{path}: URLs not derived from [project.urls] Repository = {REPOSITORY}: {wrong}"


def test_readme_lists_every_notebook_with_its_badge():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [n for n in notebooks.NAMES if badge(n) not in readme]
    assert not missing, f"README.md: no Colab badge for {missing}"


def test_sync_rewrites_only_stale_notebooks(monkeypatch, tmp_path):
    # sync() rewrites exactly the .ipynb that differ: a copy with one stale notebook gets that one back
    for name in notebooks.NAMES[:2]:
        for ext in (".py", ".ipynb"):
            (tmp_path / f"{name}{ext}").write_bytes((notebooks.NOTEBOOKS / f"{name}{ext}").read_bytes())
    (tmp_path / f"{notebooks.NAMES[1]}.ipynb").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path)
    monkeypatch.setattr(notebooks, "NAMES", notebooks.NAMES[:2])
    assert notebooks.sync() == [tmp_path / f"{notebooks.NAMES[1]}.ipynb"]
    assert notebooks.sync() == []
    assert pathlib.Path(tmp_path / f"{notebooks.NAMES[1]}.ipynb").read_text(encoding="utf-8") == \
        notebooks.ipynb_text(tmp_path / f"{notebooks.NAMES[1]}.py")
