"""Elementwise activation layers.

Each is a parameter-free :class:`~jaxlearn.nn.Layer`; :func:`activation` builds one by name
(the names config files use). Conventions follow neural-tangents' stax where it has the layer
(``Erf``: ``a·erf(b·x) + c``; ``ABRelu``: ``a·min(x, 0) + b·max(x, 0)``), so their infinite-width
maps (the duals of :mod:`jaxlearn.nn.dual`, evaluated by :func:`jaxlearn.kernels.analytic`) can be
checked against published values.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from jaxlearn._checks import did_you_mean
from jaxlearn._types import Scalar
from jaxlearn.nn import dual
from jaxlearn.nn.core import Identity, Layer, LayerError, describe_spec, stateless_layer
from jaxlearn.nn.kernel import elementwise_kernel

__all__ = [
    "Elementwise",
    "Relu",
    "LeakyRelu",
    "ABRelu",
    "Erf",
    "Gelu",
    "Tanh",
    "Sigmoid",
    "Sin",
    "Softplus",
    "activation",
    "ACTIVATIONS",
]


def Elementwise(fn: Callable, name: str = "Elementwise", dual: Callable | None = None) -> Layer:  # noqa: N802
    """A layer applying ``fn`` entrywise. ``dual(q11, q12, q22) -> (E[φ(u)φ(v)], E[φ'(u)φ'(v)])``
    (see :mod:`jaxlearn.nn.dual`) gives it an infinite-width kernel map
    (:func:`jaxlearn.nn.kernel.elementwise_kernel`); without one it has none."""

    def out_spec(spec):
        if isinstance(spec, tuple):
            raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")
        return spec

    kernel_fn = None if dual is None else (lambda k: elementwise_kernel(k, dual, name))
    return stateless_layer(name, out_spec, fn, kernel_fn)


def ABRelu(a: Scalar = 0.0, b: Scalar = 1.0) -> Layer:  # noqa: N802
    """``a·min(x, 0) + b·max(x, 0)``; ``a=0, b=1`` is ReLU, ``a=-1, b=1`` is ``|x|``."""
    return Elementwise(lambda x: a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0), f"ABRelu({a}, {b})",
                       functools.partial(dual.ab_relu_dual, a=a, b=b))


def Relu() -> Layer:  # noqa: N802
    """``max(x, 0)``."""
    return Elementwise(jax.nn.relu, "Relu", dual.relu_dual)


def LeakyRelu(alpha: Scalar = 0.01) -> Layer:  # noqa: N802
    """``x`` for ``x ≥ 0``, ``alpha·x`` otherwise (``ABRelu(alpha, 1)``)."""
    return Elementwise(lambda x: jnp.where(x >= 0, x, alpha * x), f"LeakyRelu({alpha})",
                       functools.partial(dual.leaky_relu_dual, alpha=alpha))


def Erf(a: Scalar = 1.0, b: Scalar = 1.0, c: Scalar = 0.0) -> Layer:  # noqa: N802
    """``a·erf(b·x) + c``."""
    return Elementwise(lambda x: a * erf(b * x) + c, "Erf", functools.partial(dual.erf_dual, a=a, b=b, c=c))


def Gelu() -> Layer:  # noqa: N802
    """Exact GELU (Hendrycks & Gimpel 2016): ``x·Φ(x) = x/2·(1 + erf(x/√2))``, not the tanh approximation."""
    return Elementwise(lambda x: jax.nn.gelu(x, approximate=False), "Gelu", dual.gelu_dual)


def Tanh() -> Layer:  # noqa: N802
    """``tanh(x)`` (no closed-form infinite-width kernel)."""
    return Elementwise(jnp.tanh, "Tanh")


def Sigmoid() -> Layer:  # noqa: N802
    """``1/(1 + e^{-x})``."""
    return Elementwise(jax.nn.sigmoid, "Sigmoid")


def Sin(a: Scalar = 1.0, b: Scalar = 1.0, c: Scalar = 0.0) -> Layer:  # noqa: N802
    """``a·sin(b·x + c)``."""
    return Elementwise(lambda x: a * jnp.sin(b * x + c), "Sin", functools.partial(dual.sin_dual, a=a, b=b, c=c))


def Softplus() -> Layer:  # noqa: N802
    """``log(1 + e^x)``."""
    return Elementwise(jax.nn.softplus, "Softplus")


ACTIVATIONS: dict[str, Callable[..., Layer]] = {
    "relu": Relu,
    "leaky_relu": LeakyRelu,
    "abrelu": ABRelu,
    "erf": Erf,
    "gelu": Gelu,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "sin": Sin,
    "softplus": Softplus,
    "identity": Identity,
}


def activation(name: str, **kwargs) -> Layer:
    """Builds an activation layer by name (``"relu"``, ``"tanh"``, ...; see ``ACTIVATIONS``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> relu = nn.activation("relu")
        >>> relu.apply((), jnp.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
        >>> nn.activation("erf", a=2.0).apply((), jnp.array([0.0, 10.0])).tolist()   # a·erf(b·x) + c
        [0.0, 2.0]
    """
    if name not in ACTIVATIONS:
        raise LayerError(f"activation: unknown name {name!r}{did_you_mean(name, ACTIVATIONS)}; "
                         f"expected one of {sorted(ACTIVATIONS)}")
    try:
        return ACTIVATIONS[name](**kwargs)
    except TypeError as e:
        raise LayerError(f"activation {name!r}: {e}") from None
