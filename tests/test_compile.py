"""jaxlearn._compile.jit_when_eager: one compiled program for an eager call, the function itself
inside transformations, the same results either way."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import analysis, kernels, landscape, nn, train
from jaxlearn._compile import _program, jit_when_eager


class Recorder:
    """Counts traces; defines ``__eq__`` without ``__hash__``, so it cannot be a static value."""

    def __init__(self):
        self.calls = []

    def __eq__(self, other):
        return self is other

    def append(self, item):
        self.calls.append(item)


class Pair(NamedTuple):
    fn: object
    data: tuple
    scale: float = 2.0


def combine(pair, x, *, power=2, offset=None, traces=None):
    if traces is not None:
        traces.append(1)
    y = pair.fn(x) ** power * pair.scale + pair.data[0].sum()
    return {"y": y if offset is None else y + offset, "n": jnp.asarray(power)}


def inputs():
    return Pair(jnp.tanh, (np.arange(3.0), "a label")), jnp.linspace(-1.0, 1.0, 4)


def test_same_result_as_the_direct_call():
    pair, x = inputs()
    for kwargs in ({}, {"power": 3}, {"offset": jnp.ones(4)}, {"power": 1.5, "offset": 0.5}):
        got, want = jit_when_eager(combine, pair, x, **kwargs), combine(pair, x, **kwargs)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_an_eager_call_is_one_program_cached_by_statics_and_shapes():
    pair, x = inputs()

    def fresh(*args, **kwargs):  # a function of its own, so the cache counts start here
        return combine(*args, **kwargs)

    traces, before = Recorder(), _program._cache_size()
    jit_when_eager(fresh, pair, x)
    assert _program._cache_size() == before + 1
    jit_when_eager(fresh, pair, x + 1.0)                       # new values, same shapes: no new program
    jit_when_eager(fresh, Pair(jnp.tanh, (np.ones(3), "a label")), x)
    assert _program._cache_size() == before + 1
    jit_when_eager(fresh, pair, x[:3])                         # a new shape
    jit_when_eager(fresh, pair, x, power=3)                    # a new static value
    assert _program._cache_size() == before + 3
    jit_when_eager(fresh, pair, x, traces=traces)              # an unhashable static: runs eagerly, traced twice
    jit_when_eager(fresh, pair, x, traces=traces)
    assert len(traces.calls) == 2 and _program._cache_size() == before + 3


def test_static_values_are_keyed_with_their_types():
    pair, x = inputs()
    as_int, as_float = jit_when_eager(combine, pair, x, power=2), jit_when_eager(combine, pair, x, power=2.0)
    assert as_int["n"].dtype == jnp.asarray(2).dtype and as_float["n"].dtype == jnp.asarray(2.0).dtype


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
def test_inside_a_transformation_the_function_runs_as_written(transform):
    pair, x = inputs()

    def outer(s):
        return jit_when_eager(combine, pair._replace(scale=s), x)["y"].sum()

    def direct(s):
        return combine(pair._replace(scale=s), x)["y"].sum()

    before = _program._cache_size()
    if transform == "jit":
        assert "_program" not in str(jax.make_jaxpr(outer)(3.0))
        np.testing.assert_allclose(jax.jit(outer)(3.0), direct(3.0), rtol=1e-6)
    elif transform == "vmap":
        np.testing.assert_allclose(jax.vmap(outer)(jnp.arange(3.0)), jax.vmap(direct)(jnp.arange(3.0)), rtol=1e-6)
    else:
        np.testing.assert_allclose(jax.grad(outer)(3.0), jax.grad(direct)(3.0), rtol=1e-6)
    assert _program._cache_size() == before


def _grad_sum(f, v):
    return jax.grad(lambda u: f(u).sum())(v)


@pytest.mark.parametrize("transform", ["jit", "vmap", "grad"])
def test_a_callable_closing_over_a_traced_value_is_not_cached(transform):
    x = jnp.linspace(-1.0, 2.0, 4)

    def outer(w):  # Σ d/du (w u²) = 2 w Σx
        return jit_when_eager(_grad_sum, lambda u: w * u ** 2, x).sum()

    before = _program._cache_size()
    with jax.checking_leaks():
        if transform == "jit":
            np.testing.assert_allclose(jax.jit(outer)(2.0), 4 * x.sum(), rtol=1e-6)
        elif transform == "vmap":
            np.testing.assert_allclose(jax.vmap(outer)(jnp.arange(2.0)), [0.0, 2 * x.sum()], rtol=1e-6)
        else:
            np.testing.assert_allclose(jax.grad(outer)(2.0), 2 * x.sum(), rtol=1e-6)
    assert _program._cache_size() == before


def test_the_public_entry_points_are_one_program_each_when_eager():
    """kernels.empirical, landscape.top_eigenvalues, the analysis gradients and kernels.analytic: a
    second eager call with new values compiles nothing."""
    model = nn.mlp([8], 3)
    x = jax.random.normal(jax.random.key(0), (6, 4))
    y = jnp.arange(6) % 3
    params, _ = model.init(jax.random.key(1), x)
    objective = landscape.ModelObjective(model.apply, landscape.softmax_cross_entropy, (x, y))
    calls = {
        "empirical": lambda p: kernels.empirical(model.apply, p, x),
        "top_eigenvalues": lambda p: landscape.top_eigenvalues(objective, p, k=2, num_iters=8),
        "per_example_grads": lambda p: analysis.per_example_grads(
            model.apply, train.per_example_softmax_cross_entropy, p, x, y),
        "model_gradient_noise_scale": lambda p: analysis.model_gradient_noise_scale(
            model.apply, train.per_example_softmax_cross_entropy, p, x, y, chunk_size=4),
    }
    for name, call in calls.items():
        first = call(params)
        size = _program._cache_size()
        moved = jax.tree.map(lambda a: a * 1.5, params)
        second = call(moved)
        assert _program._cache_size() == size, name
        assert jax.tree.structure(first) == jax.tree.structure(second)
    kernel = kernels.analytic(model, x, get="ntk")
    size = _program._cache_size()
    np.testing.assert_allclose(kernels.analytic(model, 2 * x, get="ntk"), jax.jit(
        lambda z: kernels.analytic(model, z, get="ntk"))(2 * x), rtol=2e-5)
    assert _program._cache_size() == size and kernel.shape == (6, 6)
    # the values are those of the functions' own tests, which call them eagerly; one check here
    np.testing.assert_allclose(calls["empirical"](params), jax.jit(calls["empirical"])(params), rtol=2e-5)
