"""Test session setup.

* 8 emulated CPU devices so multi-device code paths run on a laptop (must be set before jax
  is imported, hence at the top of the root conftest).
* float64 checks run in their own process: with ``JAX_ENABLE_X64=1`` only tests marked
  ``float64`` are collected, without it only the others (``make test`` runs both processes).
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import pytest  # noqa: E402

X64 = bool(jax.config.jax_enable_x64)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        wants_x64 = item.get_closest_marker("float64") is not None
        (keep if wants_x64 == X64 else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def key():
    return jax.random.key(0)
