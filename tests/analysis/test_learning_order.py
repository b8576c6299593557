"""Learning-order statistics against brute-force Python loops over random bool histories and hand-made
edge cases; correctness against a NumPy forward pass; the history recorded inside ``train.train``'s
scan against snapshots from a Python loop of single steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train
from jaxlearn.analysis import learning_order as L

D, C = 4, 3
MODEL = nn.serial(nn.Dense(8), nn.Tanh(), nn.Dense(C))
# the model's parameter shapes, by tracing only (jitted random init compiles slowly on CPU)
SHAPES, MODEL_STATE = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float32)))
assert not jax.tree.leaves(MODEL_STATE)  # stateless: the structure is the state
# the statistics are dtype-free: run them in both processes (int32 results also under jax_enable_x64)
BOTH = [pytest.param("x32"), pytest.param("x64", marks=pytest.mark.float64)]


def _stats(history, check_every=3, first_step=2):
    return {"first": L.first_learned_step(history, check_every=check_every, first_step=first_step),
            "first_stay": L.first_learned_step(history, check_every=check_every, first_step=first_step, stay=True),
            "forget": L.forgetting_events(history), "learn": L.learning_events(history),
            "unforgettable": L.unforgettable(history), "never": L.never_learned(history)}


STATS = jax.jit(_stats, static_argnames=("check_every", "first_step"))


def _brute(history, check_every=3, first_step=2):
    """The definitions, one example and one check at a time."""
    out = {k: [] for k in ("first", "first_stay", "forget", "learn", "unforgettable", "never")}
    steps, n = history.shape
    for i in range(n):
        col = [bool(v) for v in history[:, i]]
        first = next((t for t in range(steps) if col[t]), None)
        stay = next((t for t in range(steps) if all(col[t:])), None)
        out["first"].append(-1 if first is None else first_step + first * check_every)
        out["first_stay"].append(-1 if stay is None else first_step + stay * check_every)
        forget = sum(1 for t in range(steps - 1) if col[t] and not col[t + 1])
        out["forget"].append(forget)
        out["learn"].append(sum(1 for t in range(steps - 1) if not col[t] and col[t + 1]))
        out["unforgettable"].append(first is not None and forget == 0)
        out["never"].append(first is None)
    return {k: np.array(v) for k, v in out.items()}


def _check(got, want):
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert got[k].dtype == (jnp.bool_ if k in ("unforgettable", "never") else jnp.int32), k


def _histories(shape, seed):
    """Random histories: independent flips and noisy learning curves (mostly wrong, then mostly right)."""
    rng = np.random.default_rng(seed)
    steps, n = shape
    flips = rng.random(shape) < rng.uniform(0.2, 0.8)
    onset = rng.integers(0, steps + 1, n)
    curve = (np.arange(steps)[:, None] >= onset) ^ (rng.random(shape) < 0.15)
    return flips, curve


@pytest.mark.parametrize("mode", BOTH)
@pytest.mark.parametrize("shape", [(1, 6), (2, 5), (12, 9)])
def test_statistics_match_brute_force(shape, mode):
    for history in _histories(shape, seed=shape[0]):
        _check(STATS(history), _brute(history))
        _check(STATS(history, check_every=1, first_step=0), _brute(history, 1, 0))


@pytest.mark.parametrize("mode", BOTH)
def test_edge_cases_by_hand(mode):
    always = np.ones((5, 3), bool)
    _check(STATS(always, check_every=1, first_step=0),
           {"first": [0, 0, 0], "first_stay": [0, 0, 0], "forget": [0, 0, 0], "learn": [0, 0, 0],
            "unforgettable": [True] * 3, "never": [False] * 3})
    never = np.zeros((5, 2), bool)
    _check(STATS(never), {"first": [-1, -1], "first_stay": [-1, -1], "forget": [0, 0], "learn": [0, 0],
                          "unforgettable": [False, False], "never": [True, True]})
    # columns: F T F T T | T T T F F | F F F T T
    history = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 0, 1], [1, 0, 1]], bool)
    _check(STATS(history, check_every=10, first_step=10),
           {"first": [20, 10, 40], "first_stay": [40, -1, 40], "forget": [1, 1, 0], "learn": [2, 0, 1],
            "unforgettable": [False, False, True], "never": [False, False, False]})


def test_statistics_vmap_over_runs():
    runs = np.stack([_histories((7, 5), seed)[seed % 2] for seed in range(4)])
    got = jax.jit(jax.vmap(_stats))(runs)
    for r in range(len(runs)):
        _check(jax.tree.map(lambda a: a[r], got), _brute(runs[r]))


# -- correctness ------------------------------------------------------------------------------------------------

def _numpy_outputs(params, x):
    (l1, _, l2) = params
    return np.tanh(x @ np.asarray(l1["W"]) + np.asarray(l1["b"])) @ np.asarray(l2["W"]) + np.asarray(l2["b"])


def _params(seed, dtype):
    """NumPy weights ~ N(0, 1/fan_in), biases ~ N(0, 1/4), in MODEL's structure."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.normal(size=s.shape) * (s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.5))
                        .astype(dtype), SHAPES)


def _setup(dtype, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(dtype)
    y = rng.integers(0, C, n).astype(np.int32)
    return _params(seed, dtype), x, y


@pytest.mark.float64
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 4, 9, 20])
@pytest.mark.parametrize("targets", ["int", "one_hot", "one_hot_int", "probabilities"])
def test_correctness_against_numpy_argmax(targets, chunk_size):
    params, x, y = _setup(np.float64, 9, seed=1)
    want = np.array([np.argmax(row) == label for row, label in zip(_numpy_outputs(params, x), y)])
    assert 0 < want.sum() < len(y)  # some right, some wrong
    t = {"int": y, "one_hot": np.eye(C)[y], "one_hot_int": np.eye(C, dtype=np.int32)[y],
         "probabilities": 0.1 + 0.6 * np.eye(C)[y]}[targets]
    got = jax.jit(lambda p: L.correctness(MODEL.apply, p, x, t, chunk_size=chunk_size))(params)
    assert got.dtype == jnp.bool_ and got.shape == (9,)
    np.testing.assert_array_equal(got, want)


def test_correctness_jit_vmap_over_seeds():
    _, x, y = _setup(np.float32, 7)
    seeds = jax.tree.map(lambda *a: np.stack(a), *[_params(s, np.float32) for s in range(3, 7)])
    got = jax.jit(jax.vmap(lambda p: L.correctness(MODEL.apply, p, x, y, chunk_size=3)))(seeds)
    assert got.shape == (4, 7) and got.dtype == jnp.bool_
    for s in range(4):
        p = jax.tree.map(lambda a: a[s], seeds)
        np.testing.assert_array_equal(got[s], np.argmax(_numpy_outputs(p, x), axis=1) == y)


# -- tracking inside train.train ----------------------------------------------------------------------------------

N_TRACK, B, K, STEPS = 16, 8, 2, 12


def _training(dtype):
    params, x, y = _setup(dtype, N_TRACK, seed=2)
    opt = optax.sgd(0.5)
    step = train.make_step(MODEL.apply_with_state, train.softmax_cross_entropy, opt)
    state = train.TrainState(params, opt.init(params), MODEL_STATE, jnp.zeros((), jnp.int32), jax.random.key(4))

    def batch_fn(key, s):
        return data.get_batch(key, s, x, y, B)

    return x, y, step, state, batch_fn


@pytest.mark.float64
def test_history_recorded_in_the_scan_equals_python_loop_snapshots():
    x, y, step, state, batch_fn = _training(np.float64)
    eval_fn = L.correctness_eval_fn(MODEL.apply, x, y, chunk_size=5)
    _, metrics = jax.jit(lambda s: train.train(s, step, batch_fn, STEPS, eval_every=K, eval_fn=eval_fn))(state)
    history = np.asarray(metrics["eval"])
    assert history.shape == (STEPS // K, N_TRACK) and history.dtype == bool
    jit_step, cur, want = jax.jit(step), state, []
    for t in range(STEPS):  # ground truth: one step at a time, correctness of each snapshot in NumPy
        cur, _ = jit_step(cur, data.get_batch(train.data_key(cur), int(cur.step), x, y, B))
        if (t + 1) % K == 0:
            want.append(np.argmax(_numpy_outputs(cur.params, x), axis=1) == y)
    want = np.array(want)
    np.testing.assert_array_equal(history, want)
    assert np.any(want[1:] != want[:-1])  # training changed which examples are right
    steps = L.first_learned_step(history, check_every=K, first_step=K)
    np.testing.assert_array_equal(steps, _brute(want, K, K)["first"])


def test_eval_fn_jit_vmap_over_states_with_and_without_model_state():
    _, x, y = _setup(np.float32, N_TRACK, seed=2)
    seeds = jax.tree.map(lambda *a: np.stack(a), *[_params(s, np.float32) for s in range(3)])
    states = train.TrainState(seeds, (), MODEL_STATE, jnp.zeros((), jnp.int32), jax.random.key(0))
    plain = L.correctness_eval_fn(MODEL.apply, x, y)
    stateful = L.correctness_eval_fn(MODEL.apply, x, y, chunk_size=3, with_model_state=True)
    axes = train.TrainState(0, None, None, None, None)
    got_plain, got_stateful = jax.jit(jax.vmap(lambda s: (plain(s), stateful(s)), in_axes=(axes,)))(states)
    assert got_plain.shape == (3, N_TRACK) and got_plain.dtype == jnp.bool_
    for s in range(3):
        want = np.argmax(_numpy_outputs(jax.tree.map(lambda a: a[s], seeds), x), axis=1) == y
        np.testing.assert_array_equal(got_plain[s], want)
        np.testing.assert_array_equal(got_stateful[s], want)


@pytest.mark.parametrize("make, match", [
    (lambda: L.forgetting_events(np.zeros((3, 4))), r"^history: expected a bool array .* got float"),
    (lambda: L.learning_events(np.zeros(4, bool)), r"^history: expected a bool array .*\[4\]$"),
    (lambda: L.unforgettable(np.zeros((2, 3, 4), bool)), r"^history: expected a bool array"),
    (lambda: L.never_learned(np.zeros((0, 4), bool)), "^history: expected at least one check, got 0 rows$"),
    (lambda: L.first_learned_step(np.zeros((3, 4), bool), check_every=0), "^check_every must be an integer >= 1"),
    (lambda: L.first_learned_step(np.zeros((3, 4), bool), first_step=-1), "^first_step must be an integer >= 0"),
    (lambda: L.first_learned_step(np.zeros((3, 4), bool), stay="yes"), "^stay: expected a bool, got 'yes'$"),
    (lambda: L.correctness(MODEL.apply, _setup(np.float32, 5)[0], np.zeros((5, D)), np.zeros(5)),
     r"^y: expected integer labels \(5,\) or one-hot/probability targets \(5, C\), got float"),
    (lambda: L.correctness(MODEL.apply, _setup(np.float32, 5)[0], np.zeros((5, D)), np.zeros((5, C + 1))),
     r"^apply_fn: expected outputs \(5, 4\) \(examples, classes\), got shape \(5, 3\)$"),
    (lambda: L.correctness(lambda p, x: x[..., None], None, np.zeros((5, D)), np.zeros(5, np.int32)),
     r"^apply_fn: expected outputs \(5, C\)"),
    (lambda: L.correctness(MODEL.apply, _setup(np.float32, 5)[0], np.zeros((5, D)), np.zeros(5, np.int32),
                           chunk_size=0), "^chunk_size must be an integer >= 1, got 0$"),
    (lambda: L.correctness_eval_fn(MODEL.apply, np.zeros((5, D)), np.zeros(5, np.int32), with_model_state=1),
     "^with_model_state: expected a bool, got 1$"),
])
def test_bad_input_is_a_one_line_value_error(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("mode", BOTH)
@pytest.mark.parametrize("kind", ["counts", "floats", "bools"])
def test_spearman_and_average_ranks_match_scipy(kind, mode):
    """Against scipy's rankdata (average method) and spearmanr, with heavy ties (forgetting counts)."""
    from scipy import stats

    rng = np.random.default_rng(0)
    draw = {"counts": lambda: rng.poisson(0.7, 300), "floats": lambda: rng.normal(size=300),
            "bools": lambda: rng.random(300) < 0.3}[kind]
    a, b = draw(), draw()
    b_related = np.where(rng.random(300) < 0.6, a, b)  # correlated with a
    np.testing.assert_allclose(L.average_ranks(a), stats.rankdata(a), rtol=1e-6)
    for other in (b, b_related):
        np.testing.assert_allclose(float(L.spearman(a, other)), stats.spearmanr(a, other).statistic,
                                   rtol=1e-5, atol=1e-6)
    assert float(L.spearman(a, b_related)) > 0.3
    assert float(L.spearman(a, -a.astype(float))) == pytest.approx(-1.0, abs=1e-6)


def test_spearman_jit_vmap_over_pairs_and_constant_input():
    rng = np.random.default_rng(1)
    runs = rng.poisson(1.0, (4, 50))
    pairs = np.array([(i, j) for i in range(4) for j in range(i + 1, 4)])
    got = jax.jit(jax.vmap(L.spearman))(runs[pairs[:, 0]], runs[pairs[:, 1]])
    from scipy import stats
    want = [stats.spearmanr(runs[i], runs[j]).statistic for i, j in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(float(L.spearman(np.zeros(5), np.arange(5))))  # a constant has no rank variance


@pytest.mark.parametrize("make, match", [
    (lambda: L.spearman(np.zeros(3), np.zeros(4)), "^spearman: a and b must have the same length, got 3 and 4$"),
    (lambda: L.spearman(np.zeros((3, 2)), np.zeros(3)), r"^a: expected a numeric vector \(N,\) with N >= 2"),
    (lambda: L.average_ranks(np.zeros(1)), r"^values: expected a numeric vector \(N,\) with N >= 2"),
])
def test_spearman_bad_input_is_a_one_line_value_error(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)
