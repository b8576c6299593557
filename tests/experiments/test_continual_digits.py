"""The continual-learning experiment (Kirkpatrick et al. 2017) through the runner, against an
independent plain-Python SGD loop: task A batches up to the boundary, task B (pixel-permuted)
batches after it, θ*_A and the true Fisher (labels sampled from the model, per-example
``jax.grad`` of the log-probability) at the boundary, the EWC gradient λ F (θ − θ*_A) on task B.
Also the config checks, the tasks' data, and the claim's ``check`` on hand-made results."""

import dataclasses
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlearn import data, runner, train

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"widths": (8,), "batch_size": 16, "steps_per_task": 6, "num_steps": 12, "segment_steps": 3}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("continual_digits", [REPO])


def _config(experiment, **values):
    return runner.parse_config(experiment.config_cls, {**TINY, **values})


def _true_fisher(net, params, x, key):
    """``(1/N) Σ_n (∂ log p(ŷ_n | x_n) / ∂θ)²`` with ``ŷ_n ~ softmax(f(x_n))`` drawn from
    ``fold_in(key, n)`` (fisher_diagonal's documented convention), by per-example ``jax.grad``."""
    def log_p(p, x_n, label):
        return jax.nn.log_softmax(net.apply(p, x_n[None])[0])[label]

    def per_example(x_n, n):
        label = jax.random.categorical(jax.random.fold_in(key, n), net.apply(params, x_n[None])[0])
        return jax.tree.map(jnp.square, jax.grad(log_p)(params, x_n, label))

    return jax.tree.map(lambda a: jnp.mean(a, 0), jax.vmap(per_example)(x, jnp.arange(x.shape[0])))


class _Reference:
    """Members trained by a Python loop of SGD steps on task A, then on task B with the gradient
    ``∇L_B + λ F (θ − θ*_A)``; one compilation of each piece for all members of a static config."""

    def __init__(self, module, config):
        ds = data.digits(seed=0)
        perm = np.random.default_rng(config.permutation_seed).permutation(64)
        self.x_a, self.x_b, self.y = (jnp.asarray(a) for a in (ds.x_train, ds.x_train[:, perm], ds.y_train))
        self.config, net = config, module.model(config)
        self.init = jax.jit(lambda seed: module.init(dataclasses.replace(config, seed=seed), jax.random.key(seed)))
        self.fisher = jax.jit(lambda p, key: _true_fisher(net, p, jnp.asarray(self.x_a), key))

        @jax.jit
        def sgd_step(params, anchor, fisher, x, t, strength, lr):  # F = 0 on task A: no penalty there
            g = jax.grad(lambda p: train.softmax_cross_entropy(net.apply(p, x), t))(params)
            g = jax.tree.map(lambda g_, p, a, f: g_ + strength * f * (p - a), g, params, anchor, fisher)
            return jax.tree.map(lambda p, g_: p - lr * g_, params, g)

        self.sgd_step = sgd_step
        # the minibatch of step s, compiled once (eager get_batch dispatches its index arithmetic op by op)
        self.batch = jax.jit(data.get_batch, static_argnums=4)

    def __call__(self, seed, strength, lr):
        """(θ*_A, F, final θ) of one member."""
        config, initial = self.config, self.init(seed)
        params, key = initial.params, train.data_key(initial.train_state)
        anchor = fisher = jax.tree.map(jnp.zeros_like, params)
        for s in range(config.num_steps):
            if s == config.steps_per_task:
                anchor, fisher = params, self.fisher(params, initial.fisher_key)
            x_all = self.x_a if s < config.steps_per_task else self.x_b
            x, t = self.batch(key, s, x_all, self.y, config.batch_size)
            params = self.sgd_step(params, anchor, fisher, x, t, strength, lr)
        return anchor, fisher, params


@pytest.mark.slow
def test_smoke_runs_match_a_plain_sgd_loop(experiment, smoke):
    """The smoke sweep (computed once for the session's tests) through the runner — vmapped,
    lax.cond at the boundary — equals the reference loop member by member; the ewc member equals
    the sgd member of its seed up to the boundary; the final metrics are the final state's."""
    _, configs, report, root = smoke("continual_digits")
    assert set(report.computed.values()) == {"finished"}
    results = runner.load(root, experiment="continual_digits", run_ids=report.run_ids)
    module = experiment.module
    arrays = module.data(configs[0])
    anchors, reference = {}, _Reference(module, configs[0])
    for config, run in zip(configs, report.run_ids):
        anchor, fisher, final = reference(config.seed, config.strength, config.learning_rate)
        state = runner.load_state(root, run)
        chex.assert_trees_all_close(state.anchor, anchor, rtol=1e-4, atol=1e-6)
        chex.assert_trees_all_close(state.fisher, fisher, rtol=1e-3, atol=1e-8)
        chex.assert_trees_all_close(state.params, final, rtol=1e-3, atol=1e-5)
        anchors.setdefault(config.seed, []).append(state.anchor)
        row = results.runs[results.runs.run_id == run].iloc[0]
        net = module.model(config)
        for name, params, x in [("task_a_accuracy", state.params, "x_test_a"),
                                ("task_b_accuracy", state.params, "x_test_b"),
                                ("task_a_accuracy_before_b", state.anchor, "x_test_a")]:
            assert row[name] == pytest.approx(float(train.accuracy(net.apply(params, arrays[x]), arrays["y_test"])))
        assert row.forgetting == pytest.approx(row.task_a_accuracy_before_b - row.task_a_accuracy)
        assert row.fisher_distance == pytest.approx(float(sum(jax.tree.leaves(jax.tree.map(
            lambda p, a, f: jnp.sum(f * (p - a) ** 2), state.params, state.anchor, state.fisher)))), rel=1e-5)
    assert {c.rule for c in configs} == {"sgd", "ewc"} and all(len(a) == 2 for a in anchors.values())
    for sgd_anchor, ewc_anchor in anchors.values():
        chex.assert_trees_all_close(sgd_anchor, ewc_anchor, rtol=1e-5, atol=1e-7)


def test_config_checks(experiment):
    with pytest.raises(runner.ConfigError, match="num_steps: must be 2 \\* steps_per_task = 12"):
        _config(experiment, num_steps=10)
    with pytest.raises(runner.ConfigError, match="fisher"):
        _config(experiment, fisher="diagonal")
    assert _config(experiment, rule="sgd", strength=5.0).strength == 0.0
    assert _config(experiment, rule="ewc", strength=5.0).strength == 5.0
    grid = runner.expand(experiment.config_cls, TINY, {"rule": ["sgd", "ewc"], "strength": [1.0, 2.0]})
    assert [(c.rule, c.strength) for c in grid] == [("sgd", 0.0), ("ewc", 1.0), ("ewc", 2.0)]  # one sgd run
    with pytest.raises(ValueError, match="steps_per_task: the A→B boundary must be a segment end"):
        experiment.module.init(_config(experiment, segment_steps=4, snapshots=()), jax.random.key(0))


def test_tasks_share_labels_and_b_is_a_fixed_pixel_permutation(experiment):
    arrays = experiment.module.data(_config(experiment))
    perm = np.random.default_rng(0).permutation(64)
    np.testing.assert_array_equal(arrays["x_train_b"], np.asarray(arrays["x_train_a"])[:, perm])
    np.testing.assert_array_equal(arrays["x_test_b"], np.asarray(arrays["x_test_a"])[:, perm])
    np.testing.assert_array_equal(arrays["x_test_a"], data.digits(seed=0).x_test)
    assert not np.array_equal(perm, np.arange(64))


def _results(a_ewc, b_ewc, *, steps_per_task=500, a_sgd=(0.50, 0.60), b_sgd=(0.97, 0.96)):
    rows = []
    for seed, (a, b) in enumerate(zip(a_sgd, b_sgd)):
        rows.append({"rule": "sgd", "strength": 0.0, "seed": seed, "task_a_accuracy": a, "task_b_accuracy": b})
    for seed, (a, b) in enumerate(zip(a_ewc, b_ewc)):
        rows.append({"rule": "ewc", "strength": 100.0, "seed": seed, "task_a_accuracy": a, "task_b_accuracy": b})
    runs = pd.DataFrame(rows)
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["status"], runs["steps_per_task"] = "finished", steps_per_task
    runs["task_a_accuracy_before_b"] = 0.97
    runs["mean_accuracy"] = (runs.task_a_accuracy + runs.task_b_accuracy) / 2
    runs["forgetting"] = runs.task_a_accuracy_before_b - runs.task_a_accuracy
    return runner.Results(runs, None, ("rule", "strength", "seed", "steps_per_task"))


@pytest.mark.parametrize("a_ewc, b_ewc, steps_per_task, passes", [
    ((0.90, 0.92), (0.95, 0.95), 500, True),
    ((0.68, 0.70), (0.95, 0.95), 500, False),   # too little gain in task A at full size...
    ((0.68, 0.70), (0.95, 0.95), 100, True),    # ...but enough for the smoke size
    ((0.90, 0.92), (0.88, 0.88), 500, False),   # task B not learnt as well as by sgd
])
def test_check_and_summarize(experiment, a_ewc, b_ewc, steps_per_task, passes):
    results = _results(a_ewc, b_ewc, steps_per_task=steps_per_task)
    module = experiment.module
    sgd, ewc = module.summarize(results)
    assert (sgd["rule"], ewc["rule"], ewc["seeds"]) == ("sgd", "ewc", 2)
    assert ewc["task_a_accuracy"] == pytest.approx(np.mean(a_ewc))
    assert ewc["task_a_accuracy_std"] == pytest.approx(np.std(a_ewc))
    assert sgd["task_b_accuracy"] == pytest.approx(0.965)
    if passes:
        module.check(results)
    else:
        with pytest.raises(AssertionError, match="no EWC strength"):
            module.check(results)
