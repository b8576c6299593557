"""experiments/rebasin_width.py: the weight matching called from the compiled, vmapped program
(``jax.pure_callback``) equals the host-side library call pair by pair, and the matched network
computes B's function (a permutation of hidden units changes nothing), checked with an MLP forward
pass written here in NumPy."""

import jax
import numpy as np

from experiments import rebasin_width as study
from jaxlearn import landscape

TINY = study.Config(width=6, depth=2)


def _random_params(rng, n):
    """``n`` stacked parameter sets of TINY's MLP (NumPy draws: no compiled initialiser needed)."""
    shapes = jax.eval_shape(lambda k: study.model(TINY).init(k, study._input_spec(TINY))[0], jax.random.key(0))
    return jax.tree.map(lambda s: rng.normal(size=(n, *s.shape)).astype(np.float32), shapes)


def _mlp_numpy(params, x):
    """The ReLU MLP of ``nn.mlp``: Dense, Relu, ..., Dense (params: one entry per layer, () for Relu)."""
    dense = [p for p in params if p != ()]
    for layer in dense[:-1]:
        x = np.maximum(x @ layer["W"] + layer["b"], 0.0)
    return x @ dense[-1]["W"] + dense[-1]["b"]


def test_matching_inside_the_vmapped_program_equals_the_host_call_and_keeps_bs_function():
    rng = np.random.default_rng(0)
    a, b = _random_params(rng, 3), _random_params(rng, 3)
    matched = jax.jit(jax.vmap(lambda p, q: study._matched(TINY, p, q)))(a, b)
    spec = landscape.permutation_spec(study.model(TINY), study._input_spec(TINY))
    x = rng.normal(size=(16, 40))
    for i in range(3):
        a_i, b_i, m_i = (jax.tree.map(lambda leaf, i=i: np.asarray(leaf[i], np.float64), t) for t in (a, b, matched))
        expected = landscape.weight_matching(spec, a_i, b_i).params
        for got, want in zip(jax.tree.leaves(m_i), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(_mlp_numpy(m_i, x), _mlp_numpy(b_i, x), rtol=1e-10, atol=1e-10)
        assert not all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(m_i), jax.tree.leaves(b_i)))
        # the matching moved B towards A: their inner product grew
        inner = [sum(np.vdot(u, v) for u, v in zip(jax.tree.leaves(a_i), jax.tree.leaves(t))) for t in (b_i, m_i)]
        assert inner[1] > inner[0]
