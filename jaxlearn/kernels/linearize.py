"""Linearized networks and feature-learning diagnostics.

:func:`linearize` is the first-order Taylor expansion of a network in its parameters (Lee et al.
2019, "Wide neural networks of any depth evolve as linear models under gradient descent", eq. 5):
``f_lin(θ, x) = f(θ0, x) + J(θ0, x)·(θ − θ0)``. It has the signature of ``apply`` so it trains
with the same loss, optimizer and loop; trained by gradient descent on MSE it follows
:func:`jaxlearn.kernels.gradient_descent_mse` with the empirical NTK at ``θ0`` exactly.

The diagnostics measure how far training leaves that regime; all are pure functions of arrays,
usable inside a jitted training segment (e.g. an experiment's ``evaluate``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlearn._types import Array, ArrayLike, PyTree

__all__ = ["linearize", "relative_weight_change", "kernel_distance", "kernel_target_alignment"]


def linearize(apply_fn: Callable, params_0: PyTree) -> Callable:
    """``f_lin(params, x, *args, **kwargs) = f(θ0, x) + J(θ0, x)·(params − θ0)`` with
    ``f = apply_fn`` and ``θ0 = params_0`` (one ``jax.jvp``: a forward pass and its tangent).

    ``apply_fn(params, x, *args, **kwargs)`` returns an array or a pytree of arrays (extra
    arguments, e.g. a BatchNorm ``state``, are held fixed). Needs forward mode: models with
    ``custom_vjp`` learning rules (feedback alignment, few-bit backward) raise a one-line error
    naming them — their backward pass is a rule's surrogate, not a derivative to expand in.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> f = lambda p, x: jnp.sin(p * x)
        >>> f_lin = kernels.linearize(f, jnp.array(0.0))          # f(0, x) + x·(p − 0)
        >>> f_lin(jnp.array(0.5), jnp.array([1.0, 2.0])).tolist()
        [0.5, 1.0]
    """

    from jaxlearn._jaxpr.forward_mode import require_forward_mode

    def f_lin(params, x, *args, **kwargs):
        def f(p):
            return apply_fn(p, x, *args, **kwargs)

        require_forward_mode("linearize(apply_fn)", f, params_0)
        delta = jax.tree.map(lambda p, p0: p - p0, params, params_0)
        out0, tangent = jax.jvp(f, (params_0,), (delta,))
        return jax.tree.map(jnp.add, out0, tangent)

    return f_lin


def relative_weight_change(params_t: PyTree, params_0: PyTree) -> Array:
    """``‖θ_t − θ_0‖ / ‖θ_0‖`` over all leaves (Frobenius/Euclidean norm of the flattened
    parameters); ``→ 0`` as width grows in the NTK (lazy) regime (Lee et al. 2019, Fig. 1;
    Chizat, Oyallon & Bach 2019).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> p0 = {"W": jnp.ones((2, 2))}
        >>> round(float(kernels.relative_weight_change({"W": 1.1 * jnp.ones((2, 2))}, p0)), 3)
        0.1
    """
    a, b = ravel_pytree(params_t)[0], ravel_pytree(params_0)[0]
    if a.shape != b.shape:
        raise ValueError(f"params_t: expected {b.size} parameters like params_0, got {a.size}")
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


def _check_same(k0, kt, names=("k_0", "k_t")):
    if jnp.shape(k0) != jnp.shape(kt):
        raise ValueError(f"{names[1]}: expected shape {tuple(jnp.shape(k0))} like {names[0]}, got "
                         f"{tuple(jnp.shape(kt))}")


def kernel_distance(k_0: ArrayLike, k_t: ArrayLike) -> Array:
    """``1 − ⟨K_0, K_t⟩_F / (‖K_0‖_F ‖K_t‖_F)``: 0 for kernels equal up to scale, up to 2 (Fort et
    al. 2020, "Deep learning versus kernel learning", eq. 3). Any matching shapes.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> k = jnp.array([[2.0, 1.0], [1.0, 2.0]])
        >>> round(float(kernels.kernel_distance(k, 3.0 * k)), 6)   # equal up to scale
        0.0
        >>> round(float(kernels.kernel_distance(k, jnp.eye(2))), 3)
        0.106
    """
    _check_same(k_0, k_t)
    k_0, k_t = jnp.ravel(k_0), jnp.ravel(k_t)
    return 1 - jnp.vdot(k_0, k_t) / (jnp.linalg.norm(k_0) * jnp.linalg.norm(k_t))


def kernel_target_alignment(k: ArrayLike, y: ArrayLike) -> Array:
    """``⟨K, Y Yᵀ⟩_F / (‖K‖_F ‖Y Yᵀ‖_F)`` for ``k (N, N)`` and targets ``y (N,)`` or ``(N, C)``
    (e.g. one-hot labels, or centred ones): the cosine between the kernel and the ideal kernel
    of the targets (Cristianini, Shawe-Taylor, Elisseeff & Kandola 2002, Def. 1; used for trained
    NTKs by Baratin et al. 2021). In ``[−1, 1]``; 1 when ``K ∝ Y Yᵀ``."""
    k = jnp.asarray(k)
    y = jnp.asarray(y)
    y = y[:, None] if y.ndim == 1 else y
    if k.ndim != 2 or k.shape[0] != k.shape[1] or y.ndim != 2 or y.shape[0] != k.shape[0]:
        raise ValueError(f"k, y: expected k (N, N) and y (N,) or (N, C) with the same N, got k {tuple(k.shape)} and "
                         f"y {tuple(y.shape)}")
    yy = y @ y.T
    return jnp.vdot(k, yy) / (jnp.linalg.norm(k) * jnp.linalg.norm(yy))
