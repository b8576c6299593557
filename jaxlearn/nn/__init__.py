"""jaxlearn.nn — the layer algebra: pure ``(init, apply, kernel)`` layers and combinators."""

from jaxlearn.nn import dual, zoo
from jaxlearn.nn.activations import (
    ACTIVATIONS,
    ABRelu,
    Elementwise,
    Erf,
    Gelu,
    LeakyRelu,
    Relu,
    Sigmoid,
    Sin,
    Softplus,
    Tanh,
    activation,
)
from jaxlearn.nn.core import (
    Identity,
    Layer,
    LayerError,
    as_spec,
    fanin_concat,
    fanin_sum,
    fanout,
    parallel,
    residual,
    serial,
)
from jaxlearn.nn.kernel import Kernel, input_kernel
from jaxlearn.nn.linear import Conv, Dense, Embedding
from jaxlearn.nn.normalization import BatchNorm, Dropout, LayerNorm
from jaxlearn.nn.parameterization import MUP_ROLES, PARAMETERIZATIONS
from jaxlearn.nn.pooling import AvgPool, Flatten, GlobalAvgPool
from jaxlearn.nn.zoo import cnn, embedding_mlp, mlp, resnet

__all__ = [
    "ACTIVATIONS", "ABRelu", "AvgPool", "BatchNorm", "Conv", "Dense", "Dropout", "Elementwise",
    "Embedding", "Erf", "Flatten", "Gelu", "GlobalAvgPool", "Identity", "Kernel", "Layer", "LayerError",
    "LayerNorm", "LeakyRelu", "MUP_ROLES", "PARAMETERIZATIONS", "Relu", "Sigmoid", "Sin",
    "Softplus", "Tanh", "activation", "as_spec", "dual", "fanin_concat", "fanin_sum", "fanout",
    "input_kernel",
    "from_linen", "from_nnx",
    "parallel", "residual", "serial", "zoo", "mlp", "cnn", "resnet", "embedding_mlp",
]


def __getattr__(name):
    # The flax adapters import flax (~0.5 s); load them on first use, not with jaxlearn.nn.
    if name in ("from_linen", "from_nnx"):
        from jaxlearn.nn import flax_adapters

        return getattr(flax_adapters, name)
    raise AttributeError(f"module 'jaxlearn.nn' has no attribute {name!r}")
