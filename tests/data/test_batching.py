"""Pure (key, step) batching: epochs are permutations, reproducible, jit/vmap-safe."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import data


def _epoch(key, epoch, n, b):
    spe = n // b
    return np.concatenate([np.asarray(data.batch_indices(key, epoch * spe + s, n, b))
                           for s in range(spe)])


@pytest.mark.parametrize("n, b", [(12, 3), (64, 16), (7, 1)])
def test_epoch_is_a_permutation(key, n, b):
    order = _epoch(key, 0, n, b)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    assert data.batch_indices(key, 0, n, b).dtype == jnp.int32
    assert data.batch_indices(key, 0, n, b).shape == (b,)


def test_partial_last_batch_dropped(key):
    n, b = 100, 7
    spe = n // b
    order = _epoch(key, 0, n, b)
    assert len(order) == spe * b and len(set(order.tolist())) == spe * b
    # Step spe starts epoch 1, a fresh order whose batches are again disjoint.
    order1 = _epoch(key, 1, n, b)
    assert len(set(order1.tolist())) == spe * b
    assert not np.array_equal(order[:b], order1[:b])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 100, 1437, 4096, 5001])
def test_permute_index_is_a_bijection(key, n):
    out = np.asarray(data.permute_index(key, jnp.arange(n), n))
    np.testing.assert_array_equal(np.sort(out), np.arange(n))


@pytest.mark.parametrize("n", [10, 100])
def test_permute_index_positions_are_uniform(n):
    # Where example 0 lands over many keys: every position of [0, n) about equally often.
    trials = 20000
    keys = jax.random.split(jax.random.key(3), trials)
    pos = np.asarray(jax.vmap(lambda k: jnp.argmax(data.permute_index(k, jnp.arange(n), n) == 0))(keys))
    counts = np.bincount(pos, minlength=n)
    expected = trials / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, counts)  # six standard deviations


def test_epochs_differ_and_steps_reproduce(key):
    n, b = 32, 8
    e0, e1, e2 = (_epoch(key, e, n, b) for e in range(3))
    assert not np.array_equal(e0, e1) and not np.array_equal(e1, e2)
    np.testing.assert_array_equal(np.sort(e1), np.arange(n))
    np.testing.assert_array_equal(data.batch_indices(key, 5, n, b),
                                  data.batch_indices(key, 5, n, b))
    other = _epoch(jax.random.key(1), 0, n, b)
    assert not np.array_equal(e0, other)


def test_jit_with_traced_step(key):
    n, b = 20, 4
    f = jax.jit(data.batch_indices, static_argnames=("num_examples", "batch_size"))
    for step in [0, 3, 4, 5, 13]:
        np.testing.assert_array_equal(f(key, jnp.int32(step), num_examples=n, batch_size=b),
                                      data.batch_indices(key, step, n, b))

    def scan_body(carry, step):
        return carry, data.batch_indices(key, step, n, b)

    _, idx = jax.lax.scan(scan_body, None, jnp.arange(10))
    expected = np.concatenate([_epoch(key, 0, n, b), _epoch(key, 1, n, b)])
    np.testing.assert_array_equal(idx.reshape(-1), expected)


def test_vmap_over_keys(key):
    n, b = 16, 4
    keys = jax.random.split(key, 5)
    one = lambda k: data.batch_indices(k, 6, n, b)  # noqa: E731
    got = np.asarray(jax.jit(jax.vmap(one))(keys))
    assert got.shape == (5, b)
    one_at_a_time = np.asarray(jax.jit(lambda ks: jax.lax.map(one, ks))(keys))
    np.testing.assert_array_equal(got, one_at_a_time)
    assert len({tuple(r) for r in got.tolist()}) > 1


def test_raw_uint32_key():
    raw = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(np.sort(_epoch(raw, 0, 9, 3)), np.arange(9))


@pytest.mark.parametrize("batch_size", [None, 10])
def test_full_batch_in_order(key, batch_size):
    for step in [0, 1, 7]:
        np.testing.assert_array_equal(data.batch_indices(key, step, 10, batch_size),
                                      np.arange(10))
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    xb, yb = data.get_batch(key, 3, x, y, batch_size)
    np.testing.assert_array_equal(xb, x)
    np.testing.assert_array_equal(yb, y)


def test_get_batch_gathers_pytrees(key):
    n, b = 12, 4
    x = {"a": np.arange(n * 3, dtype=np.float32).reshape(n, 3), "b": np.arange(n) * 10}
    y = jnp.arange(n, dtype=jnp.int32)
    f = jax.jit(data.get_batch, static_argnames="batch_size")
    xb, yb = f(key, jnp.int32(5), x, y, batch_size=b)
    idx = np.asarray(data.batch_indices(key, 5, n, b))
    np.testing.assert_array_equal(xb["a"], x["a"][idx])
    np.testing.assert_array_equal(xb["b"], x["b"][idx])
    np.testing.assert_array_equal(yb, idx)
    assert xb["a"].dtype == jnp.float32 and yb.dtype == jnp.int32


def test_get_batch_on_dataset(key):
    ds = data.digits()
    xb, yb = data.get_batch(key, 0, ds.x_train, ds.y_train, 32)
    assert xb.shape == (32, 64) and yb.shape == (32,)


@pytest.mark.parametrize("n, b, match", [
    (0, 1, "num_examples"),
    (10, 0, "batch_size"),
    (10, 11, "batch_size must be <= num_examples"),
    (10.0, 2, "num_examples must be an integer"),
    (10, 2.5, "batch_size must be an integer"),
    (10, True, "batch_size must be an integer"),
])
def test_batch_indices_validation(key, n, b, match):
    with pytest.raises(ValueError, match=match):
        data.batch_indices(key, 0, n, b)


def test_bad_step_and_mismatched_leading_axes(key):
    with pytest.raises(ValueError, match="step must be >= 0"):
        data.batch_indices(key, -1, 10, 2)
    with pytest.raises(ValueError, match="step must be an integer"):
        data.batch_indices(key, 1.5, 10, 2)
    with pytest.raises(ValueError, match="leading"):
        data.get_batch(key, 0, np.zeros((10, 2)), np.zeros(9), 2)


@pytest.mark.float64
def test_indices_int32_and_dtypes_kept_in_x64(key):
    assert data.batch_indices(key, jnp.int64(3), 10, 2).dtype == jnp.int32
    xb, _ = data.get_batch(key, 3, np.zeros((10, 2)), np.zeros(10), 2)
    assert xb.dtype == jnp.float64


@pytest.mark.parametrize("n, max_rows, blocks", [(10, 4, (3, 4)), (12, 4, (3, 4)), (7, 3, (3, 3)), (5, 9, (1, 5)),
                                                 (2000, 524, (4, 500))])
def test_split_rows_even_blocks_and_merge_inverts(n, max_rows, blocks):
    assert data.row_blocks(n, max_rows) == blocks
    a = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
    split = jax.jit(data.split_rows, static_argnums=1)(a, max_rows)
    num, rows = blocks
    assert split.shape == (num, rows, 2) and rows <= max_rows
    flat = np.asarray(split).reshape(num * rows, 2)
    np.testing.assert_array_equal(flat[:n], a)
    np.testing.assert_array_equal(flat[n:], np.broadcast_to(a[-1], (num * rows - n, 2)))  # padding: the last row
    np.testing.assert_array_equal(data.merge_rows(split, n), a)
