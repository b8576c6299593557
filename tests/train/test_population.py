"""Populations: a vmapped group of members equals each member trained alone, whatever the group.

Members differ in seed, learning rate, weight decay, momentum, W_std (traced into an NTK MLP built
inside the member) and a label-noise rate applied in-trace with a key folded from the seed.
"""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train

C, BATCH, STEPS, EVAL_EVERY = 3, 8, 20, 10
_DS = data.teacher_student(seed=0, n_train=32, n_test=4, d_in=6, hidden=8, d_out=C)
LABELS = np.argmax(_DS.y_train, axis=-1).astype(np.int32)  # a 3-class task from the teacher


def make_member(dtype, optimizer_kind):
    x = _DS.x_train.astype(dtype)
    spec = jax.ShapeDtypeStruct((1, x.shape[1]), dtype)

    def member(seed, learning_rate, weight_decay, momentum=0.9, W_std=1.0, label_noise=0.1):
        key = jax.random.key(seed)
        model = nn.mlp([16], C, parameterization="ntk", W_std=W_std)
        if optimizer_kind == "sgd":
            opt = optax.chain(optax.add_decayed_weights(weight_decay),
                              train.optimizer("sgd", learning_rate=learning_rate, momentum=momentum))
        else:
            opt = train.optimizer("adamw", learning_rate=learning_rate, weight_decay=weight_decay, b1=momentum)
        state = train.init(model, opt, key, spec)
        labels = data.corrupt_labels(jax.random.fold_in(key, 1), LABELS, label_noise, C)

        def batch_fn(k, step):
            return data.get_batch(k, step, x, labels, BATCH)

        step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt,
                               metrics_fn=lambda out, y: {"accuracy": train.accuracy(out, y)})
        state, metrics = train.train(state, step, batch_fn, STEPS, eval_every=EVAL_EVERY,
                                     eval_fn=lambda s: train.softmax_cross_entropy(model.apply(s.params, x), LABELS))
        return {"params": state.params, "metrics": metrics, "labels": labels, "step": state.step}

    return member


def _member(results, i):
    return jax.tree.map(lambda a: a[i], results)


def _differ(a, b):
    return any(not np.allclose(u, v, rtol=1e-6, atol=0) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# member 0 is the reference; members 1..6 each change one hyperparameter; member 7 changes all
HP64 = {
    "seed":          np.array([0, 1, 0, 0, 0, 0, 0, 2], np.int32),
    "learning_rate": np.array([0.1, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1, 0.05]),
    "weight_decay":  np.array([0.0, 0.0, 0.0, 0.05, 0.0, 0.0, 0.0, 0.01]),
    "momentum":      np.array([0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.5]),
    "W_std":         np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.5]),
    "label_noise":   np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2]),
}
M = len(HP64["seed"])


@pytest.fixture(scope="module")
def run64():
    assert jax.config.jax_enable_x64, "float64 tests run with JAX_ENABLE_X64=1"
    member = make_member(np.float64, "sgd")
    # one trace for all M members, reused by every population of M (see the permuted one below)
    chex.clear_trace_counter()
    group = jax.jit(train.population(chex.assert_max_traces(member, n=1)))
    return member, group, group(HP64)


@pytest.mark.float64
def test_each_member_equals_training_alone(run64):
    member, _, results = run64
    alone = jax.jit(member)
    for i in range(M):
        chex.assert_trees_all_close(_member(results, i), alone(**{k: v[i] for k, v in HP64.items()}),
                                    rtol=1e-10, atol=1e-12)
    assert results["metrics"]["train"]["loss"].shape == (M, STEPS)
    assert results["metrics"]["eval"].shape == (M, STEPS // EVAL_EVERY)
    np.testing.assert_array_equal(results["step"], [STEPS] * M)


@pytest.mark.float64
def test_every_hyperparameter_matters(run64):
    _, _, results = run64
    ref = _member(results, 0)
    for i in range(1, M):
        assert _differ(_member(results, i)["params"], ref["params"]), f"member {i} trained like member 0"
    # label noise is applied in the trace, from the member's seed
    labels = np.asarray(results["labels"])
    np.testing.assert_array_equal(labels[:6], np.broadcast_to(LABELS, (6, LABELS.size)))
    assert 0 < np.mean(labels[6] != LABELS) < 0.7
    assert 0 < np.mean(labels[7] != LABELS) < 0.6
    # training fits: the loss on the clean-label reference member falls
    loss = np.asarray(results["metrics"]["train"]["loss"][0])
    assert loss[-5:].mean() < loss[:5].mean()


@pytest.mark.float64
def test_permuted_members_give_permuted_results(run64):
    _, group, results = run64
    perm = np.array([7, 3, 0, 6, 1, 5, 2, 4])
    permuted = group({k: v[perm] for k, v in HP64.items()})
    chex.assert_trees_all_close(permuted, jax.tree.map(lambda a: np.asarray(a)[perm], results),
                                rtol=1e-10, atol=1e-12)


@pytest.mark.float64
def test_sub_group_gives_the_same_results(run64):
    member, _, results = run64
    first3 = jax.jit(train.population(member))({k: v[:3] for k, v in HP64.items()})
    assert first3["metrics"]["train"]["loss"].shape == (3, STEPS)
    chex.assert_trees_all_close(first3, jax.tree.map(lambda a: a[:3], results), rtol=1e-10, atol=1e-12)


def test_float32_adamw_population_from_grid():
    member = make_member(np.float32, "adamw")
    hp = train.grid(seed=[0, 1], learning_rate=[0.01, 0.05], weight_decay=[0.0, 0.1])
    chex.clear_trace_counter()
    results = jax.jit(train.population(chex.assert_max_traces(member, n=1)))(hp)  # 8 members, one trace
    assert results["params"][0]["W"].dtype == jnp.float32
    alone = jax.jit(member)
    for i in (0, 5, 7):
        chex.assert_trees_all_close(_member(results, i), alone(**{k: v[i] for k, v in hp.items()}),
                                    rtol=1e-4, atol=1e-5)
    assert _differ(_member(results, 0)["params"], _member(results, 1)["params"])  # weight decay acts
    assert _differ(_member(results, 0)["params"], _member(results, 4)["params"])  # seed acts


# -- grid and population_size ---------------------------------------------------------------


def test_grid_is_row_major_product():
    seeds, lrs, wds = [0, 1], [0.1, 0.3, 1.0], [0.0, 0.5]
    hp = train.grid(seed=seeds, learning_rate=lrs, weight_decay=wds)
    rows = [(s, lr, wd) for s in seeds for lr in lrs for wd in wds]  # last axis fastest
    assert list(hp) == ["seed", "learning_rate", "weight_decay"]
    np.testing.assert_array_equal(hp["seed"], [r[0] for r in rows])
    np.testing.assert_array_equal(hp["learning_rate"], np.float32([r[1] for r in rows]))
    np.testing.assert_array_equal(hp["weight_decay"], np.float32([r[2] for r in rows]))
    assert train.population_size(hp) == 12


def test_grid_docstring_example_and_dtypes():
    hp = train.grid(seed=[0, 1], learning_rate=[0.1, 0.3])
    np.testing.assert_array_equal(hp["seed"], [0, 0, 1, 1])
    np.testing.assert_array_equal(hp["learning_rate"], np.float32([0.1, 0.3, 0.1, 0.3]))
    assert hp["seed"].dtype == np.int32 and hp["learning_rate"].dtype == np.float32
    hp = train.grid(n=np.array([1, 2], np.int64), x=np.array([0.5], np.float64))
    assert hp["n"].dtype == np.int32 and hp["x"].dtype == np.float32
    assert train.grid(only=[3.0])["only"].shape == (1,)


@pytest.mark.parametrize("axes, match", [
    ({}, "at least one axis"),
    ({"seed": []}, "'seed' must be a non-empty 1-D"),
    ({"lr": [[0.1, 0.2]]}, "'lr' must be a non-empty 1-D"),
    ({"lr": 0.1}, "'lr' must be a non-empty 1-D"),
    ({"act": ["relu", "tanh"]}, "'act' must hold numbers"),
    ({"flag": [True, False]}, "'flag' must hold numbers"),
])
def test_grid_errors(axes, match):
    with pytest.raises(ValueError, match=match):
        train.grid(**axes)


@pytest.mark.parametrize("hp", [
    {"seed": np.arange(3), "learning_rate": np.ones(2)},
    {"seed": np.arange(3), "learning_rate": np.float32(0.1)},
    {},
])
def test_population_needs_one_member_axis(hp):
    run = train.population(lambda **h: h)
    with pytest.raises(ValueError, match="same leading \\(member\\) axis"):
        run(hp)
    with pytest.raises(ValueError, match="same leading \\(member\\) axis"):
        train.population_size(hp)


def test_population_maps_members_and_adds_the_axis():
    run = train.population(lambda a, b: {"sum": a + b, "pair": jnp.stack([a, b])})
    out = run({"a": np.arange(4.0, dtype=np.float32), "b": np.float32([10, 20, 30, 40])})
    np.testing.assert_array_equal(out["sum"], [10, 21, 32, 43])
    assert out["pair"].shape == (4, 2)
    assert list(itertools.chain(*np.asarray(out["pair"]).tolist())) == [0, 10, 1, 20, 2, 30, 3, 40]


def test_population_accepts_lists():
    out = train.population(lambda seed, lr: lr * seed)({"seed": [1, 2, 3], "lr": [0.5, 0.25, 2.0]})
    np.testing.assert_allclose(out, [0.5, 0.5, 6.0])
