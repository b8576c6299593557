"""Writes ``nt_references.npz``: float64 values computed by neural-tangents 0.6.5 itself, the ground
truth of ``tests/compat/test_nt_references.py``.

Run it once, in a separate Python 3.11 environment with exactly these pins (each one is needed:
unpinned, neural-tangents fails at import on current JAX or TensorFlow)::

    /usr/bin/python3.11 -m venv /tmp/nt-venv
    /tmp/nt-venv/bin/pip install neural-tangents==0.6.5 jax==0.4.23 jaxlib==0.4.23 tensorflow==2.15.1 \\
        tf2jax==0.3.5 "numpy<2" "scipy<1.13"
    /tmp/nt-venv/bin/python tests/compat/make_nt_references.py   # from the repository root

It never runs in the test suite. Each ``program_*`` below is code written against neural-tangents'
API (the README's examples first), a function of the modules ``nt`` and ``stax`` and of a recorder
``data``; the tests run the same functions with ``nt``, ``stax`` from
``jaxlearn.compat.neural_tangents`` (the one import a port changes). Everything a program draws at
random (inputs, targets, parameters) goes through ``data.draw``/``data.params`` and is stored
(``<program>/x1``, ``<program>/params/<i>``: the leaves of ``jax.tree_util.tree_leaves``), because
JAX 0.4.23 and today's JAX draw different numbers from the same key; the tests feed the stored draws
in. Results go to ``data.out[<program>/<name>]``, which the tests compare.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import random  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nt_references.npz")


class Record:
    """The recorder of the reference run: draws (thunks, so that a replay need not draw) are
    computed and stored, like results."""

    def __init__(self):
        self.out = {}

    def draw(self, name, thunk):
        value = self.out[name] = thunk()
        return value

    def params(self, name, thunk):
        params = thunk()
        for i, leaf in enumerate(jax.tree_util.tree_leaves(params)):
            self.out[f"{name}/params/{i}"] = leaf
        return params


# -- the README's examples ----------------------------------------------------------------------


def program_readme_mlp(nt, stax, data):
    """README: the kernel of a 3-layer ReLU MLP, each `get`, a kernel fed back to kernel_fn, and
    inference with gradient_descent_mse_ensemble."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512), stax.Relu(),
        stax.Dense(512), stax.Relu(),
        stax.Dense(1)
    )

    key1, key2 = random.split(random.PRNGKey(1))
    x1 = data.draw("mlp/x1", lambda: random.normal(key1, (10, 100)))
    x2 = data.draw("mlp/x2", lambda: random.normal(key2, (20, 100)))

    kernel = kernel_fn(x1, x2, 'nngp')
    data.out["mlp/nngp"] = kernel
    nngp = kernel_fn(x1, x2, 'nngp')  # (10, 20) jnp.ndarray
    ntk = kernel_fn(x1, x2, 'ntk')  # (10, 20) jnp.ndarray
    both = kernel_fn(x1, x2, ('nngp', 'ntk'))
    assert (both.nngp == nngp).all() and (both.ntk == ntk).all()
    nngp, ntk = kernel_fn(x1, x2, ('nngp', 'ntk'))
    data.out["mlp/ntk"] = ntk

    kernel = kernel_fn(x1, x2)
    data.out["mlp/cov1"], data.out["mlp/cov2"] = kernel.cov1, kernel.cov2
    kernel = kernel_fn(kernel)
    data.out["mlp/composed_nngp"], data.out["mlp/composed_ntk"] = kernel.nngp, kernel.ntk
    data.out["mlp/self_ntk"] = kernel_fn(x1, None, 'ntk')

    x_train, x_test = x1, x2
    y_train = data.draw("mlp/y_train", lambda: random.uniform(key1, shape=(10, 1)))  # training targets

    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train,
                                                          y_train)

    y_test_nngp = predict_fn(x_test=x_test, get='nngp')
    y_test_ntk = predict_fn(x_test=x_test, get='ntk')
    both = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
    assert (both.nngp == y_test_nngp).all() and (both.ntk == y_test_ntk).all()
    y_test_nngp, y_test_ntk = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
    data.out["mlp/y_test_nngp"], data.out["mlp/y_test_ntk"] = y_test_nngp, y_test_ntk

    mean, cov = predict_fn(x_test=x_test, get='nngp', compute_cov=True)
    data.out["mlp/nngp_mean"], data.out["mlp/nngp_cov"] = mean, cov
    mean, cov = predict_fn(x_test=x_test, get='ntk', compute_cov=True)
    data.out["mlp/ntk_mean"], data.out["mlp/ntk_cov"] = mean, cov
    t = jnp.array([0.5, 5., 50.])
    both = predict_fn(t=t, x_test=x_test, get=('nngp', 'ntk'), compute_cov=True)
    data.out["mlp/t_nngp_mean"], data.out["mlp/t_nngp_cov"] = both.nngp
    data.out["mlp/t_ntk_mean"], data.out["mlp/t_ntk_cov"] = both.ntk
    data.out["mlp/train_ntk_mean"] = predict_fn(t=3., get='ntk')


def readme_wide_resnet(stax):
    """The README's WideResnet definitions, verbatim; returns ``(WideResnet, WideResnetGroup)``."""

    def WideResnetBlock(channels, strides=(1, 1), channel_mismatch=False):  # noqa: N802
      Main = stax.serial(
          stax.Relu(), stax.Conv(channels, (3, 3), strides, padding='SAME'),
          stax.Relu(), stax.Conv(channels, (3, 3), padding='SAME'))
      Shortcut = stax.Identity() if not channel_mismatch else stax.Conv(
          channels, (3, 3), strides, padding='SAME')
      return stax.serial(stax.FanOut(2),
                         stax.parallel(Main, Shortcut),
                         stax.FanInSum())

    def WideResnetGroup(n, channels, strides=(1, 1)):  # noqa: N802
      blocks = []
      blocks += [WideResnetBlock(channels, strides, channel_mismatch=True)]
      for _ in range(n - 1):
        blocks += [WideResnetBlock(channels, (1, 1))]
      return stax.serial(*blocks)

    def WideResnet(block_size, k, num_classes):  # noqa: N802
      return stax.serial(
          stax.Conv(16, (3, 3), padding='SAME'),
          WideResnetGroup(block_size, int(16 * k)),
          WideResnetGroup(block_size, int(32 * k), (2, 2)),
          WideResnetGroup(block_size, int(64 * k), (2, 2)),
          stax.AvgPool((8, 8)),
          stax.Flatten(),
          stax.Dense(num_classes, 1., 0.))

    return WideResnet, WideResnetGroup


def program_readme_wide_resnet(nt, stax, data):
    """README: the infinite WideResNet itself, on two 32×32 images (its AvgPool((8, 8)) needs 32×32
    inputs; the full 32⁴ spatial covariance makes this the slowest program)."""
    WideResnet, _ = readme_wide_resnet(stax)
    init_fn, apply_fn, kernel_fn = WideResnet(block_size=1, k=1, num_classes=10)
    x = data.draw("wrn/x", lambda: random.normal(random.PRNGKey(2), (2, 32, 32, 3)))
    both = kernel_fn(x, None, ('nngp', 'ntk'))
    data.out["wrn/nngp"], data.out["wrn/ntk"] = both.nngp, both.ntk


def program_wide_resnet_small(nt, stax, data):
    """The README's WideResNet blocks and groups in a smaller net on small (8×8) images, two batches."""
    _, WideResnetGroup = readme_wide_resnet(stax)
    _, _, kernel_fn = stax.serial(
        stax.Conv(16, (3, 3), padding='SAME'),
        WideResnetGroup(1, 16),
        WideResnetGroup(1, 32, (2, 2)),
        stax.AvgPool((2, 2), (2, 2)),
        stax.Flatten(),
        stax.Dense(10, 1., 0.))
    x1 = data.draw("wrn_small/x1", lambda: random.normal(random.PRNGKey(3), (3, 8, 8, 3)))
    x2 = data.draw("wrn_small/x2", lambda: random.normal(random.PRNGKey(4), (2, 8, 8, 3)))
    both = kernel_fn(x1, x2, ('nngp', 'ntk'))
    data.out["wrn_small/nngp"], data.out["wrn_small/ntk"] = both.nngp, both.ntk


# -- more layers and options ---------------------------------------------------------------------


def _erf_nngp(cov12, var1, var2):
    prod = (1 + 2 * var1) * (1 + 2 * var2)
    return jnp.arcsin(2 * cov12 / jnp.sqrt(prod)) * 2 / jnp.pi


def layer_zoo(stax):
    """Networks covering each supported layer and option, with their input shapes."""
    return {
        "standard_mlp": (stax.serial(
            stax.Dense(64, W_std=1.3, b_std=0.2, parameterization='standard'), stax.Erf(),
            stax.Dense(32, W_std=0.9, b_std=0.1, parameterization='standard'), stax.Gelu(),
            stax.Dense(3, parameterization='standard')), (5, 6)),
        "activations": (stax.serial(
            stax.Dense(8, 1.5, 0.1), stax.LeakyRelu(0.2), stax.Dense(8, 1.2, 0.05), stax.ABRelu(-0.5, 1.5),
            stax.Dense(8), stax.Abs(), stax.Dense(8, 1.1, 0.3), stax.Sin(1.2, 0.8, 0.3),
            stax.Dense(8), stax.Cos(0.7, 1.1, 0.2), stax.Dense(8, 1.4), stax.Sigmoid_like(),
            stax.Dense(8, 1.3, 0.2), stax.Erf(0.5, 2., 0.1), stax.Dense(8), stax.Gelu(approximate=True),
            stax.Dense(8), stax.Elementwise(jax.scipy.special.erf, _erf_nngp), stax.Dense(8, 1.2, 0.1),
            stax.Sign(), stax.Dense(2)), (4, 5)),
        "cnn": (stax.serial(
            stax.Conv(8, (3, 3), (2, 1), 'SAME', W_std=1.4, b_std=0.1), stax.Relu(),
            stax.Conv(8, (2, 3), padding='VALID', W_std=1.2, parameterization='standard', b_std=0.3),
            stax.Erf(), stax.AvgPool((2, 2), (1, 2), 'SAME'),
            stax.Conv(8, (3, 3), padding='SAME'), stax.LayerNorm(axis=(1, 2, 3)),
            stax.AvgPool((2, 2), padding='SAME', normalize_edges=True), stax.Relu(),
            stax.GlobalAvgPool(), stax.Dense(2, 1.1, 0.2)), (3, 6, 5, 2)),
        "cnn1d_concat": (stax.serial(
            stax.Conv(4, (3,), padding='SAME', b_std=0.1), stax.LayerNorm(), stax.Relu(),
            stax.FanOut(3),
            stax.parallel(stax.Conv(4, (3,), padding='SAME'), stax.Conv(4, (2,), padding='SAME', W_std=1.5),
                          stax.serial(stax.Conv(4, (1,)), stax.Relu(), stax.Conv(4, (1,), b_std=0.5))),
            stax.FanInConcat(), stax.Flatten(), stax.Dense(1, b_std=0.3)),
            (3, 7, 2)),
        "spatial_output": (stax.serial(stax.Conv(4, (2, 2), padding='SAME'), stax.Relu(),
                                       stax.Conv(4, (3, 3), padding='SAME', b_std=0.2)), (2, 3, 4, 2)),
        "dropout_test": (stax.serial(stax.Dense(16), stax.Relu(), stax.Dropout(0.7, mode='test'), stax.Dense(1)),
                         (3, 4)),
        "repeat": (stax.serial(stax.Dense(8, b_std=0.1),
                               stax.repeat(stax.serial(stax.Relu(), stax.Dense(8, 1.4, 0.05)), 3)), (4, 3)),
    }


def program_layer_zoo(nt, stax, data):
    for i, (name, ((init_fn, apply_fn, kernel_fn), shape)) in enumerate(layer_zoo(stax).items()):
        k1, k2, k3 = random.split(random.PRNGKey(10 + i), 3)
        x1 = data.draw(f"{name}/x1", lambda: random.normal(k1, shape))
        x2 = data.draw(f"{name}/x2", lambda: random.normal(k2, (shape[0] + 1,) + shape[1:]))
        kernel = kernel_fn(x1, x2)
        data.out[f"{name}/nngp"], data.out[f"{name}/ntk"] = kernel.nngp, kernel.ntk
        data.out[f"{name}/cov1"], data.out[f"{name}/cov2"] = kernel.cov1, kernel.cov2
        params = data.params(name, lambda: init_fn(k3, x1.shape)[1])
        data.out[f"{name}/apply"] = apply_fn(params, x1, rng=k3)


# -- predictions ---------------------------------------------------------------------------------


def program_predict(nt, stax, data):
    # Erf, not ReLU: neural-tangents' ReLU kernel rounds its own diagonal to ~√eps, which the solves
    # below would amplify; Erf's formula is exact there in both libraries.
    _, _, kernel_fn = stax.serial(stax.Dense(64, 1.5, 0.1), stax.Erf(), stax.Dense(3, 1.5, 0.1))
    k1, k2, k3, k4, k5 = random.split(random.PRNGKey(20), 5)
    x_train = data.draw("predict/x_train", lambda: random.normal(k1, (8, 4)))
    x_test = data.draw("predict/x_test", lambda: random.normal(k2, (5, 4)))
    y_train = data.draw("predict/y_train", lambda: random.normal(k3, (8, 3)))
    fx_train_0 = data.draw("predict/fx_train_0", lambda: 0.1 * random.normal(k4, (8, 3)))
    fx_test_0 = data.draw("predict/fx_test_0", lambda: 0.1 * random.normal(k5, (5, 3)))
    k_dd = kernel_fn(x_train, None, ('nngp', 'ntk'))
    k_td = kernel_fn(x_test, x_train, ('nngp', 'ntk'))
    k_tt = kernel_fn(x_test, None, ('nngp', 'ntk'))

    predict_fn = nt.predict.gradient_descent_mse(k_dd.ntk, y_train, learning_rate=0.5, diag_reg=1e-3)
    t = jnp.array([1., 10., 100.])
    data.out["predict/gd_train"], data.out["predict/gd_test"] = predict_fn(t, fx_train_0, fx_test_0, k_td.ntk)
    data.out["predict/gd_train_only"] = predict_fn(t, fx_train_0)
    data.out["predict/gd_test_only"] = predict_fn(t, None, fx_test_0, k_td.ntk)
    data.out["predict/gd_inf_test"] = predict_fn(None, fx_train_0, fx_test_0, k_td.ntk)[1]

    gp = nt.predict.gp_inference(k_dd, y_train, diag_reg=1e-4)
    for g in ('nngp', 'ntk', 'ntkgp'):
        mean, cov = gp(g, k_td, k_tt)
        data.out[f"predict/gp_{g}_mean"], data.out[f"predict/gp_{g}_cov"] = mean, cov
    data.out["predict/gp_both_nngp"], data.out["predict/gp_both_ntk"] = gp(None, k_td)

    data.out["predict/max_lr"] = nt.predict.max_learning_rate(k_dd.ntk)
    data.out["predict/max_lr_momentum"] = nt.predict.max_learning_rate(k_dd.ntk, y_train.size, momentum=0.9)

    loss = lambda fx, y_hat: 0.5 * jnp.mean((fx - y_hat) ** 2)  # noqa: E731
    gd = nt.predict.gradient_descent(loss, k_dd.ntk, y_train, learning_rate=0.5)
    data.out["predict/ode_train"], data.out["predict/ode_test"] = gd(t, fx_train_0, fx_test_0, k_td.ntk)
    xent = lambda fx, y_hat: -jnp.mean(jax.nn.log_softmax(fx) * jax.nn.softmax(y_hat))  # noqa: E731
    gd = nt.predict.gradient_descent(xent, k_dd.ntk, y_train, learning_rate=2., momentum=0.9)
    data.out["predict/ode_momentum_train"], data.out["predict/ode_momentum_test"] = gd(
        t, fx_train_0, fx_test_0, k_td.ntk)


# -- empirical kernels, linearization, batching, Monte Carlo ------------------------------------


def program_readme_empirical(nt, stax, data):
    """README: the empirical NTK of a linear model, its GD-MSE predictions, and linearize."""
    def apply_fn(params, x):
      W, b = params
      return jnp.dot(x, W) + b

    W_0 = jnp.array([[1., 0.], [0., 1.]])
    b_0 = jnp.zeros((2,))
    params = (W_0, b_0)

    key1, key2 = random.split(random.PRNGKey(1), 2)
    x_train = data.draw("linear/x_train", lambda: random.normal(key1, (3, 2)))
    x_test = data.draw("linear/x_test", lambda: random.normal(key2, (4, 2)))
    y_train = data.draw("linear/y_train", lambda: random.uniform(key1, shape=(3, 2)))

    kernel_fn = nt.empirical_kernel_fn(apply_fn)
    ntk_train_train = kernel_fn(x_train, None, 'ntk', params)
    ntk_test_train = kernel_fn(x_test, x_train, 'ntk', params)
    mse_predictor = nt.predict.gradient_descent_mse(ntk_train_train, y_train)

    t = 5.
    y_train_0 = apply_fn(params, x_train)
    y_test_0 = apply_fn(params, x_test)
    y_train_t, y_test_t = mse_predictor(t, y_train_0, y_test_0, ntk_test_train)
    data.out["linear/y_train_t"], data.out["linear/y_test_t"] = y_train_t, y_test_t
    data.out["linear/ntk_test_train"] = ntk_test_train

    apply_fn_lin = nt.linearize(apply_fn, (W_0, b_0))
    W = jnp.array([[1.5, 0.2], [0.1, 0.9]])
    b = b_0 + 0.2
    x = jnp.array([[0.3, 0.2], [0.4, 0.5], [1.2, 0.2]])
    data.out["linear/logits"] = apply_fn_lin((W, b), x)  # (3, 2) jnp.ndarray


def program_empirical(nt, stax, data):
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Conv(6, (2,), padding='SAME', b_std=0.1), stax.Relu(), stax.Flatten(),
        stax.Dense(16, 1.3, 0.1), stax.Erf(), stax.Dense(3, 1.2, 0.2))
    k1, k2, k3, k4 = random.split(random.PRNGKey(30), 4)
    x1 = data.draw("empirical/x1", lambda: random.normal(k1, (4, 5, 2)))
    x2 = data.draw("empirical/x2", lambda: random.normal(k2, (6, 5, 2)))
    params = data.params("empirical", lambda: init_fn(k3, x1.shape)[1])
    params_1 = data.params("empirical_moved", lambda: jax.tree_util.tree_map(
        lambda a, b: a + 0.05 * b, params, init_fn(k4, x1.shape)[1]))
    for impl in range(4):
        ntk_fn = nt.empirical_ntk_fn(apply_fn, implementation=impl)
        data.out[f"empirical/ntk_{impl}"] = ntk_fn(x1, x2, params)
        ntk_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), diagonal_axes=(), vmap_axes=0, implementation=impl)
        data.out[f"empirical/ntk_full_{impl}"] = ntk_fn(x1, x2, params)
    ntk_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), diagonal_axes=(0,),
                                 implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES)
    data.out["empirical/ntk_diag_batch"] = ntk_fn(x1, None, params)
    ntk_fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), diagonal_axes=(-1,))
    data.out["empirical/ntk_diag_out"] = ntk_fn(x1, x2, params)
    data.out["empirical/nngp"] = nt.empirical_nngp_fn(apply_fn)(x1, x2, params)
    data.out["empirical/nngp_full"] = nt.empirical_nngp_fn(apply_fn, trace_axes=())(x1, x2, params)
    both = nt.empirical_kernel_fn(apply_fn, implementation=nt.NtkImplementation.NTK_VECTOR_PRODUCTS)(
        x1, x2, None, params)
    data.out["empirical/both_nngp"], data.out["empirical/both_ntk"] = both.nngp, both.ntk

    data.out["empirical/lin"] = nt.linearize(apply_fn, params)(params_1, x1)
    for degree in (1, 2, 3):
        data.out[f"empirical/taylor_{degree}"] = nt.taylor_expand(apply_fn, params, degree)(params_1, x1)

    batched = nt.batch(kernel_fn, batch_size=2, device_count=2)
    both = batched(x1, x2, ('nngp', 'ntk'))
    data.out["empirical/batched_nngp"], data.out["empirical/batched_ntk"] = both.nngp, both.ntk
    batched = nt.batch(nt.empirical_kernel_fn(apply_fn), batch_size=2, device_count=0, store_on_device=False)
    data.out["empirical/batched_empirical_ntk"] = batched(x1, x2, 'ntk', params)


def program_monte_carlo(nt, stax, data):
    """Monte Carlo kernels: compared statistically (the draws differ between JAX versions)."""
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(256, 1.5, 0.1), stax.Relu(), stax.Dense(16, 1.5, 0.1))
    x1 = data.draw("mc/x1", lambda: random.normal(random.PRNGKey(40), (3, 4)))
    x2 = data.draw("mc/x2", lambda: random.normal(random.PRNGKey(41), (2, 4)))
    mc_fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, random.PRNGKey(42), n_samples=64)
    both = mc_fn(x1, x2, ('nngp', 'ntk'))
    data.out["mc/nngp"], data.out["mc/ntk"] = both.nngp, both.ntk
    data.out["mc/analytic_nngp"], data.out["mc/analytic_ntk"] = kernel_fn(x1, x2, ('nngp', 'ntk'))


PROGRAMS = (program_readme_mlp, program_readme_wide_resnet, program_wide_resnet_small, program_layer_zoo,
            program_predict, program_readme_empirical, program_empirical, program_monte_carlo)


def main():
    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    data = Record()
    for program in PROGRAMS:
        program(nt, stax, data)
        print(f"{program.__name__}: done")
    arrays = {k: np.asarray(v) for k, v in data.out.items()}
    for k, v in arrays.items():
        assert v.dtype != np.float32, k  # float64 everywhere
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(arrays)} arrays, {os.path.getsize(OUT) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
