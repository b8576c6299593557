"""The grokking study's pieces: the steps located inside the scan against a plain loop over the
same evaluations, the config checks, the data split, and the claim's ``check`` on hand-made
results (the full runner path is the smoke test's)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"p": 7, "embed_dim": 4, "widths": (8,), "num_steps": 20, "segment_steps": 10, "eval_every": 5}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("grokking", [REPO])


def _config(experiment, **values):
    return runner.parse_config(experiment.config_cls, {**TINY, **values})


def _located_by_hand(steps, train_acc, test_acc):
    """The three located quantities by a Python loop over the evaluations (module docstring)."""
    fit = grok = -1
    at_delay = -1.0
    for step, tr, te in zip(steps, train_acc, test_acc):
        if fit < 0 and tr >= 0.99:
            fit = step
        if fit >= 0 and step >= 10 * fit and at_delay < 0:
            at_delay = te
        if grok < 0 and te >= 0.95:
            grok = step
    return fit, grok, at_delay


@pytest.mark.parametrize("trace_seed", range(4))
def test_locate_matches_a_loop_over_the_evaluations(experiment, trace_seed):
    module = experiment.module
    rng = np.random.default_rng(trace_seed)
    steps = np.arange(1, 61) * 50
    fit_at, grok_at = rng.integers(1, 6), rng.integers(10, 70)  # grok_at beyond the trace: never groks
    train_acc = np.where(np.arange(60) >= fit_at, 1.0, rng.uniform(0.2, 0.98, 60))
    test_acc = np.where(np.arange(60) >= grok_at, rng.uniform(0.95, 1.0, 60), rng.uniform(0.0, 0.94, 60))
    state = module.init(_config(experiment), jax.random.key(0))

    @jax.jit
    def run(state):
        def body(state, xs):
            step, tr, te = xs
            state = state._replace(train_state=state.train_state._replace(step=step))
            return module.locate(state, tr, te), None
        return jax.lax.scan(body, state, (jnp.asarray(steps, jnp.int32), jnp.asarray(train_acc, jnp.float32),
                                          jnp.asarray(test_acc, jnp.float32)))[0]

    out = run(state)
    fit, grok, at_delay = _located_by_hand(steps, train_acc.astype(np.float32), test_acc.astype(np.float32))
    assert (int(out.fit_step), int(out.grok_step)) == (fit, grok)
    assert float(out.test_at_delay) == pytest.approx(at_delay)
    assert fit == 50 * (fit_at + 1) and (grok == -1) == (grok_at >= 60)


def test_config_checks_and_data(experiment):
    with pytest.raises(runner.ConfigError, match="eval_every: must divide segment_steps=10"):
        _config(experiment, eval_every=4)
    with pytest.raises(runner.ConfigError, match="weight_decay"):
        _config(experiment, optimizer={"name": "sgd", "args": {}})
    config = _config(experiment, train_fraction=0.3)
    arrays = experiment.module.data(config)
    assert arrays.x_train.shape == (round(0.3 * 49), 2) and arrays.x_test.shape == (49 - round(0.3 * 49), 2)
    x = np.concatenate([arrays.x_train, arrays.x_test])
    assert len({tuple(r) for r in x.tolist()}) == 49  # every pair once, in one split only
    np.testing.assert_array_equal(np.concatenate([arrays.y_train, arrays.y_test]), x.sum(1) % 7)
    optimizer = config.build_optimizer()
    state = optimizer.init({"w": jnp.ones(3)})
    assert float(state.hyperparams["weight_decay"]) == 1.0 and float(state.hyperparams["b2"]) == pytest.approx(0.98)


def _results(rows):
    runs = pd.DataFrame(rows, columns=["train_fraction", "weight_decay", "seed", "fit_step", "grok_step",
                                       "test_at_delay"])
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["status"], runs["num_steps"], runs["test_accuracy"] = "finished", 3000, 0.5
    return runner.Results(runs, None, ("train_fraction", "weight_decay", "seed", "num_steps"))


GOOD = [(0.3, 2.0, s, 100, 2400 + 50 * s, 0.05) for s in range(3)] + \
       [(0.3, 4.0, s, 150, 1700 + 50 * s, 0.15) for s in range(3)] + \
       [(0.5, 2.0, s, 50, 600, 0.30) for s in range(3)]


@pytest.mark.parametrize("change, message", [
    (None, None),
    ({0: (0.3, 2.0, 0, 100, 2400, 0.25)}, "no grokking: seed 0: validation 0.250 at 10x"),   # generalised too soon
    ({1: (0.3, 2.0, 1, 100, -1, 0.05)}, None),        # did not grok by the cap: the main claim fails...
    ({3: (0.3, 4.0, 0, 150, -1, 0.15)}, "does not come sooner with more weight decay"),  # λ = 4 not all grokked
    ({6: (0.5, 2.0, 0, 50, -1, 0.30)}, "smaller training fraction does not grok later"),
    ({0: (0.3, 2.0, 0, -1, -1, -1.0)}, "never fitted"),
])
def test_check(experiment, change, message):
    rows = list(GOOD)
    for index, row in (change or {}).items():
        rows[index] = row
    results = _results(rows)
    check = experiment.module.check
    if change is None:
        check(results)
        summary = experiment.module.summarize(results)
        assert [(r["train_fraction"], r["weight_decay"], r["grokked"]) for r in summary] == \
            [(0.3, 2.0, 3), (0.3, 4.0, 3), (0.5, 2.0, 3)]
        assert summary[0]["grok_step"] == pytest.approx(2450) and summary[0]["test_at_delay_max"] == 0.05
        return
    with pytest.raises(AssertionError, match=message or "did not grok by the cap"):
        check(results)
