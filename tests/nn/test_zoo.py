"""The model zoo (``nn.mlp``, ``nn.cnn``, ``nn.resnet``, ``nn.embedding_mlp``, ``nn.zoo.transformer``).

Forward passes are checked against NumPy references written here from the models' params: they
share no code with the library (convolutions loop over output positions with explicit SAME
padding; attention is written out with einsum and an explicit causal mask). The jaxlearn models
are compared in float64 (``@pytest.mark.float64``) at ~1e-12; the flax transformer keeps float32
params, so its reference runs in the float32 process at float32 tolerances.

Compile time dominates on CPU, random-init programs most of all, so the forward-pass checks take
params drawn by NumPy on the shapes ``jax.eval_shape(model.init)`` gives (nothing compiled), the
per-model checks (vmapped init, gradients, training; marked ``slow``) share one vmapped init per
model, and programs other than training loops compile without LLVM optimisation (``fast_jit``).
"""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn.nn as nn
from jaxlearn import data, train

F64 = pytest.mark.float64
TOL64 = dict(rtol=1e-11, atol=1e-12)
TOL32 = dict(rtol=2e-4, atol=2e-5)
TOL_MULT = dict(rtol=1e-12, atol=0)  # learning-rate multipliers: Python floats, ratios of widths


def spec(*shape, dtype=None):
    return jax.ShapeDtypeStruct(shape, dtype if dtype is not None else jnp.result_type(float))


def int_spec(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.int32)


def numpy_params(model, input_spec, seed, std=0.5):
    """Params shaped and typed as ``model.init`` returns them (found by ``jax.eval_shape``: nothing
    is compiled), every entry drawn N(0, std²) by NumPy, so biases and LayerNorm scales are not
    at their (zero / one) init values and take part in the comparisons."""
    shapes, state = jax.eval_shape(lambda k: model.init(k, input_spec), jax.random.key(0))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(std * rng.standard_normal(s.shape), s.dtype), shapes)
    return params, state


# LLVM's optimisation passes take most of XLA:CPU's compile time for these tiny programs (random
# draws above all, ~1-3 s per vmapped init otherwise); the programs compute the same thing without
# them. Training loops keep the default options: unoptimised convolutions run too slowly.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST_COMPILE)


def apply(model, params, x):
    """``jax.jit(model.apply)``: one compile per call instead of one per op."""
    return np.asarray(fast_jit(model.apply)(params, jnp.asarray(x)))


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def weight_dicts(params):
    """The ``{"W": ..., "b": ...}`` dicts of a serial model's weight layers, in forward order."""
    if isinstance(params, dict):
        return [params] if "W" in params else []
    if isinstance(params, (tuple, list)):
        return [d for p in params for d in weight_dicts(p)]
    return []


# -- NumPy references ----------------------------------------------------------------------------


def relu(x):
    return np.maximum(x, 0.0)


ACT = {"relu": relu, "tanh": np.tanh}


def dense_ref(x, d, W_std=1.0, b_std=0.0, parameterization="standard"):
    """``z = x W + b``; under ntk ``z = (W_std/√fan_in) x W + b_std b``."""
    W, b = np.asarray(d["W"], np.float64), np.asarray(d["b"], np.float64)
    if parameterization == "ntk":
        return W_std / np.sqrt(W.shape[0]) * (x @ W) + b_std * b
    return x @ W + b


def conv_same_ref(x, d):
    """Stride-1 SAME cross-correlation, looping over output positions.

    ``x``: (N, *spatial, C_in); ``W``: (*window, C_in, C_out). SAME pads ``k - 1`` along each
    axis, ``(k - 1) // 2`` before and the rest after (the XLA/TF rule), so sizes are kept.
    """
    W, b = np.asarray(d["W"], np.float64), np.asarray(d["b"], np.float64)
    window = W.shape[:-2]
    n = len(window)
    pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in window]
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    out = np.zeros(x.shape[:-1] + (W.shape[-1],))
    for pos in itertools.product(*(range(s) for s in x.shape[1:-1])):
        patch = xp[(slice(None),) + tuple(slice(p, p + k) for p, k in zip(pos, window)) + (slice(None),)]
        out[(slice(None),) + pos] = np.tensordot(patch, W, axes=(list(range(1, n + 2)), list(range(n + 1))))
    return out + b


def gap_ref(x):
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


def layer_norm_ref(x, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def mlp_ref(x, dicts, act, **kw):
    h = np.asarray(x, np.float64)
    for d in dicts[:-1]:
        h = act(dense_ref(h, d, **kw))
    return dense_ref(h, dicts[-1], **kw)


def resnet_ref(x, dicts, num_blocks, layer_norm):
    """stem conv → [h + conv(relu(conv(relu(LN?(h)))))] × num_blocks → relu → GAP → dense."""
    h = conv_same_ref(np.asarray(x, np.float64), dicts[0])
    for i in range(num_blocks):
        c1, c2 = dicts[1 + 2 * i], dicts[2 + 2 * i]
        a = layer_norm_ref(h) if layer_norm else h
        h = h + conv_same_ref(relu(conv_same_ref(relu(a), c1)), c2)
    return dense_ref(gap_ref(relu(h)), dicts[-1])


# -- mlp -----------------------------------------------------------------------------------------


@F64
@pytest.mark.parametrize("activation,parameterization", [("relu", "standard"), ("tanh", "ntk"), ("relu", "mup")])
def test_mlp_matches_numpy_forward(activation, parameterization):
    """Standard and mup: ``z = x W + b``; ntk: ``z = (W_std/√n) x W + b_std b``."""
    W_std, b_std = 1.3, 0.4
    model = nn.mlp([5, 4], 3, activation=activation, parameterization=parameterization, W_std=W_std, b_std=b_std)
    params, state = numpy_params(model, spec(1, 7), seed=0)
    assert state == ((),) * 5
    dicts = weight_dicts(params)
    assert [d["W"].shape for d in dicts] == [(7, 5), (5, 4), (4, 3)]
    assert [d["b"].shape for d in dicts] == [(5,), (4,), (3,)]
    assert all(d["W"].dtype == jnp.float64 for d in dicts)
    x = normal(1, 6, 7)
    y = apply(model, params, x)
    assert y.shape == (6, 3)
    expected = mlp_ref(x, dicts, ACT[activation], W_std=W_std, b_std=b_std, parameterization=parameterization)
    np.testing.assert_allclose(y, expected, **TOL64)


@F64
def test_mlp_without_hidden_layers_is_affine():
    model = nn.mlp([], 2)
    params, _ = numpy_params(model, spec(1, 3), seed=2)
    (d,) = weight_dicts(params)
    x = normal(3, 4, 3)
    np.testing.assert_allclose(apply(model, params, x), x @ np.asarray(d["W"]) + np.asarray(d["b"]), **TOL64)


def test_mlp_mup_learning_rate_multipliers_by_position():
    """Roles by position: input W fan_out, hidden W 1, output W 1/fan_in, biases fan_out (SGD)."""
    model = nn.mlp([5, 6], 3, parameterization="mup")
    chex.assert_trees_all_close(model.lr_multipliers(spec(1, 4), "sgd"),
                                ({"W": 5.0, "b": 5.0}, (), {"W": 1.0, "b": 6.0}, (), {"W": 1 / 6, "b": 3.0}),
                                **TOL_MULT)
    chex.assert_trees_all_close(model.lr_multipliers(spec(1, 4), "adam"),
                                ({"W": 1.0, "b": 1.0}, (), {"W": 1 / 5, "b": 1.0}, (), {"W": 1 / 6, "b": 1.0}),
                                **TOL_MULT)
    # two weight layers: an input and an output layer, no hidden one
    chex.assert_trees_all_close(nn.mlp([8], 2, parameterization="mup").lr_multipliers(spec(1, 4), "sgd"),
                                ({"W": 8.0, "b": 8.0}, (), {"W": 1 / 8, "b": 2.0}), **TOL_MULT)
    # the other parameterizations have none
    for parameterization in ("standard", "ntk"):
        assert set(jax.tree.leaves(
            nn.mlp([5, 6], 3, parameterization=parameterization).lr_multipliers(spec(1, 4)))) == {1.0}


def test_mlp_mup_init_scales_by_role(key):
    """Input layer ``W ~ N(0, W_std²/fan_in)``, output layer ``W ~ N(0, W_std²/fan_in²)`` (wide)."""
    W_std, d_in, width, out = 2.0, 16, 512, 256
    model = nn.mlp([width], out, parameterization="mup", W_std=W_std)
    params, _ = fast_jit(lambda k: model.init(k, spec(1, d_in)))(key)
    w_in, w_out = (np.asarray(d["W"], np.float64) for d in weight_dicts(params))
    assert w_in.shape == (d_in, width) and w_out.shape == (width, out)
    np.testing.assert_allclose(w_in.std(), W_std / np.sqrt(d_in), rtol=0.04)
    np.testing.assert_allclose(w_out.std(), W_std / width, rtol=0.02)  # not W_std/√width as in standard
    assert abs(w_out.mean()) < 4 * W_std / width / np.sqrt(w_out.size)


def test_mup_needs_an_input_and_an_output_layer():
    for build, name in [(lambda: nn.mlp([], 3, parameterization="mup"), "mlp"),
                        (lambda: nn.cnn([], 3, parameterization="mup"), "cnn")]:
        with pytest.raises(nn.LayerError, match=f"{name}: mup needs at least two weight layers"):
            build()
    nn.mlp([], 3, parameterization="ntk")  # one weight layer is fine otherwise


# -- cnn -----------------------------------------------------------------------------------------


CNN_CASES = {
    # name: (filter_shape, input shape). 2-D: a non-square filter with an even side on a
    # non-square image, so swapped H/W axes or padding sides would show.
    "1d": ((3,), (3, 6, 2)),
    "2d": ((2, 3), (2, 4, 5, 2)),
}


@F64
@pytest.mark.parametrize("case", CNN_CASES)
def test_cnn_matches_numpy_forward(case):
    """conv (SAME) → relu → global average pool → dense."""
    filter_shape, in_shape = CNN_CASES[case]
    model = nn.cnn([4], 3, filter_shape=filter_shape)
    params, _ = numpy_params(model, spec(1, *in_shape[1:]), seed=4)
    conv, dense = weight_dicts(params)
    assert conv["W"].shape == filter_shape + (in_shape[-1], 4) and dense["W"].shape == (4, 3)
    x = normal(5, *in_shape)
    y = apply(model, params, x)
    assert y.shape == (in_shape[0], 3)
    np.testing.assert_allclose(y, dense_ref(gap_ref(relu(conv_same_ref(x, conv))), dense), **TOL64)


def test_cnn_mup_roles():
    mults = nn.cnn([3, 5], 2, filter_shape=(3,), parameterization="mup").lr_multipliers(spec(1, 6, 2), "sgd")
    # Conv(3): input (fan_out 3); Conv(5): hidden (1); Dense(2): output (1/fan_in = 1/5)
    chex.assert_trees_all_close(mults, ({"W": 3.0, "b": 3.0}, (), {"W": 1.0, "b": 5.0}, (), (), {"W": 1 / 5, "b": 2.0}),
                                **TOL_MULT)


# -- resnet --------------------------------------------------------------------------------------


RESNET_CASES = {
    # name: (filter_shape, input shape, num_blocks, layer_norm)
    "1d-2blocks": ((3,), (2, 5, 2), 2, False),
    "2d-layernorm": ((3, 2), (2, 4, 3, 2), 1, True),
}


def _resnet(case, seed):
    filter_shape, in_shape, num_blocks, layer_norm = RESNET_CASES[case]
    model = nn.resnet(3, num_blocks, 2, filter_shape=filter_shape, layer_norm=layer_norm)
    params, _ = numpy_params(model, spec(1, *in_shape[1:]), seed=seed)
    return model, params, normal(seed + 1, *in_shape)


@F64
@pytest.mark.parametrize("case", RESNET_CASES)
def test_resnet_matches_numpy_forward(case):
    _, in_shape, num_blocks, layer_norm = RESNET_CASES[case]
    model, params, x = _resnet(case, seed=6)
    dicts = weight_dicts(params)
    assert [d["W"].shape[-1] for d in dicts] == [3] * (1 + 2 * num_blocks) + [2]
    y = apply(model, params, x)
    assert y.shape == (in_shape[0], 2)
    np.testing.assert_allclose(y, resnet_ref(x, dicts, num_blocks, layer_norm), **TOL64)


@F64
def test_resnet_block_is_the_identity_when_its_branch_is_zero():
    """Zeroing the block's second conv (W and b) leaves exactly stem → relu → GAP → dense."""
    model, params, x = _resnet("2d-layernorm", seed=8)
    stem, _, conv2, readout = weight_dicts(params)
    without_block = dense_ref(gap_ref(relu(conv_same_ref(x, stem))), readout)

    zeroed = jax.tree.map(lambda a: a, params)  # a copy: same structure, new containers
    target = weight_dicts(zeroed)[2]
    target["W"], target["b"] = jnp.zeros_like(conv2["W"]), jnp.zeros_like(conv2["b"])
    assert np.any(np.asarray(weight_dicts(params)[2]["W"]) != 0)  # the original is untouched

    np.testing.assert_allclose(apply(model, zeroed, x), without_block, **TOL64)
    assert np.max(np.abs(apply(model, params, x) - without_block)) > 1e-3  # the branch does act otherwise


def test_resnet_mup_roles():
    """Stem conv input, block convs hidden, readout output."""
    mults = nn.resnet(4, 1, 2, filter_shape=(3,), parameterization="mup").lr_multipliers(spec(1, 6, 2), "sgd")
    hidden = {"W": 1.0, "b": 4.0}
    block = ((), (((), hidden, (), hidden), ()), ())  # fanout, (branch, identity), sum
    chex.assert_trees_all_close(mults, ({"W": 4.0, "b": 4.0}, block, (), (), {"W": 1 / 4, "b": 2.0}), **TOL_MULT)


# -- embedding_mlp -------------------------------------------------------------------------------


@F64
def test_embedding_mlp_matches_numpy_forward():
    """``[W_emb[a], W_emb[b]]`` (flattened), then the mlp."""
    vocab, embed_dim = 7, 3
    model = nn.embedding_mlp(vocab, embed_dim, [5], 4, activation="tanh")
    params, _ = numpy_params(model, int_spec(1, 2), seed=10)
    emb, *dicts = weight_dicts(params)
    W_emb = np.asarray(emb["W"])
    assert W_emb.shape == (vocab, embed_dim) and W_emb.dtype == np.float64
    assert [d["W"].shape for d in dicts] == [(2 * embed_dim, 5), (5, 4)]
    tokens = np.random.default_rng(11).integers(0, vocab, (6, 2)).astype(np.int32)
    features = np.concatenate([W_emb[tokens[:, 0]], W_emb[tokens[:, 1]]], axis=1)
    y = apply(model, params, tokens)
    assert y.shape == (6, 4)
    np.testing.assert_allclose(y, mlp_ref(features, dicts, np.tanh), **TOL64)


def test_embedding_mlp_mup_roles():
    """The Embedding is the input layer, so the Dense layers after it are hidden, then output."""
    mults = nn.embedding_mlp(7, 4, [8], 5, parameterization="mup").lr_multipliers(int_spec(1, 2), "sgd")
    # Embedding: input (features 4); Dense(8) on the 2·4 features: hidden; Dense(5): output (1/8)
    chex.assert_trees_all_close(mults, ({"W": 4.0}, (), ({"W": 1.0, "b": 8.0}, (), {"W": 1 / 8, "b": 5.0})), **TOL_MULT)
    # with no hidden Dense, Embedding (input) → Dense (output) is a valid muP network
    mults = nn.embedding_mlp(7, 4, [], 5, parameterization="mup").lr_multipliers(int_spec(1, 2), "sgd")
    chex.assert_trees_all_close(mults, ({"W": 4.0}, (), ({"W": 1 / 8, "b": 5.0},)), **TOL_MULT)


# -- transformer ---------------------------------------------------------------------------------


def _ln_ref(x, p, eps=1e-6):
    return layer_norm_ref(x, eps) * p["scale"] + p["bias"]


def _attention_ref(a, p, causal):
    q, k, v = (np.einsum("ntd,dhk->nthk", a, p[n]["kernel"]) + p[n]["bias"] for n in ("query", "key", "value"))
    logits = np.einsum("nqhk,nshk->nhqs", q, k) / np.sqrt(q.shape[-1])
    if causal:  # query position q sees key positions s <= q
        T = a.shape[1]
        logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("nhqs,nshk,hkd->nqd", w, v, p["out"]["kernel"]) + p["out"]["bias"]


def transformer_ref(tokens, params, num_layers, layer_norm, causal=True):
    """Token + position embeddings; per block ``h += attn(LN?(h))``, ``h += W2 relu(W1 LN?(h))``;
    LN?; readout of the last position."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = p["Embed_0"]["embedding"][tokens] + p["position"]
    for i in range(num_layers):
        b = p[f"Block_{i}"]
        a = _ln_ref(h, b["LayerNorm_0"]) if layer_norm else h
        h = h + _attention_ref(a, b["MultiHeadDotProductAttention_0"], causal)
        m = _ln_ref(h, b["LayerNorm_1"]) if layer_norm else h
        # flax names submodules in construction order: the outer Dense(d_model) is Dense_0
        hidden = relu(m @ b["Dense_1"]["kernel"] + b["Dense_1"]["bias"])
        h = h + hidden @ b["Dense_0"]["kernel"] + b["Dense_0"]["bias"]
    if layer_norm:
        h = _ln_ref(h, p["LayerNorm_0"])
    return h[:, -1] @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


@pytest.mark.parametrize("layer_norm", [False, True])
def test_transformer_matches_numpy_forward(layer_norm):
    """Two layers, so the causal mask matters at the last position: layer 2 reads the layer-1
    states of earlier positions, which must not have seen later tokens."""
    vocab, out, T, d_model, heads = 7, 5, 4, 8, 2
    model = nn.zoo.transformer(vocab, out, T, d_model=d_model, num_heads=heads, d_mlp=16, num_layers=2,
                               layer_norm=layer_norm)
    params, state = numpy_params(model, int_spec(1, T), seed=12)
    assert state == ()
    assert params["Embed_0"]["embedding"].shape == (vocab, d_model) and params["position"].shape == (T, d_model)
    attn = params["Block_1"]["MultiHeadDotProductAttention_0"]
    assert attn["query"]["kernel"].shape == (d_model, heads, d_model // heads)
    tokens = np.random.default_rng(13).integers(0, vocab, (5, T)).astype(np.int32)
    y = apply(model, params, tokens)
    assert y.shape == (5, out)
    expected = transformer_ref(tokens, params, 2, layer_norm)
    np.testing.assert_allclose(y, expected, **TOL32)
    assert np.max(np.abs(transformer_ref(tokens, params, 2, layer_norm, causal=False) - expected)) > 1e-2


def test_transformer_attention_reaches_first_token_and_positions_matter():
    """seq_len 3, read at position 2: changing token 0 changes the logits (attention reaches it);
    swapping tokens 0 and 1 changes them too, through the position embeddings alone: with the
    positions zeroed, the last query attends to a *set* of keys and the swap is invisible."""
    model = nn.zoo.transformer(5, 4, 3, d_model=8, num_heads=2, d_mlp=16)
    params, _ = numpy_params(model, int_spec(1, 3), seed=14)
    tokens = np.array([[1, 2, 3], [4, 2, 3], [2, 1, 3]], np.int32)  # base, token 0 changed, 0 <-> 1 swapped
    y = apply(model, params, tokens)
    y_no_pos = apply(model, {**params, "position": jnp.zeros_like(params["position"])}, tokens)
    assert np.max(np.abs(y[1] - y[0])) > 1e-2
    assert np.max(np.abs(y[2] - y[0])) > 1e-2
    assert np.max(np.abs(y_no_pos[1] - y_no_pos[0])) > 1e-2
    np.testing.assert_allclose(y_no_pos[2], y_no_pos[0], rtol=1e-5, atol=1e-6)


def test_transformer_rejects_a_wrong_sequence_length():
    model = nn.zoo.transformer(5, 4, 3, d_model=8, num_heads=2, d_mlp=16)
    with pytest.raises(nn.LayerError, match=r"expected sequences of length 3"):
        model.init(jax.random.key(0), int_spec(1, 4))
    params, _ = numpy_params(model, int_spec(1, 3), seed=0)
    with pytest.raises(nn.LayerError, match=r"expected sequences of length 3, got shape \(2, 2\)"):
        model.apply(params, jnp.zeros((2, 2), jnp.int32))


def test_transformer_d_model_must_split_into_heads():
    with pytest.raises(nn.LayerError, match=r"d_model \(6\) must be divisible by num_heads \(4\)"):
        nn.zoo.transformer(5, 4, 3, d_model=6, num_heads=4)


# -- bad arguments -------------------------------------------------------------------------------


_TRANSFORMER_ARGS = dict(vocab_size=5, out_dim=4, seq_len=3, d_model=8, num_heads=2)

BAD_ARGS = [
    ("mlp-width", lambda: nn.mlp([4, 0], 3), r"mlp: widths\[1\] must be a positive int, got 0"),
    ("mlp-width-float", lambda: nn.mlp([2.5], 3), r"mlp: widths\[0\] must be a positive int, got 2.5"),
    ("mlp-width-bool", lambda: nn.mlp([True], 3), r"mlp: widths\[0\] must be a positive int, got True"),
    ("mlp-out", lambda: nn.mlp([4], 0), r"mlp: out_dim must be a positive int, got 0"),
    ("mlp-activation", lambda: nn.mlp([2], 3, activation="rleu"), r"unknown name 'rleu'"),
    ("mlp-parameterization", lambda: nn.mlp([2], 3, parameterization="muP"), r"unknown parameterization 'muP'"),
    ("cnn-channels", lambda: nn.cnn([2, -1], 3), r"cnn: channels\[1\] must be a positive int, got -1"),
    ("cnn-out", lambda: nn.cnn([2], 0), r"cnn: out_dim must be a positive int, got 0"),
    ("cnn-filter", lambda: nn.cnn([2], 3, filter_shape=(3, 3, 3)), r"filter_shape must be a tuple of 1 or 2 ints"),
    ("resnet-width", lambda: nn.resnet(0, 1, 3), r"resnet: width must be a positive int, got 0"),
    ("resnet-blocks", lambda: nn.resnet(2, -1, 3), r"resnet: num_blocks must be a positive int, got -1"),
    ("resnet-out", lambda: nn.resnet(2, 1, 0), r"resnet: out_dim must be a positive int, got 0"),
    ("emb-vocab", lambda: nn.embedding_mlp(0, 2, [3], 3), r"vocab_size must be a positive int, got 0"),
    ("emb-dim", lambda: nn.embedding_mlp(5, 0, [3], 3), r"embedding_mlp: embed_dim must be a positive int, got 0"),
    ("emb-width", lambda: nn.embedding_mlp(5, 2, [0], 3), r"embedding_mlp: widths\[0\] must be a positive int, got 0"),
    ("emb-out", lambda: nn.embedding_mlp(5, 2, [3], 0), r"embedding_mlp: out_dim must be a positive int, got 0"),
] + [
    (f"transformer-{arg}", functools.partial(nn.zoo.transformer, **{**_TRANSFORMER_ARGS, arg: 0}),
     rf"transformer: {arg} must be a positive int, got 0")
    for arg in ("vocab_size", "out_dim", "seq_len", "d_model", "num_heads", "d_mlp", "num_layers")
]


@pytest.mark.parametrize("build,message", [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS])
def test_bad_arguments_raise_one_line_layer_error_naming_them(build, message):
    with pytest.raises(nn.LayerError, match=message) as excinfo:
        build()
    assert "\n" not in str(excinfo.value)


# -- every model: vmapped init, gradients, training ------------------------------------------------
# (``jax.jit(model.apply)`` runs in every forward-pass check above, for every builder.)


@functools.cache
def _digits_0_1(shape):
    """64 training images of the digits 0 and 1 (a two-class task every model learns in 30 steps)."""
    ds = data.digits()
    keep = ds.y_train < 2
    x, y = ds.x_train[keep][:64], ds.y_train[keep][:64]
    return x.reshape((64,) + shape), y


@functools.cache
def _modular():
    ds = data.modular_arithmetic(p=7)
    return ds.x_train, ds.y_train


ZOO = {
    # name: (model: 2 outputs for digits 0/1, 7 for arithmetic mod 7; data (x, y); Adam learning rate)
    "mlp": (lambda: nn.mlp([32], 2), lambda: _digits_0_1((64,)), 1e-2),
    "cnn-1d": (lambda: nn.cnn([32], 2, filter_shape=(3,)), lambda: _digits_0_1((8, 8)), 3e-2),
    "cnn-2d": (lambda: nn.cnn([32], 2, filter_shape=(3, 3)), lambda: _digits_0_1((8, 8, 1)), 3e-2),
    "resnet": (lambda: nn.resnet(8, 1, 2, layer_norm=True), lambda: _digits_0_1((8, 8, 1)), 3e-2),
    "embedding_mlp": (lambda: nn.embedding_mlp(7, 32, [32], 7), _modular, 1e-2),
    "transformer": (lambda: nn.zoo.transformer(7, 7, 2, d_model=32, num_heads=2, d_mlp=32), _modular, 1e-2),
}
POPULATION = 4


@functools.cache
def _zoo(name):
    """(model, x, y, lr, params and state of a population of 4 from one vmapped init)."""
    make_model, make_data, lr = ZOO[name]
    model = make_model()
    x, y = (jnp.asarray(a) for a in make_data())
    keys = jax.random.split(jax.random.key(0), POPULATION)
    in_spec = jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)
    params, state = fast_jit(jax.vmap(lambda k: model.init(k, in_spec)))(keys)
    return model, x, y, lr, params, state


def _member(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_vmapped_init_gives_distinct_members(name):
    *_, params, state = _zoo(name)
    assert jax.tree.leaves(state) == []
    random_leaves = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        where, leaf = jax.tree_util.keystr(path), np.asarray(leaf)
        assert leaf.shape[0] == POPULATION
        is_weight = any(f"'{w}'" in where for w in ("W", "kernel", "embedding", "position"))
        if np.ptp(leaf[0]) == 0:  # a constant init: zero biases, unit LayerNorm scales
            assert not is_weight, f"{where} is constant at init"
            continue
        random_leaves += 1
        for i, j in itertools.combinations(range(POPULATION), 2):
            assert not np.any(leaf[i] == leaf[j]), f"{where}: members {i} and {j} share entries"
    assert random_leaves >= 2


@pytest.mark.slow
def test_transformer_init_follows_its_docstring():
    """Embeddings N(0, 1/d_model), LeCun-normal kernels (std 1/√fan_in), zero biases."""
    *_, params, _ = _zoo("transformer")
    d_model = params["position"].shape[-1]
    emb = np.concatenate([np.ravel(params["Embed_0"]["embedding"]), np.ravel(params["position"])])
    np.testing.assert_allclose(emb.std(), d_model**-0.5, rtol=0.08)
    mlp_in = np.asarray(params["Block_0"]["Dense_1"]["kernel"])  # (population, d_model, d_mlp)
    np.testing.assert_allclose(mlp_in.std(), d_model**-0.5, rtol=0.08)
    biases = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if "'bias'" in jax.tree_util.keystr(path)]
    assert len(biases) == 7 and all(np.all(np.asarray(b) == 0) for b in biases)


def _backprop_with_gradient_checks(objective, params, key):
    """``train.backprop`` (``jax.value_and_grad``) that also reports whether every gradient entry is
    finite and the gradient's norm, as step metrics."""
    (loss, (model_state, metrics)), grads = train.backprop(objective, params, key)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return (loss, (model_state, {**metrics, "grads_finite": finite, "grad_norm": optax.tree.norm(grads)})), grads


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_gradients_are_finite_and_training_reduces_the_loss(name):
    """30 full-batch Adam steps of ``train.train`` cut the training loss by more than 30%."""
    model, x, y, lr, population, state = _zoo(name)
    params = _member(population, 0)
    opt = optax.adam(lr)
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt,
                           grad_estimator=_backprop_with_gradient_checks)
    start = train.TrainState(params, opt.init(params), _member(state, 0), jnp.zeros((), jnp.int32), jax.random.key(1))
    _, metrics = jax.jit(lambda s, x, y: train.train(s, step, lambda _k, _s: (x, y), 30))(start, x, y)
    metrics = jax.tree.map(np.asarray, metrics["train"])
    assert metrics["loss"].shape == (30,) and np.all(np.isfinite(metrics["loss"]))
    assert np.all(metrics["grads_finite"]) and np.all(metrics["grad_norm"] > 0)
    assert metrics["loss"][-1] < 0.7 * metrics["loss"][0], metrics["loss"]
