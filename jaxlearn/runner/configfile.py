"""Config files and command-line values: ``--set`` assignments, sweep axes, their expansion into
validated configs (grid, zip, random), and YAML config files with named variants.

Values are read with ``yaml.safe_load`` only (no tags, no ``eval``) and coerced later by the
config's field types (:func:`jaxlearn.runner.config.parse_config`), so ``1e-3`` becomes a float
where the field is a float. Every error is a one-line :class:`~jaxlearn.runner.config.ConfigError`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from jaxlearn._checks import check_int, did_you_mean
from jaxlearn.runner.config import (
    MODES,
    UNIONS,
    ConfigError,
    ConfigT,
    canonical_json,
    describe_value,
    field_types,
    init_fields,
    is_dataclass_instance,
    is_dataclass_type,
    parse_config,
    range_kind,
    range_values,
    type_name,
    unknown_field,
)

_SWEEP_FORMS = "key=v1,v2,... or key=lin:start:stop:num or key=log:start:stop:num"


# ----------------------------------------------------------------------------- overrides and axes
def set_path(values: dict, dotted: str, value) -> dict:
    """A new nested dict equal to ``values`` with ``values[a][b] = value`` for ``dotted="a.b"``: dicts
    along the path are copied (dataclass instances become dicts), missing ones created."""
    parts = dotted.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"bad key '{dotted}': expected a name or a dotted.name")
    out = node = dict(values)
    for i, part in enumerate(parts[:-1]):
        child = node.get(part, {})
        if is_dataclass_instance(child):
            child = {f.name: getattr(child, f.name) for f in dataclasses.fields(child)}
        if not isinstance(child, Mapping):
            raise ConfigError(f"cannot set '{dotted}': '{'.'.join(parts[:i + 1])}' is {describe_value(child)}, "
                              f"not a mapping")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value
    return out


def _split(text: str, flag: str, form: str) -> tuple[str, str]:
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{flag} {text!r}: expected {form}")
    return key.strip(), raw.strip()


def _yaml_value(raw: str, where: str):
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: cannot parse {raw!r} ({getattr(e, 'problem', None) or 'YAML error'})") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """``--set key=value``: the key may be dotted; the value is read with ``yaml.safe_load`` (``1e-3``
    stays a string, coerced by field type later; ``[128, 64]`` is a list).

    Examples:
        >>> from jaxlearn import runner
        >>> runner.parse_assignment("optimizer.args.b2=0.98"), runner.parse_assignment("widths=[64, 64]")
        (('optimizer.args.b2', 0.98), ('widths', [64, 64]))
    """
    key, raw = _split(text, "--set", "key=value (e.g. learning_rate=0.01 or optimizer.name=adam)")
    return key, _yaml_value(raw, f"--set {text!r}")


@dataclasses.dataclass(frozen=True)
class Axis:
    """One sweep axis: its grid ``values``; ``low``/``high`` bound ``lin``/``log`` axes (random mode)."""

    values: tuple
    kind: str
    low: float | None = None
    high: float | None = None


def _range_axis(kind: str, raw: str, where: str) -> Axis:
    values, low, high = range_values(kind, raw, where)
    return Axis(values, kind, low, high)


def _range_kind(s: str) -> str | None:
    return range_kind(s)


def _text_items(s: str, where: str) -> list:
    try:  # a YAML flow sequence keeps "[64],[32, 32]" together; else a plain split
        return list(yaml.safe_load(f"[{s}]"))
    except yaml.YAMLError:
        return [_yaml_value(x.strip(), where) for x in s.split(",")]


def axis_values(spec, *, where: str = "sweep") -> Axis:
    """An :class:`Axis` from a YAML value: a list, ``"lin:a:b:n"``, ``"log:a:b:n"``, ``"v1,v2,..."``
    or a single scalar; an :class:`Axis` passes through."""
    if isinstance(spec, Axis):
        return spec
    if isinstance(spec, str):
        if not spec.strip():
            raise ConfigError(f"{where}: empty value; expected {_SWEEP_FORMS.replace('key=', '')}")
        if _range_kind(spec):
            return _range_axis(_range_kind(spec), spec.strip(), where)
        return axis_values(_text_items(spec, where), where=where) if "," in spec else Axis((spec,), "list")
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(f"{where}: an axis needs at least one value, got an empty list")
        return Axis(tuple(spec), "list")
    return Axis((spec,), "list")


def parse_sweep(text: str) -> tuple[str, Axis]:
    """``--sweep`` text: ``key=v1,v2,...`` | ``key=lin:start:stop:num`` | ``key=log:start:stop:num``;
    list items are read with ``yaml.safe_load`` like ``--set`` values.

    Examples:
        >>> from jaxlearn import runner
        >>> key, axis = runner.parse_sweep("learning_rate=log:1e-3:1e-1:3")
        >>> key, [round(v, 6) for v in axis.values]
        ('learning_rate', [0.001, 0.01, 0.1])
    """
    key, raw = _split(text, "--sweep", _SWEEP_FORMS)
    where = f"--sweep {text!r}"
    return key, axis_values(raw if not raw or _range_kind(raw) else _text_items(raw, where), where=where)


# ----------------------------------------------------------------------------- expansion
def _leaf_type(cls, dotted: str):
    """The annotated type at a dotted key, validating every part; ``Any`` below a dict field."""
    parts, prefix = dotted.split("."), ""
    for i, part in enumerate(parts):
        names = [f.name for f in init_fields(cls)]
        if part not in names:
            raise unknown_field("config", part, names, prefix)
        tp = field_types(cls)[part]
        args = typing.get_args(tp)
        if typing.get_origin(tp) in UNIONS and len(args) == 2 and type(None) in args:
            tp = args[0] if args[1] is type(None) else args[1]
        if i == len(parts) - 1:
            return tp
        if tp is dict or typing.get_origin(tp) is dict:
            return Any
        if not is_dataclass_type(tp):
            raise ConfigError(f"config field '{prefix}{part}' ({type_name(tp)}) has no sub-field '{parts[i + 1]}'")
        cls, prefix = tp, f"{prefix}{part}."


def _draw(rng, a: Axis):
    if a.kind == "list":
        return a.values[int(rng.integers(len(a.values)))]
    if a.kind == "log":
        return min(max(math.exp(rng.uniform(math.log(a.low), math.log(a.high))), a.low), a.high)
    return float(rng.uniform(a.low, a.high))


def expand(cls: type[ConfigT], base: Mapping[str, Any], axes: Mapping[str, Axis], *,
           mode: Literal["grid", "zip", "random"] = "grid", num: int | None = None, seed: int = 0) -> list[ConfigT]:
    """The validated ``cls`` instances of a sweep of ``axes`` (dotted keys allowed) over ``base``.

    grid: Cartesian product, first axis slowest; zip: elementwise (equal lengths required);
    random: ``num`` points from ``numpy.random.default_rng(seed)``, each axis drawn independently
    (list axes uniformly among their values, lin uniform and log log-uniform in ``[low, high]``).
    lin/log values are rounded for int fields (all modes). Duplicates are dropped, keeping the first.
    """
    cls = cls if isinstance(cls, type) else type(cls)
    if mode not in MODES:
        raise ConfigError(f"sweep mode: expected one of {list(MODES)!r}, got {mode!r}{did_you_mean(mode, MODES)}")
    if not axes:
        return [parse_config(cls, base)]
    keys = list(axes)
    axs = [axis_values(axes[k], where=f"sweep '{k}'") for k in keys]
    rounded = [_leaf_type(cls, k) is int and a.kind != "list" for k, a in zip(keys, axs)]
    if mode == "grid":
        points = itertools.product(*(a.values for a in axs))
    elif mode == "zip":
        if len({len(a.values) for a in axs}) > 1:
            raise ConfigError("sweep mode zip: all axes need the same length, got "
                              + ", ".join(f"{k}={len(a.values)}" for k, a in zip(keys, axs)))
        points = zip(*(a.values for a in axs))
    else:
        check_int(num, "'num'", minimum=1, where="sweep mode random", error=ConfigError, expected="an int >= 1")
        rng = np.random.default_rng(seed)
        points = [[_draw(rng, a) for a in axs] for _ in range(int(num))]
    configs, seen = [], set()
    for point in points:
        values = dict(base)
        for k, rnd, v in zip(keys, rounded, point):
            values = set_path(values, k, int(round(v)) if rnd else v)
        config = parse_config(cls, values)
        ident = canonical_json(config)
        if ident not in seen:
            seen.add(ident)
            configs.append(config)
    return configs


# ----------------------------------------------------------------------------- files
_TOP_KEYS = ("experiment", "description", "config", "sweep", "mode", "num", "variants")
_VARIANT_KEYS = ("config", "sweep", "mode", "num")


def _merge(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _check_keys(data: Mapping, allowed, where: str):
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; expected one of: "
                              f"{', '.join(allowed)}")


def _file_config(value, where: str) -> dict:
    if not isinstance(value, (Mapping, type(None))) or any(not isinstance(k, str) for k in value or {}):
        raise ConfigError(f"{where}: 'config' must be a mapping of field names to values, got {describe_value(value)}")
    out = {}
    for key, v in (value or {}).items():  # dotted keys ("optim.name: adam") are expanded
        try:
            out = _merge(out, set_path({}, key, v))
        except ConfigError as e:
            raise ConfigError(f"{where}: config {e}") from None
    return out


def _file_sweep(value, where: str) -> dict:
    if not isinstance(value, (Mapping, type(None))) or any(not isinstance(k, str) for k in value or {}):
        raise ConfigError(f"{where}: 'sweep' must be a mapping of field names to values, got {describe_value(value)}")
    return {k: axis_values(v, where=f"{where}: sweep '{k}'") for k, v in (value or {}).items()}


def _file_mode(mode, num, where: str):
    if mode not in MODES:
        raise ConfigError(f"{where}: 'mode' must be one of {list(MODES)!r}, got {mode!r}{did_you_mean(mode, MODES)}")
    check_int(num, "'num'", minimum=1, optional=True, where=where, error=ConfigError, expected="an int >= 1")
    if mode == "random" and num is None:
        raise ConfigError(f"{where}: mode random needs 'num' (how many points to draw)")
    return mode, num


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A loaded config file; ``variants[name]`` is ``{"config", "sweep", "mode", "num"}``."""

    path: str
    experiment: str
    description: str
    variants: dict

    def variant(self, name: str = "default") -> dict:
        """A copy of variant ``name``; an unknown name raises :class:`ConfigError` listing the known ones."""
        if name not in self.variants:
            raise ConfigError(f"{self.path}: unknown variant {name!r}{did_you_mean(name, self.variants)}; "
                              f"known variants: {', '.join(self.variants)}")
        return copy.deepcopy(self.variants[name])


def load_file(path: str | os.PathLike) -> ConfigFile:
    """Reads a YAML config file (safe loader) and validates its structure and sweep axes; field values
    are validated later, by :func:`parse_config` / :func:`expand`. Variants merge their ``config``
    over the base one (nested dicts key by key), replace the sweep if they give one, else inherit it
    (and ``mode``/``num``)."""
    p = str(path)
    try:
        data = yaml.safe_load(Path(p).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config file ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{p}{f':{mark.line + 1}' if mark is not None else ''}: invalid YAML: {problem}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: expected a mapping with an 'experiment' key at the top level, got "
                          f"{describe_value(data)}")
    _check_keys(data, _TOP_KEYS, p)
    experiment, description = data.get("experiment"), data.get("description") or ""
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"{p}: 'experiment' is required and must be a non-empty str, got {experiment!r}")
    if not isinstance(description, str):
        raise ConfigError(f"{p}: 'description' must be a str, got {describe_value(description)}")
    mode, num = _file_mode(data.get("mode", "grid"), data.get("num"), p)
    base = {"config": _file_config(data.get("config"), p), "sweep": _file_sweep(data.get("sweep"), p),
            "mode": mode, "num": num}
    variants, raw = {"default": base}, data.get("variants") or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{p}: 'variants' must be a mapping of names to variants, got {describe_value(raw)}")
    for name, body in raw.items():
        where, body = f"{p}: variant {name!r}", {} if body is None else body
        if not isinstance(name, str) or name == "default":
            raise ConfigError(f"{where}: a variant name must be a str other than 'default'")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(_VARIANT_KEYS)}, got "
                              f"{describe_value(body)}")
        _check_keys(body, _VARIANT_KEYS, where)
        v_mode, v_num = _file_mode(body.get("mode", mode), body.get("num", num), where)
        variants[name] = {"config": _merge(base["config"], _file_config(body.get("config"), where)),
                          "sweep": _file_sweep(body["sweep"], where) if "sweep" in body else dict(base["sweep"]),
                          "mode": v_mode, "num": v_num}
    return ConfigFile(p, experiment, description, variants)
