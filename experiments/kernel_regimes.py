"""Lazy vs feature learning: how far wide networks move from their initial kernel while training.

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models under gradient
descent", §2.3–2.4, Fig. 1) and Chizat, Oyallon & Bach 2019 ("On lazy training in differentiable
programming"): in the NTK parameterization, trained with a width-independent learning rate, the
parameters move less and less relative to their initial size as the width grows, and the
empirical NTK stays at its initial value (the lazy regime): the network trains like its
linearization. Narrow networks move their kernel (Fort et al. 2020, "Deep learning versus kernel
learning", §3: the kernel distance ``1 − ⟨K_0, K_t⟩/(‖K_0‖‖K_t‖)``).

Jacot, Gabriel & Hongler 2018 ("Neural tangent kernel: convergence and generalization in neural
networks", Theorems 1–2): as the width grows, the empirical NTK at initialisation converges to a
deterministic (analytic) kernel and stays constant during training; the same holds for
convolutional networks with channels as the width (Arora et al. 2019, "On exact computation with
an infinitely wide neural net", §4; Novak et al. 2019).

Each member: an MLP (``architecture: mlp``: ``depth`` hidden Dense layers of ``width`` units) or a
CNN (``cnn``: ``depth`` 3x3 SAME convolutions of ``width`` channels on the 8x8 images, the first
written as a Dense layer on each pixel's 3x3 patch — the same function, see :func:`model` —, then
2x2 average pooling, Flatten and a Dense readout), ReLU, NTK parameterization (``W_std = √2``,
``b_std = 0.1``), trained by SGD on MSE to one-hot digits labels. The state keeps ``θ_0`` and the
empirical NTK ``K_0`` on a fixed probe set of ``probe`` training images
(``jaxlearn.kernels.empirical``, a mean over the 10 outputs). ``data`` hands every group, next to
the digits, the probe images and the analytic NTK ``Θ`` of the architecture on them
(``jaxlearn.kernels.analytic``; per output unit, width-independent, so computed once per
architecture outside the compiled programs). Every segment reports, inside the compiled program,
``relative_weight_change`` (``‖θ_t − θ_0‖/‖θ_0‖``), ``relative_kernel_change``
(``‖K_t − K_0‖_F / ‖K_0‖_F``), ``kernel_distance`` (Fort et al.'s cosine distance of ``K_0`` and
``K_t``), ``kernel_alignment`` (the current NTK against the probe labels' one-hot Gram matrix),
``init_kernel_error`` (``‖K_0 − Θ‖_F / ‖Θ‖_F``), ``train_loss`` and ``test_accuracy``. Seeds and
learning rates are dynamic; architecture, width and depth are static (one compiled group each);
the config file zips them so that each architecture has its own width range.

Claim (``check``), per architecture: the final relative weight change and kernel distance fall
with width — the widest network's are at most a third of the narrowest's —, the log-log slopes of
the relative weight change and the relative kernel change against width are negative, the init
empirical-vs-analytic NTK error falls from each width to the next, and every width learns (test
accuracy above 0.5; chance is 0.1). Measured with configs/kernel_regimes.yaml (``paper``: 1000
steps of SGD, lr 5, batch 64, probe 64; MLP depth 2, widths 64/256/1024; CNN depth 1, widths
16/64/256; 3 seeds; mean ± std):

============  =====  ======================  ======================  ===============  ===============  =============
architecture  width  relative weight change  relative kernel change  kernel distance  init NTK error   test accuracy
============  =====  ======================  ======================  ===============  ===============  =============
MLP              64  0.125 ± 0.001           0.33 ± 0.09             9.9e-3 ± 4.1e-3  0.33 ± 0.09      0.928 ± 0.002
MLP             256  0.042 ± 0.001           0.15 ± 0.01             8.5e-4 ± 1.4e-4  0.10 ± 0.03      0.949 ± 0.013
MLP            1024  0.011 ± 0.0004          0.061 ± 0.005           1.2e-4 ± 1.4e-5  0.093 ± 0.020    0.952 ± 0.009
CNN              16  0.189 ± 0.011           0.26 ± 0.11             9.6e-4 ± 8.1e-4  0.32 ± 0.13      0.878 ± 0.005
CNN              64  0.105 ± 0.005           0.24 ± 0.05             1.3e-4 ± 3.6e-5  0.057 ± 0.010    0.907 ± 0.017
CNN             256  0.055 ± 0.001           0.047 ± 0.012           1.1e-5 ± 7.8e-7  0.043 ± 0.022    0.928 ± 0.002
============  =====  ======================  ======================  ===============  ===============  =============

Log-log slopes against width (least squares over the three widths): MLP weight change −0.87,
kernel change −0.61, init NTK error −0.46; CNN weight change −0.45, kernel change −0.62, init NTK
error −0.72. Expected (each layer's gradient has an O(1) norm under this parameterization, so
``‖θ_t − θ_0‖`` stays O(1) while ``‖θ_0‖ ∝ √P``, P ∝ width² for the MLP's width×width layer and ∝ width for the
one-convolution CNN): −1 and −½ for the weight change; −½ for the kernel change and the init
error (fluctuations of a mean over width units). The paper variant took 5 min 12 s wall on the
shared 2-core machine (load average 7–9 from other processes; its own CPU time 4 min 23 s).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import kernels, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "4"  # 4: the CNN reads out through a global average pool; probe inputs and analytic NTK arrive as data

ARCHITECTURES = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an NTK-parameterized ReLU MLP or CNN of width ``width`` on digits (MSE, SGD)."""

    learning_rate: float = runner.dynamic(5.0, min=0.0, help="SGD step size (width-independent under NTK "
                                                                 "parameterization)")
    architecture: str = runner.static("mlp", help="'mlp' (Dense layers) or 'cnn' (3x3 SAME convolutions on the "
                                                  "8x8 images, then a global average pool and a Dense readout)")
    width: int = runner.static(256, min=1, help="hidden layer width (the CNN's channels)")
    depth: int = runner.static(2, min=1, help="number of hidden layers (the CNN's convolutions)")
    probe: int = runner.static(64, min=2, max=1437, help="training images on which the kernels are measured")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (metrics and checkpoint after each)")

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {self.architecture!r}")


class ProbedArrays(NamedTuple):
    """The digits splits (as :class:`jaxlearn.data.Arrays`, training labels one-hot) and the probe
    set: ``probe_x (P, ...)``, its one-hot labels ``probe_y (P, 10)`` and the analytic NTK of the
    architecture on it, ``analytic_ntk (P, P)`` (per output unit; width-independent). Handed to
    ``segment`` as an argument, so the compiled program neither contains nor constant-folds them."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    probe_x: jax.Array
    probe_y: jax.Array
    analytic_ntk: jax.Array

    @property
    def input_spec(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of a batch of one input (a model's ``init`` argument)."""
        return jax.ShapeDtypeStruct((1, *self.x_train.shape[1:]), self.x_train.dtype)


class LazyState(NamedTuple):
    """A member: its ``train_state``, its initial parameters ``params_0`` and its initial empirical
    NTK ``ntk_0`` on the probe set."""

    train_state: train.TrainState
    params_0: Any
    ntk_0: jax.Array


def model(config: Config):
    """The network of a member (the ``model`` hook), ReLU after every hidden layer. MLP: ``depth``
    Dense layers of ``width`` units on the 64 pixels, then a Dense readout. CNN, on the 3x3 patches
    of the 8x8 images (:func:`image_patches`, ``(N, 8, 8, 9)``): a Dense layer of ``width`` units
    applied at every position — the 3x3 SAME convolution with ``width`` channels (im2col: the same
    function, fan-in 9 and NTK scaling as ``nn.Conv(width, (3, 3), padding="SAME")`` on the
    images) —, ``depth − 1`` more 3x3 SAME convolutions, 2x2 average pooling to 4x4 positions,
    Flatten and a Dense readout (``16·width·10`` weights)."""
    ntk = dict(parameterization="ntk", W_std=np.sqrt(2.0), b_std=0.1)
    if config.architecture == "mlp":
        hidden = [nn.Dense(config.width, **ntk) for _ in range(config.depth)]
        pool = []
    else:
        hidden = [nn.Dense(config.width, **ntk)] + [nn.Conv(config.width, (3, 3), padding="SAME", **ntk)
                                                     for _ in range(config.depth - 1)]
        pool = [nn.AvgPool((2, 2)), nn.Flatten()]
    return nn.serial(*[layer for h in hidden for layer in (h, nn.Relu())], *pool, nn.Dense(10, **ntk))


class NTKDraw(NamedTuple):
    """``net`` (an ``nn.serial`` of NTK-parameterized weight layers and parameter-free layers) with
    an ``init`` that returns exactly ``net.init``'s parameters from three threefry calls instead of
    two per weight layer: under the NTK parameterization every trainable entry is the standard
    normal draw itself (:mod:`jaxlearn.nn.parameterization`), drawn by ``nn.serial`` from
    ``fold_in(key, i)`` for layer ``i`` and by the weight layer from ``split`` of that (``W`` from
    the first key, ``b`` from the second). Here all layers' keys are made by one vmapped
    ``fold_in`` and one vmapped ``split``, and every leaf is the prefix of one vmapped draw of
    the largest leaf's length (with partitionable threefry, jax's default, a draw of shape ``s``
    is the first ``prod(s)`` entries of a longer flat draw from the same key, reshaped; without
    it, one draw per leaf shape). XLA compiles each threefry call on its own: with a draw per
    leaf, ``init`` took about as long to compile as the training segment."""

    net: nn.Layer

    def init(self, key, input_spec):
        params, model_state = jax.eval_shape(self.net.init, key, input_spec)
        layers = [i for i, p in enumerate(params) if p]
        if jax.tree.leaves(model_state) or any(set(params[i]) - {"W", "b"} for i in layers):
            raise ValueError(f"NTKDraw: expected layers without state and with params W and b, got {params}")
        pairs = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(jnp.asarray(layers, jnp.uint32))
        leaves = [(pairs[n, j], params[i][name]) for n, i in enumerate(layers)
                  for j, name in enumerate(("W", "b")) if name in params[i]]
        dtypes = {leaf.dtype for _, leaf in leaves}
        if jax.config.jax_threefry_partitionable and len(dtypes) == 1:
            (dtype,), length = dtypes, max(leaf.size for _, leaf in leaves)
            draws = jax.vmap(lambda k: jax.random.normal(k, (length,), dtype))(jnp.stack([k for k, _ in leaves]))
            values = [draw[:leaf.size].reshape(leaf.shape) for draw, (_, leaf) in zip(draws, leaves)]
        else:
            values = [jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in leaves]
        out, values = list(params), iter(values)
        for i in layers:
            out[i] = {name: next(values) for name in ("W", "b") if name in params[i]}
        return tuple(out), model_state


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)`` to one-hot labels."""
    del config
    return train.mse


def image_patches(images):
    """The zero-padded 3x3 neighbourhoods of each pixel: ``(N, H, W) -> (N, H, W, 9)``, entry
    ``3·di + dj`` at ``[n, h, w]`` being ``images[n, h + di − 1, w + dj − 1]`` (0 outside the image),
    the order of a ``(3, 3, 1, C)`` convolution filter reshaped to ``(9, C)``."""
    images = np.asarray(images, np.float32)
    _, height, width = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    return np.stack([padded[:, di:di + height, dj:dj + width] for di in range(3) for dj in range(3)], axis=-1)


def _inputs(architecture: str, x):
    """Digits rows (N, 64) as the architecture takes them: as they are (MLP) or the 3x3 patches of
    the 8x8 images, (N, 8, 8, 9) (CNN; a convolution inside the training loop's ``lax.scan`` is
    about 5x slower on the CPU than the same layer as a Dense layer on patches)."""
    x = np.asarray(x, np.float32)
    return x if architecture == "mlp" else image_patches(x.reshape(-1, 8, 8))


@functools.lru_cache(maxsize=8)
def _probed_arrays(architecture: str, depth: int, probe: int) -> ProbedArrays:
    # One per (architecture, depth, probe), shared by every width (the analytic kernel does not
    # depend on it). Its cost is compiling it: one jitted program, the probe an argument (not a
    # constant to fold), compiles in a fraction of the time of the op-by-op evaluation.
    ds = data_module.digits(seed=0)
    probe_x = _inputs(architecture, ds.x_train[:probe])
    net = model(Config(architecture=architecture, depth=depth, probe=probe))
    analytic = jax.jit(functools.partial(kernels.analytic, net, get="ntk"))(probe_x)
    one_hot = np.eye(10, dtype=np.float32)
    return ProbedArrays(jnp.asarray(_inputs(architecture, ds.x_train)), jnp.asarray(one_hot[ds.y_train]),
                        jnp.asarray(_inputs(architecture, ds.x_test)), jnp.asarray(ds.y_test),
                        jnp.asarray(probe_x), jnp.asarray(one_hot[ds.y_train[:probe]]), analytic)


def data(config: Config) -> ProbedArrays:
    """The digits split shared by every member (training labels one-hot: MSE targets; images
    shaped for the architecture), the probe set (the first ``probe`` training images) and the
    analytic NTK of the architecture on it (``jaxlearn.kernels.analytic``)."""
    return _probed_arrays(config.architecture, config.depth, config.probe)


def _ntk(config: Config, params, probe_x):
    """The empirical NTK on the probe images (``jaxlearn.kernels.empirical``, a mean over the 10
    outputs; its structured method: layer-input and cotangent Gram products, no Jacobian)."""
    return kernels.empirical(model(config).apply, params, probe_x)


def relative_change(k_0, k_t):
    """``‖K_t − K_0‖_F / ‖K_0‖_F``: the relative (Frobenius) distance of ``k_t`` from ``k_0``."""
    return jnp.linalg.norm(k_t - k_0) / jnp.linalg.norm(k_0)


def init(config: Config, key) -> LazyState:
    """The member's train state (``model(config).init``'s parameters, drawn by :class:`NTKDraw`),
    its initial parameters and its initial NTK on the probe set."""
    arrays = data(config)
    state = runner.study.init(config, key, NTKDraw(model(config)), arrays.input_spec)
    return LazyState(state, state.params, _ntk(config, state.params, arrays.probe_x))


def _diagnostics(member: LazyState, config: Config, arrays: ProbedArrays) -> dict:
    params = member.train_state.params
    ntk = _ntk(config, params, arrays.probe_x)
    outputs = model(config).apply(params, arrays.x_test)
    return {
        "relative_weight_change": kernels.relative_weight_change(params, member.params_0),
        "relative_kernel_change": relative_change(member.ntk_0, ntk),
        "kernel_distance": kernels.kernel_distance(member.ntk_0, ntk),
        "kernel_alignment": kernels.kernel_target_alignment(ntk, arrays.probe_y),
        # the init empirical NTK against the analytic one (a per-output kernel, as the empirical one is)
        "init_kernel_error": relative_change(arrays.analytic_ntk, member.ntk_0),
        "test_accuracy": train.accuracy(outputs, arrays.y_test),
    }


def segment(member: LazyState, config: Config, arrays):
    """``segment_steps`` SGD steps on ½·mean((f − y)²), then the diagnostics."""
    state, metrics = runner.study.segment(member.train_state, config, arrays, model(config), loss=loss(config))
    member = member._replace(train_state=state)
    return member, {**metrics, **_diagnostics(member, config, arrays)}


_FINAL = ("relative_weight_change", "relative_kernel_change", "kernel_distance", "kernel_alignment",
          "init_kernel_error", "test_accuracy")
_SLOPES = {"relative_weight_change": "weight_change_slope", "relative_kernel_change": "kernel_change_slope",
           "init_kernel_error": "init_error_slope"}


def _final(results):
    return results.finished("architecture", "width", *_FINAL).runs


def summarize(results) -> list[dict]:
    """Per architecture and width: final relative weight change, relative kernel change, kernel
    distance, alignment, init empirical-vs-analytic NTK error and test accuracy (means and stds
    over seeds and learning rates), and per architecture the log-log slopes against width of the
    weight change, the kernel change and the init error."""
    rows = []
    for (architecture, width), part in _final(results).groupby(["architecture", "width"]):
        row = {"architecture": architecture, "width": int(width), "runs": len(part)}
        for key in _FINAL:
            row[key] = float(part[key].mean())
            if key != "kernel_alignment":
                row[f"{key}_std"] = float(part[key].std(ddof=0))
        rows.append(row)
    for architecture in {r["architecture"] for r in rows}:
        mine = [r for r in rows if r["architecture"] == architecture]
        slopes = {name: runner.study.loglog_slope([r["width"] for r in mine], [r[key] for r in mine])
                  for key, name in _SLOPES.items()}
        for r in mine:
            r.update(slopes)
    return sorted(rows, key=lambda r: (r["architecture"], r["width"]))


def _by_architecture(results, who: str) -> dict:
    """``{architecture: summary rows by width}``, after asserting that both architectures finished
    at two or more widths (``who`` names the check in the messages)."""
    rows = summarize(results)
    found = sorted({r["architecture"] for r in rows})
    assert found == sorted(ARCHITECTURES), f"{who} needs both architectures {ARCHITECTURES}, got {found}"
    out = {}
    for architecture in ARCHITECTURES:
        out[architecture] = [r for r in rows if r["architecture"] == architecture]
        assert len(out[architecture]) >= 2, \
            f"{architecture}: {who} needs at least two widths, got {len(out[architecture])}"
    return out


def check(results) -> None:
    """The lazy-regime claims, per architecture: the widest network moves its weights and its
    kernel at most a third as much as the narrowest (relative weight change and kernel distance),
    the log-log slopes of the relative weight and kernel changes against width are negative, the
    empirical NTK at initialisation approaches the analytic one as the width grows (its relative
    error falls from each width to the next), and every width learns (test accuracy > 0.5;
    chance is 0.1). Both architectures must be present."""
    for architecture, mine in _by_architecture(results, "check").items():
        narrow, wide = mine[0], mine[-1]
        for key in ("relative_weight_change", "kernel_distance"):
            assert wide[key] <= narrow[key] / 3, (
                f"{architecture} {key}: width {wide['width']} gives {wide[key]:.4g}, more than a third of width "
                f"{narrow['width']}'s {narrow[key]:.4g}")
        for name in ("weight_change_slope", "kernel_change_slope"):
            assert narrow[name] < 0, f"{architecture}: {name} {narrow[name]:.3f} is not negative"
        for a, b in zip(mine, mine[1:]):
            assert b["init_kernel_error"] < a["init_kernel_error"], (
                f"{architecture}: init NTK error does not fall: width {b['width']} {b['init_kernel_error']:.4g} >= "
                f"width {a['width']} {a['init_kernel_error']:.4g}")
        for row in mine:
            assert row["test_accuracy"] > 0.5, \
                f"{architecture} width {row['width']}: test accuracy {row['test_accuracy']:.3f} <= 0.5"


def smoke_check(results) -> None:
    """At toy scale (100 steps, two seeds, two widths per architecture 8x or more apart: MLP 32 and
    512, CNN 8 and 64; the narrowest CNN has not learned much yet): per architecture, the widest
    network moves its weights and its kernel less than the narrowest (relative weight change,
    relative kernel change, kernel distance), its init empirical NTK is the closer to the
    analytic one, and every run is above chance (test accuracy > 0.1)."""
    for architecture, mine in _by_architecture(results, "smoke_check").items():
        narrow, wide = mine[0], mine[-1]
        for key in ("relative_weight_change", "relative_kernel_change", "kernel_distance", "init_kernel_error"):
            assert wide[key] < narrow[key], (f"{architecture} {key}: width {wide['width']} gives {wide[key]:.4g}, "
                                             f"not below width {narrow['width']}'s {narrow[key]:.4g}")
        for row in mine:
            assert row["test_accuracy"] > 0.1, \
                f"{architecture} width {row['width']}: test accuracy {row['test_accuracy']:.3f} <= 0.1 (chance)"


def plot(results):
    """Relative weight change and relative kernel change over training, one curve per architecture
    and width (mean over runs; MLP solid, CNN dashed), and the final values and the init
    empirical-vs-analytic NTK error against width (log-log, mean ± std over seeds)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(14, 4))
    axes = fig.subplots(1, 3)
    keys = ["relative_weight_change", "relative_kernel_change"]
    curves = results.finished("architecture", "width", *keys).curves
    styles = dict(zip(ARCHITECTURES, ("-", "--")))
    for (architecture, width), part in ([] if curves is None else curves.groupby(["architecture", "width"])):
        mean = part.groupby("step")[keys].mean()
        for ax, key in zip(axes, keys):
            ax.plot(mean.index, mean[key], ls=styles.get(architecture, ":"), label=f"{architecture} {int(width)}")
    axes[0].set(xlabel="step", ylabel="‖θ_t − θ_0‖ / ‖θ_0‖", yscale="log", title="Relative weight change")
    axes[1].set(xlabel="step", ylabel="‖K_t − K_0‖_F / ‖K_0‖_F", yscale="log", title="Relative kernel change (NTK)")
    rows = summarize(results)
    for i, architecture in enumerate(ARCHITECTURES):
        mine = [r for r in rows if r["architecture"] == architecture]
        if not mine:
            continue
        width = [r["width"] for r in mine]
        for key, marker, what in (("relative_weight_change", "o", "weights"),
                                  ("relative_kernel_change", "s", "kernel"),
                                  ("init_kernel_error", "^", "init NTK vs analytic")):
            slope = mine[0][_SLOPES[key]]
            axes[2].errorbar(width, [r[key] for r in mine], yerr=[r[f"{key}_std"] for r in mine], marker=marker,
                             ls=styles[architecture], color=f"C{i}", capsize=2,
                             label=f"{architecture} {what} (slope {slope:.2f})")
    axes[2].set(xscale="log", yscale="log", xlabel="width (channels)", ylabel="relative change / error",
                title="Against width (final, mean ± std)")
    legend(axes[0], fontsize=7)
    legend(axes[2], fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig
