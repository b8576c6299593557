"""Behaviour of ``jaxlearn.compat.neural_tangents`` (float32): neural-tangents' signatures and
defaults, shapes with an unknown batch size, the ``get`` conventions, one-line errors for what jaxlearn
cannot compute, interoperation with ``jaxlearn.nn``, and ``jit``/``vmap``. Numbers against
neural-tangents itself: ``test_nt_references.py``."""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import kernels, nn
from jaxlearn.compat import neural_tangents as nt
from jaxlearn.compat.neural_tangents import stax


def _x(n=4, shape=(3,), seed=0):
    return jax.random.normal(jax.random.key(seed), (n,) + shape)


def _mlp():
    return stax.serial(stax.Dense(16, 1.5, 0.1), stax.Relu(), stax.Dense(2, 1.5, 0.1))


# neural-tangents 0.6.5's signatures (parameters and defaults), copied from its source.
SIGNATURES = {
    "Dense": "(out_dim, W_std=1.0, b_std=None, batch_axis=0, channel_axis=-1, parameterization='ntk', s=(1, 1))",
    "Conv": "(out_chan, filter_shape, strides=None, padding='VALID', W_std=1.0, b_std=None, dimension_numbers=None, "
            "parameterization='ntk', s=(1, 1))",
    "AvgPool": "(window_shape, strides=None, padding='VALID', normalize_edges=False, batch_axis=0, channel_axis=-1)",
    "LayerNorm": "(axis=-1, eps=1e-12, batch_axis=0, channel_axis=-1)",
    "Dropout": "(rate, mode='train')",
    "Erf": "(a=1.0, b=1.0, c=0.0)",
    "ABRelu": "(a, b, do_stabilize=False)",
    "LeakyRelu": "(alpha, do_stabilize=False)",
    "Gelu": "(approximate=False)",
    "Flatten": "(batch_axis=0, batch_axis_out=0)",
}


def _params_only(sig):
    return "(" + ", ".join(str(p).split(":")[0].split(" ")[0] if p.default is p.empty else
                           f"{p.name}={p.default!r}" for p in sig.parameters.values()) + ")"


@pytest.mark.parametrize("name", SIGNATURES)
def test_signatures_and_defaults_match_neural_tangents(name):
    assert _params_only(inspect.signature(getattr(stax, name))) == SIGNATURES[name]


def test_top_level_and_predict_signatures():
    assert str(inspect.signature(nt.predict.gradient_descent_mse)) == (
        "(k_train_train, y_train, learning_rate=1.0, diag_reg=0.0, diag_reg_absolute_scale=False, trace_axes=(-1,))")
    assert list(inspect.signature(nt.batch).parameters) == ["kernel_fn", "batch_size", "device_count",
                                                             "store_on_device"]
    assert inspect.signature(nt.empirical_ntk_fn).parameters["implementation"].default == 1
    assert [m.name for m in nt.NtkImplementation] == ["AUTO", "JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS",
                                                     "STRUCTURED_DERIVATIVES"]


def test_init_with_unknown_batch_and_param_format():
    init_fn, apply_fn, _ = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(3, b_std=0.5))
    out_shape, params = init_fn(jax.random.PRNGKey(0), (-1, 5))
    assert out_shape == (-1, 3)
    (w1, b1), relu, (w2, b2) = params
    assert w1.shape == (5, 8) and b1 is None and relu == () and w2.shape == (8, 3) and b2.shape == (1, 3)
    # NTK parameterization: z = W_std/√n x·W + b_std·b with W, b ~ N(0, 1)
    x = _x(2, (5,))
    expected = jax.nn.relu(x @ w1 / math.sqrt(5)) @ w2 / math.sqrt(8) + 0.5 * b2
    np.testing.assert_allclose(apply_fn(params, x), expected, rtol=1e-5, atol=1e-6)


def test_conv_params_and_shapes():
    init_fn, apply_fn, _ = stax.Conv(4, (3, 3), (2, 1), 'SAME', b_std=0.1)
    out_shape, (W, b) = init_fn(jax.random.PRNGKey(0), (-1, 6, 5, 2))
    assert out_shape == (-1, 3, 5, 4) and W.shape == (3, 3, 2, 4) and b.shape == (1, 1, 1, 4)
    assert apply_fn((W, b), _x(2, (6, 5, 2))).shape == (2, 3, 5, 4)


def test_get_conventions():
    _, _, kernel_fn = _mlp()
    x1, x2 = _x(3), _x(5, seed=1)
    kernel = kernel_fn(x1, x2)
    assert isinstance(kernel, nt.Kernel)
    assert kernel.nngp.shape == (3, 5) and kernel.cov1.shape == (3,) and kernel.cov2.shape == (5,)
    assert kernel.shape1 == (3, 2) and kernel.shape2 == (5, 2) and kernel.x1_is_x2 is False
    assert kernel_fn(x1, None).cov2 is None and kernel_fn(x1, None).x1_is_x2
    ntk = kernel_fn(x1, x2, 'ntk')
    np.testing.assert_array_equal(ntk, kernel.ntk)
    both = kernel_fn(x1, x2, ('ntk', 'nngp'))
    assert type(both).__name__ == "AnalyticKernel" and both._fields == ('ntk', 'nngp')
    np.testing.assert_array_equal(both.nngp, kernel.nngp)
    assert kernel_fn(x1, x2, ('cov1', 'is_gaussian')).is_gaussian is True
    with pytest.raises(ValueError, match="not a field"):
        kernel_fn(x1, x2, 'nope')
    doubled = kernel.replace(nngp=2 * kernel.nngp)
    np.testing.assert_array_equal(doubled.nngp, 2 * kernel.nngp)
    np.testing.assert_array_equal(doubled.ntk, kernel.ntk)


def test_kernel_of_kernel_composes():
    _, _, kernel_fn = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Erf())
    _, _, twice = stax.serial(stax.Dense(8, 1.3, 0.2), stax.Erf(), stax.Dense(8, 1.3, 0.2), stax.Erf())
    x1, x2 = _x(3), _x(2, seed=1)
    np.testing.assert_allclose(kernel_fn(kernel_fn(x1, x2)).ntk, twice(x1, x2, 'ntk'), rtol=1e-6)


def test_diagonal_spatial_is_the_spatial_diagonal():
    _, _, kernel_fn = stax.serial(stax.Conv(4, (2,), padding='SAME'), stax.Relu(), stax.Conv(4, (2,)))
    x = _x(2, (5, 3))
    full = kernel_fn(x, None, 'nngp')
    diag = kernel_fn(x, None, 'nngp', diagonal_spatial=True)
    assert full.shape == (2, 2, 4, 4) and diag.shape == (2, 2, 4)
    np.testing.assert_array_equal(diag, jnp.diagonal(full, axis1=2, axis2=3))


@pytest.mark.parametrize("build, match", [
    (lambda: stax.Conv(4, (3, 3), padding='CIRCULAR'), "CIRCULAR"),
    (lambda: stax.AvgPool((2, 2), padding='CIRCULAR'), "CIRCULAR"),
    (lambda: stax.Dense(4, parameterization='standard', s=(2, 2)), r"s=\(2, 2\)"),
    (lambda: stax.Dense(4, channel_axis=1), "channel_axis=1"),
    (lambda: stax.Conv(4, (3, 3), dimension_numbers=('NCHW', 'OIHW', 'NCHW')), "dimension_numbers"),
    (lambda: stax.SumPool((2, 2)), "stax.SumPool"),
    (lambda: stax.GlobalSelfAttention(4, 4, 2), "stax.GlobalSelfAttention"),
    (lambda: stax.Exp(), "stax.Exp"),
    (lambda: nt.empirical_ntk_fn(lambda p, x: x, vmap_axes=1), "vmap_axes=1"),
])
def test_unsupported_options_raise_naming_them(build, match):
    with pytest.raises(NotImplementedError, match=match) as info:
        build()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layer, match", [
    (stax.Dropout(0.5), "Dropout"),
    (stax.Elementwise(jnp.tanh), "nngp_fn=None"),
])
def test_kernels_jaxlearn_lacks_raise_naming_them(layer, match):
    _, apply_fn, kernel_fn = stax.serial(stax.Dense(4), layer)
    with pytest.raises(NotImplementedError, match=match):
        kernel_fn(_x(2), None, 'nngp')


def test_kernel_fn_options_jaxlearn_lacks():
    _, _, kernel_fn = _mlp()
    for kwargs, match in ((dict(mask_constant=0.), "mask_constant"), (dict(diagonal_batch=False), "diagonal_batch"),
                          (dict(pattern=(jnp.ones(2), None)), "pattern")):
        with pytest.raises(NotImplementedError, match=match):
            kernel_fn(_x(2), None, 'ntk', **kwargs)
    with pytest.raises(NotImplementedError, match="trace_axes"):
        nt.predict.gradient_descent_mse(jnp.ones((2, 2, 3, 3)), jnp.ones((2, 3)))


def test_jaxlearn_layers_inside_stax_serial():
    """``stax.serial`` takes jaxlearn layers (params in jaxlearn's format at their positions): the
    kernel is that of the all-stax network with the same hyperparameters."""
    mixed = stax.serial(stax.Dense(16, 1.5, 0.1), nn.Relu(), nn.Dense(2, W_std=1.5, b_std=0.1, parameterization="ntk"))
    x1, x2 = _x(3), _x(2, seed=1)
    np.testing.assert_allclose(mixed[2](x1, x2, 'ntk'), _mlp()[2](x1, x2, 'ntk'), rtol=1e-6)
    _, params = mixed[0](jax.random.PRNGKey(0), x1.shape)
    assert isinstance(params[2], dict) and set(params[2]) == {"W", "b"}
    assert mixed[1](params, x1).shape == (3, 2)
    with pytest.raises(ValueError, match="carries state"):
        stax.serial(stax.Dense(4), nn.BatchNorm())[0](jax.random.PRNGKey(0), (2, 3))


def test_stax_triple_as_jaxlearn_layer():
    """``nt.as_layer``: the same network as a jaxlearn Layer (params in neural-tangents' format):
    jaxlearn's analytic and empirical kernels and its apply agree with the triple's."""
    init_fn, apply_fn, kernel_fn = _mlp()
    layer = nt.as_layer((init_fn, apply_fn, kernel_fn))
    assert isinstance(layer, nn.Layer)
    x = _x(3)
    close = dict(rtol=1e-5, atol=1e-5)  # float32, entries of order 1
    np.testing.assert_allclose(kernels.analytic(layer, x, get="ntk"), kernel_fn(x, None, "ntk"), **close)
    _, params = init_fn(jax.random.PRNGKey(1), x.shape)
    np.testing.assert_allclose(layer.apply(params, x), apply_fn(params, x), **close)
    emp = kernels.empirical(layer.apply, params, x)
    np.testing.assert_allclose(nt.empirical_ntk_fn(apply_fn)(x, None, params), emp, **close)


def test_user_written_triple_in_serial():
    """A hand-written ``(init_fn, apply_fn, kernel_fn)`` composes for init/apply; its kernel raises."""
    def init_fn(rng, input_shape):
        return input_shape, ()

    def apply_fn(params, x, **kwargs):
        return 2 * x

    init, apply, kernel_fn = stax.serial(stax.Dense(3), (init_fn, apply_fn, None))
    _, params = init(jax.random.PRNGKey(0), (2, 4))
    np.testing.assert_allclose(apply(params, _x(2, (4,))), 2 * stax.Dense(3)[1](params[0], _x(2, (4,))), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="user-written"):
        kernel_fn(_x(2, (4,)), None, 'nngp')


def test_jit_and_vmap():
    init_fn, apply_fn, kernel_fn = _mlp()
    x1, x2 = _x(3), _x(2, seed=1)
    jitted = jax.jit(kernel_fn, static_argnames='get')
    np.testing.assert_allclose(jitted(x1, x2, 'ntk'), kernel_fn(x1, x2, 'ntk'), rtol=1e-6)
    batches = jnp.stack([x1, 2 * x1])
    per_batch = jax.vmap(lambda x: kernel_fn(x, None, 'nngp'))(batches)
    np.testing.assert_allclose(per_batch[1], kernel_fn(2 * x1, None, 'nngp'), rtol=1e-5)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.vmap(lambda k: init_fn(k, x1.shape)[1])(keys)
    outs = jax.vmap(lambda p: apply_fn(p, x1))(params)
    one = jax.tree.map(lambda a: a[1], params)
    np.testing.assert_allclose(outs[1], jax.jit(apply_fn)(one, x1), rtol=1e-5)


def test_batch_of_any_kernel_function():
    """``nt.batch`` on a user function: block pairs reassembled (ground truth: the Gram matrix)."""
    gram = lambda a, b=None: a @ (a if b is None else b).T  # noqa: E731
    x1, x2 = _x(5), _x(3, seed=1)
    np.testing.assert_allclose(nt.batch(gram, batch_size=2)(x1, x2), x1 @ x2.T, rtol=1e-6)
    np.testing.assert_allclose(nt.batch(gram, batch_size=2, store_on_device=False)(x1), x1 @ x1.T, rtol=1e-6)


def test_taylor_expand_of_a_polynomial_is_exact():
    f = lambda p, x: p["a"] ** 3 * x + p["b"] ** 2  # noqa: E731
    p0, p1 = {"a": 1.5, "b": -0.5}, {"a": 0.7, "b": 2.0}
    np.testing.assert_allclose(nt.taylor_expand(f, p0, 3)(p1, 2.0), f(p1, 2.0), rtol=1e-6)
    lin = 1.5 ** 3 * 2 + 0.25 + (3 * 1.5 ** 2 * 2) * (0.7 - 1.5) + (2 * -0.5) * 2.5
    np.testing.assert_allclose(nt.taylor_expand(f, p0, 1)(p1, 2.0), lin, rtol=1e-6)
    np.testing.assert_allclose(nt.linearize(f, p0)(p1, 2.0), lin, rtol=1e-6)


def test_max_learning_rate_closed_form():
    k = jnp.diag(jnp.array([1.0, 4.0, 2.0]))
    np.testing.assert_allclose(nt.predict.max_learning_rate(k), 2 * 3 / 4.0, rtol=1e-6)
    np.testing.assert_allclose(nt.predict.max_learning_rate(k, 6, momentum=0.5), 2 * 1.5 * 6 / 4.0, rtol=1e-6)


def test_ode_gradient_descent_on_mse_follows_the_closed_form():
    """``predict.gradient_descent`` with the MSE loss integrates the ODE ``gradient_descent_mse`` solves."""
    _, _, kernel_fn = stax.serial(stax.Dense(8, 1.3, 0.1), stax.Erf(), stax.Dense(2, 1.3, 0.1))
    x, xt = _x(4), _x(3, seed=1)
    y = _x(4, (2,), seed=2)
    k, kt = kernel_fn(x, None, 'ntk'), kernel_fn(xt, x, 'ntk')
    loss = lambda fx, y_hat: 0.5 * jnp.mean((fx - y_hat) ** 2)  # noqa: E731
    t = jnp.array([0.5, 3.0])
    ode = nt.predict.gradient_descent(loss, k, y, learning_rate=2.0)(t, 0.1, 0.0, kt)
    closed = nt.predict.gradient_descent_mse(k, y, learning_rate=2.0)(t, 0.1, 0.0, kt)
    for a, b in zip(ode, closed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_monte_carlo_generator_over_sample_counts():
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(64, 1.5), stax.Relu(), stax.Dense(8, 1.5))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(0), n_samples=[2, 16])
    estimates = list(mc(_x(3), None, 'ntk'))
    assert len(estimates) == 2 and estimates[1].shape == (3, 3)
    truth = kernel_fn(_x(3), None, 'ntk')
    assert np.max(np.abs(estimates[1] - truth)) < 0.2 * np.max(np.abs(truth))
