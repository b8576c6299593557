"""Every code example of the documentation runs (tests/docs/examples.py says which and how).

The examples run in one subprocess, in float32 at XLA's backend optimisation level 0 with warnings as
errors, started from the float64 process: ``make test`` runs the float32 and float64 processes side by
side, and the float64 one has the slack (1126 s against 1426 s when last measured). The subprocess takes
about 90 s of CPU (43 items: 10 pages, 33 modules' doctests), nearly all of it compiling. The other
checks here are cheap and run in the float32 process.
"""

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.docs import examples
from tests.docs.markdown import ROOT, code_blocks, markdown_files

SHELL = {"bash", "sh", "shell", "console"}
# At least this many public functions carry a docstring example (issue 29: about fifty).
MIN_DOCSTRING_EXAMPLES = 50


def _id(path):
    return str(path.relative_to(ROOT))


@pytest.mark.float64
@pytest.mark.slow
def test_examples_run(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    env = dict(os.environ, JAX_ENABLE_X64="0", XLA_FLAGS=f"{flags} --xla_backend_optimization_level=0".strip(),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "tests.docs.examples"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"documentation examples failed:\n{proc.stdout}\n{proc.stderr}"


def test_a_failing_block_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n<!-- docs-test: skip not run -->\n```python\nraise SystemExit\n```\n\n"
                    "```python3\nimport not_installed\n```\n\n```python\nassert x == 2, 'x is 1'\n```\n",
                    encoding="utf-8")
    failure = examples.run_page(page)
    assert failure is not None and f"{page}:14" in failure and "x is 1" in failure


def test_skipped_blocks_are_listed():
    found = {(_id(b.path), b.skip) for p in markdown_files() for b in code_blocks(p) if b.skip}
    assert found == examples.SKIPPED


def test_every_page_with_python_runs():
    # a new page with Python blocks is run unless it is one of the two that only show commands
    with_python = {p for p in markdown_files() if any(b.lang in examples.PYTHON for b in code_blocks(p))}
    assert with_python <= set(examples.PAGES)


@pytest.mark.parametrize("path", markdown_files(), ids=_id)
def test_shell_blocks_name_existing_configs(path):
    problems = []
    for block in code_blocks(path):
        if block.lang not in SHELL:
            continue
        for line in block.code.splitlines():
            for config in re.findall(r"\bconfigs/[\w./-]+\.yaml\b", line):
                file = ROOT / config
                if not file.exists():
                    problems.append(f"{block.where}: {config} does not exist")
                    continue
                variants = (yaml.safe_load(file.read_text()) or {}).get("variants") or {}
                for variant in re.findall(r"--variant[ =](\w+)", line):
                    if variant not in variants:
                        problems.append(f"{block.where}: {config} has no variant {variant!r}")
    assert not problems, "\n".join(problems)


def test_enough_public_functions_have_examples():
    names = {t.name for m in examples.example_modules() for t in examples.docstring_examples(m)}
    public = {n for n in names if not any(part.startswith("_") for part in n.split(".")[1:] if part != "_jaxpr")}
    assert len(public) >= MIN_DOCSTRING_EXAMPLES, sorted(public)
