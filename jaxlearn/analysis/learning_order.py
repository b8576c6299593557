"""Learning order: when each example is learnt, and how often it is forgotten (Toneva et al. 2019).

A *history* is a ``(T, N)`` bool array: ``history[t, i]`` is whether example ``i`` is classified correctly
(arg-max output == label, :func:`correctness`) at check ``t`` of a run, checks being ``check_every``
training steps apart. :func:`correctness_eval_fn` records it inside the jitted training scan of
:func:`jaxlearn.train.train` (``eval_every=k``: ``metrics["eval"]`` is the ``(num_steps // k, N)`` history,
row ``t`` after step ``(t + 1)·k``). Several runs: ``jax.vmap`` the statistics over a leading run axis.

Definitions (Toneva, Sordoni, Combes, Trischler, Bengio & Gordon 2019, "An Empirical Study of Example
Forgetting during Deep Neural Network Learning", ICLR, §3), on consecutive checks ``t → t+1``:

* a *forgetting event* of example ``i``: correct at ``t``, misclassified at ``t+1``
  (:func:`forgetting_events` counts them);
* a *learning event*: misclassified at ``t``, correct at ``t+1`` (:func:`learning_events`). Only
  transitions between recorded checks count: an example already correct at the first check has no
  learning event (prepend the correctness at initialisation as row 0 to count the first learning);
* *unforgettable*: correct at some check and never forgotten afterwards (:func:`unforgettable`);
* *never learnt*: correct at no check (:func:`never_learned`); Toneva et al. count these separately
  (they have no forgetting event, yet are not unforgettable).

Counts are int32 ``(N,)``; flags bool ``(N,)``.

Comparing runs: :func:`spearman` is the rank correlation of two per-example statistics (e.g. the
forgetting counts of two seeds, Toneva et al. 2019, §4: forgetting is a property of the example, not
of the run), with tied values given their average rank, as counts have many ties.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxlearn._checks import check_bool, check_int
from jaxlearn._types import Array, ArrayLike, PyTree
from jaxlearn.data import merge_rows, split_rows

__all__ = ["correctness", "correctness_eval_fn", "first_learned_step", "forgetting_events", "learning_events",
           "unforgettable", "never_learned", "average_ranks", "spearman"]

NEVER = -1  # first_learned_step of an example that is never learnt


def _labels(y, n: int):
    """Integer labels ``(n,)`` from integer labels or one-hot/probability targets ``(n, C)`` (arg-max)."""
    y = jnp.asarray(y)
    numeric = jnp.issubdtype(y.dtype, jnp.integer) or jnp.issubdtype(y.dtype, jnp.floating)
    if jnp.issubdtype(y.dtype, jnp.integer) and y.shape == (n,):
        return y
    if numeric and y.ndim == 2 and y.shape[0] == n:
        return jnp.argmax(y, axis=-1)
    raise ValueError(f"y: expected integer labels ({n},) or one-hot/probability targets ({n}, C), "
                     f"got {y.dtype}{list(y.shape)}")


def _spec(a):
    return jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))


def _num_examples(x) -> int:
    shapes = [jnp.shape(a) for a in jax.tree.leaves(x)]
    sizes = {s[0] if s else None for s in shapes}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"x: expected arrays with one common leading (example) axis, got shapes {shapes}")
    return sizes.pop()


def correctness(apply_fn: Callable, params: PyTree, x: PyTree, y: ArrayLike, *, chunk_size: int | None = None) -> Array:
    """``argmax_c apply_fn(params, x)[i, c] == label_i`` for every example: bool ``(n,)``.

    ``apply_fn(params, x) -> (n, C)`` on a batch (leading example axis on every leaf of ``x``); ``y``:
    integer labels ``(n,)`` or one-hot/probability targets ``(n, C)`` (their arg-max is the label).
    ``chunk_size``: examples per call of ``apply_fn`` (``None``: all at once; chunks of equal size run in
    ``lax.map``, the last one padded by repeating its last example, the padding dropped). Ties in the
    output go to the first maximal class (``argmax``).
    """
    n = _num_examples(x)
    labels = _labels(y, n)
    classes = jnp.shape(y)[1] if jnp.ndim(y) == 2 else "C"
    # the output shape by tracing alone, so that a wrong one is a one-line error before lax.map
    shape = getattr(jax.eval_shape(apply_fn, *jax.tree.map(_spec, (params, x))), "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != n or classes not in ("C", shape[1]):
        raise ValueError(f"apply_fn: expected outputs ({n}, {classes}) (examples, classes), got shape {shape}")

    def chunk(xc, lc):
        return jnp.argmax(apply_fn(params, xc), axis=-1) == lc

    if chunk_size is None or check_int(chunk_size, "chunk_size", minimum=1, form="must", noun="integer") >= n:
        return chunk(x, labels)
    xs, ls = jax.tree.map(lambda a: split_rows(a, chunk_size), (x, labels))
    return merge_rows(lax.map(lambda c: chunk(*c), (xs, ls)), n)


def correctness_eval_fn(apply_fn: Callable, x: PyTree, y: ArrayLike, *, chunk_size: int | None = None,
                        with_model_state: bool = False) -> Callable:
    """An ``eval_fn(state) -> (N,) bool`` for :func:`jaxlearn.train.train`: the :func:`correctness` of the
    tracked examples ``(x, y)`` under ``state.params``, computed inside the jitted scan.

    ``train(state, step_fn, batch_fn, num_steps, eval_every=k, eval_fn=correctness_eval_fn(...))`` returns
    the history as ``metrics["eval"]``, ``(num_steps // k, N)``, row ``t`` after step ``(t + 1)·k`` (so
    ``first_learned_step(history, check_every=k, first_step=k)`` gives training steps). With
    ``with_model_state`` the model is called as ``apply_fn(state.params, x, state.model_state)`` (e.g.
    ``model.apply`` of a model with BatchNorm statistics), else ``apply_fn(state.params, x)``. ``x`` and
    ``y`` are closed over, so they enter the compiled program as constants: track a subset when the data
    are large.
    """
    check_bool(with_model_state, "with_model_state", error=ValueError)
    _labels(y, _num_examples(x))
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size", minimum=1, form="must", noun="integer")

    def eval_fn(state):
        if with_model_state:
            return correctness(lambda p, xc: apply_fn(p, xc, state.model_state), state.params, x, y,
                               chunk_size=chunk_size)
        return correctness(apply_fn, state.params, x, y, chunk_size=chunk_size)

    return eval_fn


def _check_history(history):
    if jnp.ndim(history) != 2 or jnp.result_type(history) != jnp.bool_:
        raise ValueError(f"history: expected a bool array (checks T, examples N) (jax.vmap over runs), got "
                         f"{jnp.result_type(history)}{list(jnp.shape(history))}")
    if jnp.shape(history)[0] < 1:
        raise ValueError("history: expected at least one check, got 0 rows")
    return jnp.asarray(history)


def first_learned_step(history: ArrayLike, *, check_every: int = 1, first_step: int = 0, stay: bool = False) -> Array:
    """The training step at which each example is first learnt: int32 ``(N,)``, ``-1`` if never.

    ``stay=False`` (Toneva et al. 2019: *learnt* = first classified correctly): the first check ``t``
    with ``history[t, i]``. ``stay=True`` (learnt for good, as follow-ups that rank examples by learning
    time use it): the first check from which example ``i`` is correct at every later check; ``-1`` if it
    is wrong at the last check. A check index ``t`` is reported as the step ``first_step + t·check_every``
    (``first_step``: the step of row 0; for a history from ``train(eval_every=k)`` use ``check_every=k``,
    ``first_step=k``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> history = jnp.array([[True, False, False], [False, True, False], [True, True, False]])
        >>> an.first_learned_step(history, check_every=10, first_step=10).tolist()
        [10, 20, -1]
        >>> an.first_learned_step(history, check_every=10, first_step=10, stay=True).tolist()
        [30, 20, -1]
    """
    history = _check_history(history)
    check_every = check_int(check_every, "check_every", minimum=1, form="must", noun="integer")
    first_step = check_int(first_step, "first_step", minimum=0, form="must", noun="integer")
    check_bool(stay, "stay", error=ValueError)
    if stay:  # correct at t and at every later check: a reversed cumulative AND
        history = lax.cummin(history.astype(jnp.int32), axis=0, reverse=True).astype(bool)
    index = jnp.argmax(history, axis=0).astype(jnp.int32)  # first True (0 if none)
    return jnp.where(jnp.any(history, axis=0), first_step + index * check_every, jnp.int32(NEVER))


def forgetting_events(history: ArrayLike) -> Array:
    """Forgetting events per example: the number of checks ``t`` with ``history[t]`` correct and
    ``history[t+1]`` wrong. int32 ``(N,)`` (0 for an example never learnt; see :func:`never_learned`).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> history = jnp.array([[True, False], [False, True], [True, True]])   # (checks, examples)
        >>> an.forgetting_events(history).tolist()
        [1, 0]
    """
    history = _check_history(history)
    return jnp.sum(history[:-1] & ~history[1:], axis=0, dtype=jnp.int32)


def learning_events(history: ArrayLike) -> Array:
    """Learning events per example: the number of checks ``t`` with ``history[t]`` wrong and
    ``history[t+1]`` correct. int32 ``(N,)``."""
    history = _check_history(history)
    return jnp.sum(~history[:-1] & history[1:], axis=0, dtype=jnp.int32)


def unforgettable(history: ArrayLike) -> Array:
    """Examples correct at some check and never forgotten (no forgetting event): bool ``(N,)``. Their
    history is wrong…wrong, correct…correct."""
    history = _check_history(history)
    return jnp.any(history, axis=0) & (forgetting_events(history) == 0)


def never_learned(history: ArrayLike) -> Array:
    """Examples correct at no check: bool ``(N,)``."""
    return ~jnp.any(_check_history(history), axis=0)


def _check_vector(name, v):
    v = jnp.asarray(v)
    if v.ndim != 1 or v.shape[0] < 2 or not (jnp.issubdtype(v.dtype, jnp.number) or v.dtype == jnp.bool_):
        raise ValueError(f"{name}: expected a numeric vector (N,) with N >= 2 (jax.vmap over runs), "
                         f"got {v.dtype}{list(v.shape)}")
    return v


def average_ranks(values: ArrayLike) -> Array:
    """Ranks ``1 … N`` of ``values`` ``(N,)``, ties given the mean of the ranks they span (the
    "average" method of ``scipy.stats.rankdata``): ``rank_i = #{j: v_j < v_i} + (#{j: v_j = v_i} + 1) / 2``.
    Float of the default dtype. Both counts come from binary searches in the sorted values
    (``O(N log N)``, no ``N × N`` comparison), exact for any input (integer counts, floats, bools).
    """
    v = _check_vector("values", values)
    if v.dtype == jnp.bool_:
        v = v.astype(jnp.int32)
    ordered = jnp.sort(v)
    below = jnp.searchsorted(ordered, v, side="left")
    at_most = jnp.searchsorted(ordered, v, side="right")
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    return (below.astype(dtype) + at_most.astype(dtype) + 1) / 2


def spearman(a: ArrayLike, b: ArrayLike) -> Array:
    """Spearman's rank correlation ρ of two statistics of the same ``N`` examples: the Pearson
    correlation of their :func:`average_ranks` (Spearman 1904; with average ranks for ties, the
    convention of ``scipy.stats.spearmanr``). A scalar in ``[−1, 1]``; NaN when either vector is
    constant (its ranks have no variance). ``vmap`` over pairs of runs works.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> round(float(an.spearman(jnp.array([0, 1, 1, 5]), jnp.array([1.0, 2.0, 3.0, 9.0]))), 4)
        0.9487
    """
    a, b = _check_vector("a", a), _check_vector("b", b)
    if a.shape != b.shape:
        raise ValueError(f"spearman: a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return jnp.sum(ra * rb) / jnp.sqrt(jnp.sum(ra * ra) * jnp.sum(rb * rb))
