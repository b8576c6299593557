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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxlearn/jaxlearn/blob/main/notebooks/05_runner.ipynb)
#
# # The runner from a notebook
#
# `jaxlearn run CONFIG` is a thin layer over a Python API that works the same in a notebook:
# `runner.resolve` loads a study's config (by name: the configs installed with jaxlearn, or
# `configs/NAME.yaml` in the working directory) with overrides and sweep axes, `runner.run_sweep`
# computes the runs that are not in the store yet (runs that share a compiled program train as one
# vmapped group, in checkpointed segments, with a progress bar), and `runner.load` returns the store as
# pandas DataFrames. A saved run's network comes back through its study's `model(config)` hook, so
# analyses such as its *after-kernel* (the empirical NTK of the trained parameters; Long 2021, "After
# kernel") apply to any run.
#
# **Conventions**: a config field is *static* (it changes the compiled program: widths, step counts)
# or *dynamic* (seed, learning rate: a vmapped axis); a run's id is a hash of its resolved config, so
# running the same sweep again computes nothing. Runs are written under `runs/` in the working
# directory.

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
import matplotlib.pyplot as plt
import numpy as np

from jaxlearn import kernels, runner

STEPS, SEGMENT, SNAPSHOT = (20, 10, 10) if FAST else (1000, 250, 1)
LEARNING_RATES = "0.01,0.1" if FAST else "0.003,0.01,0.03,0.1,0.3"
SEEDS = "0" if FAST else "0,1,2"
WIDTH = 16 if FAST else 64

# %% [markdown]
# ## Launch a sweep
#
# The teacher–student study (`experiments/teacher_student.py`): a two-layer ReLU student fitting a
# random teacher's noisy outputs, scored by its test MSE against the noise-free teacher. `resolve`
# validates every value before anything compiles; learning rate and seed are dynamic, so the whole
# sweep is one group. `snapshots` keeps the state at a chosen step besides the final one.

# %%
experiment, configs = runner.resolve(
    "teacher_student",
    overrides=[f"num_steps={STEPS}", f"segment_steps={SEGMENT}", f"snapshots=[{SNAPSHOT}]", f"width={WIDTH}"],
    sweeps=[f"learning_rate={LEARNING_RATES}", f"seed={SEEDS}"],
)
report = runner.run_sweep(experiment, configs, root="runs", log="none")
print(f"{len(report.run_ids)} runs: {len(report.computed)} computed, {len(report.skipped)} already in the store")

# %%
again = runner.run_sweep(experiment, configs, root="runs", progress=False, log="none")
print(f"the same sweep again: {len(again.computed)} computed, {len(again.skipped)} already in the store")

# %% [markdown]
# ## Results as DataFrames
#
# `runner.load(...).runs` has one row per run (its config fields, status and final metrics), `.curves`
# one row per run and logged step. A member whose loss became NaN/Inf (too large a learning rate) was
# frozen and marked `diverged` while the rest of its group trained on; `.finished()` keeps the runs that
# finished.

# %%
stored = runner.load("runs", experiment="teacher_student", curves=True)
res = stored.finished("learning_rate", "seed", "test_mse")
stored.runs[["run_id", "learning_rate", "seed", "status", "test_mse"]].sort_values(["learning_rate", "seed"])

# %%
fig, (ax_curve, ax_final) = plt.subplots(1, 2, figsize=(10, 3.5))
for lr, runs in res.curves.groupby("learning_rate"):
    mean = runs.groupby("step")["test_mse"].mean()
    ax_curve.plot(mean.index, mean.values, marker=".", label=f"lr={lr:g}")
ax_curve.set(xlabel="step", ylabel="test MSE (mean over seeds)", yscale="log")
ax_curve.legend()
final = res.runs.groupby("learning_rate")["test_mse"].agg(["mean", "std"])
ax_final.errorbar(final.index, final["mean"], yerr=final["std"].fillna(0), marker="o", capsize=3)
ax_final.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final test MSE")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## A snapshot and its after-kernel
#
# `runner.after_kernel(root, run, x, step=...)` rebuilds the run's network at a saved step and returns
# its empirical NTK on `x` (`kernels.empirical`: `Θ = J Jᵀ`, averaged over the output axis). The kernel
# distance `1 − ⟨K₀, K_t⟩ / (‖K₀‖‖K_t‖)` (Fort et al. 2020) between the snapshot's kernel and the final
# one measures how far training moved the network out of the linear (lazy) regime: the larger the
# learning rate, the more the kernel moves.

# %%
x_probe = experiment.module.data(configs[0]).x_test[:16]
for _, run in res.runs[res.runs.seed == 0].sort_values("learning_rate").iterrows():
    k_snapshot = runner.after_kernel("runs", run.run_id, x_probe, step=SNAPSHOT)
    k_final = runner.after_kernel("runs", run.run_id, x_probe)
    print(f"lr={run.learning_rate:<6g} kernel distance between step {SNAPSHOT} and step {STEPS}: "
          f"{float(kernels.kernel_distance(k_snapshot, k_final)):.4f}  (after-kernel {k_final.shape})")
state = runner.load_state("runs", run.run_id, step=SNAPSHOT)
print("a snapshot is the TrainState at that step:", int(np.asarray(state.step)))

# %% [markdown]
# Which device ran this notebook:

# %%
print(jax.devices())
