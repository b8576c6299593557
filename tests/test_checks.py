"""jaxlearn._checks: the shared argument checks (predicates, messages, the "did you mean" hint)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import _checks as C


@pytest.mark.parametrize("value, is_int, is_real", [
    (3, True, True), (np.int64(3), True, True), (np.uint8(3), True, True),
    (2.5, False, True), (np.float32(2.5), False, True),
    (True, False, False), (np.bool_(True), False, False),
    ("3", False, False), (None, False, False), (jnp.asarray(3), False, False), (np.ones(2), False, False),
])
def test_int_and_real_predicates_reject_bools(value, is_int, is_real):
    assert C.is_int(value) is is_int
    assert C.is_real(value) is is_real


def test_traced_and_concrete():
    assert not C.is_traced(1.0) and not C.is_traced({"a": jnp.ones(2), "b": [np.zeros(1)]})
    np.testing.assert_array_equal(C.concrete([1, 2]), [1, 2])
    seen = []

    def f(x):
        seen.append((C.is_traced(x), C.is_traced([1.0, x]), C.concrete(x)))
        return x

    jax.jit(f)(1.0)
    jax.vmap(f)(jnp.ones(2))
    jax.grad(f)(1.0)
    assert seen == [(True, True, None)] * 3


@pytest.mark.parametrize("call, message", [
    (lambda: C.check_int(0, "n", minimum=1), "n: expected a positive int, got 0"),
    (lambda: C.check_int(True, "n", minimum=1, where="f"), "f: n must be a positive int, got True"),
    (lambda: C.check_int(2.0, "n", minimum=0, form="must"), "n must be an int >= 0, got 2.0"),
    (lambda: C.check_int(9, "bits", minimum=1, maximum=8, where="g"), "g: bits must be an int in [1, 8], got 9"),
    (lambda: C.check_int(0, "k", minimum=1, optional=True), "k: expected a positive int or None, got 0"),
    (lambda: C.check_int(1, "p", minimum=2, where="h", noun="integer"), "h: p must be an integer >= 2, got 1"),
    (lambda: C.check_int(0, "n", minimum=1, form="must", noun="integer"), "n must be an integer >= 1, got 0"),
    (lambda: C.check_int("a", "x", expected="a size"), "x: expected a size, got 'a'"),
    (lambda: C.check_real(0.0, "s", minimum=0, open_minimum=True), "s: expected a positive finite number, got 0.0"),
    (lambda: C.check_real(float("inf"), "s", minimum=0), "s: expected a finite number >= 0, got inf"),
    (lambda: C.check_real(1.0, "t", minimum=0, maximum=1, open_maximum=True),
     "t: expected a number in [0, 1), got 1.0"),
    (lambda: C.check_real(True, "t"), "t: expected a finite number, got True"),
    (lambda: C.check_bool(1, "flag", where="f", error=ValueError), "f: flag must be a bool, got 1"),
    (lambda: C.check_choice("bezeir", "kind", ("bezier", "polychain")),
     "kind: expected one of ['bezier', 'polychain'], got 'bezeir' (did you mean 'bezier'?)"),
    (lambda: C.check_choice(np.ones(2), "kind", ("a",)), "kind: expected one of ['a'], got array([1., 1.])"),
])
def test_one_line_messages(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_error_class_and_returned_values():
    class CustomError(ValueError):
        pass

    with pytest.raises(CustomError, match="^w: n must be a positive int, got -1$"):
        C.check_int(-1, "n", minimum=1, where="w", error=CustomError)
    with pytest.raises(TypeError):
        C.check_bool("yes", "flag")
    assert C.check_int(np.int64(3), "n") == 3 and type(C.check_int(np.int64(3), "n")) is int
    assert C.check_int(None, "n", optional=True) is None
    assert C.check_real(np.float32(0.5), "x", minimum=0, maximum=1) == 0.5
    assert C.check_real(float("inf"), "x", finite=False) == float("inf")
    assert C.check_bool(np.bool_(False), "flag") is False
    assert C.check_choice("a", "x", ["a", "b"]) == "a"


def test_did_you_mean():
    assert C.did_you_mean("rleu", ["relu", "tanh"]) == " (did you mean 'relu'?)"
    assert C.did_you_mean("ReLU", ["relu", "tanh"]) == " (did you mean 'relu'?)"  # case is ignored
    assert C.did_you_mean("w_sdt", ["W_std"]) == " (did you mean 'W_std'?)"  # and the option keeps its own
    assert C.did_you_mean("nme", ["name"], prefix="optim.") == " (did you mean 'optim.name'?)"
    assert C.did_you_mean("digts", ["digits", "digit", "mnist1d"], n=3) == " (did you mean 'digits' or 'digit'?)"
    assert C.did_you_mean("zzz", ["relu"]) == ""
    assert C.did_you_mean(3, [1, 2, 3]) == " (did you mean '3'?)"
