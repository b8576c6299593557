"""EWC and the diagonal Fisher: per-example loops with jax.grad, Monte-Carlo convergence of the sampled
Fisher to its exact expectation, finite differences for the penalty."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, rules, train
from jaxlearn.rules.continual import ewc, ewc_combine, ewc_penalty, fisher_diagonal

N, D, C = 5, 3, 3
MODEL = nn.mlp([4], C, "tanh", b_std=0.5)


@functools.lru_cache(maxsize=None)
def _setup(dtype):
    """Data and params, drawn once per dtype (numpy draws and one jitted init: eager jax ops compile
    one by one)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, D)).astype(dtype)
    labels = np.array([0, 2, 1, 1, 0])
    targets = rng.normal(size=(N, C)).astype(dtype)
    params, _ = jax.jit(MODEL.init, static_argnums=1)(jax.random.key(0), jax.ShapeDtypeStruct((1, D), dtype))
    return x, labels, targets, params


def _apply(p, x):
    return MODEL.apply(p, x)


@functools.lru_cache(maxsize=None)
def _fisher_jit(kind, loss, batch_size):
    return jax.jit(lambda p, x, y, key: fisher_diagonal(_apply, p, x, kind=kind, y=y, key=key, loss=loss,
                                                        batch_size=batch_size))


@functools.lru_cache(maxsize=None)
def _per_example_fns(unravel):
    """Jitted per-example pieces of the loop below (compiled once, called per example)."""
    def out(theta, xn):
        return _apply(unravel(theta), xn[None])[0]

    score_ce = jax.jit(jax.grad(lambda t, xn, c: jax.nn.log_softmax(out(t, xn))[c]))
    score_mse = jax.jit(jax.grad(lambda t, xn, sample: -0.5 * jnp.sum((sample - out(t, xn)) ** 2)))
    return jax.jit(out), score_ce, score_mse, jax.jit(jax.jacobian(out))


def _loop_fisher(params, x, kind, loss, labels=None, targets=None, key=None):
    """F by a Python loop over examples: jax.grad of log p(ŷ_n | x_n) on the flattened params."""
    flat, unravel = ravel_pytree(params)
    out, score_ce, score_mse, jacobian = _per_example_fns(unravel)
    total = np.zeros_like(np.asarray(flat))
    for n in range(len(x)):
        f = np.asarray(out(flat, x[n]))
        k = None if key is None else jax.random.fold_in(key, n)
        if loss == "softmax_cross_entropy":
            p = np.exp(f - f.max()) / np.exp(f - f.max()).sum()
            score = [np.asarray(score_ce(flat, x[n], c)) for c in range(C)]
            if kind == "exact":
                total += sum(p[c] * score[c] ** 2 for c in range(C))
            else:
                c = int(jax.random.categorical(k, jnp.asarray(f))) if kind == "true" else int(labels[n])
                total += score[c] ** 2
        elif kind == "exact":
            total += (np.asarray(jacobian(flat, x[n])) ** 2).sum(0)  # Σ_k (∂f_k/∂θ)²
        else:
            sample = f + np.asarray(jax.random.normal(k, f.shape, f.dtype)) if kind == "true" else targets[n]
            total += np.asarray(score_mse(flat, x[n], sample)) ** 2
    return unravel(jnp.asarray(total / len(x)))


CASES = [(kind, loss, None) for loss in ("softmax_cross_entropy", "mse") for kind in ("true", "exact", "empirical")]
# chunks of 2 for 5 examples (the last one padded): the same F, the same samples
CASES += [("true", "softmax_cross_entropy", 2), ("exact", "mse", 2)]


@pytest.mark.float64
@pytest.mark.parametrize("kind, loss, batch_size", CASES)
def test_fisher_diagonal_is_the_per_example_loop(kind, loss, batch_size):
    x, labels, targets, params = _setup(np.float64)
    y = None if kind != "empirical" else (labels if loss == "softmax_cross_entropy" else targets)
    key = jax.random.key(4) if kind == "true" else None
    got = _fisher_jit(kind, loss, batch_size)(params, x, y, key)
    want = _loop_fisher(params, x, kind, loss, labels, targets, key)
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-15)


@pytest.mark.float64
def test_empirical_uses_the_labels_and_a_log_likelihood_function():
    x, labels, _, params = _setup(np.float64)
    run = _fisher_jit("empirical", "softmax_cross_entropy", None)
    a, b = ravel_pytree(run(params, x, labels, None))[0], ravel_pytree(run(params, x, (labels + 1) % C, None))[0]
    assert not np.allclose(a, b)
    as_function = fisher_diagonal(_apply, params, x, kind="empirical", y=labels,
                                  loss=lambda f, c: jax.nn.log_softmax(f)[c])
    np.testing.assert_allclose(ravel_pytree(as_function)[0], a, rtol=1e-12)


@pytest.mark.float64
def test_sampled_true_fisher_converges_to_the_exact_expectation():
    """M samples per example (the inputs repeated M times, each copy its own ŷ): the mean of M·N
    independent draws of g_c² (c ~ p) is within 5 standard errors, sd² = Σ_n Var_n / (N² M), of
    Σ_c p_c g_c², for every parameter. Fixed key: deterministic."""
    x, _, _, params = _setup(np.float64)
    M = 400
    exact = ravel_pytree(_fisher_jit("exact", "softmax_cross_entropy", None)(params, x, None, None))[0]
    sampled = ravel_pytree(fisher_diagonal(_apply, params, np.tile(x, (M, 1)), kind="true", key=jax.random.key(11),
                                           batch_size=500))[0]
    flat, unravel = ravel_pytree(params)
    scores = np.asarray(jax.jit(jax.vmap(jax.jacobian(
        lambda t, xn: jax.nn.log_softmax(_apply(unravel(t), xn[None])[0])), (None, 0)))(flat, x))  # (N, C, |θ|)
    logits = np.asarray(jax.jit(_apply)(params, x))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)  # (N, C)
    mean = np.einsum("nc,ncp->np", p, scores ** 2)
    var = np.einsum("nc,ncp->np", p, scores ** 4) - mean ** 2
    np.testing.assert_allclose(mean.mean(0), exact, rtol=1e-12)
    sd = np.sqrt(np.asarray(var.sum(0)) / (N ** 2 * M))
    assert np.all(np.abs(sampled - exact) <= 5 * sd + 1e-12), np.max(np.abs(sampled - exact) / (sd + 1e-30))
    assert np.max(np.abs(sampled - exact)) > 0  # sampled, not the closed form


@pytest.mark.float64
def test_fisher_is_not_the_squared_mean_gradient():
    """F − (mean g)² is the variance of the per-example scores: ≥ 0, and > 0 when examples disagree."""
    x, labels, _, params = _setup(np.float64)
    fisher = ravel_pytree(_fisher_jit("empirical", "softmax_cross_entropy", None)(params, x, labels, None))[0]
    mean_grad = ravel_pytree(jax.jit(jax.grad(lambda p: -train.softmax_cross_entropy(_apply(p, x), labels)))(params))[0]
    gap = fisher - mean_grad ** 2
    assert np.all(gap >= -1e-15)
    assert np.max(gap) > 0.1 * np.max(fisher)


def _anchor_and_fisher(params, dtype, seed=3):
    rng = np.random.default_rng(seed)
    anchor = jax.tree.map(lambda p: np.asarray(p) + 0.5 * rng.normal(size=p.shape).astype(dtype), params)
    fisher = jax.tree.map(lambda p: rng.uniform(size=p.shape).astype(dtype), params)
    return anchor, fisher


@pytest.mark.float64
def test_penalty_value_and_gradient():
    _, _, _, params = _setup(np.float64)
    anchor, fisher = _anchor_and_fisher(params, np.float64)
    lam = 3.5
    theta, a, f = (ravel_pytree(t)[0] for t in (params, anchor, fisher))
    value = jax.jit(ewc_penalty)(params, anchor, fisher, lam)
    np.testing.assert_allclose(value, 0.5 * lam * np.sum(np.asarray(f) * (np.asarray(theta) - np.asarray(a)) ** 2),
                               rtol=1e-13)
    unravel = ravel_pytree(params)[1]
    grad = ravel_pytree(jax.jit(jax.grad(ewc_penalty))(params, anchor, fisher, lam))[0]
    np.testing.assert_allclose(grad, lam * f * (theta - a), rtol=1e-13)
    eps = 1e-6
    penalty = jax.jit(lambda t: ewc_penalty(unravel(t), anchor, fisher, lam))
    for v in np.eye(len(theta))[:: 5]:  # central differences along coordinate directions
        fd = (penalty(theta + eps * v) - penalty(theta - eps * v)) / (2 * eps)
        np.testing.assert_allclose(fd, grad @ v, rtol=1e-7, atol=1e-9)


@pytest.mark.float64
def test_combined_tasks_have_the_gradient_of_summed_penalties():
    _, _, _, params = _setup(np.float64)
    (a1, f1), (a2, f2) = _anchor_and_fisher(params, np.float64), _anchor_and_fisher(params, np.float64, seed=4)
    f2 = jax.tree.map(lambda f: np.concatenate([0 * f[..., :1], f[..., 1:]], -1), f2)  # constrained by task 1 only
    anchor, fisher = ewc_combine([a1, a2], [f1, f2])
    want = jax.jit(jax.grad(lambda p: ewc_penalty(p, a1, f1, 2.0) + ewc_penalty(p, a2, f2, 2.0)))(params)
    got = jax.jit(jax.grad(ewc_penalty))(params, anchor, fisher, 2.0)
    chex.assert_trees_all_close(got, want, rtol=1e-11, atol=1e-13)


BLOCK_MODEL = rules.block_mlp([4], C, "tanh", b_std=0.5)


@functools.lru_cache(maxsize=None)
def _block_init(spec):
    return jax.jit(BLOCK_MODEL.init, static_argnums=1)(jax.random.key(0), spec)


@pytest.mark.float64
@pytest.mark.parametrize("base", [None, "dfa"])
def test_estimator_is_base_plus_penalty_gradient(base):
    x, labels, _, _ = _setup(np.float64)
    model = BLOCK_MODEL
    params, state = _block_init(jax.ShapeDtypeStruct((1, D), jnp.float64))
    anchor, fisher = _anchor_and_fisher(params, np.float64)
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)

    def closed(p):
        return objective(p, state, (x, labels), None)

    # a named base goes through the registry, which wraps ewc
    estimator = ewc(anchor, fisher, 0.7) if base is None else rules.estimator("ewc", anchor=anchor, fisher=fisher,
                                                                               strength=0.7, base=base)
    (loss, (_, metrics)), got = jax.jit(lambda p: estimator(closed, p, None))(params)

    @jax.jit
    def reference(p):
        task_loss = train.softmax_cross_entropy(model.apply(p, x, state), labels)
        if base is None:  # autodiff of the whole penalised objective
            return task_loss, jax.grad(lambda q: closed(q)[0] + ewc_penalty(q, anchor, fisher, 0.7))(p)
        _, dfa_grads = rules.dfa()(closed, p, None)
        return task_loss, jax.tree.map(lambda g, q, a, f: g + 0.7 * f * (q - a), dfa_grads, p, anchor, fisher)

    task_loss, want = reference(params)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss, task_loss + ewc_penalty(params, anchor, fisher, 0.7), rtol=1e-13)
    np.testing.assert_allclose(metrics["loss"], task_loss, rtol=1e-13)  # aux: the task loss alone


def test_jit_vmap_over_seeds():
    """Fisher vmapped over keys (one per member, different samples), and an EWC training step vmapped
    over seeds and strengths (λ = 0, 10; a traced λ): the penalty holds the parameters near the anchor."""
    x, labels, _, params = _setup(np.float32)
    keys = jax.random.split(jax.random.key(0), 2)
    fishers = jax.jit(jax.vmap(lambda k: fisher_diagonal(_apply, params, x, key=k)))(keys)
    assert not np.allclose(*(ravel_pytree(jax.tree.map(lambda f, i=i: f[i], fishers))[0] for i in range(2)))
    anchor = params
    fisher = jax.tree.map(lambda f: f[0] + 1.0, fishers)
    opt = train.optimizer("sgd", learning_rate=0.1)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float32)

    def step(state, lam):
        return train.make_step(MODEL.apply_with_state, train.softmax_cross_entropy, opt,
                               grad_estimator=ewc(anchor, fisher, lam))(state, (x, labels))

    state = jax.vmap(lambda k: train.init(MODEL, opt, k, spec))(keys)
    state = state._replace(params=jax.tree.map(lambda p: jnp.stack([p, p]), anchor))
    many = jax.jit(jax.vmap(step))
    for _ in range(20):
        state, metrics = many(state, jnp.asarray([0.0, 10.0]))
    drift = np.linalg.norm(jax.vmap(lambda p: ravel_pytree(p)[0])(state.params) - ravel_pytree(anchor)[0], axis=1)
    assert drift[1] < 0.5 * drift[0], drift
    assert np.all(np.isfinite(metrics["loss"]))


def test_bad_input_is_one_line():
    x, labels, targets, params = _setup(np.float32)
    anchor, fisher = _anchor_and_fisher(params, np.float32)
    cases = [
        (lambda: fisher_diagonal(_apply, params, x, kind="fisher", key=jax.random.key(0)), ValueError,
         "kind must be one of"),
        (lambda: fisher_diagonal(_apply, params, x), ValueError, "needs a PRNG key"),
        (lambda: fisher_diagonal(_apply, params, x, kind="empirical"), ValueError, "uses the labels y"),
        (lambda: fisher_diagonal(_apply, params, x, kind="exact", y=labels), ValueError, "y is used only by"),
        (lambda: fisher_diagonal(_apply, params, x, kind="empirical", y=labels[:3]), ValueError, "leading size 5"),
        (lambda: fisher_diagonal(_apply, params, x, kind="empirical", y=targets), ValueError, "integer class labels"),
        (lambda: fisher_diagonal(_apply, params, x, kind="empirical", y=targets[:, :2], loss="mse"), ValueError,
         "per-example output shape"),
        (lambda: fisher_diagonal(_apply, params, x, kind="exact", loss="hinge"), ValueError, "loss must be one of"),
        (lambda: fisher_diagonal(_apply, params, x, kind="exact", loss=lambda f, y: f[y]), ValueError,
         "needs kind='empirical'"),
        (lambda: fisher_diagonal(_apply, params, x, kind="empirical", y=labels, loss=train.softmax_cross_entropy),
         TypeError, "fisher_diagonal: loss: expected a per-example loss .* got the batch-mean loss"),
        (lambda: fisher_diagonal(_apply, params, x, kind="exact", batch_size=0), ValueError, "batch_size must be"),
        (lambda: fisher_diagonal("mlp", params, x, kind="exact"), TypeError, "apply_fn must be a function"),
        (lambda: ewc_penalty(params, anchor[:1], fisher, 1.0), ValueError,
         "ewc_penalty: anchor: structure differs from params"),
        (lambda: ewc_penalty(params, anchor, jax.tree.map(lambda f: f[..., :1], fisher), 1.0), ValueError,
         r"ewc_penalty: fisher: leaf .* has shape \(\d+, 1\), expected"),
        (lambda: ewc_penalty(params, anchor, fisher, -1.0), ValueError, "strength must be >= 0"),
        (lambda: ewc(anchor, fisher, -0.5), ValueError, "strength must be >= 0"),
        (lambda: ewc(anchor, fisher, "big"), TypeError, "strength must be a number"),
        (lambda: ewc(anchor, fisher, 1.0, base=3), TypeError, "base must be None"),
        (lambda: rules.estimator("ewc", anchor=anchor, fisher=fisher, strength=1.0, base="backprob"), ValueError,
         "did you mean 'backprop'"),
        (lambda: ewc(anchor, fisher[:1], 1.0), ValueError, "ewc: fisher: structure differs from anchor"),
        (lambda: ewc_combine([anchor], []), ValueError, "equally many"),
    ]
    for make, error, match in cases:
        with pytest.raises(error, match=match) as err:
            make()
        assert "\n" not in str(err.value), str(err.value)
    objective = train.make_objective(MODEL.apply_with_state, train.softmax_cross_entropy)
    other = jax.eval_shape(lambda k: MODEL.init(k, jax.ShapeDtypeStruct((1, 7), jnp.float32))[0], jax.random.key(0))
    with pytest.raises(ValueError, match=r"ewc: anchor: leaf .* as in params"):
        jax.eval_shape(lambda p: ewc(anchor, fisher, 1.0)(
            lambda q: objective(q, (), (np.zeros((N, 7), np.float32), labels), None), p, None), other)
