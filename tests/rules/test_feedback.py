"""Feedback alignment, sign symmetry and DFA against backprop and numpy hand computations."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import nn, rules, train

N, D, H, H2, K = 6, 5, 4, 3, 3


def _data(dtype):
    x = np.asarray(jax.random.normal(jax.random.key(1), (N, D)), dtype)
    y = np.arange(N) % K
    return x, y


def _ce_error(logits, y):
    """e = ∂/∂logits of the mean softmax cross-entropy, in numpy."""
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p - np.eye(logits.shape[-1])[y]) / logits.shape[0]


def _multiplier(parameterization, fan_in):
    return 1.0 if parameterization == "standard" else 1.0 / np.sqrt(fan_in)  # W_std = 1


def _grads(model, params, state, x, y):
    def loss(p, xx):
        return train.softmax_cross_entropy(model.apply(p, xx, state), y)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)


@pytest.mark.float64
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("b_std", [0.5, None])
def test_fa_with_feedback_equal_to_weights_is_backprop(parameterization, b_std):
    x, y = _data(np.float64)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float64)
    fa = nn.serial(rules.FADense(H, 1.3, b_std, parameterization), nn.Tanh(),
                   rules.FADense(K, 1.0, b_std, parameterization))
    bp = nn.serial(nn.Dense(H, 1.3, b_std, parameterization), nn.Tanh(), nn.Dense(K, 1.0, b_std, parameterization))
    params, state = fa.init(jax.random.key(0), spec)
    bp_params, _ = bp.init(jax.random.key(0), spec)
    chex.assert_trees_all_equal(params, bp_params)  # FADense draws W, b as Dense does
    assert not np.allclose(state[0]["B"], params[0]["W"])
    transposed = ({"B": params[0]["W"]}, (), {"B": params[2]["W"]})
    got, want = _grads(fa, params, transposed, x, y), _grads(bp, params, (), x, y)
    chex.assert_trees_all_close(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.float64
@pytest.mark.parametrize("feedback", ["random", "sign"])
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_two_layer_fa_and_sign_symmetry_by_hand(feedback, parameterization):
    """z1 = m1 x W1 + b1, h = tanh(z1), y = m2 h W2 + b2; backward: δ2 = e, ∂x h-side through B."""
    x, y = _data(np.float64)
    model = nn.serial(rules.FADense(H, 1.0, 0.2, parameterization, feedback=feedback), nn.Tanh(),
                      rules.FADense(K, 1.0, 0.2, parameterization, feedback=feedback))
    params, state = model.init(jax.random.key(3), jax.ShapeDtypeStruct((1, D), jnp.float64))
    W1, b1, W2, b2 = (np.asarray(a) for a in (params[0]["W"], params[0]["b"], params[2]["W"], params[2]["b"]))
    B1, B2 = ((np.sign(W1), np.sign(W2)) if feedback == "sign"
              else (np.asarray(state[0]["B"]), np.asarray(state[2]["B"])))
    m1, m2 = _multiplier(parameterization, D), _multiplier(parameterization, H)
    mb = 1.0 if parameterization == "standard" else 0.2  # ntk: z = (W_std/√n) x W + b_std b
    h = np.tanh(m1 * x @ W1 + mb * b1)
    e = _ce_error(m2 * h @ W2 + mb * b2, y)
    delta1 = (m2 * e @ B2.T) * (1 - h ** 2)  # feedback matrix in place of W2
    (g, dx) = _grads(model, params, state, x, y)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-15)  # rows of e sum to 0: cancellations
    close(g[2]["W"], m2 * h.T @ e)
    close(g[2]["b"], mb * e.sum(0))
    close(g[0]["W"], m1 * x.T @ delta1)
    close(g[0]["b"], mb * delta1.sum(0))
    close(dx, m1 * delta1 @ B1.T)


@pytest.mark.float64
@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_block_mlp_with_feedback_is_fa_by_hand(feedback):
    """``block_mlp(..., dense=FADense with feedback)``: the params of ``block_mlp`` from the same key,
    and the gradients of the two-layer FA / sign-symmetry network written out in numpy (delta1
    through B2)."""
    x, y = _data(np.float64)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float64)
    model = rules.block_mlp([H], K, "tanh", b_std=0.2, dense=functools.partial(rules.FADense, feedback=feedback))
    params, state = model.init(jax.random.key(3), spec)
    chex.assert_trees_all_equal(params, rules.block_mlp([H], K, "tanh", b_std=0.2).init(jax.random.key(3), spec)[0])
    (W1, b1), (W2, b2) = ((np.asarray(p["W"]), np.asarray(p["b"])) for p in (params[0][0], params[1]))
    B2 = np.sign(W2) if feedback == "sign" else np.asarray(state["layers"][1]["B"])
    assert not np.allclose(B2, W2)
    h = np.tanh(x @ W1 + b1)
    e = _ce_error(h @ W2 + b2, y)
    delta1 = (e @ B2.T) * (1 - h ** 2)
    g, _ = _grads(model, params, state, x, y)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-15)
    close(g[1]["W"], h.T @ e)
    close(g[0][0]["W"], x.T @ delta1)
    close(g[0][0]["b"], delta1.sum(0))


def _dfa_by_hand(x, y, params, feedback, phi, dphi):
    """Nøkland (2016) eq. (3) in numpy: δ_l = (e B_l) ⊙ φ'(a_l), ΔW_l = h_{l-1}ᵀ δ_l; output: true gradient."""
    hs, acts = [x], []
    for (dense, _) in params[:-1]:
        acts.append(hs[-1] @ np.asarray(dense["W"]) + np.asarray(dense["b"]))
        hs.append(phi(acts[-1]))
    out = params[-1]
    e = _ce_error(hs[-1] @ np.asarray(out["W"]) + np.asarray(out["b"]), y)
    grads = []
    for l, a in enumerate(acts):
        delta = (e @ np.asarray(feedback[l])) * dphi(a)
        grads.append(({"W": hs[l].T @ delta, "b": delta.sum(0)}, ()))
    grads.append({"W": hs[-1].T @ e, "b": e.sum(0)})
    return tuple(grads)


@pytest.mark.float64
@pytest.mark.parametrize("widths", [(H,), (H, H2)], ids=["2-layer", "3-layer"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_dfa_update_is_its_formula(widths, act):
    x, y = _data(np.float64)
    model = rules.block_mlp(widths, K, act, b_std=0.3, feedback_std=1.7)
    params, state = model.init(jax.random.key(5), jax.ShapeDtypeStruct((1, D), jnp.float64))
    assert [B.shape for B in state["feedback"]] == [(K, w) for w in widths]
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    (loss, _), got = jax.jit(lambda p: rules.dfa()(lambda q: objective(q, state, (x, y), None), p, None))(params)
    fns = {"tanh": (np.tanh, lambda a: 1 - np.tanh(a) ** 2),
           "relu": (lambda a: np.maximum(a, 0), lambda a: (a > 0) * 1.0)}
    want = _dfa_by_hand(x, y, params, state["feedback"], *fns[act])
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(loss, train.softmax_cross_entropy(model.apply(params, x, state), y), rtol=1e-14)


@pytest.mark.float64
def test_block_serial_under_backprop_is_nn_serial():
    x, y = _data(np.float64)
    blocks = [nn.serial(nn.Dense(H, b_std=0.1), nn.Tanh()), nn.serial(nn.Dense(H2, b_std=0.1), nn.Relu()), nn.Dense(K)]
    model, reference = rules.block_serial(*blocks), nn.serial(*blocks)
    params, state = model.init(jax.random.key(2), jax.ShapeDtypeStruct((1, D), jnp.float64))
    ref_params, _ = reference.init(jax.random.key(2), jax.ShapeDtypeStruct((1, D), jnp.float64))
    chex.assert_trees_all_equal(params, ref_params)
    chex.assert_trees_all_equal(_grads(model, params, state, x, y), _grads(reference, params, (), x, y))
    spec = jax.ShapeDtypeStruct((1, D), jnp.float64)
    assert rules.block_mlp([H], K, parameterization="mup").lr_multipliers(spec) == \
        nn.serial(nn.serial(nn.Dense(H, parameterization="mup", role="input"), nn.Relu()),
                  nn.Dense(K, parameterization="mup", role="output")).lr_multipliers(spec)


def test_feedback_matrices_are_untouched_by_adamw_and_vmap_over_seeds():
    """FA, sign-symmetry and DFA matrices in one network (trained by DFA, its hidden blocks by FA
    rules): AdamW with weight decay moves every parameter and no state entry."""
    x, y = _data(np.float32)
    model = rules.block_serial(nn.serial(rules.FADense(8), nn.Relu()),
                               nn.serial(rules.FADense(8, feedback="sign"), nn.Relu()),
                               rules.FADense(K))
    opt = train.optimizer("adamw", learning_rate=1e-2, weight_decay=0.5)
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt, grad_estimator=rules.dfa())

    def init(seed):
        return train.init(model, opt, jax.random.key(seed), jax.ShapeDtypeStruct((1, D), jnp.float32))

    start = jax.jit(jax.vmap(init))(jnp.arange(2))
    assert len(jax.tree.leaves(start.model_state)) == 4  # B of two FADense(random) + two DFA matrices
    many = jax.jit(jax.vmap(step, in_axes=(0, None)))
    end = start
    for _ in range(3):
        end, metrics = many(end, (jnp.asarray(x), jnp.asarray(y)))
    chex.assert_trees_all_equal(start.model_state, end.model_state)  # bit-identical
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(end.params)))
    assert np.all(np.isfinite(metrics["loss"]))
    for B in jax.tree.leaves(start.model_state):  # one feedback matrix per member, from its own key
        assert not np.allclose(B[0], B[1])


def test_sign_symmetry_has_no_state_and_random_feedback_is_drawn_like_W():
    spec = jax.ShapeDtypeStruct((1, 200), jnp.float32)
    _, state = rules.FADense(100, 2.0, feedback="sign").init(jax.random.key(0), spec)
    assert state == ()
    params, state = jax.jit(lambda k: rules.FADense(100, 2.0).init(k, spec))(jax.random.key(0))
    assert state["B"].shape == params["W"].shape
    np.testing.assert_allclose(np.std(state["B"]), 2.0 / np.sqrt(200), rtol=0.03)  # N(0, W_std²/n)


@pytest.mark.parametrize("make, match", [
    (lambda: rules.FADense(3, feedback="transpose"), "feedback must be one of"),
    (lambda: rules.block_serial(nn.Dense(3)), "at least one hidden block"),
    (lambda: rules.block_serial(nn.Dense(3), "relu"), "argument 1 must be a jaxlearn.nn Layer"),
])
def test_bad_construction_is_one_line(make, match):
    with pytest.raises(nn.LayerError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def _abstract_init(model):
    return jax.eval_shape(lambda k: model.init(k, jax.ShapeDtypeStruct((1, D), jnp.float32)), jax.random.key(0))


def test_misuse_errors_name_the_problem():
    """Raised while tracing (checked abstractly: nothing compiles)."""
    x, y = _data(np.float32)
    fa = rules.FADense(K)
    with pytest.raises(nn.LayerError, match="state must hold the feedback matrix"):
        jax.eval_shape(fa.apply, _abstract_init(fa)[0], x)
    flat = nn.mlp([4], K)
    objective = train.make_objective(flat.apply_with_state, train.softmax_cross_entropy)
    with pytest.raises(ValueError, match="^dfa: the model must be a jaxlearn.rules.block_serial") as err:
        jax.eval_shape(lambda p: rules.dfa()(lambda q: objective(q, (), (x, y), None), p, None),
                       _abstract_init(flat)[0])
    assert "\n" not in str(err.value).split("\n-----")[0]  # jax appends its traceback note on a new line
    model = rules.block_mlp([4], K)
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    with pytest.raises(ValueError, match="no feedback matrices"):
        jax.eval_shape(lambda p: rules.dfa()(lambda q: objective(q, (), (x, y), None), p, None),
                       _abstract_init(model)[0])
    with pytest.raises(nn.LayerError, match="leading shape"):
        rules.block_serial(nn.Dense(4), nn.Flatten(), nn.Dense(3)).output_spec(
            jax.ShapeDtypeStruct((1, 2, 3), jnp.float32))
