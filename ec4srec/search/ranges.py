"""Search-space files: YAML ranges read, checked and written back.

Contracts:
- :func:`load_ranges` reads a space file: ``None`` or ``default`` is the packaged
  ``default_space.yaml``, a bare name ``NAME`` the packaged ``NAME_space.yaml`` (``paper``), and
  anything else a file path. The file is checked completely: a top-level keyword, a param spec
  keyword, a config key, a method or a backbone it does not know, bad YAML (a key given twice
  included), a value of the wrong type, ``low > high``, empty ``choices``, ``log`` with
  ``low <= 0``, a non-integer ``step`` on an integer key (the config field's type decides) or
  a range value the config rejects are each one :class:`~ec4srec.config.ConfigError` naming
  the file and the key.
- The result is ``{params, common, backbones, methods, warmup_keys, retune}`` (``retune``: the
  keys a staged study's second stage searches again on the tuned base, docs/search.md); :func:`dump_ranges`
  writes it back as YAML that :func:`load_ranges` reads to the same mapping.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import BACKBONES, METHODS, Config, ConfigError, field_type
from ..typed import FLOAT_RE, load_yaml, suggest, yaml_problem

TOP_KEYS = ("params", "common", "backbones", "methods", "warmup_keys", "retune")
SPEC_KEYS = ("choices", "low", "high", "step", "log")
PACKAGED = "{}_space.yaml"


def packaged_spaces() -> list[str]:
    """Names of the space files shipped in the package (``default``, ``paper``)."""
    files = resources.files("ec4srec.search").iterdir()
    return sorted(p.name[: -len(PACKAGED.format(""))] for p in files
                  if p.name.endswith(PACKAGED.format("")))


def is_packaged_name(name: str | None) -> bool:
    return name is None or name in packaged_spaces()


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read(path: str | Path | None) -> tuple[str, str]:
    # a bare word (no "/", no .yaml) is a packaged space's name when one has it, else a file
    if path is None or (isinstance(path, str) and "/" not in path and not path.endswith(
            (".yaml", ".yml")) and (path in packaged_spaces() or not Path(path).exists())):
        name = path or "default"
        if name not in packaged_spaces():
            raise ConfigError(f"--search-space {name!r} is neither a file nor one of the packaged "
                              f"spaces {packaged_spaces()}")
        filename = PACKAGED.format(name)
        return resources.files("ec4srec.search").joinpath(filename).read_text(), filename
    try:
        return Path(path).read_text(), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: search-space file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the search-space file: {exc}") from None


def _check_value(where: str, key: str, value: Any) -> None:
    """``value`` must be a valid setting of config key ``key`` (type and range)."""
    section, _, name = key.partition(".")
    raw = Config().to_dict()
    raw[section][name] = value
    try:
        Config.from_dict(raw)
    except ConfigError as exc:
        if key in str(exc):             # a check of this key (not a cross-field rule)
            raise ConfigError(f"{where}: params.{key}: value {value!r}: {exc}") from None


def check_spec(where: str, key: str, spec: Any) -> dict[str, Any]:
    """One param's spec, checked; returns it as a plain dict."""
    at = f"{where}: params.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{at} must be a mapping with 'choices' or 'low' and 'high', got {spec!r}")
    for name in spec:
        if name not in SPEC_KEYS:
            raise ConfigError(f"{at}: unknown keyword {name!r} (expected {', '.join(SPEC_KEYS)})"
                              f"{suggest(name, SPEC_KEYS)}")
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        if extra:
            raise ConfigError(f"{at}: 'choices' cannot be combined with {sorted(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at}.choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not (isinstance(c, (str, bool)) or is_number(c)):
                raise ConfigError(f"{at}.choices: {c!r} is not a number, string or boolean")
            _check_value(where, key, c)
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{at}.choices lists a value twice: {choices!r}")
        return {"choices": list(choices)}
    if not {"low", "high"} <= set(spec):
        raise ConfigError(f"{at} needs 'choices' or both 'low' and 'high'")
    spec = dict(spec)
    for name in ("low", "high", "step"):
        # PyYAML reads an exponent without a dot (3e-4) as a string
        if isinstance(spec.get(name), str) and FLOAT_RE.fullmatch(spec[name].strip()):
            spec[name] = float(spec[name])
        if name in spec and not is_number(spec[name]):
            raise ConfigError(f"{at}.{name} must be a number, got {spec[name]!r}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise ConfigError(f"{at}: low {low} > high {high}")
    if "step" in spec and spec["step"] <= 0:
        raise ConfigError(f"{at}.step must be > 0, got {spec['step']!r}")
    for name in ("low", "high"):
        if field_type(key) is int and not isinstance(spec[name], int):
            raise ConfigError(f"{at}.{name} must be an integer ({key} is an integer key), "
                              f"got {spec[name]!r}")
    if "step" in spec and field_type(key) is int and not isinstance(spec["step"], int):
        raise ConfigError(f"{at}.step must be an integer ({key} is an integer key), "
                          f"got {spec['step']!r}")
    if "log" in spec and not isinstance(spec["log"], bool):
        raise ConfigError(f"{at}.log must be true or false, got {spec['log']!r}")
    if spec.get("log"):
        if low <= 0:
            raise ConfigError(f"{at}: a log scale needs low > 0, got low {low}")
        if "step" in spec:
            raise ConfigError(f"{at}: 'step' cannot be combined with 'log: true'")
    _check_value(where, key, low)
    _check_value(where, key, high)
    return dict(spec)


def _name_list(where: str, at: str, names: Any, params: dict) -> list[str]:
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: {at} must be a list of param names, got {names!r}")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ConfigError(f"{where}: {at} lists undefined params {unknown}"
                          f"{suggest(unknown[0], params)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: {at} lists a param twice: {names}")
    return list(names)


def parse_ranges(raw: Any, where: str) -> dict[str, Any]:
    """Check a parsed space mapping; returns {params, common, backbones, methods}."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {list(TOP_KEYS)}, "
                          f"got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{where}: unknown top-level key {key!r} (expected "
                              f"{', '.join(TOP_KEYS)}){suggest(key, TOP_KEYS)}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{where}: params must be a mapping, got {params_raw!r}")
    defaults = Config().to_dict()
    params = {}
    for key, spec in params_raw.items():
        section, dot, name = str(key).partition(".")
        if not dot or section not in defaults or name not in defaults[section]:
            valid = [f"{s}.{n}" for s, names in defaults.items() for n in names]
            raise ConfigError(f"{where}: params.{key} is not a config key{suggest(key, valid)}")
        params[key] = check_spec(where, key, spec)
    common = _name_list(where, "common", raw.get("common"), params)
    groups = {}
    for top, known in (("backbones", BACKBONES), ("methods", METHODS)):
        section = raw.get(top) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {top} must be a mapping, got {section!r}")
        groups[top] = {}
        for name, names in section.items():
            if name not in known:
                raise ConfigError(f"{where}: {top}.{name} is not one of {known}{suggest(name, known)}")
            groups[top][name] = _name_list(where, f"{top}.{name}", names, params)
    keys = raw.get("warmup_keys")
    if keys is not None and (not isinstance(keys, int) or isinstance(keys, bool) or keys < 1):
        raise ConfigError(f"{where}: warmup_keys must be a whole number >= 1 (or absent), got {keys!r}")
    retune = _name_list(where, "retune", raw.get("retune"), params)
    return {"params": params, "common": common, **groups, "warmup_keys": keys, "retune": retune}


def load_ranges(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check a search-space file (see the module docstring for ``path``)."""
    text, where = _read(path)
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {yaml_problem(exc)}") from None
    return parse_ranges(raw, where)


def dump_ranges(ranges: dict[str, Any]) -> str:
    # the optional keys are left out when unset, so older studies' files are written unchanged
    ranges = {k: v for k, v in ranges.items()
              if not (k == "warmup_keys" and v is None or k == "retune" and not v)}
    return yaml.safe_dump(ranges, sort_keys=False)
