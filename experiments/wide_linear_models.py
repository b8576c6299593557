"""Wide networks evolve as linear models: trained outputs against the analytic-NTK prediction, by width.

Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington 2019 ("Wide neural networks of any
depth evolve as linear models under gradient descent", §2.2 eqs. (8)–(11), Theorem 2.1, Figs. 1, 3):
under the NTK parameterization, a network trained by gradient descent on MSE follows its
linearization around ``θ₀``, whose outputs are closed-form (eqs. (10)–(11), gradient flow,
``a = η·t/n``, ``Θ`` the infinite-width NTK of the training inputs, ``Θ_*x`` test against train)::

    f_train(t) = y + e^{−aΘ}(f_train(θ₀) − y)
    f_test(t)  = f_test(θ₀) + Θ_*x Θ⁻¹ (I − e^{−aΘ}) (y − f_train(θ₀)),

and the distance between the network and this prediction vanishes as ``width^{-1/2}`` (Theorem 2.1
bounds ``sup_t ‖f_net(t) − f_lin(t)‖`` by ``O(width^{-1/2})``; the finite-width empirical NTK at
initialisation is itself ``O(width^{-1/2})`` from the analytic one).

Each member: an MLP (``depth`` hidden ReLU layers of ``width`` units, NTK parameterization,
``W_std = √2``, ``b_std = 0.1``, one output) trained by full-batch gradient descent on
``½·mean((f − y)²)`` (``jaxlearn.train.mse``) to ``y = ±1`` (even / odd digit) on ``n_train``
digits images, centred by the training mean and scaled to norm ``√64`` (so that the input kernel
``x·x'/d`` has a unit diagonal; Lee et al. standardise their CIFAR inputs likewise). The state
keeps the member's own initial outputs ``f(θ₀)`` on the training and test inputs; after every
segment (the time grid ``t = segment_steps, 2·segment_steps, …, num_steps``) the compiled program
evaluates the prediction with :func:`jaxlearn.kernels.gradient_descent_mse` on the model's
*analytic* NTK (:func:`jaxlearn.kernels.analytic`: widths do not enter it), started from
``f(θ₀)``, at ``t`` steps of size ``learning_rate`` — that function's time unit, for the same loss
normalisation (``n = y.size``). Seeds and learning rates are dynamic; the width is static (one
compiled group per width).

Metrics per segment: ``relative_error`` ``‖f_net(t) − f_pred(t)‖ / ‖f_pred(t) − f(θ₀)‖`` on the
test set at that time, and, over the time grid so far (the norms taken over test points and
times together), ``trajectory_error`` — its final value is the number of the claim —, the
train-set analogue ``trajectory_error_train``, ``train_loss``, and the network's and the
prediction's outputs on three test images (``net_output_i``, ``pred_output_i``, and
``init_output_i`` = ``f(θ₀)``: the figure); the summary adds the largest per-time
``relative_error`` of each run (``max_relative_error``). The discrete steps differ from the
gradient flow by a relative ``η·λ_max/(2n)`` in the fastest mode; the learning rate keeps that at
about 1% (``η λ_max / n ≈ 0.02``, ``λ_max ≈ 95`` for 128 examples).

Claim (``check``): the trajectory error (mean over seeds) is below 5% at every width ≥ 2048 and
falls with width (each width's mean below the next narrower one's); the log-log slope of error
against width is reported (theory: about −½). Measured with configs/wide_linear_models.yaml
(``paper``: depth 1, 128 train / 64 test images, η = 0.025, 1000 steps, time grid every 50 steps,
5 seeds; mean ± std over seeds):

=====  ==============================  =========================  ==========================
width  trajectory error (test)         trajectory error (train)   max over t of rel. error
=====  ==============================  =========================  ==========================
  128  0.115 ± 0.020                   0.102 ± 0.006              0.162 ± 0.023
  256  0.086 ± 0.017                   0.069 ± 0.007              0.103 ± 0.028
  512  0.070 ± 0.013                   0.056 ± 0.006              0.080 ± 0.013
 1024  0.050 ± 0.006                   0.041 ± 0.004              0.067 ± 0.020
 2048  0.037 ± 0.003                   0.027 ± 0.003              0.042 ± 0.006
 4096  0.026 ± 0.005                   0.022 ± 0.005              0.032 ± 0.007
=====  ==============================  =========================  ==========================

Log-log slope of the test trajectory error against width: −0.43 (theory −0.5); the check passes (every
width ≥ 2048 below 5%, falling at every width).

Differences from the paper (which trains on CIFAR-10 subsets up to width 8192 and depth 3+):
digits instead of CIFAR-10, one hidden layer (the width-4096 group of a deeper net would cost
``4096²`` per example and step, beyond this 10-minute, 2-core budget; ``depth`` is a config
field), 1000 steps with a small step (the flow's time scale) and 5 seeds. Theorem 2.1 covers any
depth; the error's ``width^{-1/2}`` law is that of the empirical NTK at initialisation.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import kernels, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

SHOWN = 3  # test images whose outputs are logged for the figure


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an NTK-parameterized ReLU MLP trained by full-batch GD on MSE (±1 targets)."""

    learning_rate: float = runner.dynamic(0.025, min=0.0, help="GD step size η (the prediction's time unit)")
    width: int = runner.static(1024, min=1, help="hidden layer width")
    depth: int = runner.static(1, min=1, help="number of hidden layers")
    n_train: int = runner.static(128, min=2, max=1438, help="digits training images (the full batch)")
    n_test: int = runner.static(64, min=SHOWN, max=359, help="digits test images on which outputs are compared")
    batch_size: int | None = runner.static(None, min=1, help="null: full-batch GD, the setting of the claim")
    num_steps: int = runner.static(1000, min=1, help="training steps")
    segment_steps: int = runner.static(50, min=1, help="steps between points of the time grid")

    def __post_init__(self):
        runner.study.check_full_batch_gd(self, self.n_train, "n_train", "the linearized prediction is of "
                                                                       "gradient descent")


class LinearState(NamedTuple):
    """A member: its ``train_state``, its initial outputs on the training and test inputs, and the
    squared norms summed over the time grid so far (``[error, displacement]`` on test and train)."""

    train_state: train.TrainState
    fx_train_0: jax.Array
    fx_test_0: jax.Array
    sums_test: jax.Array
    sums_train: jax.Array


def model(config: Config):
    """The network of a member (the ``model`` hook): ``depth`` ReLU layers of ``width`` units and one
    output, NTK parameterization, ``W_std = √2``, ``b_std = 0.1``."""
    return nn.mlp((config.width,) * config.depth, 1, activation="relu", parameterization="ntk", W_std=np.sqrt(2.0),
                  b_std=0.1)


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)``, the normalisation of
    :func:`jaxlearn.kernels.gradient_descent_mse`."""
    del config
    return train.mse


def standardize(x_train, x_test):
    """Inputs centred by the training mean and scaled to norm ``√d`` each (unit ``x·x'/d`` diagonal)."""
    mean = x_train.mean(0)
    scale = [np.sqrt(x.shape[1]) / np.linalg.norm(x - mean, axis=1, keepdims=True) for x in (x_train, x_test)]
    return (x_train - mean) * scale[0], (x_test - mean) * scale[1]


def data(config: Config) -> data_module.Arrays:
    """The first ``n_train`` / ``n_test`` digits images, standardized, with targets ±1 (even / odd
    digit) of shape (N, 1); shared by all members."""
    ds = data_module.digits(seed=0)
    x_train, x_test = standardize(np.asarray(ds.x_train[:config.n_train], np.float64),
                                  np.asarray(ds.x_test[:config.n_test], np.float64))
    sign = [np.where(y % 2 == 0, 1.0, -1.0)[:, None] for y in (ds.y_train[:config.n_train],
                                                                ds.y_test[:config.n_test])]
    return data_module.Arrays(*(jnp.asarray(a) for a in (x_train, sign[0], x_test, sign[1])))  # x64: float64


def init(config: Config, key) -> LinearState:
    """The member's train state and its initial outputs ``f(θ₀)`` on the training and test inputs."""
    arrays = data(config)
    state = runner.study.init(config, key, model(config), arrays.input_spec)
    apply = model(config).apply
    zeros = jnp.zeros(2, arrays.x_train.dtype)
    return LinearState(state, apply(state.params, arrays.x_train), apply(state.params, arrays.x_test), zeros, zeros)


def linear_prediction(config: Config, arrays, fx_train_0, fx_test_0, t):
    """``(f_train(t), f_test(t))`` of the linearized network (Lee et al. 2019, eqs. (10)–(11)) with
    the analytic NTK of :func:`model`, from the member's own ``f(θ₀)``, after ``t`` steps of size
    ``config.learning_rate`` on ``½·mean((f − y)²)``."""
    net = model(config)
    k_train_train = kernels.analytic(net, arrays.x_train, get="ntk")
    k_test_train = kernels.analytic(net, arrays.x_test, arrays.x_train, get="ntk")
    predict = kernels.gradient_descent_mse(k_train_train, arrays.y_train, config.learning_rate)
    return predict(t, fx_train_0=fx_train_0, fx_test_0=fx_test_0, k_test_train=k_test_train)


def _squared(f_net, f_pred, f_0):
    return jnp.stack([jnp.sum((f_net - f_pred) ** 2), jnp.sum((f_pred - f_0) ** 2)])


def segment(member: LinearState, config: Config, arrays):
    """``segment_steps`` full-batch GD steps, then the network against the linear prediction."""
    net = model(config)
    state, metrics = runner.study.segment(member.train_state, config, arrays, net, loss=loss(config))
    pred_train, pred_test = linear_prediction(config, arrays, member.fx_train_0, member.fx_test_0, state.step)
    net_train, net_test = net.apply(state.params, arrays.x_train), net.apply(state.params, arrays.x_test)
    now = _squared(net_test, pred_test, member.fx_test_0)
    sums_test = member.sums_test + now
    sums_train = member.sums_train + _squared(net_train, pred_train, member.fx_train_0)
    member = LinearState(state, member.fx_train_0, member.fx_test_0, sums_test, sums_train)
    outputs = {}
    for i in range(SHOWN):
        outputs[f"net_output_{i}"], outputs[f"pred_output_{i}"] = net_test[i, 0], pred_test[i, 0]
        outputs[f"init_output_{i}"] = member.fx_test_0[i, 0]
    return member, {**metrics, **outputs, "relative_error": jnp.sqrt(now[0] / now[1]),
                    "trajectory_error": jnp.sqrt(sums_test[0] / sums_test[1]),
                    "trajectory_error_train": jnp.sqrt(sums_train[0] / sums_train[1])}


_FINAL = ("trajectory_error", "trajectory_error_train", "max_relative_error")


def _per_run(results):
    """Per finished run: its width, seed, final trajectory errors and largest per-time error."""
    finished = results.finished("width", "seed", "trajectory_error", "trajectory_error_train", "relative_error")
    runs = finished.runs[["run_id", "width", "seed", "trajectory_error", "trajectory_error_train"]]
    curves = finished.curves
    if curves is None or curves.empty:
        return runs.iloc[:0].assign(max_relative_error=np.zeros(0))
    peak = curves.groupby("run_id")["relative_error"].max().rename("max_relative_error")
    return runs.merge(peak, left_on="run_id", right_index=True, how="inner")


def summarize(results) -> list[dict]:
    """Per width: the final test and train trajectory errors and the largest per-time test error,
    mean and std over seeds, and the log-log slope of the test trajectory error over all widths."""
    rows = []
    for width, part in _per_run(results).groupby("width"):
        row = {"width": int(width), "seeds": len(part)}
        for key in _FINAL:
            row[key], row[f"{key}_std"] = float(part[key].mean()), float(part[key].std(ddof=0))
        rows.append(row)
    slope = runner.study.loglog_slope([r["width"] for r in rows], [r["trajectory_error"] for r in rows])
    return [{**row, "loglog_slope": slope} for row in sorted(rows, key=lambda r: r["width"])]


def check(results) -> None:
    """The claim (Lee et al. 2019, Theorem 2.1, Fig. 3): the test trajectory error (mean over ≥ 3
    seeds) is below 5% at every width ≥ 2048 and falls with width, with a negative log-log slope."""
    rows = summarize(results)
    assert len(rows) >= 2, f"check needs at least two widths, got {len(rows)}"
    wide = [r for r in rows if r["width"] >= 2048]
    assert wide, f"check needs a width >= 2048, got {[r['width'] for r in rows]}"
    for row in rows:
        assert row["seeds"] >= 3, f"width {row['width']}: {row['seeds']} seeds, the claim needs >= 3"
    for row in wide:
        assert row["trajectory_error"] < 0.05, \
            f"width {row['width']}: trajectory error {row['trajectory_error']:.4f} is not below 0.05"
    for narrow, wider in zip(rows, rows[1:]):
        assert wider["trajectory_error"] < narrow["trajectory_error"], \
            f"error does not fall: width {wider['width']} {wider['trajectory_error']:.4f} >= " \
            f"width {narrow['width']} {narrow['trajectory_error']:.4f}"
    assert rows[0]["loglog_slope"] < 0, f"log-log slope {rows[0]['loglog_slope']:.3f} is not negative"


def smoke_check(results) -> None:
    """At toy scale: every run's errors are finite and the wider network is the closer to its linear
    prediction (mean test trajectory error of the widest below the narrowest's)."""
    rows = summarize(results)
    assert len(rows) >= 2, f"smoke_check needs at least two widths, got {len(rows)}"
    for row in rows:
        assert all(np.isfinite(row[k]) for k in _FINAL), f"width {row['width']}: non-finite errors {row}"
    assert rows[-1]["trajectory_error"] < rows[0]["trajectory_error"], \
        f"width {rows[-1]['width']} error {rows[-1]['trajectory_error']:.4f} is not below width " \
        f"{rows[0]['width']}'s {rows[0]['trajectory_error']:.4f}"


def plot(results):
    """Left (Lee et al. Fig. 1 style): three test outputs against GD time, network (solid) and
    linear prediction (dashed), narrowest and widest width, first seed. Right: test trajectory
    error against width (log-log, mean ± std over seeds) with a ``width^{-1/2}`` guide."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_out, ax_err = fig.subplots(1, 2)
    columns = [f"{kind}_output_{i}" for kind in ("net", "pred", "init") for i in range(SHOWN)]
    curves = results.finished("width", "seed", *columns).curves
    widths = sorted(curves["width"].dropna().unique()) if curves is not None else []
    for width, style in zip([widths[0], widths[-1]] if widths else [], ("C0", "C3")):
        part = curves[curves["width"] == width]
        part = part[part["seed"] == part["seed"].min()].sort_values("step")
        steps = np.concatenate([[0], part["step"]])  # both start at the member's own f(θ₀)
        for i in range(SHOWN):
            start = part[f"init_output_{i}"].to_numpy()[:1]
            ax_out.plot(steps, np.concatenate([start, part[f"net_output_{i}"]]), color=style, lw=1.5,
                        label=f"width {int(width)}: network" if i == 0 else None)
            ax_out.plot(steps, np.concatenate([start, part[f"pred_output_{i}"]]), color=style, lw=1, ls="--",
                        label=f"width {int(width)}: linear (analytic NTK)" if i == 0 else None)
    ax_out.set(xlabel="GD step", ylabel="f(x_test)", title="Test outputs: network vs linearized prediction")
    legend(ax_out, fontsize=7)
    rows = summarize(results)
    if rows:
        w = np.array([r["width"] for r in rows], float)
        err = np.array([r["trajectory_error"] for r in rows])
        ax_err.errorbar(w, err, yerr=[r["trajectory_error_std"] for r in rows], marker="o", capsize=3,
                        label=f"test, slope {rows[0]['loglog_slope']:.2f}")
        ax_err.plot(w, err[0] * np.sqrt(w[0] / w), color="gray", ls=":", label="∝ width^-1/2")
    ax_err.axhline(0.05, color="k", ls="--", lw=0.8, label="5%")
    ax_err.set(xscale="log", yscale="log", xlabel="width", ylabel="‖f_net − f_pred‖ / ‖f_pred − f(θ₀)‖",
               title="Distance to the linear model")
    if rows:
        ax_err.set_xticks(w, [str(int(v)) for v in w])  # after the log scale, which resets the ticks
        ax_err.xaxis.set_minor_formatter("")
    legend(ax_err, fontsize=8)
    fig.tight_layout()
    return fig
