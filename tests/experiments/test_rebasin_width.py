"""experiments/rebasin_width.py: the weight matching called from the compiled, vmapped program
(``jax.pure_callback``) equals the host-side library call pair by pair, and the matched network
computes B's function (a permutation of hidden units changes nothing)."""

import jax
import numpy as np

from experiments import rebasin_width as study
from jaxlearn import landscape

TINY = study.Config(width=6, depth=2, num_samples=100)


def _pairs(n):
    spec = study._input_spec(TINY)
    net = study.model(TINY)
    a = jax.vmap(lambda k: net.init(k, spec)[0])(jax.random.split(jax.random.key(0), n))
    b = jax.vmap(lambda k: net.init(k, spec)[0])(jax.random.split(jax.random.key(1), n))
    return net, a, b


def test_matching_inside_the_vmapped_program_equals_the_host_call_and_keeps_bs_function():
    net, a, b = _pairs(3)
    matched = jax.jit(jax.vmap(lambda p, q: study._matched(TINY, p, q)))(a, b)
    spec = landscape.permutation_spec(net, study._input_spec(TINY))
    x = np.asarray(study.data(TINY).x_test[:16])
    for i in range(3):
        a_i, b_i, m_i = (jax.tree.map(lambda leaf, i=i: leaf[i], t) for t in (a, b, matched))
        expected = landscape.weight_matching(spec, a_i, b_i).params
        for got, want in zip(jax.tree.leaves(m_i), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_allclose(net.apply(m_i, x), net.apply(b_i, x), rtol=1e-5, atol=1e-6)
        assert not all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(m_i), jax.tree.leaves(b_i)))
