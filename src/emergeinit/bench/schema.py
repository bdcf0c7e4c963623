"""The config schema's building blocks: a :class:`Field` per key, and resolving a raw table
against a schema (types checked, defaults filled, grid axes as lists).

A leaf of the bench wing (it imports only :mod:`.plugins`, itself a leaf): the generic schema
in :mod:`.config` and each task's own keys (:meth:`.tasks.Task.schema`) are built from it.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError
from . import plugins

__all__ = [
    "Field",
    "coerce",
    "fraction",
    "merge",
    "resolve_table",
    "shape",
    "unit_interval_open",
    "unknown_key",
]


@dataclass(frozen=True)
class Field:
    """One config key: its type, default and constraints.

    ``kind``: ``str``, ``int``, ``float``, ``bool``, ``int_list``, ``float_list``, ``str_list``,
    ``table`` (a free-form table of TOML values, handed on as it is) or ``table_list`` (a list
    of such tables; their keys are checked by the config's cross checks). ``plugin`` names the
    plug-in kind (``init``, ``dataset``, ``optimizer``, ``task``) whose import paths and entry
    points the key accepts besides ``choices``.

    ``single``: an axis whose one value stays a scalar (a key that was a plain value before it
    became an axis: ``"sgd"`` resolves to ``"sgd"``, as it always did, ``["sgd"]`` too, and
    only two or more values to a list). ``keyed_by``: the axis may also be a table of lists
    keyed by the values of that sibling axis (``train.lr = {sgd = [0.05], adamw = [0.001]}``);
    the keys are checked against the sibling by the config's cross checks.
    """

    kind: str
    default: Any
    axis: bool = False  # a grid axis: one value or a list, resolved to a list
    choices: tuple[Any, ...] | None = None
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    positive: bool = False  # strictly > 0
    nonempty: bool = False
    check: Callable[[Any], str | None] | None = None
    whole: bool = False  # ``check`` judges the whole list, not each item
    plugin: str | None = None
    single: bool = False
    keyed_by: str | None = None
    doc: str = ""


def unit_interval_open(value: Any) -> str | None:
    return None if 0.0 < value < 1.0 else "must lie strictly between 0 and 1"


def fraction(value: Any) -> str | None:
    return None if 0.0 < value <= 1.0 else "must lie in (0, 1]"


def shape(value: Any) -> str | None:
    if len(value) != 3 or any(v < 1 for v in value):
        return "must be [channels, height, width] with every entry >= 1"
    return None


def _type_error(key: str, field: Field, value: Any) -> ConfigError:
    want = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "int_list": "a list of integers",
        "float_list": "a list of numbers",
        "str_list": "a list of strings",
        "table": "a table",
        "table_list": "a list of tables",
    }[field.kind]
    if field.axis:  # one value or a list of them
        one = {"bool_list": "true or false", "bool": "true or false"}.get(field.kind)
        want = (
            f"{one}, or a list of them"
            if one
            else f"{want.removeprefix('a list of ').rstrip('s')} or {want}"
        )
    if field.keyed_by:
        want += f" (or a table of them keyed by {field.keyed_by})"
    return ConfigError(f"{key}: expected {want}, got {value!r}")


def _scalar(key: str, kind: str, value: Any, field: Field) -> Any:
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return float(value)
    raise _type_error(key, field, value)


def _check_value(key: str, field: Field, value: Any) -> None:
    if field.choices is not None and value not in field.choices:
        if field.plugin is not None and plugins.is_plugin(field.plugin, value):
            return
        allowed = ", ".join(repr(c) for c in field.choices)
        if field.plugin is not None:
            allowed += ", or a plug-in 'package.module:function' (see docs/bench.md)"
        raise ConfigError(f"{key}: {value!r} is not one of {allowed}")
    if field.positive and not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
    if field.low is not None and value < field.low:
        raise ConfigError(f"{key}: must be >= {field.low:g}, got {value!r}")
    if field.high is not None and value > field.high:
        raise ConfigError(f"{key}: must be <= {field.high:g}, got {value!r}")
    if field.nonempty and field.kind == "str" and not value:
        raise ConfigError(f"{key}: must not be empty")


def coerce(key: str, field: Field, value: Any) -> Any:
    """Type-check one value, normalize axes to lists, and apply its constraints."""
    if field.kind == "table":
        if not isinstance(value, Mapping):
            raise _type_error(key, field, value)
        return copy.deepcopy(dict(value))
    if field.kind == "table_list":
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise _type_error(key, field, value)
        return [copy.deepcopy(dict(v)) for v in value]
    if field.keyed_by and isinstance(value, Mapping):
        return _keyed(key, field, value)
    if key == "train.seeds" and isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ConfigError(f"{key}: a seed count must be >= 1, got {value}")
        value = list(range(value))
    is_list = field.kind.endswith("_list") or field.axis
    if not is_list:
        out = _scalar(key, field.kind, value, field)
        _check_value(key, field, out)
    else:
        item_kind = field.kind.removesuffix("_list")
        if not isinstance(value, list):
            if not field.axis:
                raise _type_error(key, field, value)
            value = [value]
        out = [_scalar(key, item_kind, v, field) for v in value]
        if field.nonempty and not out:
            raise ConfigError(f"{key}: must not be an empty list")
        if not field.whole:
            for item in out:
                _check_value(key, field, item)
        if not field.whole and len(set(map(repr, out))) != len(out):
            raise ConfigError(f"{key}: values repeat in {out!r}")
    if field.check is not None:
        items = [out] if field.whole or not is_list else out
        for item in items:
            problem = field.check(item)
            if problem:
                raise ConfigError(f"{key}: {problem}, got {value!r}")
    if field.single and isinstance(out, list) and len(out) == 1:
        return out[0]
    return out


def _keyed(key: str, field: Field, table: Mapping[str, Any]) -> dict[str, Any]:
    """A ``keyed_by`` axis given as a table: each entry checked as the axis itself."""
    if not table:
        raise ConfigError(
            f"{key}: an empty table; give each {field.keyed_by} its values, e.g. "
            f"{key.rsplit('.', 1)[-1]} = {{sgd = [0.05], adamw = [0.001]}}"
        )
    entry = replace(field, keyed_by=None)
    return {str(name): coerce(f"{key}.{name}", entry, v) for name, v in table.items()}


def unknown_key(key: str, known: Mapping[str, Any]) -> ConfigError:
    """An unknown key, with the closest known one as a suggestion."""
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, list(known), n=1)
    hint = ""
    if close:
        hint = f" (did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?)"
    known_list = ", ".join(sorted(known))
    return ConfigError(f"unknown key {key!r}{hint}; known here: {known_list}")


def resolve_table(
    raw: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """``raw`` checked against ``schema`` (nested dicts of :class:`Field`), defaults filled."""
    out: dict[str, Any] = {}
    for key in raw:
        if key not in schema:
            raise unknown_key(f"{prefix}{key}", schema)
    for key, spec in schema.items():
        dotted = f"{prefix}{key}"
        if isinstance(spec, dict):
            sub = raw.get(key, {})
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{dotted}: expected a table, got {sub!r}")
            out[key] = resolve_table(sub, spec, dotted + ".")
        elif key in raw:
            out[key] = coerce(dotted, spec, raw[key])
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def merge(base: dict[str, Any], extra: Mapping[str, Any], where: str) -> None:
    """Add ``extra``'s keys to ``base`` in place (tables merge); a key defined twice is an
    error naming ``where`` it came from."""
    for key, spec in extra.items():
        if isinstance(spec, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], spec, f"{where}.{key}")
        elif key in base:
            raise ValueError(f"{where}: config key {key!r} is defined twice")
        else:
            base[key] = copy.deepcopy(dict(spec)) if isinstance(spec, Mapping) else spec
