"""Adapters that turn flax modules into jaxlearn :class:`~jaxlearn.nn.core.Layer` s.

:func:`from_linen` wraps a ``flax.linen.Module`` instance; :func:`from_nnx` wraps a *factory*
``rngs -> nnx.Module``, so that module construction (and hence parameter drawing) happens inside
``init`` and can be vmapped over seeds. The user's module code is not changed. The result is a
pure ``(init_fn, apply_fn)`` layer, so training, empirical kernels and landscapes work on flax
models. Its ``kernel_fn`` is ``None``: the infinite-width kernel of a module built from layers with
closed forms comes from passing the module itself to :func:`jaxlearn.kernels.analytic`, which
reads it off the jaxpr (:func:`jaxlearn.kernels.flax_layer`); what that needs from flax — the
forward pass as a function of the params, and the distribution each initialiser draws — is
:func:`flax_forward`.

Both adapters share two conventions:

* **The train flag.** ``apply(..., train=...)`` is forwarded to a keyword argument of the
  module's ``__call__`` chosen by ``train_arg``. With ``train_arg="auto"`` the ``__call__``
  signature is inspected: a parameter named ``train`` gets ``train``; otherwise one named
  ``deterministic`` gets ``not train``; otherwise one named ``use_running_average`` gets
  ``not train``; otherwise nothing is passed. An explicit name passes ``train`` to that
  argument, except the names ``"deterministic"`` and ``"use_running_average"``, which get
  ``not train``. ``train_arg=None`` passes nothing.
* **The input.** ``x`` (an array, or a tuple of arrays for a tuple ``input_spec``) is passed to
  the module as its single positional argument.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jaxlearn.nn.core import Layer, LayerError

__all__ = ["from_linen", "from_nnx", "is_flax_module", "ParamInit", "FlaxForward", "flax_forward"]

_AUTO = "auto"
# Names whose meaning is the negation of "training mode", in the priority order of the auto rule.
_TRAIN_NAMES = {"train": False, "deterministic": True, "use_running_average": True}


# -- shared helpers ----------------------------------------------------------------------------
def _call_signature(call) -> tuple[set[str], bool]:
    """Names ``call`` accepts as keywords, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(call).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: accept any keyword
        return set(), True
    names = {
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return names, any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def _resolve_kwarg(fn_name, arg_name, value, candidates, call) -> str | None:
    """Resolves ``train_arg``/``rngs_arg``: ``"auto"`` picks the first of ``candidates`` that
    ``call`` accepts; a string must be accepted by ``call``; ``None`` means no argument."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{fn_name}: {arg_name} must be 'auto', None or a keyword name, got {value!r}")
    names, var_kw = _call_signature(call)
    if value == _AUTO:
        return next((c for c in candidates if c in names), None)
    if value not in names and not var_kw:
        raise LayerError(
            f"{fn_name}: {arg_name}={value!r} is not a parameter of the module's __call__ "
            f"(it accepts {sorted(names)})"
        )
    return value


def _train_kwargs(train_name, train) -> dict:
    if train_name is None:
        return {}
    return {train_name: (not train) if _TRAIN_NAMES.get(train_name, False) else train}


def _zeros(spec):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec)


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _flax_message(e: Exception) -> str:
    """A flax error's first line without its documentation link."""
    return str(e).split(" (https://")[0].splitlines()[0]


# -- linen -------------------------------------------------------------------------------------
def from_linen(module: linen.Module, *, train_arg: str | None = _AUTO,
               rng_collections: Sequence[str] = ("dropout",)) -> Layer:
    """A jaxlearn Layer from a ``flax.linen.Module`` instance.

    ``init(key, input_spec)`` runs ``module.init(rngs, zeros(input_spec), **eval_train_kwarg)``
    with ``rngs = {"params": key, rng_collections[i]: fold_in(key, i + 1)}``, so ``params`` equal
    ``module.init(key, x)["params"]``. It returns

    * ``params`` — the ``"params"`` collection (a nested dict; ``{}`` if the module has none);
    * ``state`` — every other collection as a dict, e.g. ``{"batch_stats": {...}}``, or ``()``
      when there is none (so ``layer.apply(params, x)`` works without ``state``). The
      ``"intermediates"`` collection (``sow``) is not state and is dropped.

    ``apply_fn(params, state, x, key, train)`` calls ``module.apply({"params": params, **state},
    x, rngs=..., mutable=...)``. Randomness: ``key`` is given to the stream ``rng_collections[0]``
    when there is one collection (``rngs={"dropout": key}``); with several, collection ``i`` gets
    ``jax.random.fold_in(key, i)``. With ``train=True`` the state collections are mutable and the
    updated ones are returned; with ``train=False`` ``state`` comes back unchanged. The train
    flag reaches the module as described in :mod:`jaxlearn.nn.flax_adapters` (auto rule on the
    ``__call__`` signature: ``train`` / ``deterministic`` / ``use_running_average``).

    Args:
      module: a ``flax.linen.Module`` instance (not the class).
      train_arg: ``"auto"``, the name of the ``__call__`` keyword for the train flag, or None.
      rng_collections: names of the RNG streams the module draws from at apply time.

    Raises ``LayerError`` (a ValueError) at apply time, naming ``key``, when ``train=True`` needs
    randomness and ``key`` is None, and naming ``state`` when the module needs its state.
    """
    if isinstance(module, type):
        raise TypeError(f"from_linen: module must be a flax.linen.Module instance, got the class {module.__name__} "
                        f"(instantiate it: {module.__name__}(...))")
    if isinstance(module, nnx.Module):
        raise TypeError(f"from_linen: module is an nnx.Module ({type(module).__name__}); use nn.from_nnx(factory)")
    if not isinstance(module, linen.Module):
        raise TypeError(f"from_linen: module must be a flax.linen.Module instance, got {type(module).__name__}")
    if isinstance(rng_collections, str):
        rng_collections = (rng_collections,)
    rng_collections = tuple(rng_collections)
    if not all(isinstance(c, str) for c in rng_collections) or "params" in rng_collections:
        raise LayerError(f"from_linen: rng_collections must be names of RNG streams other than 'params', "
                         f"got {rng_collections!r}")
    train_name = _resolve_kwarg("from_linen", "train_arg", train_arg, list(_TRAIN_NAMES), module.__call__)
    name = f"from_linen({type(module).__name__})"

    def apply_rngs(key):
        if key is None or not rng_collections:
            return None
        if len(rng_collections) == 1:
            return {rng_collections[0]: key}
        return {c: jax.random.fold_in(key, i) for i, c in enumerate(rng_collections)}

    def forward(variables, x, key, train, mutable):
        return module.apply(variables, x, rngs=apply_rngs(key), mutable=mutable, **_train_kwargs(train_name, train))

    def init_fn(key, spec):
        rngs = {"params": key, **{c: jax.random.fold_in(key, i + 1) for i, c in enumerate(rng_collections)}}
        variables = dict(module.init(rngs, _zeros(spec), **_train_kwargs(train_name, False)))
        params = variables.pop("params", {})
        variables.pop("intermediates", None)
        state = variables or ()
        out_spec = jax.eval_shape(lambda v, x: forward(v, x, jax.random.key(0), False, False),
                                  _abstract({"params": params, **variables}), spec)
        return out_spec, params, state

    def apply_fn(params, state, x, key, train):
        state_dict = dict(state) if state else {}
        mutable = list(state_dict) if train and state_dict else False
        try:
            out = forward({"params": params, **state_dict}, x, key, train, mutable)
        except flax.errors.InvalidRngError as e:
            if key is None:
                raise LayerError(f"{name} draws random numbers (e.g. Dropout with train=True): "
                                 "pass key= to apply") from None
            raise LayerError(f"{name} draws from an RNG stream not in rng_collections={rng_collections} "
                             f"(flax: {_flax_message(e)})") from None
        except flax.errors.ScopeCollectionNotFound:
            if not state_dict:
                raise LayerError(f"{name} has non-trainable variables (e.g. BatchNorm statistics): "
                                 "pass state= as returned by init") from None
            raise
        if not mutable:
            return out, state
        y, updates = out
        return y, {**state_dict, **dict(updates)}

    return Layer(init_fn, apply_fn, None, name)


# -- nnx ---------------------------------------------------------------------------------------
class _MissingKey:
    """Stands in for the key of an RNG stream when apply got ``key=None``: drawing from it raises
    (so only a forward pass that actually needs randomness asks for a key)."""

    def __init__(self, shape, message):
        self.shape = shape
        self._message = message

    def __getitem__(self, index):
        raise LayerError(self._message)


def _layout(*states) -> tuple:
    """(path, variable type, shape, dtype) of every variable: what ``nnx.merge`` relies on. Key
    dtypes are left out (the PRNG implementation of the user's key may differ)."""
    out = []
    for state in states:
        for path, var in nnx.to_flat_state(state):
            value = var.get_value()
            dtype = None if isinstance(var, nnx.RngKey) else str(value.dtype)
            out.append((path, type(var).__name__, tuple(value.shape), dtype))
    return tuple(out)


def from_nnx(factory: Callable, *, train_arg: str | None = _AUTO, rngs_arg: str | None = _AUTO) -> Layer:
    """A jaxlearn Layer from an nnx module factory ``factory(rngs: nnx.Rngs) -> nnx.Module``.

    ``init(key, input_spec)`` builds ``module = factory(nnx.Rngs(key))`` (so ``params`` equal
    those of ``factory(nnx.Rngs(key))``) and splits it into

    * ``params`` — every ``nnx.Param`` (and subclass) as a **pure nested dict** of arrays
      (``nnx.to_pure_dict``), keyed by attribute path, e.g. ``{"linear": {"kernel": ..., "bias":
      ...}}``: a plain pytree for ``jax.grad``, ``jax.tree.map`` and optax;
    * ``state`` — every other variable except RNG streams (``nnx.BatchStat`` etc.) as a pure
      nested dict, or ``()`` when there is none.

    RNG streams stored in the module (e.g. by ``nnx.Dropout(rate, rngs=rngs)``) are not carried:
    ``apply_fn`` re-seeds them from the ``key`` passed to apply, as ``nnx.reseed(module,
    tag=key)`` does for each stream tag (the ``i``-th stream of a tag gets ``fold_in(key_tag,
    i)``); with a single tag ``key_tag = key``, with several the ``j``-th tag in sorted order gets
    ``fold_in(key, j)``. If ``__call__`` has an ``rngs`` parameter (``rngs_arg="auto"``, or an
    explicit name) it receives ``nnx.Rngs(key)``. With ``key=None`` any draw from a stream raises
    ``LayerError`` naming ``key``, so deterministic passes need no key.

    ``apply_fn(params, state, x, key, train)`` merges the graph definition (computed once here,
    from ``nnx.eval_shape``) with ``params`` and ``state``, sets the mode as ``Module.train()`` /
    ``Module.eval()`` do (``deterministic`` and ``use_running_average`` = ``not train`` on every
    submodule that has them), forwards ``train`` to ``__call__`` by the rule of
    :mod:`jaxlearn.nn.flax_adapters`, and runs the module. With ``train=True`` the new state is
    read back from the module (variables created during the call, such as ``sow`` intermediates,
    are dropped so the state keeps its structure); with ``train=False`` ``state`` comes back
    unchanged.

    Args:
      factory: a callable ``rngs -> nnx.Module`` (e.g. ``lambda rngs: MLP(rngs=rngs)``), not a
        built module; it must build the same structure for every seed.
      train_arg: ``"auto"``, the name of the ``__call__`` keyword for the train flag, or None.
      rngs_arg: ``"auto"`` (``rngs`` if ``__call__`` has it), a keyword name, or None.
    """
    if isinstance(factory, nnx.Module):
        raise TypeError(f"from_nnx: factory must be a function rngs -> nnx.Module, got a built "
                        f"{type(factory).__name__} (pass lambda rngs: {type(factory).__name__}(..., rngs=rngs))")
    if isinstance(factory, linen.Module):
        raise TypeError(f"from_nnx: factory is a flax.linen.Module ({type(factory).__name__}); "
                        f"use nn.from_linen(module)")
    if not callable(factory):
        raise TypeError(f"from_nnx: factory must be a callable rngs -> nnx.Module, got {type(factory).__name__}")
    abstract = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    if not isinstance(abstract, nnx.Module):
        raise TypeError(f"from_nnx: factory(rngs) must return an nnx.Module, got {type(abstract).__name__}")
    name = f"from_nnx({type(abstract).__name__})"
    graphdef, *abstract_states = nnx.split(abstract, nnx.Param, nnx.RngKey, nnx.RngCount, ...)
    layout = _layout(*abstract_states)
    _, keys_template, counts_template, state_template = abstract_states
    tags = sorted({var.tag for _, var in nnx.to_flat_state(keys_template)})
    has_state = len(nnx.to_flat_state(state_template)) > 0
    train_name = _resolve_kwarg("from_nnx", "train_arg", train_arg, list(_TRAIN_NAMES), abstract.__call__)
    rngs_name = _resolve_kwarg("from_nnx", "rngs_arg", rngs_arg, ["rngs"], abstract.__call__)
    rngs_graphdef = nnx.graphdef(nnx.eval_shape(lambda: nnx.Rngs(0)))
    missing = f"{name} draws random numbers (e.g. Dropout with train=True): pass key= to apply"

    def rng_variables():
        """Pure dicts of RNG keys and counts to merge; keys are placeholders (re-seeded later)."""
        keys = jax.tree.map(lambda s: _MissingKey(s.shape, missing), nnx.to_pure_dict(keys_template))
        return keys, _zeros(nnx.to_pure_dict(counts_template))

    def call_rngs(key):
        if key is not None:
            return nnx.Rngs(key)
        return nnx.merge(rngs_graphdef, {"default": {"count": jnp.zeros((), jnp.uint32),
                                                     "key": _MissingKey((), missing)}})

    def apply_fn(params, state, x, key, train):
        if has_state and not isinstance(state, dict):
            raise LayerError(f"{name} has non-trainable variables (e.g. BatchNorm statistics): "
                             "pass state= as returned by init")
        keys, counts = rng_variables()
        module = nnx.merge(graphdef, params, keys, counts, state if state else {})
        if key is not None and tags:
            tag_keys = {tags[0]: key} if len(tags) == 1 else {t: jax.random.fold_in(key, j) for j, t in enumerate(tags)}
            nnx.reseed(module, policy="match_shape", **tag_keys)
        # Unbound call: a user module may define its own attribute or method named train/eval.
        nnx.Module.set_attributes(module, deterministic=not train, use_running_average=not train,
                                  raise_if_not_found=False)
        kwargs = _train_kwargs(train_name, train)
        if rngs_name is not None:
            kwargs[rngs_name] = call_rngs(key)
        y = module(x, **kwargs)
        if not train or not state:
            return y, state
        _, _, after = nnx.state(module, nnx.Param, nnx.RngState, ...)
        flat_after = traverse_util.flatten_dict(nnx.to_pure_dict(after))
        return y, traverse_util.unflatten_dict({p: flat_after[p] for p in traverse_util.flatten_dict(state)})

    def init_fn(key, spec):
        module = factory(nnx.Rngs(key))
        _, *states = nnx.split(module, nnx.Param, nnx.RngKey, nnx.RngCount, ...)
        if _layout(*states) != layout:
            raise LayerError(f"{name}: factory built modules with different variables for different seeds; "
                             "it must build the same structure for every rngs")
        params, state = nnx.to_pure_dict(states[0]), nnx.to_pure_dict(states[3]) or ()
        out_spec = jax.eval_shape(
            lambda p, s, x: apply_fn(p, s, x, jax.random.key(0), False)[0], _abstract(params), _abstract(state), spec
        )
        return out_spec, params, state

    return Layer(init_fn, apply_fn, None, name)


# -- parameters and initialisers, for infinite-width kernels -------------------------------------
def is_flax_module(obj) -> bool:
    """Whether ``obj`` is a ``flax.linen.Module`` or ``flax.nnx.Module`` instance."""
    return isinstance(obj, (linen.Module, nnx.Module))


class ParamInit(NamedTuple):
    """One parameter leaf of a flax module, as an infinite-width kernel map sees it.

    ``path``: ``"Dense_0/kernel"``; ``role``: ``"weight"``, ``"bias"``, ``"scale"`` (flax's leaf
    names ``kernel``, ``bias``, ``scale``) or ``"unknown"``; ``init``: the distribution of each
    entry at initialisation, ``("variance", Var[entry])`` (zero mean) or ``("constant", c)``, or
    ``None`` if the initialiser is not recognised; ``shape``; ``of_weight_layer``: the leaf sits
    beside a ``kernel`` (a Dense/Conv bias, to which a ``b_std`` override applies)."""

    path: str
    role: str
    init: Any
    shape: tuple
    of_weight_layer: bool = True


class FlaxForward(NamedTuple):
    """A flax module as a function of its parameters: ``forward(params, x) -> y``, ``params`` (a
    pytree), ``inits`` (one :class:`ParamInit` per leaf of ``params``, in ``jax.tree`` order) and
    ``layer`` (:func:`from_linen` of a linen module; ``None`` for nnx modules, which train through
    :func:`from_nnx`)."""

    forward: Callable
    params: Any
    inits: tuple
    layer: Layer | None


def flax_forward(module, example, *, variables=None) -> FlaxForward:
    """``module`` (a ``flax.linen.Module`` or ``nnx.Module`` instance) with its parameters and
    what their initialisers draw.

    Initialisers are read from a linen module's ``kernel_init``/``bias_init``/``scale_init``
    (``variance_scaling`` family — lecun/he/glorot normal/uniform/truncated: ``Var[entry] =
    scale / fan`` for the leaf's own shape —, ``normal(σ)``, ``zeros``, ``ones``, ``constant``);
    nnx modules do not keep theirs, so flax's defaults are assumed (``lecun_normal`` kernels,
    zero biases, unit scales). ``example``: an input batch (its shape and dtype); ``variables``:
    linen variables (default ``module.init`` with a fixed key); only ``"params"`` collections are
    supported (``ValueError`` naming the others, e.g. BatchNorm statistics).
    """
    if isinstance(module, linen.Module):
        params, forward, init_of = _linen_parts(module, example, variables)
        layer = from_linen(module)
    elif isinstance(module, nnx.Module):
        if variables is not None:
            raise ValueError("variables: only for linen modules (an nnx module holds its own)")
        (params, forward, init_of), layer = _nnx_parts(module), None
    else:
        raise TypeError(f"module: expected a flax.linen.Module or flax.nnx.Module, got {type(module).__name__}")
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = []
    for path, _ in leaves:
        keys = tuple(_key_name(k) for k in path)
        paths.append(keys[:-1] if keys and keys[-1] == "value" else keys)
    with_weight = {keys[:-1] for keys in paths if keys and keys[-1] == "kernel"}
    inits = tuple(ParamInit("/".join(keys), _ROLES.get(keys[-1] if keys else "", "unknown"),
                            init_of(keys, tuple(np.shape(leaf))), tuple(np.shape(leaf)), keys[:-1] in with_weight)
                  for keys, (_, leaf) in zip(paths, leaves))
    return FlaxForward(forward, params, inits, layer)


_ROLES = {"kernel": "weight", "bias": "bias", "scale": "scale"}
_NNX_DEFAULTS = {"kernel": ("variance", None), "bias": ("constant", 0.0), "scale": ("constant", 1.0)}


def _fans(shape, in_axis=-2, out_axis=-1):
    receptive = math.prod(shape) / (shape[in_axis] * shape[out_axis]) if len(shape) > 1 else 1
    fan_in = shape[in_axis] * receptive if len(shape) > 1 else shape[0]
    fan_out = shape[out_axis] * receptive if len(shape) > 1 else shape[0]
    return fan_in, fan_out


def _read_init(init, shape):
    """``("variance", Var[entry])`` or ``("constant", c)`` from a flax/JAX initialiser, else None."""
    if init is None:
        return None
    name = getattr(init, "__qualname__", "")
    closure = dict(zip(getattr(getattr(init, "__code__", None), "co_freevars", ()),
                       [c.cell_contents for c in (getattr(init, "__closure__", None) or ())]))
    if name.startswith("zeros"):
        return ("constant", 0.0)
    if name.startswith("ones"):
        return ("constant", 1.0)
    if name == "constant.<locals>.init":
        value = np.asarray(closure["value"])
        return ("constant", float(value)) if value.ndim == 0 else None
    if name == "normal.<locals>.init":
        return ("variance", float(closure["stddev"]) ** 2)
    if name == "variance_scaling.<locals>.init" and not closure.get("batch_axis"):
        fan_in, fan_out = _fans(shape, closure["in_axis"], closure["out_axis"])
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}.get(closure["mode"])
        if fan is None:
            return None
        return ("variance", float(closure["scale"]) / fan)
    return None


def _linen_parts(module, example, variables):
    if variables is None:
        variables = module.init(jax.random.key(0), example)
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ValueError(f"module: flax collections {extra} (e.g. BatchNorm statistics) have no infinite-width map; "
                         f"only modules whose variables are all 'params' are supported")
    inits = {}

    def record(next_fn, args, kwargs, context):
        m = context.module
        for attr in ("kernel_init", "bias_init", "scale_init"):
            if hasattr(m, attr):
                inits[(m.path, attr[:-5])] = getattr(m, attr)
        return next_fn(*args, **kwargs)

    with linen.intercept_methods(record):
        jax.eval_shape(module.apply, variables, example)

    def forward(params, x):
        return module.apply({"params": params}, x)

    def init_of(path_keys, shape):
        *mpath, name = path_keys
        return _read_init(inits.get((tuple(mpath), name)), shape)

    return variables["params"], forward, init_of


def _nnx_parts(module):
    graphdef, params_state, rest = nnx.split(module, nnx.Param, ...)

    def forward(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def init_of(path_keys, shape):
        name = path_keys[-2] if path_keys and path_keys[-1] == "value" else path_keys[-1]
        kind, value = _NNX_DEFAULTS.get(name, (None, None))
        if kind == "variance":
            return ("variance", 1.0 / _fans(shape)[0])
        return None if kind is None else (kind, value)

    return params_state, forward, init_of


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)
