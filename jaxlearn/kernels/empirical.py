r"""Empirical (finite-width) NTK and NNGP of any ``apply(params, x)``.

For a network ``f(θ, x)`` with outputs ``(N, *out)`` the empirical NTK (Jacot et al. 2018) is

.. math::  \Theta(x_1, x_2) = \sum_p \frac{\partial f(\theta, x_1)}{\partial \theta_p}
           \frac{\partial f(\theta, x_2)}{\partial \theta_p} = J_1 J_2^\top ,

one entry per pair of output entries, and the empirical NNGP is the output product
``f(θ, x1) f(θ, x2)ᵀ``. Conventions are neural-tangents' (Novak et al. 2020, 2022):

* ``trace_axes`` — output axes summed over *and divided by their size* (a mean): with the default
  ``(-1,)`` a 10-class network gives ``Θ[n1, n2] = (1/10) Σ_o J1[n1, o]·J2[n2, o]``;
* ``diagonal_axes`` — output axes on which only the diagonal (``o1 = o2``) is kept; axis ``0``
  (the batch) keeps ``Θ[n, n]`` (with ``x2=None``);
* the result has shape ``(N1, N2, *rest)`` where each remaining output axis contributes two axes
  (``o1, o2``, interleaved in output order) or one (diagonal). A diagonal batch axis gives
  ``(N, *rest)``.

Three methods compute the same numbers (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast finite
width neural tangent kernel"):

* ``"jacobian"`` — Jacobian contraction: ``J = jacrev(f)`` per block, then ``Σ_p`` per leaf.
  Memory ``N·|out|·P``; works through ``custom_vjp`` rules (reverse mode only).
* ``"ntvp"`` — NTK-vector products: ``Θ·e = J1 (J2ᵀ e)`` for the basis vectors ``e`` of x2's
  outputs: one ``vjp`` and one linearized ``jvp`` each, no Jacobian. Needs forward mode (not
  through ``custom_vjp`` rules).
* ``"structured"`` — :mod:`jaxlearn.kernels.structured`: weights of ``dot_general`` (Dense) and
  ``conv_general_dilated`` (Conv), and their biases, are never differentiated directly; a
  weight's Jacobian is the outer product of the layer input and the output cotangent, contracted
  in that factorised form; a bias's is that cotangent (summed over the axes the bias is broadcast
  along). Other leaves: Jacobian contraction.

``"auto"`` (:func:`choose_method`) picks ``"structured"`` when the leaves it recognises hold at
least half of the parameters, else ``"jacobian"`` where forward mode is unavailable, else the
cheaper of ``"jacobian"`` and ``"ntvp"`` by a FLOP model. Jacobian contraction and structured
derivatives differentiate one example at a time (``apply(params, x[n:n+1])``): the kernel is a
function of pairs of examples, so a model whose outputs couple the examples of a batch (BatchNorm
in training mode) is evaluated per example. NTK-vector products do so for ``x2`` only: their
``jvp`` runs ``apply`` on all of ``x1`` (its block, with ``batch_size``) at once. Everything is
pure JAX (``jit``, ``vmap``, ``grad`` compose); models with state (BatchNorm) pass
``lambda p, x: model.apply(p, x, state)``, which freezes the statistics.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp

from jaxlearn._checks import check_int
from jaxlearn._compile import jit_when_eager
from jaxlearn._jaxpr.forward_mode import forward_mode_safe, require_forward_mode
from jaxlearn._types import Array, ArrayLike, PyTree
from jaxlearn.data.batching import merge_columns, merge_rows, split_rows
from jaxlearn.kernels.analytic import check_inputs
from jaxlearn.kernels.contract import Axes, contract, full_to_kernel
from jaxlearn.kernels.devices import Devices, map_kernel_blocks, resolve_devices
from jaxlearn.kernels.structured import is_supported, structured_kernel

__all__ = ["empirical", "METHODS", "choose_method"]

METHODS = ("auto", "jacobian", "ntvp", "structured")
_KINDS = ("ntk", "nngp")


# -- methods ----------------------------------------------------------------------------------


def _jacobian_kernel(f, params, x1, x2, axes):
    def jac(x):  # per example: |out| backward passes of one example each, leaves (N, *out, *leaf)
        return jax.vmap(lambda xn: jax.jacrev(lambda p: f(p, xn[None])[0])(params))(x)

    j1 = jac(x1)
    j2 = j1 if x2 is None else jac(x2)
    out_ndim = axes.ndim
    terms = [contract(axes, a, b, a.ndim - out_ndim) for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2))]
    return sum(terms[1:], terms[0])


# Basis vectors of x2's outputs per vmapped chunk of NTK-vector products.
_NTVP_CHUNK = 64


def _ntvp_kernel(f, params, x1, x2, axes):
    x2_ = x1 if x2 is None else x2
    out2 = jax.eval_shape(f, params, x2_)
    _, jvp1 = jax.linearize(lambda p: f(p, x1), params)
    n2, per_example = out2.shape[0], math.prod(out2.shape[1:])
    m = n2 * per_example

    def row(i):  # Θ·e_i for the basis vector e_i of x2's outputs: J1 (J2ᵀ e_i), J2ᵀ e_i from one example
        n, o = i // per_example, i % per_example
        y, vjp = jax.vjp(lambda p: f(p, jax.lax.dynamic_slice_in_dim(x2_, n, 1)), params)
        e = jax.nn.one_hot(o, per_example, dtype=y.dtype).reshape(y.shape)
        return jvp1(vjp(e)[0])

    chunk = min(m, _NTVP_CHUNK)
    rows = merge_rows(jax.lax.map(jax.vmap(row), split_rows(jnp.arange(m), chunk)), m)  # (N2·|out|, N1, *out)
    full = rows.reshape(out2.shape + rows.shape[1:])                                    # (N2, *out, N1, *out)
    nd = out2.ndim
    full = jnp.moveaxis(full, tuple(range(nd)), tuple(range(nd, 2 * nd)))               # (N1, *out, N2, *out)
    return full_to_kernel(axes, full)


def _nngp_kernel(f, params, x1, x2, axes):
    y1 = f(params, x1)
    y2 = y1 if x2 is None else f(params, x2)
    return contract(axes, y1, y2)


# -- choosing a method ------------------------------------------------------------------------


def choose_method(f: Callable, params: PyTree, x1: Array,
                  x2: Array | None = None) -> Literal["structured", "jacobian", "ntvp"]:
    """The method ``"auto"`` uses: ``"structured"`` when forward mode is not needed by it and the
    model's weights are recognised, else ``"jacobian"`` where forward mode is unavailable
    (``custom_vjp`` rules), else the cheaper of ``"jacobian"``/``"ntvp"`` by a FLOP model.

    FLOP model (``P`` parameters, ``O`` outputs per example, ``N1``, ``N2`` examples, a pass over
    one example ``≈ 2P``): Jacobian ``≈ (N1 + N2)·O`` backward passes plus the contraction
    ``N1·N2·O·P`` (``·O`` more without a trace); NTK-vector products ``≈ N2·O`` one-example
    ``vjp`` s and as many ``jvp`` s over the ``N1`` examples. Structured derivatives replace the
    contraction over weight entries by Gram products, and need no forward mode."""

    if is_supported(f, params, x1):
        return "structured"
    if not forward_mode_safe(lambda p: f(p, x1[:1]), params):
        return "jacobian"
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    out = jax.eval_shape(lambda p: f(p, x1[:1]), params)
    o = math.prod(out.shape[1:])
    p = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    pass_cost = 2.0 * p  # one example through a weight-dominated network
    jacobian = (n1 + n2) * o * 2 * pass_cost + 2.0 * n1 * n2 * o * p
    ntvp = n2 * o * (3 * pass_cost + n1 * 2 * pass_cost)
    return "jacobian" if jacobian <= ntvp else "ntvp"


# -- the public function ----------------------------------------------------------------------


def empirical(apply_fn: Callable, params: PyTree, x1: ArrayLike, x2: ArrayLike | None = None, *,
              kind: Literal["ntk", "nngp"] = "ntk", trace_axes: Sequence[int] = (-1,),
              diagonal_axes: Sequence[int] = (), method: Literal["auto", "jacobian", "ntvp", "structured"] = "auto",
              batch_size: int | None = None, devices: Devices = None) -> Array:
    """The empirical NTK (``kind="ntk"``) or NNGP (``"nngp"``) of ``apply_fn`` at ``params``.

    ``apply_fn(params, x) -> (N, *out)``; ``x1 (N1, ...)``, ``x2 (N2, ...)`` or ``None`` (x1 against
    itself). ``trace_axes``, ``diagonal_axes`` and the result's shape: module docstring.
    ``method``: ``"auto"``, ``"jacobian"``, ``"ntvp"`` or ``"structured"`` (module docstring);
    ignored for the NNGP. ``batch_size``: evaluate in blocks of at most this many examples of x1
    × x2 (``lax.map``; memory holds one block pair's Jacobians), ``None``: all at once.
    ``devices``: ``None`` (default) one device; an int ``n`` the first ``n`` of
    ``jax.local_devices()``; ``"all"``; or a sequence of local ``jax.Device`` s. With more than one,
    the row blocks of ``x1`` (against all column blocks of ``x2``) are spread over a 1-D mesh
    (``shard_map``; each device ``lax.map`` s over its share, their number padded to a multiple of
    the device count by repeating the last block) and gathered into the same array
    (:mod:`jaxlearn.kernels.devices`); ``params`` and ``x2`` are replicated. With
    ``batch_size=None`` (or as large as the inputs) the rows of ``x1`` are split into one block per
    device, each against all of ``x2``. Each block runs the single-device program, so the numbers
    match it (to float rounding of the smaller blocks' contractions).
    For the kernel of a trained run (its after-kernel): :func:`jaxlearn.runner.after_kernel`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> apply = lambda p, x: x @ p                              # linear model: Θ = x x'ᵀ
        >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
        >>> kernels.empirical(apply, jnp.zeros((2, 1)), x).tolist()
        [[5.0, 11.0], [11.0, 25.0]]
    """
    if kind not in _KINDS:
        raise ValueError(f"kind: expected 'ntk' or 'nngp', got {kind!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    check_int(batch_size, "batch_size", minimum=1, optional=True)
    devs = resolve_devices(devices)
    x1, x2 = check_inputs(x1, x2, min_ndim=1, expected="a batch of inputs (N1, ...)")
    try:
        out = jax.eval_shape(apply_fn, params, x1)
    except Exception as e:  # noqa: BLE001 — report the model's own message with the argument named
        raise ValueError(f"apply_fn: could not evaluate apply_fn(params, x1): {type(e).__name__}: {e}") from e
    if not hasattr(out, "shape") or out.ndim < 1 or out.shape[0] != x1.shape[0]:
        raise ValueError(f"apply_fn: expected outputs (N1, ...) with N1 = {x1.shape[0]}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    axes = Axes(out.ndim, trace_axes, diagonal_axes, x2 is None)
    if kind == "nngp":
        compute = _nngp_kernel
    else:
        if method == "auto":
            method = choose_method(apply_fn, params, x1, x2)
        if method == "structured":
            compute = structured_kernel
        elif method == "ntvp":
            require_forward_mode("empirical(method='ntvp')", lambda p: apply_fn(p, x1[:1]), params)
            compute = _ntvp_kernel
        else:
            compute = _jacobian_kernel
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    if batch_size is None or batch_size >= max(n1, n2):
        sizes = None if devs is None else (-(-n1 // len(devs)), n2)  # one block of rows per device, all of x2
    else:
        sizes = (int(batch_size), int(batch_size))
    return jit_when_eager(_kernel, compute, apply_fn, params, x1, x2, axes, sizes, devs)


def _kernel(compute, apply_fn, params, x1, x2, axes, sizes, devices):
    """The kernel by ``compute`` (one of the methods), in blocks when ``sizes``; one compiled program
    when :func:`empirical` is called eagerly (``jaxlearn._compile``: a small MLP's first call took
    72 compilations and 1.7 s of CPU without it, 0.17 s with it)."""
    if sizes is None:
        return compute(apply_fn, params, x1, x2, axes)
    kernel_fn = lambda a, b: compute(apply_fn, params, a, b, axes)  # noqa: E731
    return _blocked(kernel_fn, x1, x2, *sizes, 0 in axes.diagonal, devices)


def _blocked(kernel_fn, x1, x2, size1, size2, batch_diagonal, devices=None):
    """``kernel_fn`` on blocks of at most ``size1`` examples of x1 × ``size2`` of x2
    (:func:`~jaxlearn.kernels.devices.map_kernel_blocks`, the row blocks spread over ``devices``):
    the diagonal blocks only for a diagonal batch axis, else every block pair; reassembled to
    ``(N1, N2, ...)``."""
    x2_ = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], x2_.shape[0]
    out = map_kernel_blocks(kernel_fn, x1, None if batch_diagonal else x2_, size1, size2, devices,
                            row=lambda blocks: merge_columns(blocks, n2))
    return merge_rows(out, n1)
