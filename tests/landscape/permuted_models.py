"""Test helpers shared by test_permutation.py and test_matching.py: small networks of every layer
kind a permutation spec handles, random params drawn with numpy, and random permutations."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import nn


def models() -> dict:
    """``{name: (model, input shape)}``; shape ``None``: token inputs (integers below 7)."""
    return {
        "mlp": (nn.mlp([5, 6], 3, activation="tanh", b_std=0.5), (4,)),
        "mlp_batchnorm": (nn.serial(nn.Dense(5, b_std=0.5), nn.BatchNorm(), nn.Tanh(), nn.Dense(6, b_std=0.5),
                                    nn.BatchNorm(), nn.Relu(), nn.Dense(3)), (4,)),
        "cnn_flatten": (nn.serial(nn.Conv(4, (3, 3), padding="SAME", b_std=0.5), nn.Relu(),
                                  nn.Conv(5, (3, 3), b_std=0.5), nn.LayerNorm(affine=True), nn.Tanh(),
                                  nn.AvgPool((2, 2)), nn.Flatten(), nn.Dense(7, b_std=0.5), nn.Gelu(), nn.Dense(3)),
                        (6, 6, 2)),
        "cnn_1d": (nn.cnn([4, 5], 3, filter_shape=(3,), activation="tanh", b_std=0.5), (8, 2)),
        "resnet": (nn.resnet(4, 2, 3, activation="tanh", b_std=0.5, layer_norm=True), (5, 5, 2)),
        "embedding_mlp": (nn.embedding_mlp(7, 3, [5], 2, activation="tanh", b_std=0.5), None),
    }


def numpy_init(model, x, seed):
    """Random params (weights ~ N(0, 1/fan_in); biases, norm scales/offsets ~ N(0, 1/4)) and state
    (statistics ~ U(0.5, 1.5)) drawn with numpy: no per-shape compilation of jax.random."""
    rng = np.random.default_rng(seed)
    params, state = jax.eval_shape(lambda k: model.init(k, x[:1]), jax.random.key(0))

    def draw(s, scale):
        return jnp.asarray(rng.normal(size=s.shape) * scale(s.shape), s.dtype)

    params = jax.tree.map(lambda s: draw(s, lambda sh: 1 / np.sqrt(np.prod(sh[:-1])) if len(sh) > 1 else 0.5), params)
    state = jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), state)
    return params, state


def setup(name, seed, n=9):
    """A model of :func:`models` with random params (norm scales/offsets and BatchNorm statistics
    too) and ``n`` inputs."""
    model, shape = models()[name]
    rng = np.random.default_rng(1)
    if shape is None:  # token inputs
        x = jnp.asarray(rng.integers(0, 7, (n, 4)), jnp.int32)
    else:
        x = jnp.asarray(rng.normal(size=(n,) + shape), jnp.result_type(float))
    return (model, *numpy_init(model, x, seed), x)


def random_perms(spec, seed=0):
    """A random permutation of each group of ``spec``, none the identity."""
    rng = np.random.default_rng(seed)
    perms = {}
    for group, n in spec.sizes.items():
        p = np.arange(n)
        while np.array_equal(p, np.arange(n)):
            p = rng.permutation(n)
        perms[group] = p
    return perms
