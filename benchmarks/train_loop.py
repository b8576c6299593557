"""Training-loop benchmarks (issue: foundation).

Fixed model: scikit-learn digits, MLP 64-32-10, batch 32, plain SGD, 1,000 steps.

1. ``scan_vs_python_loop`` — the whole run as one ``lax.scan`` (``jaxlearn.train.train``) vs a
   Python loop calling a jitted step 1,000 times. Target: >= 20x.
2. ``population_vs_sequential`` — 64 such MLPs (different seeds and learning rates) as one
   vmapped program vs the same 64 runs one after another through one compiled single-run
   program, warm cache. Target: >= 2.5x on 2 CPU cores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.harness import best_time, report
from jaxlearn import data, nn, train

NUM_STEPS, BATCH, POPULATION = 1000, 32, 64


def _setup():
    ds = data.digits(seed=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    model = nn.mlp([32], 10)

    def member_parts(seed, learning_rate):
        opt = train.optimizer("sgd", learning_rate=learning_rate)
        state = train.init(model, opt, jax.random.key(seed), ds.input_spec)
        step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt)
        return state, step

    def batch_fn(key, step):
        return data.get_batch(key, step, x, y, BATCH)

    def run_member(seed, learning_rate):
        state, step = member_parts(seed, learning_rate)
        state, metrics = train.train(state, step, batch_fn, NUM_STEPS)
        return state.params, metrics["train"]["loss"]

    return member_parts, batch_fn, run_member, (x, y)


def _handwritten(x, y):
    """Reference floor: the same MLP and SGD written directly in jax.numpy, no jaxlearn (fixed
    contiguous batches instead of shuffling). Shows how much of a run is XLA's own cost."""

    def run(seed, learning_rate):
        k1, k2 = jax.random.split(jax.random.key(seed))
        params = {"W1": jax.random.normal(k1, (64, 32)) / 8.0, "b1": jnp.zeros(32),
                  "W2": jax.random.normal(k2, (32, 10)) / np.sqrt(32.0), "b2": jnp.zeros(10)}

        def loss(p, xb, yb):
            logits = jax.nn.relu(xb @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        def body(p, i):
            start = (i * BATCH) % (x.shape[0] - BATCH)
            xb, yb = jax.lax.dynamic_slice_in_dim(x, start, BATCH), jax.lax.dynamic_slice_in_dim(y, start, BATCH)
            value, grads = jax.value_and_grad(loss)(p, xb, yb)
            return jax.tree.map(lambda a, g: a - learning_rate * g, p, grads), value

        return jax.lax.scan(body, params, jnp.arange(NUM_STEPS))

    return run


def scan_vs_python_loop():
    member_parts, batch_fn, run_member, (x, y) = _setup()
    scanned = jax.jit(run_member)
    state0, step = member_parts(0, 0.1)

    @jax.jit
    def one_step(state):
        return step(state, batch_fn(train.data_key(state), state.step))

    def python_loop():
        state = state0
        for _ in range(NUM_STEPS):
            state, _ = one_step(state)
        return state.params

    # Same computation: check the two agree before timing them.
    np.testing.assert_allclose(
        jax.tree.leaves(python_loop())[0], jax.tree.leaves(scanned(0, 0.1)[0])[0], rtol=1e-4, atol=1e-5)
    reference = jax.jit(_handwritten(x, y))
    cases = {
        "python loop of jitted steps": best_time(python_loop),
        "lax.scan (train.train)": best_time(lambda: scanned(0, 0.1)),
        "reference: hand-written jnp, lax.scan": best_time(lambda: reference(0, 0.1)),
    }
    return report("scan_vs_python_loop", cases, "python loop of jitted steps", {"lax.scan (train.train)": 20.0})


def population_vs_sequential():
    _, _, run_member, (x, y) = _setup()
    hp = train.grid(seed=list(range(8)), learning_rate=list(np.geomspace(0.01, 0.3, 8)))
    assert len(hp["seed"]) == POPULATION
    single = jax.jit(run_member)
    vmapped = jax.jit(train.population(run_member))
    seeds, lrs = [int(s) for s in hp["seed"]], [float(v) for v in hp["learning_rate"]]

    def sequential():
        return [single(s, lr)[1] for s, lr in zip(seeds, lrs)]

    np.testing.assert_allclose(np.stack(sequential())[:, -1], vmapped(hp)[1][:, -1], rtol=1e-3, atol=1e-4)
    reference = _handwritten(x, y)
    ref_single, ref_vmapped = jax.jit(reference), jax.jit(jax.vmap(reference))
    cases = {
        f"{POPULATION} runs one after another": best_time(sequential, repeats=2),
        f"{POPULATION} runs as one vmapped program": best_time(lambda: vmapped(hp), repeats=2),
        "reference: hand-written jnp, one after another": best_time(
            lambda: [ref_single(s, lr)[1] for s, lr in zip(seeds, lrs)], repeats=2),
        "reference: hand-written jnp, vmapped": best_time(
            lambda: ref_vmapped(hp["seed"], hp["learning_rate"]), repeats=2),
    }
    return report("population_vs_sequential", cases, f"{POPULATION} runs one after another",
                  {f"{POPULATION} runs as one vmapped program": 2.5})


BENCHMARKS = [scan_vs_python_loop, population_vs_sequential]
