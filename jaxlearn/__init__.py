"""jaxlearn: a JAX library for the science of deep learning.

Every object is a pure function or a pytree, so models, data pipelines and training loops
compose with ``jit``, ``vmap`` and ``grad``.

``data``, ``nn`` and ``train`` are imported with the package; ``kernels``, ``landscape``,
``rules``, ``analysis``, ``runner`` and ``compat`` on first use (``jaxlearn.landscape``), so ``import jaxlearn`` does
not pay for pandas, SQLite or matplotlib.
"""

import importlib

from jaxlearn import data, nn, train

__version__ = "0.1.0"
__all__ = ["analysis", "compat", "data", "kernels", "landscape", "nn", "rules", "runner", "train", "__version__"]

_LAZY = ("analysis", "compat", "kernels", "landscape", "rules", "runner")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"jaxlearn.{name}")
    raise AttributeError(f"module 'jaxlearn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
