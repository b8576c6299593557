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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/03_landscapes_and_curvature.ipynb)
#
# # Loss landscapes and curvature
#
# Three views of the loss around trained networks, all pure functions of `params`:
#
# 1. a **filter-normalised 2-D surface** (Li et al. 2018, "Visualizing the loss landscape of neural
#    nets");
# 2. the **Hessian spectrum**: its top eigenvalues by Lanczos, and its whole density by stochastic
#    Lanczos quadrature (SLQ; Ghorbani, Krishnan & Xiao 2019), both from Hessian-vector products only;
# 3. **mode connectivity**: the loss along the straight line between two independently trained
#    networks, before and after permuting the hidden units of one to match the other (weight
#    matching, Ainsworth, Hayase & Srinivasa 2022, "Git Re-Basin").
#
# **Conventions**: filter normalisation rescales each *output unit* of a weight (the last axis of a
# Dense kernel) to the norm of the same unit of `params`, and leaves biases at zero; a surface is
# indexed `[i, j] = (xs[i], ys[j])`; the objective is the mean loss over the whole training set, so
# the Hessian is that of the mean loss.

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
import matplotlib.pyplot as plt
import numpy as np

from jaxlearn import data, nn, train
from jaxlearn import landscape as ls

HIDDEN = 16 if FAST else 64
STEPS = 40 if FAST else 600
GRID = 5 if FAST else 25
LANCZOS = 8 if FAST else 40
PROBES = 1 if FAST else 4
PATH_POINTS = 5 if FAST else 21

# %% [markdown]
# ## Two networks trained from different seeds
#
# scikit-learn's digits, an MLP with one hidden ReLU layer (standard parameterization, He scaling),
# SGD with momentum. One jitted function trains from a given seed, so the second network reuses the
# first one's compiled program.

# %%
ds = data.digits(seed=0)
x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
model = nn.mlp([HIDDEN], 10, W_std=2**0.5)
opt = train.optimizer("sgd", learning_rate=0.05, momentum=0.9)
step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt)


@jax.jit
def fit(key):
    state = train.init(model, opt, key, ds.input_spec)
    batches = lambda k, i: data.get_batch(k, i, x, y, batch_size=64)  # noqa: E731
    return train.train(state, step, batches, num_steps=STEPS)[0].params


params_a, params_b = fit(jax.random.key(0)), fit(jax.random.key(1))
for name, p in (("a", params_a), ("b", params_b)):
    print(f"network {name}: test accuracy {float(train.accuracy(model.apply(p, ds.x_test), ds.y_test)):.3f}")

# %% [markdown]
# ## A filter-normalised surface
#
# Two random directions, each filter-normalised, span a plane through `params_a`; `surface_2d`
# evaluates the exact training loss (`ModelObjective`: the whole set, in chunks) on the grid as one
# compiled program.

# %%
objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (x, y), batch_size=512)
d1, d2 = (ls.random_direction(jax.random.key(10 + i), params_a, normalization="filter") for i in range(2))
xs = ys = ls.symmetric_grid(GRID)
surface = ls.surface_2d(lambda p: ls.dataset_loss(objective, p), params_a, d1, d2, xs, ys)
print(f"loss at the centre {float(surface[GRID // 2, GRID // 2]):.3f}, at the corners up to {float(surface.max()):.3f}")
fig, ax = plt.subplots(figsize=(5, 4))
# surface[i, j] is at (xs[i], ys[j]); matplotlib's contour wants rows along y: hence the transpose
lines = ax.contourf(xs, ys, jnp.log10(surface).T, levels=20)
fig.colorbar(lines, label="log10 training loss")
ax.plot(0, 0, "w*", markersize=10)
ax.set(xlabel="d1", ylabel="d2", title="around network a (filter-normalised directions)")
plt.show()

# %% [markdown]
# ## The Hessian spectrum
#
# `top_eigenvalues` runs Lanczos on Hessian-vector products (forward-over-reverse; the Hessian,
# `P × P`, is never formed). `spectral_density` runs `m` Lanczos steps from random probes: the
# eigenvalues `θ_j` of each tridiagonal matrix and the squared first components of its eigenvectors
# `w_j` are the nodes and weights of a Gauss quadrature of the spectral measure; `smooth_density`
# puts a Gaussian of width σ on each node. The outliers of the density are the top eigenvalues; the
# bulk sits near zero (Ghorbani et al. 2019, Fig. 1; Sagun et al. 2017).

# %%
@jax.jit  # both from the same Hessian-vector products: one compiled program
def spectrum(params, key):
    top = ls.top_eigenvalues(objective, params, k=3, num_iters=LANCZOS)
    return top, ls.spectral_density(objective, params, num_steps=LANCZOS, num_probes=PROBES, key=key)


top, (nodes, weights) = spectrum(params_a, jax.random.key(3))
grid = jnp.linspace(float(nodes.min()) - 1.0, float(nodes.max()) + 1.0, 400)
density = ls.smooth_density(nodes, weights, grid, sigma=0.1)
print("top Hessian eigenvalues (Lanczos):", np.round(np.asarray(top), 3))
print(f"largest SLQ node {float(nodes.max()):.3f}; the density integrates to "
      f"{float(jnp.sum(density) * (grid[1] - grid[0])):.3f}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(grid, jnp.where(density > 0, density, jnp.nan), label="SLQ density")
for i, value in enumerate(top):
    ax.axvline(value, color="tab:red", linestyle=":", label="top eigenvalues (Lanczos)" if i == 0 else None)
ax.set(xlabel="Hessian eigenvalue", ylabel="density", title="Hessian spectrum at network a")
ax.legend()
plt.show()

# %% [markdown]
# ## Linear mode connectivity, before and after weight matching
#
# Hidden units can be permuted without changing the function. Weight matching finds the permutation
# of network b's units that best aligns its weights with network a's (a linear assignment per layer,
# on the host); the permuted network computes exactly the same function. The loss barrier along the
# straight path `(1 − α)·θ_a + α·θ_b` typically shrinks once b is aligned (Ainsworth et al. 2022;
# narrow networks keep some barrier). `barrier` reports the height above the chord between the
# endpoints (Entezari et al. 2022) and above their mean (Frankle et al. 2020).

# %%
spec = ls.permutation_spec(model, ds.input_spec)
aligned = ls.weight_matching(spec, params_a, params_b).params
assert jnp.allclose(model.apply(aligned, ds.x_test), model.apply(params_b, ds.x_test), atol=1e-4)  # same function
before = ls.linear_path(objective, params_a, params_b, num_points=PATH_POINTS)
after = ls.linear_path(objective, params_a, aligned, num_points=PATH_POINTS)
for name, path in (("before", before), ("after", after)):
    print(f"barrier {name} weight matching: {float(ls.barrier(path['loss'], path['alpha']).linear):.3f}")
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(before["alpha"], before["loss"], "o-", label="b as trained")
ax.plot(after["alpha"], after["loss"], "s-", label="b permuted to match a")
ax.set(xlabel=r"$\alpha$ (0: network a, 1: network b)", ylabel="training loss", title="the linear path from a to b")
ax.legend()
plt.show()

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
