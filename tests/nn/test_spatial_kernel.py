"""Infinite-width kernel maps of Conv, AvgPool, GlobalAvgPool, Flatten, LayerNorm and the fan-in
combinators (``jaxlearn/nn/spatial_kernel.py`` and the layers' ``kernel_fn``), against ground truth
written here, never a copy of the maps:

* one Conv layer: the NNGP is the expectation over its Gaussian weights, written as NumPy loops
  over output positions and filter taps (with XLA's SAME padding re-derived here); the NTK of one
  weight layer does not depend on the weights, so ``jax.jacobian`` of the layer's forward pass at
  any width gives it exactly.
* AvgPool, GlobalAvgPool, Flatten, fanin_sum, fanin_concat are linear maps of the features: for
  jointly Gaussian features with a random covariance ``Σ`` over (example, position), the output
  covariance is ``L Σ Lᵀ`` with ``L`` read off the layer's forward pass on basis vectors; Flatten
  and fanin_concat are checked through the Dense that follows them (its expectation over weights).
* LayerNorm and a small CNN (with pooling, a residual block, LayerNorm): Monte Carlo over random
  initialisations of wide networks, with tolerances from the seeds' standard error.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn.nn as nn

F64 = pytest.mark.float64


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def random_psd(seed, n):
    a = normal(seed, n, n + 2)
    return a @ a.T / (n + 2)


def pairs_layout(a, n_spatial):
    """``(N1, *P, N2, *P')`` → ``(N1, N2, P1, P1', P2, P2')``: the Kernel's interleaved pairs."""
    order = [0, n_spatial + 1]
    for d in range(n_spatial):
        order += [1 + d, n_spatial + 2 + d]
    return np.transpose(a, order)


def to_pairs(block, positions):
    """``(Na, Nb, P, P')`` with flattened positions → the pair layout ``(Na, Nb, P1, P1', P2, P2')``."""
    a = block.reshape(block.shape[:2] + tuple(positions) + tuple(positions))
    return pairs_layout(np.moveaxis(a, 1, 1 + len(positions)), len(positions))


def self_blocks(a):
    """``(N, N, *pairs)`` → ``(N, *pairs)``: each example with itself (``cov``)."""
    return np.stack([a[n, n] for n in range(a.shape[0])])


def check_psd(matrix, rtol=1e-10):
    np.testing.assert_allclose(matrix, matrix.T, rtol=1e-12, atol=1e-12)
    eigs = np.linalg.eigvalsh(matrix)
    assert eigs.min() >= -rtol * abs(eigs).max(), eigs


def as_matrix(nngp):
    """A square pair array ``(N, N, P1, P1', …)`` as the matrix over ``(n, P1, …)``."""
    p = (nngp.ndim - 2) // 2
    order = [0] + [2 + 2 * d for d in range(p)] + [1] + [3 + 2 * d for d in range(p)]
    a = np.transpose(np.asarray(nngp), order)
    side = int(math.isqrt(a.size))
    return a.reshape(side, side)


# -- one Conv layer: exact NNGP (loops) and exact NTK (Jacobian) ----------------------------------


def geometry(size, window, stride, padding):
    """Output size and zeros padded before, XLA's rule: SAME has ceil(n/s) outputs and pads
    max((out - 1)·s + w - n, 0) zeros, half (rounded down) before."""
    if padding == "VALID":
        return (size - window) // stride + 1, 0
    out = -(-size // stride)
    return out, max((out - 1) * stride + window - size, 0) // 2


def loop_conv_nngp(x1, x2, filter_shape, strides, padding, W_std, b_std):
    """``E_W[z(x1) z(x2)]`` per output channel: ``σ_w²/(C|F|) Σ_taps Σ_c x1 x2 + σ_b²``, with
    explicit loops over output positions and taps. 1-D inputs get a unit height."""
    one_d = x1.ndim == 3
    if one_d:
        x1, x2 = x1[:, None], x2[:, None]
        filter_shape, strides = (1,) + tuple(filter_shape), (1,) + tuple(strides)
    (fh, fw), (sh, sw), c = filter_shape, strides, x1.shape[-1]
    (oh, lo_h), (ow, lo_w) = (geometry(x1.shape[1 + d], filter_shape[d], strides[d], padding) for d in range(2))

    def padded(x):  # zeros around, enough for every tap of every output
        out = np.zeros((x.shape[0], x.shape[1] + 2 * fh, x.shape[2] + 2 * fw, c))
        out[:, lo_h + fh:lo_h + fh + x.shape[1], lo_w + fw:lo_w + fw + x.shape[2]] = x
        return out

    p1, p2 = padded(x1), padded(x2)
    out = np.zeros((x1.shape[0], x2.shape[0], oh, oh, ow, ow))
    for h1, h2, w1, w2 in itertools.product(range(oh), range(oh), range(ow), range(ow)):
        total = 0.0
        for i, j in itertools.product(range(fh), range(fw)):
            a = p1[:, sh * h1 + i + fh, sw * w1 + j + fw]  # (N1, C): tap (i, j) of output (h1, w1)
            b = p2[:, sh * h2 + i + fh, sw * w2 + j + fw]
            total = total + a @ b.T
        out[:, :, h1, h2, w1, w2] = W_std**2 * total / (c * fh * fw) + (0.0 if b_std is None else b_std**2)
    return out[:, :, 0, 0] if one_d else out


def per_channel_ntk(j1, j2, n_spatial):
    """The empirical NTK of one output unit, ``Σ_θ ∂z_o(x1)/∂θ ∂z_o(x2)/∂θ``, in the pair layout,
    from the Jacobians ``(N, *positions, channels, *param_shape)`` of each parameter.

    ``J(x1) J(x2)ᵀ`` over all outputs is block diagonal in the output channels (the filter and bias
    of channel ``o`` reach only channel ``o``), with the same block for every channel: that block —
    the trace over channels divided by their number — is the NTK of one unit, which is what the
    analytic map describes (summing without dividing would count it once per channel). Its
    off-diagonal blocks are checked to be 0. No width enters: the standard parameterization's map
    uses the finite fan-in ``C·|F|`` (``Θ = n_in K̄ + 1``), which is exactly ``Σ_taps Σ_c x x'``."""
    pos1, pos2 = "hw"[:n_spatial], "HW"[:n_spatial]
    pairs = "".join(a + b for a, b in zip(pos1, pos2))
    full = 0.0
    for leaf in j1:
        a = np.asarray(j1[leaf]).reshape(j1[leaf].shape[:n_spatial + 2] + (-1,))
        b = np.asarray(j2[leaf]).reshape(j2[leaf].shape[:n_spatial + 2] + (-1,))
        full = full + np.einsum(f"n{pos1}oz,m{pos2}qz->nm{pairs}oq", a, b)
    channels = full.shape[-1]
    np.testing.assert_array_equal(full * (1 - np.eye(channels)), 0.0)
    return np.einsum("...oo->...", full) / channels


CONV_CASES = [  # (example shape, filter, stride, padding); sizes 5 and 6 make SAME pad unevenly
    ((5, 5, 2), (3, 2), 1, "SAME"),
    ((5, 5, 2), (3, 2), 2, "SAME"),
    ((5, 5, 2), (3, 2), 1, "VALID"),
    ((5, 5, 2), (3, 2), 2, "VALID"),
    ((6, 2), (3,), 2, "SAME"),
    ((6, 2), (3,), 1, "VALID"),
]
WEIGHT_CASES = [(param, b_std) for param in ("standard", "ntk") for b_std in (0.4, None)]


@F64
@pytest.mark.parametrize("shape, filter_shape, stride, padding", CONV_CASES,
                         ids=[f"{len(c[1])}d-{c[3]}-stride{c[2]}" for c in CONV_CASES])
def test_conv_layer_kernel_is_exact(shape, filter_shape, stride, padding):
    x1, x2 = normal(1, 2, *shape), normal(2, 3, *shape)
    strides = (stride,) * len(filter_shape)
    layers = [nn.Conv(3, filter_shape, strides=strides, padding=padding, W_std=1.3, b_std=b_std,
                      parameterization=param) for param, b_std in WEIGHT_CASES]

    @jax.jit  # one program per geometry: compiling dominates on CPU
    def kernels_and_jacobians(x1, x2):
        out = []
        for layer in layers:
            params, _ = layer.init(jax.random.key(0), x1)  # any weights: one layer's Jacobian ignores them
            out.append((layer.kernel(nn.input_kernel(x1, x2)), jax.jacobian(lambda p: layer.apply(p, x1))(params),
                        jax.jacobian(lambda p: layer.apply(p, x2))(params)))
        return out

    for (param, b_std), layer, (k, j1, j2) in zip(WEIGHT_CASES, layers, kernels_and_jacobians(x1, x2)):
        def nngp(a, b):
            return loop_conv_nngp(a, b, filter_shape, strides, padding, 1.3, b_std)

        np.testing.assert_allclose(k.nngp, nngp(x1, x2), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(k.cov1, self_blocks(nngp(x1, x1)), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(k.cov2, self_blocks(nngp(x2, x2)), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(k.ntk, per_channel_ntk(j1, j2, x1.ndim - 2), rtol=1e-10, atol=1e-10)
        assert (k.channels, k.is_gaussian) == (3, True)
        assert layer.output_spec(x1).shape[1:-1] == k.nngp.shape[2::2]


# -- linear layers: L Σ Lᵀ ----------------------------------------------------------------------


def gaussian_features_kernel(seed, n1, n2, positions, channels=3):
    """A Kernel of jointly Gaussian features (i.i.d. over channels) with a random covariance ``Σ``
    over (example, position) of x1 and x2 together, and a random PSD ``Θ``; with ``Σ`` as blocks."""
    p = math.prod(positions)
    sig, theta = (random_psd(s, (n1 + n2) * p).reshape(n1 + n2, p, n1 + n2, p).transpose(0, 2, 1, 3)
                  for s in (seed, seed + 1))  # (N, N, P, P')

    def layout(block):
        return to_pairs(block, positions)

    x1s, x2s = slice(0, n1), slice(n1, n1 + n2)
    k = nn.Kernel(layout(sig[x1s, x2s]), layout(theta[x1s, x2s]), self_blocks(layout(sig[x1s, x1s])),
                  self_blocks(layout(sig[x2s, x2s])), channels, True)
    return k, sig, theta


def forward_matrix(layer, shape, inputs=1):
    """The layer's forward map on one example of shape ``shape`` (positions and channels) as a
    matrix ``(outputs, inputs·prod(shape))``: rows of the identity go in as a batch (as a tuple of
    ``inputs`` slices for fan-ins)."""
    p = math.prod(shape)
    eye = np.eye(inputs * p)
    xs = tuple(eye[:, i * p:(i + 1) * p].reshape((inputs * p,) + shape) for i in range(inputs))
    y = layer.apply((), xs if inputs > 1 else xs[0])
    return np.asarray(y).reshape(inputs * p, -1).T


def covariance_after(L, blocks, out_positions):
    """``L Σ_ab Lᵀ`` for every pair of examples, in the pair layout."""
    return to_pairs(np.einsum("ip,abpq,jq->abij", L, blocks, L), out_positions)


def check_linear_map(k_out, L, sig, theta, n1, out_positions):
    x1s, x2s = slice(0, n1), slice(n1, sig.shape[0])
    np.testing.assert_allclose(k_out.nngp, covariance_after(L, sig[x1s, x2s], out_positions), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k_out.ntk, covariance_after(L, theta[x1s, x2s], out_positions), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k_out.cov1, self_blocks(covariance_after(L, sig[x1s, x1s], out_positions)),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k_out.cov2, self_blocks(covariance_after(L, sig[x2s, x2s], out_positions)),
                               rtol=1e-12, atol=1e-13)


POOLS = [  # (input positions, layer)
    ((4, 5), nn.AvgPool((2, 3), strides=(1, 2), padding="SAME", count_include_pad=False)),
    ((4, 5), nn.AvgPool((3, 2), strides=(2, 1), padding="SAME")),
    ((4, 5), nn.AvgPool((2, 2))),
    ((7,), nn.AvgPool((3,), strides=(2,), padding="SAME", count_include_pad=False)),
    ((7,), nn.AvgPool((2,), strides=(1,))),
    ((4, 5), nn.GlobalAvgPool()),
    ((7,), nn.GlobalAvgPool()),
]


@F64
@pytest.mark.parametrize("positions, layer", POOLS, ids=[f"{p}-{layer.name}" for p, layer in POOLS])
def test_pooling_is_the_covariance_of_its_forward_map(positions, layer):
    k, sig, theta = gaussian_features_kernel(0, 2, 3, positions)
    L = forward_matrix(layer, positions + (1,))  # one channel: the channels are i.i.d. and pooled alike
    out_positions = layer.output_spec(jax.ShapeDtypeStruct((1,) + positions + (1,), jnp.float64)).shape[1:-1]
    k_out = layer.kernel(k)
    check_linear_map(k_out, L, sig, theta, 2, out_positions)
    assert (k_out.channels, k_out.is_gaussian) == (k.channels, True)


@F64
def test_fanin_sum_of_independent_branches():
    positions = (3, 4)
    ka, sig_a, theta_a = gaussian_features_kernel(0, 2, 3, positions)
    kb, sig_b, theta_b = gaussian_features_kernel(5, 2, 3, positions)
    joint = np.zeros((2,) + sig_a.shape[:2] + (2,) + sig_a.shape[2:])  # independent branches: block diagonal
    joint_theta = np.zeros_like(joint)
    joint[0, :, :, 0], joint[1, :, :, 1] = sig_a, sig_b
    joint_theta[0, :, :, 0], joint_theta[1, :, :, 1] = theta_a, theta_b

    def stacked(a):  # (branch, N, N, branch', P, P') → (N, N, branch·P, branch'·P')
        a = np.transpose(a, (1, 2, 0, 4, 3, 5))
        return a.reshape(a.shape[:2] + (a.shape[2] * a.shape[3], -1))

    L = forward_matrix(nn.fanin_sum(), positions + (1,), inputs=2)
    k_out = nn.fanin_sum().kernel((ka, kb))
    check_linear_map(k_out, L, stacked(joint), stacked(joint_theta), 2, positions)
    assert (k_out.channels, k_out.is_gaussian) == (3, True)
    assert not nn.fanin_sum().kernel((ka, kb.replace(is_gaussian=False))).is_gaussian


def expected_dense_after(feature_covs, theta_covs, W_std):
    """One ``Dense(1, W_std, b_std=None)`` (standard) acting on features with per-feature covariances
    ``(…, D)``: ``E_W[z z'] = σ_w²/D Σ_j Cov_j`` and its NTK ``Σ_j Cov_j + σ_w²/D Σ_j Θ_j`` (the
    gradient w.r.t. ``W`` is the features themselves)."""
    return W_std**2 * feature_covs.mean(-1), feature_covs.sum(-1) + W_std**2 * theta_covs.mean(-1)


@F64
@pytest.mark.parametrize("positions", [(3, 4), (5,), ()], ids=["2d", "1d", "vector"])
def test_flatten_then_dense(positions):
    channels = 3
    k, sig, theta = gaussian_features_kernel(0, 2, 3, positions, channels)
    p = math.prod(positions)
    flat = nn.Flatten()
    L = forward_matrix(flat, positions + (channels,))  # one example's (P·C) inputs → features: a permutation
    # The flattened features' covariances: channels i.i.d., so Σ ⊗ I_C over (position, channel).
    x1s, x2s = slice(0, 2), slice(2, 5)
    full = np.einsum("abpq,cd->abpcqd", sig[x1s, x2s], np.eye(channels)).reshape(2, 3, p * channels, p * channels)
    full_theta = np.einsum("abpq,cd->abpcqd", theta[x1s, x2s], np.eye(channels)).reshape(full.shape)
    per_feature = np.einsum("ip,abpq,iq->abi", L, full, L)  # Cov(y_j(x1), y_j(x2)) for each feature j
    per_feature_theta = np.einsum("ip,abpq,iq->abi", L, full_theta, L)
    W_std = 1.7
    want_nngp, want_ntk = expected_dense_after(per_feature, per_feature_theta, W_std)
    k_flat = flat.kernel(k)
    assert k_flat.channels == channels * p and k_flat.nngp.shape == (2, 3)
    k_out = nn.Dense(1, W_std=W_std, b_std=None).kernel(k_flat)
    np.testing.assert_allclose(k_out.nngp, want_nngp, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k_out.ntk, want_ntk, rtol=1e-12, atol=1e-13)


@F64
@pytest.mark.parametrize("positions", [(3, 4), ()], ids=["2d", "vector"])
def test_fanin_concat_then_dense(positions):
    widths = (2, 5)
    ka, sig_a, theta_a = gaussian_features_kernel(0, 2, 3, positions, widths[0])
    kb, sig_b, theta_b = gaussian_features_kernel(5, 2, 3, positions, widths[1])
    concat = nn.fanin_concat(-1)
    # The concatenated features' per-feature covariances: the layer's forward pass concatenates
    # the branches' per-channel covariances (the channel axis last) like it concatenates features.
    x1s, x2s = slice(0, 2), slice(2, 5)

    def per_channel(block, width):
        return np.repeat(block[x1s, x2s][..., None], width, axis=-1)

    features = np.asarray(concat.apply((), (per_channel(sig_a, widths[0]), per_channel(sig_b, widths[1]))))
    features_theta = np.asarray(concat.apply((), (per_channel(theta_a, widths[0]), per_channel(theta_b, widths[1]))))
    want_nngp, want_ntk = expected_dense_after(features, features_theta, 1.4)  # a Dense acts on channels
    k_cat = concat.kernel((ka, kb))
    assert (k_cat.channels, k_cat.is_gaussian) == (sum(widths), True)
    k_out = nn.Dense(1, W_std=1.4, b_std=None).kernel(k_cat)
    np.testing.assert_allclose(k_out.nngp, to_pairs(want_nngp, positions), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(k_out.ntk, to_pairs(want_ntk, positions), rtol=1e-12, atol=1e-13)


# -- Monte Carlo over initialisations -------------------------------------------------------------
#
# Weight layers use the ntk parameterization here, whose init is "every weight and bias N(0, 1)"
# (jaxlearn/nn/parameterization.py), and the same NNGP as the standard one. We draw those normals
# with NumPy: compiling JAX's PRNG (threefry) for each weight shape costs ~0.5 s apiece on CPU.


def ntk_params(model, x, seed):
    """One draw of an ntk-parameterised model's params: weights and biases N(0, 1), LayerNorm's
    ``scale`` 1 and ``offset`` 0 (their init)."""
    shapes = jax.eval_shape(lambda key: model.init(key, x)[0], jax.random.key(0))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name in ("scale", "offset"):
            return np.full(leaf.shape, 1.0 if name == "scale" else 0.0)
        return rng.standard_normal(leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def stacked_params(model, x, seeds):
    return jax.tree.map(lambda *leaves: np.stack(leaves), *[ntk_params(model, x, s) for s in range(seeds)])


def mc_pairs(features):
    """``(N, *P, C)`` features → the kernel estimate ``(N, N, *pairs)``: the mean over channels of
    ``y_c(x) y_c(x')`` (pair layout)."""
    p = features.ndim - 2
    pos1, pos2 = "hw"[:p], "HW"[:p]
    pairs = "".join(a + b for a, b in zip(pos1, pos2))
    return jnp.einsum(f"n{pos1}c,m{pos2}c->nm{pairs}", features, features) / features.shape[-1]


def check_monte_carlo(estimates, want, width, bias=4.0):
    """``estimates (S, …)``: independent per-seed estimates. Their mean must lie within 6 standard
    errors (estimated from the ``S`` seeds) plus ``bias·max|want|/width``, the size of the
    finite-width corrections (O(1/width)) that no number of seeds removes."""
    estimates, want = np.asarray(estimates), np.asarray(want)
    stderr = estimates.std(0, ddof=1) / math.sqrt(estimates.shape[0])
    allowed = 6 * stderr + bias * np.abs(want).max() / width
    ratio = np.abs(estimates.mean(0) - want) / allowed
    assert (ratio <= 1).all(), ratio.max()


def check_split(estimates, k, n1, width, what="nngp", bias=4.0):
    """Per-seed estimates over ``x1`` and ``x2`` stacked → checks of ``k.<what>`` (the x1–x2 block)
    and, for the NNGP, of ``cov1``/``cov2`` (the self blocks)."""
    estimates = np.asarray(estimates)
    check_monte_carlo(estimates[:, :n1, n1:], getattr(k, what), width, bias)
    if what == "nngp":
        check_monte_carlo(np.stack([self_blocks(e[:n1, :n1]) for e in estimates]), k.cov1, width, bias)
        check_monte_carlo(np.stack([self_blocks(e[n1:, n1:]) for e in estimates]), k.cov2, width, bias)


LN_CASES = [((4,), -1), ((4, 2), -1), ((4, 2), (1, 2))]  # (example shape, LayerNorm axis)


@F64
@pytest.mark.parametrize("shape, axis", LN_CASES, ids=["dense", "conv1d-channels", "conv1d-all"])
def test_layer_norm_nngp_monte_carlo(shape, axis):
    width, seeds = 4096, 16
    kw = dict(W_std=1.2, b_std=0.3, parameterization="ntk")
    first = nn.Dense(width, **kw) if len(shape) == 1 else nn.Conv(width, (2,), padding="SAME", **kw)
    model = nn.serial(first, nn.LayerNorm(axis=axis))
    x1, x2 = normal(1, 3, *shape), normal(2, 2, *shape)
    k = jax.jit(lambda a, b: model.kernel(nn.input_kernel(a, b)))(x1, x2)
    x = np.concatenate([x1, x2])
    estimate = jax.jit(lambda params: mc_pairs(model.apply(params, x)))
    # The weight layer's outputs are exactly Gaussian and i.i.d. over channels at any width; the
    # normalisation's finite-width statistics bias the mean of ŷ_c ŷ'_c by O(1/width).
    check_split(np.stack([estimate(ntk_params(model, x, s)) for s in range(seeds)]), k, 3, width)


@F64
@pytest.mark.parametrize("affine", [False, True])
def test_layer_norm_ntk_monte_carlo(affine):
    """The empirical per-unit NTK of Dense → LayerNorm (``jax.jacobian``) over seeds."""
    width, seeds = 512, 16
    model = nn.serial(nn.Dense(width, W_std=1.2, b_std=0.3, parameterization="ntk"), nn.LayerNorm(affine=affine))
    x1, x2 = normal(1, 3, 3), normal(2, 2, 3)
    k = jax.jit(lambda a, b: model.kernel(nn.input_kernel(a, b)))(x1, x2)
    x = np.concatenate([x1, x2])

    @jax.jit
    def estimates(params):
        def one(p):  # per unit: Σ_θ ∂y_c(x)/∂θ ∂y_c(x')/∂θ, averaged over the units c
            jac = jax.jacobian(lambda q: model.apply(q, x))(p)
            return sum(jnp.einsum("nc...,mc...->nm", j, j) for j in jax.tree.leaves(jac)) / width
        return jax.lax.map(one, params)

    # Beyond the seeds' spread: the normalisation's Jacobian differs from I/σ by a rank-2 term,
    # O(1/width) corrections.
    check_split(estimates(stacked_params(model, x, seeds)), k, 3, width, "ntk", bias=8.0)


# -- a small CNN: chains, residual blocks, Monte Carlo --------------------------------------------


def cnn(width, head, W_std=1.4, parameterization="ntk"):
    """``(body, head)``: the spatial part and what maps it to vectors (pooling/Flatten and a Dense)."""
    kw = dict(W_std=W_std, b_std=0.1, parameterization=parameterization)
    body = [nn.Conv(width, (3, 3), padding="SAME", **kw), nn.Relu(),
            nn.Conv(width, (3, 3), strides=2, padding="SAME", **kw), nn.Relu()]
    if head == "gap":
        tail = [nn.AvgPool((2, 2), strides=1), nn.GlobalAvgPool()]
    elif head == "flatten":
        tail = [nn.Flatten()]
    else:  # residual: the shortcut is a Conv output (Gaussian), so LayerNorm after the sum is defined
        body = [nn.Conv(width, (3, 3), padding="SAME", **kw),
                nn.residual(nn.Relu(), nn.Conv(width, (3, 3), padding="SAME", **kw), nn.Relu(),
                            nn.Conv(width, (2, 2), padding="SAME", **kw)),
                nn.LayerNorm()]
        tail = [nn.Relu(), nn.AvgPool((2, 2), strides=1, padding="SAME", count_include_pad=False), nn.GlobalAvgPool()]
    return nn.serial(*body), nn.serial(*tail, nn.Dense(width, **kw))


HEADS = ["gap", "flatten", "residual"]
IMAGES = normal(7, 4, 5, 5, 2)
CNN_WIDTH = 512


@functools.lru_cache(maxsize=None)
def cnn_kernels(head):
    """The analytic kernels of :func:`cnn` on ``IMAGES`` (x2 = x1): the body's and the output's."""
    body, tail = cnn(CNN_WIDTH, head)

    @jax.jit
    def kernels(x):
        k_body = body.kernel(nn.input_kernel(x))
        return k_body, tail.kernel(k_body)

    return kernels(IMAGES)


@F64
@pytest.mark.parametrize("head", HEADS)
def test_cnn_kernels_are_symmetric_psd(head):
    k_body, k = cnn_kernels(head)
    assert k.nngp.shape == k.ntk.shape == (4, 4) and k.cov2 is None and k.channels == CNN_WIDTH
    for a in (k.nngp, k.ntk):
        assert np.isfinite(a).all()
        check_psd(np.asarray(a))
    np.testing.assert_allclose(k.cov1, np.diag(k.nngp), rtol=1e-12)
    # the spatial kernels as matrices over (example, position)
    assert k_body.nngp.shape[2:] in ((5, 5, 5, 5), (3, 3, 3, 3))
    check_psd(as_matrix(k_body.nngp))
    check_psd(as_matrix(k_body.ntk))
    np.testing.assert_allclose(k_body.cov1, self_blocks(np.asarray(k_body.nngp)), rtol=1e-12)


@F64
@pytest.mark.parametrize("head", ["gap", "residual"])
def test_cnn_nngp_monte_carlo(head):
    """Forward passes of the CNN at width 256 over 16 seeds against the analytic NNGP."""
    seeds = 16
    model = nn.serial(*cnn(CNN_WIDTH, head))
    estimate = jax.jit(lambda params: mc_pairs(model.apply(params, IMAGES)))
    estimates = np.stack([estimate(ntk_params(model, IMAGES, s)) for s in range(seeds)])
    _, k = cnn_kernels(head)
    check_monte_carlo(estimates, k.nngp, CNN_WIDTH)


# -- jit / vmap over hyperparameters (float32) ----------------------------------------------------


def test_kernel_jits_and_vmaps_over_W_std():
    x = IMAGES.astype(np.float32)

    def kernels(W_std):
        k = nn.serial(*cnn(8, "residual", W_std=W_std)).kernel(nn.input_kernel(x))
        return k.nngp, k.ntk

    grid = jnp.asarray([1.0, 1.5, 2.0], jnp.float32)
    nngp, ntk = jax.jit(jax.vmap(kernels))(grid)
    assert nngp.shape == ntk.shape == (3, 4, 4) and nngp.dtype == jnp.float32
    one_nngp, one_ntk = jax.jit(kernels)(grid[1])
    np.testing.assert_allclose(nngp[1], one_nngp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ntk[1], one_ntk, rtol=1e-5, atol=1e-6)
    assert not np.allclose(nngp[0], nngp[2])


# -- errors: one line, naming the layer -----------------------------------------------------------

VECTORS, SEQUENCES = np.ones((2, 3), np.float32), np.ones((2, 6, 2), np.float32)
SMALL_IMAGES = np.ones((2, 3, 3, 2), np.float32)

KERNEL_ERRORS = [
    ("layernorm-after-relu", nn.serial(nn.Dense(4), nn.Relu(), nn.LayerNorm()), VECTORS,
     r"^LayerNorm: the infinite-width map is defined for Gaussian \(pre-activation\) inputs; place it after a "
     r"Dense/Conv"),
    ("layernorm-on-inputs", nn.LayerNorm(), VECTORS, r"^LayerNorm: .*Gaussian"),
    ("layernorm-spatial-axis", nn.serial(nn.Conv(4, (2, 2)), nn.LayerNorm(axis=1)), SMALL_IMAGES,
     r"^LayerNorm: only normalisation over the channel axis .* got axes \(1,\) of 4-D inputs"),
    ("conv-mup", nn.Conv(4, (2, 2), parameterization="mup", role="hidden"), SMALL_IMAGES,
     r"^Conv\(4, \(2, 2\)\): parameterization 'mup' has no infinite-width NTK map"),
    ("conv-on-vectors", nn.Conv(4, (2,)), VECTORS,
     r"^Conv\(4, \(2,\)\) maps kernels of sequences \(NWC\), got a kernel of vectors"),
    ("conv-1d-on-images", nn.Conv(4, (2,)), SMALL_IMAGES, r"^Conv\(4, \(2,\)\) maps kernels of sequences"),
    ("conv-too-small", nn.Conv(4, (4, 2)), SMALL_IMAGES, r"^Conv\(4, \(4, 2\)\): spatial size 3 is smaller than the "
     r"window 4"),
    ("avgpool-on-sequences", nn.AvgPool((2, 2)), SEQUENCES, r"^AvgPool\(\(2, 2\)\) maps kernels of images"),
    ("gap-on-vectors", nn.GlobalAvgPool(), VECTORS, r"^GlobalAvgPool expects a kernel of sequences or images"),
    ("concat-spatial", nn.serial(nn.fanout(2), nn.parallel(nn.Conv(3, (2,)), nn.Conv(3, (2,))), nn.fanin_concat(1)),
     SEQUENCES, r"^fanin_concat\(1\): only concatenation along the channel axis"),
    ("sum-widths", nn.serial(nn.fanout(2), nn.parallel(nn.Identity(), nn.Dense(5)), nn.fanin_sum()), VECTORS,
     r"^fanin_sum: kernel 1 has 5 channels, kernel 0 has 3"),
    ("sum-same-variables", nn.residual(nn.Identity()), VECTORS, r"^fanin_sum: inputs 0 and 1 are the same variables"),
    ("relu-after-flatten", nn.serial(nn.Conv(3, (2, 2)), nn.Flatten(), nn.Relu()), SMALL_IMAGES,
     r"^Relu: its input comes from Flatten, whose features have different kernels.*apply Relu before Flatten"),
    ("erf-after-concat", nn.serial(nn.fanout(2), nn.parallel(nn.Dense(3), nn.Dense(4)), nn.fanin_concat(), nn.Erf()),
     VECTORS, r"^Erf.*: its input comes from fanin_concat\(-1\)"),
    ("relu-after-flatten-layernorm", nn.serial(nn.Conv(3, (2, 2)), nn.Flatten(), nn.LayerNorm(), nn.Relu()),
     SMALL_IMAGES, r"^Relu: its input comes from Flatten"),
]


@pytest.mark.parametrize("model, x, match", [c[1:] for c in KERNEL_ERRORS], ids=[c[0] for c in KERNEL_ERRORS])
def test_kernel_errors(model, x, match):
    with pytest.raises(nn.LayerError, match=match) as excinfo:
        jax.eval_shape(lambda a: model.kernel(nn.input_kernel(a)), x)  # abstract: nothing is compiled
    assert "\n" not in str(excinfo.value)


def test_kernel_of_a_tuple_names_the_layer():
    k = jax.eval_shape(nn.input_kernel, SMALL_IMAGES)
    with pytest.raises(nn.LayerError, match=r"^Conv\(4, \(2, 2\)\) expects one Kernel, got tuple"):
        nn.Conv(4, (2, 2)).kernel((k, k))


def test_mean_of_is_cleared_by_a_weight_layer_and_absent_for_one_position():
    """What the ``mean_of`` errors above allow: a weight layer after Flatten clears the flag; a
    single position is not a mean; an activation before Flatten is the supported order."""
    one_position = SMALL_IMAGES[:, :1, :1, :]
    for model, x in [(nn.serial(nn.Conv(3, (2, 2)), nn.Flatten(), nn.Dense(4), nn.Relu()), SMALL_IMAGES),
                     (nn.serial(nn.Flatten(), nn.Relu()), one_position),
                     (nn.serial(nn.Conv(3, (2, 2)), nn.Relu(), nn.Flatten(), nn.Dense(2)), SMALL_IMAGES)]:
        k = jax.eval_shape(lambda a, model=model: model.kernel(nn.input_kernel(a)), x)
        assert k.mean_of is None and k.nngp.shape == (x.shape[0], x.shape[0])
    flat = jax.eval_shape(lambda a: nn.Flatten().kernel(nn.input_kernel(a)), SMALL_IMAGES)
    assert flat.mean_of == "Flatten"
