"""Spectral bias: a wide network fits low frequencies first, at the rates of its NTK eigenvalues.

Rahaman, Baratin, Arpit, Draxler, Lin, Hamprecht, Bengio & Courville 2019 ("On the spectral bias of
neural networks", §3, Fig. 1): the Fourier components of a target are learned in order of
frequency. Basri, Jacobs, Kasten & Kritchman 2019 ("The convergence rate of neural networks for
learned functions of different frequencies", §3–4) and Basri, Galun, Geifman, Jacobs, Kasten &
Kritchman 2020 ("Frequency bias in neural networks for input of non-uniform density", §3, eq. (3)
and §4): in the kernel regime the residual ``r = f − y`` on the training points evolves as
``r(t) = (I − η Θ / n)^t r(0)`` under gradient descent on ``½·mean((f − y)²)`` (``n`` points,
``Θ`` the NTK Gram matrix); for inputs on the circle the NTK of a two-layer ReLU network is a
function of ``cos(φ − φ')``, so on ``n`` equispaced points ``Θ`` is circulant and its eigenvectors
are the Fourier modes: the amplitude of frequency ``k`` decays as ``(1 − η λ_k / n)^t ≈
e^{−η λ_k t / n}``, with ``λ_k = Σ_j Θ[0, j] cos(k φ_j)`` (the DFT of its first row:
:func:`circulant_eigenvalues`). The time to fit frequency ``k`` is thus proportional to ``1/λ_k``,
and ``λ_k`` falls with ``k`` (about ``k⁻²`` on the circle).

Each member: ``n_points`` equispaced angles ``φ_j = 2πj/n`` with inputs ``(cos φ, sin φ)``, target
``y = A·Σ_k sin(k φ)`` over ``frequencies`` (1, 4, 16: equal amplitudes ``A = 0.1``), a two-layer
ReLU network (``width`` hidden units, NTK parameterization, ``W_std = √2``, no bias) trained by
full-batch gradient descent with a small step (``η λ_1 / n = 0.15``). The small amplitude keeps
the run in the kernel regime: fitting the low-eigenvalue frequencies of a target of amplitude 1
moves the parameters (and so the kernel) far enough that the kernel, no longer circulant, couples
the slow frequency 16 into the others — at width 4096 the frequency-4 residual stalls near 10% of
its start (relative weight change 7%), where with ``A = 0.1`` it follows the kernel prediction to
within 8% (relative weight change 1.5%; the change needed to fit scales with ``A``, the kernel's
movement with ``A/√width``). After every step the
compiled program takes the amplitude of the residual at each frequency,
``|r̂_k| = (2/n)·|Σ_j r_j e^{−ikφ_j}|`` (:func:`fourier_amplitudes`), and records the first time it
falls to 10% of its initial value (log-linear interpolation between steps; −1 until it does).
Metrics per segment: ``residual_k`` (amplitude at the segment's end), ``relative_residual_k``
(over its initial value), ``time_to_10pct_k``, the analytic NTK's ``ntk_eigenvalue_k`` and the
kernel prediction ``predicted_time_k = ln 10 / −ln(1 − η λ_k / n)``, and ``train_loss``. Seeds
and learning rates are dynamic (one vmapped program per width).

Claim (``check``): the residuals fall in order of frequency (``t_1 < t_4 < t_16``, means over
≥ 3 seeds), and each ratio ``t_k / t_1`` agrees within a factor 2 with ``λ_1 / λ_k`` of the
analytic NTK. Measured with configs/spectral_bias.yaml (``paper``: 64 points, width 8192,
A = 0.1, η = 0.3, 12,000 steps, 5 seeds; mean ± std over seeds):

=========  ===============  ===============  ===========  ==============  ===============
frequency  NTK eigenvalue   time to 10%      t_k / t_1    λ_1 / λ_k       kernel t_k
=========  ===============  ===============  ===========  ==============  ===============
        1  32.0             14.1 ± 0.3       1            1               14.2
        4  1.106            478 ± 70         33.8 ± 4.9   28.9            443
       16  0.0635           9414 ± 285       666 ± 9      504             7732
=========  ===============  ===============  ===========  ==============  ===============

The check passes: the measured ratios are 1.17x (k = 4) and 1.32x (k = 16) the eigenvalue ratios.
The network is a little slower than its initial kernel at high frequency (the kernel moves
slightly while the low frequencies are fitted; a finite-width effect that shrinks with width).
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

THRESHOLD = 0.1  # "fitted": the residual's amplitude at 10% of its initial value


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a two-layer NTK-parameterized ReLU network fitting sinusoids on the circle."""

    learning_rate: float = runner.dynamic(0.3, min=0.0, help="GD step size η (kernel regime: η λ_1 / n ≪ 1)")
    width: int = runner.static(2048, min=1, help="hidden layer width")
    n_points: int = runner.static(64, min=4, help="equispaced training points on the circle")
    frequencies: tuple[int, ...] = runner.static((1, 4, 16), min=1, help="target frequencies (equal amplitudes)")
    amplitude: float = runner.static(0.1, min=0.0, help="amplitude of each target sinusoid")
    batch_size: int | None = runner.static(None, min=1, help="null: full-batch GD, the setting of the claim")
    num_steps: int = runner.static(10000, min=1, help="training steps")
    segment_steps: int = runner.static(100, min=1, help="steps per segment (metrics and checkpoint after each)")

    def __post_init__(self):
        runner.study.check_full_batch_gd(self, self.n_points, "n_points", "the NTK prediction is of gradient descent")
        if 2 * max(self.frequencies) >= self.n_points:
            raise ValueError(f"frequencies: must be below n_points/2 = {self.n_points / 2:g} (Nyquist), "
                             f"got {self.frequencies}")


class SpectralState(NamedTuple):
    """A member: its ``train_state``; per frequency its initial residual amplitude, its amplitude
    at the last step, and the time it reached 10% of the initial one (−1: not yet)."""

    train_state: train.TrainState
    initial: jax.Array
    previous: jax.Array
    fitted_at: jax.Array


def angles(n_points: int) -> np.ndarray:
    """``φ_j = 2πj/n``, the equispaced angles of the training points."""
    return 2 * np.pi * np.arange(n_points) / n_points


def data(config: Config) -> data_module.Arrays:
    """Training inputs ``(cos φ_j, sin φ_j)`` and targets ``amplitude · Σ_k sin(k φ_j)`` (shape (n, 1)); the test
    split is the same function on the grid shifted by half a spacing."""
    def split(phi):
        x = np.stack([np.cos(phi), np.sin(phi)], axis=1)
        y = config.amplitude * np.sum([np.sin(k * phi) for k in config.frequencies], axis=0)[:, None]
        return jnp.asarray(x), jnp.asarray(y)  # float32, float64 under jax_enable_x64

    phi = angles(config.n_points)
    return data_module.Arrays(*split(phi), *split(phi + np.pi / config.n_points))


def model(config: Config):
    """The network of a member (the ``model`` hook): two-layer ReLU, NTK parameterization, no bias."""
    ntk = dict(parameterization="ntk", W_std=np.sqrt(2.0), b_std=None)
    return nn.serial(nn.Dense(config.width, **ntk), nn.Relu(), nn.Dense(1, **ntk))


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)``."""
    del config
    return train.mse


def fourier_amplitudes(values, phi, frequencies):
    """Amplitudes ``(2/n)·|Σ_j v_j e^{−ikφ_j}|`` of ``values`` (n,) at integer ``frequencies`` (K,) on
    the equispaced angles ``phi`` (n,): ``A`` for ``A·sin(kφ + c)`` with ``0 < k < n/2``."""
    phase = jnp.asarray(frequencies)[:, None] * jnp.asarray(phi)[None, :]
    cosine, sine = jnp.cos(phase) @ values, jnp.sin(phase) @ values
    return 2.0 / values.shape[0] * jnp.sqrt(cosine ** 2 + sine ** 2)


def circulant_eigenvalues(first_row, phi, frequencies):
    """Eigenvalues ``λ_k = Σ_j K[0, j] cos(k φ_j)`` of a symmetric circulant Gram matrix ``K`` on the
    equispaced angles ``phi``, whose row ``j`` is its first row rolled by ``j`` (the DFT of the
    first row; real for a symmetric ``K``); eigenvectors ``cos(kφ)`` and ``sin(kφ)``."""
    return jnp.cos(jnp.asarray(frequencies)[:, None] * jnp.asarray(phi)[None, :]) @ first_row


def ntk_eigenvalues(config: Config):
    """The analytic NTK's eigenvalues for ``config.frequencies`` on the training points."""
    x = data(config).x_train
    first_row = kernels.analytic(model(config), x[:1], x, get="ntk")[0]
    return circulant_eigenvalues(first_row, angles(config.n_points), config.frequencies)


def _amplitudes(config: Config, params, arrays):
    residual = model(config).apply(params, arrays.x_train)[:, 0] - arrays.y_train[:, 0]
    return fourier_amplitudes(residual, angles(config.n_points), config.frequencies)


def init(config: Config, key) -> SpectralState:
    """The member's train state and the residual amplitudes at initialisation."""
    arrays = data(config)
    state = runner.study.init(config, key, model(config), arrays.input_spec)
    initial = _amplitudes(config, state.params, arrays)
    return SpectralState(state, initial, initial, -jnp.ones_like(initial))


def crossing_time(step, previous, current, target, fitted_at):
    """``fitted_at`` with the entries not yet set (−1) that reach ``target`` at ``step`` set to the
    interpolated crossing time: ``log amplitude`` linear between ``step − 1`` and ``step``."""
    frac = (jnp.log(previous) - jnp.log(target)) / (jnp.log(previous) - jnp.log(current))
    crossed = (fitted_at < 0) & (current <= target)
    return jnp.where(crossed, step - 1 + jnp.clip(frac, 0.0, 1.0), fitted_at)


def segment(member: SpectralState, config: Config, arrays):
    """``segment_steps`` full-batch GD steps, the residual's amplitudes taken after each."""
    step = train.make_step(model(config).apply_with_state, loss(config), config.build_optimizer())
    target = THRESHOLD * member.initial

    def body(carry, _):
        state, previous, fitted_at = carry
        state, metrics = step(state, (arrays.x_train, arrays.y_train))
        current = _amplitudes(config, state.params, arrays)
        return (state, current, crossing_time(state.step, previous, current, target, fitted_at)), metrics["loss"]

    (state, current, fitted_at), losses = jax.lax.scan(
        body, (member.train_state, member.previous, member.fitted_at), None, length=config.segment_steps)
    lam = ntk_eigenvalues(config)
    predicted = jnp.log(1 / THRESHOLD) / -jnp.log1p(-config.learning_rate * lam / config.n_points)
    metrics = {"train_loss": losses.mean()}
    for i, k in enumerate(config.frequencies):
        metrics.update({f"residual_{k}": current[i], f"relative_residual_{k}": current[i] / member.initial[i],
                        f"time_to_10pct_{k}": fitted_at[i], f"ntk_eigenvalue_{k}": lam[i],
                        f"predicted_time_{k}": predicted[i]})
    return SpectralState(state, member.initial, current, fitted_at), metrics


def _frequencies(frame) -> list[int]:
    return sorted(int(c.rsplit("_", 1)[1]) for c in frame.columns if c.startswith("time_to_10pct_"))


def summarize(results) -> list[dict]:
    """Per frequency (runs of every width and learning rate pooled; one setting in the configs):
    the NTK eigenvalue, the measured time to 10% (mean, std over seeds; NaN where a run never
    got there), the ratios ``t_k / t_1`` and ``λ_1 / λ_k`` and the kernel's predicted time."""
    runs = results.finished().runs
    freqs = _frequencies(runs)
    if runs.empty or not freqs:
        return []
    times = {k: runs[f"time_to_10pct_{k}"].where(runs[f"time_to_10pct_{k}"] >= 0) for k in freqs}
    first = freqs[0]
    rows = []
    for k in freqs:
        lam = runs[f"ntk_eigenvalue_{k}"]
        ratio = times[k] / times[first]
        rows.append({"frequency": k, "seeds": len(runs), "ntk_eigenvalue": float(lam.mean()),
                     "time_to_10pct": float(times[k].mean()), "time_std": float(times[k].std(ddof=0)),
                     "fitted_runs": int(times[k].notna().sum()),
                     "time_ratio": float(ratio.mean()), "time_ratio_std": float(ratio.std(ddof=0)),
                     "eigenvalue_ratio": float((runs[f"ntk_eigenvalue_{first}"] / lam).mean()),
                     "predicted_time": float(runs[f"predicted_time_{k}"].mean()),
                     "final_relative_residual": float(runs[f"relative_residual_{k}"].mean())})
    return rows


def check(results) -> None:
    """The claim: every run fits every frequency; the times to 10% grow with frequency (means over
    ≥ 3 seeds); each ``t_k / t_1`` is within a factor 2 of ``λ_1 / λ_k`` of the analytic NTK."""
    rows = summarize(results)
    assert len(rows) >= 2, f"check needs at least two frequencies of finished runs, got {len(rows)}"
    for row in rows:
        assert row["seeds"] >= 3, f"frequency {row['frequency']}: {row['seeds']} seeds, the claim needs >= 3"
        assert row["fitted_runs"] == row["seeds"], \
            f"frequency {row['frequency']}: {row['fitted_runs']}/{row['seeds']} runs reached 10% of the residual"
    for low, high in zip(rows, rows[1:]):
        assert high["time_to_10pct"] > low["time_to_10pct"], \
            f"frequency {high['frequency']} fitted at {high['time_to_10pct']:.1f}, not after frequency " \
            f"{low['frequency']} ({low['time_to_10pct']:.1f})"
    for row in rows[1:]:
        factor = row["time_ratio"] / row["eigenvalue_ratio"]
        assert 0.5 <= factor <= 2.0, \
            f"frequency {row['frequency']}: t_k/t_1 = {row['time_ratio']:.1f} vs λ_1/λ_k = " \
            f"{row['eigenvalue_ratio']:.1f} (factor {factor:.2f}, outside [0.5, 2])"


def smoke_check(results) -> None:
    """At toy scale (the highest frequency is not fitted yet): every amplitude is finite; at the end
    the relative residuals are ordered by frequency; the frequencies fitted in every run were
    fitted in order of frequency."""
    rows = summarize(results)
    assert len(rows) >= 2, f"smoke_check needs at least two frequencies of finished runs, got {len(rows)}"
    residuals = [row["final_relative_residual"] for row in rows]
    assert np.all(np.isfinite(residuals)), f"non-finite residuals {residuals}"
    assert residuals == sorted(residuals), f"final relative residuals not ordered by frequency: {residuals}"
    fitted = [row["time_to_10pct"] for row in rows if row["fitted_runs"] == row["seeds"]]
    assert len(fitted) >= 2 and fitted == sorted(fitted), f"times to 10% not increasing: {fitted}"


def plot(results):
    """Left: each frequency's relative residual amplitude against the step (log y; mean over runs),
    with the kernel prediction ``(1 − η λ_k / n)^t`` (dashed). Right: the times to 10% against
    frequency (log-log, mean ± std over seeds) and the kernel's prediction."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_res, ax_time = fig.subplots(1, 2)
    finished = results.finished("learning_rate", "n_points")
    curves = finished.curves if finished.curves is not None else finished.runs.iloc[:0]
    for i, k in enumerate(_frequencies(curves)):
        mean = curves.groupby("step")[[f"relative_residual_{k}", f"ntk_eigenvalue_{k}"]].mean()
        if mean.empty:  # nothing finished yet
            continue
        steps = np.concatenate([[0], mean.index.to_numpy()])
        ax_res.plot(steps, np.concatenate([[1.0], mean[f"relative_residual_{k}"]]), color=f"C{i}",
                    label=f"k = {k}: network")
        rate = float(curves["learning_rate"].mean() * mean[f"ntk_eigenvalue_{k}"].iloc[0] / curves["n_points"].mean())
        ax_res.plot(steps, np.maximum((1 - rate) ** steps, 1e-30), color=f"C{i}", ls="--", lw=1,
                    label=f"k = {k}: NTK (1 − ηλ_k/n)^t")
    ax_res.axhline(THRESHOLD, color="gray", lw=0.8, ls=":")
    ax_res.set(xlabel="GD step", ylabel="|r̂_k(t)| / |r̂_k(0)|", yscale="log", ylim=(1e-4, 2),
               title="Residual per frequency")
    legend(ax_res, fontsize=7)
    rows = [r for r in summarize(results) if np.isfinite(r["time_to_10pct"])]
    if rows:
        k = [r["frequency"] for r in rows]
        ax_time.errorbar(k, [r["time_to_10pct"] for r in rows], yerr=[r["time_std"] for r in rows], marker="o",
                         capsize=3, label="network (mean ± std)")
        ax_time.plot(k, [r["predicted_time"] for r in rows], "k--", marker="x",
                     label="analytic NTK: ln 10 / −ln(1 − ηλ_k/n)")
    ax_time.set(xscale="log", yscale="log", xlabel="frequency k", ylabel="steps to 10% of the residual",
                title="Time to fit each frequency")
    if rows:
        ax_time.set_xticks(k, [str(v) for v in k])  # after the log scale, which resets the ticks
        ax_time.xaxis.set_minor_formatter("")
    legend(ax_time, fontsize=8)
    fig.tight_layout()
    return fig
