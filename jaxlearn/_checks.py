"""Argument checks shared by every package: the one home of "a positive int, not a bool", of
"is this value known yet (not traced)?" and of the "did you mean ...?" hint.

Messages are one line that names the argument and what it expects, in one of two forms:
``"{name} must be {expected}, got {value!r}"`` (``form="must"``) or
``"{name}: expected {expected}, got {value!r}"`` (``form="expected"``), prefixed by ``"{where}: "``
when the caller names itself (usually the public function; the form then defaults to "must").
Each check raises the caller's exception class (``error``: ``ValueError`` by default, a
``LayerError`` in ``nn``, a ``ConfigError`` in the runner).

Imports only the standard library, numpy and jax, so that every package (``nn`` and ``data``
included) can use it without a cycle.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable

import jax
import numpy as np

__all__ = [
    "check_bool",
    "check_choice",
    "check_int",
    "check_real",
    "concrete",
    "did_you_mean",
    "is_int",
    "is_real",
    "is_traced",
]


def is_int(value) -> bool:
    """A Python or NumPy integer scalar, and not a bool (``True`` is an ``int`` to Python, never a
    size or a count here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A Python or NumPy real scalar (int or float), and not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_traced(x) -> bool:
    """Whether any leaf of ``x`` is a tracer: its value is known only when the program runs (under
    ``jit``, ``vmap``, ``grad``, ...), so a check on the value must be skipped or deferred."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def concrete(x) -> np.ndarray | None:
    """``np.asarray(x)``, or ``None`` when ``x`` is traced (see :func:`is_traced`)."""
    return None if is_traced(x) else np.asarray(x)


def did_you_mean(name, options: Iterable, *, n: int = 1, prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` naming the option closest to ``name`` (up to ``n`` of them,
    joined by "or"), or ``""`` when none is close. Case is ignored (``"ReLU"`` → ``'relu'``);
    ``prefix`` is prepended to the suggestion (a dotted path, say)."""
    by_lower: dict[str, str] = {}
    for option in options:
        by_lower.setdefault(str(option).lower(), str(option))
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(prefix + by_lower[c]) for c in close)}?)"


def _message(where, form, name, expected, value) -> str:
    if form is None:
        form = "must" if where else "expected"
    text = f"{name} must be {expected}" if form == "must" else f"{name}: expected {expected}"
    return f"{where + ': ' if where else ''}{text}, got {value!r}"


def _fail(error, where, form, name, expected, value) -> Exception:
    return error(_message(where, form, name, expected, value))


def _int_expected(minimum, maximum, noun) -> str:
    if maximum is not None:
        return f"an {noun} in [{minimum}, {maximum}]" if minimum is not None else f"an {noun} <= {maximum}"
    if minimum == 1 and noun == "int":
        return "a positive int"
    return f"an {noun}" if minimum is None else f"an {noun} >= {minimum}"


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False, where: str | None = None, form: str | None = None,
              error: type[Exception] = ValueError, noun: str = "int", expected: str | None = None) -> int | None:
    """``value`` as a Python int in ``[minimum, maximum]`` (either bound may be None), else raise.

    Bools are rejected. ``optional``: ``None`` is accepted (and returned). The message describes
    what is expected as ``"a positive int"``, ``"an int >= 0"``, ``"an int in [1, 8]"`` (followed by
    ``" or None"`` when optional), or as ``expected`` when given. ``noun="integer"`` is the wording
    of the dataset constructors and the analysis functions, bounds always spelled out
    (``"an integer >= 1"``).
    """
    if optional and value is None:
        return None
    if (not is_int(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        if expected is None:
            expected = _int_expected(minimum, maximum, noun) + (" or None" if optional else "")
        raise _fail(error, where, form, name, expected, value)
    return int(value)


def _real_expected(minimum, maximum, open_minimum, open_maximum, finite) -> str:
    if minimum is not None and maximum is not None:
        return f"a number in {'(' if open_minimum else '['}{minimum}, {maximum}{')' if open_maximum else ']'}"
    noun = "finite number" if finite else "number"
    if minimum == 0 and open_minimum:
        return f"a positive {noun}"
    if minimum is not None:
        return f"a {noun} {'>' if open_minimum else '>='} {minimum}"
    if maximum is not None:
        return f"a {noun} {'<' if open_maximum else '<='} {maximum}"
    return f"a {noun}"


def check_real(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
               open_minimum: bool = False, open_maximum: bool = False, finite: bool = True,
               where: str | None = None, form: str | None = None, error: type[Exception] = ValueError,
               expected: str | None = None) -> float:
    """``value`` (a real Python or NumPy scalar, not a bool) as a Python float, else raise.

    Bounds are inclusive unless ``open_minimum`` / ``open_maximum``; ``finite`` rejects ±inf and
    NaN (NaN fails every bound anyway). ``expected`` replaces the generated description.
    """
    ok = is_real(value)
    if ok:
        v = float(value)
        ok = ((not finite or math.isfinite(v))
              and (minimum is None or (v > minimum if open_minimum else v >= minimum))
              and (maximum is None or (v < maximum if open_maximum else v <= maximum)))
    if not ok:
        if expected is None:
            expected = _real_expected(minimum, maximum, open_minimum, open_maximum, finite)
        raise _fail(error, where, form, name, expected, value)
    return v


def check_bool(value, name: str, *, where: str | None = None, form: str | None = None,
               error: type[Exception] = TypeError, expected: str = "a bool") -> bool:
    """``value`` as a Python bool if it is a bool (NumPy's too), else raise (a truthy non-bool is
    usually a misplaced argument, and a traced one cannot choose the program)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(error, where, form, name, expected, value)
    return bool(value)


def check_choice(value, name: str, choices: Iterable, *, where: str | None = None, form: str | None = None,
                 error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices``, else raise listing them, with the closest as a hint."""
    choices = list(choices)
    try:
        known = value in choices
    except (TypeError, ValueError):  # an array, or a value that does not compare
        known = False
    if not known:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise error(_message(where, form, name, f"one of {choices}", value) + hint)
    return value
