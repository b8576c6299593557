"""muP coordinate check (Yang et al. 2022, "Tensor Programs V", Fig. 5 / App. D.1).

Train an MLP of widths 64, 256, 1024 for a few SGD / Adam steps with the same base learning rate and
measure the RMS size of every layer's pre-activations. Under muP (with the per-parameter
learning-rate multipliers of ``Layer.lr_multipliers``) the sizes stay flat in width; under the
standard parameterization with one global learning rate they grow with width.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from jaxlearn import nn, train

WIDTHS = (64, 256, 1024)
STEPS = 4
BASE_LR = {"sgd": 0.05, "adam": 0.01}


def _data():
    kx, ky = jax.random.split(jax.random.key(0))
    return jax.random.normal(kx, (64, 16)), jax.random.normal(ky, (64, 1))


def _preactivation_rms(parameterization, optimizer, width):
    x, y = _data()
    model = nn.mlp([width, width], 1, activation="tanh", parameterization=parameterization)
    params, _ = model.init(jax.random.key(1), x)
    base = optax.sgd(BASE_LR[optimizer]) if optimizer == "sgd" else optax.adam(BASE_LR[optimizer])
    opt = optax.chain(base, train.scale_by_multipliers(model.lr_multipliers(x, optimizer)))

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, opt_state = carry
            grads = jax.grad(lambda p: train.mse(model.apply(p, x), y))(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)[0][0]

    params = fit(params)
    # Pre-activations written out from the forward formula z = a W + b of standard/muP Dense.
    h1 = x @ params[0]["W"] + params[0]["b"]
    h2 = jnp.tanh(h1) @ params[2]["W"] + params[2]["b"]
    f = jnp.tanh(h2) @ params[4]["W"] + params[4]["b"]
    return jnp.array([jnp.sqrt(jnp.mean(h**2)) for h in (h1, h2, f)])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_activation_scales_are_flat_in_width(optimizer):
    sizes = jnp.stack([_preactivation_rms("mup", optimizer, w) for w in WIDTHS])
    ratio = sizes[-1] / sizes[0]  # width 1024 vs 64, per layer
    assert jnp.all((ratio > 0.7) & (ratio < 1.4)), f"muP {optimizer}: size ratios 1024/64 per layer {ratio}"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_standard_parameterization_fails_the_same_check(optimizer):
    sizes = jnp.stack([_preactivation_rms("standard", optimizer, w) for w in WIDTHS])
    ratio = sizes[-1] / sizes[0]
    assert jnp.max(ratio) > 3.0, f"SP {optimizer}: expected growth with width, got ratios {ratio}"


def test_lr_multipliers_are_all_ones_outside_mup():
    x, _ = _data()
    mults = nn.mlp([32, 32], 1).lr_multipliers(x, "adam")
    assert set(jax.tree.leaves(mults)) == {1.0}
