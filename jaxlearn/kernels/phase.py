r"""Order–chaos phase diagram of deep fully-connected networks at infinite width.

A deep network with weights :math:`W_{ij} \sim \mathcal N(0, \sigma_w^2/n)`, biases
:math:`b_i \sim \mathcal N(0, \sigma_b^2)` and activation :math:`\phi` propagates, layer by layer,
the variance :math:`q` of a pre-activation and the correlation :math:`c` between the
pre-activations of two inputs (Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016, "Exponential
expressivity in deep neural networks through transient chaos"; Schoenholz, Gilmer, Ganguli &
Sohl-Dickstein 2017, "Deep information propagation"). With :math:`k, \dot k` the dual maps of
:mod:`jaxlearn.nn.dual` (:math:`k(q_{11}, q_{12}, q_{22}) = \mathbb E[\phi(u)\phi(v)]`,
:math:`\dot k = \mathbb E[\phi'(u)\phi'(v)]`):

* length map :math:`q \mapsto \mathcal V(q) = \sigma_w^2\, k(q, q, q) + \sigma_b^2
  = \sigma_w^2\, \mathbb E[\phi(\sqrt q\, z)^2] + \sigma_b^2`, with fixed point :math:`q^*`;
* :math:`\chi_1 = \sigma_w^2\, \dot k(q^*, q^*, q^*) = \sigma_w^2\, \mathbb E[\phi'(\sqrt{q^*} z)^2]`,
  the slope of the correlation map at :math:`c = 1`. :math:`\chi_1 < 1`: ordered phase (nearby
  inputs converge, :math:`c^* = 1` is stable); :math:`\chi_1 > 1`: chaotic phase (they decorrelate
  to a :math:`c^* < 1`); :math:`\chi_1 = 1`: the critical line ("edge of chaos");
* correlation map :math:`c \mapsto \mathcal C(c) = \big(\sigma_w^2\, k(q^*, c q^*, q^*) + \sigma_b^2\big)/q^*`
  with stable fixed point :math:`c^*`;
* depth scale :math:`\xi_c = -1/\ln \chi_c`,
  :math:`\chi_c = \sigma_w^2\, \dot k(q^*, c^* q^*, q^*)` (Schoenholz et al. 2017, eqs. 9–10): the
  number of layers over which :math:`|c_l - c^*|` shrinks by :math:`e`.

How the fixed points are found (all inside ``lax.while_loop``, so ``w_std``/``b_std`` may be
traced and a grid is one vmapped program):

* :math:`q`: iterate :math:`\mathcal V` from ``q0`` (default 1) until
  :math:`|q_{n+1} - q_n| \le \text{tol}\cdot q_{n+1}` or ``max_steps`` maps. The length map has no
  finite fixed point when it grows without bound (ReLU with :math:`\sigma_w^2 > 2`, or
  :math:`\sigma_w^2 = 2` and :math:`\sigma_b > 0`; the identity with :math:`\sigma_w \ge 1`,
  :math:`\sigma_b > 0`). This is declared when :math:`q` passes :math:`q_{\max} =
  (\text{largest float})^{1/5}`, or when after ``max_steps`` maps it is still increasing by steps
  that do not shrink (:math:`\mathcal V' \ge 1` along the path; a convergent monotone iteration has
  shrinking steps once it is near its limit). Then ``q_star = +inf``, ``c_star = 1`` and
  ``xi_c = +inf`` (there is no fixed point to linearise around; for positively homogeneous
  :math:`\phi` the correlation map at :math:`q \to \infty` has slope 1 at :math:`c = 1`, so
  correlations do not converge exponentially — Hayou, Doucet & Rousseau 2019), and ``chi_1`` is
  evaluated at the last iterate: exact for the ReLU family (whose :math:`\dot k` does not depend on
  the scale), an approximation of the :math:`q \to \infty` limit otherwise (GELU). Where
  :math:`q_n \to 0` (:math:`\sigma_b = 0` in the ordered phase) the iteration runs ``max_steps``
  maps (or until :math:`q` underflows to 0) and ``q_star`` is the small last iterate.
* :math:`c`: the map is normalised by :math:`\mathcal V(q)` rather than :math:`q` (equal at the fixed
  point): :math:`\mathcal C(c) = (\sigma_w^2 k(q, cq, q) + \sigma_b^2)/(\sigma_w^2 k(q, q, q) + \sigma_b^2)`,
  so :math:`c = 1` is an exact fixed point, :math:`|\mathcal C| \le 1` by Cauchy–Schwarz, and a
  vanishing :math:`q` is harmless. By Mehler's expansion :math:`\mathcal C` has nonnegative Taylor
  coefficients in :math:`c`, so it is increasing and convex on :math:`[0, 1]` with
  :math:`\mathcal C(0) \ge 0` and :math:`\mathcal C'(1) = \chi_1`. Hence: if :math:`\chi_1 \le 1`,
  :math:`c = 1` is the only fixed point in :math:`[0, 1]` and attracts all of it — we set
  :math:`c^* = 1` without iterating (also for :math:`\chi_1 \le 1 + \text{tol}`, so that rounding
  on the critical line, e.g. ``sqrt(2)**2 > 2``, does not count as chaos); if :math:`\chi_1 > 1`,
  the fixed point in :math:`[0, 1)` is unique and stable, and the iteration from :math:`c_0 = 0`
  increases monotonically to it (never overshooting to the unstable :math:`c = 1`); it stops when
  :math:`|c_{n+1} - c_n| \le \text{tol}` or after ``max_steps`` maps. (For odd :math:`\phi` and
  :math:`\sigma_b = 0`, :math:`c = 0` is a fixed point in both phases; the rule above picks the
  stable one.)
* :math:`\xi_c = -1/\ln\chi_c` where :math:`\chi_c < 1`, and ``+inf`` where :math:`\chi_c \ge 1`
  (on the critical line, where the approach to :math:`c^*` is slower than exponential) or where
  :math:`q` diverges.

Convergence is geometric with rate :math:`\mathcal V'(q^*)` or :math:`\chi_c`, both :math:`\to 1` at
criticality, so within ``max_steps`` of the critical line the returned values carry an error of
about ``tol/(1 - rate)`` (for :math:`c^*`: up to :math:`O(1/\text{max\_steps})`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._types import ArrayLike, Scalar
from jaxlearn.nn.dual import DUALS, DualPair

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PhasePoint", "fixed_point", "phase_diagram", "plot_phase_diagram"]


class PhasePoint(NamedTuple):
    """Fixed-point quantities of the mean-field recursion (module docstring).

    ``q_star``: fixed point of the length map (``+inf`` where it diverges); ``c_star``: stable fixed
    point of the correlation map (1 in the ordered phase); ``chi_1``: :math:`\\sigma_w^2
    \\mathbb E[\\phi'(\\sqrt{q^*}z)^2]`; ``xi_c``: correlation depth scale (``+inf`` at criticality).
    """

    q_star: jnp.ndarray
    c_star: jnp.ndarray
    chi_1: jnp.ndarray
    xi_c: jnp.ndarray


def _resolve(dual) -> Callable:
    if isinstance(dual, str):
        if dual not in DUALS:
            raise ValueError(f"unknown activation {dual!r}; expected a dual function or one of {sorted(DUALS)}")
        return DUALS[dual]
    if not callable(dual):
        raise TypeError(f"dual must be a function (q11, q12, q22) -> (k, kdot) or a name, got {type(dual).__name__}")
    return dual


def fixed_point(dual: Callable[..., DualPair] | str, w_std: Scalar, b_std: Scalar, *, q0: Scalar = 1.0,
                max_steps: int = 1000, tol: float | None = None) -> PhasePoint:
    r"""Mean-field fixed point :math:`(q^*, c^*, \chi_1, \xi_c)` for weight/bias std ``w_std``, ``b_std``.

    ``dual``: ``(q11, q12, q22) -> (k, kdot)``, e.g. :func:`jaxlearn.nn.dual.relu_dual` or
    ``jaxlearn.nn.dual.dual("erf", b=2.0)``; a registry name (``"relu"``) uses default parameters.
    ``w_std``, ``b_std``: scalars (:math:`\sigma_w`, :math:`\sigma_b`, not variances), may be traced;
    their dtype sets the computation's. ``q0``: start of the length-map iteration. ``max_steps``:
    cap on the maps applied in each of the two loops (a Python int). ``tol``: relative tolerance on
    successive :math:`q` iterates and absolute tolerance on successive :math:`c` iterates (default
    ``32·eps`` of the dtype). Algorithm and conventions (divergent :math:`q`, :math:`c^* = 1`,
    infinite :math:`\xi_c`): module docstring.
    """
    dual = _resolve(dual)
    dtype = jnp.result_type(w_std, b_std, float)
    w2 = jnp.asarray(w_std, dtype) ** 2
    b2 = jnp.asarray(b_std, dtype) ** 2
    finfo = jnp.finfo(dtype)
    tol = 32 * float(finfo.eps) if tol is None else tol
    q_max = float(finfo.max) ** 0.2

    def length(q):
        return w2 * dual(q, q, q)[0] + b2

    def q_continue(state):
        n, q, prev, _ = state
        return (n < max_steps) & (jnp.abs(q - prev) > tol * q) & (q <= q_max)

    def q_step(state):
        n, q, prev, _ = state
        return n + 1, length(q), q, q - prev

    start = jnp.asarray(q0, dtype)
    first = (jnp.int32(1), length(start), start, jnp.zeros((), dtype))
    _, q, prev, prev_step = jax.lax.while_loop(q_continue, q_step, first)
    step = q - prev
    converged = jnp.abs(step) <= tol * q
    # Past q_max, or still growing by non-shrinking steps after max_steps maps (V' >= 1 along the
    # path: linear or faster growth, e.g. ReLU with sigma_w^2 >= 2 and sigma_b > 0).
    diverged = ~(q <= q_max) | (~converged & (step > 0) & (step >= prev_step))

    k_diag, kdot_diag = dual(q, q, q)
    chi_1 = w2 * kdot_diag
    image = w2 * k_diag + b2  # V(q); equals q at the fixed point
    positive = image > 0
    image = jnp.where(positive, image, 1)

    def correlation(c):
        mapped = (w2 * dual(q, c * q, q)[0] + b2) / image
        return jnp.where(positive, jnp.clip(mapped, -1, 1), 1)

    def c_continue(state):
        n, c, prev = state
        return (n < max_steps) & (jnp.abs(c - prev) > tol)

    def c_step(state):
        n, c, _ = state
        return n + 1, correlation(c), c

    settled = ~(chi_1 > 1 + tol) | diverged  # c* = 1 without iterating (module docstring)
    c0 = jnp.where(settled, 1, 0).astype(dtype)
    _, c, _ = jax.lax.while_loop(c_continue, c_step, (jnp.int32(1), correlation(c0), c0))
    c = jnp.where(settled, 1, c).astype(dtype)

    chi_c = w2 * dual(q, c * q, q)[1]
    contracting = (chi_c < 1) & ~diverged
    xi_c = jnp.where(contracting, -1 / jnp.log(jnp.where(contracting, chi_c, 0.5)), jnp.inf)
    q_star = jnp.where(diverged, jnp.inf, q)
    return PhasePoint(q_star, c, chi_1, xi_c.astype(dtype))


@functools.partial(jax.jit, static_argnames=("dual", "max_steps"))
def _grid(dual, w, b, q0, tol, max_steps):
    return jax.vmap(lambda ws, bs: fixed_point(dual, ws, bs, q0=q0, max_steps=max_steps, tol=tol))(w, b)


def phase_diagram(dual: Callable[..., DualPair] | str, w_stds: ArrayLike, b_stds: ArrayLike, *, q0: Scalar = 1.0,
                  max_steps: int = 1000, tol: float | None = None) -> PhasePoint:
    """:func:`fixed_point` on the grid ``w_stds × b_stds``, as one jitted, vmapped program.

    ``w_stds`` ``(W,)``, ``b_stds`` ``(B,)``: 1-D arrays of standard deviations. Returns a
    :class:`PhasePoint` of arrays of shape ``(W, B)``; entry ``[i, j]`` is at
    ``(w_stds[i], b_stds[j])`` (axis 0 = ``w_std``). ``q0``, ``max_steps``, ``tol``: as for
    :func:`fixed_point`. The compiled program is cached per ``dual`` (a hashable function: the
    same ``functools.partial`` object, not an equal one), ``max_steps``, grid size and dtype. Under
    ``vmap`` each ``while_loop`` runs until its slowest grid point stops; finished points are left
    unchanged, so the result equals a loop of :func:`fixed_point` calls.
    """
    dual = _resolve(dual)
    w = jnp.asarray(w_stds)
    b = jnp.asarray(b_stds)
    if w.ndim != 1 or b.ndim != 1 or w.size == 0 or b.size == 0:
        raise ValueError(f"w_stds and b_stds must be non-empty 1-D arrays, got shapes {w.shape} and {b.shape}")
    dtype = jnp.result_type(w, b, float)
    tol = 32 * float(jnp.finfo(dtype).eps) if tol is None else tol
    W, B = jnp.meshgrid(w.astype(dtype), b.astype(dtype), indexing="ij")
    out = _grid(dual, W.ravel(), B.ravel(), jnp.asarray(q0, dtype), jnp.asarray(tol, dtype), int(max_steps))
    return PhasePoint(*(x.reshape(W.shape) for x in out))


def plot_phase_diagram(result: PhasePoint, w_stds: ArrayLike, b_stds: ArrayLike, *,
                       field: Literal["chi_1", "xi_c"] = "chi_1", title: str | None = None) -> Figure:
    r"""A :class:`matplotlib.figure.Figure` of a :func:`phase_diagram` result.

    Horizontal axis :math:`\sigma_w` (``w_stds``), vertical :math:`\sigma_b` (``b_stds``); the colour is
    ``field``: ``"chi_1"`` (:math:`\chi_1`, diverging colours centred at 1: blue ordered, red chaotic)
    or ``"xi_c"`` (:math:`\log_{10}\xi_c`; infinite values are left blank). The critical line
    :math:`\chi_1 = 1` is drawn as a thick black contour when the grid crosses it. Uses the object
    API only (no pyplot state); the Figure is returned, never shown or saved.
    """
    from matplotlib import colors
    from matplotlib.figure import Figure

    w = np.asarray(w_stds, dtype=float)
    b = np.asarray(b_stds, dtype=float)
    chi = np.asarray(result.chi_1, dtype=float)
    if w.ndim != 1 or b.ndim != 1 or chi.shape != (w.size, b.size):
        raise ValueError(
            f"result fields must have shape (len(w_stds), len(b_stds)) = {(w.size, b.size)}, got {chi.shape}"
        )
    if field == "chi_1":
        values, label, cmap = chi, r"$\chi_1$", "RdBu_r"
        finite = values[np.isfinite(values)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 2.0)
        norm = colors.TwoSlopeNorm(1.0, min(lo, 1.0 - 1e-6), max(hi, 1.0 + 1e-6))
    elif field == "xi_c":
        xi = np.asarray(result.xi_c, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(np.isfinite(xi) & (xi > 0), np.log10(np.where(xi > 0, xi, 1.0)), np.nan)
        label, cmap, norm = r"$\log_{10}\xi_c$", "viridis", None
    else:
        raise ValueError(f"field must be 'chi_1' or 'xi_c', got {field!r}")

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(w, b, np.ma.masked_invalid(values.T), shading="nearest", cmap=cmap, norm=norm)
    fig.colorbar(mesh, ax=ax, label=label)
    if w.size > 1 and b.size > 1 and np.nanmin(chi) < 1.0 < np.nanmax(chi):
        ax.contour(w, b, chi.T, levels=[1.0], colors="k", linewidths=2.5)
        ax.plot([], [], color="k", linewidth=2.5, label=r"$\chi_1 = 1$ (critical)")
        ax.legend(loc="upper left")
    ax.set_xlabel(r"$\sigma_w$")
    ax.set_ylabel(r"$\sigma_b$")
    ax.set_title("Order–chaos phase diagram" if title is None else title)
    return fig
