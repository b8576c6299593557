"""The scanned training loop against a Python loop of steps; segments, periodic eval, batches."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train

N_DATA, D, C, B = 24, 5, 2, 6


def _data(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_DATA, D)).astype(dtype)
    y = rng.normal(size=(N_DATA, C)).astype(dtype)
    return x, y


class Setup:
    """A tiny MLP trained with momentum on minibatches; the compiled step is shared by the tests."""

    def __init__(self, dtype):
        self.x, self.y = _data(dtype)
        self.model = nn.serial(nn.Dense(8), nn.Tanh(), nn.Dense(C))
        self.opt = optax.sgd(0.1, momentum=0.9)
        self.step = train.make_step(self.model.apply_with_state, train.mse, self.opt,
                                    metrics_fn=lambda out, y: {"out_mean": jnp.mean(out)})
        self.jit_step = jax.jit(self.step)
        spec = jax.ShapeDtypeStruct((1, D), dtype)
        self.state = jax.jit(lambda k: train.init(self.model, self.opt, k, spec))(jax.random.key(0))
        self.jit_train = jax.jit(train.train, static_argnums=(1, 2, 3), static_argnames=("eval_every", "eval_fn"))

    def batch_fn(self, key, step):
        return data.get_batch(key, step, self.x, self.y, B)

    def manual(self, state, n):
        """n steps in a Python loop, batches from data.get_batch at the global step."""
        metrics = []
        for _ in range(n):
            batch = data.get_batch(train.data_key(state), int(state.step), self.x, self.y, B)
            state, m = self.jit_step(state, batch)
            metrics.append(m)
        return state, jax.tree.map(lambda *a: np.stack(a), *metrics)

    def full_loss(self, params):
        return train.mse(self.model.apply(params, self.x), self.y)

    def full_loss_np(self, params):
        """The full-data loss in NumPy (tanh MLP written out)."""
        (l1, _, l2) = params
        h = np.tanh(self.x @ np.asarray(l1["W"]) + np.asarray(l1["b"]))
        return 0.5 * np.mean((h @ np.asarray(l2["W"]) + np.asarray(l2["b"]) - self.y) ** 2)


@pytest.fixture(scope="module")
def setup64():
    assert jax.config.jax_enable_x64, "float64 tests run with JAX_ENABLE_X64=1"
    return Setup(np.float64)


@pytest.fixture(scope="module")
def setup32():
    return Setup(np.float32)


TOL = dict(rtol=1e-12, atol=1e-14)


def _same_keys(a, b):
    np.testing.assert_array_equal(jax.random.key_data(a.key), jax.random.key_data(b.key))


@pytest.mark.float64
def test_scan_equals_python_loop(setup64):
    s = setup64
    n = 6
    got, metrics = s.jit_train(s.state, s.step, s.batch_fn, n)
    want, want_metrics = s.manual(s.state, n)
    chex.assert_trees_all_close(got.params, want.params, **TOL)
    chex.assert_trees_all_close(got.opt_state, want.opt_state, **TOL)
    assert int(got.step) == n
    _same_keys(got, s.state)
    assert metrics["train"]["loss"].shape == (n,)
    chex.assert_trees_all_close(metrics["train"], want_metrics, **TOL)
    # training went somewhere: not a no-op
    assert not np.allclose(got.params[0]["W"], s.state.params[0]["W"])


@pytest.mark.float64
def test_segments_equal_one_run(setup64):
    """Resume property: train(n) then train(n) from the result == train(2n)."""
    s = setup64
    n = 6  # 2n = 12 steps cross epoch boundaries (4 batches per epoch)
    mid, m1 = s.jit_train(s.state, s.step, s.batch_fn, n)
    end, m2 = s.jit_train(mid, s.step, s.batch_fn, n)
    once, m = s.jit_train(s.state, s.step, s.batch_fn, 2 * n)
    chex.assert_trees_all_close(end.params, once.params, **TOL)
    chex.assert_trees_all_close(end.opt_state, once.opt_state, **TOL)
    assert int(end.step) == int(once.step) == 2 * n
    joined = jax.tree.map(lambda a, b: np.concatenate([a, b]), m1["train"], m2["train"])
    chex.assert_trees_all_close(joined, m["train"], **TOL)


@pytest.mark.float64
def test_eval_runs_after_each_block(setup64):
    s = setup64
    k, n = 3, 6
    state, metrics = s.jit_train(s.state, s.step, s.batch_fn, n, eval_every=k,
                                 eval_fn=lambda st: {"step": st.step, "loss": s.full_loss(st.params)})
    np.testing.assert_array_equal(metrics["eval"]["step"], [3, 6])
    assert metrics["train"]["loss"].shape == (n,) and metrics["train"]["out_mean"].shape == (n,)
    # the eval losses are those of the states a Python loop reaches after steps 3, 6, 9
    cur, want_train = s.state, []
    for i in range(n // k):
        cur, m = s.manual(cur, k)
        want_train.append(m)
        np.testing.assert_allclose(metrics["eval"]["loss"][i], s.full_loss_np(cur.params), rtol=1e-12)
    chex.assert_trees_all_close(metrics["train"], jax.tree.map(lambda *a: np.concatenate(a), *want_train),
                                **TOL)
    chex.assert_trees_all_close(state.params, cur.params, **TOL)


@pytest.mark.float64
def test_resumed_state_continues_the_batch_order(setup64):
    """Batches come from data.get_batch(data_key(state), global step): steps 5.. after a resume."""
    s = setup64

    def record(state, batch):
        return state._replace(step=state.step + 1), {"x": batch[0], "y": batch[1]}

    start = s.state._replace(step=jnp.int32(5))
    end, metrics = s.jit_train(start, record, s.batch_fn, 6)
    assert int(end.step) == 11
    for t in range(6):
        xb, yb = data.get_batch(train.data_key(s.state), 5 + t, s.x, s.y, B)
        np.testing.assert_array_equal(metrics["train"]["x"][t], xb)
        np.testing.assert_array_equal(metrics["train"]["y"][t], yb)


def test_eval_every_returns_steps(setup32):
    n, k = 4, 1
    s = setup32
    state, metrics = s.jit_train(s.state, s.step, s.batch_fn, n, eval_every=k, eval_fn=lambda st: st.step)
    np.testing.assert_array_equal(metrics["eval"], np.arange(k, n + 1, k))
    assert metrics["train"]["loss"].shape == (n,)
    assert metrics["train"]["loss"].dtype == jnp.float32
    assert int(state.step) == n


def test_batches_match_get_batch(setup32):
    s = setup32

    def record(state, batch):
        return state._replace(step=state.step + 1), {"x": batch[0], "y": batch[1]}

    n = 9  # more than one epoch of N_DATA // B = 4 batches
    _, metrics = train.train(s.state, record, s.batch_fn, n)
    for t in range(n):
        xb, yb = data.get_batch(train.data_key(s.state), t, s.x, s.y, B)
        np.testing.assert_array_equal(metrics["train"]["x"][t], xb)
        np.testing.assert_array_equal(metrics["train"]["y"][t], yb)
    # each epoch visits every example once
    seen = np.asarray(metrics["train"]["x"][:4]).reshape(N_DATA, D)
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(s.x, axis=0))


def test_zero_steps_is_identity(setup32):
    s = setup32
    state, metrics = train.train(s.state, s.step, s.batch_fn, 0)
    chex.assert_trees_all_equal(state.params, s.state.params)
    assert int(state.step) == 0
    assert metrics["train"]["loss"].shape == (0,)


@pytest.mark.parametrize("num_steps", [-1, 2.0, True, "3", None])
def test_bad_num_steps(setup32, num_steps):
    s = setup32
    with pytest.raises(ValueError, match="num_steps"):
        train.train(s.state, s.step, s.batch_fn, num_steps)


@pytest.mark.parametrize("every", [0, -2, 1.5, True])
def test_bad_eval_every(setup32, every):
    s = setup32
    with pytest.raises(ValueError, match="eval_every"):
        train.train(s.state, s.step, s.batch_fn, 4, eval_every=every, eval_fn=lambda st: st.step)


def test_num_steps_not_a_multiple_of_eval_every(setup32):
    s = setup32
    with pytest.raises(ValueError, match=r"num_steps \(10\) must be a multiple of eval_every \(3\)"):
        train.train(s.state, s.step, s.batch_fn, 10, eval_every=3, eval_fn=lambda st: st.step)


@pytest.mark.parametrize("kw, name", [({"eval_every": 2}, "eval_fn"), ({"eval_fn": lambda st: st.step}, "eval_every")])
def test_eval_every_and_eval_fn_go_together(setup32, kw, name):
    s = setup32
    with pytest.raises(ValueError, match=name):
        train.train(s.state, s.step, s.batch_fn, 4, **kw)
