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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/04_learning_rules.ipynb)
#
# # Learning rules side by side
#
# Backpropagation sends the output error back through the transposed forward weights. Alternatives
# change that backward path, and here all of them train the same one-hidden-layer network on the same
# problem (scikit-learn's digits), from the same seed, with the same optimizer:
#
# * **backprop**: exact reverse-mode gradients;
# * **feedback alignment** (FA; Lillicrap et al. 2016): the error goes back through a fixed random
#   matrix `B` instead of `Wᵀ` (`rules.FADense`);
# * **direct feedback alignment** (DFA; Nøkland 2016): the output error is sent to every hidden layer
#   directly through fixed random matrices (`rules.estimator("dfa")` on a `rules.block_mlp`);
# * **straight-through estimator** (STE; Bengio et al. 2013; Hubara et al. 2016): binary `sign`
#   activations in the forward pass, the derivative of a clipped identity in the backward pass
#   (`rules.SignSTE("clipped")`);
# * **forward gradient** (Baydin et al. 2022): no backward pass at all: a random tangent `v`, the
#   directional derivative `∇L·v` by forward mode (`jax.jvp`), and the unbiased estimate `(∇L·v) v`
#   (`rules.estimator("forward_gradient")`).
#
# **Conventions**: layer rules (FA, STE) change one layer's backward pass and train with plain
# `backprop`; gradient estimators (DFA, forward gradient) replace backprop for the whole network as the
# `grad_estimator` of `train.make_step`. Feedback matrices are model *state* drawn from the member's
# key, never updated by the optimizer.

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

from jaxlearn import data, nn, rules, train

HIDDEN = 16 if FAST else 128
STEPS = 20 if FAST else 1000

# %% [markdown]
# ## One problem, one training loop
#
# `final(model, estimator, learning_rate)` trains from seed 0 with minibatches of 64 and returns the
# training-loss curve and the final test accuracy. `rules.block_mlp` is `nn.mlp` with its block
# boundaries visible to network-level estimators; with plain backprop it is exactly the MLP, so
# backprop, DFA and the forward gradient train literally the same model.

# %%
ds = data.digits(seed=0)
x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
batches = lambda key, i: data.get_batch(key, i, x, y, batch_size=64)  # noqa: E731


def final(model, estimator=train.backprop, learning_rate=0.05):
    opt = train.optimizer("sgd", learning_rate=learning_rate, momentum=0.9)

    @jax.jit
    def run(key):
        state = train.init(model, opt, key, ds.input_spec)
        step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt, grad_estimator=estimator)
        state, metrics = train.train(state, step, batches, num_steps=STEPS)
        logits = model.apply(state.params, ds.x_test, state.model_state)
        return metrics["train"]["loss"], train.accuracy(logits, ds.y_test)

    return run(jax.random.key(0))


mlp = rules.block_mlp([HIDDEN], 10, W_std=2**0.5)
results = {
    "backprop": final(mlp),
    "feedback alignment": final(nn.serial(rules.FADense(HIDDEN, W_std=2**0.5), nn.Relu(), rules.FADense(10))),
    "direct feedback alignment": final(mlp, rules.estimator("dfa")),
    "sign activations (STE)": final(nn.serial(nn.Dense(HIDDEN, W_std=2**0.5), rules.SignSTE("clipped"), nn.Dense(10))),
    "forward gradient": final(mlp, rules.estimator("forward_gradient"), learning_rate=5e-4),
}

# %%
for name, (loss, accuracy) in results.items():
    print(f"{name:27s} final training loss {float(loss[-10:].mean()):.3f}, test accuracy {float(accuracy):.3f}")

fig, ax = plt.subplots(figsize=(7, 4))
for name, (loss, accuracy) in results.items():
    smooth = jnp.convolve(loss, jnp.ones(10) / 10, mode="valid") if STEPS > 10 else loss
    ax.plot(smooth, label=f"{name} (test accuracy {float(accuracy):.2f})")
ax.set(xlabel="step", ylabel="training loss (running mean of 10 minibatches)", yscale="log")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At full size FA, DFA and the binarised network end close to backprop on this small problem (FA and
# DFA learn once the forward weights have come to align with the fixed feedback; Lillicrap et al. 2016).
# The forward gradient is unbiased but its variance grows with the number of parameters: it needs a
# hundred times smaller learning rate and is still far behind after the same number of steps.

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
