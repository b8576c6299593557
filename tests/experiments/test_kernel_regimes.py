"""kernel_regimes' own mathematics: the relative Frobenius distance against NumPy; the CNN's first
layer (a Dense layer on image_patches) against nn.Conv on the images (the same outputs and the same
empirical NTK for the same filter); NTKDraw against the network's own init; and the empirical NTK
at initialisation of both architectures approaching the analytic NTK of the same model as the width
grows (the analytic kernel is width-independent; the empirical one's fluctuations are O(width^-1/2))."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import kernels, nn, runner

REPO = pathlib.Path(__file__).resolve().parents[2]
study = runner.load_experiment("kernel_regimes", [REPO]).module


def test_relative_change_is_the_relative_frobenius_distance():
    a, b = np.random.default_rng(0).normal(size=(2, 5, 5))
    assert float(study.relative_change(a, b)) == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-5)


def test_image_patches_are_the_zero_padded_3x3_neighbourhoods():
    images = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    patches = study.image_patches(images)
    assert patches.shape == (2, 4, 5, 9)
    for h, w, di, dj in [(0, 0, 0, 0), (0, 0, 1, 1), (3, 4, 2, 2), (2, 1, 0, 2), (1, 3, 2, 0)]:
        inside = 0 <= h + di - 1 < 4 and 0 <= w + dj - 1 < 5
        expected = images[:, h + di - 1, w + dj - 1] if inside else 0.0
        np.testing.assert_array_equal(patches[:, h, w, 3 * di + dj], expected)


def test_the_cnn_is_a_3x3_same_convolution_network():
    """The study's CNN on patches and the same network written with nn.Conv on the images, with the
    conv filter (3, 3, 1, C) reshaped to the Dense layer's (9, C), give the same outputs: the same
    function of the same parameters up to a reshape, so also the same NTK scaling (fan-in 9) and
    the same empirical NTK."""
    config = study.Config(architecture="cnn", width=6, depth=1, probe=4)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 16, size=(4, 8, 8, 1)).astype(np.float32)
    ntk = dict(parameterization="ntk", W_std=np.sqrt(2.0), b_std=0.1)
    conv = nn.serial(nn.Conv(6, (3, 3), padding="SAME", **ntk), nn.Relu(), nn.AvgPool((2, 2)), nn.Flatten(),
                     nn.Dense(10, **ntk))
    shapes = jax.eval_shape(conv.init, jax.random.key(0), images[:1])[0]  # (no PRNG program to compile)
    conv_params = jax.tree.map(lambda t: rng.normal(size=t.shape).astype(np.float32), shapes)
    params = ({"W": conv_params[0]["W"].reshape(9, 6), "b": conv_params[0]["b"]}, *conv_params[1:])
    net, patches = study.model(config), study.image_patches(images[..., 0])
    outputs = jax.jit(conv.apply)(conv_params, images)
    assert np.abs(outputs).max() > 0.1
    np.testing.assert_allclose(jax.jit(net.apply)(params, patches), outputs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_ntk_draw_gives_the_networks_own_initial_parameters(architecture):
    """NTKDraw (all layers' keys and draws at once) against the network's own init, layer by
    layer (depth 2: the CNN's second layer is an nn.Conv)."""
    net = study.model(study.Config(architecture=architecture, width=8, depth=2, probe=4))
    x = study._inputs(architecture, np.zeros((1, 64)))
    expected = jax.jit(lambda k: net.init(k, x))(jax.random.key(7))
    drawn = jax.jit(lambda k: study.NTKDraw(net).init(k, x))(jax.random.key(7))
    assert jax.tree.structure(drawn) == jax.tree.structure(expected)
    jax.tree.map(np.testing.assert_array_equal, drawn, expected)


@pytest.mark.parametrize("architecture, widths", [("mlp", (16, 1024)), ("cnn", (4, 256))])
def test_init_empirical_ntk_approaches_the_analytic_ntk_with_width(architecture, widths):
    """Over 4 draws of the initial parameters (under the NTK parameterization every trainable
    entry is standard normal: jaxlearn.nn.parameterization; drawn here in NumPy)."""
    rng, errors = np.random.default_rng(0), []
    for width in widths:
        config = study.Config(architecture=architecture, width=width, depth=1, probe=6)
        arrays, net = study.data(config), study.model(config)
        shapes = jax.eval_shape(net.init, jax.random.key(0), arrays.input_spec)[0]
        draws = jax.tree.map(lambda t: rng.normal(size=(4, *t.shape)).astype(np.float32), shapes)

        def error(params):
            return study.relative_change(arrays.analytic_ntk, kernels.empirical(net.apply, params, arrays.probe_x))

        errors.append(np.mean(jax.jit(jax.vmap(error))(draws)))
    assert errors[1] < errors[0] / 2, errors  # 64x the width: about 1/8 of the error in expectation
