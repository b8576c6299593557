"""Kernel blocks spread over devices (jaxlearn.kernels.devices) equal the single-device kernels.

Ground truth: the same kernel from one unblocked pass on one device (``devices=None``,
``batch_size=None``). Run on 8 emulated CPU devices (tests/conftest.py); 3 devices exercise the
padding of the block count (and of the last block's rows). That the jitted program really is
partitioned is read off the compiled executable (``num_partitions``) and the output's sharding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import kernels, nn
from jaxlearn.kernels.devices import map_blocks, resolve_devices

F64 = pytest.mark.float64
NTK = dict(parameterization="ntk", W_std=1.3, b_std=0.2)


def _mlp():
    return nn.serial(nn.Dense(6, **NTK), nn.Relu(), nn.Dense(5, **NTK), nn.Erf(), nn.Dense(2, **NTK))


def _cnn():
    return nn.serial(nn.Conv(3, (2, 2), padding="SAME", **NTK), nn.Relu(), nn.GlobalAvgPool(), nn.Dense(2, **NTK))


def _inputs(shape, n1=7, n2=5):
    x1 = jax.random.normal(jax.random.key(1), (n1,) + shape)
    return x1, jax.random.normal(jax.random.key(2), (n2,) + shape)


def _tol():
    return dict(rtol=1e-12, atol=1e-12) if jax.config.jax_enable_x64 else dict(rtol=1e-6, atol=1e-6)


def _compiled(fn, *args):
    """``fn`` jitted and compiled for ``args``, with its number of partitions (one compile)."""
    compiled = jax.jit(fn).lower(*args).compile()
    line = next(ln for ln in compiled.as_text().splitlines() if ln.startswith("HloModule"))
    parts = [int(w.split("=")[1].rstrip(",")) for w in line.split() if w.startswith("num_partitions=")]
    return compiled, (parts or [1])[0]


def _assert_spread(out, devices, partitions):
    """The jitted program ran partitioned over exactly ``devices`` (one partition each)."""
    devs = resolve_devices(devices)
    assert partitions == len(devs)
    assert out.sharding.device_set == set(devs)


# (devices, batch_size, x2 given): 8 devices, one row block each (7 rows: one padding block) against
# all of x2; 3 devices with 2-row blocks (4 row blocks padded to 6, a ragged last block, a grid
# over x2's blocks), x1 against itself.
CASES = [(8, None, True), (3, 2, False)]


def _check_analytic(model, shape, devices, batch_size, with_x2):
    x1, x2 = _inputs(shape)
    other = x2 if with_x2 else None
    want = jax.jit(lambda a, b: kernels.analytic(model, a, b, batch_size=None))(x1, other)  # eager: op-by-op, slower
    compiled, partitions = _compiled(
        lambda a, b: kernels.analytic(model, a, b, batch_size=batch_size, devices=devices), x1, other)
    got = compiled(x1, other)
    _assert_spread(got.ntk, devices, partitions)
    for name in ("nngp", "ntk", "cov1"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), **_tol(), err_msg=name)
    assert (got.cov2 is None) == (other is None)
    if other is not None:
        np.testing.assert_allclose(got.cov2, want.cov2, **_tol())


@pytest.mark.parametrize("name, case", [("mlp", CASES[0]), ("cnn", CASES[1])])
def test_analytic_on_devices_equals_one_device(name, case):
    model, shape = {"mlp": (_mlp(), (3,)), "cnn": (_cnn(), (4, 3, 2))}[name]
    _check_analytic(model, shape, *case)


@F64
@pytest.mark.parametrize("case", CASES)
def test_analytic_on_devices_equals_one_device_float64(case):
    _check_analytic(_cnn(), (4, 3, 2), *case)


def _check_empirical(method, devices, batch_size, with_x2, **kw):
    model = _mlp()
    x1, x2 = _inputs((3,))
    other = x2 if with_x2 else None
    params, state = model.init(jax.random.key(3), x1)
    apply = lambda p, x: model.apply(p, x, state)  # noqa: E731
    want = jax.jit(lambda p, a, b: kernels.empirical(apply, p, a, b, method=method, **kw))(params, x1, other)
    compiled, partitions = _compiled(lambda p, a, b: kernels.empirical(
        apply, p, a, b, method=method, batch_size=batch_size, devices=devices, **kw), params, x1, other)
    got = compiled(params, x1, other)
    _assert_spread(got, devices, partitions)
    np.testing.assert_allclose(got, want, **_tol())


@pytest.mark.parametrize("method, case, kw", [
    ("structured", CASES[0], {}),
    ("jacobian", CASES[1], dict(trace_axes=())),                             # (N1, N2, 2, 2)
    ("structured", (tuple(jax.local_devices()[2:5]), None, False), dict(diagonal_axes=(0,))),  # Θ(x_n, x_n)
])
def test_empirical_ntk_on_devices_equals_one_device(method, case, kw):
    _check_empirical(method, *case, **kw)


@F64
@pytest.mark.parametrize("method, case", [("jacobian", CASES[0]), ("structured", CASES[1])])
def test_empirical_ntk_on_devices_equals_one_device_float64(method, case):
    _check_empirical(method, *case)


def test_map_blocks_pads_cuts_and_composes_with_vmap_and_grad():
    blocks = jnp.arange(30.0).reshape(5, 2, 3)     # 5 blocks over 3 devices: one padding block
    w = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    devs = resolve_devices(3)

    def f(w, d):
        return map_blocks(lambda b: jnp.tanh(b @ w.T), blocks, d)

    np.testing.assert_allclose(f(w, devs), f(w, None), **_tol())
    loss = lambda w, d: jnp.sum(f(w, d) ** 2)  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(loss), static_argnums=1)(w, devs), jax.grad(loss)(w, None), **_tol())
    ws = jnp.stack([w, 2 * w])
    np.testing.assert_allclose(jax.vmap(f, (0, None))(ws, devs), jax.vmap(f, (0, None))(ws, None), **_tol())


@F64
def test_analytic_grad_through_devices():
    model = _mlp()
    x1, x2 = _inputs((3,))
    loss = lambda b, d: jnp.sum(kernels.analytic(model, x1, b, get="ntk", devices=d) ** 2)  # noqa: E731
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    np.testing.assert_allclose(grad(x2, 3), grad(x2, None), **_tol())


def test_one_device_is_the_single_device_program():
    assert resolve_devices(None) is None and resolve_devices(1) is None
    assert resolve_devices(jax.local_devices()[:1]) is None
    assert resolve_devices(np.int64(2)) == tuple(jax.local_devices()[:2])


@pytest.mark.parametrize("devices, error, match", [
    (len(jax.local_devices()) + 1, ValueError, r"^devices: expected between 1 and \d+ \(the local devices\), got \d+$"),
    (0, ValueError, r"^devices: expected between 1 and"),
    (True, TypeError, r"^devices: expected None, a positive int, 'all'"),
    ("gpu", ValueError, r"^devices: expected None, a positive int, 'all'"),
    (2.0, TypeError, r"^devices: expected None, a positive int, 'all' or a sequence of jax devices, got float$"),
    ([0, 1], TypeError, r"^devices: expected jax devices in the sequence, got int$"),
    ([], ValueError, r"^devices: expected at least one device"),
    ([jax.local_devices()[0]] * 2, ValueError, r"^devices: expected distinct devices"),
])
def test_bad_devices(devices, error, match):
    model = _mlp()
    x = jnp.ones((4, 3))
    with pytest.raises(error, match=match):
        kernels.analytic(model, x, devices=devices)
    params, state = model.init(jax.random.key(0), x)
    with pytest.raises(error, match=match):
        kernels.empirical(lambda p, x: model.apply(p, x, state), params, x, devices=devices)
