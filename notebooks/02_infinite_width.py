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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/02_infinite_width.ipynb)
#
# # Infinite width: analytic, empirical and Monte-Carlo NTKs, kernel regression, order and chaos
#
# As a network gets wider, its neural tangent kernel (NTK) at initialisation converges to a
# deterministic kernel, and gradient descent on the mean squared error follows kernel regression with
# it (Jacot et al. 2018; Lee et al. 2019). This notebook checks both at finite width, then draws the
# order-to-chaos phase diagram of deep networks at initialisation (Poole et al. 2016; Schoenholz et
# al. 2017).
#
# **Conventions** (neural-tangents', Novak et al. 2020): input kernel `x·x'/d`; kernels are per
# output unit; the NTK parameterization (`parameterization="ntk"`), under which the infinite-width
# NTK does not depend on the widths. Under the standard parameterization (jaxlearn's default) the
# NTK scales with the fan-in instead.

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
import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxlearn import kernels, nn, train

WIDTHS = [128] if FAST else [64, 256, 1024, 2048]
MC_SAMPLES = 8 if FAST else 32
WIDE = 128 if FAST else 2048
STEPS = 100 if FAST else 500
GRID = 6 if FAST else 41

# %% [markdown]
# ## Data: a function on the circle
#
# Inputs `x = (cos θ, sin θ)` (so `d = 2`), targets `sin(3θ) + cos(θ)`: a few training angles, a dense
# test grid, so the predictions can be drawn as functions of θ.

# %%
rng = np.random.default_rng(0)
theta_train = np.sort(rng.uniform(0, 2 * np.pi, 8 if FAST else 12))
theta_test = np.linspace(0, 2 * np.pi, 24 if FAST else 200)


def on_circle(theta):
    return jnp.asarray(np.stack([np.cos(theta), np.sin(theta)], axis=1), dtype=jnp.float32)


x_train, x_test = on_circle(theta_train), on_circle(theta_test)
y_train = jnp.asarray((np.sin(3 * theta_train) + np.cos(theta_train))[:, None], dtype=jnp.float32)


def mlp(width):
    """Two hidden ReLU layers, NTK parameterization, σ_w = 1.5, σ_b = 0.1."""
    dense = lambda n: nn.Dense(n, W_std=1.5, b_std=0.1, parameterization="ntk")  # noqa: E731
    return nn.serial(dense(width), nn.Relu(), dense(width), nn.Relu(), dense(1))


# %% [markdown]
# ## Three NTKs
#
# * **analytic**: `kernels.analytic` composes each layer's closed-form kernel map (ReLU's arc-cosine
#   kernel): the infinite-width limit, exact;
# * **empirical**: `kernels.empirical`, `Θ = J Jᵀ` of one finite network at its initialisation;
# * **Monte-Carlo**: `kernels.monte_carlo`, the empirical kernel averaged over initialisations: the
#   finite-width expectation, whose bias against the limit is `O(1/width)`.
#
# A single draw fluctuates by `O(1/√width)` around the limit (Hanin & Nica 2020).

# %%
spec = jax.ShapeDtypeStruct(x_train.shape, x_train.dtype)
analytic = jax.jit(lambda x: kernels.analytic(mlp(WIDTHS[0]), x).ntk)(x_train)  # any width: the same limit


@functools.partial(jax.jit, static_argnums=0)  # one program per width
def empirical_and_monte_carlo(width, key):
    model = mlp(width)
    params, _ = model.init(key, spec)
    one = kernels.empirical(model.apply, params, x_train)
    mean = kernels.monte_carlo(model, key, x_train, n_samples=MC_SAMPLES, kind="ntk")
    return one, mean


def rel(k):
    return float(jnp.linalg.norm(k - analytic) / jnp.linalg.norm(analytic))


single, averaged = [], []
for width in WIDTHS:
    one, mean = empirical_and_monte_carlo(width, jax.random.key(0))
    single.append(rel(one))
    averaged.append(rel(mean))
    print(f"width {width:5d}: relative distance to the analytic NTK: one draw {single[-1]:.3f}, "
          f"mean of {MC_SAMPLES} draws {averaged[-1]:.3f}")

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(WIDTHS, single, "o-", label="empirical (one initialisation)")
ax.loglog(WIDTHS, averaged, "s-", label=f"Monte-Carlo ({MC_SAMPLES} initialisations)")
ax.loglog(WIDTHS, single[0] * np.sqrt(WIDTHS[0] / np.asarray(WIDTHS)), "k:", label=r"$\propto 1/\sqrt{width}$")
ax.set(xlabel="width", ylabel=r"$\|\Theta - \Theta_\infty\|_F / \|\Theta_\infty\|_F$")
ax.legend()
plt.show()

# %% [markdown]
# ## Kernel regression vs a trained wide network
#
# Gradient descent on `train.mse` (½ · mean of the squared residuals) with learning rate `η` for `t`
# steps; `kernels.gradient_descent_mse` solves the same flow for the linearised network in closed
# form, `t` counting steps of size `η` (Lee et al. 2019, §2.2). Starting it from the network's own
# outputs at initialisation (`fx_train_0`, `fx_test_0`) makes the comparison one to one: at large
# width the two curves coincide.

# %%
LR = 1.0
model = mlp(WIDE)
opt = train.optimizer("sgd", learning_rate=LR)
step = train.make_step(model.apply_with_state, train.mse, opt)


@jax.jit
def network_and_kernel(key):
    state = train.init(model, opt, key, spec)
    f0_train, f0_test = model.apply(state.params, x_train), model.apply(state.params, x_test)
    state, metrics = train.train(state, step, lambda k, i: (x_train, y_train), STEPS)
    k_train = kernels.analytic(model, x_train).ntk
    k_test = kernels.analytic(model, x_test, x_train).ntk
    predict = kernels.gradient_descent_mse(k_train, y_train, learning_rate=LR)
    _, f_kernel = predict(t=STEPS, fx_train_0=f0_train, fx_test_0=f0_test, k_test_train=k_test)
    return model.apply(state.params, x_test), f_kernel, metrics


f_net, f_kernel, metrics = network_and_kernel(jax.random.key(2))
print(f"width {WIDE}, {STEPS} steps: training loss {float(metrics['train']['loss'][-1]):.2e}; "
      f"max |network − kernel| on the test grid {float(jnp.abs(f_net - f_kernel).max()):.3f}")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(theta_test, np.sin(3 * theta_test) + np.cos(theta_test), color="0.7", label="target")
ax.plot(theta_test, f_kernel[:, 0], label="NTK regression (infinite width)")
ax.plot(theta_test, f_net[:, 0], "--", label=f"trained network (width {WIDE})")
ax.plot(theta_train, y_train[:, 0], "ko", label="training points")
ax.set(xlabel=r"$\theta$", ylabel="f")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Order and chaos at initialisation
#
# Signal propagation through a deep `erf` network with weights `N(0, σ_w²/n)` and biases `N(0, σ_b²)`
# (mean-field theory, Poole et al. 2016; Schoenholz et al. 2017): `χ₁ = σ_w² E[φ'(√q* z)²]` is the
# slope of the correlation map at `c = 1`. With `χ₁ < 1` (ordered) nearby inputs become identical with
# depth; with `χ₁ > 1` (chaotic) they decorrelate. The critical line `χ₁ = 1` is where deep networks
# train (the depth scale `ξ_c` diverges). `kernels.phase_diagram` solves the fixed points on the whole
# grid as one vmapped program, from the activation's dual (`nn.dual`).

# %%
w_stds, b_stds = np.linspace(0.5, 4.0, GRID), np.linspace(0.0, 1.5, GRID)
phases = kernels.phase_diagram("erf", w_stds, b_stds)
ordered = float((phases.chi_1 < 1).mean())
print(f"{ordered:.0%} of the grid is ordered (χ₁ < 1), {1 - ordered:.0%} chaotic")
kernels.plot_phase_diagram(phases, w_stds, b_stds, title="erf network: order (blue) and chaos (red)")

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
