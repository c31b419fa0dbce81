"""Typed values from YAML: a dataclass built from a mapping (type-checked, the closest valid
name suggested for an unknown key), YAML errors on one line, the float syntax PyYAML misses.
Every YAML text the tools read (configs, search-space files, ``--set`` values) is parsed by
:func:`load_yaml`, which refuses a mapping key given twice."""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any

import yaml

from .errors import ConfigError

FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, but a key given twice in one mapping (at any depth) is an error
    instead of the last one silently winning. Keys merged in with ``<<`` may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:          # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        problem=f"duplicate key {key!r} on line {key_node.start_mark.line + 1} "
                                f"(first on line {first + 1})")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (:class:`UniqueKeyLoader`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line (the CLI prints errors as a single line)."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def suggest(name: str, valid: Any, prefix: str = "") -> str:
    """``; did you mean 'x'?`` for the closest of ``valid`` to ``name``, or an empty string."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def build_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    """Dataclass ``cls`` from mapping ``raw``, nested dataclasses included: unknown keys and
    values of the wrong type are one ConfigError naming the dotted key (``prefix`` + key)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + str(key)!r}"
                              f"{suggest(str(key), names, prefix)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = build_dataclass(hint, value or {}, prefix + key + ".")
        else:
            values[key] = _coerce(value, hint, prefix + key)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 (PyYAML) reads exponent floats without a dot, e.g. ``1e-3``, as strings.
        if isinstance(value, str) and FLOAT_RE.fullmatch(value.strip()):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    quote = (" (quote it: YAML reads on/off/yes/no as booleans)"
             if hint is str and isinstance(value, bool) else "")
    raise ConfigError(f"{key} must be of type {getattr(hint, '__name__', hint)}, got {value!r}{quote}")
