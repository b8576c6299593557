"""neural-tangents 0.6.5's public API on jaxlearn: port code by changing one import.

    from jaxlearn.compat import neural_tangents as nt      # was: import neural_tangents as nt
    from jaxlearn.compat.neural_tangents import stax        # was: from neural_tangents import stax

* :mod:`~jaxlearn.compat.neural_tangents.stax` — layers as ``(init_fn, apply_fn, kernel_fn)`` with
  neural-tangents' defaults and argument order, built on :mod:`jaxlearn.nn` (one analytic kernel
  evaluation per network, :func:`jaxlearn.kernels.analytic`).
* :mod:`~jaxlearn.compat.neural_tangents.predict` — ``gradient_descent_mse``, ``gp_inference``,
  ``gradient_descent_mse_ensemble``, ``gradient_descent``, ``max_learning_rate``.
* ``empirical_ntk_fn``, ``empirical_nngp_fn``, ``empirical_kernel_fn`` (``NtkImplementation``),
  ``monte_carlo_kernel_fn``, ``batch``, ``linearize``, ``taylor_expand``, ``Kernel``.
* :func:`as_layer` — a compat triple as a :class:`jaxlearn.nn.Layer` (and ``stax.serial`` accepts
  jaxlearn layers), so both libraries' models mix.

What neural-tangents offers and jaxlearn cannot compute raises a one-line ``NotImplementedError``
naming it; ``docs/neural_tangents.md`` lists every name, what it maps to and what is not supported.
"""

from jaxlearn.compat.neural_tangents import predict, stax
from jaxlearn.compat.neural_tangents.batching import batch
from jaxlearn.compat.neural_tangents.empirical import (
    NtkImplementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
    linearize,
    monte_carlo_kernel_fn,
    taylor_expand,
)
from jaxlearn.compat.neural_tangents.kernel import Kernel
from jaxlearn.compat.neural_tangents.triple import as_layer

__version__ = "0.6.5"  # the neural-tangents release whose API this follows

__all__ = ["Kernel", "NtkImplementation", "as_layer", "batch", "empirical_kernel_fn", "empirical_nngp_fn",
           "empirical_ntk_fn", "linearize", "monte_carlo_kernel_fn", "predict", "stax", "taylor_expand"]
