"""The top-level package: every sub-package is reachable as an attribute of ``jaxlearn``."""

import subprocess
import sys

import pytest

import jaxlearn


@pytest.mark.parametrize("name", jaxlearn.__all__)
def test_public_names_resolve(name):
    assert getattr(jaxlearn, name) is not None


def test_heavy_subpackages_load_lazily():
    code = ("import sys, jaxlearn; heavy = {'pandas', 'matplotlib', 'sqlite3'} & set(sys.modules); "
            "assert not heavy, heavy; jaxlearn.landscape.hvp; jaxlearn.runner.load")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        jaxlearn.nope  # noqa: B018
