"""Data-parallel training of one run: ``make_step(batch_sharding=...)`` splits each step's batch
over devices (8 emulated CPU devices, see conftest), and population_digits selects it with its
``data_parallel`` config field.

Ground truth is the same computation without a sharding (one device): the sharded steps must
agree to float round-off (1e-5 in float32, 1e-12 in float64), and the compiled program must be
really partitioned (``num_partitions`` and an ``all-reduce`` of the gradients in its HLO).
"""

import dataclasses
import functools
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlearn import data, nn, runner, train
from jaxlearn.runner import execute, store

REPO = pathlib.Path(__file__).resolve().parents[2]
N_DATA, D_IN, BATCH, STEPS, SEEDS = 64, 8, 16, 3, (0, 1)
NET = nn.mlp((16,), 4, activation="relu")


def _sharding(n):
    return None if n == 1 else NamedSharding(Mesh(np.asarray(jax.local_devices()[:n]), ("data",)),
                                             PartitionSpec("data"))


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_DATA, D_IN)).astype(jnp.result_type(float))
    return jnp.asarray(x), jnp.asarray(rng.integers(0, 4, size=N_DATA))


@functools.cache
def _compiled(n):
    """``jit(vmap(train))``: STEPS SGD-with-momentum steps of two members (seeds), lowered with
    the batch split over ``n`` devices (``n = 1``: no sharding), compiled once per ``n``."""
    opt = optax.sgd(0.1, momentum=0.9)
    step = train.make_step(NET.apply_with_state, train.softmax_cross_entropy, opt, batch_sharding=_sharding(n))
    spec = jax.ShapeDtypeStruct((1, D_IN), jnp.result_type(float))

    def member(seed, x, y):
        state = train.init(NET, opt, jax.random.key(seed), spec)
        return train.train(state, step, lambda k, i: data.get_batch(k, i, x, y, BATCH), STEPS)

    fn = jax.jit(jax.vmap(member, in_axes=(0, None, None)))
    return fn.lower(jnp.asarray(SEEDS), *_data()).compile()


def _key_data(tree):
    """Typed PRNG keys as their uint32 data, which compares like any array."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def _check_equal_to_one_device(n, tol):
    args = (jnp.asarray(SEEDS), *_data())
    hlo = _compiled(n).as_text()
    assert f"num_partitions={n}" in hlo and "all-reduce" in hlo
    assert "all-reduce" not in _compiled(1).as_text()
    (state, metrics), (ref_state, ref_metrics) = _compiled(n)(*args), _compiled(1)(*args)
    loss = np.asarray(ref_metrics["train"]["loss"])
    assert loss.shape == (len(SEEDS), STEPS) and np.all(np.abs(loss[:, -1] - loss[:, 0]) > 1e-3)  # it trains
    chex.assert_trees_all_close(_key_data((state, metrics)), _key_data((ref_state, ref_metrics)), rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 8])
def test_sharded_steps_equal_the_one_device_steps(n):
    _check_equal_to_one_device(n, 1e-5)


@pytest.mark.slow
@pytest.mark.float64
@pytest.mark.parametrize("n", [8])
def test_sharded_steps_equal_the_one_device_steps_float64(n):
    _check_equal_to_one_device(n, 1e-12)


def test_make_step_rejects_bad_batch_sharding():
    opt = optax.sgd(0.1)
    with pytest.raises(TypeError, match="make_step: batch_sharding must be a jax.sharding.Sharding or None, got str"):
        train.make_step(NET.apply_with_state, train.softmax_cross_entropy, opt, batch_sharding="data")
    step = train.make_step(NET.apply_with_state, train.softmax_cross_entropy, opt, batch_sharding=_sharding(4))
    state = jax.eval_shape(lambda: train.init(NET, opt, jax.random.key(0),
                                              jax.ShapeDtypeStruct((1, D_IN), jnp.float32)))
    x, y = jax.ShapeDtypeStruct((6, D_IN), jnp.float32), jax.ShapeDtypeStruct((6,), jnp.int32)
    with pytest.raises(ValueError, match=r"leading \(example\) axis divisible.*got shape \(6, 8\)"):
        jax.eval_shape(step, state, (x, y))  # traced only: rejected before anything compiles


# --- selected in a config: population_digits through the runner ------------------------------

TINY = {"widths": [16], "num_steps": 40, "segment_steps": 20, "batch_size": 16}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("population_digits", [REPO])


def _configs(experiment, data_parallel):
    return runner.expand(experiment.config_cls, {**TINY, "data_parallel": data_parallel},
                         {"seed": runner.Axis((0, 1), "list")})


@pytest.fixture(scope="module")
def reference(experiment, tmp_path_factory):
    root = tmp_path_factory.mktemp("one_device")
    report = runner.run_sweep(experiment, _configs(experiment, 1), root=root, progress=False)
    return {rid: store.read_json(store.run_dir(root, "population_digits", rid) / "status.json")["final_metrics"]
            for rid in report.run_ids}


@pytest.mark.slow
def test_population_digits_data_parallel_equals_one_device(experiment, reference, tmp_path, monkeypatch):
    """Two seeds with data_parallel=4, crashed after the first commit and resumed, give the
    single-device runs' final metrics; the runner does not also shard the member axis (it would
    compete for the devices): each step runs on the 4-device "data" mesh, both members on it."""
    seen = []
    advance = execute._Programs.advance

    def spying(self, length):
        fn = advance(self, length)

        def run(*args):
            out = fn(*args)
            seen.append(out[0])
            return out

        return run

    class CrashError(Exception):
        pass

    def crash(point, index):
        if f"{point}:{index}" == "after_commit:0":
            raise CrashError

    monkeypatch.setattr(execute._Programs, "advance", spying)
    configs = _configs(experiment, 4)
    with pytest.raises(CrashError):
        runner.run_sweep(experiment, configs, root=tmp_path, progress=False, devices=None, hook=crash)
    report = runner.run_sweep(experiment, configs, root=tmp_path, progress=False, devices=None)
    assert len(report.run_ids) == 2
    for rid, ref_rid in zip(report.run_ids, reference):  # the same seeds, in order
        status = store.read_json(store.run_dir(tmp_path, "population_digits", rid) / "status.json")
        assert status["status"] == "finished" and status["step"] == 40
        final, ref = status["final_metrics"], reference[ref_rid]
        assert final.keys() == ref.keys() and "test_accuracy" in final
        np.testing.assert_allclose([final[k] for k in final], [ref[k] for k in final], rtol=1e-5, atol=1e-5)
    assert len(seen) == 3  # segments 0 and 1 (segment 0 commits, crash), segment 1 again after the resume
    for states in seen:  # the step ran on the 4-device "data" mesh; the member axis is not sharded
        for leaf in jax.tree.leaves(states):
            assert leaf.shape[0] == 2 and len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated


def test_population_digits_validates_data_parallel(experiment):
    with pytest.raises(runner.ConfigError, match=r"data_parallel \(3\) must divide batch_size \(16\)"):
        _configs(experiment, 3)
    config = dataclasses.replace(_configs(experiment, 1)[0], data_parallel=16)
    with pytest.raises(ValueError, match=r"data_parallel \(16\) exceeds the 8 local devices"):
        experiment.module.batch_sharding(config)
    assert experiment.module.batch_sharding(_configs(experiment, 1)[0]) is None
