"""Structured derivatives (jaxlearn.kernels.structured): which leaves ``analyse`` recognises, and
the kernel computed from that analysis.

Ground truth: the Jacobian contraction (``kernels.empirical(..., method="jacobian")``: every leaf
differentiated by ``jax.jacrev`` and contracted, nothing recognised) in float64, to 1e-10
relative. Each model isolates one rule of the analysis — a weight on either side of a product,
scaled before or after it by a traced constant (the population case), broadcast scales, a bias
with size-1 axes, a weight's output chain sharing its bias's probe or not — or one case that must
fall back to the Jacobian method for that leaf: a weight used twice or also elsewhere, a product
that involves the weight on both sides, a product with batch dimensions or feature groups, a bias
read twice, a weight inside ``scan``. The classification is asserted as well: it decides whether
``method="auto"`` picks structured derivatives (``is_supported``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import kernels
from jaxlearn.kernels import structured

F64 = pytest.mark.float64


def _conv(x, w, groups=1):
    return jax.lax.conv_general_dilated(x, w, (1,), "VALID", dimension_numbers=("NWC", "WIO", "NWC"),
                                        feature_group_count=groups)


def _scanned(p, x):
    h, _ = jax.lax.scan(lambda h, _: (jnp.tanh(h @ p["W"]), None), x, None, length=2)
    return h @ p["V"]


# name: (apply(params, x, c) with c a traced scalar, leaf shapes, example shape, expected role of
# each leaf, groups of leaves probed at one equation). Roles: "weight"/"bias" structured,
# "jacobian" differentiated by the Jacobian method.
CASES = {
    "weight-left-of-product": (
        lambda p, x, c: (p["W2"].T @ jnp.tanh(p["W1"].T @ x.T)).T,
        dict(W1=(3, 5), W2=(5, 2)), (3,), dict(W1="weight", W2="weight"), ()),
    "traced-scales-and-division": (
        lambda p, x, c: jnp.tanh((x @ (c * p["W1"])) / 3.0 + c * p["b1"]) @ (p["W2"] / c) + p["b2"],
        dict(W1=(3, 5), W2=(5, 2), b1=(5,), b2=(2,)), (3,),
        dict(W1="weight", W2="weight", b1="bias", b2="bias"), (("W2", "b2"),)),
    "output-chain-into-bias-on-the-left": (
        lambda p, x, c: jnp.tanh(p["b1"] + c * (2.0 * (x @ p["W1"]))) @ p["W2"],
        dict(W1=(3, 5), W2=(5, 2), b1=(5,)), (3,), dict(W1="weight", W2="weight", b1="bias"), (("W1", "b1"),)),
    "broadcast-traced-scale": (
        lambda p, x, c: jnp.tanh(x @ (p["W1"] * jnp.broadcast_to(c, (3, 5)))) @ p["W2"],
        dict(W1=(3, 5), W2=(5, 2)), (3,), dict(W1="weight", W2="weight"), ()),
    "product-read-twice": (
        lambda p, x, c: (lambda y: jnp.tanh(y + p["b1"]) + jnp.sin(y))(x @ p["W1"]),
        dict(W1=(3, 5), b1=(5,)), (3,), dict(W1="weight", b1="bias"), ()),
    "bias-with-size-1-axis": (
        lambda p, x, c: jnp.tanh(x @ p["W1"] + p["b"]),
        dict(W1=(3, 5), b=(3, 1)), (3, 3), dict(W1="weight", b="bias"), (("W1", "b"),)),
    "bias-read-twice": (
        lambda p, x, c: jnp.tanh(x @ p["W1"] + p["b1"]) + jnp.sin(p["b1"]),
        dict(W1=(3, 5), b1=(5,)), (3,), dict(W1="weight", b1="jacobian"), ()),
    "bias-broadcast-then-squared": (
        lambda p, x, c: jnp.tanh(x @ p["W1"]) * jnp.expand_dims(p["b1"], 0) ** 2,
        dict(W1=(3, 5), b1=(5,)), (3,), dict(W1="weight", b1="jacobian"), ()),
    "bias-inside-the-other-summand": (
        lambda p, x, c: jnp.tanh(x @ p["W1"] * p["b1"] + p["b1"]),
        dict(W1=(3, 5), b1=(5,)), (3,), dict(W1="weight", b1="jacobian"), ()),
    "tied-weights": (
        lambda p, x, c: jnp.tanh(x @ p["W"]) @ p["W"].T,
        dict(W=(3, 5)), (3,), dict(W="jacobian"), ()),
    "weight-also-used-elsewhere": (
        lambda p, x, c: jnp.tanh(x @ p["W1"]) @ p["W2"] + jnp.sum(p["W1"] ** 2),
        dict(W1=(3, 5), W2=(5, 2)), (3,), dict(W1="jacobian", W2="weight"), ()),
    "weight-on-both-sides": (
        lambda p, x, c: jnp.tanh((x @ p["W"]) @ p["W"]) @ p["V"],
        dict(W=(3, 3), V=(3, 2)), (3,), dict(W="jacobian", V="weight"), ()),
    "product-with-batch-dimensions": (
        lambda p, x, c: jnp.einsum("nbi,bij->nbj", x.reshape(-1, 2, 3), p["W"]).reshape(x.shape[0], -1),
        dict(W=(2, 3, 4)), (6,), dict(W="jacobian"), ()),
    "grouped-then-plain-convolution": (
        lambda p, x, c: _conv(jnp.tanh(_conv(x, p["G"], groups=2)), p["K"]).reshape(x.shape[0], -1),
        dict(G=(2, 2, 4), K=(2, 4, 3)), (5, 4), dict(G="jacobian", K="weight"), ()),
    "weight-inside-scan": (
        lambda p, x, c: _scanned(p, x),
        dict(W=(3, 3), V=(3, 2)), (3,), dict(W="jacobian", V="weight"), ()),
}


def _setup(name):
    apply, shapes, example, _, _ = CASES[name]
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, sorted(shapes.items()))}
    x1 = jax.random.normal(jax.random.key(1), (4,) + example)
    x2 = jax.random.normal(jax.random.key(2), (5,) + example)
    return apply, params, x1, x2


def _roles(a, names):
    roles = {name: "jacobian" for name in names}
    roles.update({names[t.leaf]: t.kind for t in a.targets})
    return roles


def _probed_together(a, names):
    """Groups of two or more leaves whose targets share one probe."""
    by_tap = {}
    for t in a.targets:
        by_tap.setdefault(t.tap, []).append(names[t.leaf])
    return {tuple(sorted(g)) for g in by_tap.values() if len(g) > 1}


@F64
@pytest.mark.parametrize("name", list(CASES))
def test_analysis_and_kernel_match_the_jacobian_method(name):
    apply, params, x1, x2 = _setup(name)
    _, _, _, roles, together = CASES[name]
    names = [path[0].key for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    found = []

    @jax.jit
    def both(p, c):  # c traced, as for a population over a parameterization constant
        f = lambda q, x: apply(q, x, c)  # noqa: E731
        found.append((structured.analyse(f, p, x1[0]), structured.is_supported(f, p, x1)))
        return {(m, t): kernels.empirical(f, p, x1, x2, trace_axes=t, method=m)
                for m in ("structured", "jacobian") for t in ((-1,), ())}

    got = both(params, jnp.asarray(1.7, x1.dtype))  # strongly typed: a weak one is converted after a broadcast
    analysis, supported = found[0]
    assert _roles(analysis, names) == roles
    assert analysis.fallback == tuple(i for i, n in enumerate(names) if roles[n] == "jacobian")
    assert _probed_together(analysis, names) == set(together)
    sizes = {n: a.size for n, a in params.items()}
    structured_size = sum(sizes[n] for n in names if roles[n] != "jacobian")
    assert (analysis.structured_size, analysis.total_size) == (structured_size, sum(sizes.values()))
    assert supported == (2 * structured_size >= sum(sizes.values()))
    for t in ((-1,), ()):
        want = np.asarray(got["jacobian", t])
        np.testing.assert_allclose(got["structured", t], want, rtol=0, atol=1e-10 * np.abs(want).max(),
                                   err_msg=f"{name} trace_axes={t}")


def _nchw_conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))


def _head_model(name):
    """``(apply(params, x), leaf shapes, example shape, the leaves expected to get a pooled head)``."""
    relu = jax.nn.relu
    if name == "nhwc-relu-mean-dense":
        def apply(p, x):
            h = relu(jax.lax.conv_general_dilated(x, p["A"], (1, 1), "SAME",
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC")))
            y = jax.lax.conv_general_dilated(h, p["B"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return relu(0.7 * y + p["b"]).mean(axis=(1, 2)) @ p["D"]
        return apply, dict(A=(3, 3, 2, 4), B=(3, 3, 4, 3), b=(3,), D=(3, 2)), (5, 5, 2), {"B"}
    if name == "nchw-gelu-strided-sum":  # gelu reads its input twice: an elementwise graph, not a chain
        def apply(p, x):
            y = _nchw_conv(jnp.tanh(_nchw_conv(x, p["A"])), p["B"], stride=2)
            return jnp.tanh(jax.nn.gelu(y, approximate=False).sum(axis=(2, 3)) @ p["D"])
        return apply, dict(A=(4, 2, 3, 3), B=(3, 4, 2, 2), D=(3, 2)), (2, 6, 6), {"B"}
    if name == "pooled-and-read-elsewhere":  # y also reaches the output past the sum
        def apply(p, x):
            z = relu(_nchw_conv(x, p["A"]))
            return z.mean(axis=(2, 3)) @ p["D"] + z[:, :, 0, 0] @ p["E"]
        return apply, dict(A=(3, 2, 3, 3), D=(3, 2), E=(3, 2)), (2, 5, 5), set()
    if name == "max-over-positions":
        def apply(p, x):
            return relu(_nchw_conv(x, p["A"])).max(axis=(2, 3)) @ p["D"]
        return apply, dict(A=(3, 2, 3, 3), D=(3, 2)), (2, 5, 5), set()
    if name == "normalised-across-channels":  # an operand depends on y through another sum
        def apply(p, x):
            z = relu(_nchw_conv(x, p["A"]))
            return (z / (1 + z.sum(axis=1, keepdims=True))).mean(axis=(2, 3)) @ p["D"]
        return apply, dict(A=(3, 2, 3, 3), D=(3, 2)), (2, 5, 5), set()
    raise AssertionError(name)


def _head_case(apply, shapes, example):
    """``(analysis, leaf names, check)`` for a model of the head tests: ``check()`` compares the
    structured kernel with the Jacobian method's in every output convention (two inputs and one;
    outputs traced, kept, diagonal; the batch diagonal), float64, to 1e-10 relative."""
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = {k: jax.random.normal(key, s) / 2 for key, (k, s) in zip(keys, sorted(shapes.items()))}
    x1 = jax.random.normal(jax.random.key(1), (4,) + example)
    x2 = jax.random.normal(jax.random.key(2), (3,) + example)
    cases = [(b, dict(trace_axes=t)) for b in (x2, None) for t in ((-1,), ())]
    cases += [(None, dict(trace_axes=(), diagonal_axes=(-1,))), (None, dict(trace_axes=(-1,), diagonal_axes=(0,))),
              (None, dict(trace_axes=(), diagonal_axes=(0,)))]

    @jax.jit
    def both(p):
        return [[kernels.empirical(apply, p, x1, b, method=m, **kw) for m in ("structured", "jacobian")]
                for b, kw in cases]

    def check():
        for (got, want), (b, kw) in zip(both(params), cases):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max(),
                                       err_msg=f"{kw} {b is None}")

    return structured.analyse(apply, params, x1[0]), sorted(shapes), check


@F64
@pytest.mark.parametrize("name", ["nhwc-relu-mean-dense", "nchw-gelu-strided-sum", "pooled-and-read-elsewhere",
                                  "max-over-positions", "normalised-across-channels"])
def test_pooled_heads_match_the_jacobian_method(name):
    """A convolution whose output reaches the outputs only through elementwise operations and a
    sum over its positions (a global-average-pooling head) gets its share from one GEMM per example
    (``_pooled_head_term``) instead of one per output; the models where that structure does not
    hold must not be recognised. Every output convention against the Jacobian method."""
    apply, shapes, example, heads = _head_model(name)
    analysis, names, check = _head_case(apply, shapes, example)
    assert {names[t.leaf] for t in analysis.targets if t.head} == heads
    check()

# name: (apply(params, x), leaf shapes, example shape, the leaves whose tap gets a linear head).
LINEAR_HEADS = {
    "mlp-relu-then-dense": (  # the last hidden layer of an MLP; the output layer's tap is the output
        lambda p, x: jax.nn.relu(0.7 * (x @ p["W1"]) + p["b1"]) @ p["W2"] + p["b2"],
        dict(W1=(3, 5), b1=(5,), W2=(5, 2), b2=(2,)), (3,), {"W1", "b1"}),
    "tail-reads-z-twice-offset-by-the-input": (  # z sliced and multiplied; an offset may depend on x
        lambda p, x: (lambda z: (z @ p["W2"]) / 3.0 + 0.5 * z[:, :2] + jnp.sum(x ** 2))(
            jnp.tanh(x @ p["W1"] + p["b1"])),
        dict(W1=(3, 5), b1=(5,), W2=(5, 2)), (3,), {"W1", "b1", "W2"}),
    "convolution-in-the-tail": (  # a filter is a product with an input-independent operand too
        lambda p, x: _conv(jnp.tanh(x @ p["W1"] + p["b1"])[:, :, None], p["K"]).reshape(x.shape[0], -1),
        dict(W1=(3, 6), b1=(6,), K=(2, 1, 2)), (3,), {"W1", "b1"}),
    "two-values-of-the-region-leave": (  # z and 2z are both read by products: not one m per entry
        lambda p, x: (lambda z: z @ p["W2"] + (z * 2.0) @ p["W3"])(jnp.tanh(x @ p["W1"] + p["b1"])),
        dict(W1=(3, 5), b1=(5,), W2=(5, 2), W3=(5, 2)), (3,), {"W2", "W3"}),
    "coefficient-depending-on-the-input": (  # an input-dependent scale is elementwise before the output only
        lambda p, x: (jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"]) * jnp.sum(x),
        dict(W1=(3, 5), b1=(5,), W2=(5, 2)), (3,), {"W2"}),
    "two-values-leave": (  # y reaches the output unactivated as well
        lambda p, x: (lambda y: jax.nn.relu(y) @ p["W2"] + y @ p["W3"])(x @ p["W1"] + p["b1"]),
        dict(W1=(3, 5), b1=(5,), W2=(5, 2), W3=(5, 2)), (3,), {"W2", "W3"}),
    "nonlinear-tail": (
        lambda p, x: jnp.tanh(jax.nn.relu(x @ p["W1"] + p["b1"]) @ p["W2"]),
        dict(W1=(3, 5), b1=(5,), W2=(5, 2)), (3,), {"W2"}),
    "dense-at-several-positions": (  # weights shared across positions: no Gram of one tap
        lambda p, x: jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"],
        dict(W1=(4, 5), b1=(5,), W2=(5, 2)), (3, 4), set()),
}


@F64
@pytest.mark.parametrize("name", list(LINEAR_HEADS))
def test_linear_heads_match_the_jacobian_method(name):
    """A tap whose output reaches the outputs through elementwise operations and then a map linear
    in their result with input-independent coefficients (the last hidden layer of an MLP) has
    cotangents ``m ⊙ V_o`` with ``V`` the same for every example: its Gram matrix is one product
    over the layer's width (``_linear_head_gram``) instead of one over outputs × width. Which taps
    are recognised, and every output convention against the Jacobian method."""
    apply, shapes, example, heads = LINEAR_HEADS[name]
    analysis, names, check = _head_case(apply, shapes, example)
    assert analysis.fallback == ()
    tapped = {tap for tap, _ in analysis.linear_heads}
    assert {names[t.leaf] for t in analysis.targets if t.tap in tapped} == heads
    assert all(head[-1] in analysis.taps for _, head in analysis.linear_heads)
    check()
