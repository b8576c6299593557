"""Every public function of jaxlearn is annotated (``py.typed``): ``typing.get_type_hints`` resolves
its annotations (every forward reference names something importable from its module) and they
cover every parameter except ``*args``/``**kwargs``, and the return.

Names imported under ``if TYPE_CHECKING:`` (to avoid an import cycle, or a heavy import such as
matplotlib's ``Figure``) count as resolvable: the module's ``TYPE_CHECKING`` blocks are run for the
check. Public: the callables in ``__all__`` of the packages below that are not classes. A callable object
(a loss of :mod:`jaxlearn.train.losses`) is checked through its class's ``__call__``.
"""
import ast
import functools
import importlib
import inspect
import sys
import typing
from pathlib import Path

import pytest

PACKAGES = ["nn", "data", "train", "kernels", "landscape", "rules", "analysis", "runner", "compat.neural_tangents"]


def public_functions():
    found = []
    for package in PACKAGES:
        module = importlib.import_module(f"jaxlearn.{package}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or not callable(obj):
                continue
            try:
                inspect.signature(obj)
            except (TypeError, ValueError):
                continue
            found.append((f"{package}.{name}", obj))
    return found


@functools.cache
def annotation_namespace(module_name: str) -> dict:
    """The module's globals, plus what its top-level ``if TYPE_CHECKING:`` blocks import."""
    module = sys.modules[module_name]
    source = Path(module.__file__).read_text()
    if "TYPE_CHECKING" not in source:
        return vars(module)
    namespace = dict(vars(module))
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module.__file__, "exec"), namespace)
    return namespace


def missing_annotations(obj) -> list:
    """What of ``obj``'s signature its resolved type hints do not cover (raises if they do not resolve)."""
    target = obj if inspect.isroutine(inspect.unwrap(obj)) else type(obj).__call__
    hints = typing.get_type_hints(target, globalns=annotation_namespace(inspect.unwrap(target).__module__))
    signature = inspect.signature(target)
    missing = [p.name for p in signature.parameters.values()
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self" and p.name not in hints]
    if "return" not in hints:
        missing.append("return")
    return missing


def test_public_functions_are_annotated():
    functions = public_functions()
    assert len(functions) > 200
    problems = []
    for name, obj in functions:
        try:
            missing = missing_annotations(obj)
        except Exception as error:  # an unresolvable forward reference, or an annotation that is not a type
            problems.append(f"{name}: get_type_hints fails: {type(error).__name__}: {error}")
            continue
        if missing:
            problems.append(f"{name}: no annotation for {', '.join(missing)}")
    if problems:
        pytest.fail(f"{len(problems)} of {len(functions)} public functions not fully annotated:\n"
                    + "\n".join(problems), pytrace=False)
