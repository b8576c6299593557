"""Programs written for neural-tangents 0.6.5, run on ``jaxlearn.compat.neural_tangents``, against the
values neural-tangents itself computed (``nt_references.npz``, written by ``make_nt_references.py``
in a separate environment with neural-tangents installed; see its docstring).

The programs are the very functions of that script, called with the compat ``nt`` and ``stax``
instead of neural-tangents' (the one import a port changes); their random draws (inputs, targets,
parameters) are replayed from the file, since JAX 0.4.23 draws other numbers from the same keys.
Exact computations agree to a relative error (``max |ours − theirs| / max |theirs|`` per array) of
1e-9 in float64 (the diagonal neural-tangents rounds aside, ``ROUNDED_DIAGONAL``); the Monte-Carlo
kernels statistically.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.compat import neural_tangents as nt
from jaxlearn.compat.neural_tangents import stax
from tests.compat import make_nt_references as programs

F64 = pytest.mark.float64

REFS = np.load(Path(__file__).with_name("nt_references.npz"))

# Every exact result (kernels, predictions, the ODE of predict.gradient_descent, which both libraries
# integrate with jax.experimental.ode.odeint) agrees to this relative error.
RTOL = 1e-9
# The README's 32×32 WideResNet compiles and runs for tens of seconds (its kernel holds every pair
# of the 32×32 positions): marked slow, so `make test-fast` leaves it out.
SLOW = {programs.program_readme_wide_resnet}
EXACT_PROGRAMS = [pytest.param(p, marks=[pytest.mark.slow] if p in SLOW else [], id=p.__name__)
                  for p in programs.PROGRAMS if p is not programs.program_monte_carlo]


class Replay:
    """The recorder of the tests: draws come from the file; results are collected in ``out``."""

    def __init__(self):
        self.out = {}
        self.drawn = set()

    def draw(self, name, thunk):
        ref = REFS[name]
        shape = jax.eval_shape(thunk).shape  # not drawn: only checked
        assert shape == ref.shape, f"{name}: draws shape {shape}, stored {ref.shape}"
        self.drawn.add(name)
        return jnp.asarray(ref)

    def params(self, name, thunk):
        leaves, treedef = jax.tree_util.tree_flatten(jax.eval_shape(thunk))
        stored = [jnp.asarray(REFS[f"{name}/params/{i}"]) for i in range(len(leaves))]
        for i, (ours, ref) in enumerate(zip(leaves, stored)):
            assert ours.shape == ref.shape, f"{name}/params/{i}: shape {ours.shape}, stored {ref.shape}"
        assert f"{name}/params/{len(leaves)}" not in REFS.files, f"{name}: fewer parameter arrays than stored"
        self.drawn.update(f"{name}/params/{i}" for i in range(len(leaves)))
        return treedef.unflatten(stored)


def relative_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    return float(np.max(np.abs(ours - ref)) / (scale if scale > 0 else 1.0)) if ref.size else 0.0


# Kernels of x1 against itself whose diagonal neural-tangents rounds: its arc-cosine at ρ → 1 turns
# rounding into an error of order √eps (1e-9 here); jaxlearn's is exact there
# (test_self_kernel_diagonal_is_exact). Their off-diagonal entries are held to 1e-9.
ROUNDED_DIAGONAL = {"mlp/self_ntk": 1e-8}


def run(program):
    data = Replay()
    program(nt, stax, data)
    return data


@F64
@pytest.mark.parametrize("program", EXACT_PROGRAMS)
def test_program_reproduces_neural_tangents(program):
    data = run(program)
    assert data.out, "the program recorded no result"
    errors = {}
    for key, value in data.out.items():
        ref = REFS[key]
        assert np.shape(value) == ref.shape, f"{key}: shape {np.shape(value)}, neural-tangents {ref.shape}"
        if key in ROUNDED_DIAGONAL:
            diagonal = np.eye(ref.shape[0], dtype=bool)
            assert relative_error(np.where(diagonal, value, ref), ref) <= ROUNDED_DIAGONAL[key], key
            value = np.where(diagonal, ref, value)
        errors[key] = relative_error(value, ref)
    bad = {k: e for k, e in errors.items() if not e <= RTOL}
    assert not bad, f"relative errors above tolerance: {bad}"


def test_monte_carlo_program_agrees_statistically():
    """64 initialisations of a width-256 ReLU MLP with 16 outputs (traced): both libraries' estimates
    lie within a few standard errors of the analytic kernel (and so of each other); the NNGP's
    standard error is about 1/√(64·16) ≈ 3% of its scale, the NTK's (which concentrates with width)
    smaller. Float32: the check is statistical."""
    data = run(programs.program_monte_carlo)
    for kind, tol in (("nngp", 0.15), ("ntk", 0.1)):
        truth = REFS[f"mc/analytic_{kind}"]
        np.testing.assert_allclose(data.out[f"mc/analytic_{kind}"], truth, rtol=1e-5)
        assert relative_error(data.out[f"mc/{kind}"], truth) < tol, kind
        assert relative_error(REFS[f"mc/{kind}"], truth) < tol, kind


@F64
def test_self_kernel_diagonal_is_exact():
    """The diagonal of the README MLP's NTK in closed form: on it ReLU halves the variance and its
    derivative factor is 1/2 (``q ← q/2``, ``Θ ← Θ/2``), Dense adds ``K`` (NTK parameterization)."""
    _, _, kernel_fn = stax.serial(stax.Dense(512), stax.Relu(), stax.Dense(512), stax.Relu(), stax.Dense(1))
    x = REFS["mlp/x1"]
    q = (x ** 2).sum(1) / x.shape[1]
    k, theta = q, q
    for _ in range(2):
        k, theta = k / 2, theta / 2
        theta = k + theta
    np.testing.assert_allclose(np.diag(kernel_fn(jnp.asarray(x), None, "ntk")), theta, rtol=1e-14)
