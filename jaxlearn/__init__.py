"""jaxlearn: a JAX library for the science of deep learning.

Every object is a pure function or a pytree, so models, data pipelines and training loops
compose with ``jit``, ``vmap`` and ``grad``.
"""

from jaxlearn import data, nn, train

__version__ = "0.1.0"
__all__ = ["data", "nn", "train", "__version__"]
