"""A small decoder-only transformer for algorithmic tasks, written in flax linen and adapted.

The architecture follows the one-layer model used to study grokking on modular arithmetic
(Power et al. 2022; Nanda et al. 2023): token + learned position embeddings, ``num_layers``
blocks of causal multi-head self-attention and a ReLU MLP, each added to the residual stream
(optional pre-LayerNorm), and an unembedding read at the last position.
"""

from __future__ import annotations

from jaxlearn.nn import parameterization as P
from jaxlearn.nn.core import Layer, LayerError

__all__ = ["transformer"]


def transformer(
    vocab_size: int,
    out_dim: int,
    seq_len: int,
    d_model: int = 128,
    num_heads: int = 4,
    d_mlp: int = 512,
    num_layers: int = 1,
    layer_norm: bool = False,
) -> Layer:
    """Integer tokens ``(N, seq_len)`` → logits ``(N, out_dim)`` read at the last position.

    Causal attention, so the last position sees the whole sequence. Initialisation: flax
    defaults (LeCun-normal kernels, zero biases), embeddings ``N(0, 1/d_model)``.
    """
    import flax.linen as linen
    import jax.numpy as jnp

    from jaxlearn.nn.flax_adapters import from_linen

    for name, value in [("vocab_size", vocab_size), ("out_dim", out_dim), ("seq_len", seq_len),
                        ("d_model", d_model), ("num_heads", num_heads), ("d_mlp", d_mlp),
                        ("num_layers", num_layers)]:
        P.check_positive_int("transformer", name, value)
    if d_model % num_heads:
        raise LayerError(f"transformer: d_model ({d_model}) must be divisible by num_heads ({num_heads})")

    embed_init = linen.initializers.normal(stddev=d_model**-0.5)

    class Block(linen.Module):
        @linen.compact
        def __call__(self, h):
            mask = linen.make_causal_mask(jnp.ones(h.shape[:2], jnp.int32))
            a = linen.LayerNorm()(h) if layer_norm else h
            h = h + linen.MultiHeadDotProductAttention(num_heads=num_heads, qkv_features=d_model)(a, a, mask=mask)
            m = linen.LayerNorm()(h) if layer_norm else h
            return h + linen.Dense(d_model)(linen.relu(linen.Dense(d_mlp)(m)))

    class Transformer(linen.Module):
        @linen.compact
        def __call__(self, tokens):
            if tokens.shape[-1] != seq_len:
                raise LayerError(f"transformer: expected sequences of length {seq_len}, got shape {tokens.shape}")
            h = linen.Embed(vocab_size, d_model, embedding_init=embed_init)(tokens)
            h = h + self.param("position", embed_init, (seq_len, d_model))
            for _ in range(num_layers):
                h = Block()(h)
            if layer_norm:
                h = linen.LayerNorm()(h)
            return linen.Dense(out_dim)(h[:, -1])

    return from_linen(Transformer(), train_arg=None)
