"""A small model zoo built from the layer algebra.

Every builder returns a :class:`~jaxlearn.nn.Layer`, so the models train, vmap, and (where every
layer has a kernel map) have analytic infinite-width kernels. ``mlp``, ``cnn``, ``resnet`` and
``embedding_mlp`` pass ``parameterization``, ``W_std`` and ``b_std`` through to every weight layer
(the Embedding has no bias); under ``"mup"`` the roles are assigned by position (first weight
layer ``input``, last ``output``, the rest ``hidden``). ``transformer`` is a flax linen module
behind :func:`~jaxlearn.nn.from_linen`, with flax's initialisers and no parameterization options.
"""

from __future__ import annotations

from typing import Sequence

from jaxlearn._types import Scalar
from jaxlearn.nn import parameterization as P
from jaxlearn.nn.activations import activation as activation_by_name
from jaxlearn.nn.core import Layer, LayerError, residual, serial
from jaxlearn.nn.linear import Conv, Dense, Embedding
from jaxlearn.nn.normalization import LayerNorm
from jaxlearn.nn.pooling import Flatten, GlobalAvgPool
from jaxlearn.nn.transformer import transformer

__all__ = ["mlp", "cnn", "resnet", "embedding_mlp", "transformer"]


def _roles(name: str, n_weight_layers: int, parameterization: str):
    if parameterization != "mup":
        return [None] * n_weight_layers
    if n_weight_layers == 1:
        raise LayerError(f"{name}: mup needs at least two weight layers (an input and an output layer)")
    return ["input"] + ["hidden"] * (n_weight_layers - 2) + ["output"]


def _widths(name, arg, widths):
    widths = list(widths)
    for i, w in enumerate(widths):
        P.check_positive_int(name, f"{arg}[{i}]", w)
    return widths


def _dense_stack(widths, out_dim, activation, parameterization, W_std, b_std, roles):
    """``Dense(w_1) → act → … → Dense(out_dim)`` with the given mup roles (one per Dense)."""
    layers = []
    for w, role in zip(widths, roles):
        layers += [Dense(w, W_std, b_std, parameterization, role), activation_by_name(activation)]
    layers.append(Dense(out_dim, W_std, b_std, parameterization, roles[-1]))
    return serial(*layers)


def mlp(
    widths: Sequence[int],
    out_dim: int,
    activation: str = "relu",
    parameterization: str = "standard",
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
) -> Layer:
    """``Dense(w_1) → act → … → Dense(w_L) → act → Dense(out_dim)`` on the last axis.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> model = nn.mlp([16], 3, activation="relu", W_std=2**0.5)
        >>> params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> [p["W"].shape for p in params if p]
        [(4, 16), (16, 3)]
    """
    widths = _widths("mlp", "widths", widths)
    P.check_positive_int("mlp", "out_dim", out_dim)
    roles = _roles("mlp", len(widths) + 1, parameterization)
    return _dense_stack(widths, out_dim, activation, parameterization, W_std, b_std, roles)


def cnn(
    channels: Sequence[int],
    out_dim: int,
    filter_shape: Sequence[int] = (3, 3),
    activation: str = "relu",
    parameterization: str = "standard",
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
) -> Layer:
    """``[Conv(c, SAME) → act]*`` then global average pooling and a Dense readout.

    ``filter_shape`` of length 1 gives a 1-D CNN (NWC inputs), of length 2 a 2-D one (NHWC).
    """
    channels = _widths("cnn", "channels", channels)
    P.check_positive_int("cnn", "out_dim", out_dim)
    roles = _roles("cnn", len(channels) + 1, parameterization)
    layers = []
    for c, role in zip(channels, roles):
        layers += [Conv(c, filter_shape, padding="SAME", W_std=W_std, b_std=b_std,
                        parameterization=parameterization, role=role), activation_by_name(activation)]
    layers += [GlobalAvgPool(), Dense(out_dim, W_std, b_std, parameterization, roles[-1])]
    return serial(*layers)


def resnet(
    width: int,
    num_blocks: int,
    out_dim: int,
    filter_shape: Sequence[int] = (3, 3),
    activation: str = "relu",
    parameterization: str = "standard",
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
    layer_norm: bool = False,
) -> Layer:
    """A ResNet-style CNN: a stem ``Conv(width)``, ``num_blocks`` pre-activation residual blocks
    ``x + Conv(act(Conv(act(x))))`` (optionally LayerNorm first), global average pooling, Dense.

    Convolutions use SAME padding so every block keeps the shape its shortcut needs.
    """
    P.check_positive_int("resnet", "width", width)
    P.check_positive_int("resnet", "num_blocks", num_blocks)
    P.check_positive_int("resnet", "out_dim", out_dim)
    hidden = "hidden" if parameterization == "mup" else None

    def conv(role):
        return Conv(width, filter_shape, padding="SAME", W_std=W_std, b_std=b_std,
                    parameterization=parameterization, role=role)

    blocks = []
    for _ in range(num_blocks):
        body = [LayerNorm()] if layer_norm else []
        body += [activation_by_name(activation), conv(hidden), activation_by_name(activation), conv(hidden)]
        blocks.append(residual(*body))
    roles = _roles("resnet", 2, parameterization)
    return serial(conv(roles[0]), *blocks, activation_by_name(activation), GlobalAvgPool(),
                  Dense(out_dim, W_std, b_std, parameterization, roles[-1]))


def embedding_mlp(
    vocab_size: int,
    embed_dim: int,
    widths: Sequence[int],
    out_dim: int,
    activation: str = "relu",
    parameterization: str = "standard",
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
) -> Layer:
    """For algorithmic tasks on token sequences ``(N, T)`` (e.g. modular arithmetic ``(a, b)``):
    ``Embedding → Flatten → mlp(widths, out_dim)``. Under ``"mup"`` the Embedding is the input
    layer, so the Dense layers are hidden except the last (output)."""
    widths = _widths("embedding_mlp", "widths", widths)
    P.check_positive_int("embedding_mlp", "embed_dim", embed_dim)
    P.check_positive_int("embedding_mlp", "out_dim", out_dim)
    roles = _roles("embedding_mlp", len(widths) + 2, parameterization)
    body = _dense_stack(widths, out_dim, activation, parameterization, W_std, b_std, roles[1:])
    return serial(Embedding(vocab_size, embed_dim, W_std, parameterization), Flatten(), body)
