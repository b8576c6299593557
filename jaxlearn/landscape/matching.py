"""Aligning two networks by permuting hidden units (Ainsworth, Hayase & Srinivasa 2022, "Git
Re-Basin"): weight matching (§3.2, Algorithm 1) and activation matching (§3.1), over a
:class:`~jaxlearn.landscape.permutation.PermutationSpec`.

Host-side: numpy and ``scipy.optimize.linear_sum_assignment`` (imported on first use), not
jittable; the result is applied with the pure
:func:`~jaxlearn.landscape.permutation.apply_permutation`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxlearn._types import PyTree

# hidden_activations lives with the model walk it reads; re-exported here beside activation_matching
from jaxlearn.landscape.permutation import (
    PermutationSpec,
    apply_permutation,
    check_spec,
    hidden_activations,
    leaves_by_path,
    permute_leaf,
)
from jaxlearn.train.pytrees import check_like

__all__ = ["Matching", "hidden_activations", "weight_matching", "activation_matching"]


class Matching(NamedTuple):
    """``perms``: group → ``(n,)`` int permutation; ``params`` (and ``state``, ``None`` when not
    given): ``params_b`` (``state_b``) permuted by them, aligned to ``a``."""

    perms: dict
    params: object
    state: object = None


# -- matching (host-side) ------------------------------------------------------------------------
def _units(x, axis, repeats, n):
    """``x`` as an ``(n, rest)`` matrix with one row per unit of ``axis``."""
    x = np.moveaxis(x, axis, 0)
    return np.swapaxes(x.reshape((repeats, n) + x.shape[1:]), 0, 1).reshape(n, -1)


def _assign(cost):
    from scipy.optimize import linear_sum_assignment  # host-side, lazily imported

    rows, cols = linear_sum_assignment(cost, maximize=True)
    assert np.array_equal(rows, np.arange(len(rows)))
    return cols


def _result(spec, perms, params_b, state_b):
    perms = {g: np.asarray(p, np.int32) for g, p in perms.items()}
    if state_b is None:
        return Matching(perms, apply_permutation(spec, perms, params_b))
    return Matching(perms, *apply_permutation(spec, perms, params_b, state_b))


def weight_matching(spec: PermutationSpec, params_a: PyTree, params_b: PyTree, state_b: PyTree | None = None, *,
                    max_iter: int = 100,
                    seed: int = 0) -> Matching:
    """Aligns ``b`` to ``a`` by weight matching (Ainsworth et al. 2022, §3.2, Algorithm 1).

    Maximises ``Σ_leaves ⟨θ_a, π(θ_b)⟩`` over the permutations of all groups (every leaf the spec
    lists, biases and norm parameters included) by coordinate descent: in each sweep the groups
    are visited in a random order (``numpy.random.default_rng(seed)``), and each step solves,
    with the other groups' permutations fixed, the linear assignment
    ``π_g = argmax_π Σ_i C[i, π(i)]``, ``C[i, j] = Σ_{leaf, axis in g} ⟨a-unit i, b-unit j⟩``
    (``scipy.optimize.linear_sum_assignment``). Stops after a sweep without improvement (or
    ``max_iter`` sweeps). A group alone is solved exactly; jointly it is a local optimum.

    Host-side (numpy, float64): **not** jittable or vmappable. ``state_b`` (BatchNorm running
    statistics) is permuted along if given; it does not enter the objective. Returns a
    :class:`Matching`.
    """
    check_like("params_b", params_b, params_a, "params_a")
    check_spec(spec, params_a, "params")
    a = {k: np.asarray(v, np.float64) for k, v in leaves_by_path(params_a).items() if k in spec.params}
    b = {k: np.asarray(v, np.float64) for k, v in leaves_by_path(params_b).items() if k in spec.params}
    touching = {g: [(k, axis, e[1]) for k, es in spec.params.items() for axis, e in enumerate(es)
                    if e is not None and e[0] == g] for g in spec.sizes}
    perms = {g: np.arange(n) for g, n in spec.sizes.items()}
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        improved = False
        for g in rng.permutation(list(spec.sizes)):
            n = spec.sizes[g]
            cost = np.zeros((n, n))
            for key, axis, repeats in touching[g]:
                other = permute_leaf(np, b[key], spec.params[key], perms, skip=axis)
                cost += _units(a[key], axis, repeats, n) @ _units(other, axis, repeats, n).T
            new = _assign(cost)
            old_value, new_value = cost[np.arange(n), perms[g]].sum(), cost[np.arange(n), new].sum()
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perms[g], improved = new, True
        if not improved:
            break
    return _result(spec, perms, params_b, state_b)


def activation_matching(spec: PermutationSpec, activations_a: dict, activations_b: dict, params_b: PyTree,
                        state_b: PyTree | None = None, *, normalize: bool = False) -> Matching:
    """Aligns ``b`` to ``a`` by activation matching (Ainsworth et al. 2022, §3.1; Li et al. 2016,
    "Convergent Learning"): for each group independently,
    ``π_g = argmax_π Σ_i C[i, π(i)]`` with ``C = Z_aᵀ Z_b``, ``Z`` the group's activations on the
    same inputs as a ``(samples, n)`` matrix — i.e. ``min_π ‖Z_a − Z_b P_π‖_F``. ``normalize=True``
    uses correlations instead (each unit standardised over the samples).

    ``activations_a``/``activations_b``: group → an array, or a list of arrays concatenated as
    samples, of shape ``(..., repeats·n)`` (units fastest), e.g. from :func:`hidden_activations`.
    Host-side (``scipy``), not jittable. Returns a :class:`Matching` (``state_b`` permuted along).
    """
    check_spec(spec, params_b, "params")
    perms = {}
    for g, n in spec.sizes.items():
        z = []
        for name, acts in (("activations_a", activations_a), ("activations_b", activations_b)):
            if not isinstance(acts, dict) or g not in acts:
                raise ValueError(f"{name}: no activations for group {g!r} "
                                 f"(expected a dict with keys {sorted(spec.sizes)})")
            sites = acts[g] if isinstance(acts[g], (list, tuple)) else [acts[g]]
            if not sites or any(np.shape(s)[-1] % n for s in sites):
                raise ValueError(f"{name}[{g!r}]: expected arrays whose last axis is a multiple of {n}, got "
                                 f"{[np.shape(s) for s in sites]}")
            z.append(np.concatenate([np.asarray(s, np.float64).reshape(-1, n) for s in sites]))
        if z[0].shape != z[1].shape:
            raise ValueError(f"activations_b[{g!r}]: {z[1].shape[0]} samples, activations_a has {z[0].shape[0]}")
        if normalize:
            z = [(m - m.mean(0)) / (m.std(0) + 1e-12) for m in z]
        perms[g] = _assign(z[0].T @ z[1])
    return _result(spec, perms, params_b, state_b)
