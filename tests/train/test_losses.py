"""Losses and metrics against NumPy formulas written out here (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import train

pytestmark = pytest.mark.float64

SHAPES = [(1, 2), (7, 4)]

# Jitted once per shape: far cheaper to compile than op-by-op eager dispatch.
ce = jax.jit(train.softmax_cross_entropy)
ce_grad = jax.jit(jax.grad(train.softmax_cross_entropy))
mse = jax.jit(train.mse)
mse_grad = jax.jit(jax.grad(train.mse))
hinge = jax.jit(train.hinge)
accuracy = jax.jit(train.accuracy)


def _logsumexp(f):
    m = f.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(f - m).sum(axis=-1, keepdims=True)))[..., 0]


def _logits(n, c, scale=3.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)) * scale


@pytest.mark.parametrize("n, c", SHAPES)
def test_cross_entropy_integer_labels(n, c):
    y = np.random.default_rng(1).integers(0, c, n)
    for scale in (1.0, 300.0):  # 300: logits far outside exp's range
        f = _logits(n, c, scale)
        expected = np.mean(_logsumexp(f) - f[np.arange(n), y])
        got = ce(jnp.asarray(f), jnp.asarray(y, jnp.int32))
        assert np.isfinite(got)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, c", SHAPES)
def test_cross_entropy_probability_targets(n, c):
    f = _logits(n, c)
    p = np.random.default_rng(2).dirichlet(np.ones(c), size=n)
    expected = np.mean(np.sum(p * (_logsumexp(f)[:, None] - f), axis=-1))
    np.testing.assert_allclose(ce(jnp.asarray(f), jnp.asarray(p)), expected, rtol=1e-12)


def test_cross_entropy_one_hot_equals_integer_labels_and_gradient():
    n, c = SHAPES[-1]
    f = _logits(n, c)
    y = np.arange(n) % c
    one_hot = np.eye(c)[y]
    as_int = ce(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(ce(jnp.asarray(f), jnp.asarray(one_hot)), as_int, rtol=1e-13)
    # d/df mean_n CE = (softmax(f) - onehot) / N
    softmax = np.exp(f - _logsumexp(f)[:, None])
    grad = ce_grad(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(grad, (softmax - one_hot) / n, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(7,), (7, 4), (2, 3, 4)])
def test_mse_is_half_mean_over_all_entries(shape):
    rng = np.random.default_rng(3)
    f, y = rng.normal(size=shape), rng.normal(size=shape)
    expected = 0.5 * np.sum((f - y) ** 2) / f.size
    np.testing.assert_allclose(mse(jnp.asarray(f), jnp.asarray(y)), expected, rtol=1e-13)
    # each entry's residual is divided by the total number of entries (N·C), not by N
    grad = mse_grad(jnp.asarray(f), jnp.asarray(y))
    np.testing.assert_allclose(grad, (f - y) / f.size, rtol=1e-13)


def test_mse_value_by_hand():
    # 2 examples × 3 outputs, every residual 1: ½·mean = 0.5 (a per-example sum would give 1.5)
    assert float(mse(jnp.zeros((2, 3)), jnp.ones((2, 3)))) == 0.5


def _binary_hinge(f, y):
    return np.mean(np.maximum(0.0, 1.0 - y * f))


@pytest.mark.parametrize("target_dtype", [np.float64, np.int32])
@pytest.mark.parametrize("out_shape", ["flat", "column"])
def test_binary_hinge(out_shape, target_dtype):
    rng = np.random.default_rng(4)
    n = 7
    f = rng.normal(size=n) * 2.0
    f[0], f[1] = 1.0, -1.0  # exactly on the margin
    y = np.where(rng.random(n) < 0.5, -1, 1)
    y[0], y[1] = 1, -1
    outputs = f if out_shape == "flat" else f[:, None]
    got = hinge(jnp.asarray(outputs), jnp.asarray(y.astype(target_dtype)))
    np.testing.assert_allclose(got, _binary_hinge(f, y), rtol=1e-13)


def test_binary_hinge_by_hand():
    f = jnp.array([[2.0], [0.5], [-0.5], [0.0]])
    y = jnp.array([1.0, 1.0, 1.0, -1.0])
    # losses 0, 0.5, 1.5, 1 → mean 0.75 (broadcasting (4,1) against (4,) would give another value)
    np.testing.assert_allclose(hinge(f, y), 0.75, rtol=1e-15)


def _crammer_singer(f, y):
    losses = []
    for fn, yn in zip(f, y):
        others = np.delete(fn, yn)
        losses.append(max(0.0, 1.0 + others.max() - fn[yn]))
    return np.mean(losses)


@pytest.mark.parametrize("n, c", SHAPES)
def test_multiclass_hinge(n, c):
    f = _logits(n, c, scale=0.7, seed=5)
    y = np.random.default_rng(6).integers(0, c, n)
    got = hinge(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(got, _crammer_singer(f, y), rtol=1e-13)


def test_multiclass_hinge_by_hand():
    f = jnp.array([[3.0, 1.0, 0.0], [0.0, 0.5, 0.2], [1.0, 1.0, 1.0]])
    y = jnp.array([0, 1, 2], jnp.int32)
    # max(0, 1+1-3)=0, max(0, 1+0.2-0.5)=0.7, max(0, 1+1-1)=1
    np.testing.assert_allclose(hinge(f, y), (0.0 + 0.7 + 1.0) / 3, rtol=1e-14)


@pytest.mark.parametrize("targets", ["int", "one_hot"])
@pytest.mark.parametrize("n, c", SHAPES)
def test_accuracy(n, c, targets):
    f = _logits(n, c, seed=7)
    y = np.random.default_rng(8).integers(0, c, n)
    y[0] = np.argmax(f[0])  # at least one hit
    t = jnp.asarray(y, jnp.int32) if targets == "int" else jnp.asarray(np.eye(c)[y])
    got = accuracy(jnp.asarray(f), t)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, np.mean(np.argmax(f, -1) == y), rtol=1e-15)


def test_accuracy_by_hand():
    f = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert float(accuracy(f, jnp.array([1, 0, 0, 0], jnp.int32))) == 0.75


@pytest.mark.parametrize("name, fn", [("softmax_cross_entropy", train.softmax_cross_entropy),
                                      ("mse", train.mse), ("hinge", train.hinge)])
def test_loss_by_name(name, fn):
    assert train.loss_by_name(name) is fn


@pytest.mark.parametrize("name, hint", [("hinje", "hinge"), ("msee", "mse"),
                                        ("softmax_crossentropy", "softmax_cross_entropy")])
def test_loss_by_name_did_you_mean(name, hint):
    with pytest.raises(ValueError, match=rf"unknown name '{name}' \(did you mean '{hint}'\?\)"):
        train.loss_by_name(name)


def test_loss_by_name_unknown_lists_choices():
    with pytest.raises(ValueError, match="unknown name 'zzz'") as info:
        train.loss_by_name("zzz")
    assert "did you mean" not in str(info.value)
    for known in ("hinge", "mse", "softmax_cross_entropy"):
        assert known in str(info.value)
