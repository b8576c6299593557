"""Pruning masks and iterative magnitude pruning (lottery tickets), as pure functions of pytrees.

Representation. A *mask* is a pytree of boolean arrays with the structure and shapes of
``params``; ``True`` keeps an entry, ``False`` prunes it. Masks built here are ``True`` on every
entry of a non-prunable leaf, so :func:`apply_mask` leaves those leaves untouched.

Prunable leaves (argument ``prunable``, resolved at trace time):

* ``None`` (default): the leaves with ``ndim >= 2`` — Dense ``W`` (fan_in, out), Conv kernels
  (HWIO), Embedding tables. Biases and normalisation scales/offsets (``ndim <= 1``) are never
  pruned, the convention of Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis", ICLR) and
  Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML).
* a pytree of Python bools with the structure of ``params`` (one flag per leaf);
* a predicate ``prunable(path, leaf) -> bool`` on the key path (as in
  ``jax.tree_util.tree_flatten_with_path``) and the leaf (a params leaf, or a mask leaf in
  :func:`random_mask`/:func:`density`; use only its static shape/dtype), e.g.
  ``lambda path, w: w.ndim >= 2 and path[0].idx != 4`` to spare the readout of ``nn.mlp([h1, h2], out)``.

Magnitude pruning (:func:`magnitude_mask`) removes the fraction ``sparsity`` of the *currently
kept* prunable weights with the smallest ``|w|``: ``round(sparsity · n_kept)`` of them (rounding
half to even, computed in the float dtype of ``sparsity``), either over all prunable leaves
together (``scope="global"``) or leaf by leaf (``scope="layer"``, ``n_kept`` per leaf). Pruned
entries stay pruned, so ``r`` rounds at rate ``p`` leave ``n_r`` weights with ``n_{r+1} = n_r −
round(p·n_r)``, i.e. density ``(1−p)^r`` up to that rounding. Ties in ``|w|`` are broken by
position: among equal magnitudes the entry that comes first is pruned first, where entries are
ordered by leaf (``jax.tree.leaves`` order) and then row-major within a leaf. The count is exact
(a stable sort, not a threshold), and ``sparsity`` may be traced (``vmap`` over sparsity levels).

Training a subnetwork: :func:`masked` wraps any optax optimizer so that pruned entries never
change (exactly zero when training starts from ``apply_mask(params, mask)``). Controls
(Frankle & Carbin 2019, §2): :func:`random_reinit` (the ticket's mask on a fresh draw of the
initial weights) and :func:`random_mask` (random positions with the ticket's layer-wise or
global counts). :func:`imp` is iterative magnitude pruning with rewinding to iteration ``k``
(Frankle et al. 2020, §5, Algorithm 2; "weight rewinding" in Renda, Frankle & Carbin 2020,
"Comparing rewinding and fine-tuning in neural network pruning", ICLR); ``k = 0`` is the
original lottery-ticket procedure (Frankle & Carbin 2019, §1, "identifying winning tickets").
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.tree_util import keystr, tree_flatten_with_path

from jaxlearn._checks import check_int, is_traced
from jaxlearn._compile import jit_when_eager
from jaxlearn._types import Array, PyTree, Scalar
from jaxlearn.train.pytrees import check_like

__all__ = ["IMPResult", "apply_mask", "density", "imp", "magnitude_mask", "masked", "random_mask",
           "random_reinit", "sparsity"]

# ``prunable``: None (the leaves with ndim >= 2), a predicate (path, leaf) -> bool, or a pytree of bools like params
Prunable = Callable[[tuple, Any], bool] | PyTree | None
_SCOPES = ("global", "layer")


# -- argument checks (trace time) ----------------------------------------------------------------
def _check_scope(fn, scope):
    if scope not in _SCOPES:
        raise ValueError(f"{fn}: scope must be one of {list(_SCOPES)}, got {scope!r}")


def _fraction(fn, name, value):
    """``value`` as a scalar array of the default float dtype; concrete values must be in [0, 1)."""
    if is_traced(value):
        if jnp.shape(value) != ():
            raise ValueError(f"{fn}: {name} must be a scalar, got shape {jnp.shape(value)}")
    else:
        v = np.asarray(value)
        if v.shape != () or v.dtype == bool or not np.issubdtype(v.dtype, np.number) or not 0 <= v < 1:
            raise ValueError(f"{fn}: {name} must be a scalar in [0, 1), got {value!r}")
    return jnp.asarray(value, jax.dtypes.canonicalize_dtype(jnp.float64))


def _check_mask(name, mask, ref, ref_name="params"):
    check_like(name, mask, ref, ref_name)
    for path, m in tree_flatten_with_path(mask)[0]:
        if jnp.result_type(m) != np.dtype(bool):
            raise ValueError(f"{name}: leaf {keystr(path) or '<root>'} must be boolean (True = kept), "
                             f"got dtype {jnp.result_type(m)}")
    return mask


def _prunable_flags(fn, prunable, tree) -> list[bool]:
    """One static bool per leaf of ``tree`` (in ``jax.tree.leaves`` order); see the module docstring."""
    with_paths = tree_flatten_with_path(tree)[0]
    if prunable is None:
        return [jnp.ndim(leaf) >= 2 for _, leaf in with_paths]
    if callable(prunable):
        flags = [prunable(path, leaf) for path, leaf in with_paths]
    else:
        if jax.tree.structure(prunable) != jax.tree.structure(tree):
            raise ValueError(f"{fn}: prunable must be a predicate (path, leaf) -> bool or a pytree of bools with "
                             f"the structure of params, got structure {jax.tree.structure(prunable)}")
        flags = jax.tree.leaves(prunable)
    for (path, _), flag in zip(with_paths, flags):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{fn}: prunable must give a Python bool per leaf, got {flag!r} at leaf "
                             f"{keystr(path) or '<root>'}")
    return [bool(f) for f in flags]


def _require_some(fn, flags, what="params"):
    if not any(flags):
        raise ValueError(f"{fn}: no leaf of {what} is prunable (default: leaves with ndim >= 2); pass prunable")


def _full_mask(params):
    return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)


# -- masks -----------------------------------------------------------------------------------------
def _prune_flat(magnitude, keep, frac):
    """``keep`` (1-D bool) with ``round(frac · n_kept)`` more entries removed: the kept ones of smallest
    ``magnitude``, ties by position. Already-pruned entries score −1 so that they sort first."""
    n = keep.shape[0]
    n_kept = jnp.sum(keep)
    k = jnp.clip(jnp.round(frac * n_kept).astype(jnp.int32), 0, n_kept)
    score = jnp.where(keep, magnitude, -1)
    order = jnp.argsort(score, stable=True)
    return jnp.zeros((n,), bool).at[order].set(jnp.arange(n) >= (n - n_kept) + k)


def magnitude_mask(params: PyTree, sparsity: Scalar, *, scope: Literal["global", "layer"] = "global",
                   mask: PyTree | None = None, prunable: Prunable = None) -> PyTree:
    """A mask that prunes the fraction ``sparsity`` of the kept prunable weights of smallest ``|w|``.

    ``params``: any pytree of arrays. ``sparsity``: a scalar in ``[0, 1)`` (may be traced; a traced
    value outside is clipped to prune between none and all candidates). ``scope``: ``"global"``
    ranks all prunable entries together (Frankle & Carbin 2019, §4, VGG-19 and ResNet-18; Frankle
    et al. 2020), ``"layer"`` prunes the same fraction of each prunable leaf (Frankle & Carbin
    2019, §2–3, LeNet and Conv-2/4/6; their different rates for conv, fully connected and output
    layers are successive calls with ``prunable`` selecting each group). ``mask``: the current mask
    (default all kept); only its kept entries are candidates and its pruned entries stay pruned
    (iterative pruning). Returns a mask like ``params``.

    Count: ``round(sparsity · n_kept)`` entries are pruned (per leaf for ``"layer"``), rounding
    half to even; ties in ``|w|`` go by position (module docstring). Under ``"layer"`` a tiny leaf
    with a high rate may lose all its candidates (``round(0.96 · 10) = 10``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> params = {"W": jnp.array([[0.1, -3.0], [0.5, 2.0]]), "b": jnp.zeros(2)}
        >>> mask = an.magnitude_mask(params, 0.5)           # prunable by default: leaves of rank >= 2
        >>> mask["W"].tolist(), mask["b"].tolist()
        ([[False, True], [False, True]], [True, True])
        >>> an.magnitude_mask(params, 0.5, mask=mask)["W"].tolist()   # iterated: half of the rest
        [[False, True], [False, False]]
    """
    _check_scope("magnitude_mask", scope)
    frac = _fraction("magnitude_mask", "sparsity", sparsity)
    flags = _prunable_flags("magnitude_mask", prunable, params)
    _require_some("magnitude_mask", flags)
    mask = _full_mask(params) if mask is None else _check_mask("mask", mask, params)
    return jit_when_eager(_magnitude_mask, params, frac, scope, mask, tuple(flags))


def _magnitude_mask(params, frac, scope, mask, flags):
    """:func:`magnitude_mask` after its checks; one compiled program when called eagerly
    (``jaxlearn._compile``; 33 small compilations otherwise)."""
    leaves = jax.tree.leaves(params)
    masks, treedef = jax.tree.flatten(mask)
    masks = [jnp.asarray(m) for m in masks]
    chosen = [i for i, f in enumerate(flags) if f]
    if scope == "layer":
        for i in chosen:
            masks[i] = _prune_flat(jnp.abs(leaves[i]).ravel(), masks[i].ravel(), frac).reshape(masks[i].shape)
    else:
        magnitudes = ravel_pytree([jnp.abs(leaves[i]) for i in chosen])[0]  # in the leaves' common dtype
        flat, unravel = ravel_pytree([masks[i] for i in chosen])
        _put_back(masks, chosen, unravel(_prune_flat(magnitudes, flat, frac)))
    return jax.tree.unflatten(treedef, masks)


def _put_back(masks, chosen, new):
    """Replaces ``masks[i]`` by ``new[k]`` for the ``k``-th index ``i`` of ``chosen``, in place."""
    for i, m in zip(chosen, new):
        masks[i] = m


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """``params`` with the pruned entries (``mask`` False) set to zero: ``where(mask, params, 0)``,
    leaf by leaf, dtype kept. Leaves that are all ``True`` in ``mask`` (non-prunable) are unchanged.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> an.apply_mask({"W": jnp.array([1.0, 2.0])}, {"W": jnp.array([True, False])})["W"].tolist()
        [1.0, 0.0]
    """
    _check_mask("mask", mask, params)
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask)


def random_mask(key: jax.Array, mask: PyTree, *, scope: Literal["global", "layer"] = "layer",
                prunable: Prunable = None) -> PyTree:
    """A uniformly random mask with the kept counts of ``mask`` — the random-pruning control.

    ``scope="layer"``: within each prunable leaf the kept positions are a uniformly random subset of
    the same size (``mask``'s per-leaf density is preserved: the "random pruning" of Frankle et al.
    2020, §5, with the ticket's layer-wise sparsities; a random shuffle of each leaf's mask).
    ``scope="global"``: the total kept count over all prunable leaves is preserved and the kept
    positions are a uniform random subset of all prunable entries (per-leaf counts then vary).
    Non-prunable leaves are returned unchanged. Leaf ``i`` (``jax.tree.leaves`` order) uses
    ``fold_in(key, i)``; ``mask`` may be traced (``vmap`` over keys or masks).
    """
    _check_scope("random_mask", scope)
    _check_mask("mask", mask, mask)
    flags = _prunable_flags("random_mask", prunable, mask)
    _require_some("random_mask", flags, "mask")
    masks, treedef = jax.tree.flatten(mask)
    masks = [jnp.asarray(m) for m in masks]
    chosen = [i for i, f in enumerate(flags) if f]

    def shuffle(k, flat):
        return flat[jax.random.permutation(k, flat.shape[0])]

    if scope == "layer":
        for i in chosen:
            masks[i] = shuffle(jax.random.fold_in(key, i), masks[i].ravel()).reshape(masks[i].shape)
    else:
        flat, unravel = ravel_pytree([masks[i] for i in chosen])
        _put_back(masks, chosen, unravel(shuffle(key, flat)))
    return jax.tree.unflatten(treedef, masks)


def random_reinit(key: jax.Array, init_fn: Callable[[jax.Array], PyTree], mask: PyTree) -> PyTree:
    """The random-reinitialization control of Frankle & Carbin 2019 (§2): the ticket's ``mask`` applied
    to a fresh draw of the initial weights, ``apply_mask(init_fn(key), mask)`` with ``θ'₀ ~ D_θ``.

    ``init_fn(key) -> params`` draws initial parameters (e.g. ``lambda k: model.init(k, spec)[0]``);
    use a key other than the one of the ticket's original initialisation.
    """
    if not callable(init_fn):
        raise TypeError(f"random_reinit: init_fn must be a function key -> params, got {type(init_fn).__name__}")
    return apply_mask(init_fn(key), mask)


def density(mask: PyTree, prunable: Prunable = None) -> tuple[Array, PyTree]:
    """``(overall, per_leaf)``: the fraction of kept entries among all prunable entries (a scalar), and
    of each leaf (a pytree like ``mask`` of scalars, every leaf including the non-prunable ones, which
    are ``1.0`` for masks built here). Float of the default dtype; ``vmap`` over masks works.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> mask = {"a": jnp.array([[True, False]]), "b": jnp.array([[True, True]])}
        >>> overall, per_leaf = an.density(mask)
        >>> float(overall), float(per_leaf["a"])
        (0.75, 0.5)
    """
    _check_mask("mask", mask, mask)
    flags = _prunable_flags("density", prunable, mask)
    _require_some("density", flags, "mask")
    leaves = jax.tree.leaves(mask)
    kept = sum(jnp.sum(m) for m, f in zip(leaves, flags) if f)
    total = sum(int(np.prod(jnp.shape(m))) for m, f in zip(leaves, flags) if f)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    return kept.astype(dtype) / total, jax.tree.map(lambda m: jnp.mean(m, dtype=dtype), mask)


def sparsity(mask: PyTree, prunable: Prunable = None) -> tuple[Array, PyTree]:
    """``(overall, per_leaf)``: the fraction of *pruned* entries, ``1 − density`` (see :func:`density`)."""
    overall, per_leaf = density(mask, prunable)
    return 1 - overall, jax.tree.map(lambda d: 1 - d, per_leaf)


# -- training a subnetwork -------------------------------------------------------------------------
def masked(optimizer: optax.GradientTransformation, mask: PyTree) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` restricted to the kept entries of ``mask``: pruned entries are never updated.

    ``update(g, state, params)`` computes ``u, state = optimizer.update(g ⊙ m, state, params)`` and
    returns ``u ⊙ m``. Both maskings matter:

    * the *gradient* is masked before the inner optimizer, so its statistics (momentum, Adam's
      moments) are exactly zero at pruned coordinates and — what makes a difference — transforms
      that couple coordinates (``clip_by_global_norm``, LARS/LAMB trust ratios, factored second
      moments) see only the subnetwork's gradient, which is the gradient of the loss of the sparse
      network ``f(x; m ⊙ θ)`` with respect to its free weights. Training with ``masked`` is thus
      training the subnetwork itself, as in Frankle & Carbin 2019;
    * the *update* is masked after it, because some optimizers move a coordinate with zero gradient
      (weight decay of a nonzero weight, added noise, ``eps`` terms).

    Hence pruned entries keep their starting value exactly: start from ``apply_mask(params, mask)``
    and they stay 0.0 under any optimizer (SGD, momentum, Adam, AdamW, ...). The state is the inner
    optimizer's. ``mask`` may be traced (build the optimizer inside a vmapped function to train a
    population of masks). Leaves the inner optimizer marks ``optax.MaskedNode`` pass through.
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"masked: optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}")
    optimizer = optax.with_extra_args_support(optimizer)

    def apply(tree):
        return jax.tree.map(lambda u, m: u if isinstance(u, optax.MaskedNode) else jnp.where(m, u, jnp.zeros_like(u)),
                            tree, mask, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    def init_fn(params):
        _check_mask("masked: mask", mask, params)
        return optimizer.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        inner, state = optimizer.update(apply(updates), state, params, **extra_args)
        return apply(inner), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -- iterative magnitude pruning ---------------------------------------------------------------------
class IMPResult(NamedTuple):
    """What :func:`imp` returns; both fields have a leading axis of length ``rounds + 1``.

    ``masks[r]``: the mask trained in round ``r`` (``masks[0]`` is the starting mask, all kept by
    default; ``masks[-1]`` is the final ticket). ``params[r]``: the weights that ``train_fn``
    reached from ``apply_mask(rewind_params, masks[r])`` (``params[-1]``: the trained final ticket).
    """

    masks: PyTree
    params: PyTree


def imp(train_fn: Callable[[PyTree, PyTree], PyTree], rewind_params: PyTree, *, rounds: int, rate: Scalar,
        scope: Literal["global", "layer"] = "global", prunable: Prunable = None, mask: PyTree | None = None,
        scan: bool = True) -> IMPResult:
    """Iterative magnitude pruning with rewinding (Frankle et al. 2020, §5, Algorithm 2).

    Starting from ``m₀ = mask`` (default all kept), round ``r = 0, …, rounds`` trains
    ``θ_r = train_fn(apply_mask(rewind_params, m_r), m_r)`` and, for ``r < rounds``, sets
    ``m_{r+1} = magnitude_mask(θ_r, rate, scope=scope, mask=m_r)``: it prunes ``rate`` of the
    *remaining* weights by the magnitude of the *trained* weights, then rewinds. ``masks[r]`` has
    density ``(1 − rate)^r`` up to rounding (:func:`magnitude_mask`). There are ``rounds`` prunings
    and ``rounds + 1`` trainings (the dense network first, the final ticket last).

    ``train_fn(params, mask) -> trained params`` (same structure) is the user's training, e.g. a
    :func:`jaxlearn.train.train` loop with the optimizer wrapped in :func:`masked`. ``rewind_params``:
    the weights ``θ_k`` at the rewinding iteration ``k`` — from a runner run,
    ``runner.load_state(root, run, step=k).params``; ``θ₀`` (the initialisation) gives the original
    lottery ticket of Frankle & Carbin 2019. Rewinding resets the weights only; ``train_fn``
    decides the rest (following Frankle et al. 2020 it should train for ``T − k`` steps with the
    learning-rate schedule and data order continuing from step ``k``).

    ``rounds`` (int ≥ 0), ``scope`` and ``scan`` are static; ``rate`` in ``[0, 1)`` may be traced.
    ``scan=True`` runs the rounds in ``lax.scan`` (``train_fn`` is traced once, so it must be
    jittable; the whole ``imp`` then works under ``jax.jit`` and ``jax.vmap``, e.g. over seeds of
    ``rewind_params``). ``scan=False`` is a Python loop that calls ``train_fn`` ``rounds + 1`` times
    (any ``train_fn``, e.g. one that checkpoints between rounds; under ``jit`` it is unrolled).
    """
    check_int(rounds, "rounds", minimum=0, where="imp")
    _check_scope("imp", scope)
    rate = _fraction("imp", "rate", rate)
    if not callable(train_fn):
        raise TypeError(f"imp: train_fn must be a function (params, mask) -> params, got {type(train_fn).__name__}")
    _require_some("imp", _prunable_flags("imp", prunable, rewind_params))
    mask = _full_mask(rewind_params) if mask is None else _check_mask("mask", mask, rewind_params)

    def one_round(m, _):
        trained = train_fn(apply_mask(rewind_params, m), m)
        check_like("imp: train_fn's output", trained, rewind_params)
        return magnitude_mask(trained, rate, scope=scope, mask=m, prunable=prunable), (m, trained)

    if scan:
        _, (masks, params) = lax.scan(one_round, mask, None, length=int(rounds) + 1)
        return IMPResult(masks, params)
    history = []
    for _ in range(int(rounds) + 1):
        mask, out = one_round(mask, None)
        history.append(out)
    masks, params = jax.tree.map(lambda *xs: jnp.stack(xs), *history)
    return IMPResult(masks, params)
