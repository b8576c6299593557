"""The continual-learning experiment (Kirkpatrick et al. 2017) through the runner, against an
independent plain-Python SGD loop over three tasks: task A batches up to the first boundary, then
task B's and task C's (pixel-permuted), at each boundary θ*_t and the true Fisher F_t (labels
sampled from the model, per-example ``jax.grad`` of the log-probability) of the task just
finished, and the EWC gradient as the SUM of one penalty per earlier task, Σ_t λ F_t (θ − θ*_t)
(not the accumulated pair the study keeps). Also the config checks, the tasks' data, and the
claim's ``check`` on hand-made results."""

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
TINY = {"widths": (8,), "batch_size": 16, "steps_per_task": 6, "num_steps": 18, "segment_steps": 3}


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
    """Members trained by a Python loop of SGD steps on each task in turn, with the gradient
    ``∇L_t + Σ_{u<t} λ F_u (θ − θ*_u)``; one compilation of each piece for all members of a static config."""

    def __init__(self, module, config):
        ds = data.digits(seed=0)
        perms = [np.arange(64)] + [np.random.default_rng([config.permutation_seed, t]).permutation(64)
                                   for t in range(1, config.num_tasks)]
        self.xs = [jnp.asarray(ds.x_train[:, perm]) for perm in perms]
        self.y = jnp.asarray(ds.y_train)
        self.config, net = config, module.model(config)
        self.init = jax.jit(lambda seed: module.init(dataclasses.replace(config, seed=seed), jax.random.key(seed)))
        self.fisher = jax.jit(lambda p, x, key: _true_fisher(net, p, x, key))

        @jax.jit
        def sgd_step(params, anchors, fishers, x, t, strength, lr):  # no earlier task on task A: no penalty
            g = jax.grad(lambda p: train.softmax_cross_entropy(net.apply(p, x), t))(params)
            for anchor, fisher in zip(anchors, fishers):
                g = jax.tree.map(lambda g_, p, a, f: g_ + strength * f * (p - a), g, params, anchor, fisher)
            return jax.tree.map(lambda p, g_: p - lr * g_, params, g)

        self.sgd_step = sgd_step
        # the minibatch of step s, compiled once (eager get_batch dispatches its index arithmetic op by op)
        self.batch = jax.jit(data.get_batch, static_argnums=4)

    def __call__(self, seed, strength, lr):
        """(θ*_t of every task but the last, their F_t, final θ) of one member."""
        config, initial = self.config, self.init(seed)
        params, key = initial.params, train.data_key(initial.train_state)
        anchors, fishers = [], []
        for s in range(config.num_steps):
            task = s // config.steps_per_task
            if s and s % config.steps_per_task == 0:
                anchors.append(params)
                fishers.append(self.fisher(params, self.xs[task - 1], jax.random.fold_in(initial.fisher_key, task - 1)))
            x, t = self.batch(key, s, self.xs[task], self.y, config.batch_size)
            params = self.sgd_step(params, tuple(anchors), tuple(fishers), x, t, strength, lr)
        return anchors, fishers, params


@pytest.mark.slow
def test_smoke_runs_match_a_plain_sgd_loop(experiment, smoke):
    """The smoke sweep (computed once for the session's tests) through the runner — vmapped,
    lax.cond at the boundaries, the penalties accumulated — equals the reference loop member by
    member: the accumulated Fisher is Σ_t F_t and the accumulated anchor its F-weighted mean of the
    θ*_t (compared as F·θ* = Σ_t F_t θ*_t), the final params are the reference's; the ewc member
    learnt task A exactly as the sgd member of its seed (no penalty before the first boundary);
    the final metrics are the final state's."""
    _, configs, report, root = smoke("continual_digits")
    assert set(report.computed.values()) == {"finished"}
    results = runner.load(root, experiment="continual_digits", run_ids=report.run_ids)
    module = experiment.module
    arrays = module.data(configs[0])
    learnt_a, reference = {}, _Reference(module, configs[0])
    assert configs[0].num_tasks == 3
    for config, run in zip(configs, report.run_ids):
        anchors, fishers, final = reference(config.seed, config.strength, config.learning_rate)
        state = runner.load_state(root, run)
        total = jax.tree.map(lambda *fs: sum(fs), *fishers)
        weighted = jax.tree.map(lambda *fa: sum(f * a for f, a in zip(fa[:len(fishers)], fa[len(fishers):])),
                                *fishers, *anchors)
        chex.assert_trees_all_close(state.fisher, total, rtol=1e-3, atol=1e-8)
        chex.assert_trees_all_close(jax.tree.map(jnp.multiply, state.fisher, state.anchor), weighted,
                                    rtol=1e-3, atol=1e-7)
        chex.assert_trees_all_close(state.params, final, rtol=1e-3, atol=1e-5)
        row = results.runs[results.runs.run_id == run].iloc[0]
        net = module.model(config)

        def accuracy(params, x):
            return float(train.accuracy(net.apply(params, arrays[x]), arrays["y_test"]))

        for name in "abc":
            assert row[f"task_{name}_accuracy"] == pytest.approx(accuracy(state.params, f"x_test_{name}"))
        for t, name in enumerate("ab"):
            assert row[f"task_{name}_accuracy_learnt"] == pytest.approx(accuracy(anchors[t], f"x_test_{name}"),
                                                                        abs=1e-6)
        assert row.old_accuracy == pytest.approx((row.task_a_accuracy + row.task_b_accuracy) / 2)
        assert row.forgetting == pytest.approx(((row.task_a_accuracy_learnt - row.task_a_accuracy)
                                                + (row.task_b_accuracy_learnt - row.task_b_accuracy)) / 2)
        assert row.fisher_distance == pytest.approx(float(sum(jax.tree.leaves(jax.tree.map(
            lambda p, a, f: jnp.sum(f * (p - a) ** 2), state.params, state.anchor, state.fisher)))), rel=1e-5)
        learnt_a.setdefault(config.seed, []).append(row.task_a_accuracy_learnt)
    assert {c.rule for c in configs} == {"sgd", "ewc"} and all(len(a) == 2 for a in learnt_a.values())
    for sgd_a, ewc_a in learnt_a.values():
        assert sgd_a == pytest.approx(ewc_a, abs=0.003)  # one test example of 359: float noise across groups


def test_config_checks(experiment):
    with pytest.raises(runner.ConfigError, match="num_steps: must be num_tasks \\* steps_per_task = 18"):
        _config(experiment, num_steps=12)
    assert _config(experiment, num_tasks=2, num_steps=12).num_tasks == 2
    with pytest.raises(runner.ConfigError, match="fisher"):
        _config(experiment, fisher="diagonal")
    assert _config(experiment, rule="sgd", strength=5.0).strength == 0.0
    assert _config(experiment, rule="ewc", strength=5.0).strength == 5.0
    grid = runner.expand(experiment.config_cls, TINY, {"rule": ["sgd", "ewc"], "strength": [1.0, 2.0]})
    assert [(c.rule, c.strength) for c in grid] == [("sgd", 0.0), ("ewc", 1.0), ("ewc", 2.0)]  # one sgd run
    with pytest.raises(ValueError, match="steps_per_task: the task boundaries must be segment ends"):
        experiment.module.init(_config(experiment, segment_steps=4, snapshots=()), jax.random.key(0))


def test_tasks_share_labels_and_later_tasks_are_fixed_pixel_permutations(experiment):
    arrays = experiment.module.data(_config(experiment))
    perms = {name: np.random.default_rng([0, t]).permutation(64) for t, name in ((1, "b"), (2, "c"))}
    for name, perm in perms.items():
        np.testing.assert_array_equal(arrays[f"x_train_{name}"], np.asarray(arrays["x_train_a"])[:, perm])
        np.testing.assert_array_equal(arrays[f"x_test_{name}"], np.asarray(arrays["x_test_a"])[:, perm])
        assert not np.array_equal(perm, np.arange(64))
    assert not np.array_equal(perms["b"], perms["c"]) and "x_train_d" not in arrays
    np.testing.assert_array_equal(arrays["x_test_a"], data.digits(seed=0).x_test)


def _results(old_ewc, c_ewc, *, steps_per_task=500, old_sgd=(0.50, 0.60), c_sgd=(0.97, 0.96)):
    """Hand-made final metrics: the old tasks' mean accuracy (A and B alike) and task C's."""
    rows = []
    for rule, strength, olds, cs in (("sgd", 0.0, old_sgd, c_sgd), ("ewc", 100.0, old_ewc, c_ewc)):
        for seed, (old, c) in enumerate(zip(olds, cs)):
            rows.append({"rule": rule, "strength": strength, "seed": seed, "task_a_accuracy": old,
                         "task_b_accuracy": old, "task_c_accuracy": c})
    runs = pd.DataFrame(rows)
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["status"], runs["steps_per_task"] = "finished", steps_per_task
    for name in "abc":
        runs[f"task_{name}_accuracy_learnt"] = 0.97 if name != "c" else runs.task_c_accuracy
    runs["mean_accuracy"] = (runs.task_a_accuracy + runs.task_b_accuracy + runs.task_c_accuracy) / 3
    runs["old_accuracy"] = (runs.task_a_accuracy + runs.task_b_accuracy) / 2
    runs["forgetting"] = 0.97 - runs.old_accuracy
    return runner.Results(runs, None, ("rule", "strength", "seed", "steps_per_task"))


@pytest.mark.parametrize("old_ewc, c_ewc, steps_per_task, passes", [
    ((0.70, 0.72), (0.95, 0.95), 500, True),
    ((0.62, 0.65), (0.95, 0.95), 500, False),   # too little gain on the old tasks at full size...
    ((0.62, 0.65), (0.95, 0.95), 100, True),    # ...but enough for the smoke size
    ((0.90, 0.92), (0.88, 0.88), 500, False),   # task C not learnt as well as by sgd
])
def test_check_and_summarize(experiment, old_ewc, c_ewc, steps_per_task, passes):
    results = _results(old_ewc, c_ewc, steps_per_task=steps_per_task)
    module = experiment.module
    sgd, ewc = module.summarize(results)
    assert (sgd["rule"], ewc["rule"], ewc["seeds"]) == ("sgd", "ewc", 2)
    assert ewc["old_accuracy"] == pytest.approx(np.mean(old_ewc))
    assert ewc["task_a_accuracy_std"] == pytest.approx(np.std(old_ewc))
    assert sgd["task_c_accuracy"] == pytest.approx(0.965)
    if passes:
        module.check(results)
    else:
        with pytest.raises(AssertionError, match="no EWC strength"):
            module.check(results)
