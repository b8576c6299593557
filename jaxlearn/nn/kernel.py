"""The infinite-width kernel a layer maps: NNGP and NTK of two batches, with their covariances.

A :class:`Kernel` describes the pre-activations (or activations) of a network layer in the
infinite-width limit for two batches of inputs ``x1 (N1, …)`` and ``x2 (N2, …)``:

* ``nngp (N1, N2, *S)`` — the NNGP kernel ``K = E[z(x1) z(x2)]`` per unit, with ``S`` the spatial
  *pairs* interleaved: ``()`` for vectors, ``(W1, W2)`` for sequences (NWC),
  ``(H1, H2, W1, W2)`` for images (NHWC): the full spatial covariance, which convolutions and
  pooling need.
* ``ntk`` — the neural tangent kernel ``Θ`` (Jacot et al. 2018), same shape.
* ``cov1 (N1, *S1)`` / ``cov2 (N2, *S2)`` — each example against itself (``S1`` pairs positions of
  ``x1`` with positions of ``x1``); the variances ``q11``/``q22`` that activations need.
  ``cov2 is None`` when ``x2`` is ``x1`` (then ``nngp`` is square and ``cov2`` is ``cov1``).
* ``channels`` (static) — the finite width of the representation (features or channels), the fan-in
  per tap of the next weight layer, which the standard parameterization's NTK needs.
* ``is_gaussian`` (static) — whether the entries are Gaussian (outputs of a weight layer or of
  linear maps of them), which LayerNorm's map needs.
* ``mean_of`` (static) — the layer (``"Flatten"``, ``"fanin_concat(-1)"``) whose features have
  different kernels, so that the arrays hold their *mean*: what a following weight layer (or
  LayerNorm, then a weight layer) needs, exactly; ``None`` otherwise. An elementwise nonlinearity
  cannot act on a mean of kernels, so :func:`elementwise_kernel` raises on it (neural-tangents
  silently applies it to the mean). A weight layer clears it.

Conventions are neural-tangents' (Novak et al. 2020), so published numbers carry over: the input
kernel is ``K0 = x·x'/d`` with ``d`` the feature/channel dimension (per pair of positions for
images) and ``Θ0 = 0``. The per-layer maps live beside each layer in :mod:`jaxlearn.nn` (this
module holds the shared arithmetic); :mod:`jaxlearn.kernels` composes and evaluates them.
A Kernel is a pytree (arrays are leaves, ``channels``/``is_gaussian``/``mean_of`` are static), so
kernel maps run under ``jit``, ``vmap`` (e.g. over ``W_std``) and ``grad``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxlearn._rows import merge_rows, split_rows
from jaxlearn._types import ArrayLike
from jaxlearn.nn.core import LayerError
from jaxlearn.nn.dual import one_pass as dual_one_pass

__all__ = ["Kernel", "input_kernel", "affine_kernel", "elementwise_kernel"]


@dataclasses.dataclass(frozen=True)
class Kernel:
    nngp: jax.Array
    ntk: jax.Array
    cov1: jax.Array
    cov2: jax.Array | None
    channels: int = dataclasses.field(metadata=dict(static=True))
    is_gaussian: bool = dataclasses.field(default=False, metadata=dict(static=True))
    mean_of: str | None = dataclasses.field(default=None, metadata=dict(static=True))

    @property
    def spatial_ndim(self) -> int:
        """0 for vectors, 1 for sequences, 2 for images."""
        return (self.nngp.ndim - 2) // 2

    def replace(self, **changes) -> "Kernel":
        return dataclasses.replace(self, **changes)

    def variances(self):
        """``(q1, q2)``: per-position variances of x1 ``(N1, *P1)`` and x2 ``(N2, *P2)`` (the
        diagonal of ``cov1``/``cov2`` over position pairs; ``P`` the positions, e.g. ``(H, W)``)."""
        return _diagonal(self.cov1), _diagonal(self.cov1 if self.cov2 is None else self.cov2)


jax.tree_util.register_dataclass(Kernel, data_fields=["nngp", "ntk", "cov1", "cov2"],
                                 meta_fields=["channels", "is_gaussian", "mean_of"])


def _diagonal(cov):
    """``(N, P1, P1, P2, P2, …) -> (N, P1, P2, …)``: entries pairing a position with itself."""
    for _ in range((cov.ndim - 1) // 2):
        # the leading pair (axes 1, 2) becomes a trailing axis, so the next pair moves to 1, 2
        cov = jnp.diagonal(cov, axis1=1, axis2=2)
    return cov


def pair_shape(n1_axis_first: bool, q, spatial_ndim):
    """``q (N, P1, P2, …)`` reshaped to broadcast against ``(N1, N2, P1, P1', P2, P2', …)``: as the
    first batch (positions on the unprimed axes) or as the second (primed axes)."""
    n, positions = q.shape[0], q.shape[1:]
    shape = [n, 1] if n1_axis_first else [1, n]
    for p in positions:
        shape += [p, 1] if n1_axis_first else [1, p]
    return q.reshape(shape)


def self_pair_shape(first: bool, q):
    """``q (N, P1, …)`` broadcast against ``cov (N, P1, P1', …)``: unprimed or primed positions."""
    shape = [q.shape[0]]
    for p in q.shape[1:]:
        shape += [p, 1] if first else [1, p]
    return q.reshape(shape)


def input_kernel(x1: ArrayLike, x2: ArrayLike | None = None) -> Kernel:
    """``K0`` of two input batches: ``K0 = Σ_c x·x' / C`` per pair of examples and positions,
    ``Θ0 = 0``. ``x1 (N1, *P, C)``, ``x2 (N2, *P', C)`` (``None``: ``x1``); vectors ``(N, d)``,
    sequences NWC, images NHWC.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> k = nn.input_kernel(jnp.array([[1.0, 1.0], [2.0, 0.0]]))
        >>> k.nngp.tolist(), k.ntk.tolist()                      # x·x'/d and Θ0 = 0
        ([[1.0, 1.0], [1.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]])
    """
    x1 = jnp.asarray(x1)
    dtype = jnp.result_type(x1.dtype, float)
    x1 = x1.astype(dtype)
    channels = x1.shape[-1]

    def pairs(a, b, one_batch):  # Σ_c a·b / C over pairs of positions: (Na, Nb | N, P1, P1', …)
        p = a.ndim - 2
        unprimed = "".join(chr(ord("a") + i) for i in range(p))
        primed = "".join(chr(ord("A") + i) for i in range(p))
        batch_b = "n" if one_batch else "m"
        out = ("n" if one_batch else "nm") + "".join(u + v for u, v in zip(unprimed, primed))
        return jnp.einsum(f"n{unprimed}c,{batch_b}{primed}c->{out}", a, b,
                          precision=jax.lax.Precision.HIGHEST) / channels

    if x2 is None:
        nngp, cov2 = pairs(x1, x1, False), None
    else:
        x2 = jnp.asarray(x2).astype(dtype)
        nngp, cov2 = pairs(x1, x2, False), pairs(x2, x2, True)
    return Kernel(nngp, jnp.zeros_like(nngp), pairs(x1, x1, True), cov2, channels, False)


def affine_kernel(k: Kernel, W_std, b_std, parameterization: str, fan_in: int, out_channels: int,
                  average: Callable | None = None) -> Kernel:
    """The map of a weight layer ``z = W·x + b`` (Dense, or Conv with ``average`` the filter-window
    average of a pair array). With ``K̄``, ``Θ̄`` the (window-averaged) inputs:

    * NNGP, both parameterizations: ``K ← σ_w² K̄ + σ_b²``.
    * NTK, ``ntk``: ``Θ ← K_new + σ_w² Θ̄`` (the gradients w.r.t. ``w`` and ``β`` give ``K_new``).
    * NTK, ``standard``: ``Θ ← n_in·K̄ + σ_w² Θ̄ + 1`` (the ``+1`` from the bias gradient, only when
      the layer has a bias, ``b_std`` not None), ``n_in = fan_in``.

    ``b_std=None``: no bias (``σ_b = 0``)."""
    avg = (lambda a: a) if average is None else average
    nngp, ntk = avg(k.nngp), avg(k.ntk)
    cov1 = avg(k.cov1)
    cov2 = None if k.cov2 is None else avg(k.cov2)
    w2 = jnp.square(W_std)
    b2 = 0.0 if b_std is None else jnp.square(b_std)
    new_nngp = w2 * nngp + b2
    if parameterization == "ntk":
        new_ntk = new_nngp + w2 * ntk
    elif parameterization == "standard":
        new_ntk = fan_in * nngp + w2 * ntk + (0.0 if b_std is None else 1.0)
    else:
        raise ValueError(f"parameterization {parameterization!r} has no infinite-width NTK map; use 'standard' or "
                         f"'ntk'")
    return Kernel(new_nngp, new_ntk, w2 * cov1 + b2, None if cov2 is None else w2 * cov2 + b2, out_channels, True)


def _row_block(n1: int) -> int:
    """Rows per block of :func:`elementwise_kernel`'s loop: 8 blocks, at least 16 rows."""
    return max(16, -(-n1 // 8))


def elementwise_kernel(k: Kernel, dual: Callable, name: str = "activation") -> Kernel:
    """The map of an elementwise activation ``φ`` with ``dual(q11, q12, q22) -> (E[φφ], E[φ'φ'])``
    (:mod:`jaxlearn.nn.dual`): ``K ← E[φ(u)φ(v)]``, ``Θ ← Θ·E[φ'(u)φ'(v)]`` (Jacot et al. 2018;
    Lee et al. 2019), entry by entry with the variances of the two positions involved.

    Raises (naming ``name``) on a mean of kernels (``k.mean_of``, e.g. right after Flatten): the
    dual of a mean is not the mean of the duals."""
    if k.mean_of is not None:
        raise LayerError(f"{name}: its input comes from {k.mean_of}, whose features have different kernels, and an "
                         f"activation's infinite-width map needs each feature's kernel; apply {name} before "
                         f"{k.mean_of} (elementwise maps commute with it) or put a weight layer between them")
    q1, q2 = k.variances()
    p = k.spatial_ndim

    def rows(args):  # one block of x1's examples
        q1_rows, nngp_rows, ntk_rows = args
        out = dual(pair_shape(True, q1_rows, p), nngp_rows, pair_shape(False, q2, p))
        return out.k, ntk_rows * out.kdot

    # Unless the dual computes each output in one stored pass (jaxlearn.nn.dual.one_pass), rows in
    # blocks of a while loop: XLA cannot fuse across the loop boundary, so each layer's map reads
    # the previous layer's materialised K and Θ instead of recomputing that layer's whole
    # elementwise chain per entry (which it otherwise does; cost growing with depth). The loop
    # itself costs (stacked outputs, padding): a depth-3 ReLU MLP's 2000² kernel took 36 ms with
    # it and 21 ms without.
    n1 = k.nngp.shape[0]
    block = _row_block(n1)
    if block < n1 and not dual_one_pass(dual):
        new_k, new_ntk = jax.lax.map(rows, tuple(split_rows(a, block) for a in (q1, k.nngp, k.ntk)))
        new_k, new_ntk = merge_rows(new_k, n1), merge_rows(new_ntk, n1)
    else:
        new_k, new_ntk = rows((q1, k.nngp, k.ntk))
    cov1 = dual(self_pair_shape(True, q1), k.cov1, self_pair_shape(False, q1)).k
    cov2 = None if k.cov2 is None else dual(self_pair_shape(True, q2), k.cov2, self_pair_shape(False, q2)).k
    return Kernel(new_k, new_ntk, cov1, cov2, k.channels, False)
