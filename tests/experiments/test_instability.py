"""Instability analysis (Frankle et al. 2020, §3) through the runner: the children are the parent
up to the spawn step and then follow their own data orders (against a plain training loop), the
barriers equal NumPy forward passes along the segment, and on digits children spawned at step 0
are far less stable than children spawned half-way — computed once, reused afterwards."""

import dataclasses
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import data, runner, train

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"widths": (8,), "batch_size": 16, "num_steps": 12, "segment_steps": 12, "path_points": 5}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("instability", [REPO])


def _np_forward(params, x):
    (l0, _, l2) = [jax.tree.map(np.asarray, p) for p in params]
    return np.maximum(x @ l0["W"] + l0["b"], 0) @ l2["W"] + l2["b"]


def _key_data(leaf):
    return jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def _parent_loop(module, config, arrays, parent, spawn, stream):
    """Ground truth: ONE network trained by train.train from ``parent``, with the parent's data
    stream (key ``fold_in(data_key, 0)``) for ``spawn`` steps, then stream ``stream`` to the end."""
    model, opt = module.model(config), config.build_optimizer()
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt)

    def batches(s):
        return lambda k, i: data.get_batch(jax.random.fold_in(k, s), i, arrays.x_train, arrays.y_train,
                                           config.batch_size)

    state, _ = train.train(parent, step, batches(0), spawn)
    return train.train(state, step, batches(stream), config.num_steps - spawn)[0]


@pytest.fixture(scope="module")
def tiny(experiment):
    """Three children of a tiny parent; the dynamic fields traced (one compile, as in the runner)."""
    module = experiment.module
    config = runner.parse_config(module.Config, {**TINY, "seed": 3, "num_children": 3})
    arrays = module.data(config)
    start = jax.jit(lambda: module.init(config, jax.random.key(3)))()

    @jax.jit
    def segment(state, spawn_step, same_data_order):
        member = dataclasses.replace(config, spawn_step=spawn_step, same_data_order=same_data_order)
        return module.segment(state, member, arrays)

    def children_at(spawn_step, same_data_order=False):
        return segment(start, jnp.int32(spawn_step), jnp.bool_(same_data_order))

    evaluate = jax.jit(lambda s: module.evaluate(s, config, arrays))
    return module, config, arrays, start, children_at, evaluate


def test_children_are_the_parent_until_the_spawn_then_follow_their_own_data_order(tiny):
    module, config, arrays, start, children_at, evaluate = tiny
    parent = jax.tree.map(lambda leaf: leaf[0], start)
    for leaf in jax.tree.leaves(jax.tree.map(_key_data, start)):  # init: C copies of one parent
        assert leaf.shape[0] == 3 and np.array_equal(leaf[1], leaf[0]) and np.array_equal(leaf[2], leaf[0])
    children, metrics = children_at(5)
    assert np.asarray(children.step).tolist() == [12, 12, 12]
    alone = jax.jit(jax.vmap(lambda s: _parent_loop(module, config, arrays, parent, 5, s)))(jnp.arange(1, 4))
    chex.assert_trees_all_close(children.params, alone.params, rtol=1e-5, atol=1e-6)
    leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(children.params)]
    distances = [np.sqrt(sum(np.sum((a[i] - a[j]) ** 2) for a in leaves)) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert min(distances) > 1e-3  # the data orders differ after the spawn
    np.testing.assert_allclose(metrics["distance"], np.mean(distances), rtol=1e-5)

    # spawned at the end, or with the parent's data order: the children are one network, barrier 0
    for children in (children_at(12)[0], children_at(0, True)[0]):
        for leaf in jax.tree.leaves(children.params):
            assert np.array_equal(leaf[0], leaf[1]) and np.array_equal(leaf[0], leaf[2])
        final = evaluate(children)
        assert float(final["instability"]) == 0 and float(final["loss_barrier_mean"]) == 0


def test_evaluate_equals_numpy_barriers_along_the_segments(tiny):
    _, config, arrays, _, children_at, evaluate = tiny
    children = children_at(0)[0]
    final = evaluate(children)
    x, y = np.asarray(arrays.x_test, np.float64), np.asarray(arrays.y_test)
    alphas = np.linspace(0, 1, config.path_points)
    got = {"instability": [], "error_barrier_linear": [], "loss_barrier_mean": [], "loss_barrier_linear": [],
           "test_accuracy": []}
    for i, j in ((0, 1), (0, 2), (1, 2)):  # every pair of children
        a, b = (jax.tree.map(lambda leaf, c=c: np.asarray(leaf[c], np.float64), children.params) for c in (i, j))
        errors, losses = [], []
        for t in alphas:
            logits = _np_forward(jax.tree.map(lambda u, v: (1 - t) * u + t * v, a, b), x)
            shifted = logits - logits.max(-1, keepdims=True)
            losses.append(-(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(y)), y].mean())
            errors.append(np.mean(logits.argmax(-1) != y))
        for name, v in (("instability", errors), ("loss_barrier_mean", losses)):
            got[name].append(max(v) - 0.5 * (v[0] + v[-1]))
        for name, v in (("error_barrier_linear", errors), ("loss_barrier_linear", losses)):
            got[name].append(np.max(np.array(v) - ((1 - alphas) * v[0] + alphas * v[-1])))
        got["test_accuracy"].append(1 - 0.5 * (errors[0] + errors[-1]))
    assert got["instability"] != [0, 0, 0]  # not vacuous
    for name, values in got.items():
        np.testing.assert_allclose(final[name], np.mean(values), atol=1e-4 if "loss" in name else 1e-6, err_msg=name)


def test_bad_config_names_the_field(experiment):
    cls = experiment.config_cls
    with pytest.raises(ValueError, match="spawn_step: must be <= num_steps=12, got 13"):
        runner.parse_config(cls, {**TINY, "spawn_step": 13})
    with pytest.raises(runner.ConfigError, match="same_data_order"):
        runner.parse_config(cls, {**TINY, "same_data_order": "shuffled"})
    with pytest.raises(runner.ConfigError, match="num_children"):
        runner.parse_config(cls, {**TINY, "num_children": 1})


@pytest.mark.slow
def test_children_spawned_at_init_are_less_stable_than_late_ones(smoke):
    experiment, configs, report, root = smoke("instability")  # (computed once for the session's tests)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == 8  # one vmapped group
    again = runner.run_sweep(experiment, configs, root=root, progress=False)
    assert not again.computed and set(again.skipped) == set(report.run_ids)  # finished runs are never recomputed
    runs = runner.load(root, experiment="instability").runs
    print("\n" + runs[["seed", "spawn_step", "same_data_order", "instability", "loss_barrier_mean", "test_accuracy"]]
          .sort_values(["same_data_order", "spawn_step", "seed"]).to_string())
    assert (runs[runs.same_data_order].instability == 0).all()  # the control: identical children
    runs = runs[~runs.same_data_order]
    early, late = (runs[runs.spawn_step == k].set_index("seed") for k in (0, 150))
    assert (early.test_accuracy > 0.9).all() and (late.test_accuracy > 0.9).all()  # trained children
    for seed in early.index:  # Frankle et al. 2020, §3: unstable at initialisation, stable later
        assert early.instability[seed] > 0.03 and late.instability[seed] < 0.01
        assert early.loss_barrier_mean[seed] > 10 * late.loss_barrier_mean[seed]
    experiment.hook("check")(runner.load(root, experiment="instability"))
    state = runner.load_state(root, report.run_ids[0], search_paths=[REPO])
    assert state.step.shape == (2,)  # a member's state holds its two children
