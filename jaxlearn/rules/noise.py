"""Gradient noise and per-layer clipping as optax transforms — only what optax lacks.

What to use from optax (checked against optax 0.2.8):

* **Annealed gradient noise** (Neelakantan et al. 2015, "Adding gradient noise improves learning
  for very deep networks", arXiv:1511.06807): ``optax.add_noise(eta, gamma, key=key)``
  adds ``N(0, σ_t²)`` noise with ``σ_t² = eta/(1 + t)**gamma`` at update ``t = 0, 1, …``. It takes a
  PRNG *key* (not only an int seed) and keeps it in its state, so a population over seeds is one
  vmapped program when the transform is built inside the vmapped member function from that
  member's key (``eta``, ``gamma`` may be traced too); ``tests/rules/test_noise.py`` checks both
  the variance schedule and the vmap. jaxlearn therefore provides no copy of it. Derive the key
  from the member's seed (``jax.random.fold_in(key, tag)``), not from its position in a group.
* **Global-norm clipping**: ``optax.clip_by_global_norm(max_norm)`` (Pascanu et al. 2013).
* **Elementwise clipping**: ``optax.clip(max_delta)``.
* **Unit-wise clipping relative to the parameter norm** (Brock et al. 2021, NFNets):
  ``optax.adaptive_grad_clip(clipping)``.
* **Per-leaf RMS clipping**: ``optax.clip_by_block_rms(threshold)`` clips each leaf's *root mean
  square*; this is per-leaf L2-norm clipping only when all leaves have the same size, because a
  leaf's norm is ``rms·√size`` — hence :func:`clip_by_layer_norm` below.
* **Per-example clipping for differential privacy**: ``optax.per_example_global_norm_clip`` and
  ``optax.per_example_layer_norm_clip`` — functions of per-example gradients (a batch axis) that
  return the clipped sum, not gradient transforms of the batch gradient.

Provided here: :func:`clip_by_layer_norm`, L2-norm clipping per leaf or per layer (a group of
leaves, e.g. a Dense layer's ``W`` and ``b``), the per-layer clipping of McMahan et al. 2018 ("A
general approach to adding differential privacy to iterative training procedures") applied to
the (batch) gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxlearn._checks import check_int, is_traced
from jaxlearn._types import Scalar

__all__ = ["clip_by_layer_norm"]


def _group_of(path, depth):
    """A leaf's group: its whole key path (``depth=None``) or the first ``depth`` entries of it."""
    return jax.tree_util.keystr(tuple(path if depth is None else path[:depth]))


def clip_by_layer_norm(max_norm: Scalar, depth: int | None = None) -> optax.GradientTransformation:
    """Clips the L2 norm of each group of update leaves to at most ``max_norm``.

    Each group ``G`` is rescaled by ``min(1, max_norm/‖u_G‖₂)``, where ``‖u_G‖₂² = Σ_{leaf ∈ G}
    Σ |u_leaf|²``; a group with ``‖u_G‖ ≤ max_norm`` (zero included) is left unchanged, and the
    map is differentiable everywhere except on the sphere ``‖u_G‖ = max_norm`` (finite gradients
    at zero).

    Groups (``depth``, static): ``None`` — every leaf is its own group (per-leaf clipping);
    an int ``d ≥ 0`` — leaves whose key paths share their first ``d`` entries form a group. For
    ``jaxlearn.nn.serial`` parameters (a tuple with one entry per layer) ``depth=1`` clips per
    layer, so a Dense layer's ``W`` and ``b`` are clipped together; ``depth=0`` is one group, i.e.
    ``optax.clip_by_global_norm``.

    ``max_norm > 0``: a scalar, may be traced (a population over clipping thresholds is one vmapped
    program). Stateless (``optax.EmptyState``); ``optax.MaskedNode`` leaves (from ``optax.masked``
    or ``jaxlearn.train.freeze``) are passed through.
    """
    if not is_traced(max_norm):
        try:
            ok = float(max_norm) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"clip_by_layer_norm: max_norm must be a positive scalar, got {max_norm!r}")
    check_int(depth, "depth", minimum=0, optional=True, where="clip_by_layer_norm", expected="None or an int >= 0")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(updates)
        groups = [_group_of(path, depth) for path, _ in leaves_with_path]
        sq = {}
        for g, (_, u) in zip(groups, leaves_with_path):
            s = jnp.sum(jnp.real(u * jnp.conj(u)))
            sq[g] = s if g not in sq else sq[g] + s
        scale = {}
        for g, s in sq.items():
            limit = jnp.asarray(max_norm, s.dtype)
            over = s > limit ** 2
            # the inner where keeps sqrt and the division away from 0 so gradients stay finite
            scale[g] = jnp.where(over, limit / jnp.sqrt(jnp.where(over, s, 1)), 1)
        clipped = [(u * scale[g].astype(u.dtype)).astype(u.dtype) for g, (_, u) in zip(groups, leaves_with_path)]
        return jax.tree_util.tree_unflatten(treedef, clipped), state

    return optax.GradientTransformation(init_fn, update_fn)
