"""Typed, frozen experiment configs: fields, validation, and run ids.

An experiment declares ``@dataclasses.dataclass(frozen=True) class Config`` whose fields are made
with :func:`static` (changes the compiled program) or :func:`dynamic` (an int/float/bool that can
become a vmapped axis); unmarked fields count as static. :func:`parse_config` builds a validated
instance from plain values (YAML, ``--set``) and :func:`run_id` hashes a resolved config into a
stable id. Sweeps and config files are in :mod:`jaxlearn.runner.configfile`. Every error is a
:class:`ConfigError` with a one-line message naming the field.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import numpy as np

from jaxlearn._checks import did_you_mean, is_real

MISSING = dataclasses.MISSING
ConfigT = TypeVar("ConfigT")  # a config dataclass: parse_config(Config, ...) returns a Config
MODES = ("grid", "zip", "random")
UNIONS = (typing.Union, types.UnionType)  # the origins of ``X | Y`` and ``Optional[X]`` annotations


class ConfigError(ValueError):
    """A bad config value, key, sweep or file; the message is one line naming the culprit."""


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested dicts -> one level with dotted keys; lists become tuples (hashable, groupable)."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def describe_value(v) -> str:
    """A value for an error message: numbers as themselves, anything else with its type."""
    return repr(v) if is_real(v) else f"{v!r} ({type(v).__name__})"


def is_dataclass_type(tp) -> bool:
    """Whether ``tp`` is a dataclass (the class, not an instance)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def is_dataclass_instance(obj) -> bool:
    """Whether ``obj`` is an instance of a dataclass (not the class)."""
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


# ----------------------------------------------------------------------------- fields
def _field(kind, default, lo, hi, choices, help, shared_constant=False):
    meta = {"jaxlearn": {"kind": kind, "min": lo, "max": hi, "help": help,
                         "choices": None if choices is None else tuple(choices), "shared_constant": shared_constant}}
    if default is not MISSING and type(default).__hash__ is None:  # dict, list, mutable dataclass
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def static(default: Any = MISSING, *, min: float | None = None, max: float | None = None,
           choices: Iterable[Any] | None = None, help: str = "") -> dataclasses.Field:
    """A field that changes the compiled program (shapes, step counts, names); no default: required."""
    return _field("static", default, min, max, choices, help)


def dynamic(default: Any = MISSING, *, min: float | None = None, max: float | None = None,
            choices: Iterable[Any] | None = None, help: str = "", shared_constant: bool = False) -> dataclasses.Field:
    """A field (int, float or bool) that may become a vmapped axis: seed, learning rate, ...

    ``shared_constant``: where every member of a group has the same value, the group's program gets
    that value as a Python constant instead of a vmapped array (one program per value), so what
    depends on it alone is computed once for the whole group: one shared ``data_seed``, one
    batch per step instead of one per member."""
    return _field("dynamic", default, min, max, choices, help, shared_constant)


def _meta(f: dataclasses.Field) -> dict:
    return f.metadata.get("jaxlearn", {})


def init_fields(cls) -> tuple[dataclasses.Field, ...]:
    """The fields of config class ``cls`` that its constructor takes (``init=True``)."""
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


@functools.lru_cache(maxsize=None)
def field_types(cls) -> dict:
    """``{field: type}`` of config class ``cls``, annotations resolved (a ConfigError if they cannot be)."""
    try:
        return typing.get_type_hints(cls)
    except Exception as e:  # noqa: BLE001 - an unresolvable annotation, reported as a config error
        raise ConfigError(f"cannot resolve the field types of {cls.__name__}: {e}") from None


def is_dynamic(cls, name: str) -> bool:
    """Whether field ``name`` of ``cls`` (a class or an instance) is marked dynamic."""
    fields = {f.name: f for f in init_fields(cls)}
    if name not in fields:
        raise ConfigError(f"unknown field '{name}'{did_you_mean(name, fields)}; known fields: {', '.join(fields)}")
    return _meta(fields[name]).get("kind") == "dynamic"


def dynamic_fields(cls: type) -> tuple[str, ...]:
    """Names of the dynamic fields, in declaration order."""
    return tuple(f.name for f in init_fields(cls) if _meta(f).get("kind") == "dynamic")


def shared_constant_fields(cls: type) -> tuple[str, ...]:
    """The dynamic fields declared ``shared_constant`` (:func:`dynamic`)."""
    return tuple(f.name for f in init_fields(cls) if _meta(f).get("kind") == "dynamic"
                 and _meta(f).get("shared_constant"))


def static_fields(cls: type) -> tuple[str, ...]:
    """Names of the static (including unmarked) fields, in declaration order."""
    return tuple(f.name for f in init_fields(cls) if _meta(f).get("kind") != "dynamic")


def type_name(tp) -> str:
    """A type annotation as text for messages (``int``, ``float | None``)."""
    if tp is type(None):
        return "None"
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else repr(tp).replace("typing.", "")


def field_help(cls) -> list[tuple[str, str, str, object, str]]:
    """``(name, kind, type string, default, help)`` per field; the default is ``MISSING`` if required."""
    hints = field_types(cls if isinstance(cls, type) else type(cls))
    return [(f.name, _meta(f).get("kind", "static"), type_name(hints[f.name]), _default(f), _meta(f).get("help", ""))
            for f in init_fields(cls)]


def range_text(cls, name: str) -> str:
    """The accepted values of field ``name`` as the checks see them: ``"one of a, b"``, ``">= 0"``,
    ``"1..1438"`` (both ends included, as in :func:`static`/:func:`dynamic`), or ``""``."""
    meta = _meta({f.name: f for f in init_fields(cls)}[name])
    if meta.get("choices") is not None:
        return "one of " + ", ".join(map(str, meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    return f"{lo}..{hi}" if lo is not None and hi is not None else f">= {lo}" if lo is not None else \
        f"<= {hi}" if hi is not None else ""


def field_rows(cls, values: Mapping[str, Any] | None = None, *, prefix: str = "", defaults=None) -> list[dict]:
    """One dict per field of config class ``cls`` (what ``jaxlearn fields`` prints): ``field``
    (a nested config dataclass's fields as ``outer.inner``, the ``--set`` key), ``kind``
    (``static``: one compiled program per value; ``dynamic``: may be a vmapped axis), ``type``,
    ``default`` (JSON-ready; ``None`` and ``required`` true when there is none), ``range`` and
    ``help``. ``values`` (a config file's ``config:`` mapping) adds a ``value`` entry to the fields
    it sets. ``defaults``: an instance whose attributes replace the class defaults (a nested
    field's default instance)."""
    hints, rows, values = field_types(cls), [], values or {}
    for name, kind, tp_name, default, text in field_help(cls):
        tp, key = hints[name], prefix + name
        if defaults is not None:
            default = getattr(defaults, name)
        if is_dataclass_type(tp) and is_dataclass_instance(default):
            inner = values.get(name) if isinstance(values.get(name), Mapping) else None
            for row in field_rows(tp, inner, prefix=f"{key}.", defaults=default):
                rows.append({**row, "kind": kind, "help": row["help"] or text})  # the outer field decides the kind
            continue
        required = default is MISSING
        row = {"field": key, "kind": kind, "type": tp_name, "default": None if required else _jsonable(default, key),
               "required": required, "range": range_text(cls, name), "help": text}
        if name in values:
            row["value"] = _jsonable(values[name], key)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- coercion
def _number(v):
    """The int/float a number or numeric string denotes; None for anything else (bools too)."""
    if is_real(v):
        return v
    for conv in (int, float):
        try:
            return conv(v) if isinstance(v, str) else None
        except ValueError:
            pass
    return None


def _coerce(tp, v, path: str, where: str, default=MISSING):
    """``v`` converted to annotation ``tp``; ``default`` is the field default (for nested dataclasses)."""
    def err(msg):
        return ConfigError(f"{where} field '{path}': {msg}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or (tp is type(None) and v is None):
        return v
    if origin in UNIONS:
        arms = [a for a in args if a is not type(None)]
        if v is None and len(arms) < len(args):
            return None
        if len(arms) == 1:
            return _coerce(arms[0], v, path, where, default)
        for arm in arms:
            try:
                return _coerce(arm, v, path, where, default)
            except ConfigError:
                pass
        raise err(f"expected {type_name(tp)}, got {describe_value(v)}")
    if origin is typing.Literal:
        for a in args:
            try:
                if _coerce(type(a), v, path, where) == a:
                    return a
            except ConfigError:
                pass
        raise err(f"expected one of {list(args)!r}, got {v!r}")
    if tp in (tuple, list) or origin in (tuple, list):
        v = v.tolist() if isinstance(v, np.ndarray) else v
        if isinstance(v, str) and range_kind(v) and args and args[-1] is Ellipsis:
            # "log:1:10000:12" for a tuple of numbers, e.g. log-spaced snapshot steps
            grid = range_values(range_kind(v), v.strip(), f"{where} field '{path}'")[0]
            v = list(dict.fromkeys(round(x) for x in grid)) if args[0] is int else list(grid)
        if not isinstance(v, (list, tuple)):
            raise err(f"expected a list ({type_name(tp)}), got {describe_value(v)}")
        fixed = origin is tuple and args and args[-1] is not Ellipsis
        if fixed and len(v) != len(args):
            raise err(f"expected {len(args)} items ({type_name(tp)}), got {len(v)}")
        item_types = args if fixed else [args[0] if args else Any] * len(v)
        items = [_coerce(t, x, f"{path}[{i}]", where) for i, (t, x) in enumerate(zip(item_types, v))]
        return items if list in (tp, origin) else tuple(items)
    if tp is dict or origin is dict:
        if not isinstance(v, Mapping):
            raise err(f"expected a mapping, got {describe_value(v)}")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise err(f"expected str keys, got {describe_value(k)}")
            out[k] = _coerce(args[1] if args else Any, x, f"{path}.{k}", where)
            _jsonable(out[k], f"{where} field '{path}.{k}'")
        return out
    if is_dataclass_type(tp):
        if isinstance(v, tp):
            return v
        if isinstance(v, Mapping):
            return _parse(tp, v, where, path + ".", default if isinstance(default, tp) else None)
        raise err(f"expected a mapping of {tp.__name__} fields, got {describe_value(v)}")
    if tp is bool:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
    elif tp is int:
        x = _number(v)
        if isinstance(x, (int, np.integer)) or (x is not None and math.isfinite(x) and float(x).is_integer()):
            return int(x)
    elif tp is float:
        x = _number(v)
        if x is not None and not math.isfinite(x):
            raise err(f"expected a finite float, got {v!r}")
        if x is not None:
            return float(x)
    elif not isinstance(tp, type):
        raise err(f"unsupported field type {type_name(tp)}")
    elif isinstance(v, tp):
        return v
    name = type_name(tp)
    raise err(f"expected {'an' if name[0] in 'aeiou' else 'a'} {name}, got {describe_value(v)}")


def _check_range(meta: dict, v, path: str, where: str):
    if isinstance(v, (tuple, list)):
        for i, x in enumerate(v):
            _check_range(meta, x, f"{path}[{i}]", where)
        return
    if v is None or isinstance(v, (dict, bool)) or is_dataclass_instance(v):
        return
    lo, hi, choices, number = meta.get("min"), meta.get("max"), meta.get("choices"), isinstance(v, (int, float))
    if lo is not None and number and v < lo:
        raise ConfigError(f"{where} field '{path}': must be >= {lo}, got {v!r}")
    if hi is not None and number and v > hi:
        raise ConfigError(f"{where} field '{path}': must be <= {hi}, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"{where} field '{path}': expected one of {list(choices)!r}, got {v!r}")


def unknown_field(where: str, key, names, prefix: str) -> ConfigError:
    """The ConfigError for an unknown field ``key`` at ``where``, with a suggestion among ``names``."""
    return ConfigError(f"{where}: unknown field '{prefix}{key}'{did_you_mean(key, names, prefix=prefix)}; "
                       f"known fields: {', '.join(prefix + n for n in names)}")


def _parse(cls, values, where: str, prefix: str, defaults=None):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {describe_value(values)}")
    hints, fields = field_types(cls), init_fields(cls)
    names = [f.name for f in fields]
    for key in values:
        if key not in names:
            raise unknown_field(where, key, names, prefix)
    kwargs = {}
    for f in fields:
        meta, path, tp = _meta(f), prefix + f.name, hints[f.name]
        if meta.get("kind") == "dynamic" and tp not in (int, float, bool):
            raise ConfigError(f"{where} field '{path}': a dynamic field must be int, float or bool, "
                              f"got {type_name(tp)}")
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        if f.name in values:
            kwargs[f.name] = _coerce(tp, values[f.name], path, where, default)
        elif default is MISSING:
            raise ConfigError(f"{where} field '{path}': missing required value ({type_name(tp)}, no default)")
        else:
            kwargs[f.name] = default
        _check_range(meta, kwargs[f.name], path, where)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # the class's own checks (__post_init__), one line
        field = prefix.rstrip(".") or where
        raise ConfigError(f"{where} field '{field}': {str(err).splitlines()[0]}" if prefix
                          else f"{where}: {err}") from None


def parse_config(cls: type[ConfigT], values: Mapping[str, Any], *, where: str = "config") -> ConfigT:
    """Builds ``cls(**defaults updated by values)``, coercing each value by its field type and checking
    ``min``/``max``/``choices``. A mapping given for a nested dataclass field is merged over that
    field's default; a dict field is replaced. ``where`` replaces "config" in error messages.

    Examples:
        >>> import dataclasses
        >>> from jaxlearn import runner
        >>> @dataclasses.dataclass(frozen=True)
        ... class Config:
        ...     seed: int = runner.dynamic(0, min=0)
        ...     width: int = runner.static(32, min=1)
        >>> runner.parse_config(Config, {"width": "64"})
        Config(seed=0, width=64)
        >>> runner.dynamic_fields(Config), runner.static_fields(Config)
        (('seed',), ('width',))
    """
    return _parse(cls if isinstance(cls, type) else type(cls), values, where, "")


def range_kind(text: str) -> str | None:
    """``"lin"`` or ``"log"`` when ``text`` looks like ``lin:...``/``log:...``, else None."""
    head = text.split(":", 1)[0].strip()
    return head if head in ("lin", "log") and ":" in text else None


def range_values(kind: str, raw: str, where: str) -> tuple[tuple[float, ...], float, float]:
    """The points of ``lin:start:stop:num`` (``numpy.linspace``) or ``log:start:stop:num``
    (``numpy.geomspace``), with the range's low and high ends."""
    parts, form = raw.split(":"), f"{kind}:start:stop:num (e.g. {kind}:1e-3:1:7)"
    if len(parts) != 4:
        raise ConfigError(f"{where}: expected {form}, got {raw!r}")
    try:
        start, stop, n = float(parts[1]), float(parts[2]), float(parts[3])
    except ValueError:
        raise ConfigError(f"{where}: expected {form} with numbers, got {raw!r}") from None
    if not (math.isfinite(start) and math.isfinite(stop) and n.is_integer() and n >= 1):
        raise ConfigError(f"{where}: expected finite start/stop and an integer num >= 1, got {raw!r}")
    if kind == "log" and (start <= 0 or stop <= 0):
        raise ConfigError(f"{where}: a log axis needs start > 0 and stop > 0, got {raw!r}")
    grid = (np.geomspace if kind == "log" else np.linspace)(start, stop, int(n))
    # 15 significant digits: 0.30000000000000004 -> 0.3, so grid points hash like hand-written ones.
    return tuple(float(f"{x:.15g}") for x in grid), min(start, stop), max(start, stop)


# ----------------------------------------------------------------------------- hashing
def _jsonable(obj, where: str):
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_, int, np.integer)):
        return bool(obj) if isinstance(obj, np.bool_) else int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            raise ConfigError(f"{where}: cannot serialise non-finite float {float(obj)!r}")
        return float(obj)
    if is_dataclass_instance(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{where}: keys must be str, got {describe_value(bad[0])}")
        return {k: _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    obj = obj.tolist() if isinstance(obj, np.ndarray) else obj
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise ConfigError(f"{where}: cannot serialise {describe_value(obj)} to JSON")


def to_dict(config: Any) -> dict:
    """JSON-ready dict of a config instance (or mapping): tuples become lists, nested dataclasses
    dicts, numpy scalars Python numbers; floats stay floats."""
    if not (is_dataclass_instance(config) or isinstance(config, Mapping)):
        raise ConfigError(f"to_dict: expected a dataclass instance or a mapping, got {describe_value(config)}")
    return _jsonable(config, "config")


def canonical_json(obj: Any) -> str:
    """Stable JSON: sorted keys, no spaces, floats as ``repr(float(x))`` (so ``1e-3`` and ``0.001``
    agree), tuples as lists, numpy scalars as Python numbers; NaN/inf raise :class:`ConfigError`.

    Examples:
        >>> from jaxlearn import runner
        >>> runner.canonical_json({"lr": 1e-3, "widths": (64, 64)})
        '{"lr":0.001,"widths":[64,64]}'
    """
    return json.dumps(_jsonable(obj, "value"), sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(experiment: str, version: str, config: Any) -> str:
    """First 16 hex chars of the sha256 of the canonical JSON of experiment, version and config.

    Examples:
        >>> from jaxlearn import runner
        >>> a = runner.run_id("study", "1", {"lr": 1e-3})
        >>> a == runner.run_id("study", "1", {"lr": 0.001}), len(a)
        (True, 16)
    """
    payload = {"experiment": experiment, "version": version, "config": to_dict(config)}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]
