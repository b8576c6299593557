"""Every code example of the documentation runs.

* Python blocks of the README and of the guides (docs/*.md, docs/guides/*.md): each file's blocks run
  in order in one namespace (a guide builds on its earlier blocks), in a scratch directory that sees
  the repository's ``configs/``. A block preceded by ``<!-- docs-test: skip REASON -->`` is not run
  (:data:`SKIPPED` lists them, so an exclusion is a visible change).
* Shell blocks: every ``configs/*.yaml`` they name exists, with each ``--variant`` they ask for.
* Docstring examples (``>>>``) of the subpackages, by doctest, per module.

They run in the float64 process (``make test`` runs the two side by side; this one is lighter on
compilation) but under ``jax.enable_x64(False)``: the examples show float32, the library's default,
as a user sees them.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pathlib
import pkgutil
import re

import jax
import pytest
import yaml

from tests.docs.markdown import DOCS, ROOT, code_blocks, markdown_files

# The pages whose Python blocks run (the reproduction gallery and the scaling notes show commands).
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted((DOCS / "guides").glob("*.md"))]
# (file, reason) of every block that does not run; the test fails when this drifts from the pages.
SKIPPED = {
    ("docs/guides/runner.md", "a module of experiments/ (init, segment and the hooks are found by the runner); "
                              "the skeleton jaxlearn new-experiment writes is run by its test"),
}
# Modules whose docstring examples run: every module of the public subpackages.
SUBPACKAGES = ["nn", "data", "train", "kernels", "landscape", "rules", "analysis", "runner"]
# ... and the private home of a public function (rules.forward_mode_safe, re-exported)
EXTRA_MODULES = ["jaxlearn._jaxpr.forward_mode"]
# At least this many public functions carry a docstring example (issue 29: about fifty).
MIN_DOCSTRING_EXAMPLES = 50

# Blocks tagged ``python`` run; ``python3`` marks another library's code (the migration guide): highlighted, not run.
PYTHON = {"python", "py", "pycon"}
SHELL = {"bash", "sh", "shell", "console"}


def _id(path):
    return str(path.relative_to(ROOT))


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A working directory with the repository's configs/ (runs/ and plots land here)."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.float64
@pytest.mark.parametrize("path", [p for p in PAGES if any(b.lang in PYTHON for b in code_blocks(p))], ids=_id)
def test_python_blocks_run(path, scratch):
    namespace = {"__name__": f"docs_example_{path.stem}"}
    with jax.enable_x64(False):
        for block in code_blocks(path):
            if block.lang not in PYTHON or block.skip:
                continue
            try:
                exec(compile(block.code, block.where, "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"the example at {block.where} fails: {type(err).__name__}: {err}") from err


def test_skipped_blocks_are_listed():
    found = {(_id(b.path), b.skip) for p in markdown_files() for b in code_blocks(p) if b.skip}
    assert found == SKIPPED


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


def example_modules():
    names = list(EXTRA_MODULES)
    for sub in SUBPACKAGES:
        package = importlib.import_module(f"jaxlearn.{sub}")
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.split(".")[-1].startswith("_"):  # private modules: listed in EXTRA_MODULES
                continue
            source = importlib.util.find_spec(info.name).origin
            if source and source.endswith(".py") and ">>>" in pathlib.Path(source).read_text(encoding="utf-8"):
                names.append(info.name)
    return sorted(set(names))


def docstring_examples(module_name):
    """The doctests of one module: its own objects only, not those it imports."""
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    return [t for t in tests if t.examples]


@pytest.mark.float64
@pytest.mark.parametrize("module_name", [m for m in example_modules() if m.count(".") > 1])
def test_docstring_examples_run(module_name, scratch):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    report = []
    with jax.enable_x64(False):
        for test in docstring_examples(module_name):
            out = []
            result = runner.run(test, out=out.append)
            if result.failed:
                report.append("".join(out))
    assert not report, "\n".join(report)


def test_enough_public_functions_have_examples():
    names = {t.name for m in example_modules() if m.count(".") > 1 for t in docstring_examples(m)}
    public = {n for n in names if not any(part.startswith("_") for part in n.split("."))}
    assert len(public) >= MIN_DOCSTRING_EXAMPLES, sorted(public)

