"""Curves between minima (Garipov et al. 2018, §3): points against the formulas by hand, exact
endpoints, gradients w.r.t. the bend against the chain rule and finite differences, the sampled
t is uniform, paths against NumPy forward passes, and a trained curve between two digits MLPs
has a far lower barrier than the segment."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train
from jaxlearn import landscape as ls
from jaxlearn.landscape.connectivity import barrier, linear_path
from jaxlearn.landscape.curves import CURVES, curve_model, curve_path, curve_point


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.result_type(float))


def _hand(kind, w1, bend, w2, t):
    """φ_θ(t) written out from the paper's formulas, in numpy."""
    w1, bend, w2 = (np.asarray(a) for a in (w1, bend, w2))
    if kind == "bezier":
        return (1 - t) ** 2 * w1 + 2 * t * (1 - t) * bend + t ** 2 * w2
    if t <= 0.5:
        return 2 * (t * bend + (0.5 - t) * w1)
    return 2 * ((t - 0.5) * w2 + (1 - t) * bend)


def _bend_coefficient(kind, t):
    return 2 * t * (1 - t) if kind == "bezier" else 2 * min(t, 1 - t)


TS = np.array([0.0, 0.2, 0.5, 0.7, 1.0])


@pytest.mark.float64
@pytest.mark.parametrize("kind", CURVES)
def test_curve_point_equals_the_formulas_with_exact_endpoints(kind):
    w1, bend, w2 = ({"w": _normal(s, (3, 2)), "n": jnp.int32(7 + s)} for s in range(3))
    out = jax.jit(jax.vmap(lambda t: curve_point(w1, bend, w2, t, kind)))(TS)
    for i, t in enumerate(TS):
        np.testing.assert_allclose(out["w"][i], _hand(kind, w1["w"], bend["w"], w2["w"], t), rtol=1e-14, atol=1e-15)
    assert np.array_equal(out["w"][0], w1["w"]) and np.array_equal(out["w"][-1], w2["w"])  # bitwise endpoints
    if kind == "polychain":
        assert np.array_equal(out["w"][2], bend["w"])  # the bend is the chain's vertex
    assert np.array_equal(out["n"], np.full(len(TS), 7))  # non-floating leaves are w1's
    # vmap over bends: one curve per bend
    bends = {"w": jnp.stack([bend["w"], 2 * bend["w"]]), "n": jnp.array([7, 7])}
    many = jax.vmap(lambda b: curve_point(w1, b, w2, 0.7, kind))(bends)
    np.testing.assert_allclose(many["w"][1], _hand(kind, w1["w"], 2 * bend["w"], w2["w"], 0.7), rtol=1e-14)


@pytest.mark.float64
@pytest.mark.parametrize("kind", CURVES)
@pytest.mark.parametrize("t", [0.3, 0.8])
def test_gradient_wrt_bend_is_the_chain_rule_and_matches_finite_differences(kind, t):
    w1, bend, w2, direction = (_normal(s, (4, 3)) for s in range(4))
    target = _normal(5, (4, 3))

    def loss(point):  # a non-quadratic function of the point
        return jnp.sum(jnp.sin(point) * target) + 0.5 * jnp.sum(point ** 4)

    f = jax.jit(lambda b: loss(curve_point(w1, b, w2, t, kind)))
    grad = jax.grad(f)(bend)
    point = _hand(kind, w1, bend, w2, t)
    by_hand = _bend_coefficient(kind, t) * (np.cos(point) * np.asarray(target) + 2 * point ** 3)  # c_θ(t) ∇L(φ)
    np.testing.assert_allclose(grad, by_hand, rtol=1e-12)
    eps = 1e-5
    fd = (f(bend + eps * direction) - f(bend - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-8)
    _, tangent = jax.jvp(f, (bend,), (direction,))  # forward mode works too (no custom_vjp)
    np.testing.assert_allclose(tangent, jnp.vdot(grad, direction), rtol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("kind", CURVES)
def test_curve_model_draws_t_uniformly_from_its_key(kind):
    # a 1x1 Dense without bias whose weight runs along the curve as a known function of t:
    # bezier with (w1, θ, w2) = (0, 0, 1) gives φ(t) = t², the chain with (0, ½, 1) gives φ(t) = t
    model = nn.Dense(1)
    zero = {"W": jnp.zeros((1, 1)), "b": jnp.zeros(1)}
    one = {"W": jnp.ones((1, 1)), "b": jnp.zeros(1)}
    curve = curve_model(model, zero, one, kind)
    bend, state = curve.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 1), jnp.float64))
    np.testing.assert_array_equal(bend["W"], 0.5 * np.ones((1, 1)))  # initialised at the midpoint
    assert set(state) == {"w1", "w2", "model"} and np.array_equal(state["w2"]["W"], one["W"])
    if kind == "bezier":
        bend = zero
    keys = jax.random.split(jax.random.key(1), 4000)
    x = jnp.ones((1, 1))
    y = jax.jit(jax.vmap(lambda k: curve.apply(bend, x, state, key=k, train=True)))(keys)[:, 0, 0]
    t = np.sort(np.sqrt(np.asarray(y)) if kind == "bezier" else np.asarray(y))
    ks = np.max(np.abs(t - np.arange(1, len(t) + 1) / len(t)))  # Kolmogorov–Smirnov distance to U[0, 1]
    assert ks < 1.63 / np.sqrt(len(t))  # the 1% critical value
    assert len(np.unique(t)) == len(t)


def _np_mlp(params, x):
    (l0, _, l2) = [jax.tree.map(np.asarray, p) for p in params]
    return np.tanh(x @ l0["W"] + l0["b"]) @ l2["W"] + l2["b"]


def _np_ce(logits, labels):
    shifted = logits - logits.max(-1, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(labels)), labels]


@pytest.mark.float64
@pytest.mark.parametrize("kind", CURVES)
def test_curve_path_equals_numpy_forward_passes(kind):
    model = nn.mlp([5], 3, activation="tanh")
    shapes = jax.eval_shape(lambda k: model.init(k, jax.ShapeDtypeStruct((1, 4), jnp.float64))[0], jax.random.key(0))
    w1, bend, w2 = (jax.tree.map(lambda s, i=i: _normal(10 * i + len(s.shape), s.shape), shapes) for i in range(3))
    x, y = np.asarray(_normal(7, (11, 4))), np.arange(11) % 3
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (jnp.asarray(x), jnp.asarray(y)), 4)

    def zero_readout(point):  # a reset that makes every logit 0: loss log 3 exactly
        return (point[0], point[1], jax.tree.map(jnp.zeros_like, point[2]))

    run = jax.jit(lambda a, m, b: (curve_path(objective, a, m, b, 5, kind=kind),
                                   curve_path(objective, a, m, b, kind=kind, ts=[0.0, 0.5, 1.0], reset=zero_readout)))
    path, reset = run(w1, bend, w2)
    for i, t in enumerate(np.linspace(0, 1, 5)):
        point = jax.tree.map(lambda a, m, b: _hand(kind, a, m, b, t), w1, bend, w2)
        logits = _np_mlp(point, x)
        np.testing.assert_allclose(path["loss"][i], _np_ce(logits, y).mean(), rtol=1e-13)
        np.testing.assert_allclose(path["accuracy"][i], np.mean(logits.argmax(-1) == y), rtol=1e-13)
    np.testing.assert_allclose(path["loss"][0], ls.dataset_loss(objective, w1), rtol=1e-14)
    np.testing.assert_allclose(path["loss"][-1], ls.dataset_loss(objective, w2), rtol=1e-14)
    np.testing.assert_allclose(reset["loss"], np.full(3, np.log(3)), rtol=1e-14)
    np.testing.assert_array_equal(reset["t"], [0.0, 0.5, 1.0])
    b = barrier(path["loss"], path["t"])
    values = np.asarray(path["loss"])
    np.testing.assert_allclose(b.mean, values.max() - 0.5 * (values[0] + values[-1]), rtol=1e-14)


# -- a trained curve on digits ------------------------------------------------------------------
_MODEL = nn.mlp([16], 10, activation="relu", W_std=np.sqrt(2.0))
_OPT = optax.adam(1e-2)


def _fit(model, x, y, key, steps):
    state = train.init(model, _OPT, key, jax.ShapeDtypeStruct((1, 64), x.dtype))
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, _OPT)
    return train.train(state, step, lambda k, s: data.get_batch(k, s, x, y, 128), steps)[0]


@pytest.mark.slow
def test_trained_bezier_curve_between_two_digits_mlps_has_a_much_lower_barrier():
    # one kind (compile time): the chain differs only in its coefficients, tested above
    kind = "bezier"
    ds = data.digits(seed=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    fit = jax.jit(lambda k: _fit(_MODEL, x, y, k, 300).params)
    w1, w2 = fit(jax.random.key(1)), fit(jax.random.key(2))  # two independent runs
    curve = curve_model(_MODEL, w1, w2, kind)
    state = jax.jit(lambda k: _fit(curve, x, y, k, 300))(jax.random.key(3))  # the ordinary loop, θ only
    assert np.array_equal(state.model_state["w1"][0]["W"], w1[0]["W"])  # the endpoints are not trained
    objective = ls.ModelObjective(_MODEL.apply, ls.softmax_cross_entropy, (x, y), None)
    line = jax.jit(lambda a, b: linear_path(objective, a, b, 11))(w1, w2)
    along = jax.jit(lambda a, m, b: curve_path(objective, a, m, b, 11, kind=kind))(w1, state.params, w2)
    ends = [0, -1]  # the same endpoints
    np.testing.assert_allclose(np.asarray(along["loss"])[ends], np.asarray(line["loss"])[ends], rtol=1e-6)
    straight, curved = barrier(line["loss"], line["alpha"]), barrier(along["loss"], along["t"])
    print(f"\n{kind}: endpoint losses {float(line['loss'][0]):.3f}, {float(line['loss'][-1]):.3f}; "
          f"barrier (linear) segment {float(straight.linear):.3f} -> curve {float(curved.linear):.3f}")
    assert float(line["loss"][0]) < 0.2 and float(straight.linear) > 0.5  # trained, with a real barrier
    assert float(curved.linear) < 0.1 * float(straight.linear)
    assert float(curved.mean) < 0.1 * float(straight.mean)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    w = {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"kind: expected one of \['bezier', 'polychain'\], got 'bezeir' "
                                         r"\(did you mean 'bezier'\?\)"):
        curve_point(w, w, w, 0.5, "bezeir")
    with pytest.raises(ValueError, match=r"w2: leaf \['W'\] has shape \(3, 2\), expected \(2, 3\) as in w1"):
        curve_point(w, w, {"W": jnp.ones((3, 2)), "b": jnp.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match=r"bend: structure differs from w1"):
        curve_point(w, {"W": w["W"]}, w, 0.5)
    with pytest.raises(ValueError, match=r"t: expected a real scalar in \[0, 1\]"):
        curve_point(w, w, w, jnp.array([0.5]))
    with pytest.raises(ValueError, match=r"t: expected a value in \[0, 1\].*got 1.5"):
        curve_point(w, w, w, 1.5)
    model = nn.Dense(3)
    with pytest.raises(TypeError, match="model: expected a jaxlearn.nn Layer"):
        curve_model(lambda p, x: x, w, w)
    with pytest.raises(ValueError, match=r"w1: leaf \['W'\] has shape \(2, 3\), expected \(4, 3\) as in the model's"):
        jax.eval_shape(lambda k: curve_model(model, w, w).init(k, jax.ShapeDtypeStruct((1, 4), jnp.float32)),
                       jax.random.key(0))
    curve = curve_model(model, w, w, "polychain")
    bend, state = jax.eval_shape(lambda k: curve.init(k, jax.ShapeDtypeStruct((1, 2), jnp.float32)), jax.random.key(0))
    with pytest.raises(ValueError, match="key: the curve model draws t ~ U"):
        curve.apply(bend, jnp.ones((1, 2)), state)
    with pytest.raises(ValueError, match="state: expected the curve model's state"):
        curve.apply(bend, jnp.ones((1, 2)), (), key=jax.random.key(0))
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (jnp.ones((4, 2)), jnp.zeros(4, int)))
    with pytest.raises(TypeError, match="objective: expected a ModelObjective"):
        curve_path(model.apply, w, w, w)
    with pytest.raises(ValueError, match="num_points: expected an int >= 2"):
        curve_path(objective, w, w, w, 1)
    with pytest.raises(ValueError, match=r"ts: expected values in \[0, 1\]"):
        curve_path(objective, w, w, w, ts=[0.0, 2.0])
    with pytest.raises(TypeError, match="reset: expected a callable"):
        curve_path(objective, w, w, w, reset=3)
