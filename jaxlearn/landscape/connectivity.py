"""Linear mode connectivity: interpolation between two solutions, loss barriers, BatchNorm reset.

A *point* is whatever ``objective.apply_fn`` takes as its first argument. For a model without
state that is ``params``; for a model with BatchNorm statistics it is the pair
``(params, state)`` with ``apply_fn = lambda point, x: model.apply(point[0], x, point[1])``
(eval mode: the running statistics normalise). Interpolating running statistics is meaningless
(Jordan et al. 2023, "REPAIR"; Ainsworth et al. 2022, §4), so along a path of BatchNorm
networks the statistics are recomputed at every point: pass ``reset=batch_stats_reset(...)``.

* :func:`interpolate` — ``θ(α) = (1 − α) θ_a + α θ_b`` (pure; vmap over ``α``).
* :func:`linear_path` — loss and accuracy over a dataset (chunked, exact means) at points of
  the segment, one compiled program (``lax.map`` over ``α``).
* :func:`barrier` — the loss barrier, both conventions: ``linear`` (above the chord; Entezari et
  al. 2022, "The Role of Permutation Invariance in Linear Mode Connectivity of Neural Networks",
  §2) and ``mean`` (above the endpoints' mean; Frankle et al. 2020, "Linear Mode Connectivity and
  the Lottery Ticket Hypothesis", §2 "instability"; Ainsworth et al. 2022, "Git Re-Basin", §2).
* :func:`reset_batch_stats` / :func:`batch_stats_reset` — running statistics recomputed from data.

Example (BatchNorm MLP)::

    objective = ModelObjective(lambda pt, x: model.apply(pt[0], x, pt[1]), softmax_cross_entropy, (x, y), 512)
    path = linear_path(objective, (params_a, state_a), (params_b, state_b), 25,
                       reset=batch_stats_reset(model.apply_with_state, x, 512))
    print(barrier(path["loss"], path["alpha"]).linear)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int, concrete, is_int
from jaxlearn._types import ArrayLike, PyTree, Scalar
from jaxlearn.landscape.objective import ModelObjective, dataset_metrics
from jaxlearn.train.pytrees import check_like

__all__ = ["Barrier", "interpolate", "linear_path", "barrier", "reset_batch_stats", "batch_stats_reset"]


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _lerp(a, b, alpha):
    """``(1 − α) a + α b`` evaluated from the nearer end, so that ``α = 0`` gives ``a``, ``α = 1``
    gives ``b`` and ``a = b`` gives ``a`` exactly (no rounding), as in C++20 ``std::lerp``."""
    if not _is_float(a):
        return a
    alpha = jnp.asarray(alpha, a.dtype)
    d = b - a
    return jnp.where(alpha < 0.5, a + alpha * d, b - (1 - alpha) * d)


def interpolate(params_a: PyTree, params_b: PyTree, alpha: Scalar) -> PyTree:
    """The point ``θ(α) = (1 − α) θ_a + α θ_b`` on the segment between two parameter pytrees.

    ``params_a``/``params_b``: pytrees of the same structure and leaf shapes (a ValueError names
    the first differing leaf of ``params_b``); ``alpha``: a scalar (``vmap`` over it for many
    points; ``α`` outside [0, 1] extrapolates). Floating leaves are interpolated leaf by leaf in
    their own dtype — from the nearer end, so ``α = 0`` and ``α = 1`` give the endpoints and
    ``θ_a = θ_b`` gives ``θ_a`` *exactly*; non-floating leaves (integer counters) are ``params_a``'s.
    Pure: works under ``jit``, ``vmap`` (over ``α`` or the endpoints) and ``grad``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> ls.interpolate({"w": jnp.zeros(2)}, {"w": jnp.array([2.0, 4.0])}, 0.25)["w"].tolist()
        [0.5, 1.0]
    """
    check_like("params_b", params_b, params_a, "params_a")
    return jax.tree.map(lambda a, b: _lerp(a, b, alpha), params_a, params_b)


def linear_path(objective: ModelObjective, params_a: PyTree, params_b: PyTree, num_points: int = 25, *,
                alphas: ArrayLike | None = None, reset: Callable | None = None) -> dict:
    """Loss and accuracy along the segment from ``params_a`` (``α = 0``) to ``params_b`` (``α = 1``).

    At each ``α`` the point is :func:`interpolate` ``(params_a, params_b, α)``, then
    ``reset(point)`` if given (e.g. :func:`batch_stats_reset` for BatchNorm networks, whose
    points are ``(params, state)`` pairs: module docstring), and its metrics are
    :func:`~jaxlearn.landscape.dataset_metrics` — exact dataset means in chunks of
    ``objective.batch_size``. The ``α`` loop is one ``lax.map`` (one compiled program, memory of
    one point at a time); wrap the call in ``jax.jit`` to compile the whole path once.

    Args:
      objective: a :class:`~jaxlearn.landscape.ModelObjective`.
      params_a, params_b: the endpoints (same structure and shapes).
      num_points: ``P``, number of equally spaced ``α`` in [0, 1], endpoints included (≥ 2).
      alphas: optional ``(P,)`` array of ``α`` values instead (e.g. from 0 to 1 for :func:`barrier`).
      reset: optional pure ``point -> point`` applied at every ``α``.

    Returns ``{"alpha": (P,), "loss": (P,), "accuracy": (P,)}``. The loss barrier is
    ``barrier(out["loss"], out["alpha"])``; the error barrier ``barrier(1 - out["accuracy"], ...)``.
    """
    check_like("params_b", params_b, params_a, "params_a")
    alphas = path_positions(objective, num_points, alphas, "alphas", reset)

    def at(alpha):
        point = jax.tree.map(lambda a, b: _lerp(a, b, alpha), params_a, params_b)
        if reset is not None:
            point = reset(point)
        return dataset_metrics(objective, point)

    metrics = jax.lax.map(at, alphas)
    return {"alpha": alphas, **metrics}


def path_positions(objective, num_points, values, name: str, reset):
    """The checked positions along a path (shared by :func:`linear_path` and
    :func:`~jaxlearn.landscape.curve_path`): ``values`` as a 1-D float array, or ``num_points``
    equally spaced in [0, 1] when it is None; ``objective`` and ``reset`` checked too."""
    if not isinstance(objective, ModelObjective):
        raise TypeError(f"objective: expected a ModelObjective, got {type(objective).__name__}")
    if reset is not None and not callable(reset):
        raise TypeError(f"reset: expected a callable point -> point or None, got {type(reset).__name__}")
    if values is None:
        check_int(num_points, "num_points", minimum=2,
                  expected="an int >= 2 (the endpoints and what lies between)")
        return jnp.linspace(0.0, 1.0, num_points, dtype=jnp.result_type(float))
    values = jnp.asarray(values, jnp.result_type(float))
    if values.ndim != 1 or values.shape[0] < 1:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {values.shape}")
    return values


class Barrier(NamedTuple):
    """Loss barriers along a path ``L(α)``, ``α ∈ [0, 1]`` (:func:`barrier`).

    ``linear``: ``max_α [L(α) − ((1 − α) L(0) + α L(1))]``, the height above the chord between the
    endpoint losses (Entezari et al. 2022, §2).
    ``mean``: ``max_α L(α) − (L(0) + L(1)) / 2`` (Frankle et al. 2020, §2, their "instability" of
    the error; Ainsworth et al. 2022, §2, of the loss). Both are ``≥ 0`` (``α = 0`` is a sample)
    and agree when ``L(0) = L(1)``."""

    linear: jax.Array
    mean: jax.Array


def barrier(values: ArrayLike, alphas: ArrayLike) -> Barrier:
    """The barrier heights of ``values = L(α)`` sampled at ``alphas`` (:class:`Barrier`).

    ``values``: ``(..., P)`` (leading axes are independent paths); ``alphas``: ``(P,)``, increasing
    from ``alphas[0] = 0`` to ``alphas[-1] = 1`` (checked when concrete), so ``L(0) = values[..., 0]``
    and ``L(1) = values[..., -1]``. Returns a :class:`Barrier` of ``(...)`` arrays. The maximum is
    over the sampled ``α`` only (a barrier between samples is missed: sample densely). Pure.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> b = ls.barrier(jnp.array([1.0, 3.0, 2.0]), jnp.array([0.0, 0.5, 1.0]))
        >>> float(b.linear), float(b.mean)                         # above the chord (1.5 at α=½), above the mean (1.5)
        (1.5, 1.5)
    """
    values = jnp.asarray(values)
    alphas = jnp.asarray(alphas)
    if alphas.ndim != 1 or alphas.shape[0] < 2 or values.ndim < 1 or values.shape[-1] != alphas.shape[0]:
        raise ValueError(f"values, alphas: expected values of shape (..., P) and alphas of shape (P,) with P >= 2, "
                         f"got {values.shape} and {alphas.shape}")
    a = concrete(alphas)
    if a is not None:  # traced (under jit/vmap): not checked
        if a[0] != 0 or a[-1] != 1 or np.any(np.diff(a) <= 0):
            raise ValueError(f"alphas: expected increasing values from 0 to 1 (the endpoints of the path), got "
                             f"{a[0]!r} ... {a[-1]!r}" + (" (not increasing)" if np.any(np.diff(a) <= 0) else ""))
    start, end = values[..., :1], values[..., -1:]
    chord = (1 - alphas) * start + alphas * end
    return Barrier(linear=jnp.max(values - chord, axis=-1),
                   mean=jnp.max(values, axis=-1) - 0.5 * (start[..., 0] + end[..., 0]))


def reset_batch_stats(apply_with_state: Callable, params: PyTree, state: PyTree, x: ArrayLike,
                      batch_size: int | None = None) -> PyTree:
    """Running statistics recomputed from data: the *reset* of BatchNorm statistics that
    interpolated (or permuted, or otherwise edited) networks need (Ainsworth et al. 2022, §4;
    Jordan et al. 2023, "REPAIR", §3).

    Estimator: the inputs ``x`` (``(N, ...)``) are cut into ``C = N / batch_size`` equal chunks
    (``batch_size=None``: one chunk of all ``N``); each chunk goes through the network in training
    mode, where every BatchNorm layer normalises with the chunk's own statistics and computes a
    batch statistic ``b_c`` (mean, and variance as the layer feeds it to its running estimate:
    unbiased ``·n/(n−1)`` in :func:`jaxlearn.nn.BatchNorm`, biased in ``flax.linen.BatchNorm``). The
    new state is the plain average ``(1/C) Σ_c b_c`` (PyTorch's ``momentum=None`` cumulative
    average), independent of the old statistics and the momentum. With one chunk it is the exact
    statistic of the whole dataset, computed with every earlier layer normalised by the
    whole-dataset statistics too.

    Convention required of the model: every floating state leaf that training mode changes is
    updated as ``s ← m·s + (1 − m)·b`` with ``b`` independent of ``s`` (the running average of both
    libraries above). ``m`` is read off the model (one extra chunk pass with ``s = 1``), so any
    momentum works; leaves with ``m = 1`` (not updated) and non-floating leaves are kept.

    Args:
      apply_with_state: ``(params, x, state, *, key, train) -> (y, new_state)``, e.g.
        ``model.apply_with_state`` of a :class:`jaxlearn.nn.Layer` (also from ``nn.from_linen``).
      params, state: the network; ``state``'s floating leaves are only replaced.
      x: ``(N, ...)`` inputs; ``batch_size`` must divide ``N`` (chunks of equal size).

    Returns the new ``state``. Pure (jit/vmap/grad); the chunks run in a ``lax.scan``.
    """
    n = int(jax.tree.leaves(x)[0].shape[0])
    size = n if batch_size is None else batch_size
    if not is_int(size) or size < 1 or n % size:
        raise ValueError(f"batch_size: expected None or a positive int dividing the {n} examples of x "
                         f"(chunks must have equal size: padding would bias batch statistics), got {batch_size!r}")
    num = n // size
    chunks = jax.tree.map(lambda a: a.reshape((num, size) + a.shape[1:]), x)

    def updated(s, xc):
        return apply_with_state(params, xc, s, key=None, train=True)[1]

    floats = [_is_float(leaf) for leaf in jax.tree.leaves(state)]
    treedef = jax.tree.structure(state)

    def fill(value):
        return jax.tree.unflatten(treedef, [jnp.full_like(leaf, value) if is_float else leaf
                                            for leaf, is_float in zip(jax.tree.leaves(state), floats)])

    first = jax.tree.map(lambda a: a[0], chunks)
    from_zero = updated(fill(0), first)  # (1 − m)·b_1
    keep = jax.tree.map(lambda one, zero: one - zero, updated(fill(1), first), from_zero)  # m
    check_like("the state returned by apply_with_state", from_zero, state, "state")

    def body(total, xc):
        return jax.tree.map(jnp.add, total, updated(fill(0), xc)), None

    total, _ = jax.lax.scan(body, from_zero, jax.tree.map(lambda a: a[1:], chunks))

    def average(old, t, m, is_float):
        if not is_float:
            return old
        share = 1 - m
        moving = share > 0
        return jnp.where(moving, t / (num * jnp.where(moving, share, 1)), old)

    leaves = zip(jax.tree.leaves(state), jax.tree.leaves(total), jax.tree.leaves(keep), floats)
    return jax.tree.unflatten(treedef, [average(*leaf) for leaf in leaves])


def batch_stats_reset(apply_with_state: Callable, x: ArrayLike, batch_size: int | None = None) -> Callable:
    """``reset((params, state)) -> (params, reset_batch_stats(apply_with_state, params, state, x,
    batch_size))``: the ``reset`` argument of :func:`linear_path` for networks with BatchNorm, whose
    points are ``(params, state)`` pairs (the interpolated state is discarded)."""
    if not callable(apply_with_state):
        raise TypeError(f"apply_with_state: expected a callable, got {type(apply_with_state).__name__}")

    def reset(point):
        if not isinstance(point, tuple) or len(point) != 2:
            raise ValueError(f"point: expected a (params, state) pair, got {type(point).__name__}")
        params, state = point
        return params, reset_batch_stats(apply_with_state, params, state, x, batch_size)

    return reset
