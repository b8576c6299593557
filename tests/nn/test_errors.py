"""Bad arguments give one clear ``nn.LayerError`` (a ValueError) that names the argument/value,
raised when the layer is built or initialised (Python, on shapes), never from inside XLA."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn.nn as nn


def spec(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def check_message(excinfo):
    msg = str(excinfo.value)
    assert "\n" not in msg, "one line, please"
    assert type(excinfo.value) is nn.LayerError


def test_layer_error_is_a_value_error():
    assert issubclass(nn.LayerError, ValueError)


# -- raised by the constructor --------------------------------------------------------------------

BUILD_ERRORS = [
    ("activation-near-miss", lambda: nn.activation("rleu"), r"unknown name 'rleu' \(did you mean 'relu'\?\)"),
    ("activation-case", lambda: nn.activation("Gelu"), r"'Gelu' \(did you mean 'gelu'\?\)"),
    ("activation-case-2", lambda: nn.activation("ReLU"), r"'ReLU' \(did you mean 'relu'\?\)"),
    ("activation-unknown", lambda: nn.activation("swish"), r"unknown name 'swish'; expected one of \[.*'relu'"),
    ("activation-kwarg", lambda: nn.activation("relu", alpha=0.1), r"activation 'relu'.*alpha"),
    ("param-unknown-dense", lambda: nn.Dense(3, parameterization="NTK"), r"Dense\(3\): unknown parameterization 'NTK'"),
    ("param-unknown-conv", lambda: nn.Conv(3, (2,), parameterization="muP"), r"unknown parameterization 'muP'"),
    ("param-unknown-emb", lambda: nn.Embedding(5, 3, parameterization="sp"), r"unknown parameterization 'sp'"),
    ("mup-without-role", lambda: nn.Dense(3, parameterization="mup"),
     r"parameterization='mup' needs role=.*got role=None"),
    ("mup-bad-role", lambda: nn.Conv(3, (2,), parameterization="mup", role="middle"), r"role=.*got role='middle'"),
    ("role-bad", lambda: nn.Dense(3, role="middle"), r"role must be one of .*got 'middle'"),
    ("dense-zero", lambda: nn.Dense(0), r"out_dim must be a positive int, got 0"),
    ("dense-float", lambda: nn.Dense(2.5), r"out_dim must be a positive int, got 2.5"),
    ("dense-bool", lambda: nn.Dense(True), r"out_dim must be a positive int, got True"),
    ("conv-negative", lambda: nn.Conv(-1, (3,)), r"out_chan must be a positive int, got -1"),
    ("conv-int-filter", lambda: nn.Conv(4, 3), r"filter_shape must be a tuple of 1 or 2 ints, got 3"),
    ("conv-3d-filter", lambda: nn.Conv(4, (3, 3, 3)), r"filter_shape must be a tuple of 1 or 2 ints, got \(3, 3, 3\)"),
    ("conv-zero-filter", lambda: nn.Conv(4, (0, 3)), r"filter_shape must be 2 positive int\(s\), got \(0, 3\)"),
    ("conv-none-filter", lambda: nn.Conv(4, None), r"filter_shape must be a tuple of 1 or 2 ints, got None"),
    ("conv-strides-len", lambda: nn.Conv(4, (3, 3), strides=(1,)), r"strides must be 2 positive int\(s\), got \(1,\)"),
    ("conv-strides-zero", lambda: nn.Conv(4, (3,), strides=0), r"strides must be 1 positive int\(s\), got \(0,\)"),
    ("conv-strides-float", lambda: nn.Conv(4, (3,), strides=1.5), r"strides must be 1 positive int\(s\), got \(1.5,\)"),
    ("conv-padding", lambda: nn.Conv(4, (3, 3), padding="same"), r"padding must be 'SAME' or 'VALID', got 'same'"),
    ("pool-int-window", lambda: nn.AvgPool(2), r"window_shape must be a tuple of 1 or 2 ints, got 2"),
    ("pool-strides", lambda: nn.AvgPool((2,), strides=(0,)), r"strides must be 1 positive int\(s\), got \(0,\)"),
    ("pool-padding", lambda: nn.AvgPool((2, 2), padding="full"), r"padding must be 'SAME' or 'VALID', got 'full'"),
    ("emb-vocab", lambda: nn.Embedding(0, 3), r"vocab_size must be a positive int, got 0"),
    ("emb-features", lambda: nn.Embedding(10, -2), r"features must be a positive int, got -2"),
    ("dropout-high", lambda: nn.Dropout(1.5), r"Dropout: rate must be .*\[0, 1\), got 1.5"),
    ("dropout-one", lambda: nn.Dropout(1.0), r"rate must be .*got 1.0"),
    ("dropout-negative", lambda: nn.Dropout(-0.1), r"rate must be .*got -0.1"),
    ("dropout-str", lambda: nn.Dropout("0.5x"), r"rate must be .*got '0.5x'"),
    ("W_std-negative", lambda: nn.Dense(3, W_std=-1.0), r"Dense\(3\): W_std must be a non-negative number, got -1.0"),
    ("W_std-nan", lambda: nn.Conv(3, (2,), W_std=float("nan")), r"W_std must be a non-negative number, got nan"),
    ("W_std-none", lambda: nn.Dense(3, W_std=None), r"W_std must be a non-negative number, got None"),
    ("W_std-array", lambda: nn.Dense(3, W_std=jnp.array(-2.0)), r"W_std must be a non-negative number"),
    ("b_std-negative", lambda: nn.Dense(3, b_std=-0.5), r"b_std must be a non-negative number, got -0.5"),
    ("emb-W_std", lambda: nn.Embedding(10, 3, W_std=-1), r"W_std must be a non-negative number, got -1"),
    ("bn-momentum", lambda: nn.BatchNorm(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    ("fanout-zero", lambda: nn.fanout(0), r"num must be a positive int, got 0"),
    ("serial-class", lambda: nn.serial(nn.Dense(3), nn.Relu),
     r"serial: argument 1 must be a jaxlearn.nn Layer.*nn.Relu\(\)"),
    ("serial-empty", lambda: nn.serial(), r"serial: expected at least one layer"),
    ("parallel-str", lambda: nn.parallel(nn.Dense(2), "relu"),
     r"parallel: argument 1 must be a jaxlearn.nn Layer, got str"),
    ("residual-class", lambda: nn.residual(nn.Dense(2), nn.Tanh), r"serial: argument 1 must be a jaxlearn.nn Layer"),
]


@pytest.mark.parametrize("build, match", [c[1:] for c in BUILD_ERRORS], ids=[c[0] for c in BUILD_ERRORS])
def test_bad_constructor_arguments(build, match):
    with pytest.raises(nn.LayerError, match=match) as excinfo:
        build()
    check_message(excinfo)


def test_traced_hyperparameters_are_not_checked_on_values():
    # inside vmap a negative W_std cannot be seen; building must not fail or concretise the tracer
    ys = jax.vmap(lambda w: nn.Dense(2, W_std=w, b_std=None, parameterization="ntk").apply(
        {"W": jnp.ones((3, 2))}, jnp.ones((1, 3))))(
        jnp.array([1.0, 2.0])
    )
    np.testing.assert_allclose(ys[:, 0, 0], [np.sqrt(3.0), 2 * np.sqrt(3.0)], rtol=1e-6)


def test_lr_multipliers_bad_optimizer():
    with pytest.raises(nn.LayerError, match=r"optimizer: expected 'sgd' or 'adam', got 'sgdm'") as excinfo:
        nn.Dense(3).lr_multipliers(spec(2, 4), "sgdm")
    check_message(excinfo)


# -- raised by init (on shapes; checked abstractly so no kernel is compiled) ----------------------

INIT_ERRORS = [
    ("dense-then-conv", nn.serial(nn.Dense(4), nn.Conv(2, (3, 3))), spec(2, 8),
     r"serial layer 1 \(Conv\(2, \(3, 3\)\)\): .*expects 4-D inputs \(NHWC\), got float32\[2, 4\]"),
    ("conv1d-on-2d", nn.Conv(2, (3,)), spec(2, 8), r"expects 3-D inputs \(NWC\), got float32\[2, 8\]"),
    ("conv-too-small", nn.Conv(2, (5,)), spec(2, 3, 1), r"input spatial shape \[3\] is smaller than the filter \[5\]"),
    ("pool-too-small", nn.AvgPool((2, 4)), spec(2, 3, 3, 1),
     r"input spatial shape \[3, 3\] is smaller than the window \[2, 4\]"),
    ("pool-rank", nn.AvgPool((2,)), spec(2, 8), r"expects 3-D inputs"),
    ("fanin-sum-shapes", nn.serial(nn.fanout(2), nn.parallel(nn.Dense(3), nn.Dense(4)), nn.fanin_sum()), spec(2, 8),
     r"fanin_sum: input 1 has shape \[2, 4\], expected \[2, 3\] like input 0"),
    ("fanin-concat-shapes", nn.serial(nn.fanout(2), nn.parallel(nn.Identity(), nn.Flatten()), nn.fanin_concat(axis=1)),
     spec(2, 3, 4), r"fanin_concat: input 1 has shape \[2, 12\], expected \[2, 3, 4\]"),
    ("fanin-not-tuple", nn.fanin_sum(), spec(2, 3), r"fanin_sum expects a tuple of inputs"),
    ("residual-branch-shape", nn.residual(nn.Dense(5), nn.Relu()), spec(2, 3),
     r"residual: the branch .* gives shape \[2, 5\] but the shortcut gives \[2, 3\]"),
    ("residual-shortcut-shape", nn.residual(nn.Dense(3), shortcut=nn.Dense(4)), spec(2, 3),
     r"residual: .*\[2, 3\] but the shortcut gives \[2, 4\]"),
    ("parallel-arity", nn.parallel(nn.Dense(2), nn.Dense(2)), spec(2, 3),
     r"parallel of 2 layers expects a tuple of 2 inputs"),
    ("dense-tuple", nn.Dense(2), (spec(2, 3), spec(2, 3)), r"Dense\(2\) expects one input, got a tuple"),
    ("embedding-float", nn.Embedding(10, 4), spec(2, 5),
     r"Embedding\(10, 4\) expects integer token inputs, got float32\[2, 5\]"),
    ("embedding-after-dense", nn.serial(nn.Dense(3), nn.Embedding(10, 4)), spec(2, 5),
     r"serial layer 1 .*integer token inputs"),
    ("layernorm-batch-axis", nn.LayerNorm(axis=0), spec(2, 3), r"LayerNorm: axis 0 is out of range or the batch axis"),
    ("layernorm-out-of-range", nn.LayerNorm(axis=(1, 3)), spec(2, 3, 4), r"LayerNorm: axis \(1, 3\) is out of range"),
    ("layernorm-int", nn.LayerNorm(), spec(2, 3, dtype=jnp.int32), r"LayerNorm expects floating-point inputs"),
    ("batchnorm-int", nn.BatchNorm(), spec(2, 3, dtype=jnp.int32), r"BatchNorm expects floating-point inputs"),
    ("gap-rank", nn.GlobalAvgPool(), spec(2, 3),
     r"GlobalAvgPool expects \(N, spatial..., C\) inputs, got float32\[2, 3\]"),
]


@pytest.mark.parametrize("layer, in_spec, match", [c[1:] for c in INIT_ERRORS], ids=[c[0] for c in INIT_ERRORS])
def test_bad_inputs_fail_at_init(layer, in_spec, match):
    with pytest.raises(nn.LayerError, match=match) as excinfo:
        jax.eval_shape(lambda k: layer.init(k, in_spec), jax.random.key(0))
    check_message(excinfo)
    with pytest.raises(nn.LayerError, match=match):
        layer.output_spec(in_spec)


def test_init_errors_are_raised_eagerly_too():
    # the same check, outside any transformation
    with pytest.raises(nn.LayerError, match=r"Embedding\(10, 4\) expects integer token inputs"):
        nn.Embedding(10, 4).init(jax.random.key(0), jnp.zeros((2, 5)))
    with pytest.raises(nn.LayerError, match=r"LayerNorm: axis 0"):
        nn.LayerNorm(axis=0).init(jax.random.key(0), spec(2, 3))


def test_bad_input_spec():
    with pytest.raises(nn.LayerError, match=r"input_spec: expected a jax.ShapeDtypeStruct .* got list"):
        nn.Relu().init(jax.random.key(0), [2, 3])


# -- raised by apply on Python structure (the same with and without jit) --------------------------


def _bn_apply_without_state(jit):
    bn = nn.BatchNorm()
    params = {"scale": jnp.ones(3), "offset": jnp.zeros(3)}
    f = (lambda p, x: bn.apply(p, x)) if not jit else jax.jit(lambda p, x: bn.apply(p, x))
    return f(params, jnp.ones((4, 3)))


def _serial_bn_without_state(jit):
    model = nn.serial(nn.Relu(), nn.BatchNorm())
    params = ((), {"scale": jnp.ones(3), "offset": jnp.zeros(3)})
    f = (lambda p, x: model.apply(p, x, train=True)) if not jit else jax.jit(lambda p, x: model.apply(p, x, train=True))
    return f(params, jnp.ones((4, 3)))


def _dropout_without_key(jit):
    f = lambda x: nn.Dropout(0.5).apply((), x, train=True)  # noqa: E731
    return (jax.jit(f) if jit else f)(jnp.ones((4, 3)))


def _serial_dropout_without_key(jit):
    model = nn.serial(nn.Relu(), nn.Dropout(0.3))
    f = lambda x: model.apply(((), ()), x, train=True)  # noqa: E731
    return (jax.jit(f) if jit else f)(jnp.ones((4, 3)))


def _serial_params_wrong_length(jit):
    model = nn.serial(nn.Dense(3), nn.Relu())
    f = lambda p, x: model.apply(p, x)  # noqa: E731
    return (jax.jit(f) if jit else f)(({"W": jnp.ones((2, 3)), "b": jnp.zeros(3)},), jnp.ones((1, 2)))


def _parallel_wrong_arity(jit):
    model = nn.parallel(nn.Relu(), nn.Relu())
    f = lambda x: model.apply(((), ()), x)  # noqa: E731
    return (jax.jit(f) if jit else f)((jnp.ones((2, 3)),))


APPLY_ERRORS = [
    ("batchnorm-no-state", _bn_apply_without_state, r"BatchNorm needs its state .*pass state="),
    ("serial-batchnorm-no-state", _serial_bn_without_state, r"BatchNorm needs its state"),
    ("dropout-no-key", _dropout_without_key, r"Dropout in training mode needs a PRNG key.*key=key, train=True"),
    ("serial-dropout-no-key", _serial_dropout_without_key, r"Dropout in training mode needs a PRNG key"),
    ("serial-params-length", _serial_params_wrong_length,
     r"serial: params must be a tuple with one entry per layer \(2\).*length 1"),
    ("parallel-x-length", _parallel_wrong_arity,
     r"parallel: x must be a tuple with one entry per layer \(2\).*length 1"),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("fn, match", [c[1:] for c in APPLY_ERRORS], ids=[c[0] for c in APPLY_ERRORS])
def test_apply_structure_errors(fn, match, jit):
    with pytest.raises(nn.LayerError, match=match) as excinfo:
        fn(jit)
    check_message(excinfo)


def test_messages_name_the_layer_position_in_serial():
    model = nn.serial(nn.Dense(4), nn.Relu(), nn.Dense(4), nn.Conv(2, (3,)))
    with pytest.raises(nn.LayerError) as excinfo:
        model.output_spec(spec(2, 5))
    assert re.match(r"serial layer 3 \(Conv\(2, \(3,\)\)\): ", str(excinfo.value))
