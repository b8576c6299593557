"""Sharding a group's member axis over local devices (8 emulated CPU devices, see conftest).

Ground truth is the same group forced onto one device (``devices=1``, the unsharded program):
final states and metrics must agree to float32 round-off, the padding must never reach disk,
and a group must resume from a checkpoint written under either placement.
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import runner
from jaxlearn.runner import execute, placement, store

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"width": 8, "d_in": 4, "teacher_width": 4, "n_train": 64, "batch_size": 16, "num_steps": 40,
        "segment_steps": 10, "snapshots": [20]}
ATOL = RTOL = 1e-6


# --- the placement helper ---------------------------------------------------------------------

def test_local_devices_picks_min_of_request_members_and_local():
    local = jax.local_devices()
    assert len(local) == 8
    assert placement.local_devices(None, 5) == local[:5]
    assert placement.local_devices(None, 20) == local
    assert placement.local_devices(3, 5) == local[:3]
    assert placement.local_devices(64, 2) == local[:2]
    assert placement.local_devices(1, 5) == local[:1]
    with pytest.raises(ValueError, match="devices must be a positive int or None, got 0"):
        placement.local_devices(0, 5)
    for bad in ("2", 2.0, True):
        with pytest.raises(TypeError, match="devices must be a positive int or None"):
            placement.local_devices(bad, 5)


def test_placement_pads_with_the_last_member_and_shards_the_member_axis():
    place = placement.Placement(jax.local_devices()[:3], 5)
    assert (place.count, place.padded) == (3, 6)
    tree = {"w": np.arange(10.0).reshape(5, 2), "key": jax.random.split(jax.random.key(0), 5)}
    put = place.put(tree)
    np.testing.assert_array_equal(put["w"], np.concatenate([tree["w"], tree["w"][-1:]]))
    np.testing.assert_array_equal(jax.random.key_data(put["key"])[5], jax.random.key_data(tree["key"])[4])
    for leaf in jax.tree.leaves(put):
        assert leaf.sharding.device_set == set(jax.local_devices()[:3])
        assert leaf.sharding.shard_shape(leaf.shape)[0] == 2
    mask = place.mask(np.array([True, False, True, True, True]))
    np.testing.assert_array_equal(mask, [True, False, True, True, True, False])
    assert mask.sharding.shard_shape(mask.shape) == (2,)
    host = place.host(put)
    assert isinstance(host["w"], np.ndarray) and host["w"].shape == (5, 2)
    np.testing.assert_array_equal(host["key"], jax.random.key_data(tree["key"]))
    np.testing.assert_array_equal(place.take({"m": np.arange(6)})["m"], np.arange(5))
    data = place.replicate((jnp.ones(3),))
    assert data[0].sharding.is_fully_replicated and len(data[0].sharding.device_set) == 3
    single = placement.Placement(jax.local_devices()[:1], 5)
    assert single.put(tree) is tree and single.host(tree) is tree and single.replicate(tree) is tree


# --- a 5-member group (one diverging) end to end -----------------------------------------------

@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("teacher_student", [REPO])


@pytest.fixture(scope="module")
def configs(experiment):
    cs = runner.expand(experiment.config_cls, TINY, {"seed": runner.Axis((0, 1, 2, 3, 4), "list")})
    return [*cs[:4], dataclasses.replace(cs[4], learning_rate=1e4)]  # the last (padded) one diverges


def sweep(experiment, configs, root, devices, hook=None):
    return runner.run_sweep(experiment, configs, root=root, progress=False, devices=devices, hook=hook)


@pytest.fixture(scope="module")
def reference(experiment, configs, tmp_path_factory):
    root = tmp_path_factory.mktemp("one_device")
    report = sweep(experiment, configs, root, devices=1)
    assert list(report.computed.values()) == ["finished"] * 4 + ["diverged"]
    return root, report.run_ids


def assert_same_results(root, reference):
    ref_root, run_ids = reference
    for rid in run_ids:
        a, b = (store.run_dir(r, "teacher_student", rid) for r in (root, ref_root))
        status_a, status_b = (store.read_json(p / "status.json") for p in (a, b))
        assert (status_a["status"], status_a["diverged_step"]) == (status_b["status"], status_b["diverged_step"])
        for name in ("state_final.npz", "snapshots/step_00000020.npz"):  # no snapshot after divergence
            assert (a / name).exists() == (b / name).exists()
            if not (b / name).exists():
                continue
            with np.load(a / name) as x, np.load(b / name) as y:
                assert x.files == y.files
                for leaf in x.files:
                    assert x[leaf].dtype == y[leaf].dtype and x[leaf].shape == y[leaf].shape
                    np.testing.assert_allclose(x[leaf], y[leaf], rtol=RTOL, atol=ATOL, err_msg=leaf)
        rows_a, rows_b = store.read_jsonl(a / "metrics.jsonl"), store.read_jsonl(b / "metrics.jsonl")
        assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b] and len(rows_a) >= 1
        for ra, rb in zip(rows_a, rows_b):
            assert ra["step"] == rb["step"]
            np.testing.assert_allclose([ra[k] for k in ra], [rb[k] for k in ra], rtol=RTOL, atol=ATOL)
        final_a, final_b = status_a["final_metrics"], status_b["final_metrics"]
        assert final_a.keys() == final_b.keys() and "test_mse" in final_a
        np.testing.assert_allclose([final_a[k] for k in final_a], [final_b[k] for k in final_a], rtol=RTOL, atol=ATOL)


def test_sharded_group_equals_the_one_device_run(experiment, configs, reference, tmp_path, monkeypatch):
    seen = []
    advance = execute._Programs.advance

    def spying(self, length):
        fn = advance(self, length)

        def run(states, dynamic, active, data):
            out = fn(states, dynamic, active, data)
            seen.append((states, active, out[0]))
            return out

        return run

    monkeypatch.setattr(execute._Programs, "advance", spying)
    sweep(experiment, configs, tmp_path, devices=None)  # all 8 local devices: d = 5
    assert len(seen) == 4
    for states, active, new in seen:
        for leaf in jax.tree.leaves((states, active, new)):
            assert leaf.shape[0] == 5 and len(leaf.sharding.device_set) == 5
            assert leaf.sharding.shard_shape(leaf.shape)[0] == 1
    assert_same_results(tmp_path, reference)
    assert not any((tmp_path / "_groups").iterdir())


class CrashError(Exception):
    pass


def test_resume_across_placements_with_padding(experiment, configs, reference, tmp_path, monkeypatch):
    """Two devices (5 members padded to 6) until a crash after segment 0's commit, then one
    device until a crash after segment 1's commit, then two devices again to the end."""

    def crash_at(where):
        def maybe(point, index):
            if f"{point}:{index}" == where:
                raise CrashError(where)
        return maybe

    shapes = []
    init = execute._Programs.init
    monkeypatch.setattr(execute._Programs, "init",
                        lambda self, dyn: shapes.append(dyn["seed"].shape) or init(self, dyn))
    with pytest.raises(CrashError):
        sweep(experiment, configs, tmp_path, devices=2, hook=crash_at("after_commit:0"))
    with pytest.raises(CrashError):
        sweep(experiment, configs, tmp_path, devices=1, hook=crash_at("after_commit:1"))
    (group,) = (tmp_path / "_groups").iterdir()
    assert store.read_json(group / "committed.json")["segment"] == 1
    report = sweep(experiment, configs, tmp_path, devices=2)
    assert len(report.computed) == 5 and shapes == [(6,)]  # initialised once, padded; resumed twice
    assert_same_results(tmp_path, reference)
