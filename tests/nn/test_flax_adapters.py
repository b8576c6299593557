"""Tests for jaxlearn/nn/flax_adapters.py: from_linen and from_nnx.

The ground truth is each flax API's own way of running the module: ``module.init`` /
``module.apply`` for linen; the module object built by the same factory, ``Module.train()`` /
``.eval()``, ``nnx.reseed`` and ``nnx.grad`` for nnx.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable

import chex
import flax.linen as ln
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlearn import nn
from jaxlearn.nn import LayerError

# One width everywhere: every random initialiser then compiles for a single shape (keeps the file fast).
IN = HIDDEN = OUT = 8
BATCH = 16
MOMENTUM = 0.9
SPEC = jax.ShapeDtypeStruct((BATCH, IN), jnp.float32)


# -- modules under test ------------------------------------------------------------------------
class LinenMLP(ln.Module):
    @ln.compact
    def __call__(self, x):
        return ln.Dense(OUT)(jnp.tanh(ln.Dense(HIDDEN)(x)))


class LinenBNDrop(ln.Module):
    @ln.compact
    def __call__(self, x, train: bool = False):
        h = ln.Dense(HIDDEN)(x)
        h = ln.BatchNorm(use_running_average=not train, momentum=MOMENTUM)(h)
        h = ln.Dropout(0.5, deterministic=not train)(jax.nn.relu(h))
        return ln.Dense(OUT)(h)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, OUT, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


class NnxBNDrop(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(IN, HIDDEN, rngs=rngs)
        self.bn = nnx.BatchNorm(HIDDEN, momentum=MOMENTUM, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, OUT, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(x)))))


# -- the same checks for both adapters: a Case holds the adapter and the flax reference ----------
@dataclasses.dataclass
class Case:
    layer: nn.Layer
    ref_init: Callable  # init_key -> (params, state), by the flax API
    ref_apply: Callable  # (init_key, x, key, train) -> (y, new_state), by the flax API
    ref_grad: Callable  # (init_key, x, key, train, loss) -> grads wrt params, by the flax API
    first_layer: str  # name of the first Dense/Linear in params
    bn_dropout: bool  # the BatchNorm + Dropout module (state, and randomness in training)


def linen_case(module, bn_dropout):
    x0 = jnp.zeros(SPEC.shape, SPEC.dtype)

    def non_params(variables):
        return {c: v for c, v in variables.items() if c != "params"} or ()

    def ref_init(k):
        variables = module.init(k, x0)
        return variables["params"], non_params(variables)

    def run(variables, x, key, train):
        kw = {"train": train} if bn_dropout else {}
        rngs = {"dropout": key} if key is not None else None
        if train and bn_dropout:
            return module.apply(variables, x, rngs=rngs, mutable=["batch_stats"], **kw)
        return module.apply(variables, x, rngs=rngs, **kw), non_params(variables)

    def ref_apply(k, x, key, train):
        return run(module.init(k, x0), x, key, train)

    def ref_grad(k, x, key, train, loss):
        variables = module.init(k, x0)
        rest = non_params(variables) or {}
        return jax.grad(lambda p: loss(run({"params": p, **rest}, x, key, train)[0]))(variables["params"])

    return Case(nn.from_linen(module), ref_init, ref_apply, ref_grad, "Dense_0", bn_dropout)


def nnx_case(factory, bn_dropout):
    def build(k, key, train):
        module = factory(nnx.Rngs(k))
        module.train() if train else module.eval()
        if key is not None:
            nnx.reseed(module, default=key)  # the adapter's documented dropout-key convention
        return module

    def stats(module):
        return nnx.to_pure_dict(nnx.state(module, nnx.BatchStat)) or ()

    def ref_init(k):
        module = factory(nnx.Rngs(k))
        return nnx.to_pure_dict(nnx.state(module, nnx.Param)), stats(module)

    def ref_apply(k, x, key, train):
        module = build(k, key, train)
        y = module(x)
        return y, stats(module)

    def ref_grad(k, x, key, train, loss):
        grads = nnx.grad(lambda m: loss(m(x)))(build(k, key, train))
        return nnx.to_pure_dict(grads)

    return Case(nn.from_nnx(factory), ref_init, ref_apply, ref_grad, "l1", bn_dropout)


CASES = {
    "linen-mlp": lambda: linen_case(LinenMLP(), bn_dropout=False),
    "linen-bndrop": lambda: linen_case(LinenBNDrop(), bn_dropout=True),
    "nnx-mlp": lambda: nnx_case(lambda rngs: NnxMLP(rngs), bn_dropout=False),
    "nnx-bndrop": lambda: nnx_case(NnxBNDrop, bn_dropout=True),
}
BN_CASES = ["linen-bndrop", "nnx-bndrop"]


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]()


@pytest.fixture(scope="module", params=BN_CASES)
def bn_case(request):
    return CASES[request.param]()


def _x(seed=1):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(SPEC.shape), SPEC.dtype)


def _loss(y):
    return jnp.sum(jnp.sin(y) * jnp.arange(1, OUT + 1))


def _modes(case):
    """(train, key) pairs worth checking: eval always; train with a key for stochastic modules."""
    return [(False, None)] + ([(True, jax.random.key(7))] if case.bn_dropout else [])


# -- tests -------------------------------------------------------------------------------------
def test_init_matches_flax(case):
    k = jax.random.key(3)
    params, state = case.layer.init(k, SPEC)
    ref_params, ref_state = case.ref_init(k)
    chex.assert_trees_all_equal(params, ref_params)
    chex.assert_trees_all_equal(state, ref_state)
    assert case.layer.output_spec(SPEC) == jax.ShapeDtypeStruct((BATCH, OUT), jnp.float32)


@pytest.mark.parametrize("layer", [nn.from_linen(ln.Dense(5)), nn.from_nnx(lambda rngs: nnx.Linear(IN, 5, rngs=rngs))])
def test_output_spec(layer):
    assert layer.output_spec(SPEC) == jax.ShapeDtypeStruct((BATCH, 5), jnp.float32)
    assert layer.output_spec(jax.ShapeDtypeStruct((2, 7, IN), jnp.float32)).shape == (2, 7, 5)


def test_apply_matches_flax(case):
    k, x = jax.random.key(3), _x()
    params, state = case.layer.init(k, SPEC)
    for train, key in _modes(case):
        y, new_state = case.layer.apply_with_state(params, x, state, key=key, train=train)
        ref_y, ref_state = case.ref_apply(k, x, key, train)
        chex.assert_trees_all_close(y, ref_y, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_close(new_state, ref_state, rtol=1e-6, atol=1e-6)


def test_grad_matches_flax(case):
    k, x = jax.random.key(3), _x()
    params, state = case.layer.init(k, SPEC)
    for train, key in _modes(case):
        grads = jax.grad(lambda p: _loss(case.layer.apply(p, x, state, key=key, train=train)))(params)
        ref_grads = case.ref_grad(k, x, key, train, _loss)
        chex.assert_trees_all_close(grads, ref_grads, rtol=1e-6, atol=1e-6)
        assert float(jnp.abs(grads[case.first_layer]["kernel"]).max()) > 0


def test_params_are_an_optax_pytree(case):
    params, state = case.layer.init(jax.random.key(3), SPEC)
    grads = jax.grad(lambda p: _loss(case.layer.apply(p, _x(), state)))(params)
    opt = optax.sgd(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    by_hand = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    chex.assert_trees_all_close(optax.apply_updates(params, updates), by_hand, rtol=1e-6, atol=1e-6)


def test_vmapped_init_over_seeds(case):
    keys = jax.random.split(jax.random.key(0), 8)
    batched = jax.vmap(lambda k: case.layer.init(k, SPEC)[0])(keys)
    for i in range(8):
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batched), case.layer.init(keys[i], SPEC)[0])
    kernels = batched[case.first_layer]["kernel"]
    for i, j in itertools.combinations(range(8), 2):
        assert not np.array_equal(kernels[i], kernels[j])
    # the population applies as one vmapped program
    state = case.layer.init(keys[0], SPEC)[1]
    ys = jax.vmap(lambda p: case.layer.apply(p, _x(), state))(batched)
    chex.assert_trees_all_close(ys[5], case.layer.apply(case.layer.init(keys[5], SPEC)[0], _x(), state),
                                rtol=1e-5, atol=1e-5)


def test_jit_apply_matches_eager(case):
    params, state = case.layer.init(jax.random.key(3), SPEC)
    apply = jax.jit(case.layer.apply_with_state, static_argnames="train")
    for train, key in _modes(case):
        chex.assert_trees_all_close(
            apply(params, _x(), state, key=key, train=train),
            case.layer.apply_with_state(params, _x(), state, key=key, train=train),
            rtol=1e-6, atol=1e-6,
        )


def test_composes_with_jaxlearn_layers(case):
    model = nn.serial(case.layer, nn.Tanh())
    params, state = model.init(jax.random.key(3), SPEC)
    y = model.apply(params, _x(), state)
    np.testing.assert_allclose(y, jnp.tanh(case.layer.apply(params[0], _x(), state[0])), rtol=1e-6, atol=1e-6)


# -- BatchNorm + Dropout: state, keys, determinism -----------------------------------------------
def test_train_updates_running_mean(bn_case):
    layer, x = bn_case.layer, _x()
    params, state = layer.init(jax.random.key(3), SPEC)
    _, new_state = layer.apply_with_state(params, x, state, key=jax.random.key(7), train=True)
    # ground truth: running mean = momentum·old + (1 - momentum)·batch mean of the BN input
    first = params[bn_case.first_layer]
    batch_mean = jnp.mean(x @ first["kernel"] + first["bias"], axis=0)
    old, new = [jax.tree.leaves(s, is_leaf=lambda d: isinstance(d, dict) and "mean" in d)[0]
                for s in (state, new_state)]
    assert not np.allclose(new["mean"], old["mean"])
    np.testing.assert_allclose(new["mean"], MOMENTUM * old["mean"] + (1 - MOMENTUM) * batch_mean, rtol=1e-5, atol=1e-6)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_train_needs_key(bn_case):
    params, state = bn_case.layer.init(jax.random.key(3), SPEC)
    with pytest.raises(LayerError, match="pass key="):
        bn_case.layer.apply(params, _x(), state, train=True)


def test_eval_is_deterministic_and_keeps_state(bn_case):
    layer = bn_case.layer
    params, state = layer.init(jax.random.key(3), SPEC)
    y0, s0 = layer.apply_with_state(params, _x(), state)
    y1, s1 = layer.apply_with_state(params, _x(), state, key=jax.random.key(1))
    y2, _ = layer.apply_with_state(params, _x(), state, key=jax.random.key(2))
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(y1, y2)
    chex.assert_trees_all_equal(s0, state)
    chex.assert_trees_all_equal(s1, state)


def test_dropout_keys(bn_case):
    layer = bn_case.layer
    params, state = layer.init(jax.random.key(3), SPEC)
    a = layer.apply(params, _x(), state, key=jax.random.key(1), train=True)
    b = layer.apply(params, _x(), state, key=jax.random.key(1), train=True)
    c = layer.apply(params, _x(), state, key=jax.random.key(2), train=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_missing_state_is_named(bn_case):
    params, _ = bn_case.layer.init(jax.random.key(3), SPEC)
    with pytest.raises(LayerError, match="pass state="):
        bn_case.layer.apply(params, _x())


@pytest.mark.parametrize("name", ["linen-mlp", "nnx-mlp"])
def test_stateless_modules_use_empty_tuple(name):
    layer = CASES[name]().layer
    params, state = layer.init(jax.random.key(0), SPEC)
    assert state == ()
    assert layer.apply(params, _x()).shape == (BATCH, OUT)


# -- the train flag: auto rule, explicit names, None -------------------------------------------
# Probes add the flag they receive to x (or subtract 1 when they receive none), so the output
# says which value reached which keyword. They have no variables: params are empty.
def _seen(flag):
    return -1.0 if flag is None else jnp.float32(flag)


class LinenTrain(ln.Module):
    def __call__(self, x, train=None):
        return x + _seen(train)


class LinenDeterministic(ln.Module):
    def __call__(self, x, deterministic=None):
        return x + _seen(deterministic)


class LinenRunningAverage(ln.Module):
    def __call__(self, x, use_running_average=None):
        return x + _seen(use_running_average)


class LinenMode(ln.Module):
    def __call__(self, x, mode=None):
        return x + _seen(mode)


class NnxTrain(nnx.Module):
    def __init__(self, rngs):
        pass

    def __call__(self, x, train=None):
        return x + _seen(train)


class NnxDeterministic(NnxTrain):
    def __call__(self, x, deterministic=None):
        return x + _seen(deterministic)


class NnxRunningAverage(NnxTrain):
    def __call__(self, x, use_running_average=None):
        return x + _seen(use_running_average)


class NnxMode(NnxTrain):
    def __call__(self, x, mode=None):
        return x + _seen(mode)


PROBES = {
    "train": (LinenTrain, NnxTrain),
    "deterministic": (LinenDeterministic, NnxDeterministic),
    "use_running_average": (LinenRunningAverage, NnxRunningAverage),
    "mode": (LinenMode, NnxMode),
}


@pytest.mark.parametrize("adapter", ["linen", "nnx"])
@pytest.mark.parametrize(
    "arg, train_arg, expect",
    [
        ("train", "auto", lambda t: float(t)),
        ("deterministic", "auto", lambda t: float(not t)),
        ("use_running_average", "auto", lambda t: float(not t)),
        ("deterministic", "deterministic", lambda t: float(not t)),
        ("mode", "mode", lambda t: float(t)),
        ("mode", "auto", lambda t: -1.0),  # no recognised name: nothing is passed
        ("train", None, lambda t: -1.0),
    ],
)
def test_train_arg(adapter, arg, train_arg, expect):
    linen_probe, nnx_probe = PROBES[arg]
    if adapter == "linen":
        layer = nn.from_linen(linen_probe(), train_arg=train_arg)
    else:
        layer = nn.from_nnx(nnx_probe, train_arg=train_arg)
    x = jnp.zeros((2, 3))
    params, state = layer.init(jax.random.key(0), x)
    for train in (False, True):
        np.testing.assert_array_equal(layer.apply(params, x, state, train=train), expect(train))


# -- linen specifics -------------------------------------------------------------------------
class LinenTwoStreams(ln.Module):
    """Draws from two RNG streams; returns a tuple (a pytree output)."""

    @ln.compact
    def __call__(self, x):
        return tuple(jax.random.bernoulli(self.make_rng(c), 0.5, x.shape) for c in ("dropout", "noise"))


def test_linen_several_rng_collections():
    module = LinenTwoStreams()
    layer = nn.from_linen(module, rng_collections=("dropout", "noise"))
    params, state = layer.init(jax.random.key(0), SPEC)
    assert (params, state) == ({}, ())
    key = jax.random.key(5)
    drop, noise = layer.apply(params, _x(), key=key)
    ref = module.apply({}, _x(), rngs={"dropout": jax.random.fold_in(key, 0), "noise": jax.random.fold_in(key, 1)})
    np.testing.assert_array_equal(drop, ref[0])
    np.testing.assert_array_equal(noise, ref[1])
    assert not np.array_equal(drop, noise)
    assert layer.output_spec(SPEC) == (jax.ShapeDtypeStruct(SPEC.shape, jnp.bool_),) * 2
    with pytest.raises(LayerError, match="rng_collections"):
        nn.from_linen(module).apply(params, _x(), key=key)


# -- nnx specifics -----------------------------------------------------------------------------
class NnxCallRngs(nnx.Module):
    """Dropout without a stored stream: the key arrives through __call__(x, rngs=...)."""

    def __init__(self, rngs):
        self.l1 = nnx.Linear(IN, OUT, rngs=rngs)
        self.drop = nnx.Dropout(0.5)

    def __call__(self, x, *, rngs=None):
        return self.drop(self.l1(x), rngs=rngs)


def test_nnx_rngs_argument():
    layer = nn.from_nnx(NnxCallRngs)
    params, state = layer.init(jax.random.key(0), SPEC)
    key = jax.random.key(5)
    ref = NnxCallRngs(nnx.Rngs(jax.random.key(0)))
    ref.train()
    np.testing.assert_array_equal(layer.apply(params, _x(), key=key, train=True), ref(_x(), rngs=nnx.Rngs(key)))
    with pytest.raises(LayerError, match="pass key="):
        layer.apply(params, _x(), train=True)
    ref.eval()
    np.testing.assert_array_equal(layer.apply(params, _x()), ref(_x()))


def test_nnx_raw_uint32_keys():
    layer = nn.from_nnx(NnxBNDrop)
    params, state = layer.init(jax.random.PRNGKey(0), SPEC)
    typed, _ = layer.init(jax.random.wrap_key_data(jax.random.PRNGKey(0)), SPEC)
    chex.assert_trees_all_equal(params, typed)
    y_raw = layer.apply(params, _x(), state, key=jax.random.PRNGKey(4), train=True)
    y_typed = layer.apply(params, _x(), state, key=jax.random.wrap_key_data(jax.random.PRNGKey(4)), train=True)
    np.testing.assert_array_equal(y_raw, y_typed)


def test_nnx_factory_must_build_one_structure():
    widths = iter([HIDDEN, HIDDEN + 1])  # the first call (at from_nnx) and the second (at init) differ
    layer = nn.from_nnx(lambda rngs: nnx.BatchNorm(next(widths), rngs=rngs))
    with pytest.raises(LayerError, match="same structure"):
        layer.init(jax.random.key(0), SPEC)


# -- bad arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: nn.from_linen(LinenMLP), TypeError, "module must be a flax.linen.Module instance"),
        (lambda: nn.from_linen(NnxMLP(nnx.Rngs(0))), TypeError, "from_nnx"),
        (lambda: nn.from_linen(lambda x: x), TypeError, "module must be"),
        (lambda: nn.from_linen(LinenMLP(), train_arg="nope"), LayerError, "train_arg='nope'"),
        (lambda: nn.from_linen(LinenMLP(), train_arg=True), TypeError, "train_arg"),
        (lambda: nn.from_linen(LinenMLP(), rng_collections=("params",)), LayerError, "rng_collections"),
        (lambda: nn.from_nnx(NnxMLP(nnx.Rngs(0))), TypeError, "factory must be a function"),
        (lambda: nn.from_nnx(LinenMLP()), TypeError, "from_linen"),
        (lambda: nn.from_nnx(42), TypeError, "factory must be a callable"),
        (lambda: nn.from_nnx(lambda rngs: 3), TypeError, r"factory\(rngs\) must return an nnx.Module"),
        (lambda: nn.from_nnx(NnxMLP, rngs_arg="keys"), LayerError, "rngs_arg='keys'"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -- float64: the gradient against central finite differences ------------------------------------
class LinenMLP64(ln.Module):
    @ln.compact
    def __call__(self, x):
        dense = lambda n: ln.Dense(n, dtype=jnp.float64, param_dtype=jnp.float64)  # noqa: E731
        return dense(OUT)(jnp.tanh(dense(HIDDEN)(x)))


class NnxMLP64(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(IN, HIDDEN, dtype=jnp.float64, param_dtype=jnp.float64, rngs=rngs)
        self.l2 = nnx.Linear(HIDDEN, OUT, dtype=jnp.float64, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


@pytest.mark.float64
@pytest.mark.parametrize("adapter", ["linen", "nnx"])
def test_grad_finite_differences_float64(adapter):
    if adapter == "linen":
        layer = nn.from_linen(LinenMLP64())
    else:
        layer = nn.from_nnx(NnxMLP64)
    spec = jax.ShapeDtypeStruct((BATCH, IN), jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(spec.shape))
    params, _ = layer.init(jax.random.key(0), spec)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))

    def loss(p):
        return _loss(layer.apply(p, x))

    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(1)
    direction = jax.tree.unflatten(treedef, [jnp.asarray(rng.standard_normal(v.shape)) for v in leaves])
    eps = 1e-5
    shifted = [jax.tree.map(lambda p, d, s=s: p + s * eps * d, params, direction) for s in (1, -1)]
    fd = (loss(shifted[0]) - loss(shifted[1])) / (2 * eps)
    grads = jax.grad(loss)(params)
    directional = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    np.testing.assert_allclose(directional, fd, rtol=1e-7)
