"""Real datasets (digits, mnist1d, .npz) and the ``load`` registry."""
import random

import numpy as np
import pytest

from jaxlearn import data
from jaxlearn.data import real

# ---------------------------------------------------------------------------------------------
# digits


@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_digits_shapes_and_range(test_fraction):
    ds = data.digits(seed=0, test_fraction=test_fraction)
    n_test = round(test_fraction * 1797)
    assert ds.x_train.shape == (1797 - n_test, 64) and ds.x_test.shape == (n_test, 64)
    assert ds.y_train.shape == (1797 - n_test,) and ds.y_test.shape == (n_test,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    x = np.concatenate([ds.x_train, ds.x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # pixels are k/16
    assert ds.num_classes == 10 and ds.name == "digits"
    assert set(np.unique(ds.y_train)) == set(range(10))
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert ds.input_spec.shape == (1, 64) and ds.input_spec.dtype == np.float32
    arrays = ds.arrays()  # the four splits as jax arrays, named, values and dtypes unchanged
    assert isinstance(arrays, data.Arrays) and arrays._fields == ("x_train", "y_train", "x_test", "y_test")
    for name in arrays._fields:
        got, want = getattr(arrays, name), getattr(ds, name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), want)
    assert arrays.input_spec == ds.input_spec


def test_digits_are_scikit_learns_without_importing_it():
    """The bundled file read directly gives load_digits' arrays exactly, and the split is the
    documented permutation of them; scikit-learn is not imported to read it (a fresh process)."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ds = data.digits(seed=3)
    perm = np.random.default_rng(3).permutation(len(y))
    n_test = round(0.2 * len(y))
    np.testing.assert_array_equal(ds.x_test, (x[perm[:n_test]] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(ds.x_train, (x[perm[n_test:]] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([ds.y_test, ds.y_train]), y[perm])
    code = "import sys; from jaxlearn import data; data.digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_digits_seed():
    a, b, c = data.digits(seed=0), data.digits(seed=0), data.digits(seed=1)
    for u, v in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.x_train, c.x_train)
    # Same examples overall, only the order / split differs.
    rows = lambda ds: sorted(map(bytes, np.concatenate([ds.x_train, ds.x_test])))  # noqa: E731
    assert rows(a) == rows(c)


@pytest.mark.parametrize("kwargs, match", [
    (dict(test_fraction=0.0), "test_fraction"),
    (dict(test_fraction=1.0), "test_fraction"),
    (dict(seed=-1), "seed"),
])
def test_digits_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.digits(**kwargs)


# ---------------------------------------------------------------------------------------------
# mnist1d


def test_mnist1d_default_shapes_and_memoized():
    ds = data.mnist1d()
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10
    assert set(np.unique(ds.y_train)) == set(range(10))
    # The generator standardises the whole dataset.
    x = np.concatenate([ds.x_train, ds.x_test])
    assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-3
    again = data.mnist1d(num_samples=5000, seed=42)
    for a, b in zip(ds[:4], again[:4]):
        np.testing.assert_array_equal(a, b)
        assert not a.flags.writeable
    with pytest.raises(ValueError):
        again.x_train[0, 0] = 1.0


def test_mnist1d_leaves_global_rng_state_unchanged():
    # Arguments no other test uses; the memo is not cleared, so that the other tests' 5000-example
    # set is not generated a second time in this process.
    misses = real._mnist1d_cached.cache_info().misses
    np.random.seed(1234)
    random.seed(5678)
    np_before, py_before = np.random.get_state(), random.getstate()
    ds = data.mnist1d(num_samples=200, seed=7)
    np_after, py_after = np.random.get_state(), random.getstate()
    assert real._mnist1d_cached.cache_info().misses == misses + 1  # the generator really ran
    assert np_before[0] == np_after[0]
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert py_before == py_after
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    other = data.mnist1d(num_samples=200, seed=8)
    assert not np.array_equal(ds.x_train, other.x_train)


def test_mnist1d_bad_args():
    with pytest.raises(ValueError, match="num_samples"):
        data.mnist1d(num_samples=5)


# ---------------------------------------------------------------------------------------------
# npz


def _arrays(rng, n_train=12, n_test=5):
    return dict(
        x_train=rng.normal(size=(n_train, 3, 2)),  # float64 on disk -> float32
        y_train=rng.integers(0, 4, size=n_train),  # int64 on disk -> int32
        x_test=rng.normal(size=(n_test, 3, 2)),
        y_test=rng.integers(0, 4, size=n_test),
    )


def test_npz_round_trip(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    path = tmp_path / "toy.npz"
    np.savez(path, **arrays, num_classes=np.int64(6))
    ds = data.from_npz(path)
    assert ds.name == "toy" and ds.num_classes == 6
    for key in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(ds, key)
        assert got.dtype == (np.float32 if key.startswith("x") else np.int32)
        np.testing.assert_array_equal(got, arrays[key].astype(got.dtype))
    assert ds.input_spec.shape == (1, 3, 2)
    assert data.from_npz(str(path), name="other").name == "other"


def test_npz_num_classes_absent(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _arrays(rng)
    np.savez(tmp_path / "cls.npz", **arrays)
    expected = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    assert data.from_npz(tmp_path / "cls.npz").num_classes == expected
    arrays["y_train"] = rng.normal(size=(12, 1))
    arrays["y_test"] = rng.normal(size=(5, 1))
    np.savez(tmp_path / "reg.npz", **arrays)
    ds = data.from_npz(tmp_path / "reg.npz")
    assert ds.num_classes is None and ds.y_train.dtype == np.float32


def test_npz_missing_keys(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    del arrays["y_test"], arrays["x_train"]
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="broken.npz") as err:
        data.from_npz(path)
    assert "'x_train'" in str(err.value) and "'y_test'" in str(err.value)
    assert "'y_train'" not in str(err.value).split("(found")[0]


@pytest.mark.parametrize("edit, match", [
    (dict(y_train=np.zeros(11, np.int64)), "same leading"),
    (dict(x_test=np.zeros((5, 2, 2))), "differ per example"),
    (dict(num_classes=np.int64(2)), r"must lie in \[0, 2\)"),
    (dict(num_classes=np.array([4])), "0-d positive integer"),
    (dict(x_train=np.array(["a"] * 12)), "dtype"),
])
def test_npz_invalid(tmp_path, edit, match):
    arrays = {**_arrays(np.random.default_rng(0)), **edit}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        data.from_npz(tmp_path / "bad.npz")


# ---------------------------------------------------------------------------------------------
# load


def test_load_every_registered_name(tmp_path):
    np.savez(tmp_path / "user.npz", **_arrays(np.random.default_rng(0)))
    kwargs = {
        "digits": dict(seed=1),
        "mnist1d": dict(num_samples=100, seed=3),
        "modular_arithmetic": dict(p=5, op="*"),
        "teacher_student": dict(n_train=10, n_test=5, d_in=3, hidden=4),
        "sparse_parity": dict(n_bits=6, k=2, n_train=10, n_test=5),
        "gaussian_regression": dict(n_train=10, n_test=5, d_in=3),
        "sinusoid_regression": dict(n_train=10, n_test=5),
        "npz": dict(path=tmp_path / "user.npz"),
    }
    assert set(kwargs) == set(data.available_datasets())
    for name, kw in kwargs.items():
        ds = data.load(name, **kw)
        assert isinstance(ds, data.Dataset)
        assert ds.name == ("user" if name == "npz" else name)
        direct = {"npz": data.from_npz}.get(name) or getattr(data, name)
        for a, b in zip(ds[:4], direct(**kw)[:4]):
            np.testing.assert_array_equal(a, b)


def test_load_unknown_name():
    with pytest.raises(ValueError, match="did you mean 'digits'") as err:
        data.load("digts")
    message = str(err.value)
    assert "\n" not in message and "Available:" in message and "mnist1d" in message
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        data.load("cifar10")


def test_load_bad_kwargs():
    with pytest.raises(TypeError, match="'sede'.*seed"):
        data.load("digits", sede=3)
    with pytest.raises(TypeError, match="'npz'.*path"):
        data.load("npz")
