"""Hessian- and Gauss–Newton-vector products against dense matrices (float64)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import landscape as ls
from jaxlearn import nn, train
from jaxlearn.landscape.objective import ModelObjective, dataset_loss, mse, softmax_cross_entropy


@jax.custom_vjp
def _tanh_rule(x):
    return jnp.tanh(x)


def _tanh_fwd(x):
    return jnp.tanh(x), x


def _tanh_bwd(x, g):
    return (g * (1.0 - jnp.tanh(x) ** 2),)  # the exact derivative, written as a rule


_tanh_rule.defvjp(_tanh_fwd, _tanh_bwd)


def _setup(activation="tanh", loss="ce", batch_size=4):
    act = nn.Elementwise(_tanh_rule, name="tanh_rule") if activation == "rule" else nn.Tanh()
    model = nn.serial(nn.Dense(6), act, nn.Dense(3))
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.result_type(float)))
    x = jax.random.normal(jax.random.key(1), (10, 4))
    if loss == "ce":
        y, per_example = jnp.arange(10) % 3, softmax_cross_entropy
    elif loss == "mse":
        y, per_example = jax.random.normal(jax.random.key(2), (10, 3)), mse
    else:  # a loss without a closed form: the generic output-Hessian path
        y, per_example = jax.random.normal(jax.random.key(2), (10, 3)), lambda o, t: jnp.sum(jnp.cosh(o - t))
    return model, params, ModelObjective(model.apply, per_example, (x, y), batch_size)


def _jhvp(loss, params, v, block=None):
    return jax.jit(lambda p, t, b: ls.hvp(loss, p, t, block=b))(params, v, block)


def _jggn(objective, params, v, block=None):
    return jax.jit(lambda p, t, b: ls.ggn_vp(objective, p, t, block=b))(params, v, block)


def _mask(block, params):
    return np.asarray(ravel_pytree(jax.tree.map(lambda b, a: jnp.full(a.shape, b), block, params))[0]).astype(bool)


def _dense(objective, params):
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda f: dataset_loss(objective._replace(batch_size=None), unravel(f))))(flat)
    return flat, unravel, np.asarray(hessian)


def _dense_ggn(model, objective, params):
    flat, unravel = ravel_pytree(params)
    x, y = objective.data
    jac = jax.jit(jax.jacobian(lambda f: model.apply(unravel(f), x)))(flat)  # (N, K, P)
    out = model.apply(params, x)
    h_out = jax.jit(jax.vmap(jax.hessian(objective.per_example_loss)))(out, y)  # (N, K, K), not our closed forms
    return np.einsum("nkp,nkl,nlq->pq", jac, h_out, jac) / x.shape[0]


@pytest.mark.float64
@pytest.mark.parametrize("batch_size", [None, 4, 10])  # 4: two full chunks and a ragged one of 2
@pytest.mark.parametrize("as_fn", [False, True])
def test_hvp_equals_dense_hessian(batch_size, as_fn):
    model, params, objective = _setup(batch_size=batch_size)
    flat, unravel, hessian = _dense(objective, params)
    v = jax.random.normal(jax.random.key(3), flat.shape)
    loss = (lambda p: dataset_loss(objective, p)) if as_fn else objective
    got = jax.jit(lambda p, t: _jhvp(loss, p, t))(params, unravel(v))
    np.testing.assert_allclose(ravel_pytree(got)[0], hessian @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.float64
def test_reverse_over_reverse_fallback_equals_dense_hessian(monkeypatch):
    _, params, objective = _setup()
    flat, unravel, hessian = _dense(objective, params)
    monkeypatch.setattr(ls.curvature, "has_forward_mode", lambda fn, *args: False)
    v = jax.random.normal(jax.random.key(8), flat.shape)
    np.testing.assert_allclose(ravel_pytree(_jhvp(objective, params, unravel(v)))[0], hessian @ v,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.float64
def test_custom_vjp_rules_hvp_and_ggn():
    _, params, rule_objective = _setup(activation="rule")
    _, _, plain_objective = _setup(activation="tanh")
    # no forward mode through the rule itself (the GGN's J v); JAX can differentiate the rule's
    # backward pass forward, so HVPs still take the jvp-of-grad path, with the rule's derivative
    assert not ls.curvature.has_forward_mode(lambda p: rule_objective.apply_fn(p, rule_objective.data[0]), params)
    flat, unravel, hessian = _dense(plain_objective, params)
    v = jax.random.normal(jax.random.key(4), flat.shape)
    got = _jhvp(rule_objective, params, unravel(v))
    np.testing.assert_allclose(ravel_pytree(got)[0], hessian @ v, rtol=1e-10, atol=1e-12)
    ggn_rule = _jggn(rule_objective, params, unravel(v))
    ggn_plain = _jggn(plain_objective, params, unravel(v))
    chex.assert_trees_all_close(ggn_rule, ggn_plain, rtol=1e-10, atol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("loss", ["ce", "mse", "generic"])
def test_ggn_equals_dense_jacobian_product(loss):
    model, params, objective = _setup(loss=loss, batch_size=4)
    ggn = _dense_ggn(model, objective, params)
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(5), flat.shape)
    got = ravel_pytree(_jggn(objective, params, unravel(v)))[0]
    np.testing.assert_allclose(got, ggn @ v, rtol=1e-10, atol=1e-12)
    if loss == "mse":  # a network linear in its last layer: GGN equals the Hessian on that block
        block = jax.tree.map(lambda _: False, params)
        block = (block[0], block[1], jax.tree.map(lambda _: True, params[2]))
        _, _, hessian = _dense(objective, params)
        mask = _mask(block, params)
        w = np.where(mask, np.asarray(v), 0.0)
        np.testing.assert_allclose(ravel_pytree(_jggn(objective, params, unravel(w), block=block))[0][mask],
                                   (hessian @ w)[mask], rtol=1e-10, atol=1e-12)


@pytest.mark.float64
def test_block_operator_is_the_projected_submatrix():
    _, params, objective = _setup()
    flat, unravel, hessian = _dense(objective, params)
    block = (jax.tree.map(lambda _: True, params[0]), (), jax.tree.map(lambda _: False, params[2]))
    mask = _mask(block, params)
    v = jax.random.normal(jax.random.key(6), flat.shape)
    got = np.asarray(ravel_pytree(_jhvp(objective, params, unravel(v), block=block))[0])
    np.testing.assert_allclose(got[mask], hessian[np.ix_(mask, mask)] @ np.asarray(v)[mask], rtol=1e-10, atol=1e-12)
    assert np.all(got[~mask] == 0.0)


@pytest.mark.float64
@pytest.mark.parametrize("kind, case", [("hessian", "objective"), ("hessian", "fn"), ("hessian", "rule"),
                                        ("hessian", "block"), ("ggn", "objective"), ("ggn", "rule"), ("ggn", "block")])
def test_quadratic_form_equals_dense(kind, case):
    model, params, objective = _setup(activation="rule" if case == "rule" else "tanh", batch_size=4)
    plain_model, _, plain = _setup(batch_size=4)
    dense = _dense_ggn(plain_model, plain, params) if kind == "ggn" else _dense(plain, params)[2]
    flat, unravel = ravel_pytree(params)
    v = np.asarray(jax.random.normal(jax.random.key(9), flat.shape))
    block = None
    if case == "block":
        block = (jax.tree.map(lambda _: True, params[0]), (), jax.tree.map(lambda _: False, params[2]))
        v = np.where(_mask(block, params), v, 0.0)
        v_outside = np.where(_mask(block, params), 0.0, 1.0)  # must be ignored
    loss = (lambda p: dataset_loss(objective, p)) if case == "fn" else objective
    given = v + v_outside if case == "block" else v
    got = jax.jit(lambda p, t: ls.quadratic_form(loss, p, t, kind=kind, block=block))(params, unravel(given))
    np.testing.assert_allclose(got, v @ dense @ v, rtol=1e-10)


def test_vmap_over_vectors_and_params():
    _, params, objective = _setup(batch_size=5)
    flat, unravel = ravel_pytree(params)
    vs = jax.random.normal(jax.random.key(7), (3,) + flat.shape, flat.dtype)
    one = jax.jit(lambda p, f: ravel_pytree(_jhvp(objective, p, unravel(f)))[0])
    batched = jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, vs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], one(params, vs[i]), rtol=1e-5, atol=1e-6)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    over_params = jax.jit(jax.vmap(one, in_axes=(0, None)))(stacked, vs[0])
    np.testing.assert_allclose(over_params[1], one(jax.tree.map(lambda a: 2 * a, params), vs[0]), rtol=1e-5, atol=1e-6)


def test_bad_input_messages():
    _, params, objective = _setup()
    with pytest.raises(ValueError, match=r"^v: leaf \[0\]\['W'\] has shape \(6, 4\), expected \(4, 6\) as in params$"):
        ls.hvp(objective, params, (dict(params[0], W=jnp.zeros((6, 4))), (), params[2]))
    with pytest.raises(ValueError, match=r"^v: structure differs from params"):
        ls.hvp(objective, params, params[0])
    with pytest.raises(ValueError, match="loss_fn: must return a scalar, got shape"):
        ls.hvp(lambda p: p[0]["W"], params, params)
    with pytest.raises(TypeError, match="Gauss–Newton products need a ModelObjective"):
        ls.ggn_vp(lambda p: 0.0, params, params)
    with pytest.raises(ValueError, match="kind: expected 'hessian' or 'ggn'"):
        ls.operator(objective, params, kind="fisher")
    with pytest.raises(ValueError, match="kind: expected 'hessian' or 'ggn'"):
        ls.quadratic_form(objective, params, params, kind="fisher")
    with pytest.raises(TypeError, match="Gauss–Newton products need a ModelObjective"):
        ls.quadratic_form(lambda p: 0.0, params, params, kind="ggn")
    with pytest.raises(ValueError, match="objective.batch_size"):
        ls.hvp(objective._replace(batch_size=0), params, params)


def _counting(fn, calls):
    def counted(output, target):
        calls.append(1)  # at trace time
        return fn(output, target)

    return counted


def _cosh(output, target):
    return jnp.sum(jnp.cosh(output - target))


# (per-example loss, targets): each declared closed form, and a loss that declares none
DECLARED = {
    "ce-labels": (softmax_cross_entropy, lambda n: jnp.arange(n) % 3),
    "ce-probabilities": (softmax_cross_entropy, lambda n: jax.nn.softmax(jax.random.normal(jax.random.key(2), (n, 3)))),
    "mse": (mse, lambda n: jax.random.normal(jax.random.key(2), (n, 3))),
    "hinge": (train.per_example_hinge, lambda n: jnp.arange(n) % 3),
    "undeclared": (train.PerExampleLoss(_cosh), lambda n: jax.random.normal(jax.random.key(2), (n, 3))),
}


@pytest.mark.float64
@pytest.mark.parametrize("case", sorted(DECLARED))
def test_ggn_takes_the_output_hessian_the_loss_declares(case):
    """G v and vᵀ G v against J^T H J from full Jacobians and jax.hessian of the per-example loss w.r.t.
    the outputs; with a declared product the loss itself is never traced (the closed form is used),
    without one it is (the exact jvp of grad)."""
    loss, targets = DECLARED[case]
    model, params, objective = _setup(batch_size=4)
    calls = []
    counted = train.PerExampleLoss(_counting(loss.fn, calls), loss.output_hvp)
    objective = objective._replace(per_example_loss=counted, data=(objective.data[0], targets(10)))
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.key(5), flat.shape)
    got = ravel_pytree(_jggn(objective, params, unravel(v)))[0]
    form = jax.jit(lambda p, t: ls.quadratic_form(objective, p, t, kind="ggn"))(params, unravel(v))
    assert (len(calls) == 0) == (loss.output_hvp is not None), len(calls)
    ggn = _dense_ggn(model, objective, params)
    np.testing.assert_allclose(got, ggn @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(form, v @ ggn @ v, rtol=1e-10, atol=1e-14)
    if case == "hinge":  # piecewise linear: no output curvature
        assert np.all(ggn == 0.0)


def test_batch_mean_loss_in_a_model_objective_is_a_one_line_error_before_tracing():
    model, params, objective = _setup()
    traced = []

    def apply(p, x):
        traced.append(1)
        return model.apply(p, x)

    x, _ = objective.data
    wrong = ModelObjective(apply, train.mse, (x, jnp.zeros((10, 3))))
    calls = [lambda: ls.ggn_vp(wrong, params, params), lambda: ls.hvp(wrong, params, params),
             lambda: ls.quadratic_form(wrong, params, params, kind="ggn"), lambda: ls.dataset_loss(wrong, params),
             lambda: ls.m_sharpness(wrong, params, 0.05, 5)]
    for call in calls:
        with pytest.raises(TypeError, match=r"^(objective|loss)\.per_example_loss: expected a per-example loss "
                                            r"\(output, target\) -> scalar for ONE example, got the batch-mean loss "
                                            r"'mse'") as err:
            call()
        assert "\n" not in str(err.value)
    assert not traced


def test_project_is_a_deprecated_alias_of_restrict():
    _, params, _ = _setup()
    block = (jax.tree.map(lambda _: True, params[0]), (), jax.tree.map(lambda _: False, params[2]))
    with pytest.warns(DeprecationWarning, match=r"curvature\.project is deprecated: use "
                                                r"jaxlearn\.landscape\.curvature\.restrict"):
        old = ls.curvature.project(params, block)
    new = ls.restrict(params, block)
    assert ls.restrict is ls.curvature.restrict
    chex.assert_trees_all_equal(old, new)
    assert np.all(np.asarray(new[2]["W"]) == 0.0) and np.all(new[0]["W"] == params[0]["W"])
