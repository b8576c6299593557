"""Parameterizations of weight layers: ``standard``, ``ntk`` and ``mup``.

For a weight layer with fan-in ``n`` (Dense: input features; Conv: in_channels × filter size),
``W_std = σ_w`` and ``b_std = σ_b``, and ``w, β ~ N(0, 1)`` entrywise:

* ``standard``  — ``z = x W + b``,  ``W = σ_w w / √n``,  ``b = σ_b β``. Gradients are taken with
  respect to ``W`` and ``b``.
* ``ntk`` (Jacot et al. 2018; Lee et al. 2019) — ``z = (σ_w/√n) x w + σ_b β``, the trainable
  parameters being ``w`` and ``β`` themselves. The function at init equals the standard one under
  ``W_sp = σ_w w/√n``; the gradient with respect to ``w`` is ``σ_w/√n`` times the standard
  gradient with respect to ``W``, which is what makes the NTK converge as ``n → ∞``.
* ``mup`` — the maximal-update parameterization (Yang & Hu 2021, "Tensor Programs IV";
  Yang et al. 2022, "Tensor Programs V", Table 3) in its "no multiplier" form:
  ``z = x W + b`` with

  ============  ==================  =====================  ==================
  role          init variance of W  SGD lr multiplier       Adam lr multiplier
  ============  ==================  =====================  ==================
  ``input``     σ_w² / n            fan_out                 1
  ``hidden``    σ_w² / n            1                       1 / n
  ``output``    σ_w² / n²           1 / n                   1 / n
  biases        σ_b²                fan_out                 1
  ============  ==================  =====================  ==================

  ``input`` layers map the (finite) data dimension to the width, ``hidden`` layers width to
  width, ``output`` layers width to the (finite) output dimension. The learning-rate
  multipliers are exposed as a pytree by :meth:`jaxlearn.nn.Layer.lr_multipliers` and applied
  with :func:`jaxlearn.train.scale_by_multipliers`; fan sizes are absolute (no base width), so
  the tuned base learning rate is that of width-1 layers.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._checks import check_int, is_traced
from jaxlearn.nn.core import LayerError

PARAMETERIZATIONS = ("standard", "ntk", "mup")
MUP_ROLES = ("input", "hidden", "output")


def check_parameterization(layer: str, parameterization, role):
    if parameterization not in PARAMETERIZATIONS:
        raise LayerError(
            f"{layer}: unknown parameterization {parameterization!r}; expected one of {list(PARAMETERIZATIONS)}"
        )
    if parameterization == "mup" and role not in MUP_ROLES:
        raise LayerError(
            f"{layer}: parameterization='mup' needs role='input'|'hidden'|'output' "
            f"(what the layer maps: data→width, width→width, width→output), got role={role!r}"
        )
    if parameterization != "mup" and role is not None and role not in MUP_ROLES:
        raise LayerError(f"{layer}: role must be one of {list(MUP_ROLES)} or None, got {role!r}")


def check_std(layer: str, name: str, value, allow_none: bool):
    if value is None:
        if allow_none:
            return
        raise LayerError(f"{layer}: {name} must be a non-negative number, got None")
    if not is_traced(value):
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise LayerError(f"{layer}: {name} must be a non-negative number, got {value!r}") from None
        if not v >= 0:
            raise LayerError(f"{layer}: {name} must be a non-negative number, got {value!r}")


def check_positive_int(layer: str, name: str, value) -> int:
    return check_int(value, name, minimum=1, where=layer, error=LayerError)


def init_weight(key, shape, fan_in, W_std, parameterization, role, dtype):
    """Draws the trainable weight array for ``shape`` (see the module table)."""
    w = _random.normal(key, shape, dtype)
    if parameterization == "ntk":
        return w
    scale = W_std / jnp.sqrt(jnp.asarray(fan_in, dtype))
    if parameterization == "mup" and role == "output":
        scale = W_std / jnp.asarray(fan_in, dtype)
    return (scale * w).astype(dtype)


def init_bias(key, shape, b_std, parameterization, dtype):
    b = _random.normal(key, shape, dtype)
    return b if parameterization == "ntk" else (b_std * b).astype(dtype)


def weight_multiplier(fan_in, W_std, parameterization, dtype):
    """The factor the forward pass applies to ``x W`` (1 except under ``ntk``)."""
    if parameterization == "ntk":
        return W_std / jnp.sqrt(jnp.asarray(fan_in, dtype))
    return 1.0


def bias_multiplier(b_std, parameterization):
    return b_std if parameterization == "ntk" else 1.0


def lr_multiplier_weight(parameterization, role, fan_in, fan_out, optimizer) -> float:
    if parameterization != "mup":
        return 1.0
    if optimizer == "sgd":
        return {"input": float(fan_out), "hidden": 1.0, "output": 1.0 / fan_in}[role]
    return {"input": 1.0, "hidden": 1.0 / fan_in, "output": 1.0 / fan_in}[role]


def lr_multiplier_bias(parameterization, fan_out, optimizer) -> float:
    if parameterization != "mup":
        return 1.0
    return float(fan_out) if optimizer == "sgd" else 1.0


def param_dtype(spec):
    """Float dtype of a layer's params: the input's float dtype, else JAX's default float."""
    if jnp.issubdtype(spec.dtype, jnp.floating):
        return spec.dtype
    return jnp.result_type(float)
