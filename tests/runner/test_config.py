"""Typed experiment configs: coercion, one-line errors, sweeps, config files and run ids."""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Optional

import numpy as np
import pytest

from jaxlearn.runner import config as C
from jaxlearn.runner import configfile as F


@dataclasses.dataclass(frozen=True)
class Optim:
    name: Literal["sgd", "adam"] = C.static("sgd")
    momentum: float = C.static(0.0, min=0.0, max=1.0)


@dataclasses.dataclass(frozen=True)
class Cfg:
    seed: int = C.dynamic(0, min=0, help="PRNG seed")
    learning_rate: float = C.dynamic(0.01, min=0.0)
    use_bias: bool = C.dynamic(True)
    widths: tuple[int, ...] = C.static((128, 128), min=1)
    num_steps: int = C.static(100, min=1)
    activation: str = C.static("relu", choices=("relu", "tanh"))
    optim: Optim = C.static(Optim())
    pair: tuple[int, float] = (1, 0.5)
    label: Optional[str] = None
    extra: dict = C.static({"a": 1})
    batch: int | None = C.static(None, min=1)


@dataclasses.dataclass(frozen=True)
class BadDynamic:
    widths: tuple[int, ...] = C.dynamic((1,))


@dataclasses.dataclass(frozen=True)
class Required:
    name: str
    steps: int = 1


def test_field_kinds_and_help():
    assert C.dynamic_fields(Cfg) == ("seed", "learning_rate", "use_bias")
    assert C.static_fields(Cfg)[:3] == ("widths", "num_steps", "activation")
    assert C.is_dynamic(Cfg, "seed") and not C.is_dynamic(Cfg(), "pair")
    rows = {r[0]: r for r in C.field_help(Cfg)}
    assert rows["seed"] == ("seed", "dynamic", "int", 0, "PRNG seed")
    assert rows["widths"][2] == "tuple[int, ...]" and rows["pair"][1] == "static"
    assert rows["extra"][3] == {"a": 1} and Cfg().extra is not Cfg().extra
    assert C.field_help(Required)[0][3] is dataclasses.MISSING
    required = C.field_rows(Required)
    assert required[0] == {"field": "name", "kind": "static", "type": "str", "default": None, "required": True,
                           "range": "", "help": ""}
    rows = {r["field"]: r for r in C.field_rows(Cfg, {"seed": 3})}
    assert rows["seed"]["value"] == 3 and rows["seed"]["kind"] == "dynamic" and "value" not in rows["widths"]
    assert rows["seed"]["range"] == ">= 0" and rows["activation"]["range"] == "one of relu, tanh"


def test_defaults_and_coercion():
    cfg = C.parse_config(Cfg, {})
    assert cfg == Cfg()
    cfg = C.parse_config(Cfg, {"learning_rate": "1e-3", "num_steps": 1e3, "seed": "7", "use_bias": "FALSE",
                               "widths": [64, "32"], "optim": {"momentum": 1}, "label": "x", "batch": "16",
                               "pair": [2, 3], "extra": {"k": [1, 2.5]}})
    assert cfg.learning_rate == 0.001 and isinstance(cfg.learning_rate, float)
    assert cfg.num_steps == 1000 and type(cfg.num_steps) is int and cfg.seed == 7 and cfg.use_bias is False
    assert cfg.widths == (64, 32) and cfg.optim == Optim("sgd", 1.0) and isinstance(cfg.optim.momentum, float)
    assert cfg.pair == (2, 3.0) and cfg.label == "x" and cfg.batch == 16 and cfg.extra == {"k": [1, 2.5]}
    assert C.parse_config(Cfg, {"seed": np.int64(3), "learning_rate": np.float32(0.5)}).seed == 3


def test_nested_merges_over_field_default():
    @dataclasses.dataclass(frozen=True)
    class Outer:
        optim: Optim = Optim("adam", 0.9)

    assert C.parse_config(Outer, {"optim": {"momentum": 0.5}}).optim == Optim("adam", 0.5)
    assert C.parse_config(Outer, {"optim": Optim()}).optim == Optim()


@pytest.mark.parametrize("values, message", [
    ({"learing_rate": 0.1},
     "config: unknown field 'learing_rate' (did you mean 'learning_rate'?); known fields: seed, learning_rate,"),
    ({"learning_rate": "abc"}, "config field 'learning_rate': expected a float, got 'abc' (str)"),
    ({"learning_rate": float("nan")}, "config field 'learning_rate': expected a finite float"),
    ({"learning_rate": True}, "config field 'learning_rate': expected a float, got True (bool)"),
    ({"widths": [1, 2.5]}, "config field 'widths[1]': expected an int, got 2.5"),
    ({"widths": 3}, "config field 'widths': expected a list"),
    ({"widths": [4, 0]}, "config field 'widths[1]': must be >= 1, got 0"),
    ({"num_steps": 0}, "config field 'num_steps': must be >= 1, got 0"),
    ({"num_steps": "2.5"}, "config field 'num_steps': expected an int, got '2.5' (str)"),
    ({"num_steps": True}, "config field 'num_steps': expected an int, got True (bool)"),
    ({"learning_rate": -1}, "config field 'learning_rate': must be >= 0.0, got -1.0"),
    ({"activation": "rleu"}, "config field 'activation': expected one of ['relu', 'tanh'], got 'rleu'"),
    ({"activation": 3}, "config field 'activation': expected a str, got 3"),
    ({"use_bias": "yes"}, "config field 'use_bias': expected a bool, got 'yes' (str)"),
    ({"optim": {"name": "adm"}}, "config field 'optim.name': expected one of ['sgd', 'adam'], got 'adm'"),
    ({"optim": {"momentum": 2}}, "config field 'optim.momentum': must be <= 1.0, got 2.0"),
    ({"optim": {"nme": "sgd"}}, "config: unknown field 'optim.nme' (did you mean 'optim.name'?)"),
    ({"optim": "adam"}, "config field 'optim': expected a mapping of Optim fields, got 'adam' (str)"),
    ({"pair": [1, 2, 3]}, "config field 'pair': expected 2 items"),
    ({"label": 5}, "config field 'label': expected a str, got 5"),
    ({"batch": 0}, "config field 'batch': must be >= 1, got 0"),
    ({"extra": {"a": object()}}, "config field 'extra.a': cannot serialise"),
    ({"extra": {1: 2}}, "config field 'extra': expected str keys, got 1"),
])
def test_errors(values, message):
    with pytest.raises(C.ConfigError) as info:
        C.parse_config(Cfg, values)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_where_missing_and_dynamic_type():
    with pytest.raises(C.ConfigError, match=r"^smoke field 'num_steps': must be >= 1"):
        C.parse_config(Cfg, {"num_steps": 0}, where="smoke")
    with pytest.raises(C.ConfigError, match=r"^config field 'name': missing required value"):
        C.parse_config(Required, {"steps": 2})
    assert C.parse_config(Required, {"name": "a"}) == Required("a")
    with pytest.raises(C.ConfigError, match=r"'widths': a dynamic field must be int, float or bool"):
        C.parse_config(BadDynamic, {})


def test_to_dict_and_canonical_json():
    d = C.to_dict(Cfg())
    assert d["widths"] == [128, 128] and d["optim"] == {"name": "sgd", "momentum": 0.0}
    assert isinstance(d["learning_rate"], float)
    assert C.canonical_json({"b": 1.0, "a": (1, np.float64(1e-3), np.bool_(True))}) == '{"a":[1,0.001,true],"b":1.0}'
    for bad in (float("nan"), {"x": [float("inf")]}, np.float32("nan")):
        with pytest.raises(C.ConfigError, match="non-finite"):
            C.canonical_json(bad)


def test_run_id():
    a = C.parse_config(Cfg, {"learning_rate": "1e-3"})
    b = C.parse_config(Cfg, {"learning_rate": 0.001})
    rid = C.run_id("exp", "1", a)
    assert rid == C.run_id("exp", "1", b) and len(rid) == 16 and int(rid, 16) >= 0
    assert C.run_id("e", "1", {"x": 1, "y": {"p": 1, "q": 2}}) == C.run_id("e", "1", {"y": {"q": 2, "p": 1}, "x": 1})
    others = {C.run_id("exp", "2", a), C.run_id("exp2", "1", a), C.run_id("exp", "1", C.parse_config(Cfg, {"seed": 1}))}
    assert rid not in others and len(others) == 3


def test_set_path_and_assignment():
    base = {"optim": {"name": "sgd"}, "seed": 0}
    out = F.set_path(base, "optim.momentum", 0.9)
    assert out == {"optim": {"name": "sgd", "momentum": 0.9}, "seed": 0}
    assert base == {"optim": {"name": "sgd"}, "seed": 0}
    assert F.set_path({"optim": Optim()}, "optim.name", "adam") == {"optim": {"name": "adam", "momentum": 0.0}}
    with pytest.raises(C.ConfigError, match="'seed' is 0"):
        F.set_path(base, "seed.x", 1)
    assert F.parse_assignment("learning_rate=1e-3") == ("learning_rate", "1e-3")
    assert F.parse_assignment(" widths = [128, 64]") == ("widths", [128, 64])
    assert F.parse_assignment("optim.name=adam") == ("optim.name", "adam")
    assert F.parse_assignment("label=a=b") == ("label", "a=b")


@pytest.mark.parametrize("text", ["learning_rate", "=3", " = 3"])
def test_assignment_errors(text):
    with pytest.raises(C.ConfigError, match=r"--set .*expected key=value"):
        F.parse_assignment(text)


@pytest.mark.parametrize("text, key, axis", [
    ("seed=0,1,2", "seed", F.Axis((0, 1, 2), "list")),
    ("activation=relu, tanh", "activation", F.Axis(("relu", "tanh"), "list")),
    ("widths=[64],[32, 32]", "widths", F.Axis(([64], [32, 32]), "list")),
    ("seed=3", "seed", F.Axis((3,), "list")),
    ("learning_rate=1e-3,1e-2", "learning_rate", F.Axis(("1e-3", "1e-2"), "list")),
    ("x=lin:0:1:11", "x", F.Axis(tuple(i / 10 for i in range(11)), "lin", 0.0, 1.0)),
    ("optim.momentum=lin:1:0:3", "optim.momentum", F.Axis((1.0, 0.5, 0.0), "lin", 0.0, 1.0)),
    ("lr=log:1e-3:1:4", "lr", F.Axis((0.001, 0.01, 0.1, 1.0), "log", 0.001, 1.0)),
])
def test_parse_sweep(text, key, axis):
    assert F.parse_sweep(text) == (key, axis)


@pytest.mark.parametrize("text, message", [
    ("lr=log:0:1:3", "log axis needs start > 0"),
    ("lr=log:1:-1:3", "log axis needs start > 0"),
    ("lr=lin:1:2", "expected lin:start:stop:num"),
    ("lr=lin:a:2:3", "with numbers"),
    ("lr=lin:0:1:2.5", "integer num >= 1"),
    ("lr=lin:0:1:0", "integer num >= 1"),
    ("lr=", "empty value"),
    ("lr", "expected key=v1,v2,..."),
    ("=1,2", "expected key=v1,v2,..."),
])
def test_sweep_errors(text, message):
    with pytest.raises(C.ConfigError) as info:
        F.parse_sweep(text)
    assert message in str(info.value) and repr(text) in str(info.value)


def test_axis_values():
    assert F.axis_values([1, 2]) == F.Axis((1, 2), "list")
    assert F.axis_values(0.5) == F.Axis((0.5,), "list")
    assert F.axis_values("adam") == F.Axis(("adam",), "list")
    assert F.axis_values("lin:0:2:3").values == (0.0, 1.0, 2.0)
    with pytest.raises(C.ConfigError, match="at least one value"):
        F.axis_values([])


def test_expand_grid():
    axes = {"seed": F.axis_values([0, 1, 2]), "learning_rate": F.axis_values("log:1e-3:1e-1:3")}
    configs = F.expand(Cfg, {"num_steps": 5}, axes)
    assert len(configs) == 9 and all(c.num_steps == 5 for c in configs)
    assert [(c.seed, c.learning_rate) for c in configs[:4]] == [(0, 0.001), (0, 0.01), (0, 0.1), (1, 0.001)]
    assert F.expand(Cfg, {"seed": 4}, {}) == [C.parse_config(Cfg, {"seed": 4})]
    nested = F.expand(Cfg, {}, {"optim.name": F.axis_values(["sgd", "adam"])})
    assert [c.optim.name for c in nested] == ["sgd", "adam"]
    # lin/log values are rounded for int fields; duplicates are removed keeping the first.
    assert [c.num_steps for c in F.expand(Cfg, {}, {"num_steps": F.axis_values("lin:1:2:5")})] == [1, 2]
    dup = F.expand(Cfg, {}, {"seed": F.axis_values([1, 0, 1]), "activation": F.axis_values("relu,relu")})
    assert [c.seed for c in dup] == [1, 0]
    assert len(F.expand(Cfg, {}, {"learning_rate": F.axis_values(["1e-3", 0.001])})) == 1


def test_expand_zip():
    axes = {"seed": F.axis_values([0, 1, 2]), "learning_rate": F.axis_values([0.1, 0.2, 0.3])}
    configs = F.expand(Cfg, {}, axes, mode="zip")
    assert [(c.seed, c.learning_rate) for c in configs] == [(0, 0.1), (1, 0.2), (2, 0.3)]
    with pytest.raises(C.ConfigError, match=r"same length, got seed=3, learning_rate=2"):
        F.expand(Cfg, {}, {"seed": F.axis_values([0, 1, 2]), "learning_rate": F.axis_values([0.1, 0.2])}, mode="zip")


def test_expand_random():
    axes = {"learning_rate": F.axis_values("log:1e-4:1:4"), "num_steps": F.axis_values("lin:10:20:2"),
            "optim.momentum": F.axis_values("lin:0:1:2"), "activation": F.axis_values(["relu", "tanh"])}
    a = F.expand(Cfg, {}, axes, mode="random", num=200, seed=3)
    assert a == F.expand(Cfg, {}, axes, mode="random", num=200, seed=3)
    assert a != F.expand(Cfg, {}, axes, mode="random", num=200, seed=4)
    assert len(a) == 200
    lrs = np.array([c.learning_rate for c in a])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1.0
    logs = np.log10(lrs)  # log-uniform: about a quarter of the points per decade
    assert 30 < np.sum(logs < -3) < 70 and 30 < np.sum(logs > -1) < 70
    assert all(type(c.num_steps) is int and 10 <= c.num_steps <= 20 for c in a)
    assert {c.activation for c in a} == {"relu", "tanh"}
    assert all(0.0 <= c.optim.momentum <= 1.0 for c in a)
    few = F.expand(Cfg, {}, {"seed": F.axis_values([0, 1])}, mode="random", num=50)
    assert sorted(c.seed for c in few) == [0, 1]  # repeated draws deduplicated


@pytest.mark.parametrize("axes, kwargs, message", [
    ({"learing_rate": [0.1]}, {}, "unknown field 'learing_rate' (did you mean 'learning_rate'?)"),
    ({"optim.nam": [0.1]}, {}, "unknown field 'optim.nam' (did you mean 'optim.name'?)"),
    ({"seed.x": [1]}, {}, "has no sub-field 'x'"),
    ({"seed": [1]}, {"mode": "grdi"}, "expected one of ['grid', 'zip', 'random'], got 'grdi' (did you mean 'grid'?)"),
    ({"seed": [1]}, {"mode": "random"}, "'num' must be an int >= 1, got None"),
    ({"num_steps": [0, 1]}, {}, "config field 'num_steps': must be >= 1, got 0"),
])
def test_expand_errors(axes, kwargs, message):
    with pytest.raises(C.ConfigError) as info:
        F.expand(Cfg, {}, {k: F.axis_values(v) for k, v in axes.items()}, **kwargs)
    assert message in str(info.value)


FILE = """\
experiment: population_digits
description: seeds x learning rates
config:
  widths: [64, 64]
  num_steps: 2000
  optim: {name: adam, momentum: 0.5}
sweep:
  seed: [0, 1, 2, 3]
  learning_rate: "log:1e-3:1:7"
variants:
  smoke:
    config: {num_steps: 200, optim: {momentum: 0.9}, optim.name: sgd}
    sweep: {seed: "0,1"}
  short:
    config: {num_steps: 10}
  rand:
    mode: random
    num: 5
"""


def _write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_file_variants(tmp_path):
    f = F.load_file(_write(tmp_path, FILE))
    assert f.experiment == "population_digits" and f.description == "seeds x learning rates"
    assert set(f.variants) == {"default", "smoke", "short", "rand"}
    d = f.variant()
    assert d["config"]["optim"] == {"name": "adam", "momentum": 0.5} and d["mode"] == "grid" and d["num"] is None
    assert list(d["sweep"]) == ["seed", "learning_rate"] and len(d["sweep"]["learning_rate"].values) == 7
    smoke = f.variant("smoke")
    assert smoke["config"] == {"widths": [64, 64], "num_steps": 200, "optim": {"name": "sgd", "momentum": 0.9}}
    assert smoke["sweep"] == {"seed": F.Axis((0, 1), "list")}
    short = f.variant("short")
    assert short["sweep"] == d["sweep"] and short["config"]["num_steps"] == 10
    assert f.variant("rand")["mode"] == "random" and f.variant("rand")["num"] == 5
    configs = F.expand(Cfg, smoke["config"], smoke["sweep"], mode=smoke["mode"], num=smoke["num"])
    assert [c.seed for c in configs] == [0, 1] and configs[0].optim == Optim("sgd", 0.9)
    assert len(F.expand(Cfg, d["config"], d["sweep"])) == 28
    f.variant("smoke")["config"]["num_steps"] = 1  # copies: the file object is not mutated
    assert f.variant("smoke")["config"]["num_steps"] == 200
    with pytest.raises(C.ConfigError,
                       match=r"unknown variant 'smok' \(did you mean 'smoke'\?\); known variants: default, smoke"):
        f.variant("smok")


@pytest.mark.parametrize("text, message", [
    ("experiment: x\nsweeep: {seed: [1]}\n", "unknown key 'sweeep' (did you mean 'sweep'?)"),
    ("experiment: x\nvariants:\n  a: {swep: {}}\n", "variant 'a': unknown key 'swep' (did you mean 'sweep'?)"),
    ("description: x\n", "'experiment' is required"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("", "expected a mapping"),
    ("experiment: x\nmode: random\n", "mode random needs 'num'"),
    ("experiment: x\nmode: rand\nnum: 3\n", "'mode' must be one of"),
    ("experiment: x\nsweep: {lr: 'log:0:1:3'}\n", "sweep 'lr': a log axis needs start > 0"),
    ("experiment: x\nconfig: [1]\n", "'config' must be a mapping"),
    ("experiment: x\nvariants: {default: {}}\n", "other than 'default'"),
    ("experiment: x\nconfig: {a: [1, 2\n", "invalid YAML"),
    ("experiment: x\nconfig:\n  a: 1\n b: 2\n", "exp.yaml:4: invalid YAML"),
    ("experiment: !!python/object/apply:os.system ['echo hi']\n", "python/object"),
])
def test_load_file_errors(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(C.ConfigError) as info:
        F.load_file(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_load_file_missing(tmp_path):
    with pytest.raises(C.ConfigError, match="cannot read config file"):
        F.load_file(tmp_path / "nope.yaml")


def test_axis_lin_values_are_clean():
    assert F.axis_values("lin:0:1:11").values[3] == 0.3
    assert all(math.isclose(a, b) for a, b in zip(F.axis_values("log:1:100:5").values, np.geomspace(1, 100, 5)))


def test_load_file_dotted_config_keys(tmp_path):
    f = F.load_file(_write(tmp_path, "experiment: x\nconfig: {optim.name: adam, optim: {momentum: 0.5}}\n"))
    assert f.variant()["config"] == {"optim": {"name": "adam", "momentum": 0.5}}
    assert C.parse_config(Cfg, f.variant()["config"]).optim == Optim("adam", 0.5)
    with pytest.raises(C.ConfigError, match=r"exp\.yaml: config bad key 'a\.\.b'"):
        F.load_file(_write(tmp_path, "experiment: x\nconfig: {a..b: 1}\n"))


@dataclasses.dataclass(frozen=True)
class _Snapshots:
    snapshots: tuple[int, ...] = C.static((), min=1)
    scales: tuple[float, ...] = C.static((1.0,))


def test_a_range_string_fills_a_tuple_field():
    cfg = C.parse_config(_Snapshots, {"snapshots": "log:1:1000:4", "scales": "lin:0:1:3"})
    assert cfg.snapshots == (1, 10, 100, 1000) and cfg.scales == (0.0, 0.5, 1.0)
    # rounding to steps removes repeats: geomspace(1, 8, 6) -> 1, 1.5, 2.3, 3.5, 5.3, 8
    assert C.parse_config(_Snapshots, {"snapshots": "log:1:8:6"}).snapshots == (1, 2, 3, 5, 8)
    with pytest.raises(C.ConfigError, match=r"config field 'snapshots': expected log:start:stop:num"):
        C.parse_config(_Snapshots, {"snapshots": "log:1:8"})
    with pytest.raises(C.ConfigError, match=r"config field 'snapshots\[0\]': must be >= 1, got 0"):
        C.parse_config(_Snapshots, {"snapshots": "lin:0:4:3"})
