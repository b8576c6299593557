"""Empirical NTK/NNGP (jaxlearn.kernels.empirical) against the explicit ``J Jᵀ`` of ``jax.jacobian``.

Ground truth: the full Jacobian of the outputs with respect to the flattened parameters, from
``jax.jacobian`` (reverse mode, through any custom rule), contracted in NumPy; trace/diagonal
conventions applied to that dense ``(N1, O, N2, O)`` array by hand. Every method — Jacobian
contraction, NTK-vector products and structured derivatives (``auto``'s choice) — must match it to 1e-10
relative in float64, on an MLP, a CNN with global average pooling, a sequence model (a Dense
applied at every position), a flax ResNet block with BatchNorm (statistics frozen), and a model
with a ``custom_vjp`` rule (where NTK-vector products cannot run and ``auto`` must not pick them).
"""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import kernels, nn
from jaxlearn.kernels import structured

F64 = pytest.mark.float64


@jax.custom_vjp
def _doubled_backward(x):
    """Identity forward; backward scaled by 2 (a stand-in for a learning rule's surrogate)."""
    return x


_doubled_backward.defvjp(lambda x: (x, None), lambda _, g: (2 * g,))


class _ResBlock(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool = False):
        y = linen.Dense(6)(x)
        y = linen.BatchNorm(use_running_average=not train)(y)
        y = linen.relu(y)
        return x + linen.Dense(x.shape[-1])(y)


def _models():
    ntk = dict(parameterization="ntk", W_std=1.3, b_std=0.2)
    block = nn.from_linen(_ResBlock())
    return {
        "mlp": (nn.serial(nn.Dense(7, **ntk), nn.Relu(), nn.Dense(5), nn.Erf(), nn.Dense(3)), (4, 3)),
        "cnn": (nn.serial(nn.Conv(3, (3, 3), padding="SAME", **ntk), nn.Relu(), nn.Conv(2, (2, 2), strides=(2, 1)),
                          nn.Gelu(), nn.GlobalAvgPool(), nn.Dense(3)), (2, 4, 3, 2)),
        "sequence": (nn.serial(nn.Dense(4), nn.Tanh(), nn.Dense(2)), (3, 5, 2)),  # outputs (N, W, 2)
        "flax-resblock-bn": (block, (4, 3)),
        "custom-vjp": (nn.serial(nn.Dense(5), nn.Elementwise(_doubled_backward, "doubled"), nn.Relu(), nn.Dense(2)),
                       (4, 3)),
    }


def _setup(name):
    model, shape = _models()[name]
    x1 = jax.random.normal(jax.random.key(1), shape)
    x2 = jax.random.normal(jax.random.key(2), (shape[0] + 1,) + shape[1:])
    params, state = model.init(jax.random.key(3), x1)
    # flax creates float32 parameters even under x64: cast, so float64 checks are float64 throughout
    params, state = jax.tree.map(lambda a: a.astype(x1.dtype), (params, state))
    if state:  # move the frozen statistics away from their init so they matter
        state = jax.tree.map(lambda s: s + 0.3 * jax.random.normal(jax.random.key(4), s.shape, s.dtype), state)
    return (lambda p, x: model.apply(p, x, state)), params, x1, x2


def _dense_ntk(apply, params, x1, x2):
    """``(N1, *out, N2, *out)``: every pair of output entries, from the full Jacobians."""
    def jac(x):
        j = jax.jacobian(lambda p: apply(p, x))(params)
        out = apply(params, x).shape
        return np.concatenate([np.asarray(a).reshape(out + (-1,)) for a in jax.tree.leaves(j)], -1), out

    (j1, o1), (j2, _) = jac(x1), jac(x2)
    return np.tensordot(j1, j2, axes=([j1.ndim - 1], [j2.ndim - 1])), o1


# (trace_axes, diagonal_axes, reduction of the dense (N1, *out, N2, *out) array, for 1-D outputs)
AXES = {
    "trace": ((-1,), (), lambda d: np.einsum("aibi->ab", d) / d.shape[1]),
    "full": ((), (), lambda d: np.einsum("aibj->abij", d)),
    "diagonal": ((), (-1,), lambda d: np.einsum("aibi->abi", d)),
}
# Every trace/diagonal variant for structured derivatives (their own code per variant); the other
# methods share the final reductions, so two variants each; auto is one of them (asserted below).
METHODS = {"structured": None, "jacobian": ("full", "batch-diagonal", "diagonal-positions"),
           "ntvp": ("trace", "full", "diagonal-positions")}


def _methods(name):
    return [m for m in METHODS if not (name == "custom-vjp" and m == "ntvp")]


def _variants(name, method):
    """Structured derivatives: every variant on the MLP and the CNN, three elsewhere (the variants'
    code is shared by all models; the models exercise the analysis)."""
    if METHODS[method] is None and name not in ("mlp", "cnn"):
        return ("trace", "full", "diagonal-positions")
    return METHODS[method]


@F64
@pytest.mark.parametrize("name", list(_models()))
def test_methods_match_the_explicit_jacobian(name):
    apply, params, x1, x2 = _setup(name)
    dense, out = _dense_ntk(apply, params, x1, x2)
    dense11, _ = _dense_ntk(apply, params, x1, x1)
    scale = np.abs(dense).max()
    if len(out) == 3:  # sequence outputs (N, W, C): trace C, keep the position pairs
        refs = {"trace": ((-1,), (), np.einsum("awibvi->abwv", dense) / out[-1]),
                "diagonal-positions": ((-1,), (1,), np.einsum("awibwi->abw", dense) / out[-1])}
    else:
        refs = {k: (t, d, fn(dense)) for k, (t, d, fn) in AXES.items()}
        refs["batch-diagonal"] = ((-1,), (0,), np.einsum("aiai->a", dense11) / out[-1])
    assert kernels.choose_method(apply, params, x1, x2) == "structured"
    for method in _methods(name):
        variants = _variants(name, method)
        chosen = {k: v for k, v in refs.items() if variants is None or k in variants}

        @jax.jit
        def all_axes(p, a, b):
            return {k: kernels.empirical(apply, p, a, None if 0 in d else b, trace_axes=t, diagonal_axes=d,
                                         method=method) for k, (t, d, _) in chosen.items()}

        got = all_axes(params, x1, x2)
        for k, (_, _, want) in chosen.items():
            assert got[k].shape == want.shape, (method, k, got[k].shape, want.shape)
            np.testing.assert_allclose(got[k], want, rtol=0, atol=1e-10 * scale, err_msg=f"{name} {method} {k}")



def test_a_grid_of_blocks_holds_the_result_once():
    """Square blocks (4096² pairs in blocks of 256²) are laid out row block by row block, so XLA's
    temporary memory is a small fraction of the output (compiled only, not run); transposing the
    whole grid into place, as before, held the result twice."""
    model = nn.serial(nn.Dense(16), nn.Relu(), nn.Dense(1))
    x = jax.ShapeDtypeStruct((4096, 8), jnp.float32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8)))[0])
    program = jax.jit(lambda p, a, b: kernels.empirical(model.apply, p, a, b, batch_size=256))
    memory = program.lower(params, x, x).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 0.25 * memory.output_size_in_bytes, (memory.temp_size_in_bytes,
                                                                            memory.output_size_in_bytes)


@F64
def test_nngp_and_blocks():
    apply, params, x1, x2 = _setup("mlp")
    y1, y2 = np.asarray(apply(params, x1)), np.asarray(apply(params, x2))
    nngp = jax.jit(lambda p: kernels.empirical(apply, p, x1, x2, kind="nngp"))(params)
    np.testing.assert_allclose(nngp, y1 @ y2.T / y1.shape[1], rtol=1e-13)
    whole = kernels.empirical(apply, params, x1, x2, method="structured")
    for size in (2,):
        blocked = jax.jit(lambda p, s=size: kernels.empirical(apply, p, x1, x2, method="structured", batch_size=s))
        np.testing.assert_allclose(blocked(params), whole, rtol=1e-12, atol=1e-14)
    diag = kernels.empirical(apply, params, x1, diagonal_axes=(0,), batch_size=3)
    np.testing.assert_allclose(diag, np.diagonal(kernels.empirical(apply, params, x1)), rtol=1e-12)


def test_structured_recognises_dense_and_conv_weights_and_biases():
    """Every weight matrix/filter is a structured weight, every bias a structured bias (sharing the
    cotangent probe of its layer's weight); nothing falls back on plain Dense/Conv networks."""
    for name in ("mlp", "cnn"):
        apply, params, x1, _ = _setup(name)
        a = structured.analyse(apply, params, x1[0])
        paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
        kinds = {paths[t.leaf]: t.kind for t in a.targets}
        assert a.fallback == () and len(kinds) == len(paths), name
        assert all(kind == ("weight" if "'W'" in path else "bias") for path, kind in kinds.items()), kinds
        # the last equation of a pooled head (the sums) or of a linear head is probed too
        heads = sum(bool(t.head) for t in a.targets) + len(a.linear_heads)
        assert len(a.taps) == len(paths) // 2 + heads, a.taps  # one probe per layer
        assert kernels.choose_method(apply, params, x1) == "structured"


def test_auto_avoids_forward_mode_through_custom_vjp():
    apply, params, x1, x2 = _setup("custom-vjp")
    assert kernels.choose_method(apply, params, x1, x2) in ("structured", "jacobian")
    k = jax.jit(lambda p: kernels.empirical(apply, p, x1, x2))(params)
    assert k.shape == (x1.shape[0], x2.shape[0]) and np.all(np.isfinite(k))


def test_jit_vmap_grad():
    """vmap over initialisations equals a loop; grad of a kernel statistic w.r.t. params
    matches central differences along a random direction (float32 tolerances)."""
    model = nn.serial(nn.Dense(6), nn.Relu(), nn.Dense(2))
    x = jax.random.normal(jax.random.key(0), (3, 4))
    keys = jax.random.split(jax.random.key(1), 3)
    params = jax.vmap(lambda k: model.init(k, x)[0])(keys)
    f = jax.jit(jax.vmap(lambda p: kernels.empirical(model.apply, p, x, method="structured")))
    batched = f(params)
    one = jax.jit(lambda p: kernels.empirical(model.apply, p, x, method="jacobian"))
    for i in range(3):
        np.testing.assert_allclose(batched[i], one(jax.tree.map(lambda a: a[i], params)), rtol=1e-5, atol=1e-6)
    p0 = jax.tree.map(lambda a: a[0], params)
    stat = jax.jit(lambda p: jnp.sum(kernels.empirical(model.apply, p, x, method="structured") ** 2))
    g = jax.grad(stat)(p0)
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape), p0)
    h = 1e-2
    fd = (stat(jax.tree.map(lambda a, b: a + h * b, p0, d))
          - stat(jax.tree.map(lambda a, b: a - h * b, p0, d))) / (2 * h)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(analytic, fd, rtol=2e-2)


BAD = [
    (dict(x2=np.ones((2, 5))), ValueError, r"^x2: expected shape \(N2,\) \+ \(3,\) like x1, got \(2, 5\)$"),
    (dict(trace_axes=(2,)), ValueError, r"^trace_axes: axis 2 is out of range for outputs of rank 2"),
    (dict(trace_axes=(0,)), ValueError, r"^trace_axes: the batch axis 0 cannot be traced"),
    (dict(trace_axes=(-1,), diagonal_axes=(1,)), ValueError, r"^trace_axes and diagonal_axes share axes \[1\]$"),
    (dict(diagonal_axes=(0,), x2=np.ones((2, 3))), ValueError, r"^diagonal_axes: the batch axis 0 needs x2=None"),
    (dict(kind="cov"), ValueError, r"^kind: expected 'ntk' or 'nngp', got 'cov'$"),
    (dict(method="fast"), ValueError, r"^method: expected one of .*got 'fast'$"),
    (dict(batch_size=0), ValueError, r"^batch_size: expected a positive int or None, got 0$"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD, ids=[m[1:30] for _, _, m in BAD])
def test_bad_input(kwargs, error, match):
    model = nn.serial(nn.Dense(4), nn.Relu(), nn.Dense(2))
    x = np.ones((2, 3), np.float32)
    params, _ = model.init(jax.random.key(0), x)
    kwargs = dict(kwargs)
    x2 = kwargs.pop("x2", None)
    with pytest.raises(error, match=match) as info:
        kernels.empirical(model.apply, params, x, x2, **kwargs)
    assert "\n" not in str(info.value)


def test_feedback_alignment_model_auto_works_and_ntvp_names_the_rule():
    """A model with a feedback-alignment layer (a custom_vjp rule, jaxlearn.rules): ``auto`` does
    not pick NTK-vector products and matches the Jacobian contraction; an explicit
    ``method="ntvp"`` raises one line naming the rule; ``linearize`` likewise."""
    from jaxlearn import rules

    model = nn.serial(rules.FADense(5), nn.Relu(), nn.Dense(2))
    x = jax.random.normal(jax.random.key(0), (3, 4))
    params, state = model.init(jax.random.key(1), x)

    def apply(p, a):
        return model.apply(p, a, state)

    assert kernels.choose_method(apply, params, x) != "ntvp"
    np.testing.assert_allclose(kernels.empirical(apply, params, x), kernels.empirical(apply, params, x,
                                                                                      method="jacobian"),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"^empirical\(method='ntvp'\): needs forward-mode .*feedback_alignment"):
        kernels.empirical(apply, params, x, method="ntvp")
    with pytest.raises(ValueError, match=r"^linearize\(apply_fn\): needs forward-mode .*feedback_alignment"):
        kernels.linearize(apply, params)(params, x)
