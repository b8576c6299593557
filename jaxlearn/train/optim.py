"""Optimizers: optax by name with hyperparameters in the state, per-parameter learning-rate
multipliers (muP), and frozen (non-trainable) leaves."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxlearn._checks import did_you_mean, is_real
from jaxlearn._types import Array, ArrayLike, PyTree, Scalar

__all__ = ["optimizer", "scale_by_multipliers", "freeze", "schedule", "OptimizerSpec", "SCHEDULES"]

# Public optax optimizers that take a learning rate (the ones a config may name).
_OPTIMIZERS = tuple(n for n in (
    "adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw", "adan",
    "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw", "noisy_sgd", "novograd",
    "optimistic_gradient_descent", "polyak_sgd", "radam", "rmsprop", "rprop", "sgd", "sm3", "yogi",
) if hasattr(optax, n))


def optimizer(name: str, **hyperparams) -> optax.GradientTransformation:
    """``optax.<name>(**hyperparams)`` with its numeric hyperparameters kept in the optimizer state
    (``optax.inject_hyperparams``), so a population can carry a different learning rate, momentum or
    weight decay per member and they are checkpointed with the state.

    Hyperparameters may be traced arrays (build the optimizer inside the vmapped function) or
    optax schedules; callables for non-numeric arguments (adamw's ``mask``, ``mu_dtype``) pass
    through unchanged. Unknown names or arguments raise a one-line ``ValueError``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import train
        >>> opt = train.optimizer("sgd", learning_rate=0.1, momentum=0.9)
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> round(float(state.hyperparams["learning_rate"]), 6)  # kept in the state: may differ per member
        0.1
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer: unknown name {name!r}{did_you_mean(name, _OPTIMIZERS)}; expected an optax "
                         f"optimizer, one of {list(_OPTIMIZERS)}")
    factory = getattr(optax, name)
    accepted = inspect.signature(factory).parameters
    for arg in hyperparams:
        if arg not in accepted:
            raise ValueError(f"optimizer {name!r}: unknown argument {arg!r}{did_you_mean(arg, accepted)}; "
                             f"accepted: {list(accepted)}")
    # inject_hyperparams takes every callable for a schedule; only the learning rate and arguments
    # with a numeric default (or none) can be one. Others, e.g. adamw's ``mask`` or ``mu_dtype``, are
    # static: a callable mask taken for a schedule silently turned weight decay off.
    static = [arg for arg, value in hyperparams.items() if callable(value) and not _schedulable(accepted[arg])]
    return optax.inject_hyperparams(factory, static_args=static)(**hyperparams)


def _schedulable(param: inspect.Parameter) -> bool:
    default = param.default
    if param.name == "learning_rate" or default is inspect.Parameter.empty:
        return True
    return is_real(default)


def scale_by_multipliers(multipliers: PyTree) -> optax.GradientTransformation:
    """Multiplies each update leaf by the matching leaf of ``multipliers`` (a pytree like params,
    e.g. :meth:`jaxlearn.nn.Layer.lr_multipliers`). Chained after an optimizer whose update is
    linear in its learning rate, this gives every parameter its own learning rate."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def scale(u, m):
        if isinstance(u, optax.MaskedNode):  # a leaf masked out by freeze / optax.masked
            return u
        return (u * jnp.asarray(m, u.dtype)).astype(u.dtype)

    def update_fn(updates, state, params=None):
        del params
        scaled = jax.tree.map(scale, updates, multipliers, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
        return scaled, state

    return optax.GradientTransformation(init_fn, update_fn)


def freeze(opt: optax.GradientTransformation, trainable: PyTree) -> optax.GradientTransformation:
    """Applies ``opt`` to the leaves where ``trainable`` (a pytree of bools like params) is True and
    leaves the others untouched: no update, no weight decay, no optimizer state. Use it for fixed
    feedback matrices, pruning masks and other non-trainable leaves kept among the params.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> from jaxlearn import train
        >>> params = {"w": jnp.ones(2), "feedback": jnp.ones(2)}
        >>> opt = train.freeze(optax.sgd(1.0), {"w": True, "feedback": False})
        >>> updates, _ = opt.update({"w": jnp.ones(2), "feedback": jnp.ones(2)}, opt.init(params), params)
        >>> updates["w"].tolist(), updates["feedback"].tolist()
        ([-1.0, -1.0], [0.0, 0.0])
    """
    labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable)
    return optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()}, labels)


SCHEDULES = ("constant", "warmup_cosine", "step")


def schedule(name: Literal["constant", "warmup_cosine", "step"], peak: Scalar, num_steps: int, *,
             warmup_steps: int = 0, end_scale: float = 0.0, boundaries: Sequence[int] = (),
             factor: float = 0.1) -> Callable[[ArrayLike], Array]:
    """A learning-rate schedule ``count -> lr`` with peak value ``peak`` (may be traced).

    * ``constant``: ``peak`` (after an optional linear warmup from 0 over ``warmup_steps``);
    * ``warmup_cosine``: linear warmup 0 → peak over ``warmup_steps``, then cosine decay to
      ``end_scale * peak`` at ``num_steps`` (Loshchilov & Hutter 2017, without restarts);
    * ``step``: ``peak * factor ** (number of boundaries <= count)`` (after the warmup).

    Examples:
        >>> from jaxlearn import train
        >>> lr = train.schedule("warmup_cosine", 1.0, 100, warmup_steps=10)
        >>> [round(float(lr(t)), 3) for t in (0, 5, 10, 55, 100)]
        [0.1, 0.6, 1.0, 0.5, 0.0]
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule: unknown name {name!r}{did_you_mean(name, SCHEDULES)}; "
                         f"expected one of {list(SCHEDULES)}")
    if warmup_steps < 0 or warmup_steps > num_steps:
        raise ValueError(f"schedule: warmup_steps must be in [0, num_steps={num_steps}], got {warmup_steps}")
    bounds = jnp.asarray(sorted(boundaries), jnp.int32) if len(boundaries) else None

    def lr(count):
        count = jnp.asarray(count)
        warm = jnp.minimum(1.0, (count + 1) / warmup_steps) if warmup_steps else 1.0
        if name == "constant":
            return peak * warm
        if name == "step":
            drops = jnp.sum(count >= bounds) if bounds is not None else 0
            return peak * warm * factor ** drops
        progress = jnp.clip((count - warmup_steps) / max(num_steps - warmup_steps, 1), 0.0, 1.0)
        cosine = end_scale + (1.0 - end_scale) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return peak * jnp.where(count < warmup_steps, warm, cosine)

    return lr


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer as config values: any optax optimizer by ``name`` with its ``args`` (e.g.
    ``{"momentum": 0.9}``, ``{"b2": 0.98}``) and a learning-rate schedule (see :func:`schedule`).
    The peak learning rate (and weight decay) are not here: they are dynamic config fields, one
    per member, passed to :meth:`build`. Names and arguments are checked when the spec is made."""

    name: str = "sgd"
    args: dict = dataclasses.field(default_factory=dict)
    schedule: str = "constant"
    warmup_steps: int = 0
    end_scale: float = 0.0
    boundaries: tuple[int, ...] = ()
    factor: float = 0.1

    def __post_init__(self):
        if "learning_rate" in self.args:
            raise ValueError("optimizer.args: 'learning_rate' is not an optimizer argument here; it is the peak "
                             "learning rate passed to build() (a dynamic config field)")
        optimizer(self.name, learning_rate=1.0, **self.args)  # one-line error for an unknown name or argument
        schedule(self.schedule, 1.0, max(self.warmup_steps, 1), warmup_steps=self.warmup_steps)

    def build(self, learning_rate, num_steps: int, **hyperparams) -> optax.GradientTransformation:
        """The optimizer with schedule ``learning_rate`` (peak, may be traced) over ``num_steps``;
        ``hyperparams`` (e.g. a traced ``weight_decay``) are added to ``args``."""
        lr = schedule(self.schedule, learning_rate, num_steps, warmup_steps=self.warmup_steps,
                      end_scale=self.end_scale, boundaries=self.boundaries, factor=self.factor)
        return optimizer(self.name, learning_rate=lr, **self.args, **hyperparams)
