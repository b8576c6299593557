"""Training loops as ``lax.scan``: no Python loop per step, periodic work by nested scans."""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax import lax

from jaxlearn._checks import check_int
from jaxlearn.train.step import TrainState, data_key

__all__ = ["train"]


def _check_steps(num_steps, every):
    num_steps = check_int(num_steps, "num_steps", minimum=0, where="train", noun="integer")
    if every is not None:
        every = check_int(every, "eval_every", minimum=1, where="train", noun="integer")
        if num_steps % every:
            raise ValueError(f"train: num_steps ({num_steps}) must be a multiple of eval_every ({every})")
    return num_steps, every


def train(
    state: TrainState,
    step_fn: Callable,
    batch_fn: Callable,
    num_steps: int,
    *,
    eval_every: int | None = None,
    eval_fn: Callable[[TrainState], Any] | None = None,
) -> tuple[TrainState, dict]:
    """Runs ``num_steps`` steps of ``step_fn`` from ``state`` inside ``lax.scan``.

    ``batch_fn(key, step) -> batch`` is pure (e.g. built on :func:`jaxlearn.data.get_batch`); it
    receives :func:`~jaxlearn.train.data_key` and the state's global step, so calling ``train``
    twice for ``n`` steps equals calling it once for ``2n`` — a run can be cut into segments,
    checkpointed and resumed.

    Returns ``(state, metrics)`` with ``metrics["train"]``: the step metrics stacked over steps
    (leading axis ``num_steps``). With ``eval_every=k``, the scan is nested — an outer scan over
    ``num_steps // k`` blocks of an inner ``k``-step scan — and ``eval_fn(state)`` runs after each
    block (after steps ``k, 2k, ...``): ``metrics["eval"]`` has leading axis ``num_steps // k``.
    Nesting, unlike ``lax.cond`` on the step counter, runs the periodic work only when due even
    under ``vmap``. ``num_steps`` and ``eval_every`` are static Python ints.
    """
    num_steps, eval_every = _check_steps(num_steps, eval_every)
    if (eval_every is None) != (eval_fn is None):
        raise ValueError("train: give eval_every and eval_fn together, or neither")

    def one_step(state, _):
        return step_fn(state, batch_fn(data_key(state), state.step))

    if eval_every is None:
        state, step_metrics = lax.scan(one_step, state, None, length=num_steps)
        return state, {"train": step_metrics}

    def block(state, _):
        state, step_metrics = lax.scan(one_step, state, None, length=eval_every)
        return state, (step_metrics, eval_fn(state))

    state, (step_metrics, eval_metrics) = lax.scan(block, state, None, length=num_steps // eval_every)
    step_metrics = jax.tree.map(lambda a: a.reshape((num_steps,) + a.shape[2:]), step_metrics)
    return state, {"train": step_metrics, "eval": eval_metrics}
