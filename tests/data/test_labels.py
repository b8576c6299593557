"""Random labels and label noise: counts, distinctness and Monte-Carlo rates."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import data


def _classification(n=3000, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return data.Dataset(x, y, x[:50], y[:50], num_classes=num_classes, name="toy")


# ---------------------------------------------------------------------------------------------
# host-side


@pytest.mark.parametrize("num_classes", [2, 10])
def test_random_labels_uniform(num_classes):
    ds = _classification(n=20000, num_classes=num_classes)
    out = data.random_labels(ds, seed=3)
    assert out.y_train.dtype == np.int32 and out.y_train.shape == ds.y_train.shape
    counts = np.bincount(out.y_train, minlength=num_classes)
    assert len(counts) == num_classes
    expected = len(out.y_train) / num_classes
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # chi-square with C-1 dof: mean C-1, sd sqrt(2(C-1)); 6 sd is loose but catches bias.
    assert chi2 < (num_classes - 1) + 6 * math.sqrt(2 * (num_classes - 1))
    # Independent of the original labels: agreement ~ 1/C.
    agree = np.mean(out.y_train == ds.y_train)
    assert abs(agree - 1 / num_classes) < 4 * math.sqrt(1 / num_classes / len(out.y_train)) + 1e-3
    # Test split and inputs untouched; the input dataset is not modified.
    assert out.y_test is ds.y_test and out.x_train is ds.x_train
    assert not np.array_equal(out.y_train, ds.y_train)
    np.testing.assert_array_equal(data.random_labels(ds, seed=3).y_train, out.y_train)
    assert not np.array_equal(data.random_labels(ds, seed=4).y_train, out.y_train)


def test_random_labels_needs_classes():
    ds = data.gaussian_regression(n_train=10, n_test=5)
    with pytest.raises(ValueError, match="num_classes"):
        data.random_labels(ds)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 0.5, 1.0])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_label_noise_exact_count(rate, num_classes):
    ds = _classification(n=1001, num_classes=num_classes)
    original = ds.y_train.copy()
    out = data.label_noise(ds, rate, seed=1)
    changed = out.y_train != original
    assert changed.sum() == round(rate * 1001)
    assert out.y_train.dtype == np.int32
    assert out.y_train.min() >= 0 and out.y_train.max() < num_classes
    np.testing.assert_array_equal(ds.y_train, original)  # input not mutated
    assert out.y_test is ds.y_test
    if num_classes == 2:  # the only different class is the other one
        np.testing.assert_array_equal(out.y_train[changed], 1 - original[changed])


def test_label_noise_new_classes_uniform():
    ds = _classification(n=30000, num_classes=4)
    ds = ds._replace(y_train=np.zeros_like(ds.y_train))  # all class 0
    out = data.label_noise(ds, 0.6, seed=0)
    counts = np.bincount(out.y_train, minlength=4)
    assert counts[0] == 30000 - 18000
    np.testing.assert_allclose(counts[1:] / 18000, 1 / 3, atol=0.02)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.1"])
def test_label_noise_bad_rate(rate):
    with pytest.raises(ValueError, match="rate"):
        data.label_noise(_classification(n=10), rate)


# ---------------------------------------------------------------------------------------------
# in-trace


def _labels(n=100_000, num_classes=10):
    return np.random.default_rng(99).integers(0, num_classes, size=n).astype(np.int32)


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("num_classes", [2, 10])
def test_corrupt_labels_monte_carlo(key, rate, num_classes):
    y = _labels(num_classes=num_classes)
    out = np.asarray(data.corrupt_labels(key, y, rate, num_classes))
    assert out.shape == y.shape and out.dtype == y.dtype
    assert out.min() >= 0 and out.max() < num_classes
    n = y.size
    frac = np.mean(out != y)
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(frac - rate) <= 4 * sigma + 1e-12
    # New classes are uniform over the C-1 others: check the offset distribution.
    if 0 < rate and num_classes > 2:
        offset = ((out - y) % num_classes)[out != y]
        counts = np.bincount(offset, minlength=num_classes)[1:]
        np.testing.assert_allclose(counts / counts.sum(), 1 / (num_classes - 1), atol=0.02)


class TestCorruptLabelsJitAndEager(chex.TestCase):
    """With the rate traced under jit, and eagerly: the eager labels, corrupted at the rate."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_corrupt_labels_traced_rate(self):
        key, y = jax.random.key(0), _labels()
        f = self.variant(data.corrupt_labels, static_argnames="num_classes")
        out = np.asarray(f(key, y, jnp.float32(0.25), num_classes=10))
        eager = data.corrupt_labels(key, y, 0.25, 10)
        np.testing.assert_array_equal(out, eager)
        assert abs(np.mean(out != y) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / y.size)


def test_corrupt_labels_vmap_over_rates(key):
    y = _labels()
    rates = jnp.array([0.0, 0.3, 1.0])
    out = np.asarray(jax.vmap(lambda r: data.corrupt_labels(key, y, r, 10))(rates))
    assert out.shape == (3, y.size)
    frac = np.mean(out != y, axis=1)
    assert frac[0] == 0.0
    assert abs(frac[1] - 0.3) < 4 * math.sqrt(0.3 * 0.7 / y.size)
    assert frac[2] == 1.0


@pytest.mark.parametrize("rate, changed", [(0, 0.0), (1, 1.0)])
def test_corrupt_labels_integer_rate(key, rate, changed):
    y = _labels(n=1000)
    assert np.mean(np.asarray(data.corrupt_labels(key, y, rate, 10)) != y) == changed


def test_corrupt_labels_vmap_over_keys_and_grad(key):
    y = _labels(n=1000)
    keys = jax.random.split(key, 4)
    out = np.asarray(jax.jit(jax.vmap(lambda k: data.corrupt_labels(k, y, 0.5, 10)))(keys))
    assert out.shape == (4, 1000)
    assert not np.array_equal(out[0], out[1])  # independent per key

    def loss(w, rate):
        labels = data.corrupt_labels(key, y, rate, 10)
        logits = jnp.zeros((y.size, 10)) + w
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    g = np.asarray(jax.jit(jax.grad(loss))(jnp.zeros(10), 0.2))
    assert g.shape == (10,) and np.all(np.isfinite(g))


@pytest.mark.parametrize("kwargs, match", [
    (dict(rate=1.2), "rate"),
    (dict(rate=-0.5), "rate"),
    (dict(num_classes=1), "num_classes"),
    (dict(num_classes=10.0), "num_classes"),
    (dict(labels=jnp.zeros(5, jnp.float32)), "integer"),
])
def test_corrupt_labels_bad_args(key, kwargs, match):
    args = dict(labels=jnp.zeros(5, jnp.int32), rate=0.1, num_classes=10) | kwargs
    with pytest.raises(ValueError, match=match):
        data.corrupt_labels(key, **args)


@pytest.mark.float64
def test_corrupt_labels_keeps_dtype_in_x64(key):
    y = jnp.arange(1000, dtype=jnp.int64) % 7
    out = data.corrupt_labels(key, y, jnp.float64(0.5), 7)
    assert out.dtype == jnp.int64
    assert 0.4 < float(jnp.mean(out != y)) < 0.6
