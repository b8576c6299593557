"""Learning-rate schedules and optimizer specs against optax's own schedules (independent code)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import train

COUNTS = np.arange(0, 120)


@pytest.mark.parametrize("warmup", [0, 10])
def test_warmup_cosine_matches_optax(warmup):
    ours = train.schedule("warmup_cosine", 0.5, 100, warmup_steps=warmup, end_scale=0.1)
    if warmup:
        ref = optax.warmup_cosine_decay_schedule(0.0, 0.5, warmup, 100, end_value=0.05)
        # optax reaches the peak at count == warmup; ours one step earlier (count + 1 steps taken)
        np.testing.assert_allclose([ours(c) for c in COUNTS[warmup:]], [ref(c) for c in COUNTS[warmup:]], rtol=1e-5)
        np.testing.assert_allclose([ours(c) for c in COUNTS[:warmup]], 0.5 * (COUNTS[:warmup] + 1) / warmup, rtol=1e-6)
    else:
        ref = optax.cosine_decay_schedule(0.5, 100, alpha=0.1)
        np.testing.assert_allclose([ours(c) for c in COUNTS], [ref(c) for c in COUNTS], rtol=1e-5)


def test_step_and_constant_match_optax():
    ours = train.schedule("step", 0.2, 100, boundaries=(30, 60), factor=0.5)
    ref = optax.piecewise_constant_schedule(0.2, {30: 0.5, 60: 0.5})
    # both apply the factor of boundary b from count b on
    np.testing.assert_allclose([ours(c) for c in COUNTS], [ref(c) for c in COUNTS], rtol=1e-6)
    np.testing.assert_allclose([train.schedule("constant", 0.3, 100)(c) for c in COUNTS], 0.3, rtol=1e-7)


def test_peak_can_be_traced_and_vmapped():
    lrs = jnp.array([0.1, 0.2])
    out = jax.jit(jax.vmap(lambda lr: train.schedule("warmup_cosine", lr, 50, warmup_steps=5)(20)))(lrs)
    np.testing.assert_allclose(out, lrs * train.schedule("warmup_cosine", 1.0, 50, warmup_steps=5)(20), rtol=1e-6)


def test_optimizer_spec_builds_the_named_optimizer_with_schedule():
    spec = train.OptimizerSpec(name="sgd", args={"momentum": 0.0}, schedule="step", boundaries=(1,), factor=0.1)
    opt = spec.build(0.5, 10)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    grads = {"w": jnp.full(3, 2.0)}
    u1, state = opt.update(grads, state, params)
    u2, state = opt.update(grads, state, params)
    np.testing.assert_allclose(u1["w"], -0.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(u2["w"], -0.05 * 2.0, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "adamm"}, "did you mean 'adam'"),
    ({"name": "adam", "args": {"b3": 0.9}}, "unknown argument 'b3'"),
    ({"args": {"learning_rate": 0.1}}, "dynamic config field"),
    ({"schedule": "cosine"}, "unknown name 'cosine'"),
])
def test_optimizer_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train.OptimizerSpec(**kwargs)
