"""jaxlearn.rules.binary against explicit sign-weight networks.

Ground truth: a network of ``nn.Dense`` layers whose weights are *set* to ``sign(W_latent)``
(``np.where(W >= 0, 1, -1)``, computed here). The binary layer's forward pass must equal it; its
straight-through gradient w.r.t. the latents must equal ``jax.grad`` of the explicit network
w.r.t. its (binary) weights — times ``1{|W| ≤ 1}`` for ``backward="clipped"`` — in reverse and
forward mode. The clipping transform is checked against ``np.clip`` of the plain optimizer step,
and its box is checked to hold exactly on a million random float64 pairs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import nn, rules, train
from jaxlearn.nn.core import LayerError
from jaxlearn.rules import binary

F64 = pytest.mark.float64
SPEC = jax.ShapeDtypeStruct((7, 6), jnp.float32)


def np_sign(w):
    return np.where(np.asarray(w) >= 0, 1.0, -1.0)


def two_layer(backward, scale="none", b_std=0.1):
    """BinaryDense(5) → tanh → BinaryDense(3) and its explicit twin with Dense layers."""
    net = nn.serial(rules.BinaryDense(5, b_std, scale=scale, backward=backward), nn.Tanh(),
                    rules.BinaryDense(3, b_std, scale=scale, backward=backward))
    twin = nn.serial(nn.Dense(5, b_std=b_std), nn.Tanh(), nn.Dense(3, b_std=b_std))
    return net, twin


def explicit_params(params, scale):
    """The twin's params: ``W = m · sign(W_latent)`` (``m = 1/√n`` for ``fan_in``), same biases."""
    out = []
    for layer in params:
        if not layer:
            out.append(layer)
            continue
        w = layer["W_latent"]
        m = 1.0 / np.sqrt(w.shape[0]) if scale == "fan_in" else 1.0
        out.append({"W": jnp.asarray(m * np_sign(w), w.dtype), "b": layer["b"]})
    return tuple(out)


def latents_with_edges(params):
    """Latents with entries exactly 0, ±1 and outside [-1, 1] (±1.5), where the rules differ."""
    def edit(layer):
        if not layer:
            return layer
        w = np.array(layer["W_latent"])
        w.flat[:6] = [0.0, 1.0, -1.0, 1.5, -1.5, -0.0]
        return {**layer, "W_latent": jnp.asarray(w)}

    return tuple(edit(layer) for layer in params)


@F64
@pytest.mark.parametrize("scale", binary.BINARY_SCALES)
def test_forward_equals_dense_with_sign_weights(scale):
    x = np.random.default_rng(0).normal(size=(7, 6))
    net, twin = two_layer("identity", scale)
    params = latents_with_edges(net.init(jax.random.key(1), x)[0])
    y = net.apply(params, x)
    y_twin = twin.apply(explicit_params(params, scale), x)
    if scale == "none":  # the same XLA ops on the same binary matrices
        np.testing.assert_array_equal(y, y_twin)
    else:  # m·(x W_b) here, x (m W_b) in the twin: one rounding apart
        np.testing.assert_allclose(y, y_twin, rtol=1e-12)
    # and a NumPy float64 forward pass of the first layer (sign(0) = sign(-0) = +1)
    w, b = np.asarray(params[0]["W_latent"]), np.asarray(params[0]["b"])
    m = 1 / np.sqrt(6) if scale == "fan_in" else 1.0
    first = net.children[0].apply(params[0], x)
    np.testing.assert_allclose(first, m * x @ np_sign(w) + b, rtol=1e-13)
    assert set(np.unique(np_sign(w))) == {-1.0, 1.0}


@F64
@pytest.mark.parametrize("backward", ["identity", "clipped"])
@pytest.mark.parametrize("scale", binary.BINARY_SCALES)
def test_latent_gradient_is_the_binary_weight_gradient(backward, scale):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 6)), rng.normal(size=(7, 3))
    net, twin = two_layer(backward, scale)
    params = latents_with_edges(net.init(jax.random.key(3), x)[0])

    def loss(apply, p, x):
        return jnp.sum((apply(p, x) - y) ** 2)

    g_net, gx_net = jax.grad(lambda p, x: loss(net.apply, p, x), argnums=(0, 1))(params, x)
    g_twin, gx_twin = jax.grad(lambda p, x: loss(twin.apply, p, x), argnums=(0, 1))(explicit_params(params, scale), x)
    np.testing.assert_allclose(gx_net, gx_twin, rtol=1e-12)
    for layer, ours, theirs in zip(params, g_net, g_twin):
        if not layer:
            continue
        w = np.asarray(layer["W_latent"])
        m = 1.0 / np.sqrt(w.shape[0]) if scale == "fan_in" else 1.0
        # W_twin = m·W_b, so ∂L/∂W_b = m·∂L/∂W_twin
        mask = np.ones_like(w) if backward == "identity" else (np.abs(w) <= 1).astype(float)
        np.testing.assert_allclose(ours["W_latent"], mask * m * np.asarray(theirs["W"]), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours["b"], theirs["b"], rtol=1e-12)
    if backward == "clipped":  # the ±1.5 entries are cancelled, the ±1 ones are not
        g0 = np.asarray(g_net[0]["W_latent"]).flat[:6]
        assert g0[3] == 0 and g0[4] == 0 and np.all(g0[[0, 1, 2, 5]] != 0)


@F64
@pytest.mark.parametrize("backward", ["identity", "clipped"])
def test_forward_mode_gives_the_same_straight_through_derivative(backward):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 6))
    net, twin = two_layer(backward)
    params = latents_with_edges(net.init(jax.random.key(5), x)[0])
    assert rules.forward_mode_safe(net, SPEC).safe
    tangent = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    _, t_net = jax.jvp(lambda p: net.apply(p, x), (params,), (tangent,))
    # the twin's tangent: W_b's tangent is W_latent's (masked for "clipped"), biases as they are
    masked = tuple(
        {"W": (np.ones_like(lp["W_latent"]) if backward == "identity" else (np.abs(lp["W_latent"]) <= 1))
         * lt["W_latent"], "b": lt["b"]} if lp else lt
        for lp, lt in zip(params, tangent))
    _, t_twin = jax.jvp(lambda p: twin.apply(p, x), (explicit_params(params, "none"),), (masked,))
    np.testing.assert_allclose(t_net, t_twin, rtol=1e-12)
    # reverse and forward mode agree (the Jacobian w.r.t. the first layer's latents)
    f = lambda w: net.apply((params[0] | {"W_latent": w},) + params[1:], x)  # noqa: E731
    w0 = params[0]["W_latent"]
    np.testing.assert_allclose(jax.jacfwd(f)(w0), jax.jacrev(f)(w0), rtol=1e-12, atol=1e-14)


def test_init_latents_in_box_and_bias_options():
    layer = rules.BinaryDense(40, b_std=None, latent_init=0.5)
    params, state = layer.init(jax.random.key(0), jax.ShapeDtypeStruct((2, 50), jnp.float32))
    w = np.asarray(params["W_latent"])
    assert set(params) == {"W_latent"} and state == () and w.shape == (50, 40)
    assert np.abs(w).max() <= 0.5 and np.abs(w).max() > 0.45  # uniform on [-0.5, 0.5]
    assert abs(w.mean()) < 0.02 and abs(w.var() - 0.25 / 3) < 0.01
    b = rules.BinaryDense(2000, b_std=0.3).init(jax.random.key(1), jax.ShapeDtypeStruct((1, 3), jnp.float32))[0]["b"]
    assert abs(float(jnp.std(b)) - 0.3) < 0.03


def test_jit_vmap_over_seeds_and_traced_latent_init():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 6)), jnp.float32)

    @jax.jit
    def member(key, latent_init):
        layer = rules.BinaryDense(4, latent_init=latent_init)
        params, _ = layer.init(key, SPEC)
        loss = lambda p: jnp.sum(layer.apply(p, x) ** 2)  # noqa: E731
        return params, layer.apply(params, x), jax.grad(loss)(params)

    keys = jax.random.split(jax.random.key(0), 3)
    inits = jnp.array([0.1, 0.5, 1.0], jnp.float32)
    params, ys, grads = jax.vmap(member)(keys, inits)
    for i in range(3):
        p, y, g = member(keys[i], inits[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-5)
        np.testing.assert_allclose(grads["W_latent"][i], g["W_latent"], rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(params["W_latent"][i]).max()) <= float(inits[i])
        # straight through: ∂(Σz²)/∂W_latent = xᵀ(2z) as for a Dense layer's W
        np.testing.assert_allclose(g["W_latent"], x.T @ (2 * y), rtol=1e-5)


@pytest.mark.parametrize("bad", [{"latent_init": 0.0}, {"latent_init": 1.5}, {"scale": "ntk"},
                                 {"backward": "tanh"}])
def test_bad_arguments_raise(bad):
    with pytest.raises(LayerError):
        rules.BinaryDense(3, **bad)


# -- clipping -----------------------------------------------------------------------------------

def mixed_params():
    net = nn.serial(rules.BinaryDense(5), nn.BatchNorm(), rules.SignSTE("clipped"), nn.Dense(3))
    return net, net.init(jax.random.key(0), SPEC)[0]


def test_binary_latents_selects_only_latents():
    _, params = mixed_params()
    mask = rules.binary_latents(params)
    assert mask[0] == {"W_latent": True, "b": False}
    assert mask[1] == {"scale": False, "offset": False} and mask[3] == {"W": False, "b": False}


@pytest.mark.parametrize("mask", ["default", "tree", "callable"])
def test_clip_latents_is_the_projected_optimizer_step(mask):
    _, params = mixed_params()
    grads = jax.tree.map(lambda p: jnp.full_like(p, -3.0) + jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) % 7,
                         params)
    chosen = {"default": None, "tree": rules.binary_latents(params), "callable": rules.binary_latents}[mask]
    sgd = optax.sgd(0.2)
    opt = optax.chain(sgd, rules.clip_latents(mask=chosen))
    updates, _ = opt.update(grads, opt.init(params), params)
    plain, _ = sgd.update(grads, sgd.init(params), params)
    new = optax.apply_updates(params, updates)
    want = np.clip(np.asarray(params[0]["W_latent"]) + np.asarray(plain[0]["W_latent"]), -1, 1)
    got = np.asarray(new[0]["W_latent"])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.abs(got).max() <= 1.0 and np.sum(np.abs(got) == 1.0) > 0  # some entries reached the bound
    # every other leaf got the plain update, bit for bit
    for path, (u, v) in zip(jax.tree_util.tree_leaves_with_path(updates),
                            zip(jax.tree.leaves(updates), jax.tree.leaves(plain))):
        if "W_latent" not in jax.tree_util.keystr(path[0]):
            np.testing.assert_array_equal(u, v)


@F64
def test_clip_latents_lands_inside_the_box_exactly():
    rng = np.random.default_rng(0)
    n = 1_000_000
    for lo, hi in [(-1.0, 1.0), (-0.3, 0.3), (-0.7, 0.2)]:
        p = jnp.asarray(rng.uniform(lo, hi, n))
        u = jnp.asarray(rng.normal(size=n) * rng.choice([1e-9, 1e-3, 1.0], n))
        step = jax.jit(binary._projected_update)(p, u, lo, hi)
        new = np.asarray(optax.apply_updates(p, step))
        assert new.min() >= lo and new.max() <= hi
        np.testing.assert_allclose(new, np.clip(np.asarray(p) + np.asarray(u), lo, hi), rtol=0, atol=1e-15)


def test_clip_latents_traced_bounds_frozen_leaves_and_errors():
    _, params = mixed_params()
    grads = jax.tree.map(lambda p: -10 * jnp.ones_like(p), params)

    @jax.vmap
    def member(hi):
        opt = optax.chain(optax.sgd(1.0), rules.clip_latents(-hi, hi))
        updates, _ = opt.update(grads, opt.init(params), params)
        return optax.apply_updates(params, updates)[0]["W_latent"]

    out = member(jnp.array([0.25, 0.5], jnp.float32))
    np.testing.assert_array_equal(out, jnp.broadcast_to(jnp.array([0.25, 0.5])[:, None, None], out.shape))
    # a frozen (masked-out) latent passes through as a MaskedNode
    trainable = jax.tree.map(lambda latent: not latent, rules.binary_latents(params))
    frozen = train.freeze(optax.chain(optax.sgd(1.0), rules.clip_latents()), trainable)
    updates, _ = frozen.update(grads, frozen.init(params), params)
    np.testing.assert_array_equal(updates[0]["W_latent"], 0)
    # an entrywise array mask: only the selected entries of a leaf are projected
    entry_mask = jax.tree.map(lambda p: jnp.zeros(p.shape, bool), params)
    entry_mask[0]["W_latent"] = jnp.arange(params[0]["W_latent"].size).reshape(params[0]["W_latent"].shape) % 2 == 0
    opt = optax.chain(optax.sgd(1.0), rules.clip_latents(mask=entry_mask))
    new = optax.apply_updates(params, opt.update(grads, opt.init(params), params)[0])[0]["W_latent"]
    plain = params[0]["W_latent"] + 10.0
    np.testing.assert_array_equal(new, jnp.where(entry_mask[0]["W_latent"], 1.0, plain))
    with pytest.raises(ValueError, match="lo < hi"):
        rules.clip_latents(1.0, -1.0)
    opt = rules.clip_latents()
    with pytest.raises(ValueError, match="needs params"):
        opt.update(grads, opt.init(params))
