"""Type aliases of the public API's annotations, shared by every package.

Imports only ``typing`` and jax, so that every package (``nn`` and ``data`` included) can use it
without a cycle.

* ``PyTree`` — a pytree of arrays (parameters, state, gradients, directions): ``Any``, since a
  pytree's structure is the caller's;
* ``Array`` — what a function returns: a ``jax.Array``;
* ``ArrayLike`` — what an array argument accepts: a ``jax.Array``, a numpy array or a scalar;
* ``Scalar`` — a number that may also be a traced scalar (a population vmapped over it).
"""

from __future__ import annotations

from typing import Any

from jax import Array
from jax.typing import ArrayLike

__all__ = ["Array", "ArrayLike", "PyTree", "Scalar"]

PyTree = Any
Scalar = float | Array
