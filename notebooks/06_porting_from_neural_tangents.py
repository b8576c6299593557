# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/06_porting_from_neural_tangents.ipynb)
#
# # Porting from neural-tangents
#
# [neural-tangents](https://github.com/google/neural-tangents) (Novak et al. 2020, "Neural Tangents:
# fast and easy infinite neural networks in Python") no longer imports on current JAX. Code written for
# it runs on jaxlearn with one import changed: `jaxlearn.compat.neural_tangents` provides `stax`,
# `predict` and the empirical kernels with neural-tangents' signatures, computed by `jaxlearn.nn` and
# `jaxlearn.kernels`. This notebook computes the same kernels both ways and asserts that they are equal.
#
# **Conventions that differ by default**: `stax.Dense` uses the NTK parameterization and no bias
# (`b_std=None`); `nn.Dense` uses the *standard* parameterization and a zero-initialised bias
# (`b_std=0`). Spell both out when porting: `nn.Dense(n, W_std, b_std, parameterization="ntk")`.
# The kernel conventions are neural-tangents' in both: input kernel `x·x'/d`, kernels per output
# unit, GD time in steps of `learning_rate` on `½·mean((f − y)²)`.

# %%
# Installs jaxlearn where it is not importable (Colab, a fresh environment); with the CUDA 12 wheels of
# JAX where a GPU is present (nvidia-smi succeeds). A plain Python statement, so this file also runs as a script.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("jaxlearn") is None:
    try:
        gpu = subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except FileNotFoundError:
        gpu = False
    requirement = f"jaxlearn{'[cuda12]' if gpu else ''} @ git+https://github.com/jaxlearn/jaxlearn"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement], check=True)

# %% tags=["parameters"]
# FAST (set by the test suite): every size shrunk so that the notebook runs in seconds on a CPU.
import os

FAST = os.environ.get("JAXLEARN_NOTEBOOK_FAST", "0") == "1"

# %%
import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import kernels, nn
from jaxlearn.compat import neural_tangents as nt  # was: import neural_tangents as nt
from jaxlearn.compat.neural_tangents import stax  # was: from neural_tangents import stax

WIDTH = 128 if FAST else 2048
N_TRAIN, N_TEST, D = (8, 4, 16) if FAST else (64, 32, 100)
# float32 by default: the two routes evaluate the same layers, so they agree to rounding
RTOL = 1e-9 if jax.config.jax_enable_x64 else 1e-5

# %% [markdown]
# ## The same network, two ways
#
# neural-tangents' README network (a ReLU MLP) in `stax`, and the same network in `jaxlearn.nn`.

# %%
k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
x_train, x_test = jax.random.normal(k1, (N_TRAIN, D)), jax.random.normal(k2, (N_TEST, D))
y_train = jax.random.normal(k3, (N_TRAIN, 1))

init_fn, apply_fn, kernel_fn = stax.serial(
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Relu(),
    stax.Dense(WIDTH, W_std=1.5, b_std=0.05), stax.Relu(),
    stax.Dense(1, W_std=1.5, b_std=0.05),
)


def dense(n):
    return nn.Dense(n, W_std=1.5, b_std=0.05, parameterization="ntk")


model = nn.serial(dense(WIDTH), nn.Relu(), dense(WIDTH), nn.Relu(), dense(1))

# %% [markdown]
# ## Infinite width: `kernel_fn` and `kernels.analytic`
#
# Both are pure functions of the inputs, so both `jit` (neural-tangents' idiom:
# `jax.jit(kernel_fn, static_argnames="get")`): one compiled program each.

# %%
ported = jax.jit(kernel_fn, static_argnames="get")(x_test, x_train, ("nngp", "ntk"))
native = jax.jit(lambda x1, x2: kernels.analytic(model, x1, x2))(x_test, x_train)
np.testing.assert_allclose(ported.nngp, native.nngp, rtol=RTOL, atol=RTOL)
np.testing.assert_allclose(ported.ntk, native.ntk, rtol=RTOL, atol=RTOL)
print("NNGP and NTK equal:", ported.ntk.shape, f"NTK[0, :3] = {np.round(np.asarray(native.ntk[0, :3]), 4)}")

# %% [markdown]
# ## Finite width: `empirical_ntk_fn` and `kernels.empirical`
#
# Parameters drawn by `init_fn` are neural-tangents' pytrees (`Dense`: a tuple `(W, b)` with `b` of
# shape `(1, out)`). Under the NTK parameterization both libraries store the same standard-normal
# `W` and `b`, so the port of the parameters is a change of container: `{"W": W, "b": b[0]}`.

# %%
_, nt_params = jax.jit(init_fn, static_argnums=1)(k4, x_train.shape)
native_params = tuple({"W": p[0], "b": p[1][0]} if p else () for p in nt_params)
np.testing.assert_allclose(jax.jit(apply_fn)(nt_params, x_test), jax.jit(model.apply)(native_params, x_test),
                           rtol=RTOL, atol=RTOL)

ntk_ported = jax.jit(nt.empirical_ntk_fn(apply_fn))(x_test, x_train, nt_params)
ntk_native = jax.jit(lambda p, x1, x2: kernels.empirical(model.apply, p, x1, x2))(native_params, x_test, x_train)
np.testing.assert_allclose(ntk_ported, ntk_native, rtol=10 * RTOL, atol=10 * RTOL)
gap = float(jnp.linalg.norm(ntk_native - native.ntk) / jnp.linalg.norm(native.ntk))
print(f"empirical NTKs equal; at width {WIDTH} they are {gap:.3f} (relative) from the infinite-width NTK")

# %% [markdown]
# ## Predictions: an infinite ensemble trained by gradient descent
#
# `nt.predict.gradient_descent_mse_ensemble` and `kernels.gradient_descent_mse_ensemble` (Lee et al.
# 2019, eqs. 14–15): the mean and covariance over initialisations of infinitely wide networks trained
# for `t` steps. Building a predictor and predicting are pure too: the whole comparison is one jitted
# function.

# %%
@jax.jit
def ensembles(t, x_test):
    predict_ported = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=1e-4)
    predict_native = kernels.gradient_descent_mse_ensemble(model, x_train, y_train, diag_reg=1e-4)
    return (predict_ported(t=t, x_test=x_test, get="ntk", compute_cov=True),
            predict_native(t=t, x_test=x_test, get="ntk", compute_cov=True))


(mean_p, cov_p), (mean_n, cov_n) = ensembles(jnp.array([10.0, 100.0, 1000.0]), x_test)
np.testing.assert_allclose(mean_p, mean_n, rtol=10 * RTOL, atol=10 * RTOL)
np.testing.assert_allclose(cov_p, cov_n, rtol=10 * RTOL, atol=10 * RTOL)
print("ensemble predictions equal:", mean_n.shape, cov_n.shape)

# %% [markdown]
# What is not supported raises a one-line error naming it; the full porting table is
# `docs/neural_tangents.md`, and `stax.UNSUPPORTED` lists the layers without a jaxlearn counterpart:

# %%
print(sorted(stax.UNSUPPORTED)[:6], "...")

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
