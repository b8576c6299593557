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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/01_quickstart.ipynb)
#
# # Quickstart: a population of networks as one program
#
# In jaxlearn a model is a pair of pure functions and a training run is a pure function of its
# seed and hyperparameters. So a sweep over seeds × learning rates is not a loop of scripts: it is
# `jax.vmap` of one training run, compiled once.

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

HIDDEN = 16 if FAST else 64
STEPS = 30 if FAST else 400
SEEDS = [0, 1] if FAST else [0, 1, 2, 3]
LEARNING_RATES = [0.01, 0.1] if FAST else [0.003, 0.01, 0.03, 0.1, 0.3]

# %% [markdown]
# ## A model and one training run
#
# scikit-learn's 8×8 digits, and an MLP (Dense → ReLU → Dense) in the **standard parameterization**
# (`W ~ N(0, σ_w²/fan_in)`, here He scaling `σ_w = √2`). `member(seed, learning_rate)` trains one
# network with SGD + momentum in a single `lax.scan` and returns its parameters and loss curve.
# Every random stream of the run (initialisation, data order) is derived from its own seed by
# `fold_in`, never from its position in the population, so each member's result equals its solo run.

# %%
ds = data.digits(seed=0)
x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
model = nn.mlp([HIDDEN], 10, W_std=2**0.5)


def member(seed, learning_rate):
    opt = train.optimizer("sgd", learning_rate=learning_rate, momentum=0.9)
    state = train.init(model, opt, jax.random.key(seed), ds.input_spec)
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt)
    batches = lambda key, i: data.get_batch(key, i, x, y, batch_size=64)  # noqa: E731
    state, metrics = train.train(state, step, batches, num_steps=STEPS)
    test_accuracy = train.accuracy(model.apply(state.params, ds.x_test), ds.y_test)
    return metrics["train"]["loss"], test_accuracy


# %% [markdown]
# ## The population: seeds × learning rates, vmapped
#
# `train.grid` is the Cartesian product in row-major order (the last axis fastest); `train.population`
# vmaps `member` over it. The learning rate is a traced value (`optax.inject_hyperparams`), so all
# members share one compiled program.

# %%
hp = train.grid(seed=SEEDS, learning_rate=LEARNING_RATES)
losses, accuracy = jax.jit(train.population(member))(hp)
print(f"{losses.shape[0]} members trained as one program; loss curves {losses.shape}")

# %%
n_seeds, n_lrs = len(SEEDS), len(LEARNING_RATES)
curves = np.asarray(losses).reshape(n_seeds, n_lrs, STEPS)
acc = np.asarray(accuracy).reshape(n_seeds, n_lrs)

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
for j, lr in enumerate(LEARNING_RATES):
    mean, std = curves[:, j].mean(0), curves[:, j].std(0)
    ax_loss.plot(mean, label=f"lr={lr:g}")
    ax_loss.fill_between(np.arange(STEPS), mean - std, mean + std, alpha=0.2)
ax_loss.set(xlabel="step", ylabel="training loss (minibatch)", yscale="log", title="mean ± std over seeds")
ax_loss.legend()
ax_acc.errorbar(LEARNING_RATES, acc.mean(0), yerr=acc.std(0), marker="o", capsize=3)
ax_acc.set(xscale="log", xlabel="learning rate", ylabel="test accuracy", title="final test accuracy")
fig.tight_layout()
plt.show()

for j, lr in enumerate(LEARNING_RATES):
    print(f"lr={lr:<6g} test accuracy {acc[:, j].mean():.3f} ± {acc[:, j].std():.3f}")

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
