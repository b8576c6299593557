"""Pruning masks and IMP against independent ground truth: a brute-force Python sort of all prunable
entries (magnitude masks), hand-counted prune counts, optimizers written out in NumPy on the kept
coordinates only (training the subnetwork itself), hypergeometric/uniform marginals (random masks),
and least squares on the true support (IMP on a sparse linear regression). Jit/vmap and error
tests run in the float32 process."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train
from jaxlearn.analysis.pruning import (
    apply_mask,
    density,
    imp,
    magnitude_mask,
    masked,
    random_mask,
    random_reinit,
    sparsity,
)

SCOPES = ["global", "layer"]

# jitted once per shape (sparsity traced): far cheaper than op-by-op dispatch; the eager path is
# compared with these in test_magnitude_mask_jit_traced_sparsity_and_vmap
_mag = jax.jit(magnitude_mask, static_argnames=("scope", "prunable"))
_apply = jax.jit(apply_mask)
_density = jax.jit(density, static_argnames="prunable")


def _params(seed, dtype=np.float64):
    """Leaves (jax.tree.leaves order): W(4,5), b(5), W(2,2,3,2), b(2), W(5,3), scale(3); () is an empty layer."""
    rng = np.random.default_rng(seed)

    def n(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return ({"W": n(4, 5), "b": n(5)}, (), {"W": n(2, 2, 3, 2), "b": n(2)}, {"scale": n(3), "W": n(5, 3)})


def _random_keep(params, seed, p_keep=0.7):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda w: jnp.asarray(rng.random(w.shape) < p_keep if w.ndim >= 2 else np.ones(w.shape, bool)),
                        params)


def _brute_force_mask(params, p, scope, keep=None, flags=None):
    """Explicit loops: list the kept candidates (|w|, leaf, position), sort them (magnitude, then leaf order,
    then row-major position) and prune the first round(p · n) — over all prunable leaves or leaf by leaf."""
    leaves, treedef = jax.tree.flatten(params)
    leaves = [np.asarray(w) for w in leaves]
    flags = [w.ndim >= 2 for w in leaves] if flags is None else flags
    keeps = [np.ones(w.shape, bool) for w in leaves] if keep is None else [np.asarray(k) for k in jax.tree.leaves(keep)]
    out = [k.astype(bool).ravel().copy() for k in keeps]
    chosen = [i for i in range(len(leaves)) if flags[i]]
    groups = [chosen] if scope == "global" else [[i] for i in chosen]
    for group in groups:
        candidates = []
        for i in group:
            values = leaves[i].ravel()
            for j in range(values.size):
                if out[i][j]:
                    candidates.append((abs(float(values[j])), i, j))
        candidates.sort()
        for _, i, j in candidates[:int(np.round(p * len(candidates)))]:
            out[i][j] = False
    return jax.tree.unflatten(treedef, [o.reshape(w.shape) for o, w in zip(out, leaves)])


def _counts(mask):
    return [int(np.sum(m)) for m in jax.tree.leaves(mask)]


# -- magnitude masks (float64) -------------------------------------------------------------------
@pytest.mark.float64
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.37, 0.5, 0.9])
@pytest.mark.parametrize("with_mask", [False, True])
def test_magnitude_mask_matches_brute_force(scope, p, with_mask):
    params = _params(0)
    keep = _random_keep(params, 1) if with_mask else None
    got = _mag(params, p, scope=scope, mask=keep)
    chex.assert_trees_all_equal(got, _brute_force_mask(params, p, scope, keep))
    if keep is not None:  # pruned stay pruned
        assert all(not np.any(g & ~k) for g, k in zip(jax.tree.leaves(got), jax.tree.leaves(keep)))


@pytest.mark.float64
@pytest.mark.parametrize("p, counts", [(0.5, [10, 12, 8]), (0.1, [2, 2, 2]), (0.3, [6, 7, 4])])
def test_layer_counts_round_half_to_even(p, counts):
    """Prunable leaves of 20, 24 and 15 entries; expected counts by hand: 0.5·15 = 7.5 → 8, 0.1·15 = 1.5 → 2,
    0.3·24 = 7.2 → 7, 0.3·15 = 4.5 → 4 (half to even)."""
    params = _params(2)
    got = _mag(params, p, scope="layer")
    pruned = [m.size - int(np.sum(m)) for m in jax.tree.leaves(got)]
    assert pruned == [counts[0], 0, counts[1], 0, counts[2], 0]


@pytest.mark.float64
@pytest.mark.parametrize("p, count", [(0.29, 29), (0.5, 50), (0.57, 57), (0.99, 99), (0.004, 0), (0.005, 0),
                                      (0.006, 1)])
def test_global_counts_by_hand(p, count):
    """100 candidates: round, not floor (0.29·100 = 28.999… in floating point still prunes 29)."""
    params = {"a": jnp.asarray(np.random.default_rng(3).normal(size=(10, 10)))}
    assert 100 - int(np.sum(_mag(params, p)["a"])) == count


@pytest.mark.float64
@pytest.mark.parametrize("scope", SCOPES)
def test_iterative_rounds_density_and_nesting(scope):
    """Each round prunes 20% of the remaining weights of freshly drawn ('trained') weights: counts follow
    n_{r+1} = n_r − round(0.2 n_r) (per leaf for 'layer'), density ≈ 0.8^r, and pruned entries stay pruned."""
    p, params = 0.2, _params(0)
    mask = None
    expected = [20, 24, 15]
    for r in range(1, 7):
        new = _mag(_params(10 + r), p, scope=scope, mask=mask)
        chex.assert_trees_all_equal(new, _brute_force_mask(_params(10 + r), p, scope, mask))
        if mask is not None:
            assert all(not np.any(a & ~b) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(mask)))
        mask = new
        kept = [c for c, w in zip(_counts(mask), jax.tree.leaves(params)) if w.ndim >= 2]
        if scope == "layer":
            expected = [n - int(np.round(p * n)) for n in expected]
            assert kept == expected
        else:
            total = sum(expected)
            expected = [total - int(np.round(p * total))]
            assert sum(kept) == expected[0]
        assert abs(sum(kept) - 59 * 0.8 ** r) <= 0.5 * r * (3 if scope == "layer" else 1)
        np.testing.assert_allclose(_density(mask)[0], sum(kept) / 59, rtol=1e-15)


@pytest.mark.float64
def test_ties_broken_by_position():
    params = {"a": jnp.asarray([[0.5, -0.5, 0.5], [-0.5, 1.0, -1.0]]), "b": jnp.asarray([[-0.5, 1.0], [0.5, 1.0]])}
    # global: ten candidates, five pruned; six entries of magnitude 0.5 (signs do not matter) — the first
    # five by position (a before b, row-major) go, b[1, 0] stays
    want = {"a": np.array([[0, 0, 0], [0, 1, 1]], bool), "b": np.array([[0, 1], [1, 1]], bool)}
    chex.assert_trees_all_equal(_mag(params, 0.5), want)
    chex.assert_trees_all_equal(_brute_force_mask(params, 0.5, "global"), want)
    # per leaf: a prunes 3 of its four 0.5s (a[1, 0] stays); b prunes its two 0.5s
    want_layer = {"a": np.array([[0, 0, 0], [1, 1, 1]], bool), "b": np.array([[0, 1], [0, 1]], bool)}
    chex.assert_trees_all_equal(_mag(params, 0.5, scope="layer"), want_layer)
    chex.assert_trees_all_equal(_mag(params, 0.5, scope="layer"), want_layer)  # deterministic on repeat


@pytest.mark.float64
@pytest.mark.parametrize("scope", SCOPES)
def test_prunable_flags_and_predicate(scope):
    params = _params(4)
    flags_tree = ({"W": True, "b": False}, (), {"W": False, "b": False}, {"scale": False, "W": True})
    flags = jax.tree.leaves(flags_tree)

    @jax.jit
    def three_ways(p):
        return (magnitude_mask(p, 0.4, scope=scope, prunable=flags_tree),
                magnitude_mask(p, 0.4, scope=scope, prunable=lambda path, w: w.ndim == 2),
                magnitude_mask(p, 0.4, scope=scope, prunable=lambda path, w: w.ndim >= 2 and path[0].idx != 3))

    by_tree, by_predicate, spare_last = three_ways(params)
    want = _brute_force_mask(params, 0.4, scope, flags=flags)
    chex.assert_trees_all_equal(by_tree, want)
    chex.assert_trees_all_equal(by_predicate, want)
    assert np.all(np.asarray(by_tree[2]["W"]))  # not prunable: untouched
    chex.assert_trees_all_equal(spare_last, _brute_force_mask(params, 0.4, scope, flags=[1, 0, 1, 0, 0, 0]))


@pytest.mark.float64
def test_apply_mask_and_non_prunable_leaves_untouched():
    params = _params(5)
    mask = _mag(params, 0.6)
    got = _apply(params, mask)
    for w, m, g in zip(jax.tree.leaves(params), jax.tree.leaves(mask), jax.tree.leaves(got)):
        w, m, g = np.asarray(w), np.asarray(m), np.asarray(g)
        assert g.dtype == w.dtype
        for idx in np.ndindex(w.shape):
            assert g[idx] == (w[idx] if m[idx] else 0.0)
        if w.ndim < 2:
            assert m.all() and np.array_equal(g, w)


@pytest.mark.float64
def test_density_and_sparsity_count_entries():
    params = _params(6)
    mask = _random_keep(params, 7, 0.4)
    leaves = [np.asarray(m) for m in jax.tree.leaves(mask)]
    kept = sum(int(m.sum()) for m in leaves if m.ndim >= 2)
    overall, per_leaf = _density(mask)
    np.testing.assert_allclose(overall, kept / 59, rtol=1e-15)
    for m, d in zip(leaves, jax.tree.leaves(per_leaf)):
        np.testing.assert_allclose(d, m.sum() / m.size, rtol=1e-15)
    s_overall, s_per_leaf = sparsity(mask)
    np.testing.assert_allclose(s_overall, 1 - kept / 59, rtol=1e-15)
    np.testing.assert_allclose(jax.tree.leaves(s_per_leaf)[0], 1 - leaves[0].sum() / 20, rtol=1e-15)
    everything, _ = _density(mask, prunable=lambda path, w: True)
    np.testing.assert_allclose(everything, sum(int(m.sum()) for m in leaves) / sum(m.size for m in leaves), rtol=1e-15)


# -- the masked optimizer against NumPy on the kept coordinates (float64) --------------------------
def _subnetwork_numpy(name, params, mask, grads_seq, hp):
    """The optimizer written out in NumPy on the vector of KEPT coordinates only (the subnetwork), then
    scattered into the full shapes with zeros at the pruned ones."""
    m = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(mask)])
    w = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)])[m]
    s1, s2 = np.zeros_like(w), np.zeros_like(w)
    for t, grads in enumerate(grads_seq, start=1):
        g = np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(grads)])[m]
        if name == "sgd":  # heavy ball as in optax.sgd: v ← g + μ v, w ← w − lr v
            s1 = g + hp["momentum"] * s1
            w = w - hp["learning_rate"] * s1
        elif name == "clip_sgd":  # global-norm clipping of the subnetwork's gradient, then plain SGD
            w = w - hp["learning_rate"] * g * min(1.0, hp["max_norm"] / np.sqrt(np.sum(g ** 2)))
        else:  # Adam (Kingma & Ba 2015, Alg. 1); AdamW adds decoupled decay λ w (Loshchilov & Hutter 2019)
            b1, b2, eps = 0.9, 0.999, 1e-8
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g ** 2
            step = (s1 / (1 - b1 ** t)) / (np.sqrt(s2 / (1 - b2 ** t)) + eps)
            if name == "adamw":
                step = step + hp["weight_decay"] * w
            w = w - hp["learning_rate"] * step
    full = np.zeros(m.size)
    full[m] = w
    out, start = [], 0
    for x in jax.tree.leaves(params):
        out.append(full[start:start + x.size].reshape(x.shape))
        start += x.size
    return out


OPTIMIZERS = {
    "sgd": {"learning_rate": 0.1, "momentum": 0.9},
    "adam": {"learning_rate": 0.01},
    "adamw": {"learning_rate": 0.01, "weight_decay": 0.1},
}


@pytest.mark.float64
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "clip_sgd"])
def test_masked_optimizer_trains_the_subnetwork(name):
    params = _params(8)
    mask = _mag(params, 0.5)
    start = _apply(params, mask)
    if name == "clip_sgd":
        hp = {"learning_rate": 0.1, "max_norm": 1.0}  # gradients of norm ~8: clipping is active
        inner = optax.chain(optax.clip_by_global_norm(hp["max_norm"]), optax.sgd(hp["learning_rate"]))
    else:
        hp = OPTIMIZERS[name]
        inner = train.optimizer(name, **hp)
    opt = masked(inner, mask)
    rng = np.random.default_rng(9)
    grads_seq = [jax.tree.map(lambda w: jnp.asarray(rng.normal(size=w.shape)), params) for _ in range(4)]
    update = jax.jit(opt.update)
    state, p = opt.init(start), start
    for g in grads_seq:
        u, state = update(g, state, p)
        p = optax.apply_updates(p, u)
    want = _subnetwork_numpy(name, start, mask, grads_seq, hp)
    for got, w, m in zip(jax.tree.leaves(p), want, jax.tree.leaves(mask)):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
        assert np.all(np.asarray(got)[~np.asarray(m)] == 0.0)
    # the control: the inner optimizer alone moves the pruned weights off zero
    state, p = inner.init(start), start
    for g in grads_seq:
        u, state = inner.update(g, state, p)
        p = optax.apply_updates(p, u)
    assert all(np.all(np.asarray(w)[~np.asarray(m)] != 0.0) for w, m in zip(jax.tree.leaves(p), jax.tree.leaves(mask)))


# -- masked training through make_step / train.train (float32) ----------------------------------------
MLP = nn.mlp([8], 3, activation="tanh")
_rng = np.random.default_rng(11)
X_MLP = _rng.normal(size=(16, 4)).astype(np.float32)
Y_MLP = _rng.normal(size=(16, 3)).astype(np.float32)


MLP_STATE = jax.eval_shape(lambda k: MLP.init(k, jax.ShapeDtypeStruct((1, 4), jnp.float32)), jax.random.key(0))[1]


def _mlp_batch(key, step):
    return data.get_batch(key, step, X_MLP, Y_MLP, 8)


@functools.lru_cache(maxsize=None)  # one compile per optimizer, shared by the tests
def _mlp_trainer(name, steps=5):
    def run(params, mask):
        opt = masked(train.optimizer(name, **OPTIMIZERS[name]), mask)
        step = train.make_step(MLP.apply_with_state, train.mse, opt)
        state = train.TrainState(params, opt.init(params), MLP_STATE, jnp.zeros((), jnp.int32), jax.random.key(1))
        return train.train(state, step, _mlp_batch, steps)[0].params

    return jax.jit(run)


def _mlp_params(seed=0):
    """Params shaped like MLP.init's (drawn in NumPy: no PRNG program to compile)."""
    rng = np.random.default_rng(seed)
    dense = [{"W": jnp.asarray(rng.normal(size=(i, o)) / np.sqrt(i), jnp.float32), "b": jnp.zeros(o, jnp.float32)}
             for i, o in ((4, 8), (8, 3))]
    return (dense[0], (), dense[1])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_masked_training_keeps_pruned_weights_exactly_zero(name):
    params = _mlp_params()
    mask = _mag(params, 0.6)
    start = _apply(params, mask)
    trained = _mlp_trainer(name)(start, mask)
    # every kept weight with a gradient moves: all but those of hidden units whose outgoing weights are all pruned
    alive = np.asarray(mask[2]["W"]).any(axis=1)
    assert alive.sum() >= 4
    has_grad = [np.asarray(mask[0]["W"]) & alive, alive, np.asarray(mask[2]["W"]), np.ones(3, bool)]
    for w0, w, m, g in zip(jax.tree.leaves(start), jax.tree.leaves(trained), jax.tree.leaves(mask), has_grad):
        w0, w, m = np.asarray(w0), np.asarray(w), np.asarray(m)
        assert np.all(w[~m] == 0.0)
        assert np.all(w[g] != w0[g])


def test_masked_population_of_masks_vmaps():
    params = _mlp_params()
    levels = jnp.asarray([0.2, 0.5, 0.8])
    masks = jax.tree.map(lambda *a: jnp.stack(a), *[_mag(params, s) for s in levels])
    run = _mlp_trainer("adam")
    pop = jax.jit(jax.vmap(lambda m: run(apply_mask(params, m), m)))(masks)
    for i in range(3):
        mask_i = jax.tree.map(lambda a: a[i], masks)
        single = run(_apply(params, mask_i), mask_i)
        for w, s, m in zip(jax.tree.leaves(pop), jax.tree.leaves(single), jax.tree.leaves(mask_i)):
            assert np.all(np.asarray(w[i])[~np.asarray(m)] == 0.0)
            np.testing.assert_allclose(w[i], s, rtol=1e-5, atol=1e-6)


# -- random controls ---------------------------------------------------------------------------------
def test_random_mask_preserves_counts_and_differs(key):
    params = _mlp_params()
    mask = _mag(params, 0.6)  # the mask of test_masked_training_keeps_pruned_weights_exactly_zero
    shuffle = jax.jit(lambda k, m: {scope: random_mask(k, m, scope=scope) for scope in SCOPES})
    shuffled, other = shuffle(key, mask), shuffle(jax.random.fold_in(key, 1), mask)
    keys = jax.random.split(key, 3)
    batch = jax.jit(jax.vmap(shuffle))(keys, jax.tree.map(lambda m: jnp.stack([m] * 3), mask))  # keys and masks
    prunable = [w.ndim >= 2 for w in jax.tree.leaves(params)]
    counts = _counts(mask)
    for scope in SCOPES:
        new_counts = _counts(shuffled[scope])
        if scope == "layer":
            assert new_counts == counts
        else:
            assert sum(c for c, f in zip(new_counts, prunable) if f) == sum(c for c, f in zip(counts, prunable) if f)
        for s, f in zip(jax.tree.leaves(shuffled[scope]), prunable):
            assert f or np.all(np.asarray(s))  # non-prunable leaves stay all kept
        assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(shuffled[scope])))
        assert not all(np.array_equal(a, b)
                       for a, b in zip(jax.tree.leaves(other[scope]), jax.tree.leaves(shuffled[scope])))
        for i in range(3):
            chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batch[scope]), shuffle(keys[i], mask)[scope])


@pytest.mark.float64
def test_random_mask_is_uniform(key):
    """Over 4000 keys every prunable position is kept with probability k_leaf/n_leaf ('layer') or K/N
    ('global'; 5 standard deviations of the frequency ≤ 0.04)."""
    params = {"a": np.zeros((4, 5)), "b": np.zeros(5), "c": np.zeros((3, 4))}
    mask = {"a": np.arange(20).reshape(4, 5) % 4 == 1, "b": np.ones(5, bool), "c": np.arange(12).reshape(3, 4) % 3 > 0}
    draws = jax.jit(jax.vmap(lambda k: {s: random_mask(k, mask, scope=s) for s in SCOPES}))(jax.random.split(key, 4000))
    prunable = [w.ndim >= 2 for w in jax.tree.leaves(params)]
    kept = [int(np.sum(m)) for m, f in zip(jax.tree.leaves(mask), prunable) if f]
    sizes = [w.size for w, f in zip(jax.tree.leaves(params), prunable) if f]
    assert kept[0] / sizes[0] < 0.3 < kept[1] / sizes[1]  # leaves of different densities
    for scope in SCOPES:
        freqs = [np.asarray(d).mean(axis=0) for d, f in zip(jax.tree.leaves(draws[scope]), prunable) if f]
        for k, n, freq in zip(kept, sizes, freqs):
            expected = k / n if scope == "layer" else sum(kept) / sum(sizes)
            assert np.max(np.abs(freq - expected)) < 0.04


@pytest.mark.float64
def test_random_reinit_is_the_mask_on_a_fresh_init():
    model = nn.mlp([6], 2)
    spec = jax.ShapeDtypeStruct((1, 3), jnp.float64)

    def init_fn(k):
        return model.init(k, spec)[0]

    init = jax.jit(init_fn)
    original = init(jax.random.key(0))
    mask = _mag(original, 0.7, scope="layer")
    got = random_reinit(jax.random.key(5), init, mask)
    fresh = init(jax.random.key(5))
    for g, f, o, m in zip(*(jax.tree.leaves(t) for t in (got, fresh, original, mask))):
        g, f, o, m = (np.asarray(a) for a in (g, f, o, m))
        np.testing.assert_array_equal(g, np.where(m, f, 0.0))
        if g.ndim >= 2:
            assert not np.allclose(g[m], o[m])


def test_random_reinit_jit_and_vmap():
    def init_fn(k):
        return {"W": jax.random.normal(k, (3, 4)), "b": jnp.zeros(4)}

    mask = {"W": jnp.asarray(np.arange(12).reshape(3, 4) % 3 == 0), "b": jnp.ones(4, bool)}
    keys = jax.random.split(jax.random.key(3), 3)
    single = jax.jit(lambda k: random_reinit(k, init_fn, mask))
    batch = jax.jit(jax.vmap(single))(keys)
    for i in range(3):
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batch), single(keys[i]))


# -- IMP on a sparse linear regression ---------------------------------------------------------------
D_LIN, N_LIN = 16, 48
SUPPORT = np.array([1, 6, 9, 14])
LINEAR = nn.Dense(1)


def _linear_problem(dtype, steps):
    rng = np.random.default_rng(20)
    x = rng.normal(size=(N_LIN, D_LIN))
    w_star = np.zeros(D_LIN)
    w_star[SUPPORT] = [1.5, -2.0, 1.0, -1.2]
    y = x @ w_star + 0.3 + 0.05 * rng.normal(size=N_LIN)
    x, y = x.astype(dtype), y[:, None].astype(dtype)

    def train_fn(params, mask):
        opt = masked(optax.sgd(0.5), mask)
        step = train.make_step(LINEAR.apply_with_state, train.mse, opt)
        state = train.TrainState(params, opt.init(params), (), jnp.zeros((), jnp.int32), jax.random.key(0))
        return train.train(state, step, lambda key, s: (x, y), steps)[0].params

    # the rewind point: small weights on the support, large ones off it (magnitude at rewind is misleading)
    w0 = np.where(np.isin(np.arange(D_LIN), SUPPORT), 0.01, 3.0) * np.sign(rng.normal(size=D_LIN))
    rewind = {"W": jnp.asarray(w0[:, None], dtype), "b": jnp.asarray([0.7], dtype)}
    return x, y, train_fn, rewind


def _lstsq(x, y, columns):
    design = np.concatenate([x[:, columns], np.ones((len(x), 1))], axis=1)
    coef = np.linalg.lstsq(design, y[:, 0], rcond=None)[0]
    w = np.zeros(D_LIN)
    w[columns] = coef[:-1]
    return w, coef[-1]


@pytest.mark.float64
def test_imp_recovers_the_sparse_support():
    x, y, train_fn, rewind = _linear_problem(np.float64, 400)
    result = jax.jit(lambda p: imp(train_fn, p, rounds=2, rate=0.5))(rewind)
    masks_W = np.asarray(result.masks["W"])[..., 0]
    assert masks_W.shape == (3, D_LIN) and np.all(np.asarray(result.masks["b"]))
    assert [int(m.sum()) for m in masks_W] == [16, 8, 4]
    assert set(np.flatnonzero(masks_W[-1])) == set(SUPPORT)
    assert np.all(masks_W[2] <= masks_W[1])
    for r, columns in [(0, np.arange(D_LIN)), (2, SUPPORT)]:  # dense and final: least squares on the columns
        w, b = _lstsq(x, y, columns)
        np.testing.assert_allclose(result.params["W"][r, :, 0], w, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(result.params["b"][r, 0], b, rtol=1e-9)
    # the claim can fail: pruning by magnitude at the rewind point keeps the wrong weights
    at_rewind = np.asarray(_mag(rewind, 0.75)["W"])[:, 0]
    assert not set(np.flatnonzero(at_rewind)) & set(SUPPORT)
    # the Python loop equals the scan
    looped = imp(jax.jit(train_fn), rewind, rounds=2, rate=0.5, scan=False)
    chex.assert_trees_all_equal(looped.masks, result.masks)
    chex.assert_trees_all_close(looped.params, result.params, rtol=1e-10, atol=1e-12)


def test_imp_vmaps_over_seeds_and_layer_scope():
    _, _, train_fn, rewind = _linear_problem(np.float32, 60)
    seeds = jnp.stack([rewind["W"] * s for s in (1.0, -0.5, 2.0)])
    one = jax.jit(lambda w: imp(train_fn, {"W": w, "b": rewind["b"]}, rounds=1, rate=0.75, scope="layer"))
    batch = jax.jit(jax.vmap(one))(seeds)
    for i in range(3):
        single = one(seeds[i])
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batch.masks), single.masks)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batch.params), single.params, rtol=1e-5, atol=1e-6)
    assert set(np.flatnonzero(np.asarray(batch.masks["W"][0, -1, :, 0]))) == set(SUPPORT)


# -- jit and vmap (float32) ------------------------------------------------------------------------
def test_magnitude_mask_jit_traced_sparsity_and_vmap():
    """jit with a traced sparsity is checked against brute force in the float64 tests (``_mag``); here
    vmap over sparsity levels and seeds of params together against single jitted calls."""
    levels = jnp.asarray([0.0, 0.25, 0.5, 0.9], jnp.float32)
    seeds = [_params(s % 2, np.float32) for s in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    batch = jax.jit(jax.vmap(lambda p, s: {sc: magnitude_mask(p, s, scope=sc) for sc in SCOPES}))(stacked, levels)
    for scope in SCOPES:
        for i in range(4):
            chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batch[scope]),
                                        _mag(seeds[i], levels[i], scope=scope))
    pruned = [sum(int(np.sum(~np.asarray(m[i]))) for m in jax.tree.leaves(batch["global"])) for i in range(4)]
    assert pruned == [0, 15, 30, 53]  # round(59 · level): 14.75 → 15, 29.5 → 30 (half to even), 53.1 → 53


def test_apply_mask_density_jit_and_vmap():
    seeds = [_params(s, np.float32) for s in range(3)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *seeds)
    masks = jax.tree.map(lambda *a: jnp.stack(a), *[_mag(p, 0.5) for p in seeds])

    @jax.jit
    def measure(p, m):
        return apply_mask(p, m), density(m), sparsity(m)

    (applied, (overall, per_leaf), (s_overall, s_per_leaf)) = jax.jit(jax.vmap(measure))(stacked, masks)
    for i in range(3):
        mask_i = jax.tree.map(lambda a: a[i], masks)
        want = measure(seeds[i], mask_i)
        got = jax.tree.map(lambda a: a[i], (applied, (overall, per_leaf), (s_overall, s_per_leaf)))
        chex.assert_trees_all_equal(got[0], want[0])
        chex.assert_trees_all_close(got[1:], want[1:], rtol=1e-6, atol=0)
    np.testing.assert_allclose(overall, [29 / 59] * 3, rtol=1e-6)  # round(0.5·59) = round(29.5) = 30 pruned
    np.testing.assert_allclose(s_overall, [30 / 59] * 3, rtol=1e-6)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, [0.1, 0.2], "a", True])
def test_sparsity_outside_range(bad):
    with pytest.raises(ValueError, match=r"magnitude_mask: sparsity must be a scalar in \[0, 1\)"):
        magnitude_mask(_params(0, np.float32), bad)


def test_bad_arguments():
    params = _params(0, np.float32)
    mask = _mag(params, 0.5)
    with pytest.raises(ValueError, match="scope must be one of"):
        magnitude_mask(params, 0.5, scope="local")
    with pytest.raises(ValueError, match="mask: structure differs from params"):
        magnitude_mask(params, 0.5, mask=mask[:3])
    with pytest.raises(ValueError, match=r"mask: leaf \[0\]\['W'\] has shape"):
        apply_mask(params, ({"W": jnp.ones((5, 4), bool), "b": mask[0]["b"]},) + mask[1:])
    with pytest.raises(ValueError, match=r"mask: leaf \[0\]\['W'\] must be boolean"):
        apply_mask(params, ({"W": jnp.ones((4, 5)), "b": mask[0]["b"]},) + mask[1:])
    with pytest.raises(ValueError, match="prunable must be a predicate"):
        magnitude_mask(params, 0.5, prunable={"W": True})
    with pytest.raises(ValueError, match="prunable must give a Python bool"):
        magnitude_mask(params, 0.5, prunable=lambda path, w: jnp.asarray(True))
    with pytest.raises(ValueError, match="no leaf of params is prunable"):
        magnitude_mask({"b": jnp.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="masked: mask: structure differs"):
        masked(optax.sgd(0.1), mask[:3]).init(params)
    with pytest.raises(TypeError, match="masked: optimizer"):
        masked("sgd", mask)
    with pytest.raises(TypeError, match="random_reinit: init_fn"):
        random_reinit(jax.random.key(0), params, mask)
    with pytest.raises(ValueError, match="density: no leaf"):
        density({"b": jnp.ones(3, bool)})


def test_imp_bad_arguments():
    params = {"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}

    def train_fn(p, m):
        return p

    for rounds in (-1, 1.5, True):
        with pytest.raises(ValueError, match="imp: rounds must be an int >= 0"):
            imp(train_fn, params, rounds=rounds, rate=0.2)
    with pytest.raises(ValueError, match=r"imp: rate must be a scalar in \[0, 1\)"):
        imp(train_fn, params, rounds=1, rate=1.0)
    with pytest.raises(ValueError, match="imp: train_fn's output: structure differs"):
        imp(lambda p, m: p["W"], params, rounds=1, rate=0.2)
