"""Synthetic datasets against independent ground truth (pure-Python recomputation, least
squares, brute force)."""
import itertools
import math

import numpy as np
import pytest

from jaxlearn import data

OP_REFERENCE = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    # b^{-1} by Fermat's little theorem, independent of the implementation's pow(b, -1, p).
    "/": lambda a, b, p: (a * pow(b, p - 2, p)) % p,
    "x2+xy+y2": lambda a, b, p: (a * a + a * b + b * b) % p,
}


# ---------------------------------------------------------------------------------------------
# modular arithmetic


@pytest.mark.parametrize("op", sorted(OP_REFERENCE))
@pytest.mark.parametrize("p", [2, 7, 13])
def test_modular_arithmetic_matches_python(op, p):
    ds = data.modular_arithmetic(p=p, op=op, train_fraction=0.5, seed=1)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x.dtype == np.int32 and y.dtype == np.int32 and x.shape[1] == 2
    assert ds.num_classes == p
    for (a, b), c in zip(x.tolist(), y.tolist()):
        assert c == OP_REFERENCE[op](a, b, p), (a, b, c)

    expected = {(a, b) for a in range(p) for b in range(p) if op != "/" or b != 0}
    train = [tuple(r) for r in ds.x_train.tolist()]
    test = [tuple(r) for r in ds.x_test.tolist()]
    assert len(train) + len(test) == (p * (p - 1) if op == "/" else p * p)
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == expected


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9])
def test_modular_arithmetic_split_size_and_seed(fraction):
    ds = data.modular_arithmetic(p=11, op="+", train_fraction=fraction, seed=0)
    assert len(ds.y_train) == round(fraction * 121)
    again = data.modular_arithmetic(p=11, op="+", train_fraction=fraction, seed=0)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    other = data.modular_arithmetic(p=11, op="+", train_fraction=fraction, seed=1)
    assert not np.array_equal(ds.x_train, other.x_train)
    assert ds.input_spec.shape == (1, 2) and ds.input_spec.dtype == np.int32


@pytest.mark.parametrize("kwargs, match", [
    (dict(p=9, op="/"), "prime"),
    (dict(p=1), "p must be"),
    (dict(p=7.0), "p must be an integer"),
    (dict(op="^"), "op must be one of"),
    (dict(train_fraction=1.0), "train_fraction"),
    (dict(train_fraction=0.0), "train_fraction"),
    (dict(p=2, train_fraction=0.1), "empty split"),
])
def test_modular_arithmetic_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.modular_arithmetic(**kwargs)


def test_modular_arithmetic_non_prime_ok_for_other_ops():
    ds = data.modular_arithmetic(p=9, op="*")
    assert len(ds.y_train) + len(ds.y_test) == 81


# ---------------------------------------------------------------------------------------------
# teacher-student and Gaussian regression


def _lstsq_residual(x, y):
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    w, *_ = np.linalg.lstsq(x64, y64, rcond=None)
    return np.max(np.abs(x64 @ w - y64)) / np.max(np.abs(y64))


@pytest.mark.parametrize("d_out", [1, 3])
def test_teacher_student_linear_is_exactly_linear(d_out):
    ds = data.teacher_student(seed=3, n_train=200, n_test=50, d_in=7, d_out=d_out,
                              activation="linear", noise_std=0.0)
    assert ds.x_train.shape == (200, 7) and ds.y_train.shape == (200, d_out)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.float32
    assert ds.num_classes is None
    # Residual at float32 rounding of y only.
    assert _lstsq_residual(ds.x_train, ds.y_train) < 1e-6
    # Train and test follow the same linear map.
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert _lstsq_residual(x, y) < 1e-6


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_teacher_student_nonlinear_is_not_linear(activation):
    ds = data.teacher_student(seed=0, n_train=300, d_in=5, hidden=32, activation=activation)
    assert _lstsq_residual(ds.x_train, ds.y_train) > 1e-2
    # Targets O(1) under the 1/sqrt(fan_in) scaling.
    assert 0.05 < ds.y_train.std() < 5


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_teacher_student_deterministic_and_noise_on_train_only(activation):
    kw = dict(seed=5, n_train=100, n_test=40, d_in=4, hidden=16, activation=activation)
    clean = data.teacher_student(**kw, noise_std=0.0)
    again = data.teacher_student(**kw, noise_std=0.0)
    noisy = data.teacher_student(**kw, noise_std=0.5)
    other = data.teacher_student(**{**kw, "seed": 6}, noise_std=0.0)
    for a, b in zip(clean[:4], again[:4]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(clean.y_train, other.y_train)
    np.testing.assert_array_equal(noisy.x_train, clean.x_train)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)  # test targets noise-free
    residual = noisy.y_train - clean.y_train
    assert 0.35 < residual.std() < 0.65  # noise_std=0.5 on 100 samples


@pytest.mark.parametrize("fn, kwargs", [
    (data.teacher_student, dict(d_in=3, hidden=8, noise_std=0.1)),
    (data.gaussian_regression, dict(d_in=3, noise_std=0.1)),
    (data.sinusoid_regression, dict(noise_std=0.1)),
    (data.sparse_parity, dict(n_bits=5, k=2)),
])
def test_rule_and_test_set_do_not_depend_on_n_train(fn, kwargs):
    small = fn(seed=2, n_train=50, n_test=30, **kwargs)
    large = fn(seed=2, n_train=500, n_test=30, **kwargs)
    np.testing.assert_array_equal(small.x_test, large.x_test)
    np.testing.assert_array_equal(small.y_test, large.y_test)
    # Nested training sets (noise included): a learning curve over n_train adds examples.
    np.testing.assert_array_equal(small.x_train, large.x_train[:50])
    np.testing.assert_array_equal(small.y_train, large.y_train[:50])


def test_gaussian_regression_is_linear_with_gaussian_noise():
    clean = data.gaussian_regression(seed=1, n_train=400, n_test=100, d_in=6)
    assert clean.y_train.shape == (400, 1) and clean.x_train.shape == (400, 6)
    assert clean.num_classes is None
    assert _lstsq_residual(clean.x_train, clean.y_train) < 1e-6
    # ||w*||^2 / d ~ 1: the signal variance is O(1).
    assert 0.1 < clean.y_train.var() < 5
    noisy = data.gaussian_regression(seed=1, n_train=400, n_test=100, d_in=6, noise_std=0.3)
    np.testing.assert_array_equal(noisy.y_test, clean.y_test)
    assert abs((noisy.y_train - clean.y_train).std() - 0.3) < 0.05


def test_sinusoid_regression():
    ds = data.sinusoid_regression(seed=0, n_train=64, n_test=32, frequency=3.0,
                                  x_range=(-1.0, 2.0))
    assert ds.x_train.shape == (64, 1) and ds.y_train.shape == (64, 1)
    assert ds.x_train.min() >= -1.0 and ds.x_train.max() <= 2.0
    np.testing.assert_allclose(ds.y_train, np.sin(3.0 * ds.x_train.astype(np.float64)),
                               atol=1e-6)
    np.testing.assert_allclose(ds.y_test, np.sin(3.0 * ds.x_test.astype(np.float64)), atol=1e-6)
    noisy = data.sinusoid_regression(seed=0, n_train=64, n_test=32, frequency=3.0,
                                     x_range=(-1.0, 2.0), noise_std=0.1)
    np.testing.assert_array_equal(noisy.y_test, ds.y_test)
    assert not np.array_equal(noisy.y_train, ds.y_train)


def test_sinusoid_default_range():
    ds = data.sinusoid_regression()
    assert ds.x_train.min() >= -math.pi and ds.x_train.max() <= math.pi
    assert ds.input_spec.shape == (1, 1)


@pytest.mark.parametrize("fn, kwargs, match", [
    (data.teacher_student, dict(activation="gelu"), "activation must be one of"),
    (data.teacher_student, dict(n_train=0), "n_train must be an integer >= 1"),
    (data.teacher_student, dict(hidden=-3), "hidden"),
    (data.teacher_student, dict(noise_std=-1.0), "noise_std"),
    (data.gaussian_regression, dict(d_in=0), "d_in"),
    (data.gaussian_regression, dict(noise_std=float("nan")), "noise_std"),
    (data.sinusoid_regression, dict(x_range=(1.0, 1.0)), "x_range"),
    (data.sinusoid_regression, dict(x_range=(0.0,)), "x_range"),
    (data.sinusoid_regression, dict(n_test=0), "n_test"),
    (data.sparse_parity, dict(n_bits=3, k=4), "k must be <= n_bits"),
    (data.sparse_parity, dict(k=0), "k must be"),
    (data.sparse_parity, dict(n_train=1.5), "n_train"),
])
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(**kwargs)


# ---------------------------------------------------------------------------------------------
# sparse parity


def _consistent_subsets(x, y, n_bits, k):
    bits = (x < 0).astype(np.int64)  # -1 -> 1
    return [s for s in itertools.combinations(range(n_bits), k)
            if np.array_equal(bits[:, list(s)].sum(axis=1) % 2, y)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bits, k", [(8, 3), (6, 1), (7, 4)])
def test_sparse_parity_has_exactly_one_consistent_support(n_bits, k, seed):
    ds = data.sparse_parity(n_bits=n_bits, k=k, n_train=300, n_test=100, seed=seed)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.x_train)) == {-1.0, 1.0}
    assert ds.num_classes == 2
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    support = _consistent_subsets(x, y, n_bits, k)
    assert len(support) == 1
    # The train split alone already pins the support, and the test split agrees with it.
    assert _consistent_subsets(ds.x_train, ds.y_train, n_bits, k) == support
    # Labels are balanced for k >= 1 (parity of uniform bits).
    assert 0.4 < y.mean() < 0.6


def test_sparse_parity_support_depends_on_seed_only():
    supports = set()
    for seed in range(6):
        a = data.sparse_parity(n_bits=8, k=3, n_train=200, n_test=10, seed=seed)
        b = data.sparse_parity(n_bits=8, k=3, n_train=400, n_test=10, seed=seed)
        np.testing.assert_array_equal(a.x_test, b.x_test)
        (s,) = _consistent_subsets(a.x_train, a.y_train, 8, 3)
        assert _consistent_subsets(b.x_train, b.y_train, 8, 3) == [s]
        supports.add(s)
    assert len(supports) > 1
