"""Deep linear networks: sigmoidal mode-by-mode learning, and depth-independent learning times.

Saxe, McClelland & Ganguli 2014 ("Exact solutions to the nonlinear dynamics of learning in deep
linear neural networks", ICLR; arXiv:1312.6120). A linear network ``y = W_D ⋯ W_1 x`` trained by
gradient descent on ``L = ½ E‖y − W_D⋯W_1 x‖²`` with whitened inputs (``Σxx = E[x xᵀ] = I``)
sees only the input-output correlation ``Σyx = M = U S Vᵀ`` (the target map, singular values
``s_α``). Gradient flow with time constant ``τ`` (§1, "the dynamics of learning"):

    τ dW_1/dt = W_2ᵀ (Σyx − W_2 W_1),      τ dW_2/dt = (Σyx − W_2 W_1) W_1ᵀ          (D = 2).

Started *decoupled* — ``W_1 = R diag(a) Vᵀ``, ``W_2 = U diag(b) Rᵀ``, ``R`` any orthogonal
hidden rotation — each mode ``α`` keeps its singular vectors and its strength
``u_α = u_αᵀ W_2 W_1 v_α = a_α b_α`` obeys ``τ ȧ = b(s − ab)``, ``τ ḃ = a(s − ab)``. With balanced
``a = b`` that is ``τ u̇ = 2u(s − u)``, whose solution (the paper's closed-form 3-layer trajectory,
§1) is the sigmoid

    u(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/u_0),      t_half = τ/(2s) · ln((s − u_0)/u_0)

(``t_half``: the time to ``u = s/2``, the paper's learning time ``τ/(2s) ln(u_f(s − u_0)/(u_0(s − u_f)))``
at ``u_f = s/2``): from a small ``u_0`` each mode sits on a plateau and then rises within
``~τ/s``, stronger modes first. For ``D`` weight matrices (the paper's ``N_l = D + 1`` layers, §3)
the reduced dynamics become ``τ u̇ = D u^{2−2/D}(s − u)``; from initial strengths of order one
(the paper's "special class of initial conditions", e.g. orthogonal layers whose product is an
isometry) and a learning rate scaled as ``1/D`` (§3: the largest stable rate falls as ``1/D``),
the number of steps to learn is finite and depth-independent, while scaled random Gaussian
layers (variance ``1/N``) — whose product has singular values spread over orders of magnitude —
learn more slowly the deeper they are (§3–4).

Here: ``N = len(singular_values)`` inputs, outputs and hidden units (square layers), ``n_train``
inputs whitened exactly (``XᵀX/n = I``), targets ``y = M x`` with ``U, V`` fixed rotations (data
seed 0; ``det M > 0``), loss ``½ mean_examples ‖f(x) − y‖²`` (so ``L = ½‖W_D⋯W_1 − M‖²_F``),
plain full-batch GD with step ``η = learning_rate / depth``: one step is ``Δt = 1``, ``τ = 1/η``.
Initial schemes (``init_scheme``, a dynamic switch):

0. ``decoupled`` — aligned with ``U, V``, every layer ``diag(u_0^{1/D})`` between random hidden
   rotations: each mode starts at ``u_0 = init_strength`` (criterion a).
1. ``aligned orthogonal`` — the same with ``u_0 = 1``: every layer orthogonal, the product
   ``U Vᵀ`` an isometry with all mode strengths 1 (the paper's depth-independent case, §3).
2. ``random orthogonal`` — independent Haar rotations (``SO(N)``), the product a random rotation
   (§4's random orthogonal initialisation; reported, not asserted: at ``N = 3`` the rotation the
   product must undo varies a lot between seeds).
3. ``gaussian`` — entries ``N(0, 1/N)`` (the "scaled random Gaussian" initialisation).

Rotations are drawn from ``SO(N)`` and ``det M > 0``: a square product whose determinant has the
wrong sign must pass through a singular map (a saddle) on its way to ``M``.

Measured inside the compiled program, at every step: ``half_step_α`` (the first step ``t`` with
``u_α(t) ≥ s_α/2``) and ``steps_to_loss`` (the first ``t`` with ``L(θ_t) < loss_fraction · ½Σs²``;
``−1`` until then); per segment: ``train_loss`` and the mode strengths ``mode_α = u_αᵀ W_tot v_α``.

Claims (``check``): (a) depth 2, decoupled small init: the measured strengths follow the closed
form within 3% RMS (over the modes and the steps logged up to twice the slowest mode's half time,
relative to ``s_α``), and the modes reach half
strength in the order of their singular values; (b) aligned orthogonal init, rate ``∝ 1/D``: the
mean steps to the fixed loss at depth 8 and depth 2 are within 2× of each other, while under the
Gaussian init depth 8 takes more than twice as long as depth 2. ``paper`` variant
(configs/deep_linear_dynamics.yaml: s = (3, 1.5, 0.75), η₀ = 0.02, u_0 = 1e-3, 4000 steps, loss
1% of ½Σs², seeds 0–4; mean ± std over the 5 seeds; ``≥``: runs that never reached the loss count
as 4000 steps):

===================  =========================  ===========================================
init                 steps to 1% loss, D=2/4/8  depth 2: half steps (s=3/1.5/0.75), RMS
===================  =========================  ===========================================
decoupled u0=1e-3    454 ± 0 / ≥4000 / ≥4000    135 / 246 / 443 ± 0 (closed form 133 / 244 /
                                                441); RMS 0.0033 ± 0
aligned orthogonal   49 ± 0 / 37 ± 0 / 33 ± 0
random orthogonal    167 ± 100 / 161 ± 71 /
                     650 ± 561
gaussian             297 ± 147 / ≥1880 ± 1356
                     / ≥3561 ± 878
===================  =========================  ===========================================

(The decoupled and aligned runs differ between seeds only by hidden rotations that cancel in the
product: their spread is zero. 1 of 5 Gaussian seeds at depth 4 and 4 of 5 at depth 8 never reached
the loss in 4000 steps.)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

SCHEMES = ("decoupled", "aligned orthogonal", "random orthogonal", "gaussian")
_DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a square deep linear network of ``depth`` weight matrices on a whitened task."""

    learning_rate: float = runner.dynamic(0.02, min=0.0, help="η₀: the GD step is η = η₀/depth (τ = 1/η steps)")
    depth: int = runner.static(2, min=2, help="weight matrices D (the paper's N_l − 1)")
    init_scheme: int = runner.dynamic(0, choices=(0, 1, 2, 3), help="0 decoupled (u_0 = init_strength), 1 aligned "
                                                                    "orthogonal, 2 random orthogonal, 3 gaussian")
    init_strength: float = runner.dynamic(1e-3, min=0.0, help="u_0 of every mode under the decoupled scheme")
    singular_values: tuple[float, ...] = runner.static((3.0, 1.5, 0.75), min=0.0, help="s_α of the target map")
    n_train: int = runner.static(32, min=1, help="training inputs (whitened exactly; >= len(singular_values))")
    loss_fraction: float = runner.static(0.01, min=0.0, help="the fixed loss of steps_to_loss, as a fraction "
                                                             "of the zero map's loss ½Σs²")
    batch_size: int | None = runner.static(None, min=1, help="null: full-batch GD (gradient flow with τ = 1/η)")
    num_steps: int = runner.static(4000, min=1, help="training steps")
    segment_steps: int = runner.static(20, min=1, help="steps per segment (one logged point)")

    def __post_init__(self):
        runner.study.check_full_batch_gd(self, self.n_train, "n_train", "the closed form is of gradient flow "
                                                                       "with τ = 1/η")
        if self.n_train < len(self.singular_values):
            raise ValueError(f"n_train: must be >= len(singular_values)={len(self.singular_values)} to whiten, "
                             f"got {self.n_train}")


class LinearState(NamedTuple):
    """A member: its ``train_state``, the first step each mode reached half strength
    (``half_step``, ``(N,)``, −1 before) and the first step the loss fell below the fixed loss
    (``loss_step``, −1 before)."""

    train_state: train.TrainState
    half_step: jax.Array
    loss_step: jax.Array


# ----------------------------------------------------------------------------- the mathematics
def mode_strength(t, s, u0, tau):
    """The closed-form strength ``u(t)`` of one mode of a 2-layer linear network (Saxe et al. 2014,
    §1) started decoupled and balanced at ``u(0) = u0 ∈ (0, s)``: the solution of
    ``τ u̇ = 2u(s − u)``, ``u(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/u0)``, written as
    ``s / (1 + (s/u0 − 1) e^{−2st/τ})`` (no overflow). Broadcasts over ``t, s, u0``; NumPy or JAX."""
    xp = jnp if any(isinstance(a, jax.Array) for a in (t, s, u0, tau)) else np
    return s / (1 + (s / u0 - 1) * xp.exp(-2 * s * t / tau))


def half_time(s, u0, tau):
    """The time at which :func:`mode_strength` reaches ``s/2``: ``τ/(2s) · ln((s − u0)/u0)`` (the
    paper's learning time ``τ/(2s) ln(u_f(s − u0)/(u0(s − u_f)))`` at ``u_f = s/2``)."""
    return tau / (2 * s) * np.log((s - u0) / u0)


def target_map(singular_values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, V)``: the target ``M = U diag(s) Vᵀ`` with ``U, V`` rotations (``det = +1``) drawn
    from data seed 0, so ``det M > 0``."""
    s = np.asarray(singular_values, np.float64)
    rng = np.random.default_rng(_DATA_SEED)
    return _rotation(rng, len(s)), s, _rotation(rng, len(s))


def _rotation(rng, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    q = q * np.sign(np.diag(r))  # Haar on O(n)
    q[:, 0] *= np.sign(np.linalg.det(q))  # ... restricted to SO(n)
    return q


def _rotations(normal):
    """Haar rotations (``SO(n)``) from standard normal matrices ``(count, n, n)``: the QR ``Q`` with
    ``diag R > 0`` is Haar on ``O(n)``; flipping the first column where ``det Q = −1`` maps it onto ``SO(n)``."""
    q, r = jnp.linalg.qr(normal)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return q.at[..., 0].multiply(jnp.sign(jnp.linalg.det(q))[..., None])


def _layer_matrices(config: Config, key) -> list:
    """The member's ``D`` weight matrices in column convention (``A_l``: ``h_l = A_l h_{l−1}``) for its
    ``init_scheme``; every scheme is built from one normal draw and one selected (a traced switch)."""
    u, _, v = (jnp.asarray(a, jnp.float32) for a in target_map(config.singular_values))
    n, depth = len(config.singular_values), config.depth
    normal = jax.random.normal(key, (3 * depth - 1, n, n))
    rotations = _rotations(normal[:2 * depth - 1])  # R_1 .. R_{D−1}, then D independent ones
    bases = [v, *rotations[:depth - 1], u]  # V, R_1, ..., R_{D−1}, U: A_l = a · B_l B_{l−1}ᵀ, so W_tot = a^D U Vᵀ
    aligned = jnp.stack([bases[l + 1] @ bases[l].T for l in range(depth)])
    candidates = [jnp.asarray(config.init_strength, jnp.float32) ** (1.0 / depth) * aligned, aligned,
                  rotations[depth - 1:], normal[2 * depth - 1:] / np.sqrt(n)]
    scheme = jnp.asarray(config.init_scheme)
    return list(jnp.select([scheme == i for i in range(len(SCHEMES))], candidates))


def product(params) -> jax.Array:
    """``W_tot = A_D ⋯ A_1`` (column convention) of the network's Dense params (``x ↦ x W_1 ⋯ W_D``)."""
    total = None
    for layer in params:
        total = layer["W"] if total is None else total @ layer["W"]
    return total.T


def mode_strengths(params, config: Config) -> jax.Array:
    """``u_α = u_αᵀ W_tot v_α`` for every mode of the target, ``(N,)``."""
    u, _, v = (jnp.asarray(a, jnp.float32) for a in target_map(config.singular_values))
    return jnp.einsum("ia,ij,ja->a", u, product(params), v)


# ----------------------------------------------------------------------------- the protocol
def model(config: Config):
    """The network (the ``model`` hook): ``depth`` square bias-free Dense layers, no nonlinearity."""
    return nn.serial(*[nn.Dense(len(config.singular_values), b_std=None) for _ in range(config.depth)])


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½ mean_examples ‖f(x) − y‖²`` — with whitened
    inputs ``½‖W_tot − M‖²_F`` up to a constant, so GD is the paper's flow with ``τ = 1/η``."""
    del config

    def half_squared_error(outputs, targets):
        return 0.5 * jnp.mean(jnp.sum((outputs - targets) ** 2, axis=-1))

    return half_squared_error


def data(config: Config) -> data_module.Arrays:
    """``n_train`` inputs with ``XᵀX/n = I`` exactly and targets ``y = M x``; 256 Gaussian test
    inputs with their targets."""
    u, s, v = target_map(config.singular_values)
    target = u @ np.diag(s) @ v.T
    rng = np.random.default_rng(_DATA_SEED + 1)
    q, _ = np.linalg.qr(rng.normal(size=(config.n_train, len(s))))
    x_train = np.sqrt(config.n_train) * q
    x_test = rng.normal(size=(256, len(s)))
    as32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return data_module.Arrays(x_train=as32(x_train), y_train=as32(x_train @ target.T),
                              x_test=as32(x_test), y_test=as32(x_test @ target.T))


def _optimizer(config: Config):
    return config.optimizer.build(config.learning_rate / config.depth, config.num_steps)


def init(config: Config, key) -> LinearState:
    """The member's network with its scheme's layers, and nothing measured yet."""
    spec = jax.ShapeDtypeStruct((1, len(config.singular_values)), jnp.float32)
    k_layers, k_run = jax.random.split(key)  # as jaxlearn.train.init splits it
    _, model_state = jax.eval_shape(model(config).init, k_layers, spec)  # () per layer: nothing drawn twice
    params = [{"W": a.T} for a in _layer_matrices(config, k_layers)]
    state = train.TrainState(params, _optimizer(config).init(params), model_state, jnp.zeros((), jnp.int32), k_run)
    n = len(config.singular_values)
    return LinearState(state, -jnp.ones((n,), jnp.int32), -jnp.ones((), jnp.int32))


def _first(marker, reached, t):
    return jnp.where((marker < 0) & reached, t, marker)


def segment(member: LinearState, config: Config, arrays):
    """``segment_steps`` full-batch GD steps; at every step the half-strength and fixed-loss markers."""
    step = train.make_step(model(config).apply_with_state, loss(config), _optimizer(config))
    s = jnp.asarray(config.singular_values, jnp.float32)
    fixed_loss = config.loss_fraction * 0.5 * float(np.sum(np.square(config.singular_values)))
    batch = (arrays.x_train, arrays.y_train)

    def body(carry, _):
        state, half, reached_loss = carry
        t = state.step
        half = _first(half, mode_strengths(state.params, config) >= s / 2, t)
        state, metrics = step(state, batch)  # metrics["loss"]: L(θ_t), before the update
        reached_loss = _first(reached_loss, metrics["loss"] < fixed_loss, t)
        return (state, half, reached_loss), None

    (state, half, reached_loss), _ = jax.lax.scan(body, tuple(member), None, length=config.segment_steps)
    outputs = model(config).apply(state.params, arrays.x_train)
    modes = mode_strengths(state.params, config)
    return LinearState(state, half, reached_loss), {
        "train_loss": loss(config)(outputs, arrays.y_train), "steps_to_loss": reached_loss.astype(jnp.float32),
        **{f"mode_{i}": modes[i] for i in range(len(config.singular_values))},
        **{f"half_step_{i}": half[i].astype(jnp.float32) for i in range(len(config.singular_values))}}


# ----------------------------------------------------------------------------- results
def _modes(row) -> list[float]:
    return list(row["singular_values"])


def _learning_window(s, u0, tau) -> float:
    """Twice the slowest mode's half time: the steps in which every mode is learned (the RMS and
    the plot cover these, not the long converged tail that would dilute the error)."""
    return 2 * float(np.max(half_time(np.asarray(s), u0, tau)))


def _closed_form_rms(curve, row) -> float:
    """RMS over the logged steps within :func:`_learning_window` and the modes of
    ``(u_measured − u_closed form)/s_α`` (2-layer form)."""
    s = np.asarray(_modes(row))
    tau = row["depth"] / row["learning_rate"]
    curve = curve[curve["step"] <= _learning_window(s, float(row["init_strength"]), tau)]
    t = curve["step"].to_numpy(np.float64)[:, None]
    measured = curve[[f"mode_{i}" for i in range(len(s))]].to_numpy(np.float64)
    predicted = mode_strength(t, s[None, :], float(row["init_strength"]), tau)
    return float(np.sqrt(np.mean(((measured - predicted) / s) ** 2)))


def _per_run(results):
    """Per finished run: its config, ``steps_to_loss`` (``num_steps`` where never reached, flagged),
    half steps and — decoupled init at depth 2 — the closed-form RMS."""
    finished = results.finished("depth", "init_scheme", "seed", "learning_rate", "init_strength", "singular_values",
                                "num_steps", "steps_to_loss", "train_loss")
    curves = finished.curves.sort_values(["run_id", "step"])
    rows = []
    for _, run in finished.runs.iterrows():
        n = len(_modes(run))
        row = {"run_id": run["run_id"], "depth": int(run["depth"]), "scheme": int(run["init_scheme"]),
               "seed": int(run["seed"]), "s": _modes(run), "reached": run["steps_to_loss"] >= 0,
               "steps_to_loss": float(run["steps_to_loss"] if run["steps_to_loss"] >= 0 else run["num_steps"]),
               "half_steps": [float(run[f"half_step_{i}"]) for i in range(n)], "rms": None}
        if row["scheme"] == 0 and row["depth"] == 2:
            row["rms"] = _closed_form_rms(curves[curves.run_id == run["run_id"]], run)
            tau = run["depth"] / run["learning_rate"]
            row["predicted_half_steps"] = [half_time(s, run["init_strength"], tau) for s in row["s"]]
        rows.append(row)
    return rows


def _groups(per_run) -> dict:
    groups = {}
    for r in per_run:
        groups.setdefault((r["depth"], r["scheme"]), []).append(r)
    return dict(sorted(groups.items()))


def summarize(results) -> list[dict]:
    """Per depth and init scheme (means and std over seeds): steps to the fixed loss (``≥`` where
    ``not_reached`` seeds are counted at ``num_steps``), the step each mode reached half strength,
    and for the decoupled 2-layer runs the closed-form RMS and predicted half steps."""
    rows = []
    for (depth, scheme), part in _groups(_per_run(results)).items():
        steps = np.array([r["steps_to_loss"] for r in part])
        row = {"depth": depth, "init": SCHEMES[scheme], "seeds": len(part), "steps_to_loss": float(steps.mean()),
               "steps_to_loss_std": float(steps.std()), "not_reached": int(sum(not r["reached"] for r in part))}
        for i, s in enumerate(part[0]["s"]):  # None where some seed never reached half strength
            halves = [r["half_steps"][i] for r in part]
            row[f"half_step(s={s:g})"] = float(np.mean(halves)) if min(halves) >= 0 else None
        if part[0]["rms"] is not None:
            rms = np.array([r["rms"] for r in part])
            row.update({"closed_form_rms": float(rms.mean()), "closed_form_rms_max": float(rms.max())})
            for i, s in enumerate(part[0]["s"]):
                row[f"predicted_half_step(s={s:g})"] = float(part[0]["predicted_half_steps"][i])
        rows.append(row)
    return rows


def _check_closed_form(groups) -> None:
    decoupled = groups.get((2, 0), [])
    assert decoupled, "no finished depth-2 run with the decoupled init (init_scheme 0)"
    for r in decoupled:
        assert r["rms"] <= 0.03, f"seed {r['seed']}: modes deviate from the closed form by {r['rms']:.4f} RMS > 0.03"
        order = np.argsort(r["s"])[::-1]
        halves = np.array(r["half_steps"])[order]
        assert np.all(halves >= 0) and np.all(np.diff(halves) > 0), \
            f"seed {r['seed']}: half-strength steps {halves.tolist()} not increasing with decreasing s"


def _mean_steps(groups, depth, scheme, *, reached=True) -> float:
    part = groups.get((depth, scheme), [])
    assert part, f"no finished depth-{depth} run with init {SCHEMES[scheme]!r}"
    if reached:
        late = [r["seed"] for r in part if not r["reached"]]
        assert not late, f"depth {depth}, {SCHEMES[scheme]}: seeds {late} never reached the fixed loss"
    return float(np.mean([r["steps_to_loss"] for r in part]))


def _depths(groups) -> tuple[int, int]:
    depths = sorted({d for d, _ in groups})
    assert len(depths) >= 2, f"needs two depths, got {depths}"
    return depths[0], depths[-1]


def check(results) -> None:
    """(a) depth 2, decoupled init: every seed within 3% RMS of the closed form, modes learned in
    the order of their singular values; (b) aligned orthogonal init with step η₀/D: mean steps to
    the fixed loss at the largest and smallest depth within 2×; scaled Gaussian init: the largest
    depth more than 2× slower. At least 3 seeds per setting."""
    groups = _groups(_per_run(results))
    for key in ((2, 0), (2, 1), (2, 3)):
        assert len(groups.get(key, [])) >= 3, f"depth {key[0]}, {SCHEMES[key[1]]}: fewer than 3 finished seeds"
    _check_closed_form(groups)
    shallow, deep = _depths(groups)
    ortho = _mean_steps(groups, shallow, 1), _mean_steps(groups, deep, 1)
    assert max(ortho) <= 2 * min(ortho), \
        f"aligned orthogonal: {ortho[0]:.0f} steps to loss at depth {shallow}, {ortho[1]:.0f} at {deep}: not within 2x"
    gauss = _mean_steps(groups, shallow, 3), _mean_steps(groups, deep, 3, reached=False)
    assert gauss[1] > 2 * gauss[0], \
        f"gaussian: depth {deep} takes {gauss[1]:.0f} steps, not more than 2x depth {shallow}'s {gauss[0]:.0f}"


def smoke_check(results) -> None:
    """At toy scale (one seed, fewer steps): the closed form and the order of learning (a) as in
    :func:`check`, aligned orthogonal depths within 2×, and the Gaussian init no faster deep than shallow."""
    groups = _groups(_per_run(results))
    _check_closed_form(groups)
    shallow, deep = _depths(groups)
    ortho = _mean_steps(groups, shallow, 1), _mean_steps(groups, deep, 1)
    assert max(ortho) <= 2 * min(ortho), f"aligned orthogonal: steps to loss {ortho} not within 2x"
    gauss = _mean_steps(groups, shallow, 3), _mean_steps(groups, deep, 3, reached=False)
    assert gauss[1] >= gauss[0], f"gaussian: depth {deep} ({gauss[1]:.0f} steps) faster than depth {shallow}"


def plot(results):
    """Left: mode strengths against steps, depth 2 from the decoupled init (markers: mean over
    seeds) and the closed-form sigmoids (lines) — the paper's Fig. 3. Right: steps to the fixed
    loss against depth, per init scheme (mean ± std over seeds; the dotted line: ``num_steps``,
    where runs that never reached it are counted)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_modes, ax_depth = fig.subplots(1, 2)
    finished = results.finished("depth", "init_scheme", "learning_rate", "init_strength", "singular_values")
    curves = finished.curves
    decoupled = curves[(curves.depth == 2) & (curves.init_scheme == 0)] if len(curves) else curves
    if len(decoupled):
        first = decoupled.iloc[0]
        s, tau = _modes(first), 2 / first["learning_rate"]
        mean = decoupled.groupby("step")[[f"mode_{i}" for i in range(len(s))]].mean()
        end = min(float(mean.index.max()), 1.5 * _learning_window(s, first["init_strength"], tau))
        mean = mean[mean.index <= end]
        t = np.linspace(0, end, 400)
        for i, s_i in enumerate(s):
            line, = ax_modes.plot(t, mode_strength(t, s_i, first["init_strength"], tau), lw=1.5,
                                  label=f"s = {s_i:g}: closed form")
            ax_modes.plot(mean.index, mean[f"mode_{i}"], "o", ms=3, color=line.get_color(), label="  simulation")
    ax_modes.set(xlabel="GD step (τ = 1/η)", ylabel="mode strength u_α", title="Depth 2, small decoupled init")
    legend(ax_modes, fontsize=8)
    groups = _groups(_per_run(results))
    for scheme, name in enumerate(SCHEMES):
        points = [(d, [r["steps_to_loss"] for r in part]) for (d, sc), part in groups.items() if sc == scheme]
        if points:
            depths = [d for d, _ in points]
            ax_depth.errorbar(depths, [np.mean(v) for _, v in points], yerr=[np.std(v) for _, v in points],
                              marker="o", capsize=3, label=name)
    limits = results.finished("num_steps").runs
    if len(limits):
        ax_depth.axhline(float(limits["num_steps"].max()), color="gray", ls=":", lw=1, label="num_steps (not reached)")
    ax_depth.set(xlabel="depth D (weight matrices; step η₀/D)", ylabel="steps to the fixed loss", yscale="log",
                 title="Learning time against depth")
    legend(ax_depth, fontsize=8)
    fig.tight_layout()
    return fig
