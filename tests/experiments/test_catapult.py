"""experiments/catapult.py: λ₀ against the dense Hessian (float64), the uv model against its
formula, the divergence freeze, and the boundary estimate on a known phase table."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import catapult


def _small(**kwargs):
    return catapult.Config(**{"width": 6, "n_train": 4, "init_power_iters": 300, **kwargs})


def _init(config, seed):
    return jax.jit(lambda key: catapult.init(config, key))(jax.random.key(seed))


@pytest.mark.float64
@pytest.mark.parametrize("name", ["uv", "relu"])
def test_lambda0_is_the_top_eigenvalue_of_the_dense_hessian(name):
    config = _small(model=name, learning_rate=3.0)
    member = _init(config, 1)
    arrays = catapult.data(config)
    params = member.train_state.params
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    hessian = jax.hessian(lambda w: catapult._loss_fn(config, arrays)(unravel(w)))(flat)
    top = np.linalg.eigvalsh(np.asarray(hessian)).max()
    assert float(member.lambda0) == pytest.approx(top, rel=1e-6)
    assert float(member.eta) == pytest.approx(3.0 / top, rel=1e-6)


def test_uv_model_and_the_divergence_freeze():
    """The uv network computes vᵀUx/√(nd) on inputs with ‖x‖² = d; a member far above 4/λ₀ is
    frozen as diverged with finite numbers and a loss no larger than divergence_loss."""
    config = _small(learning_rate=50.0, segment_steps=20, num_steps=20, divergence_loss=1e4)
    arrays = catapult.data(config)
    start = _init(config, 0)
    params, x = start.train_state.params, arrays.x_train
    u, v = params[0]["W"], params[1]["W"]  # (d, n), (n, 1)
    expected = x @ u @ v / np.sqrt(u.shape[0] * u.shape[1])
    np.testing.assert_allclose(catapult.model(config).apply(params, x), expected, rtol=1e-5)
    np.testing.assert_allclose(jnp.sum(x ** 2, axis=-1), x.shape[1], rtol=1e-5)
    member, metrics = jax.jit(lambda m: catapult.segment(m, config, arrays))(start)
    assert bool(member.diverged) and float(metrics["diverged"]) == 1.0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["train_loss"]) <= config.divergence_loss


def test_boundaries_bracket_the_phase_changes():
    rates = [1.0, 1.9, 2.1, 3.0, 3.9, 4.1, 5.0]
    runs = pd.DataFrame({"model": "uv", "seed": 0, "learning_rate": rates,
                         "peak_loss_ratio": [1.0, 1.0, 5.0, 40.0, 80.0, 90.0, 100.0],
                         "loss_ratio": [1e-3, 1e-3, 1e-3, 1e-3, 0.5, 1e3, 1e3], "diverged": [0, 0, 0, 0, 0, 1, 1]})
    (row,) = catapult._boundaries(runs)
    assert row["lower"] == pytest.approx(2.0) and row["upper"] == pytest.approx(4.0)
    assert row["trainable"] == pytest.approx(3.45)  # 3.9 ended above 1% of L₀
    assert [row["phases"][c] for c in rates] == ["lazy"] * 2 + ["catapult"] * 3 + ["diverged"] * 2
    (row,) = catapult._boundaries(runs[runs.learning_rate < 4])
    assert row["upper"] is None
