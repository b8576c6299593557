"""kernel_regimes' init diagnostic: the relative Frobenius distance against NumPy, and the empirical
NTK at initialisation of both architectures approaching the analytic NTK of the same model as the
width grows (the analytic kernel is width-independent; the empirical one's fluctuations are
O(width^-1/2))."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import kernels, runner

REPO = pathlib.Path(__file__).resolve().parents[2]
study = runner.load_experiment("kernel_regimes", [REPO]).module


def test_relative_change_is_the_relative_frobenius_distance():
    a, b = np.random.default_rng(0).normal(size=(2, 5, 5))
    assert float(study.relative_change(a, b)) == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-5)


@pytest.mark.parametrize("architecture, widths", [("mlp", (16, 1024)), ("cnn", (4, 256))])
def test_init_empirical_ntk_approaches_the_analytic_ntk_with_width(architecture, widths):
    errors = []
    for width in widths:
        config = study.Config(architecture=architecture, width=width, depth=1, probe=6)
        x = study.probe_set(config)[0]
        net = study.model(config)
        analytic = kernels.analytic(net, x, get="ntk")
        per_seed = [float(study.relative_change(analytic, kernels.empirical(
            net.apply, net.init(jax.random.key(seed), x[:1])[0], x))) for seed in range(3)]
        errors.append(np.mean(per_seed))
    assert errors[1] < errors[0] / 2, errors  # 64x the width: about 1/8 of the error in expectation
