"""Training-loop benchmarks (issues: foundation; Performance II, item 1).

Fixed model: scikit-learn digits, MLP 64-32-10, batch 32, plain SGD, 1,000 steps. jaxlearn against
the same training written directly in ``jax.numpy`` (no jaxlearn), measured in the same run, so the
ratios say what jaxlearn's abstractions cost:

1. ``scan_vs_python_loop`` — one run as one ``lax.scan`` (``jaxlearn.train.train``) vs a
   hand-written scan that samples its batches the same way (``jaxlearn.data.get_batch``, the
   member's data key). Target: ≤ 1.1× the reference. A Python loop over a jitted step is shown
   for context (no target).
2. ``population_vs_sequential`` — 64 such MLPs (8 seeds × 8 learning rates) as one vmapped
   program (``jaxlearn.train.population``), two ways: every member with its own data order (a
   per-member gather each step) and all members sharing one data order (a data key that does not
   depend on the member: ``vmap`` computes the batch once per step for the group). References:
   hand-written, vmapped, with per-member shuffled gathers, and with one contiguous batch shared
   by all members. Targets: each jaxlearn way ≤ 1.1× its reference. The 64 runs one after another
   are shown for context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.harness import best_time, check, interleaved_best, report
from jaxlearn import data, nn, train

_SLACK = 1.1
NUM_STEPS, BATCH, POPULATION = 1000, 32, 64


def _setup(shared_order: bool = False):
    """jaxlearn's member: ``run_member(seed, learning_rate) -> (params, losses)``. With
    ``shared_order`` every member reads the batches of one data key (seed 0's), which does not
    depend on the member, so under ``vmap`` its batch indices and gather are computed once."""
    ds = data.digits(seed=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    model = nn.mlp([32], 10)
    shared_key = train.seed_data_key(0)

    def member_parts(seed, learning_rate):
        opt = train.optimizer("sgd", learning_rate=learning_rate)
        state = train.init(model, opt, jax.random.key(seed), ds.input_spec)
        step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt)
        return state, step

    def batch_fn(key, step):
        return data.get_batch(shared_key if shared_order else key, step, x, y, BATCH)

    def run_member(seed, learning_rate):
        state, step = member_parts(seed, learning_rate)
        state, metrics = train.train(state, step, batch_fn, NUM_STEPS)
        return state.params, metrics["train"]["loss"]

    return member_parts, batch_fn, run_member, (x, y)


def _handwritten(x, y, batches: str):
    """The same MLP and SGD written directly in jax.numpy, no jaxlearn: ``run(seed, learning_rate)
    -> (params, losses)``. ``batches``: ``"contiguous"`` (consecutive slices, the same for every
    member: shared), ``"shuffled"`` (each member its own epoch-wise permutations from
    ``jax.random.permutation``, gathered per step) or ``"get_batch"`` (jaxlearn's sampler on the
    data key ``jaxlearn.train.init`` gives the member: the same batches as jaxlearn's run)."""
    n = x.shape[0]
    per_epoch = n // BATCH
    epochs = -(-NUM_STEPS // per_epoch)

    def run(seed, learning_rate):
        k_init, k_data = jax.random.split(jax.random.key(seed))
        k1, k2 = jax.random.split(k_init)
        params = {"W1": jax.random.normal(k1, (64, 32)) / 8.0, "b1": jnp.zeros(32),
                  "W2": jax.random.normal(k2, (32, 10)) / np.sqrt(32.0), "b2": jnp.zeros(10)}
        if batches == "shuffled":
            orders = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(k_data, e), n))(jnp.arange(epochs))
        data_key = train.seed_data_key(seed)

        def loss(p, xb, yb):
            logits = jax.nn.relu(xb @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        def body(p, i):
            if batches == "contiguous":
                start = (i * BATCH) % (n - BATCH)
                xb, yb = jax.lax.dynamic_slice_in_dim(x, start, BATCH), jax.lax.dynamic_slice_in_dim(y, start, BATCH)
            elif batches == "shuffled":
                idx = jax.lax.dynamic_slice_in_dim(orders[i // per_epoch], (i % per_epoch) * BATCH, BATCH)
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = data.get_batch(data_key, i, x, y, BATCH)
            value, grads = jax.value_and_grad(loss)(p, xb, yb)
            return jax.tree.map(lambda a, g: a - learning_rate * g, p, grads), value

        return jax.lax.scan(body, params, jnp.arange(NUM_STEPS))

    return run


def _check_ratio(extra: dict, name: str, ours: float, reference: float) -> None:
    check(extra, f"{name} / its hand-written reference", ours / reference, _SLACK)


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
    reference = jax.jit(_handwritten(x, y, "get_batch"))
    cases = {"python loop of jitted steps": best_time(python_loop)}
    ours, ref = "lax.scan (train.train)", "reference: hand-written jnp scan, same batches (get_batch)"
    cases.update(interleaved_best({ours: lambda: scanned(0, 0.1), ref: lambda: reference(0, 0.1)}, rounds=3,
                                  repeats=5))
    extra = {}
    _check_ratio(extra, ours, cases[ours], cases[ref])
    return report("scan_vs_python_loop", cases, "python loop of jitted steps", {}, extra=extra)


def population_vs_sequential():
    _, _, run_member, (x, y) = _setup()
    _, _, run_shared, _ = _setup(shared_order=True)
    hp = train.grid(seed=list(range(8)), learning_rate=list(np.geomspace(0.01, 0.3, 8)))
    assert len(hp["seed"]) == POPULATION
    single = jax.jit(run_member)
    vmapped, shared = jax.jit(train.population(run_member)), jax.jit(train.population(run_shared))
    seeds, lrs = [int(s) for s in hp["seed"]], [float(v) for v in hp["learning_rate"]]

    def sequential():
        return [single(s, lr)[1] for s, lr in zip(seeds, lrs)]

    np.testing.assert_allclose(np.stack(sequential())[:, -1], vmapped(hp)[1][:, -1], rtol=1e-3, atol=1e-4)
    references = {kind: jax.jit(jax.vmap(_handwritten(x, y, kind))) for kind in ("shuffled", "contiguous")}
    timed = {
        f"{POPULATION} runs as one vmapped program, own data orders": lambda: vmapped(hp),
        f"{POPULATION} runs as one vmapped program, one shared data order": lambda: shared(hp),
        "reference: hand-written jnp, vmapped, per-member shuffled gathers":
            lambda: references["shuffled"](hp["seed"], hp["learning_rate"]),
        "reference: hand-written jnp, vmapped, shared contiguous batches":
            lambda: references["contiguous"](hp["seed"], hp["learning_rate"]),
    }
    cases = {f"{POPULATION} runs one after another": best_time(sequential, repeats=2)}
    cases.update(interleaved_best(timed, rounds=3, repeats=2))
    extra = {}
    names = list(timed)
    _check_ratio(extra, "own data orders", cases[names[0]], cases[names[2]])
    _check_ratio(extra, "one shared data order", cases[names[1]], cases[names[3]])
    return report("population_vs_sequential", cases, f"{POPULATION} runs one after another", {}, extra=extra)


BENCHMARKS = [scan_vs_python_loop, population_vs_sequential]
