r"""Dual activations: the two Gaussian expectations an infinite-width layer needs.

For an elementwise activation :math:`\phi` and a centred bivariate Gaussian

.. math::  (u, v) \sim \mathcal N\!\left(0, \begin{pmatrix} q_{11} & q_{12} \\ q_{12} & q_{22}\end{pmatrix}\right)

each function here returns the pair

.. math::  k = \mathbb E[\phi(u)\,\phi(v)], \qquad \dot k = \mathbb E[\phi'(u)\,\phi'(v)],

the NNGP entry after the activation and the factor multiplying the NTK
(:math:`\Theta' = \Theta \cdot \dot k`), in neural-tangents' conventions. By Price's theorem
:math:`\dot k = \partial k / \partial q_{12}` at fixed :math:`q_{11}, q_{22}`; the tests use that
as one of their checks.

API (the same for every activation)
-----------------------------------
``<name>_dual(q11, q12, q22, **params) -> DualPair(k, kdot)``

* ``q11``, ``q12``, ``q22``: arrays (or scalars) that broadcast against each other — e.g.
  ``(N1, 1)``, ``(N1, N2)``, ``(1, N2)`` for the two diagonals and the cross-covariance of two
  batches. Both outputs have the broadcast shape. Integer inputs are promoted to the default float
  type; otherwise the dtype follows the inputs (Python-float parameters are weakly typed, so they
  do not promote float32 to float64). The diagonal case is the call ``dual(q, q, q)``; it costs
  the same as any other entry and is exact (:math:`\rho = 1` exactly, no clipping needed).
* ``**params``: keyword parameters with the same names and defaults as the layer constructor in
  :mod:`jaxlearn.nn.activations` (``Erf(a, b, c)`` ↔ ``erf_dual(..., a, b, c)``), so
  ``dual(name, **kw)`` pairs with ``activation(name, **kw)``. They may be traced values
  (``jax.grad`` with respect to them works).

All functions are pure ``jax.numpy`` code: they work under ``jit``, ``vmap`` and ``grad``.

Conventions at the boundary of the covariance cone
--------------------------------------------------
* :math:`|\rho| = 1` (:math:`q_{12}^2 = q_{11} q_{22}`, e.g. the diagonal): the ReLU family is
  written with :math:`s = \sqrt{q_{11} q_{22} - q_{12}^2}` and with :math:`\theta` from
  :math:`\tan^2(\theta/2) = (g - q_{12})/(g + q_{12})`, :math:`g = \sqrt{q_{11} q_{22}}`, instead
  of :math:`\arccos\rho`; their square roots are *safe*: the derivative is set to 0 where the
  argument is :math:`\le 0` (both halves are clipped at 0 against rounding). The two unbounded
  terms of :math:`\partial k` cancel analytically, so setting both to 0 gives the exact (finite) gradient
  of :math:`k` there. :math:`\dot k` of the ReLU family has an unbounded derivative as
  :math:`|\rho| \to 1` (:math:`\theta \sim \sqrt{2(1-\rho)}`); its gradient *at* :math:`|\rho| = 1`
  is reported as 0 (finite, by the same convention). The smooth activations need no care:
  their formulas are analytic across :math:`|\rho| = 1`.
* Zero variance (:math:`q_{11} q_{22} = 0`, e.g. a zero input with :math:`\sigma_b = 0`): then
  :math:`u` or :math:`v` is 0 almost surely and :math:`k` is unambiguous (0 for the ReLU family).
  For the ReLU family :math:`\dot k` is not (:math:`\phi'` jumps at 0), and we take the limit
  along the diagonal: :math:`\rho := 1`, :math:`\theta := 0`, so
  :math:`\dot k(0, 0, 0) = (a^2 + b^2)/2 = \mathbb E[\phi'(z)^2]`, the value at every
  :math:`q > 0` on the diagonal (it is what the length map and the NTK recursion on the diagonal
  see). Values and gradients are finite there. Smooth activations are continuous at 0 and need
  no convention.

Recognising an activation
-------------------------
:func:`identify_activation` tells which of these functions an elementwise ``φ`` given only as code
is (e.g. read off a jaxpr), from its values on a grid, and returns its dual.

References: Cho & Saul 2009 (arc-cosine kernels); Williams 1997 (erf); Tsuchida, Pearce, van der
Heide, Roosta & Gallagher 2021, "Avoiding kernel fixed points: computing with ELU and GELU
infinite networks" (GELU; re-derived in :func:`gelu_dual`); Novak et al. 2020, neural-tangents
(the parameterisations ``a·min(x,0)+b·max(x,0)``, ``a·erf(bx)+c``).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import did_you_mean

__all__ = [
    "DualPair",
    "identity_dual",
    "ab_relu_dual",
    "relu_dual",
    "leaky_relu_dual",
    "erf_dual",
    "gelu_dual",
    "sin_dual",
    "sign_dual",
    "DUALS",
    "dual",
    "identify_activation",
    "identify_power",
    "one_pass",
]

_PI = math.pi


class DualPair(NamedTuple):
    """``k = E[φ(u)φ(v)]`` (the NNGP entry) and ``kdot = E[φ'(u)φ'(v)]`` (the NTK factor)."""

    k: jnp.ndarray
    kdot: jnp.ndarray


def one_pass(fn: Callable) -> bool:
    """Whether the dual ``fn`` (or a ``functools.partial`` of one) is marked ``fn.one_pass = True``:
    ``q12`` reaches each of its outputs only through operations XLA will not recompute inside a
    consumer (a division, square root, ``exp``, ...), or the output is ``q12`` itself or a
    constant. XLA then stores each layer's ``k`` and ``kdot`` and the next layer reads them, so
    :func:`jaxlearn.nn.kernel.elementwise_kernel` needs no loop to stop XLA from recomputing a
    layer's expressions inside every later layer (that recomputation grows with depth: an 8-layer
    erf MLP took 135 ms without the loop and 99 ms with it, with an erf dual whose ``k`` ended in
    cheap operations on ``q12``). Every closed form here is marked; a dual of your own may set the
    attribute when that holds."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "one_pass", False) is True


def _one_pass(fn):
    fn.one_pass = True
    return fn


def _inputs(q11, q12, q22, broadcast=True):
    """The three covariance entries as float arrays of one dtype, broadcast to one shape (or left
    in their own shapes, for duals that broadcast their outputs themselves)."""
    dtype = jnp.result_type(q11, q12, q22, float)
    arrays = tuple(jnp.asarray(q, dtype) for q in (q11, q12, q22))
    return jnp.broadcast_arrays(*arrays) if broadcast else arrays


def _safe_sqrt(x):
    """``sqrt(max(x, 0))`` whose derivative is 0 (not ``inf``/NaN) where ``x <= 0``."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def _arctan_convergent(levels: int):
    """Coefficients (constant term first) of ``P``, ``Q`` with ``arctan u ≈ u·P(u²)/Q(u²)``: the
    ``levels``-th convergent of Gauss's continued fraction
    ``arctan u = u / (1 + u²/(3 + 4u²/(5 + 9u²/(7 + …))))``, i.e. partial numerators ``j²u²`` and
    denominators ``2j + 1``. With ``h_j = (2j+1) h_{j−1} + j²z h_{j−2}`` (``h_{−1} = 1, h_0 = 1``)
    and ``p_j`` the same recurrence from ``p_{−1} = 0, p_0 = 1``, the convergent is ``p/h``. Exact
    integer arithmetic; every coefficient is positive, so Horner's rule in ``z = u² ≥ 0`` has no
    cancellation."""
    def step(prev, prev2, j):
        out = [(2 * j + 1) * c for c in prev] + [0] * (len(prev2) + 1 - len(prev))
        for i, c in enumerate(prev2):
            out[i + 1] += j * j * c
        return out
    h, h_prev, p, p_prev = [1], [1], [1], [0]
    for j in range(1, levels + 1):
        h, h_prev = step(h, h_prev, j), h
        p, p_prev = step(p, p_prev, j), p
    return tuple(map(float, p)), tuple(map(float, h))


def _halves(q11, q12, q22):
    """``g − q12`` and ``g + q12`` with ``g = sqrt(q11)·sqrt(q22)`` (``∝ sin²(θ/2)`` and
    ``cos²(θ/2)``; both ``≥ 0``), each snapped to 0 within ``8·eps·g`` of it
    (:func:`_sine_and_angle`)."""
    g = _safe_sqrt(q11) * _safe_sqrt(q22)
    tiny = 8 * jnp.finfo(g.dtype).eps * g
    minus, plus = g - q12, g + q12
    return jnp.where(minus <= tiny, 0, minus), jnp.where(plus <= tiny, 0, plus)


@jax.custom_jvp
def _root(x):
    """``sqrt(x)`` for ``x ≥ 0`` with derivative 0 (not ``inf``) at 0: :func:`_safe_sqrt` for an
    argument known to be ``≥ 0``, written as one operation so that XLA fuses it with its
    consumer (the ``where`` guards of :func:`_safe_sqrt` read the argument twice)."""
    return jnp.sqrt(x)


@_root.defjvp
def _root_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _root(x)
    positive = x > 0
    return y, jnp.where(positive, dx / (2 * jnp.where(positive, y, 1)), 0)


def _homogeneous_horner(coefficients, a, b):
    """``Σ_k c_k a^k b^(m−k)`` (``m = len(coefficients) − 1``): ``b^m · P(a/b)`` without a division."""
    out, power = jnp.full_like(a, coefficients[-1]), b
    for c in reversed(coefficients[:-1]):
        out = out * a + c * power
        power = power * b
    return out


def _same_degree(p, q):
    """The coefficient tuples ``p`` and ``q`` padded with zeros to one length (the homogeneous
    evaluation takes both in the same degree)."""
    degree = max(len(p), len(q))
    return tuple(c + (0.0,) * (degree - len(c)) for c in (p, q))


# Levels of the arctan convergent on the whole of [0, 1] (no range reduction): relative
# truncation error at most 6.2e-9 with 10 levels (float32), 5.9e-17 with 21 (float64).
_ARCTAN_UNIT = {32: _same_degree(*_arctan_convergent(10)), 64: _same_degree(*_arctan_convergent(21))}


def _arctan_polynomials(small2, big2):
    """``(P̃, Q̃)``, the convergent's polynomials (:data:`_ARCTAN_UNIT`, by dtype) evaluated
    homogeneously in ``(small2, big2)``, ``small2 ≤ big2``: ``arctan v = v·P̃/Q̃`` for
    ``v² = small2/big2``, with no division (:func:`_affine_angle`, :func:`_arcsin_fraction`)."""
    p, q = _ARCTAN_UNIT[64 if jnp.finfo(big2.dtype).bits > 32 else 32]
    return _homogeneous_horner(p, small2, big2), _homogeneous_horner(q, small2, big2)


def _affine_angle(q11, q12, q22, c0, c1, sine=False):
    r"""``(n, d)`` with ``n / d = c0 + c1·θ``, ``θ = arccos(q12 / sqrt(q11 q22)) ∈ [0, π]``
    (:func:`_sine_and_angle`). With ``sine=True``: ``((n, d), (n', d), s)``, where ``n'`` is formed
    from ``s = sqrt(q11 q22 − q12²) = sqrt((g − q12)(g + q12))`` instead of its own square root, for an
    output that needs ``s`` too (the traced polynomials are shared; XLA keeps the two square roots
    apart, one in each output's pass).

    From the half-angle identity ``tan²(θ/2) = (g − q12)/(g + q12)``: with ``a ≤ b`` the two
    halves (:func:`_halves`) scaled by ``1/g``, ``t = a/b ∈ [0, 1]`` is ``tan²`` of ``θ/2`` or
    (past ``θ = π/2``) of ``π/2 − θ/2``, and ``arctan √t = √t·P(t)/Q(t)`` with ``P/Q`` a convergent
    of Gauss's continued fraction (:func:`_arctan_convergent`, enough levels for the unit roundoff
    at ``t = 1``). ``P``, ``Q`` are evaluated homogeneously in ``(a, b)`` (``b ∈ [1, 2]``), so

    .. math::  \arctan\sqrt{t} = \frac{\sqrt{ab}\;\tilde P(a, b)}{b\,\tilde Q(a, b)},
               \qquad \sqrt{ab} = s / g,

    and ``c0 + c1·θ`` is a fraction over that one denominator. The caller divides once: a dual is
    then one square root and one division per entry of the full-size array, each with a single
    consumer, and XLA compiles each output into one elementwise pass. (It does not recompute a
    square root or a division for a second consumer: the earlier formulation, ``s``, a range
    reduction and two divisions shared by ``k`` and ``kdot``, took seven passes over the array and
    about 5× the time.) An output that ends in its division is stored by XLA rather than
    recomputed inside the next layer's passes, so a deep kernel reads each layer once.

    ``1/g`` is the product of per-row and per-column reciprocals, computed before broadcasting.
    Where ``g = 0``, ``a = 0`` and ``b`` is set to 1/2 (any positive value), so ``θ = 0`` (the
    zero-variance convention). At ``t = 0`` (``|ρ| = 1``) the square root's derivative is taken as
    0 (:func:`_root`). ``where`` selects the branch, not ``min``/``max``: at ``θ = π/2``
    (``q12 = 0``) both give the same value, but ``min``/``max`` would split the derivative
    between the two arguments.
    """
    minus, plus = _halves(q11, q12, q22)
    reciprocal = [jnp.where(q > 0, 1 / _safe_sqrt(jnp.where(q > 0, q, 1)), 0) for q in (q11, q22)]
    scale = reciprocal[0] * reciprocal[1]                   # 1/g, 0 where g = 0
    steep = minus > plus                                    # θ/2 > π/4; θ = π where plus = 0 < minus
    a = jnp.where(steep, plus, minus) * scale               # ∈ [0, 1]
    b = jnp.maximum(jnp.where(steep, minus, plus) * scale, 0.5)   # ∈ [1, 2] where g > 0
    p_ab, q_ab = _arctan_polynomials(a, b)
    denominator = b * q_ab
    # θ = 2·(θ/2) = where(steep, π − 2·arctan √t, 2·arctan √t)
    offset = c0 + c1 * jnp.where(steep, _PI, 0)
    slope = jnp.where(steep, -2 * c1, 2 * c1)

    def fraction(root):  # root = √(ab)
        return offset * denominator + slope * root * p_ab, denominator

    if not sine:
        return fraction(_root(a * b))
    s = _root(minus * plus)
    return fraction(_root(a * b)), fraction(s * scale), s


def _reciprocal_root(x):
    """``1/√x`` for ``x > 0`` (per row or per column: computed before broadcasting)."""
    return 1 / jnp.sqrt(x)


def _arcsin_fraction(y, w2):
    r"""``(n, d, w)`` with ``n / d = arcsin y = atan2(y, w)`` for ``y² + w2 = 1``, ``w = √w2 > 0``
    (the erf and GELU duals, where ``w2 ≥ r² > 0``).

    Below ``|y| = w`` (``|arcsin y| ≤ π/4``) ``arctan(y/w)``, above it
    ``sign(y)·π/2 − arctan(w/y)``; each arctan of ``v = top/bottom`` with ``v² ≤ 1`` is
    ``v·P(v²)/Q(v²)`` (:func:`_arctan_convergent`), evaluated homogeneously in the squares
    (``big² ∈ [1/2, 1]``): ``top·P̃(small², big²) / (bottom·Q̃(small², big²))``. One square root
    and, in the caller, one division per entry: the output is one pass (:func:`_affine_angle`).
    ``y`` keeps its sign through ``v`` (an odd function), so the derivative at ``y = 0`` is exact."""
    w = _root(w2)
    y2 = y * y
    steep = y2 > w2
    small2, big2 = jnp.where(steep, w2, y2), jnp.where(steep, y2, w2)
    top, bottom = jnp.where(steep, w, y), jnp.where(steep, y, w)
    p_small, q_small = _arctan_polynomials(small2, big2)
    p_, d = top * p_small, bottom * q_small
    return jnp.where(steep, jnp.sign(y) * (_PI / 2) * d - p_, p_), d, w


def _sine_and_angle(q11, q12, q22):
    r"""``s = sqrt(q11 q22 - q12²)`` (clipped at 0) and ``θ = arccos ρ ∈ [0, π]``.

    With ``g = sqrt(q11 q22)`` the determinant is formed as ``(g - q12)(g + q12)``, and the angle
    from the half-angle identity ``tan²(θ/2) = (1 − cos θ)/(1 + cos θ) = (g − q12)/(g + q12)``
    (:func:`_affine_angle`): both are ``≥ 0``, and ``θ`` equals ``arccos(q12 / g)`` with ``ρ``
    clipped to ``[-1, 1]``, without dividing by the variances. ``g = sqrt(q11)·sqrt(q22)`` takes
    its square roots before broadcasting (``N1 + N2`` of them for an ``(N1, 1)``/``(1, N2)`` pair,
    not ``N1·N2``). The duals form ``k`` and ``kdot`` each with its own square root
    (:func:`_affine_angle`), so that each compiles to one pass over the full-size array.

    Correlations within ``8·eps`` of ``±1`` count as exactly ``±1``: ``θ ≈ √(2(1 − |ρ|))`` turns a
    rounding-level difference between ``q12`` and ``g`` (the same input reached by two summation
    orders, e.g. a Gram entry and a norm; or ``sqrt(q)² ≠ q`` on the diagonal) into an error of
    order ``√eps`` (``1e-8`` in float64, ``3e-4`` in float32); snapped, the diagonal has
    ``s = θ = 0`` exactly and identical inputs get identical kernels. At ``ρ = −1``
    (``g + q12 = 0 < g − q12``) the angle is ``π``; where ``g = 0`` (a zero variance) it is
    ``0`` by convention (module docstring). Every division and square root is guarded, so
    derivatives stay finite on the boundary.
    """
    (n, d), _, s = _affine_angle(q11, q12, q22, 0.0, 1.0, sine=True)
    return s, n / d


# -- the activations ----------------------------------------------------------------------------


@_one_pass
def identity_dual(q11, q12, q22) -> DualPair:
    """``φ(x) = x``: ``k = q12``, ``kdot = 1``."""
    q11, q12, q22 = _inputs(q11, q12, q22)
    return DualPair(q12, jnp.ones_like(q12))


@_one_pass
def ab_relu_dual(q11, q12, q22, a=0.0, b=1.0) -> DualPair:
    r"""``φ(x) = a·min(x, 0) + b·max(x, 0)`` (ReLU: ``a=0, b=1``; ``|x|``: ``a=-1, b=1``).

    Arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009), generalised. Write
    :math:`\phi(x) = b\,r(x) - a\,r(-x)` with :math:`r` = ReLU. :math:`(-u, -v)` has the law of
    :math:`(u, v)`, and :math:`(u, -v)` has correlation :math:`-\rho`, i.e. angle
    :math:`\pi - \theta`. With Cho & Saul's :math:`\mathbb E[r(u)r(v)] = \sqrt{q_{11}q_{22}}\,
    (\sin\theta + (\pi-\theta)\cos\theta)/2\pi` and :math:`P(u>0, v>0) = (\pi-\theta)/2\pi`:

    .. math::
        \dot k &= \frac{(a^2+b^2)(\pi-\theta) + 2ab\,\theta}{2\pi}, \\
        k &= \frac{(a^2+b^2)\,(s + (\pi-\theta)q_{12}) - 2ab\,(s - \theta q_{12})}{2\pi}
           = \frac{(a-b)^2}{2\pi}\, s + \dot k\, q_{12},

    where :math:`s = \sqrt{q_{11}q_{22}}\sin\theta = \sqrt{q_{11}q_{22} - q_{12}^2}`,
    :math:`\theta = \arccos\big(q_{12}/\sqrt{q_{11}q_{22}}\big)`. On the diagonal
    :math:`k = (a^2+b^2)q/2`, :math:`\dot k = (a^2+b^2)/2`. Boundary conventions: module docstring.
    """
    q11, q12, q22 = _inputs(q11, q12, q22, broadcast=False)
    # kdot = (a² + b²)/2 − (a − b)²·θ/2π and k = (a − b)²/2π·s + kdot·q12, each over the common
    # denominator and computed on its own (one pass each; _affine_angle), in the broadcast shape
    c0, c1 = (a * a + b * b) / 2, -((a - b) ** 2) / (2 * _PI)
    (n, d), (n_s, d_s), s = _affine_angle(q11, q12, q22, c0, c1, sine=True)
    kdot = n / d
    k = ((a - b) ** 2 / (2 * _PI) * s * d_s + q12 * n_s) / d_s
    return DualPair(k, kdot)


@_one_pass
def relu_dual(q11, q12, q22) -> DualPair:
    r"""``φ(x) = max(x, 0)``: :math:`k = (s + (\pi-\theta)q_{12})/2\pi`,
    :math:`\dot k = (\pi-\theta)/2\pi` (:func:`ab_relu_dual` with ``a=0, b=1``)."""
    return ab_relu_dual(q11, q12, q22, a=0.0, b=1.0)


@_one_pass
def leaky_relu_dual(q11, q12, q22, alpha=0.01) -> DualPair:
    """``φ(x) = x`` for ``x ≥ 0``, ``alpha·x`` otherwise (:func:`ab_relu_dual` with ``a=alpha, b=1``)."""
    return ab_relu_dual(q11, q12, q22, a=alpha, b=1.0)


@_one_pass
def erf_dual(q11, q12, q22, a=1.0, b=1.0, c=0.0) -> DualPair:
    r"""``φ(x) = a·erf(b·x) + c`` (Williams 1997).

    With :math:`g = 2b^2` and
    :math:`\Delta = (1+g q_{11})(1+g q_{22}) - g^2 q_{12}^2 = 1 + g(q_{11}+q_{22}) + g^2(q_{11}q_{22}-q_{12}^2) \ge 1`:

    .. math::
        \mathbb E[\operatorname{erf}(bu)\operatorname{erf}(bv)]
          = \frac{2}{\pi}\arcsin\frac{g\,q_{12}}{\sqrt{(1+g q_{11})(1+g q_{22})}}
          = \frac{2}{\pi}\operatorname{atan2}\big(g\,q_{12}, \sqrt{\Delta}\big),

    and since :math:`\mathbb E[\operatorname{erf}(bu)] = 0`, :math:`k = a^2 \cdot (\text{that}) + c^2`.
    :math:`\phi'(x) = (2ab/\sqrt\pi)\,e^{-b^2x^2}` and
    :math:`\mathbb E[e^{-b^2(u^2+v^2)}] = \det(I + 2b^2\Sigma)^{-1/2} = \Delta^{-1/2}`, so
    :math:`\dot k = (4/\pi)\,a^2 b^2/\sqrt\Delta`. The arcsine is evaluated as a fraction
    (:func:`_arcsin_fraction`, of :math:`y = g q_{12} r` and :math:`w^2 = \Delta r^2 = 1 - y^2` with
    :math:`r = 1/\sqrt{(1+g q_{11})(1+g q_{22})}` from per-row and per-column factors): no clipping,
    finite derivatives at :math:`|\rho| = 1`, and each output one pass ending in its own division
    (:func:`one_pass`). :math:`\Delta` is expanded so that it is exact on the diagonal.
    """
    q11, q12, q22 = _inputs(q11, q12, q22, broadcast=False)
    g = 2 * b * b
    delta = 1 + g * (q11 + q22) + g * g * (q11 * q22 - q12 * q12)
    r = _reciprocal_root(1 + g * q11) * _reciprocal_root(1 + g * q22)
    n, d, _ = _arcsin_fraction(g * q12 * r, delta * r * r)
    k = (a * a * (2 / _PI) * n + c * c * d) / d
    kdot = (4 / _PI) * (a * a) * (b * b) / jnp.sqrt(delta)
    return DualPair(k, kdot)


@_one_pass
def gelu_dual(q11, q12, q22) -> DualPair:
    r"""Exact GELU ``φ(x) = x·Φ(x)`` (Φ the standard normal CDF; Tsuchida et al. 2021).

    Derivation (ours). Write :math:`\Phi(u) = P(\xi \le u)` with :math:`\xi, \eta` independent
    standard normals, so :math:`k = \mathbb E[u v\, H(s) H(t)]` with :math:`s = u-\xi`,
    :math:`t = v-\eta` (:math:`H` the step function); :math:`\operatorname{Var}s = A = 1+q_{11}`,
    :math:`\operatorname{Var}t = B = 1+q_{22}`, :math:`\operatorname{Cov}(s,t) = q_{12}`, and let
    :math:`D = AB - q_{12}^2 = 1 + q_{11} + q_{22} + (q_{11}q_{22} - q_{12}^2) \ge 1`.
    Gaussian integration by parts in :math:`u`, then conditioning on :math:`s = 0` or :math:`t = 0`,
    gives

    .. math::
        k = \frac{q_{12}}{4} + \frac{q_{12}}{2\pi}\arcsin\frac{q_{12}}{\sqrt{AB}}
            + \frac{q_{11}q_{22}\,D + q_{12}^2}{2\pi\,AB\,\sqrt D},

    and Price's theorem (:math:`\dot k = \partial k/\partial q_{12}`, with
    :math:`\phi'(x) = \Phi(x) + x\,\mathcal N(x)`) gives

    .. math::
        \dot k = \frac14 + \frac{1}{2\pi}\arcsin\frac{q_{12}}{\sqrt{AB}}
                 + \frac{q_{12}\,\big((A+B)D + AB\big)}{2\pi\,AB\,D^{3/2}}.

    The arcsine is a fraction (:func:`_arcsin_fraction`) and each output is formed over one
    denominator, so each is one pass ending in a division (:func:`one_pass`). Checks: at
    :math:`q_{12} = 0`, :math:`k = \mathbb E[u\Phi(u)]\,\mathbb E[v\Phi(v)] = q_{11}q_{22}/(2\pi\sqrt{AB})`
    and :math:`\dot k = \mathbb E[\phi']^2 = 1/4`; all terms are smooth for :math:`D \ge 1`.
    The tests compare both with 2-D Gauss–Hermite quadrature.
    """
    q11, q12, q22 = _inputs(q11, q12, q22, broadcast=False)
    A, B = 1 + q11, 1 + q22
    D = 1 + q11 + q22 + (q11 * q22 - q12 * q12)
    r = _reciprocal_root(A) * _reciprocal_root(B)          # 1/√(AB); AB·√D = w/r³
    n, d, w = _arcsin_fraction(q12 * r, D * r * r)         # arcsin(q12/√(AB)) = n/d, w = √D·r
    r3 = r * r * r / (2 * _PI)
    kdot = (d * D * w / 4 + n * D * w / (2 * _PI) + q12 * ((A + B) * D + A * B) * r3 * d) / (d * D * w)
    # k = q12·kdot + r³·((q11 q22 D + q12²) D − q12² ((A+B) D + AB)) / (2π D w): the arcsine terms are
    # q12 times kdot's, so k reads the stored kdot and takes its own square root (√D·r, another
    # expression than the arcsine's, so that XLA keeps the two apart: one pass per output)
    w_k = jnp.sqrt(D) * r
    rest = ((q11 * q22 * D + q12 * q12) * D - q12 * q12 * ((A + B) * D + A * B)) * r3
    k = (q12 * kdot * D * w_k + rest) / (D * w_k)
    return DualPair(k, kdot)


@_one_pass
def sin_dual(q11, q12, q22, a=1.0, b=1.0, c=0.0) -> DualPair:
    r"""``φ(x) = a·sin(b·x + c)``.

    :math:`\sin X \sin Y = \tfrac12[\cos(X-Y) - \cos(X+Y)]` and, for centred Gaussian :math:`W`,
    :math:`\mathbb E[\cos(W + \gamma)] = \cos\gamma\; e^{-\operatorname{Var}W/2}`, so with
    :math:`e_\mp = \exp(-b^2 (q_{11} + q_{22} \mp 2q_{12})/2)`:

    .. math::
        k = \frac{a^2}{2}\big(e_- - \cos(2c)\, e_+\big), \qquad
        \dot k = \frac{a^2 b^2}{2}\big(e_- + \cos(2c)\, e_+\big).
    """
    q11, q12, q22 = _inputs(q11, q12, q22)
    e_minus = jnp.exp(-(b * b) * (q11 + q22 - 2 * q12) / 2)
    e_plus = jnp.exp(-(b * b) * (q11 + q22 + 2 * q12) / 2)
    cos2c = jnp.cos(2 * c)
    k = (a * a) / 2 * (e_minus - cos2c * e_plus)
    kdot = (a * a) * (b * b) / 2 * (e_minus + cos2c * e_plus)
    return DualPair(k, kdot)


@_one_pass
def sign_dual(q11, q12, q22) -> DualPair:
    r"""``φ(x) = sign(x)``: :math:`k = \frac{2}{\pi}\arcsin\rho = 1 - \frac{2\theta}{\pi}`
    (the degree-0 arc-cosine kernel, rescaled: ``sign = 2·step − 1``), ``kdot = 0``.

    ``kdot`` is that of the derivative autodiff sees, zero wherever ``sign`` is differentiable,
    so no gradient flows through the layer and the NTK of the layers below it vanishes
    (neural-tangents' ``stax.Sign`` convention); the distributional ``E[φ'φ']`` is infinite on the
    diagonal. Zero variance: ``u = 0`` almost surely and ``k = 0`` (``sign(0) = 0``). Not in
    :data:`DUALS` (``jaxlearn.nn`` has no sign activation layer); ``nn.Elementwise(jnp.sign,
    dual=sign_dual)`` is one.
    """
    q11, q12, q22 = _inputs(q11, q12, q22, broadcast=False)
    n, d = _affine_angle(q11, q12, q22, 1.0, -2 / _PI)
    k = jnp.where(q11 * q22 > 0, n / d, 0.0)
    return DualPair(k, jnp.zeros_like(k))


# -- registry -----------------------------------------------------------------------------------

#: Dual of each activation of :data:`jaxlearn.nn.activations.ACTIVATIONS` that has a closed form,
#: under the same name; each takes ``(q11, q12, q22, **params)`` with the layer's parameter names.
DUALS: dict[str, Callable[..., DualPair]] = {
    "identity": identity_dual,
    "relu": relu_dual,
    "leaky_relu": leaky_relu_dual,
    "abrelu": ab_relu_dual,
    "erf": erf_dual,
    "gelu": gelu_dual,
    "sin": sin_dual,
}


def dual(name: str, **params) -> Callable[..., DualPair]:
    """The dual of activation ``name`` with its parameters bound: ``(q11, q12, q22) -> DualPair``.

    ``dual("erf", a=2.0)`` pairs with ``activation("erf", a=2.0)``. Raises ``ValueError`` for a
    name without a closed form (see :data:`DUALS`) or a parameter the activation does not take.
    """
    if name not in DUALS:
        raise ValueError(f"dual: no closed-form dual for {name!r}{did_you_mean(name, DUALS)}; "
                         f"expected one of {sorted(DUALS)}")
    fn = DUALS[name]
    try:
        inspect.signature(fn).bind(0.0, 0.0, 0.0, **params)
    except TypeError as e:
        raise ValueError(f"dual {name!r}: {e}") from None
    return functools.partial(fn, **params) if params else fn


# -- recognising an activation from its values ---------------------------------------------------
_GRID = np.linspace(-4.0, 4.0, 161)


def _on_grid(fn, z):
    with jax.ensure_compile_time_eval():  # fn may be called while a program is traced
        return np.asarray(fn(jnp.asarray(z)), dtype=np.float64)


def identify_activation(fn: Callable, where: str = ""):
    """Which activation the elementwise ``fn`` is, from its values on 161 points of ``[-4, 4]``.

    Returns ``(None, a)`` when ``fn(z) = a·z`` (a linear map keeps Gaussian features Gaussian), else
    ``(dual, None)`` with ``dual(q11, q12, q22) -> DualPair``, for ``a·min(z,0) + b·max(z,0)``
    (ReLU, leaky ReLU, ``|z|``: :func:`ab_relu_dual`), ``a·erf(b·z) + c`` (:func:`erf_dual`),
    ``sin`` and GELU — exact, or its tanh approximation, which gets the exact GELU's dual
    (:func:`gelu_dual`; the two functions differ by at most ``2·10⁻⁴``). Values must match to
    ``1e-5`` relative. Raises ``ValueError`` otherwise (naming tanh, sigmoid and softplus, which
    have no closed form); ``where`` is inserted after the function's description in messages.
    """
    try:
        y = _on_grid(fn, _GRID)
        one = _on_grid(fn, [-1.0, 1.0])
    except Exception as e:  # noqa: BLE001 (a chain that does not evaluate entrywise, e.g. array constants)
        raise ValueError(f"the elementwise function{where} cannot be evaluated entrywise "
                         f"({type(e).__name__})") from None
    tol = dict(rtol=1e-5, atol=1e-5 * max(1.0, np.abs(y).max()))
    a, b = -one[0], one[1]
    if np.allclose(y, a * np.minimum(_GRID, 0) + b * np.maximum(_GRID, 0), **tol):
        if np.isclose(a, b, rtol=1e-7, atol=0):
            return None, b
        return (lambda q11, q12, q22: ab_relu_dual(q11, q12, q22, a=a, b=b)), None
    from scipy.special import erf as np_erf  # scipy: a main dependency
    from scipy.special import erfinv

    # a·erf(b·z) + c: c = φ(0), a = φ(∞) - c, erf(b) = (φ(1) - c)/a
    c, top, at_one = (float(v) for v in _on_grid(fn, [0.0, 60.0, 1.0]))
    a_erf = top - c
    if a_erf != 0 and abs((at_one - c) / a_erf) < 1:
        b_erf = float(erfinv((at_one - c) / a_erf))
        if b_erf > 0 and np.allclose(y, a_erf * np_erf(b_erf * _GRID) + c, **tol):
            return (lambda q11, q12, q22: erf_dual(q11, q12, q22, a=a_erf, b=b_erf, c=c)), None

    exact_gelu = 0.5 * _GRID * (1 + np_erf(_GRID / np.sqrt(2)))
    tanh_gelu = 0.5 * _GRID * (1 + np.tanh(np.sqrt(2 / np.pi) * (_GRID + 0.044715 * _GRID ** 3)))
    known = {"sin": (np.sin(_GRID), sin_dual), "gelu": (exact_gelu, gelu_dual),
             "gelu (tanh approximation)": (tanh_gelu, gelu_dual)}
    for ref, dual_fn in known.values():
        if np.allclose(y, ref, **tol):
            return dual_fn, None
    no_closed_form = {"tanh": np.tanh(_GRID), "sigmoid": 1 / (1 + np.exp(-_GRID)), "softplus": np.logaddexp(0, _GRID)}
    for name, ref in no_closed_form.items():
        if np.allclose(y, ref, **tol):
            raise ValueError(f"activation {name}{where} has no closed-form infinite-width kernel; "
                             f"estimate it with jaxlearn.kernels.monte_carlo")
    raise ValueError(f"the elementwise function{where} is not a recognised activation "
                     f"(a·min(z,0)+b·max(z,0), erf, sin, gelu); estimate it with jaxlearn.kernels.monte_carlo")


def identify_power(fn: Callable) -> int | None:
    """``1`` if ``fn(z) = z``, ``2`` if ``fn(z) = z²`` (on the grid of :func:`identify_activation`,
    to ``1e-5``), else ``None``."""
    y = _on_grid(fn, _GRID)
    for power in (2, 1):
        if np.allclose(y, _GRID ** power, rtol=1e-5, atol=1e-5):
            return power
    return None
