"""standard / ntk / mup parameterizations: forward equivalence, gradient scaling (chain rule),
init statistics, muP learning-rate multipliers, and traced hyperparameters (populations)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn.nn as nn

F64 = pytest.mark.float64
TOL = dict(rtol=1e-12, atol=1e-12)


def spec(*shape, dtype=jnp.float64):
    return jax.ShapeDtypeStruct(shape, dtype)


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


# -- ntk ⇔ standard ---------------------------------------------------------------------------

WEIGHT_LAYERS = [
    # (id, builder(parameterization, W_std, b_std), input shape, fan_in)
    ("dense", lambda p, w, b: nn.Dense(6, W_std=w, b_std=b, parameterization=p), (5, 7), 7),
    ("conv1d", lambda p, w, b: nn.Conv(4, (3,), strides=2, padding="SAME", W_std=w, b_std=b, parameterization=p),
     (2, 9, 3), 9),
    ("conv2d", lambda p, w, b: nn.Conv(4, (3, 2), W_std=w, b_std=b, parameterization=p), (2, 6, 5, 3), 18),
]


def ntk_to_standard(p_ntk, W_std, b_std, fan_in):
    """W_sp = W_std·w/√n, b_sp = b_std·β (jaxlearn.nn.parameterization)."""
    out = {"W": p_ntk["W"] * (W_std / np.sqrt(fan_in))}
    if "b" in p_ntk:
        out["b"] = p_ntk["b"] * b_std
    return out


def draw_like(layer, in_spec, seed):
    shapes, _ = jax.eval_shape(lambda k: layer.init(k, in_spec), jax.random.key(0))
    return {name: jnp.asarray(normal(seed + i, *s.shape)) for i, (name, s) in enumerate(sorted(shapes.items()))}


@F64
@pytest.mark.parametrize("W_std, b_std", [(1.0, 0.0), (1.7, 0.3), (0.6, 2.5)])
@pytest.mark.parametrize("case", WEIGHT_LAYERS, ids=lambda c: c[0])
def test_ntk_equals_standard_forward_and_scaled_gradients(case, W_std, b_std):
    _, build, shape, fan_in = case
    ntk, std = build("ntk", W_std, b_std), build("standard", W_std, b_std)
    x = jnp.asarray(normal(1, *shape))
    p_ntk = draw_like(ntk, spec(*shape), seed=2)
    p_sp = ntk_to_standard(p_ntk, W_std, b_std, fan_in)
    r = jnp.asarray(normal(3, *std.output_spec(spec(*shape)).shape))

    def loss(layer):
        return lambda p: jnp.sum(layer.apply(p, x) * r)

    (y_ntk, g_ntk), (y_sp, g_sp) = jax.jit(
        lambda a, b: ((ntk.apply(a, x), jax.grad(loss(ntk))(a)), (std.apply(b, x), jax.grad(loss(std))(b)))
    )(p_ntk, p_sp)
    np.testing.assert_allclose(y_ntk, y_sp, **TOL)
    np.testing.assert_allclose(g_ntk["W"], W_std / np.sqrt(fan_in) * np.asarray(g_sp["W"]), **TOL)
    np.testing.assert_allclose(g_ntk["b"], b_std * np.asarray(g_sp["b"]), **TOL)


def mlp(parameterization, W_std, b_std, act=nn.Erf):
    kw = dict(W_std=W_std, b_std=b_std, parameterization=parameterization)
    return nn.serial(nn.Dense(16, **kw), act(), nn.Dense(12, **kw), nn.Relu(), nn.Dense(3, **kw))


@F64
def test_ntk_equals_standard_for_a_three_layer_mlp():
    W_std, b_std, fans = 1.4, 0.2, (5, 16, 12)
    ntk, std = mlp("ntk", W_std, b_std), mlp("standard", W_std, b_std)
    in_spec = spec(7, 5)
    x = jnp.asarray(normal(4, 7, 5))
    r = jnp.asarray(normal(5, 7, 3))
    shapes, _ = jax.eval_shape(lambda k: ntk.init(k, in_spec), jax.random.key(0))
    rng = np.random.default_rng(6)
    p_ntk = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape)), shapes)
    dense_idx = (0, 2, 4)
    p_sp = list(p_ntk)
    for i, n in zip(dense_idx, fans):
        p_sp[i] = ntk_to_standard(p_ntk[i], W_std, b_std, n)
    p_sp = tuple(p_sp)

    def loss(model):
        return lambda p: jnp.sum(model.apply(p, x) * r)

    y_ntk, g_ntk, y_sp, g_sp = jax.jit(
        lambda a, b: (ntk.apply(a, x), jax.grad(loss(ntk))(a), std.apply(b, x), jax.grad(loss(std))(b))
    )(p_ntk, p_sp)
    np.testing.assert_allclose(y_ntk, y_sp, **TOL)
    for i, n in zip(dense_idx, fans):
        np.testing.assert_allclose(g_ntk[i]["W"], W_std / math.sqrt(n) * np.asarray(g_sp[i]["W"]), **TOL)
        np.testing.assert_allclose(g_ntk[i]["b"], b_std * np.asarray(g_sp[i]["b"]), **TOL)


# -- init statistics (float32; large layers, loose tolerances) ---------------------------------


FAN_IN, WIDTH, W_STD, B_STD = 256, 1024, 1.5, 0.5


@pytest.mark.parametrize(
    "parameterization, role, w_std, b_std",
    [
        ("standard", None, W_STD / math.sqrt(FAN_IN), B_STD),
        ("ntk", None, 1.0, 1.0),
        ("mup", "input", W_STD / math.sqrt(FAN_IN), B_STD),
        ("mup", "hidden", W_STD / math.sqrt(FAN_IN), B_STD),
        ("mup", "output", W_STD / FAN_IN, B_STD),
    ],
)
def test_dense_init_statistics(parameterization, role, w_std, b_std, key):
    layer = nn.Dense(WIDTH, W_std=W_STD, b_std=B_STD, parameterization=parameterization, role=role)
    params, _ = layer.init(key, spec(2, FAN_IN, dtype=jnp.float32))
    W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
    assert W.shape == (FAN_IN, WIDTH) and b.shape == (WIDTH,)
    # 262144 weights: relative std error of the std ≈ 0.14%; 1024 biases: ≈ 2.2%
    np.testing.assert_allclose(W.std(), w_std, rtol=0.01)
    assert abs(W.mean()) < 5 * w_std / math.sqrt(W.size)
    np.testing.assert_allclose(b.std(), b_std, rtol=0.12)


@pytest.mark.parametrize("parameterization, want", [("standard", 0.8 / 12.0), ("ntk", 1.0)])
def test_conv_and_embedding_init_statistics(parameterization, want, key):
    conv = nn.Conv(64, (3, 3), W_std=0.8, b_std=None, parameterization=parameterization)
    params, _ = conv.init(key, spec(2, 8, 8, 16, dtype=jnp.float32))  # fan_in 3·3·16 = 144
    np.testing.assert_allclose(np.asarray(params["W"], np.float64).std(), want, rtol=0.04)
    emb = nn.Embedding(500, 64, W_std=0.8, parameterization=parameterization)
    params, _ = emb.init(key, spec(2, 3, dtype=jnp.int32))
    np.testing.assert_allclose(np.asarray(params["W"], np.float64).std(),
                               0.8 if parameterization == "standard" else 1.0, rtol=0.04)


# -- learning-rate multipliers -------------------------------------------------------------------


def mup_mlp():
    return nn.serial(
        nn.Dense(64, b_std=0.1, parameterization="mup", role="input"),
        nn.Relu(),
        nn.Dense(48, b_std=0.1, parameterization="mup", role="hidden"),
        nn.Relu(),
        nn.Dense(10, b_std=0.1, parameterization="mup", role="output"),
    )


# Yang et al. (2022), Table 3, with fan_in n and fan_out: input 20 -> 64 -> 48 -> 10.
MUP_TABLE = {
    "sgd": ({"W": 64.0, "b": 64.0}, (), {"W": 1.0, "b": 48.0}, (), {"W": 1.0 / 48, "b": 10.0}),
    "adam": ({"W": 1.0, "b": 1.0}, (), {"W": 1.0 / 64, "b": 1.0}, (), {"W": 1.0 / 48, "b": 1.0}),
}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_lr_multipliers_follow_the_table(optimizer):
    model = mup_mlp()
    in_spec = spec(4, 20, dtype=jnp.float32)
    lrs = model.lr_multipliers(in_spec, optimizer)
    want = MUP_TABLE[optimizer]
    chex.assert_trees_all_close(lrs, want, rtol=1e-12, atol=0)  # same structure, leaves to 1e-12
    params, _ = jax.eval_shape(lambda k: model.init(k, in_spec), jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(lrs)


def test_mup_lr_multipliers_conv_and_embedding():
    conv = nn.Conv(32, (3, 3), parameterization="mup", role="hidden")
    in_spec = spec(2, 8, 8, 16, dtype=jnp.float32)
    assert conv.lr_multipliers(in_spec, "adam") == {"W": pytest.approx(1 / 144), "b": 1.0}
    assert conv.lr_multipliers(in_spec, "sgd") == {"W": 1.0, "b": 32.0}
    emb = nn.Embedding(100, 24, parameterization="mup")
    assert emb.lr_multipliers(spec(2, 5, dtype=jnp.int32), "sgd") == {"W": 24.0}
    assert emb.lr_multipliers(spec(2, 5, dtype=jnp.int32), "adam") == {"W": 1.0}


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_multipliers_are_ones_outside_mup(parameterization, optimizer):
    model = nn.serial(
        nn.Conv(4, (3,), parameterization=parameterization), nn.Flatten(), mlp(parameterization, 1.0, 0.1),
        nn.BatchNorm()
    )
    in_spec = spec(2, 9, 3, dtype=jnp.float32)
    lrs = model.lr_multipliers(in_spec, optimizer)
    params, _ = jax.eval_shape(lambda k: model.init(k, in_spec), jax.random.key(0))
    assert jax.tree.structure(lrs) == jax.tree.structure(params)
    assert jax.tree.leaves(lrs) and all(v == 1.0 for v in jax.tree.leaves(lrs))


# -- traced hyperparameters ------------------------------------------------------------------------


def test_population_over_W_std_matches_separate_layers(key):
    x = jnp.asarray(normal(7, 3, 5), jnp.float32)
    params = {"W": jnp.asarray(normal(8, 5, 4), jnp.float32), "b": jnp.asarray(normal(9, 4), jnp.float32)}
    ws = jnp.array([0.5, 1.0, 2.0], jnp.float32)
    pop = jax.vmap(lambda w: nn.Dense(4, W_std=w, parameterization="ntk").apply(params, x))(ws)
    for i, w in enumerate([0.5, 1.0, 2.0]):
        np.testing.assert_allclose(pop[i], nn.Dense(4, W_std=w, parameterization="ntk").apply(params, x),
                                   rtol=1e-6, atol=1e-6)
    # ground truth of the ntk formula: with b_std=0, y is linear in W_std
    np.testing.assert_allclose(pop[2], 4.0 * pop[0], rtol=1e-6, atol=1e-6)

    bs = jnp.array([0.0, 0.5, 3.0], jnp.float32)
    pop_b = jax.jit(jax.vmap(lambda b: nn.Dense(4, b_std=b, parameterization="ntk").apply(params, x)))(bs)
    for i, b in enumerate([0.0, 0.5, 3.0]):
        np.testing.assert_allclose(pop_b[i], pop[1] + b * np.asarray(params["b"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parameterization, role", [("standard", None), ("mup", "output")])
def test_population_over_init_scale(parameterization, role, key):
    # the standard/mup init is W_std times the unit-W_std draw of the same key
    in_spec = spec(2, 6, dtype=jnp.float32)

    def init_W(w):
        layer = nn.Dense(5, W_std=w, b_std=None, parameterization=parameterization, role=role)
        return layer.init(key, in_spec)[0]["W"]

    ws = jnp.array([0.5, 1.0, 3.0], jnp.float32)
    chex.clear_trace_counter()
    grid_fn = jax.jit(jax.vmap(chex.assert_max_traces(init_W, n=1)))
    pop = grid_fn(ws)
    unit = np.asarray(pop[1])
    for i, w in enumerate([0.5, 1.0, 3.0]):
        np.testing.assert_allclose(pop[i], w * unit, rtol=1e-6, atol=1e-7)
    # W_std is traced: another grid of the same size runs the same program, not a recompiled one
    np.testing.assert_array_equal(grid_fn(ws[::-1]), pop[::-1])


def test_population_over_W_std_of_a_whole_model(key):
    x = jnp.asarray(normal(10, 4, 5), jnp.float32)
    in_spec = spec(4, 5, dtype=jnp.float32)
    shapes, _ = jax.eval_shape(lambda k: mlp("ntk", 1.0, 0.1).init(k, in_spec), key)
    rng = np.random.default_rng(11)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)
    ws = jnp.array([0.8, 1.3], jnp.float32)
    pop = jax.jit(jax.vmap(lambda w: mlp("ntk", w, 0.1, act=nn.Tanh).apply(params, x)))(ws)
    one = jax.jit(lambda w: mlp("ntk", w, 0.1, act=nn.Tanh).apply(params, x))
    for i in range(2):
        np.testing.assert_allclose(pop[i], one(ws[i]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(pop[0], pop[1])
