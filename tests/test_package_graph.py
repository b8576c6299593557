"""The package graph of jaxlearn (DESIGN.md, "Dependency direction"), read from the source.

Every module under ``jaxlearn/`` is parsed with :mod:`ast`; every import counts, the ones inside
functions included (a function-local import hides a cycle, it does not remove it), relative
imports are resolved, and ``importlib.import_module("jaxlearn....")`` with a literal name is an
import too. From those edges the tests require:

* no cycle among modules, and none among top-level packages;
* no private name (``_x``, not a dunder) taken from another module, by ``from m import _x`` or by
  ``m._x`` on an imported module: what another module needs is public in its home module. A
  private *module* (``_x.py``) is private to its parent package, except the top-level private
  packages ``jaxlearn._*`` (``_jaxpr``, ``_checks``), which exist to be imported by the library;
* the layering ``_*`` ← ``nn``, ``data`` ← ``train`` ← ``kernels``, ``landscape``, ``rules``,
  ``analysis`` ← ``runner``, ``compat`` ← ``jaxlearn/__init__.py``, ``__main__``: a package imports
  only packages of a lower layer, or its siblings in the private and the
  kernels/landscape/rules/analysis layers (without cycles); and nothing imports ``experiments``.

The checker is a few plain functions over a package directory, so the negative tests at the end
run it on small packages planted in ``tmp_path``.
"""
import ast
import dataclasses
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxlearn"

# Layer of each top-level package; a package may import a lower layer, and a sibling only in the
# layers listed in SIBLINGS_ALLOWED. Top-level names starting with "_" are private packages
# (layer 0); the package's own __init__/__main__ sit on top.
PRIVATE_LAYER = 0
LAYERS = {"nn": 1, "data": 1, "train": 2, "kernels": 3, "landscape": 3, "rules": 3, "analysis": 3,
          "runner": 4, "compat": 4}
TOP_LAYER = 5
SIBLINGS_ALLOWED = frozenset({0, 3})
FORBIDDEN_TOP = frozenset({"experiments"})


@dataclasses.dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both dotted module names) at ``source``'s line ``line``."""
    source: str
    target: str
    line: int


@dataclasses.dataclass(frozen=True)
class Problem:
    """A rule broken at ``module``'s line ``line``."""
    module: str
    line: int
    message: str

    def __str__(self):
        return f"{self.module}:{self.line}: {self.message}"


@dataclasses.dataclass(frozen=True)
class Graph:
    package: str
    modules: frozenset
    edges: tuple          # Edge between modules of the package
    problems: tuple       # Problem: private names, unknown or forbidden modules


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_files(root: Path, package: str) -> dict:
    """``{dotted module name: path}`` of every ``.py`` file under ``root`` (the package ``package``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(module: str, files: dict) -> bool:
    return files[module].name == "__init__.py"


def _resolve_relative(module: str, files: dict, level: int, name: str | None) -> str:
    base = module.split(".") if _is_package(module, files) else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


class _ModuleReader:
    """Collects one module's edges and problems (imports anywhere in the file, attribute uses)."""

    def __init__(self, module: str, package: str, files: dict):
        self.module, self.package, self.files = module, package, files
        self.edges, self.problems = [], []
        self.bound = {}   # local name -> module it names, for attribute access checks

    def ours(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def problem(self, node, message):
        self.problems.append(Problem(self.module, node.lineno, message))

    def add_edge(self, node, target: str):
        if target.split(".")[0] in FORBIDDEN_TOP:
            self.problem(node, f"imports {target} (nothing in {self.package} imports {target.split('.')[0]})")
            return
        if not self.ours(target):
            return
        if target not in self.files:
            self.problem(node, f"imports {target}, which is not a module of {self.package}")
            return
        self.check_private_module(node, target)
        if target != self.module:
            self.edges.append(Edge(self.module, target, node.lineno))

    def check_private_module(self, node, target: str):
        # a private module is private to its parent package; jaxlearn._x is the library's own
        parts = target.split(".")
        for i in range(2, len(parts)):
            parent = ".".join(parts[:i])
            if is_private(parts[i]) and not (self.module + ".").startswith(parent + "."):
                self.problem(node, f"imports the private module {'.'.join(parts[:i + 1])} from outside {parent}")

    def check_private_name(self, node, home: str, name: str):
        if is_private(name) and home != self.module:
            self.problem(node, f"uses the private name {name} of {home}")

    def read_import(self, node):
        for alias in node.names:
            self.add_edge(node, alias.name)
            if alias.asname:
                self.bound[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.bound[top] = top

    def read_import_from(self, node):
        home = _resolve_relative(self.module, self.files, node.level, node.module) if node.level else node.module
        for alias in node.names:
            submodule = f"{home}.{alias.name}"
            if alias.name != "*" and submodule in self.files:
                self.add_edge(node, submodule)
                self.bound[alias.asname or alias.name] = submodule
            else:
                self.add_edge(node, home)
                if self.ours(home):
                    self.check_private_name(node, home, alias.name)

    def read_call(self, node):
        # importlib.import_module("jaxlearn.x") / import_module("jaxlearn.x")
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if (called == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self.add_edge(node, node.args[0].value)

    def read_attribute(self, node):
        """``m._x`` (or ``m.sub._x``) where ``m`` names an imported module of the package; only the
        node's own last name is checked, the inner ``m.sub`` is a node of its own."""
        chain, base = [], node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in self.bound:
            return
        *path, last = reversed(chain)
        home = ".".join([self.bound[base.id], *path])
        if self.ours(home) and home in self.files and f"{home}.{last}" not in self.files:
            self.check_private_name(node, home, last)

    def read(self, tree):
        nodes = list(ast.walk(tree))  # every node, inside functions too
        readers = {ast.Import: self.read_import, ast.ImportFrom: self.read_import_from, ast.Call: self.read_call}
        for node in nodes:
            if type(node) in readers:
                readers[type(node)](node)
        for node in nodes:  # after the imports: a module bound anywhere in the file counts
            if isinstance(node, ast.Attribute):
                self.read_attribute(node)


def read_graph(root: Path, package: str) -> Graph:
    """Parses every module of the package at ``root`` into its import edges and private-name problems."""
    files = module_files(root, package)
    edges, problems = [], []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        reader = _ModuleReader(module, package, files)
        reader.read(tree)
        edges += reader.edges
        problems += reader.problems
    return Graph(package, frozenset(files), tuple(edges), tuple(problems))


def cycles(nodes, edges) -> list:
    """The strongly connected components of more than one node (Tarjan), each sorted: the cycles."""
    successors = {n: set() for n in nodes}
    for a, b in edges:
        successors[a].add(b)
    successors = {n: sorted(s) for n, s in successors.items()}
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(start):
        # iterative Tarjan, so deep graphs do not hit the recursion limit
        work = [(start, iter(successors[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(successors[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return sorted(found)


def top_package(module: str) -> str:
    """``jaxlearn.kernels.empirical`` -> ``kernels``; the package's own ``__init__``/``__main__`` ->
    the package's name (``jaxlearn``), the top of the layering."""
    parts = module.split(".")
    return parts[0] if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def layer(graph: Graph, package: str) -> int | None:
    if package == graph.package:
        return TOP_LAYER
    return PRIVATE_LAYER if package.startswith("_") else LAYERS.get(package)


def _cycle_message(what: str, component: list, links: list) -> str:
    return f"cycle among {what} {', '.join(component)}:\n    " + "\n    ".join(sorted(set(links)))


def module_cycle_problems(graph: Graph) -> list:
    found = []
    for component in cycles(graph.modules, {(e.source, e.target) for e in graph.edges}):
        inside = set(component)
        links = [f"{e.source} -> {e.target} (line {e.line})" for e in graph.edges
                 if e.source in inside and e.target in inside]
        found.append(_cycle_message("modules", component, links))
    return found


def package_cycle_problems(graph: Graph) -> list:
    between = [(top_package(e.source), top_package(e.target), e) for e in graph.edges]
    between = [(a, b, e) for a, b, e in between if a != b]
    found = []
    for component in cycles({top_package(m) for m in graph.modules}, {(a, b) for a, b, _ in between}):
        inside = set(component)
        links = [f"{a} -> {b}: {e.source} imports {e.target} (line {e.line})" for a, b, e in between
                 if a in inside and b in inside]
        found.append(_cycle_message("packages", component, links))
    return found


def layering_problems(graph: Graph) -> list:
    """Imports against the layering: upward, between siblings that may not, or of a package with no layer."""
    found = set()
    for e in graph.edges:
        source, target = top_package(e.source), top_package(e.target)
        if source == target:
            continue
        low, high = layer(graph, source), layer(graph, target)
        where = f"{e.source}:{e.line} imports {e.target}"
        if low is None or high is None:
            unknown = source if low is None else target
            found.add(f"{where}: package {unknown} has no layer (add it to LAYERS in {Path(__file__).name})")
        elif high > low:
            found.add(f"{where}: {source} (layer {low}) may not import {target} (layer {high})")
        elif high == low and low not in SIBLINGS_ALLOWED:
            found.add(f"{where}: {source} and {target} share layer {low}, whose packages import no sibling")
    return sorted(found)


def private_problems(graph: Graph) -> list:
    return sorted({str(p) for p in graph.problems})


# --- the library -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return read_graph(ROOT, "jaxlearn")


def _report(problems, what):
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems), pytrace=False)


def test_no_module_cycles(graph):
    _report(module_cycle_problems(graph), "import cycles among modules")


def test_no_package_cycles(graph):
    _report(package_cycle_problems(graph), "import cycles among top-level packages")


def test_no_private_names_cross_modules(graph):
    _report(private_problems(graph), "private names used outside their module (or unknown/forbidden imports)")


def test_layering(graph):
    _report(layering_problems(graph), "imports against the dependency direction of DESIGN.md")


def test_the_checker_sees_the_library(graph):
    # guards against a checker that passes because it reads nothing
    assert {"jaxlearn", "jaxlearn.nn.core", "jaxlearn.kernels.empirical", "jaxlearn.runner.cli"} <= graph.modules
    pairs = {(e.source, e.target) for e in graph.edges}
    assert ("jaxlearn.kernels.analytic", "jaxlearn.nn.kernel") in pairs  # a module-level import
    assert ("jaxlearn.kernels.analytic", "jaxlearn.kernels.flax_kernel") in pairs  # one inside a function


# --- the checker on planted packages -------------------------------------------------------------


def _plant(tmp_path, files: dict) -> Graph:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return read_graph(root, "pkg")


def test_finds_a_cycle_hidden_in_a_function(tmp_path):
    graph = _plant(tmp_path, {
        "kernels/__init__.py": "",
        "kernels/a.py": "from pkg.kernels.b import g\n",
        "kernels/b.py": "def g():\n    from . import a\n    return a\n",
    })
    (problem,) = module_cycle_problems(graph)
    assert "pkg.kernels.a, pkg.kernels.b" in problem and "pkg.kernels.b -> pkg.kernels.a (line 2)" in problem


def test_finds_a_package_cycle(tmp_path):
    graph = _plant(tmp_path, {
        "kernels/__init__.py": "", "kernels/a.py": "from pkg.landscape.b import f\n",
        "landscape/__init__.py": "", "landscape/b.py": "def f():\n    import pkg.kernels.c\n",
        "kernels/c.py": "",
    })
    assert not module_cycle_problems(graph)
    (problem,) = package_cycle_problems(graph)
    assert "kernels, landscape" in problem and "pkg.landscape.b imports pkg.kernels.c" in problem
    assert not layering_problems(graph)  # siblings may import each other, only not in a cycle


def test_finds_private_names(tmp_path):
    graph = _plant(tmp_path, {
        "nn/__init__.py": "",
        "nn/core.py": "_helper = 1\n__all__ = []\n",
        "nn/linear.py": "from .core import _helper, __all__\n",
        "nn/pooling.py": "import pkg.nn.core as core\nx = core._helper\ny = core.__all__\n",
        "nn/zoo.py": "from pkg import nn\nz = nn.core._helper\n",
        "nn/_secret.py": "", "nn/own.py": "from pkg.nn import _secret\n",
        "data/__init__.py": "", "data/a.py": "from pkg.nn import _secret\n",
        "_private/__init__.py": "", "data/b.py": "from pkg._private import thing\n",
    })
    assert private_problems(graph) == [
        "pkg.data.a:1: imports the private module pkg.nn._secret from outside pkg.nn",
        "pkg.nn.linear:1: uses the private name _helper of pkg.nn.core",
        "pkg.nn.pooling:2: uses the private name _helper of pkg.nn.core",
        "pkg.nn.zoo:2: uses the private name _helper of pkg.nn.core",
    ]


def test_finds_forbidden_directions(tmp_path):
    graph = _plant(tmp_path, {
        "__init__.py": "__version__ = '0'\n",
        "nn/__init__.py": "from pkg._jaxpr import trace\n",
        "data/__init__.py": "def f():\n    from pkg.nn import Dense\n",
        "train/__init__.py": "from pkg import __version__\n",
        "rules/__init__.py": "import importlib\nm = importlib.import_module('pkg.runner')\n",
        "runner/__init__.py": "import experiments.study\nfrom pkg.train import step\n",
        "newpkg/__init__.py": "import pkg.nn\n",
        "_jaxpr/__init__.py": "trace = None\n",
    })
    assert layering_problems(graph) == [
        "pkg.data:2 imports pkg.nn: data and nn share layer 1, whose packages import no sibling",
        "pkg.newpkg:1 imports pkg.nn: package newpkg has no layer (add it to LAYERS in test_package_graph.py)",
        "pkg.rules:2 imports pkg.runner: rules (layer 3) may not import runner (layer 4)",
        "pkg.train:1 imports pkg: train (layer 2) may not import pkg (layer 5)",
    ]
    assert private_problems(graph) == ["pkg.runner:1: imports experiments.study (nothing in pkg imports experiments)"]
