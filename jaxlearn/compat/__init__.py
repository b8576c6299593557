"""Compatibility layers: other libraries' public APIs on jaxlearn's implementations.

* :mod:`jaxlearn.compat.neural_tangents` — neural-tangents 0.6.5 (``nt.stax``, ``nt.predict``,
  ``nt.empirical_*_fn``, ``nt.batch``, ...): ``from jaxlearn.compat import neural_tangents as nt``
  ports code written for it by changing that one import.
"""

import importlib

__all__ = ["neural_tangents"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"jaxlearn.compat.{name}")
    raise AttributeError(f"module 'jaxlearn.compat' has no attribute {name!r}")
