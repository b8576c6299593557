"""jaxlearn._jaxpr — private: everything in jaxlearn that reads a traced program.

Imports only JAX and the standard library, so every other package may use it.

* :mod:`~jaxlearn._jaxpr.tracing` — a function of pytrees as one closed jaxpr (``trace``), a model
  on one example with ``jit`` calls inlined (``trace_per_example``);
* :mod:`~jaxlearn._jaxpr.interpreter` — :class:`Interpreter`, subclassed with a rule per primitive
  by every client that evaluates a program on values of its own (structured derivatives, affine
  surfaces, the infinite-width kernels of flax modules);
* :mod:`~jaxlearn._jaxpr.equations` — one equation: ``bind`` it to new inputs, the program a call
  runs, where variables are read, every equation of nested programs (``walk``); the only user of
  ``jax.extend.core``;
* :mod:`~jaxlearn._jaxpr.primitives` — what primitives do, one set per property;
* :mod:`~jaxlearn._jaxpr.forward_mode` — which ``custom_vjp`` rules block ``jax.jvp``
  (re-exported by :mod:`jaxlearn.rules`).
"""

from jaxlearn._jaxpr import primitives
from jaxlearn._jaxpr.equations import bind, called_program, is_literal, readers, walk
from jaxlearn._jaxpr.forward_mode import ForwardModeReport, forward_mode_safe, require_forward_mode
from jaxlearn._jaxpr.interpreter import Interpreter
from jaxlearn._jaxpr.tracing import Traced, inline, trace, trace_per_example

__all__ = [
    "ForwardModeReport", "Interpreter", "Traced", "bind", "called_program", "forward_mode_safe", "inline",
    "is_literal", "primitives", "readers", "require_forward_mode", "trace", "trace_per_example", "walk",
]
