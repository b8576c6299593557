"""Directions: filter/layer normalisation checked slice by slice with NumPy norms (Li et al. 2018,
§4), PCA of a trajectory that lies in a known subspace against numpy.linalg.svd (§6), the plane
through three points reconstructed exactly."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import nn
from jaxlearn.landscape.directions import normalize_direction, pca_directions, plane, project, random_direction

FLOAT = jnp.result_type(float)                                     # float64 in the float64 process


def filled(model, in_shape, seed):
    """A model's params with N(0, 1/4) entries from NumPy: the structure comes from ``eval_shape``
    (no compile), so the tests do not pay for XLA's threefry compile of every init shape."""
    shapes = jax.eval_shape(lambda k: model.init(k, jax.ShapeDtypeStruct(in_shape, FLOAT))[0], jax.random.key(0))
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.5 * r.normal(size=s.shape), s.dtype), shapes)


def mlp_params(seed=0):
    return filled(nn.mlp([16, 16], 3, activation="tanh"), (1, 5), seed)


def cnn_params():
    model = nn.serial(nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(), nn.LayerNorm(affine=True),
                      nn.Conv(4, (2, 2)), nn.Flatten(), nn.Dense(3))
    params = filled(model, (1, 6, 6, 2), 1)
    # Zero filters must give zero direction slices (no NaN).
    return jax.tree.map(lambda x: x.at[..., 0].set(0) if x.ndim == 4 else x, params)


def flax_like_params():
    r = np.random.default_rng(0)
    return {"Dense_0": {"kernel": jnp.asarray(r.normal(size=(4, 6)), FLOAT),
                        "bias": jnp.asarray(r.normal(size=6), FLOAT)},
            "BatchNorm_0": {"scale": jnp.ones(6, FLOAT), "bias": jnp.zeros(6, FLOAT)},
            "step": jnp.array(3, jnp.int32), "mask": jnp.ones(6, bool)}


def all_params():
    """An MLP, a small CNN with a LayerNorm, and flax-style params in one tree: one compile per
    normalization covers Dense (in, out), Conv HWIO, 1-D and non-floating leaves."""
    return {"mlp": mlp_params(), "cnn": cnn_params(), "flax": flax_like_params()}


def flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)])


def is_float(x):
    return np.issubdtype(np.asarray(x).dtype, np.floating)


@pytest.fixture(scope="module")
def raw():
    """A Gaussian direction for all_params from NumPy (the float64 checks need no XLA threefry,
    which compiles slowly; the draw itself is tested in float32 below)."""
    r = np.random.default_rng(3)
    return jax.tree.map(lambda t: jnp.asarray(r.normal(size=t.shape), t.dtype) if is_float(t) else t, all_params())


@pytest.mark.float64
@pytest.mark.parametrize("ignore_bias", [True, False])
def test_filter_norms_match_params(raw, ignore_bias):
    params = all_params()
    d = normalize_direction(raw, params, "filter", ignore_bias)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    assert len(leaves) == 20
    for (path, t), v in zip(leaves, jax.tree.leaves(d)):
        t, v = np.asarray(t), np.asarray(v)
        assert v.dtype == t.dtype and v.shape == t.shape, path
        if not is_float(t):
            np.testing.assert_array_equal(v, np.zeros_like(t))
        elif t.ndim >= 2:
            for j in range(t.shape[-1]):
                np.testing.assert_allclose(np.linalg.norm(v[..., j]), np.linalg.norm(t[..., j]),
                                           rtol=1e-12, atol=1e-300)
        elif ignore_bias:
            np.testing.assert_array_equal(v, 0)
        else:
            np.testing.assert_allclose(np.abs(v), np.abs(t), rtol=1e-12)
        assert np.all(np.isfinite(v))
    assert np.all(np.asarray(d["cnn"][0]["W"][..., 0]) == 0)          # the zero filter
    # Each slice keeps the direction of the raw draw.
    w, r = np.asarray(d["mlp"][2]["W"]), np.asarray(raw["mlp"][2]["W"])
    np.testing.assert_allclose(w / np.linalg.norm(w, axis=0), r / np.linalg.norm(r, axis=0), rtol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("ignore_bias", [True, False])
def test_layer_norms_match_params(raw, ignore_bias):
    params = all_params()
    d = normalize_direction(raw, params, "layer", ignore_bias)
    for t, v in zip(jax.tree.leaves(params), jax.tree.leaves(d)):
        t, v = np.asarray(t), np.asarray(v)
        if not is_float(t) or (t.ndim <= 1 and ignore_bias):
            np.testing.assert_array_equal(v, 0)
        else:
            np.testing.assert_allclose(np.linalg.norm(v), np.linalg.norm(t), rtol=1e-12)


@pytest.mark.float64
def test_none_zeroes_biases_only(raw):
    params = all_params()
    for t, v, r in zip(jax.tree.leaves(params), jax.tree.leaves(normalize_direction(raw, params, "none")),
                       jax.tree.leaves(raw)):
        np.testing.assert_array_equal(v, 0 if t.ndim <= 1 else r)
        assert v.dtype == t.dtype


def test_random_direction_draw_jit_and_vmap():
    big = jnp.asarray(np.random.default_rng(5).normal(size=(50, 101)), jnp.float32)
    params = {"big": [big, big.T], "cnn": cnn_params(), "step": jnp.array(3, jnp.int32)}
    leaves = jax.tree.leaves(params)
    key = jax.random.key(6)
    raw = random_direction(key, params, "none", ignore_bias=False)
    # The documented draw: leaf i is normal(fold_in(key, i), (size,)) reshaped. The implementation
    # draws leaves together (equal large sizes; small ones padded): that must not show.
    idx = [1, 4, 8]
    draws = jax.jit(lambda k: [jax.random.normal(jax.random.fold_in(k, i), (leaves[i].size,)) for i in idx])(key)
    for i, draw in zip(idx, draws):
        np.testing.assert_array_equal(jax.tree.leaves(raw)[i], draw.reshape(leaves[i].shape))
    np.testing.assert_array_equal(raw["step"], 0)
    assert raw["step"].dtype == jnp.int32
    # Drawing a normalised direction = rescaling the raw draw; deterministic in the key.
    d = random_direction(key, params, "filter")
    again = random_direction(jax.random.key(6), params, "filter")
    other = random_direction(jax.random.key(7), params, "filter")
    chex.assert_trees_all_close(d, normalize_direction(raw, params, "filter"), rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_equal(d, again)
    for x, w in zip(jax.tree.leaves(d), jax.tree.leaves(other)):
        if x.ndim >= 2:
            assert not np.allclose(x, w)
    # vmap over keys (inside jit) = a loop over keys.
    keys = jax.random.split(key, 3)
    batched = jax.tree.map(np.asarray, jax.jit(jax.vmap(lambda k: random_direction(k, params, "filter")))(keys))
    for i, k in enumerate(jax.random.split(key, 3)):
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched), random_direction(k, params, "filter"),
                                    rtol=1e-6, atol=1e-7)


ERRORS = [
    ("missing", lambda p: {**p, "Dense_0": {"kernel": p["Dense_0"]["kernel"]}},
     r"direction: structure differs from params at leaf \['Dense_0'\]\['kernel'\] "
     r"\(expected \['Dense_0'\]\['bias'\]\)"),
    ("extra", lambda p: {**p, "zz": jnp.zeros(2)}, r"direction: structure differs from params: extra leaf \['zz'\]"),
    ("shape", lambda p: {**p, "Dense_0": {**p["Dense_0"], "kernel": jnp.zeros((6, 4))}},
     r"direction: leaf \['Dense_0'\]\['kernel'\] has shape \(6, 4\), expected \(4, 6\) as in params"),
    ("renamed", lambda p: {**p, "Dense_1": p.pop("Dense_0")},
     r"direction: structure differs from params at leaf \['Dense_1'\]\['bias'\] \(expected \['mask'\]\)"),
]


@pytest.mark.parametrize("case, make, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_direction_errors(case, make, match):
    params = flax_like_params()
    with pytest.raises(ValueError, match=f"^({match})$") as info:
        normalize_direction(make(dict(params)), params)
    assert "\n" not in str(info.value)


def test_bad_normalization():
    with pytest.raises(ValueError, match=r"normalization must be one of \('filter', 'layer', 'none'\), got 'Filter'"):
        random_direction(jax.random.key(0), mlp_params(), "Filter")
    with pytest.raises(ValueError, match=r"^normalization must be one of .*, got None$"):
        normalize_direction(mlp_params(), mlp_params(), None)
    with pytest.raises(TypeError, match=r"^key must be a jax.random key, got int$"):
        random_direction(0, mlp_params())


def subspace_trajectory(T=7, as_list=False, seed=0):
    """θ_t = θ_final + a_t u + b_t w with orthonormal (flattened) u, w; returns the trajectory, u, w."""
    params = mlp_params()
    leaves, treedef = jax.tree.flatten(params)
    sizes = [x.size for x in leaves]
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.normal(size=(sum(sizes), 2)))
    ab = r.normal(size=(T, 2)) * np.array([3.0, 1.0])
    ab[-1] = 0.0
    rows = flat(params)[None] + ab @ q.T                            # (T, P)
    def unflat(v):
        return jax.tree.unflatten(treedef, [jnp.asarray(c.reshape(x.shape)) for c, x in
                                            zip(np.split(v, np.cumsum(sizes)[:-1], axis=-1), leaves)])
    if as_list:
        return [unflat(row) for row in rows], q, rows
    stacked = jax.tree.unflatten(treedef, [jnp.asarray(c.reshape((T,) + x.shape)) for c, x in
                                           zip(np.split(rows, np.cumsum(sizes)[:-1], axis=1), leaves)])
    return stacked, q, rows


@pytest.mark.float64
@pytest.mark.parametrize("as_list", [False, True])
def test_pca_recovers_the_subspace(as_list):
    traj, q, rows = subspace_trajectory(as_list=as_list)
    (d1, d2), ratio = pca_directions(traj)
    v = np.stack([flat(d1), flat(d2)])
    np.testing.assert_allclose(v @ v.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(v @ q, axis=1), 1.0, atol=1e-12)   # inside span{u, w}
    np.testing.assert_allclose(ratio.sum(), 1.0, atol=1e-12)
    _, s, vt = np.linalg.svd(rows - rows[-1], full_matrices=False)
    np.testing.assert_allclose(ratio, s[:2] ** 2 / np.sum(s ** 2), atol=1e-12)
    np.testing.assert_allclose(np.abs(np.sum(v * vt[:2], axis=1)), 1.0, atol=1e-12)
    for row in v:
        assert row[np.argmax(np.abs(row))] > 0
    # In the directions' basis the snapshots are the exact coordinates of the projection.
    coords = project(traj, jax.tree.map(lambda x: x[-1], traj) if not as_list else traj[-1], (d1, d2))
    np.testing.assert_allclose(coords, (rows - rows[-1]) @ v.T, atol=1e-10)


@pytest.mark.float64
def test_pca_with_explicit_final_and_three_directions():
    traj, q, rows = subspace_trajectory(T=6)
    final = jax.tree.map(lambda x: x[-1], traj)
    head = jax.tree.map(lambda x: x[:-1], traj)
    dirs, ratio = pca_directions(head, final=final, num=3)
    assert len(dirs) == 3
    _, s, _ = np.linalg.svd(rows[:-1] - rows[-1], full_matrices=False)
    np.testing.assert_allclose(ratio, s[:3] ** 2 / np.sum(s ** 2), atol=1e-12)
    np.testing.assert_allclose(ratio[2], 0.0, atol=1e-12)


def test_pca_errors():
    traj, _, _ = subspace_trajectory(T=3)
    with pytest.raises(ValueError, match=r"^num must be an int in \[1, min\(T, P\)\] = \[1, 3\], got 4$"):
        pca_directions(traj, num=4)
    final = jax.tree.map(lambda x: x[-1, ..., :1], traj)
    with pytest.raises(ValueError, match=r"^trajectory: leaf \[0\]\['W'\] has shape \(3, 5, 16\), "
                                         r"expected \(3, 5, 1\) as in final$"):
        pca_directions(traj, final=final)
    ragged = jax.tree.map(lambda x: x[:2] if x.ndim == 2 else x, traj)
    with pytest.raises(ValueError, match=r"^trajectory: leaves have different leading axes \[2, 3\]$"):
        pca_directions(ragged)


@pytest.mark.float64
def test_plane_reconstructs_the_three_points():
    p0, p1, p2 = (mlp_params(seed) for seed in range(3))
    origin, d1, d2, coords = plane(p0, p1, p2)
    assert coords.shape == (3, 2)
    np.testing.assert_allclose(np.vdot(flat(d1), flat(d2)), 0.0, atol=1e-12)
    u, v1 = flat(p2) - flat(p0), flat(p1) - flat(p0)
    np.testing.assert_allclose(coords, [[0, 0], [1, 0], [u @ v1 / (v1 @ v1), 1]], rtol=1e-13, atol=0)
    for p, (x, y) in zip((p0, p1, p2), np.asarray(coords)):
        rebuilt = jax.tree.map(lambda o, a, b: o + x * a + y * b, origin, d1, d2)
        np.testing.assert_allclose(flat(rebuilt), flat(p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(project([p0, p1, p2], origin, (d1, d2)), coords, atol=1e-12)


def test_plane_errors():
    p = mlp_params()
    q = jax.tree.map(lambda x: x, p)[:-1]
    with pytest.raises(ValueError, match=r"^p2: structure differs from p0: missing leaf \[4\]\['W'\]$"):
        plane(p, p, q)
