"""Losses and metrics against NumPy formulas written out here (float64); batch means against a Python
loop over the per-example losses; declared output-Hessian products against ``jax.hessian`` of the loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import train
from jaxlearn.train.losses import check_per_example_loss, output_hessian_vp

pytestmark = pytest.mark.float64

SHAPES = [(1, 2), (7, 4)]

# Jitted once per shape: far cheaper to compile than op-by-op eager dispatch.
ce = jax.jit(train.softmax_cross_entropy)
ce_grad = jax.jit(jax.grad(train.softmax_cross_entropy))
mse = jax.jit(train.mse)
mse_grad = jax.jit(jax.grad(train.mse))
hinge = jax.jit(train.hinge)
accuracy = jax.jit(train.accuracy)


def _logsumexp(f):
    m = f.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(f - m).sum(axis=-1, keepdims=True)))[..., 0]


def _logits(n, c, scale=3.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c)) * scale


@pytest.mark.parametrize("n, c", SHAPES)
def test_cross_entropy_integer_labels(n, c):
    y = np.random.default_rng(1).integers(0, c, n)
    for scale in (1.0, 300.0):  # 300: logits far outside exp's range
        f = _logits(n, c, scale)
        expected = np.mean(_logsumexp(f) - f[np.arange(n), y])
        got = ce(jnp.asarray(f), jnp.asarray(y, jnp.int32))
        assert np.isfinite(got)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, c", SHAPES)
def test_cross_entropy_probability_targets(n, c):
    f = _logits(n, c)
    p = np.random.default_rng(2).dirichlet(np.ones(c), size=n)
    expected = np.mean(np.sum(p * (_logsumexp(f)[:, None] - f), axis=-1))
    np.testing.assert_allclose(ce(jnp.asarray(f), jnp.asarray(p)), expected, rtol=1e-12)


def test_cross_entropy_one_hot_equals_integer_labels_and_gradient():
    n, c = SHAPES[-1]
    f = _logits(n, c)
    y = np.arange(n) % c
    one_hot = np.eye(c)[y]
    as_int = ce(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(ce(jnp.asarray(f), jnp.asarray(one_hot)), as_int, rtol=1e-13)
    # d/df mean_n CE = (softmax(f) - onehot) / N
    softmax = np.exp(f - _logsumexp(f)[:, None])
    grad = ce_grad(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(grad, (softmax - one_hot) / n, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("shape", [(7,), (7, 4), (2, 3, 4)])
def test_mse_is_half_mean_over_all_entries(shape):
    rng = np.random.default_rng(3)
    f, y = rng.normal(size=shape), rng.normal(size=shape)
    expected = 0.5 * np.sum((f - y) ** 2) / f.size
    np.testing.assert_allclose(mse(jnp.asarray(f), jnp.asarray(y)), expected, rtol=1e-13)
    # each entry's residual is divided by the total number of entries (N·C), not by N
    grad = mse_grad(jnp.asarray(f), jnp.asarray(y))
    np.testing.assert_allclose(grad, (f - y) / f.size, rtol=1e-13)


def test_mse_value_by_hand():
    # 2 examples × 3 outputs, every residual 1: ½·mean = 0.5 (a per-example sum would give 1.5)
    assert float(mse(jnp.zeros((2, 3)), jnp.ones((2, 3)))) == 0.5


def _binary_hinge(f, y):
    return np.mean(np.maximum(0.0, 1.0 - y * f))


@pytest.mark.parametrize("target_dtype", [np.float64, np.int32])
@pytest.mark.parametrize("out_shape", ["flat", "column"])
def test_binary_hinge(out_shape, target_dtype):
    rng = np.random.default_rng(4)
    n = 7
    f = rng.normal(size=n) * 2.0
    f[0], f[1] = 1.0, -1.0  # exactly on the margin
    y = np.where(rng.random(n) < 0.5, -1, 1)
    y[0], y[1] = 1, -1
    outputs = f if out_shape == "flat" else f[:, None]
    got = hinge(jnp.asarray(outputs), jnp.asarray(y.astype(target_dtype)))
    np.testing.assert_allclose(got, _binary_hinge(f, y), rtol=1e-13)


def test_binary_hinge_by_hand():
    f = jnp.array([[2.0], [0.5], [-0.5], [0.0]])
    y = jnp.array([1.0, 1.0, 1.0, -1.0])
    # losses 0, 0.5, 1.5, 1 → mean 0.75 (broadcasting (4,1) against (4,) would give another value)
    np.testing.assert_allclose(hinge(f, y), 0.75, rtol=1e-15)


def _crammer_singer(f, y):
    losses = []
    for fn, yn in zip(f, y):
        others = np.delete(fn, yn)
        losses.append(max(0.0, 1.0 + others.max() - fn[yn]))
    return np.mean(losses)


@pytest.mark.parametrize("n, c", SHAPES)
def test_multiclass_hinge(n, c):
    f = _logits(n, c, scale=0.7, seed=5)
    y = np.random.default_rng(6).integers(0, c, n)
    got = hinge(jnp.asarray(f), jnp.asarray(y, jnp.int32))
    np.testing.assert_allclose(got, _crammer_singer(f, y), rtol=1e-13)


def test_multiclass_hinge_by_hand():
    f = jnp.array([[3.0, 1.0, 0.0], [0.0, 0.5, 0.2], [1.0, 1.0, 1.0]])
    y = jnp.array([0, 1, 2], jnp.int32)
    # max(0, 1+1-3)=0, max(0, 1+0.2-0.5)=0.7, max(0, 1+1-1)=1
    np.testing.assert_allclose(hinge(f, y), (0.0 + 0.7 + 1.0) / 3, rtol=1e-14)


@pytest.mark.parametrize("targets", ["int", "one_hot"])
@pytest.mark.parametrize("n, c", SHAPES)
def test_accuracy(n, c, targets):
    f = _logits(n, c, seed=7)
    y = np.random.default_rng(8).integers(0, c, n)
    y[0] = np.argmax(f[0])  # at least one hit
    t = jnp.asarray(y, jnp.int32) if targets == "int" else jnp.asarray(np.eye(c)[y])
    got = accuracy(jnp.asarray(f), t)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, np.mean(np.argmax(f, -1) == y), rtol=1e-15)


def test_accuracy_by_hand():
    f = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert float(accuracy(f, jnp.array([1, 0, 0, 0], jnp.int32))) == 0.75


@pytest.mark.parametrize("name, fn", [("softmax_cross_entropy", train.softmax_cross_entropy),
                                      ("mse", train.mse), ("hinge", train.hinge)])
def test_loss_by_name(name, fn):
    assert train.loss_by_name(name) is fn


@pytest.mark.parametrize("name, hint", [("hinje", "hinge"), ("msee", "mse"),
                                        ("softmax_crossentropy", "softmax_cross_entropy")])
def test_loss_by_name_did_you_mean(name, hint):
    with pytest.raises(ValueError, match=rf"unknown name '{name}' \(did you mean '{hint}'\?\)"):
        train.loss_by_name(name)


def test_loss_by_name_unknown_lists_choices():
    with pytest.raises(ValueError, match="unknown name 'zzz'") as info:
        train.loss_by_name("zzz")
    assert "did you mean" not in str(info.value)
    for known in ("hinge", "mse", "softmax_cross_entropy"):
        assert known in str(info.value)


# -- one definition: per-example losses and their batch means -------------------------------------

PER_EXAMPLE = {"softmax_cross_entropy": train.per_example_softmax_cross_entropy, "mse": train.per_example_mse,
               "hinge": train.per_example_hinge}


def _case(case, n=5, seed=9):
    """(loss name, outputs, targets) with a leading example axis ``n``."""
    rng = np.random.default_rng(seed)
    c = 4
    if case == "ce-labels":
        return "softmax_cross_entropy", rng.normal(size=(n, c)) * 2, rng.integers(0, c, n).astype(np.int32)
    if case == "ce-probabilities":
        return "softmax_cross_entropy", rng.normal(size=(n, c)) * 2, rng.dirichlet(np.ones(c), size=n)
    if case == "ce-sequence":  # (N, T, C) logits, (N, T) labels: the mean over all N·T positions
        return "softmax_cross_entropy", rng.normal(size=(n, 3, c)), rng.integers(0, c, (n, 3)).astype(np.int32)
    if case == "mse-vector":
        return "mse", rng.normal(size=(n,)), rng.normal(size=(n,))
    if case == "mse-matrix":
        return "mse", rng.normal(size=(n, c)), rng.normal(size=(n, c))
    if case == "mse-tensor":
        return "mse", rng.normal(size=(n, 2, 3)), rng.normal(size=(n, 2, 3))
    if case == "hinge-binary-column":
        return "hinge", rng.normal(size=(n, 1)), np.where(rng.random(n) < 0.5, -1.0, 1.0)
    if case == "hinge-binary-int":
        return "hinge", rng.normal(size=(n,)), np.where(rng.random(n) < 0.5, -1, 1).astype(np.int32)
    assert case == "hinge-multiclass"
    return "hinge", rng.normal(size=(n, c)) * 0.7, rng.integers(0, c, n).astype(np.int32)


CASES = ["ce-labels", "ce-probabilities", "ce-sequence", "mse-vector", "mse-matrix", "mse-tensor",
         "hinge-binary-column", "hinge-binary-int", "hinge-multiclass"]


@pytest.mark.parametrize("case", CASES)
def test_batch_mean_form_is_the_mean_of_the_per_example_loss(case):
    name, outputs, targets = _case(case)
    batch, per_example = train.loss_by_name(name), PER_EXAMPLE[name]
    assert batch.per_example is per_example
    one = jax.jit(per_example)
    want = np.mean([one(jnp.asarray(o), jnp.asarray(t)) for o, t in zip(outputs, targets)])  # a Python loop
    np.testing.assert_allclose(jax.jit(batch)(jnp.asarray(outputs), jnp.asarray(targets)), want, rtol=1e-13)


def _dense_output_hessian(loss, output, target):
    """∇²_f ℓ(f, y) by autodiff of the loss itself, flattened to (K, K)."""
    k = int(np.size(output))
    return np.asarray(jax.hessian(lambda f: loss(f.reshape(np.shape(output)), target))(jnp.ravel(output))).reshape(k, k)


def _declared_output_hessian(loss, output, target):
    """The declared H applied to every basis vector: (K, K)."""
    k = int(np.size(output))
    basis = jnp.eye(k).reshape((k,) + np.shape(output))
    return np.asarray(jax.vmap(lambda u: jnp.ravel(loss.output_hvp(output, target, u)))(basis)).T


HESSIAN_CASES = {
    "ce-label": (train.per_example_softmax_cross_entropy, [0.3, -1.2, 2.0, 0.1], 2),
    "ce-probabilities": (train.per_example_softmax_cross_entropy, [0.3, -1.2, 2.0, 0.1], [0.1, 0.2, 0.3, 0.4]),
    "ce-unnormalized-targets": (train.per_example_softmax_cross_entropy, [0.3, -1.2, 2.0], [0.5, 1.5, 0.5]),
    "ce-sequence": (train.per_example_softmax_cross_entropy, [[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]], [2, 0]),
    "mse-scalar": (train.per_example_mse, 0.7, -0.2),
    "mse-vector": (train.per_example_mse, [0.3, -1.2, 2.0], [1.0, 0.0, 0.5]),
    "mse-matrix": (train.per_example_mse, [[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]], [[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]]),
    "hinge-multiclass": (train.per_example_hinge, [0.3, -1.2, 2.0, 0.1], 0),  # away from the kinks
    "hinge-binary": (train.per_example_hinge, [0.4], -1.0),
}


@pytest.mark.parametrize("case", sorted(HESSIAN_CASES))
def test_declared_output_hvp_is_the_dense_output_hessian(case):
    loss, output, target = HESSIAN_CASES[case]
    output = jnp.asarray(output, jnp.float64)
    target = jnp.asarray(target, jnp.int32 if isinstance(np.asarray(target).flat[0], np.integer) else jnp.float64)
    dense = _dense_output_hessian(loss, output, target)
    np.testing.assert_allclose(_declared_output_hessian(loss, output, target), dense, rtol=1e-12, atol=1e-15)
    if loss is train.per_example_softmax_cross_entropy and output.ndim == 1:  # (Σ t)(diag p − p pᵀ) by hand
        p = np.exp(output - output.max()) / np.exp(output - output.max()).sum()
        mass = 1.0 if target.ndim == 0 else float(np.sum(target))
        np.testing.assert_allclose(dense, mass * (np.diag(p) - np.outer(p, p)), rtol=1e-12, atol=1e-15)
    if loss is train.per_example_mse:  # I / K
        np.testing.assert_allclose(dense, np.eye(output.size) / output.size, rtol=1e-14)


def test_output_hessian_vp_takes_the_declared_product_else_the_exact_jvp_of_grad():
    def cosh(f, y):
        return jnp.sum(jnp.cosh(f - y))

    f, y, u = jnp.array([0.3, -1.2, 2.0]), jnp.array([1.0, 0.0, 0.5]), jnp.array([1.0, -2.0, 0.5])
    dense = np.diag(np.cosh(np.asarray(f - y)))  # ∂²/∂f² Σ cosh(f − y), by hand
    undeclared = train.PerExampleLoss(cosh)
    assert undeclared.output_hvp is None
    np.testing.assert_allclose(output_hessian_vp(undeclared, f, y, u), dense @ np.asarray(u), rtol=1e-14)
    np.testing.assert_allclose(output_hessian_vp(cosh, f, y, u), dense @ np.asarray(u), rtol=1e-14)
    declared = train.PerExampleLoss(cosh, lambda f, y, u: 3.0 * u)  # deliberately not cosh's Hessian
    np.testing.assert_array_equal(output_hessian_vp(declared, f, y, u), 3.0 * u)


def test_losses_are_plain_callables_under_jit_vmap_grad():
    logits, labels = jnp.array([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]]), jnp.array([2, 0])
    per_example = train.per_example_softmax_cross_entropy
    losses = jax.jit(jax.vmap(per_example))(logits, labels)
    assert losses.shape == (2,)
    grads = jax.jit(jax.vmap(jax.grad(per_example)))(logits, labels)
    np.testing.assert_allclose(grads, jax.nn.softmax(logits) - jax.nn.one_hot(labels, 3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(train.softmax_cross_entropy)(logits, labels), losses.mean(), rtol=1e-6)
    # immutable and hashable: a static argument
    value = jax.jit(lambda loss, f, y: loss(f, y), static_argnums=0)(train.mse, logits, logits + 1)
    np.testing.assert_allclose(value, 0.5, rtol=1e-6)
    assert train.mse.__name__ == "mse" and per_example.__name__ == "per_example_softmax_cross_entropy"
    assert "½" in train.per_example_mse.__doc__ and "mse.per_example" in train.mse.__doc__


def test_a_batch_mean_loss_where_a_per_example_one_is_needed_is_a_one_line_error():
    cases = [
        (lambda: check_per_example_loss("per_example_loss", train.mse), TypeError,
         r"^per_example_loss: expected a per-example loss \(output, target\) -> scalar for ONE example, got the "
         r"batch-mean loss 'mse' .*; pass its per-example form, mse\.per_example$"),
        (lambda: check_per_example_loss("loss", "mse"), TypeError, r"^loss: expected a per-example loss .* got str$"),
        (lambda: train.PerExampleLoss(train.hinge), TypeError, r"^fn: expected a per-example loss .* 'hinge'"),
        (lambda: train.BatchMeanLoss(train.softmax_cross_entropy), TypeError, r"^per_example: expected a per-example"),
        (lambda: train.PerExampleLoss(3), TypeError, r"^fn: expected a per-example loss .* got int$"),
        (lambda: train.PerExampleLoss(jnp.sin, output_hvp=3), TypeError, r"^output_hvp: expected None or a function"),
        (lambda: train.mse(jnp.zeros((3, 2)), jnp.zeros((2, 2))), ValueError,
         r"^mse: outputs and targets need one common leading \(example\) axis, got shapes \(3, 2\) and \(2, 2\)$"),
    ]
    for make, error, match in cases:
        with pytest.raises(error, match=match) as err:
            make()
        assert "\n" not in str(err.value)
