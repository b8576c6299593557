"""The angle between two parameter updates: how well a learning rule's update follows the gradient.

Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback weights
support error backpropagation for deep learning", Fig. 2 and §"Feedback alignment"), direct feedback
alignment (Nøkland 2016, Fig. 3) and other gradient estimates are judged by the angle between the
update they prescribe and the true backprop gradient: below 90° the update descends the loss, and the
angle falling during training is the "alignment" of the forward weights with the feedback.

Conventions: both updates are pytrees with the same structure, seen as one vector of ``P``
coordinates each (all leaves flattened and concatenated); the angle is in degrees, in ``[0, 180]``.
It is computed as ``2·atan2(|û − v̂|, |û + v̂|)`` with ``û = u/|u|``, ``v̂ = v/|v|`` (Kahan's formula:
accurate near 0° and 180°, where ``arccos`` of the cosine loses half the digits). A zero vector is at
90° to everything (its unit vector is taken as zero: ``atan2(1, 1) = 45°``, doubled), so "no update"
reads as "no progress along the gradient" rather than NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxlearn._types import PyTree

__all__ = ["gradient_angle", "gradient_cosine"]


def _unit(tree: PyTree) -> PyTree:
    norm = optax.tree_utils.tree_norm(tree)
    tiny = jnp.finfo(jnp.result_type(norm)).tiny
    return jax.tree.map(lambda leaf: leaf / jnp.maximum(norm, tiny).astype(leaf.dtype), tree)


def _check_same_structure(u: PyTree, v: PyTree) -> None:
    if jax.tree.structure(u) != jax.tree.structure(v):
        raise ValueError(f"gradient_angle: the two updates must have the same pytree structure, got "
                         f"{jax.tree.structure(u)} and {jax.tree.structure(v)}")
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"gradient_angle: leaves must have equal shapes, got {jnp.shape(a)} and {jnp.shape(b)}")


def gradient_angle(update: PyTree, gradient: PyTree) -> jax.Array:
    """The angle in degrees between ``update`` and ``gradient`` (pytrees of the same structure, each
    seen as one flat vector; module docstring): ``0`` when ``update`` points along ``gradient``,
    ``90`` when orthogonal (or when either is zero), ``180`` when opposite. A scalar of the leaves'
    floating dtype; pure, so it jits and vmaps (over seeds, layers).

    Examples:
        >>> from jaxlearn import analysis
        >>> float(analysis.gradient_angle({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 1.0])}))
        45.0
    """
    _check_same_structure(update, gradient)
    u, v = _unit(update), _unit(gradient)
    diff = optax.tree_utils.tree_norm(jax.tree.map(jnp.subtract, u, v))
    total = optax.tree_utils.tree_norm(jax.tree.map(jnp.add, u, v))
    angle = jnp.degrees(2 * jnp.arctan2(diff, total))
    return jnp.where((diff == 0) & (total == 0), jnp.asarray(90, angle.dtype), angle)  # both zero: 90° too


def gradient_cosine(update: PyTree, gradient: PyTree) -> jax.Array:
    """``⟨u, v⟩ / (|u| |v|)``, the cosine of :func:`gradient_angle` (``0`` when either is zero)."""
    _check_same_structure(update, gradient)
    return optax.tree_utils.tree_vdot(_unit(update), _unit(gradient))
