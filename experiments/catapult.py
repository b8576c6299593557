"""The catapult phase: above 2/λ₀ the loss spikes, the curvature falls below 2/η, and GD converges.

Lewkowycz, Bahri, Dyer, Sohl-Dickstein & Gur-Ari 2020 ("The large learning rate phase of deep
learning: the catapult mechanism", arXiv:2003.02218). Full-batch gradient descent with step ``η``
on the squared loss of a wide network whose curvature at initialisation is ``λ₀`` (the top
eigenvalue of the NTK, which for a wide network equals the top eigenvalue of the loss Hessian) has
three phases (§2, their Fig. 1 and Fig. 2): the *lazy* phase ``η < 2/λ₀``, where the loss falls
monotonically and the curvature stays at ``λ₀``; the *catapult* phase ``2/λ₀ < η < η_max``,
where the loss first grows exponentially (the top mode is unstable), the curvature then drops
until ``λ < 2/η`` and training converges in a flatter region; and divergence above ``η_max``.
For their solvable two-layer linear "uv" model ``f = vᵀ u x/√n`` (§2.1, trained on one example:
the update equations of ``f`` and ``λ`` close, ``f_{t+1} = (1 − ηλ_t + η²f_t y/n) f_t + …``,
``λ_{t+1} = λ_t + η f_t² (ηλ_t − 4)/n``) the curvature can only fall while ``ηλ < 4``, so
``η_max = 4/λ₀``; for wide ReLU networks they measured ``η_max ≈ 12/λ₀`` (§3, Fig. 5).

Here: ``n_train`` digits images (pixels scaled so ``‖x‖² = d``), scalar targets ``±1`` (even vs
odd digit), loss ``L = ½ · mean_examples (f(x) − y)²``; ``λ₀`` = the top eigenvalue of the Hessian
of *this* ``L`` at the member's initialisation (100 power iterations,
:func:`jaxlearn.landscape.top_eigenpair`), computed inside the program, and the step is
``η = learning_rate/λ₀``: the config's ``learning_rate`` is ``η·λ₀`` (a dynamic field — the whole
grid is one vmapped program, every member at its own multiple of its own ``λ₀``). Models (static
``model``): ``uv`` — ``f(x) = vᵀ U x/√(n d)`` (the uv model with ``d`` inputs: two NTK-parameterised
bias-free Dense layers, no nonlinearity) and ``relu`` — ``f(x) = vᵀ relu(√2 U x/√d)/√n``; width
``n``. Plain GD; a member whose loss exceeds ``divergence_loss`` (or is not finite) is frozen and
flagged ``diverged`` (so every run finishes with finite numbers). Per segment: ``train_loss``,
``lambda_max`` (warm-started power iteration on the current Hessian), ``lambda_eta`` (``λ·η``),
``loss_ratio`` (``L/L₀``), ``peak_loss_ratio`` (``max_t L_t/L₀`` so far), ``diverged``.

A run *catapults* when its loss rises above twice its initial value and it does not diverge.
Measured boundaries, per model and seed: the lower one halfway between the largest ``η·λ₀`` that
stays lazy and the smallest that catapults, the upper one halfway between the largest that does
not diverge and the smallest that does. Claims (``check``, means over ≥ 3 seeds): uv — lower
boundary within 20% of 2, upper within 20% of 4, lazy runs keep ``λ`` within 10% of ``λ₀``,
catapult runs end with ``λ·η < 2`` and a loss below ``L₀``; relu — lower boundary within 20% of 2
(the measured maximal ``η·λ₀`` is reported next to the paper's ≈ 12). ``paper`` variant
(configs/catapult.yaml: width 1024, 16 images, 300 steps, 29 rates from 0.5 to 40, seeds 0–2;
mean ± std over seeds):

=====  ==================  =========================================  ===============
model  lower boundary ηλ₀  maximal ηλ₀                                paper
=====  ==================  =========================================  ===============
uv     2.10 ± 0.07         4.00 ± 0 (divergence)                      2 and 4
relu   2.15 ± 0            no divergence up to 40; still fits the     2 and ≈ 12
                           data (final L < 1% L₀) up to 18.3 ± 2.9
=====  ==================  =========================================  ===============

Lazy runs end at ``λ/λ₀`` = 0.997 (uv) and 0.991 (relu); catapult runs at ``λ·η`` = 0.91 and 0.81.
Above ``η·λ₀ ≈ 24`` the ReLU network's first catapult kills every unit (constant output, ``λ = 0``,
loss stuck at 0.45 ``L₀``): it fails without diverging.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

PAPER_MAX = {"uv": 4.0, "relu": 12.0}  # η_max·λ₀: the uv model's bound (§2.1) and the ReLU networks' (§3)
CATAPULT_PEAK = 2.0  # a run catapults when max_t L_t > CATAPULT_PEAK · L₀
FITTED_LOSS = 0.01  # a run that did not diverge fitted the data when its final L < FITTED_LOSS · L₀


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a wide two-layer network trained by full-batch GD at ``η = learning_rate/λ₀``."""

    learning_rate: float = runner.dynamic(1.0, min=0.0, help="η·λ₀: the step in units of 1/λ₀ (the member's own "
                                                             "top Hessian eigenvalue at initialisation)")
    model: str = runner.static("uv", choices=("uv", "relu"), help="uv: f = vᵀUx/√(nd); relu: one ReLU hidden layer")
    width: int = runner.static(1024, min=1, help="hidden width n")
    n_train: int = runner.static(16, min=1, max=1438, help="digits training images (the full batch)")
    batch_size: int | None = runner.static(None, min=1, help="null: full-batch GD, the setting of the claim")
    num_steps: int = runner.static(300, min=1, help="training steps")
    segment_steps: int = runner.static(5, min=1, help="steps per segment (one logged point)")
    init_power_iters: int = runner.static(100, min=1, help="power iterations for λ₀ at initialisation")
    power_iters: int = runner.static(5, min=1, help="warm-started power iterations per logged λ")
    divergence_loss: float = runner.static(1e6, min=0.0, help="a loss above this (or not finite) freezes the "
                                                              "member as diverged")

    def __post_init__(self):
        runner.study.check_full_batch_gd(self, self.n_train, "n_train", "whose stability threshold is 2/η")


class CatapultState(NamedTuple):
    """A member: its ``train_state`` (plain GD: no optimizer state), its step ``eta = learning_rate/λ₀``,
    ``lambda0``, the initial loss ``loss0``, the largest loss so far ``peak_loss``, the ``diverged``
    flag and the current top Hessian eigenvector (the next measurement's warm start)."""

    train_state: train.TrainState
    eta: jax.Array
    lambda0: jax.Array
    loss0: jax.Array
    peak_loss: jax.Array
    diverged: jax.Array
    vector: Any


def model(config: Config):
    """The network (the ``model`` hook), NTK parameterisation, no biases, one output."""
    hidden = nn.Dense(config.width, parameterization="ntk", W_std=1.0 if config.model == "uv" else np.sqrt(2.0),
                      b_std=None)
    readout = nn.Dense(1, parameterization="ntk", b_std=None)
    return nn.serial(hidden, readout) if config.model == "uv" else nn.serial(hidden, nn.Relu(), readout)


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½ · mean_examples (f(x) − y)²`` (scalar outputs);
    ``λ₀`` and every threshold ``2/η`` refer to this normalisation."""
    del config

    def half_mean_squared_error(outputs, targets):
        return 0.5 * jnp.mean((outputs[..., 0] - targets) ** 2)

    return half_mean_squared_error


def data(config: Config) -> data_module.Arrays:
    """The first ``n_train`` digits training images, each scaled to ``‖x‖² = d``, targets ``+1`` for
    even digits and ``−1`` for odd; the test split the same way."""
    arrays = data_module.digits(seed=0).arrays()

    def scaled(x):
        x = jnp.asarray(x, jnp.float32)
        return x * jnp.sqrt(x.shape[-1] / jnp.sum(x ** 2, axis=-1, keepdims=True))

    def sign(y):
        return jnp.where(jnp.asarray(y) % 2 == 0, 1.0, -1.0).astype(jnp.float32)

    return data_module.Arrays(x_train=scaled(arrays.x_train[:config.n_train]),
                              y_train=sign(arrays.y_train[:config.n_train]),
                              x_test=scaled(arrays.x_test), y_test=sign(arrays.y_test))


def _loss_fn(config: Config, arrays):
    net, train_loss = model(config), loss(config)
    return lambda params: train_loss(net.apply(params, arrays.x_train), arrays.y_train)


def init(config: Config, key) -> CatapultState:
    """The member's network, ``λ₀`` (power iteration from a random start) and its step ``η``."""
    k_params, k_run, k_vector = jax.random.split(key, 3)
    arrays = data(config)
    params, model_state = model(config).init(k_params, jax.ShapeDtypeStruct((1, arrays.x_train.shape[1]),
                                                                            jnp.float32))
    loss_fn = _loss_fn(config, arrays)
    pair = landscape.top_eigenpair(loss_fn, params, landscape.random_unit_vector(k_vector, params),
                                   num_iters=config.init_power_iters)
    loss0 = loss_fn(params)
    state = train.TrainState(params, (), model_state, jnp.zeros((), jnp.int32), k_run)
    return CatapultState(state, config.learning_rate / pair.value, pair.value, loss0, loss0,
                         jnp.zeros((), jnp.bool_), pair.vector)


def segment(member: CatapultState, config: Config, arrays):
    """``segment_steps`` GD steps ``θ ← θ − η∇L`` (frozen once the loss passes ``divergence_loss``),
    then ``λ`` by warm-started power iteration."""
    loss_fn = _loss_fn(config, arrays)
    grad_fn = jax.value_and_grad(loss_fn)

    def body(carry, _):
        params, previous, peak, diverged = carry
        value, grads = grad_fn(params)
        newly = ~diverged & (~jnp.isfinite(value) | (value > config.divergence_loss))
        params = jax.tree.map(lambda p, q: jnp.where(newly, q, p), params, previous)  # back to a finite loss
        diverged = diverged | newly
        stepped = jax.tree.map(lambda p, g: p - member.eta * g, params, grads)
        following = jax.tree.map(lambda p, s: jnp.where(diverged, p, s), params, stepped)
        peak = jnp.where(diverged, peak, jnp.maximum(peak, value))
        return (following, params, peak, diverged), None

    start = member.train_state.params
    (params, _, peak, diverged), _ = jax.lax.scan(
        body, (start, start, member.peak_loss, member.diverged), None, length=config.segment_steps)
    pair = landscape.top_eigenpair(loss_fn, params, member.vector, num_iters=config.power_iters)
    state = member.train_state._replace(params=params, step=member.train_state.step + config.segment_steps)
    current = loss_fn(params)
    member = member._replace(train_state=state, peak_loss=peak, diverged=diverged, vector=pair.vector)
    return member, {"train_loss": current, "loss_ratio": current / member.loss0, "lambda_max": pair.value,
                    "lambda0": member.lambda0, "lambda_eta": pair.value * member.eta,
                    "peak_loss_ratio": peak / member.loss0, "diverged": diverged.astype(jnp.float32)}


# ----------------------------------------------------------------------------- results
_COLUMNS = ("model", "seed", "learning_rate", "train_loss", "loss_ratio", "lambda_max", "lambda0", "lambda_eta",
            "peak_loss_ratio", "diverged")


def _phase(run) -> str:
    if run["diverged"] > 0:
        return "diverged"
    return "catapult" if run["peak_loss_ratio"] > CATAPULT_PEAK else "lazy"


def _midpoint(below: list[float], above: list[float]) -> float | None:
    """Halfway between the largest rate of ``below`` and the smallest of ``above`` (None if either is empty)."""
    return 0.5 * (max(below) + min(above)) if below and above else None


def _boundaries(runs) -> list[dict]:
    """Per model and seed: the measured lower (lazy → catapult) and upper (→ divergence) boundary in
    units of ``η·λ₀``, and the phase of every rate."""
    rows = []
    for (name, seed), part in runs.groupby(["model", "seed"]):
        phases = {float(r["learning_rate"]): _phase(r) for _, r in part.iterrows()}
        lazy = [c for c, p in phases.items() if p == "lazy"]
        caught = [c for c, p in phases.items() if p != "lazy"]  # catapulted or diverged: not lazy
        stable = [c for c, p in phases.items() if p != "diverged"]
        diverged = [c for c, p in phases.items() if p == "diverged"]
        fitted = {float(r["learning_rate"]) for _, r in part.iterrows()
                  if r["diverged"] == 0 and r["loss_ratio"] < FITTED_LOSS}
        failed = [c for c in phases if c not in fitted]
        first_failure = min(failed, default=None)
        rows.append({"model": name, "seed": int(seed), "lower": _midpoint(lazy, caught),
                     "upper": _midpoint(stable, diverged), "largest_stable": max(stable, default=None),
                     "trainable": None if first_failure is None else
                     _midpoint([c for c in fitted if c < first_failure], [first_failure]),
                     "phases": phases})
    return rows


def _spread(values) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)


def summarize(results) -> list[dict]:
    """Per model: the measured boundaries (mean and std over seeds; ``max_rate`` None where no rate
    of the grid diverged), the paper's, the largest rate that did not diverge, ``max_fitting_rate``
    (halfway between the first rate whose run diverged or ended above ``FITTED_LOSS·L₀`` and the
    largest smaller rate that fitted), and per phase the mean final ``λ/λ₀`` and ``λ·η``."""
    runs = results.finished(*_COLUMNS).runs
    rows = []
    for name in sorted(runs["model"].unique()) if len(runs) else []:
        part = runs[runs.model == name]
        bounds = [b for b in _boundaries(part)]
        lower, lower_std = _spread([b["lower"] for b in bounds])
        upper, upper_std = _spread([b["upper"] for b in bounds])
        row = {"model": name, "seeds": len(bounds), "lower_boundary": lower, "lower_std": lower_std,
               "paper_lower": 2.0, "max_rate": upper, "max_rate_std": upper_std, "paper_max_rate": PAPER_MAX[name],
               "largest_stable_rate": _spread([b["largest_stable"] for b in bounds])[0],
               "max_fitting_rate": _spread([b["trainable"] for b in bounds])[0],
               "max_fitting_rate_std": _spread([b["trainable"] for b in bounds])[1]}
        phases = part.apply(_phase, axis=1)
        for phase in ("lazy", "catapult"):
            chosen = part[phases == phase]
            row[f"{phase}_runs"] = len(chosen)
            row[f"{phase}_final_lambda_over_lambda0"] = float((chosen.lambda_max / chosen.lambda0).mean()) \
                if len(chosen) else None
            row[f"{phase}_final_lambda_eta"] = float(chosen.lambda_eta.mean()) if len(chosen) else None
        rows.append(row)
    return rows


def _seeds_of(bounds, name, need: int) -> list[dict]:
    chosen = [b for b in bounds if b["model"] == name]
    assert len(chosen) >= need, f"{name}: {len(chosen)} seeds finished, need {need}"
    return chosen


def _check_boundary(chosen, key: str, expected: float, name: str) -> float:
    values = [b[key] for b in chosen]
    assert None not in values, f"{name}: the {key} boundary is not bracketed by the grid for every seed: {values}"
    mean = float(np.mean(values))
    assert abs(mean / expected - 1) <= 0.2, \
        f"{name}: measured {key} boundary η·λ₀ = {mean:.2f} (seeds {values}) not within 20% of {expected:g}"
    return mean


def _check_uv_phases(runs) -> None:
    """Lazy uv runs keep λ within 10% of λ₀; catapult uv runs end below 2/η with a loss below L₀."""
    uv = runs[runs.model == "uv"]
    for _, r in uv.iterrows():
        where, phase = f"uv η·λ₀={r['learning_rate']:g} seed {r['seed']}", _phase(r)
        if phase == "lazy":
            assert abs(r["lambda_max"] / r["lambda0"] - 1) <= 0.1, \
                f"{where}: lazy, but λ/λ₀ = {r['lambda_max'] / r['lambda0']:.3f} moved more than 10%"
        elif phase == "catapult":
            assert r["lambda_eta"] < 2 and r["loss_ratio"] < 1, \
                f"{where}: catapulted but ends at λ·η = {r['lambda_eta']:.3f}, L/L₀ = {r['loss_ratio']:.3g}"


def check(results) -> None:
    """uv: lower boundary within 20% of 2 and upper within 20% of 4 (means over ≥ 3 seeds), lazy
    runs keep λ, catapult runs end with λ·η < 2 and L < L₀; relu: lower boundary within 20% of 2."""
    runs = results.finished(*_COLUMNS).runs
    bounds = _boundaries(runs)
    uv = _seeds_of(bounds, "uv", 3)
    _check_boundary(uv, "lower", 2.0, "uv")
    _check_boundary(uv, "upper", 4.0, "uv")
    _check_uv_phases(runs)
    _check_boundary(_seeds_of(bounds, "relu", 3), "lower", 2.0, "relu")


def smoke_check(results) -> None:
    """At toy scale (uv, one seed, rates 1, 3, 6): the three phases in order — lazy (λ kept within
    10%), catapult (the loss spikes, then ends below L₀ with λ·η < 2), diverged."""
    runs = results.finished(*_COLUMNS).runs
    assert len(runs), "no finished runs"
    _check_uv_phases(runs)
    for _, r in runs.iterrows():
        c = float(r["learning_rate"])
        expected = "lazy" if c < 2 else "catapult" if c < 4 else "diverged"
        assert _phase(r) == expected, f"uv η·λ₀={c:g} seed {r['seed']}: {_phase(r)}, expected {expected}"


def plot(results):
    """The paper's phase diagram (Fig. 2) against ``η·λ₀``: the final ``λ/λ₀`` and ``λ·η`` (left),
    peak and final loss over ``L₀`` (middle; diverged runs at the top), with the lines 2, 4 and 12;
    and the loss and ``λ·η`` trajectories of the uv model at three rates (right)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(14, 4))
    ax_lam, ax_loss, ax_traj = fig.subplots(1, 3)
    finished = results.finished(*_COLUMNS)
    runs = finished.runs
    for i, name in enumerate(sorted(runs["model"].unique()) if len(runs) else []):
        part = runs[runs.model == name].groupby("learning_rate")
        final = part[["lambda_max", "lambda0", "lambda_eta", "peak_loss_ratio", "loss_ratio", "diverged"]].mean()
        stable = final[final.diverged == 0]
        rates = stable.index.to_numpy()
        marker = "os"[i % 2]
        ax_lam.plot(rates, stable.lambda_max / stable.lambda0, marker + "-", ms=4, label=f"{name}: λ_final/λ₀")
        ax_lam.plot(rates, stable.lambda_eta, marker + "--", ms=4, label=f"{name}: λ_final·η")
        ax_loss.plot(final.index, final.peak_loss_ratio, marker + "-", ms=4, label=f"{name}: peak L/L₀")
        ax_loss.plot(rates, stable.loss_ratio, marker + ":", ms=4, label=f"{name}: final L/L₀")
    for ax in (ax_lam, ax_loss):
        for c, style in ((2, "--"), (4, "-."), (12, ":")):
            ax.axvline(c, color="gray", ls=style, lw=1)
        ax.set(xscale="log", xlabel="η·λ₀")
    ax_lam.set(ylabel="final curvature", yscale="log", title="Curvature after training (λ·η < 2 lines up)")
    ax_lam.axhline(2, color="k", lw=0.5)
    ax_loss.set(ylabel="loss / L₀", yscale="log", title="Peak and final loss (2, 4, 12 marked)")
    curves = finished.curves
    uv = curves[curves.model == "uv"] if len(curves) else curves
    rates = sorted(uv["learning_rate"].unique()) if len(uv) else []
    picks = [min(rates, key=lambda c: abs(c - target)) for target in (1.0, 3.0, 4.5)] if rates else []
    for c in dict.fromkeys(picks):
        run = uv[uv.learning_rate == c].sort_values("step")
        run = run[run.run_id == run.run_id.iloc[0]]
        line, = ax_traj.plot(run.step, run.loss_ratio, label=f"η·λ₀={c:g}: L/L₀")
        ax_traj.plot(run.step, run.lambda_eta, "--", color=line.get_color(), label="  λ·η")
    ax_traj.set(xlabel="step", yscale="log", title="uv model: loss and λ·η over training")
    if picks:
        ax_traj.set_ylim(top=1e4)  # a diverged (frozen) run's loss would squash the other two
    for ax in (ax_lam, ax_loss, ax_traj):
        legend(ax, fontsize=7)
    fig.tight_layout()
    return fig
