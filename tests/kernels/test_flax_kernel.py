"""Analytic kernels of flax modules (jaxlearn.kernels.flax_layer, via kernels.analytic).

Ground truth: the same network written with jaxlearn.nn layers, whose kernel maps are tested
against neural-tangents' published conventions and Monte-Carlo limits in test_analytic.py. The
jaxpr interpreter must reproduce them to float64 round-off, reading W_std/b_std from the flax
initialisers.
"""

import math

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlearn import kernels, nn

F64 = pytest.mark.float64


class _MLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Dense(16)(x))
        x = linen.gelu(linen.Dense(12, kernel_init=linen.initializers.he_normal(),
                                   bias_init=linen.initializers.normal(0.3))(x), approximate=False)
        x = linen.leaky_relu(linen.Dense(9, use_bias=False)(x), 0.2)
        return linen.Dense(3)(jax.scipy.special.erf(2.0 * linen.Dense(6)(x)) * 1.5)


def _mlp_ref():
    return nn.serial(nn.Dense(16), nn.Relu(), nn.Dense(12, W_std=math.sqrt(2), b_std=0.3), nn.Gelu(),
                     nn.Dense(9, b_std=None), nn.LeakyRelu(0.2), nn.Dense(6), nn.Erf(a=1.5, b=2.0),
                     nn.Dense(3))


class _CNN(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.relu(linen.Conv(4, (3, 3))(x))
        x = linen.avg_pool(x, (2, 2), (2, 2))
        x = linen.relu(linen.Conv(5, (2, 2), strides=(1, 2), padding="VALID")(x))
        y = jnp.mean(x, (1, 2))
        z = linen.Dense(4)(x.reshape(x.shape[0], -1))
        return linen.Dense(2)(linen.relu(linen.Dense(4)(y) + z))


def _cnn_ref():
    trunk = nn.serial(nn.Conv(4, (3, 3), padding="SAME"), nn.Relu(), nn.AvgPool((2, 2)),
                      nn.Conv(5, (2, 2), strides=(1, 2), padding="VALID"), nn.Relu())
    heads = nn.parallel(nn.serial(nn.GlobalAvgPool(), nn.Dense(4)), nn.serial(nn.Flatten(), nn.Dense(4)))
    return nn.serial(trunk, nn.fanout(2), heads, nn.fanin_sum(), nn.Relu(), nn.Dense(2))


class _Residual(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = linen.LayerNorm()(linen.Dense(8)(x))
        return linen.Dense(2)(h + linen.Dense(8)(linen.relu(h)))


def _residual_ref():
    return nn.serial(nn.Dense(8), nn.LayerNorm(eps=1e-6, affine=True), nn.residual(nn.Relu(), nn.Dense(8)),
                     nn.Dense(2))


class _NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.a = nnx.Linear(7, 16, rngs=rngs)
        self.norm = nnx.LayerNorm(16, rngs=rngs)
        self.b = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.b(nnx.relu(self.norm(self.a(x))))


def _inputs(shape):
    x1 = jax.random.normal(jax.random.key(0), shape)
    x2 = jax.random.normal(jax.random.key(1), (shape[0] - 1,) + shape[1:])
    return x1, x2


CASES = {
    "mlp": (_MLP, _mlp_ref, (5, 7)),
    "cnn": (_CNN, _cnn_ref, (3, 6, 6, 2)),
    "layernorm-residual": (_Residual, _residual_ref, (5, 7)),
    "nnx": (lambda: _NnxMLP(nnx.Rngs(0)),
            lambda: nn.serial(nn.Dense(16), nn.LayerNorm(eps=1e-6, affine=True), nn.Relu(), nn.Dense(3)), (5, 7)),
}


@F64
@pytest.mark.parametrize("name", list(CASES))
def test_flax_module_kernel_equals_the_jaxlearn_nn_network(name):
    module, ref, shape = CASES[name]
    x1, x2 = _inputs(shape)
    got = jax.jit(lambda a, b: kernels.analytic(module(), a, b))(x1, x2)
    want = jax.jit(lambda a, b: kernels.analytic(ref(), a, b))(x1, x2)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.shape == b.shape, (field, a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max(), err_msg=f"{name} {field}")


@F64
def test_tanh_approximate_gelu_gets_the_exact_gelu_dual():
    class Approx(linen.Module):
        @linen.compact
        def __call__(self, x):
            return linen.Dense(2)(linen.gelu(linen.Dense(8)(x)))  # flax default: the tanh approximation

    x1, x2 = _inputs((4, 3))
    got = jax.jit(lambda a, b: kernels.analytic(Approx(), a, b, get="ntk"))(x1, x2)
    want = jax.jit(lambda a, b: kernels.analytic(nn.serial(nn.Dense(8), nn.Gelu(), nn.Dense(2)), a, b,
                                                 get="ntk"))(x1, x2)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_jit_overrides_and_layer():
    x1, x2 = _inputs((5, 7))
    f = jax.jit(lambda a, b: kernels.analytic(_Residual(), a, b, get=("nngp", "ntk")))
    nngp, ntk = f(x1, x2)
    want = kernels.analytic(_residual_ref(), x1, x2)
    np.testing.assert_allclose(nngp, want.nngp, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ntk, want.ntk, rtol=2e-5, atol=1e-5)
    # explicit W_std/b_std replace what the initialisers say, for every weight and bias
    got = kernels.analytic(_Residual(), x1, x2, W_std=1.5, b_std=0.1, get="nngp")
    ref = nn.serial(nn.Dense(8, W_std=1.5, b_std=0.1), nn.LayerNorm(eps=1e-6, affine=True),
                    nn.residual(nn.Relu(), nn.Dense(8, W_std=1.5, b_std=0.1)), nn.Dense(2, W_std=1.5, b_std=0.1))
    np.testing.assert_allclose(got, kernels.analytic(ref, x1, x2, get="nngp"), rtol=2e-5, atol=1e-6)
    # the layer trains like from_linen (same params, same outputs)
    layer = kernels.flax_layer(_MLP(), x1)
    params, state = layer.init(jax.random.key(0), x1)
    variables = _MLP().init(jax.random.key(0), x1)
    out = layer.apply(jax.tree.map(lambda a: a, params), x1, state)
    assert out.shape == _MLP().apply(variables, x1).shape


class _Tanh(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(2, name="head")(jnp.tanh(linen.Dense(4)(x)))


class _Sort(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(2)(jnp.cumsum(linen.Dense(4)(x), axis=-1))


class _BatchNorm(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.BatchNorm(use_running_average=True)(linen.Dense(4)(x))


class _Uniform(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(2, bias_init=linen.initializers.uniform(1.0))(x)


BAD = [
    (_Tanh(), {}, "activation tanh .*feeding _Tanh/head.*monte_carlo"),
    (_Sort(), {}, "primitive 'cumsum'"),
    (_BatchNorm(), {}, "collections \\['batch_stats'\\]"),
    (_Uniform(), {}, "bias Dense_0/bias.*pass b_std"),
    (_MLP(), {"W_std": -1.0}, "W_std: expected a non-negative number"),
]


@pytest.mark.parametrize("module, kwargs, match", BAD, ids=[m[:24] for _, _, m in BAD])
def test_unsupported_modules_raise_naming_the_first_problem(module, kwargs, match):
    x1, _ = _inputs((3, 7))
    with pytest.raises(ValueError, match=match):
        kernels.analytic(module, x1, **kwargs)


def test_overrides_need_a_flax_module():
    with pytest.raises(ValueError, match="W_std/b_std: only for flax modules"):
        kernels.analytic(nn.Dense(2), jnp.ones((2, 3)), W_std=1.0)
    with pytest.raises(TypeError, match="module: expected a flax.linen.Module"):
        kernels.flax_layer(object(), jnp.ones((2, 3)))
