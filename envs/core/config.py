"""Typed, validated scenario configuration.

Scenarios are YAML files under ``configs/scenarios/<env>/`` loaded into frozen
dataclasses. Each field may carry its allowed range in its metadata::

    @dataclass(frozen=True)
    class ChannelConfig:
        doppler_hz: float = field(default=5.0, metadata=bounds(0.0, 2000.0))
        model: str = field(default="UMi", metadata=choices("UMi", "UMa"))

:func:`build` turns a mapping into such a dataclass and raises ``ValueError``
naming the dotted key for an unknown key, a wrong type or an out-of-range
value. :func:`load_scenario` resolves a scenario name or path and applies dotted
overrides (``{"channel.doppler_hz": 50}``) before validation, so an override is
checked exactly like a YAML value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np
import yaml

T = TypeVar("T")

_BOUNDS = "bounds"
_CHOICES = "choices"
_LENGTH = "length"


class FrozenMap(Mapping):
    """A read-only mapping for ``dict`` fields of frozen configs; hashable, picklable, deep-copyable.

    (``types.MappingProxyType`` is read-only too but cannot be pickled, which subprocess
    vector envs, RLlib workers and ``copy.deepcopy`` need.)
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is read-only")

    def __reduce__(self):
        return (FrozenMap, (self._data,))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def bounds(low: float | None = None, high: float | None = None, *, length: int | None = None) -> dict:
    """Field metadata: inclusive numeric range (``None`` = open); for sequences, per element."""
    meta: dict[str, Any] = {_BOUNDS: (low, high)}
    if length is not None:
        meta[_LENGTH] = length
    return meta


def choices(*allowed: Any) -> dict:
    """Field metadata: the value must be one of ``allowed``."""
    return {_CHOICES: tuple(allowed)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _check_scalar(key: str, value: Any, tp: Any) -> Any:
    """Validate one scalar; numpy scalars (``np.int64``, ``np.float32``, ``np.bool_``) count as Python ones."""
    if tp is bool:
        if not _is_bool(value):
            raise ValueError(f"{key}: expected a bool, got {value!r}")
        return bool(value)
    if tp is int:
        if _is_bool(value) or not isinstance(value, numbers.Real):
            raise ValueError(f"{key}: expected an int, got {value!r}")
        if isinstance(value, numbers.Integral):
            return int(value)
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{key}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e6 / 3.5e9 (no exponent sign) as strings
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{key}: expected a number, got {value!r}") from None
        if _is_bool(value) or not isinstance(value, numbers.Real):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{key}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported config field type {_type_name(tp)}")


def _check_range(key: str, value: Any, meta: Mapping) -> None:
    if _CHOICES in meta and value not in meta[_CHOICES]:
        allowed = ", ".join(repr(c) for c in meta[_CHOICES])
        raise ValueError(f"{key}: {value!r} is not allowed (allowed: {allowed})")
    if _BOUNDS in meta and value is not None:
        low, high = meta[_BOUNDS]
        if (low is not None and value < low) or (high is not None and value > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ValueError(f"{key}: {value!r} is out of range (allowed: [{lo}, {hi}])")


def _convert(key: str, value: Any, tp: Any, meta: Mapping) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) == len(typing.get_args(tp)):
                raise ValueError(f"{key}: may not be null")
            return None
        return _convert(key, value, args[0], meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return build(tp, value, prefix=f"{key}.")
    if origin is tuple:
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        elem = args[0]
        if _LENGTH in meta and len(value) != meta[_LENGTH]:
            raise ValueError(f"{key}: expected {meta[_LENGTH]} values, got {len(value)}")
        if len(value) == 0:
            raise ValueError(f"{key}: expected a non-empty list")
        out = tuple(_convert(f"{key}[{i}]", v, elem, {}) for i, v in enumerate(value))
        for i, v in enumerate(out):
            _check_range(f"{key}[{i}]", v, meta)
        return out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        out_map = {}
        for k, v in value.items():
            out_map[str(k)] = _convert(f"{key}.{k}", v, vt, {})
            _check_range(f"{key}.{k}", out_map[str(k)], meta)
        return FrozenMap(out_map)
    value = _check_scalar(key, value, tp)
    _check_range(key, value, meta)
    return value


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Validate ``data`` against dataclass ``cls`` and return the instance.

    Raises:
        ValueError: on an unknown key, a wrong type or an out-of-range value; the
            message starts with the dotted key.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}' (allowed here: {allowed})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(f"{prefix}{name}", data[name], hints[name], f.metadata)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field without a default is missing
        raise ValueError(f"{prefix or 'config'}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        check()
    return obj


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`build`: plain dicts, lists and scalars (YAML-ready)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def apply_overrides(data: dict, overrides: Mapping[str, Any]) -> dict:
    """Return a copy of ``data`` with dotted-key overrides set (``"a.b": 1``).

    Intermediate keys that do not exist are created; :func:`build` then rejects
    them if the dataclass has no such field, naming the full dotted key.
    """
    out = _deep_copy(data)
    for dotted, value in overrides.items():
        if not isinstance(dotted, str) or not dotted or any(p == "" for p in dotted.split(".")):
            raise ValueError(f"bad override key {dotted!r}: expected dotted names like 'channel.doppler_hz'")
        node = out
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ValueError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def read_yaml(path: Path | str) -> dict:
    """Read a YAML mapping (UTF-8); an unreadable file, a parse error or a non-mapping raises ``ValueError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"bad YAML in {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at top level, got {type(data).__name__}")
    return data


def configs_dir() -> Path:
    """Folder of the package data ``edgelam.configs``."""
    return Path(str(resources.files("edgelam.configs")))


def scenario_names(env_dir: str) -> list[str]:
    """Names of the shipped scenarios of one environment folder."""
    folder = configs_dir() / "scenarios" / env_dir
    return sorted(p.stem for p in folder.glob("*.yaml"))


def scenario_path(env_dir: str, scenario: str | Path) -> Path:
    """Resolve a scenario name (shipped YAML) or a path to a YAML file."""
    text = str(scenario)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"scenario file {path} does not exist")
        return path
    path = configs_dir() / "scenarios" / env_dir / f"{text}.yaml"
    if not path.is_file():
        names = ", ".join(scenario_names(env_dir)) or "none"
        raise ValueError(f"unknown scenario {text!r} for {env_dir} (shipped: {names}; or give a YAML path)")
    return path


def load_scenario(
    cls: type[T], env_dir: str, scenario: str | Path = "default", overrides: Mapping[str, Any] | None = None
) -> T:
    """Load scenario ``scenario`` of ``configs/scenarios/<env_dir>/`` into ``cls``.

    Args:
        cls: the scenario dataclass of the environment.
        env_dir: the environment's folder name under ``configs/scenarios``.
        scenario: a shipped scenario name or a path to a YAML file.
        overrides: dotted keys set on top of the YAML values before validation.

    Raises:
        ValueError: for an unknown scenario, an unreadable, malformed or empty file, or a bad value.
    """
    data = scenario_data(env_dir, scenario)
    test = data.pop(TEST_KEY, None) or {}
    if overrides:
        data = apply_overrides(data, overrides)
    config = build(cls, data)
    if test:  # the test split's shifted values must make a valid scenario too
        build(cls, apply_overrides(data, test), prefix=f"{TEST_KEY}: ")
    return config


# keys of a scenario YAML that are not config values: the scenario it extends, and its test split's shift
EXTENDS_KEY = "extends"
TEST_KEY = "test"


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mappings merged key by key (a non-mapping value replaces)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def scenario_data(env_dir: str, scenario: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw values of scenario ``scenario`` (a shipped name or a YAML path), ``extends`` resolved.

    A scenario may start with ``extends: <shipped scenario>`` (or a YAML path, relative to this file's
    folder, e.g. another env's ``../model_cache/default.yaml``): its values are that scenario's with
    this file's merged on top (mappings key by key), so a tier states only what it changes. Its
    ``test`` block (dotted keys) is the shift of its test split, kept under ``test``; a ``test``
    block of the extended scenario is not inherited.

    Raises:
        ValueError: for an unknown scenario, an unreadable, malformed or empty file, an ``extends``
            cycle, or a ``test`` block that is not a mapping.
    """
    path = scenario_path(env_dir, scenario)
    data = read_yaml(path)
    if not data:
        raise ValueError(
            f"{path}: the scenario is empty; a scenario sets its values (copy "
            f"configs/scenarios/{env_dir}/default.yaml as a start: keys left out take the config class's "
            f"defaults, which are not scenario 'default')"
        )
    test = data.get(TEST_KEY)
    if test is not None and not isinstance(test, Mapping):
        raise ValueError(f"{path}: {TEST_KEY} must be a mapping of dotted keys to the test split's values")
    base = data.pop(EXTENDS_KEY, None)
    if base is not None:
        text = str(base)
        if (text.endswith((".yaml", ".yml")) or "/" in text) and not Path(text).is_absolute():
            text = str((path.parent / text).resolve())  # a YAML path is relative to this file's folder
        if text in _seen or text == str(scenario) or text == str(path.resolve()):
            raise ValueError(f"{path}: {EXTENDS_KEY} cycle through {base!r}")
        parent = scenario_data(env_dir, text, (*_seen, str(scenario)))
        parent.pop(TEST_KEY, None)
        data = _merge(parent, data)
    return data


def scenario_test_overrides(env_dir: str, scenario: str | Path) -> dict[str, Any]:
    """The dotted overrides of scenario ``scenario``'s test split (its ``test`` block; empty without one).

    The test split is what ``edgelam compare`` and ``edgelam results`` evaluate on by default: the
    evaluation seeds (from ``TEST_SEED``) with these values shifted (unseen Doppler, loads, user or
    device counts), which training never sees.
    """
    return dict(scenario_data(env_dir, scenario).get(TEST_KEY) or {})
