"""The documentation's runnable examples, and a runner for them: ``python -m tests.docs.examples [ITEM ...]``.

* Python blocks of the README and of the pages under docs/ (not the reproduction gallery or the
  scaling notes, which show commands): each page's blocks run in order in one namespace (a guide
  builds on its earlier blocks). Blocks tagged ``python3`` are another library's code (the migration
  guide): highlighted on the site, not run. A block preceded by ``<!-- docs-test: skip REASON -->`` is
  not run; :data:`SKIPPED` lists those, so an exclusion is a visible change.
* Docstring examples (``>>>``) of every module of the public subpackages, by doctest.

The runner executes every item (or the pages and modules named on the command line) in one process,
prints one line per item with its time, and exits 1 if any fails. tests/docs/test_examples.py runs it
in a subprocess in float32 (the default a user sees) at XLA's backend optimisation level 0 (compiling
dominates these small examples; the results are the same), from a scratch directory holding a link to
the repository's ``configs/``.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pathlib
import pkgutil
import sys
import time
import traceback

from tests.docs.markdown import DOCS, ROOT, code_blocks

PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.glob("*.md") if p.stem not in ("reproductions", "scaling")),
         *sorted((DOCS / "guides").glob("*.md"))]
# (file, reason) of every block that does not run.
SKIPPED = {
    ("docs/guides/runner.md", "a module of experiments/ (init, segment and the hooks are found by the runner); "
                              "the skeleton jaxlearn new-experiment writes is run by its test"),
}
SUBPACKAGES = ["nn", "data", "train", "kernels", "landscape", "rules", "analysis", "runner"]
# ... and the private home of a public function (rules.forward_mode_safe, re-exported)
EXTRA_MODULES = ["jaxlearn._jaxpr.forward_mode"]
PYTHON = {"python", "py", "pycon"}


def example_modules() -> list[str]:
    """The modules whose docstrings hold ``>>>`` examples (found from the source, before importing)."""
    names = list(EXTRA_MODULES)
    for sub in SUBPACKAGES:
        package = importlib.import_module(f"jaxlearn.{sub}")
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.split(".")[-1].startswith("_"):  # private modules: listed in EXTRA_MODULES
                continue
            source = importlib.util.find_spec(info.name).origin
            if source and source.endswith(".py") and ">>>" in pathlib.Path(source).read_text(encoding="utf-8"):
                names.append(info.name)
    return sorted(set(names))


def docstring_examples(module_name: str) -> list[doctest.DocTest]:
    """The doctests of one module: its own objects only, not those it imports."""
    module = importlib.import_module(module_name)
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module_name) if t.examples]


def run_page(path: pathlib.Path) -> str | None:
    """Runs the page's Python blocks; the failure as text, or None."""
    namespace = {"__name__": f"docs_example_{path.stem}"}
    for block in code_blocks(path):
        if block.lang not in PYTHON or block.skip:
            continue
        try:
            exec(compile(block.code, block.where, "exec"), namespace)
        except Exception:
            return f"the example at {block.where} fails:\n{traceback.format_exc()}"
    return None


def run_doctests(module_name: str) -> str | None:
    """Runs a module's docstring examples; the doctest report of the failures, or None."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in docstring_examples(module_name):
        out = []
        if runner.run(test, out=out.append).failed:
            report.append("".join(out))
    return "\n".join(report) or None


def main(argv: list[str]) -> int:
    pages = [p for p in PAGES if any(b.lang in PYTHON for b in code_blocks(p))]
    modules = example_modules()
    if argv:
        pages = [p for p in pages if str(p.relative_to(ROOT)) in argv]
        modules = [m for m in modules if m in argv]
    items = [(str(p.relative_to(ROOT)), run_page, p) for p in pages] + [(m, run_doctests, m) for m in modules]
    failures, start = [], time.perf_counter()
    for name, run, arg in items:
        t = time.perf_counter()
        failure = run(arg)
        print(f"{'FAIL' if failure else 'ok  '} {time.perf_counter() - t:6.1f} s  {name}", flush=True)
        if failure:
            failures.append(f"--- {name}\n{failure}")
    print(f"{len(items) - len(failures)} passed, {len(failures)} failed in {time.perf_counter() - start:.1f} s")
    print("\n".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
