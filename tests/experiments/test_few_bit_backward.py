"""Few-bit backward (Novikov et al. 2023) through the study's hooks: members with the same seed
are paired (same initial weights, same forward function), the memory metrics match a by-hand
count of the network's saved arrays, and the check's paired statistics are NumPy's."""

import pathlib

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"widths": (16, 16), "batch_size": 32, "num_steps": 20, "segment_steps": 20,
        "optimizer": {"name": "adam", "schedule": "constant", "warmup_steps": 0}}


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("few_bit_backward", [REPO]).module


def test_same_seed_same_initial_network_for_every_backward(module):
    arrays = None
    outputs, params = {}, {}
    for bits in (0, 1, 2, 4):
        config = runner.parse_config(module.Config, {**TINY, "bits": bits})
        arrays = module.data(config)
        state = module.init(config, jax.random.key(7))
        params[bits] = state.params
        outputs[bits] = np.asarray(module.model(config).apply(state.params, arrays.x_test[:64]))
    for bits in (1, 2, 4):
        jax.tree.map(np.testing.assert_array_equal, params[bits], params[0])
        np.testing.assert_array_equal(outputs[bits], outputs[0])


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_memory_metrics_match_a_count_of_the_saved_arrays(module, bits):
    """Exact GELU keeps three float32 arrays per activation (12 bytes per entry) and a float32
    scalar, a b-bit one the packed codes (b/8 bytes); everything else the network saves is the
    same, so the two totals differ by exactly (12 − b/8) × (activation entries) + 4 per layer."""
    batch, widths, in_dim = 32, (16, 24), 40
    exact = module.residual_memory(0, widths, batch, in_dim)
    few = module.residual_memory(bits, widths, batch, in_dim)
    first = batch * widths[0]
    assert exact["activation_residual_bytes"] == (12 * first + 4) / first
    assert few["activation_residual_bytes"] == bits / 8
    entries = batch * sum(widths)
    difference = exact["network_residual_bytes"] - few["network_residual_bytes"]
    assert difference == (12 - bits / 8) * entries + 4 * len(widths)
    assert few["network_temp_bytes"] < exact["network_temp_bytes"]


def results(diffs, exact=0.7):
    rows = []
    for seed, d in enumerate(diffs):
        for bits, acc in ((0, exact + 0.01 * seed), (2, exact + 0.01 * seed + d)):
            rows.append({"run_id": f"{bits}-{seed}", "experiment": "few_bit_backward", "version": "1",
                         "status": "finished", "step": 10, "diverged_step": np.nan, "bits": bits, "seed": seed,
                         "test_accuracy": acc, "train_accuracy": 1.0,
                         "activation_residual_bytes": 12.0 if bits == 0 else bits / 8,
                         "network_residual_bytes": 1000.0 if bits == 0 else 500.0,
                         "network_temp_bytes": 900.0 if bits == 0 else 400.0})
    return runner.Results(pd.DataFrame(rows), None, ("bits", "seed"))


def test_check_uses_paired_differences_and_their_standard_error(module):
    diffs = np.array([-0.02, 0.01, -0.03, 0.0])
    row = {r["bits"]: r for r in module.summarize(results(diffs))}[2]
    assert row["diff_to_exact"] == pytest.approx(diffs.mean())
    assert row["diff_se"] == pytest.approx(diffs.std(ddof=1) / 2)
    module.check(results(diffs))                      # |−1.0| points ≤ max(1, 2 s.e. = 1.8)
    module.check(results([-0.005, -0.008, -0.006]))   # a small, consistent difference is within 1 point
    with pytest.raises(AssertionError, match="2-bit vs exact"):
        module.check(results([-0.03, -0.031, -0.029]))  # 3 points, s.e. 0.06
