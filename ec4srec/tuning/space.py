"""The search space: YAML ranges -> a define-by-run function for OptunaSearch.

Contracts:
- :func:`load_ranges` reads a space file: ``None`` or ``default`` is the packaged
  ``default_space.yaml``, a bare name ``NAME`` the packaged ``NAME_space.yaml`` (``paper``), and
  anything else a file path. The file is checked completely: a top-level keyword, a param spec
  keyword, a config key, a method or a backbone it does not know, bad YAML, a value of the wrong
  type, ``low > high``, empty ``choices``, ``log`` with ``low <= 0`` or a range value the config
  rejects are each one :class:`~ec4srec.config.ConfigError` naming the file and the key.
- A (method, backbone) run searches ``common`` + ``backbones[backbone]`` + ``methods[method]``
  (:func:`run_params`), in that order, each param once.
- ``SearchSpace(method, backbone, max_epochs, ranges, active=None)`` is a picklable object that
  lives in this importable module (OptunaSearch pickles it into the experiment state, so
  ``Tuner.restore`` needs it importable, never defined in ``__main__``). Called with an Optuna
  trial it suggests exactly the run's params, named by their dotted config keys
  (``method.mu_e``), and returns None. Two rules apply on top of the ranges: ``method.updates``
  (p) is capped so that ``floor(max_epochs / (p + 1)) >= 1``; explainer ``attention`` is offered
  only with the ``sasrec`` backbone.
- ``active``: the study's space file in the experiment folder (``search_space.yaml``). When set,
  every call reads the ranges from it (re-read when the file changes), so a resumed study
  samples its not-yet-created trials from a narrowed space (:func:`narrowing_problem`). A param
  whose narrowed spec Optuna cannot treat as the same distribution (a categorical with fewer
  choices, a numeric range turned into choices) is suggested under an alias Optuna name
  (``key{a,b}``, :func:`optuna_name`) and returned under its config key, so the trial's config
  holds only config keys.
- ``warmup_keys: K`` (top level): a guided run (ec4srec_ssl/_sl/ec4srec) does not sample its
  warm-up params (those that act before the first importance update: learning rate, dropout,
  similarity, tau, lambda_cl, lambda_sl) per trial but picks one of K fixed warm-up configs
  (Optuna param ``warmup_key``, categorical; the values, drawn once from the original ranges by
  a generator seeded by (method, backbone, key), go into the config), so trials share warm-up
  checkpoints by design; the first K trials take keys 0..K-1 (points_to_evaluate). Keys can be
  seeded with given configs (``warmup_configs``: the study passes its best cl4srec and duorec
  trials, whose losses are the warm-up's two terms). A narrower space on resume changes only
  the guided params of such a run.
- :func:`apply_params` turns a base Config and suggested params into a validated Config.
"""
from __future__ import annotations

import difflib
import math
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..config import _FLOAT_RE, BACKBONES, METHODS, Config, ConfigError

ATTENTION_BACKBONES = ("sasrec",)
TOP_KEYS = ("params", "common", "backbones", "methods", "warmup_keys")
GUIDED_METHODS = ("ec4srec_ssl", "ec4srec_sl", "ec4srec")
WARMUP_KEY = "warmup_key"       # the Optuna param that picks one of a run's shared warm-ups
SPEC_KEYS = ("choices", "low", "high", "step", "log")
PACKAGED = "{}_space.yaml"


def packaged_spaces() -> list[str]:
    """Names of the space files shipped in the package (``default``, ``paper``)."""
    files = resources.files("ec4srec.tuning").iterdir()
    return sorted(p.name[: -len(PACKAGED.format(""))] for p in files
                  if p.name.endswith(PACKAGED.format("")))


def is_packaged_name(name: str | None) -> bool:
    return name is None or name in packaged_spaces()


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _number(value: Any) -> bool:
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
        return resources.files("ec4srec.tuning").joinpath(filename).read_text(), filename
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
                              f"{_suggest(name, SPEC_KEYS)}")
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        if extra:
            raise ConfigError(f"{at}: 'choices' cannot be combined with {sorted(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{at}.choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if not (isinstance(c, (str, bool)) or _number(c)):
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
        if isinstance(spec.get(name), str) and _FLOAT_RE.fullmatch(spec[name].strip()):
            spec[name] = float(spec[name])
        if name in spec and not _number(spec[name]):
            raise ConfigError(f"{at}.{name} must be a number, got {spec[name]!r}")
    low, high = spec["low"], spec["high"]
    if low > high:
        raise ConfigError(f"{at}: low {low} > high {high}")
    if "step" in spec and spec["step"] <= 0:
        raise ConfigError(f"{at}.step must be > 0, got {spec['step']!r}")
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
                          f"{_suggest(unknown[0], params)}")
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
                              f"{', '.join(TOP_KEYS)}){_suggest(key, TOP_KEYS)}")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError(f"{where}: params must be a mapping, got {params_raw!r}")
    defaults = Config().to_dict()
    params = {}
    for key, spec in params_raw.items():
        section, dot, name = str(key).partition(".")
        if not dot or section not in defaults or name not in defaults[section]:
            valid = [f"{s}.{n}" for s, names in defaults.items() for n in names]
            raise ConfigError(f"{where}: params.{key} is not a config key{_suggest(key, valid)}")
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
                raise ConfigError(f"{where}: {top}.{name} is not one of {known}{_suggest(name, known)}")
            groups[top][name] = _name_list(where, f"{top}.{name}", names, params)
    keys = raw.get("warmup_keys")
    if keys is not None and (not isinstance(keys, int) or isinstance(keys, bool) or keys < 1):
        raise ConfigError(f"{where}: warmup_keys must be a whole number >= 1 (or absent), got {keys!r}")
    return {"params": params, "common": common, **groups, "warmup_keys": keys}


def load_ranges(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check a search-space file (see the module docstring for ``path``)."""
    text, where = _read(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        from ..config import _yaml_problem
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    return parse_ranges(raw, where)


def dump_ranges(ranges: dict[str, Any]) -> str:
    if ranges.get("warmup_keys") is None:
        ranges = {k: v for k, v in ranges.items() if k != "warmup_keys"}
    return yaml.safe_dump(ranges, sort_keys=False)


def run_params(ranges: dict[str, Any], method: str, backbone: str) -> dict[str, dict]:
    """The specs a (method, backbone) run searches: common, then backbone, then method params."""
    names = [*ranges.get("common", []), *ranges.get("backbones", {}).get(backbone, []),
             *ranges.get("methods", {}).get(method, [])]
    return {k: ranges["params"][k] for k in dict.fromkeys(names)}


def updates_range(spec: dict[str, Any], max_epochs: int) -> tuple[int, int]:
    """The searched p range, capped so that every update schedule fits the epoch budget."""
    high = min(int(spec["high"]), max_epochs - 1)
    if high < int(spec["low"]):
        raise ConfigError(f"method.updates >= {spec['low']} needs train.epochs >= {spec['low'] + 1}")
    return int(spec["low"]), high


def _same_distribution(old: dict, new: dict) -> bool:
    """Whether Optuna accepts ``new`` as the same param's distribution after ``old`` (numeric
    ranges of the same kind, log flag and step; Optuna refuses a changed categorical)."""
    if old == new:
        return True
    if "choices" in old or "choices" in new:
        return False
    return (bool(old.get("log")) == bool(new.get("log")) and old.get("step") == new.get("step")
            and _is_int(old) == _is_int(new))


def _is_int(spec: dict) -> bool:
    return "choices" not in spec and all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step"))


def optuna_name(key: str, original: dict, current: dict) -> str:
    """The Optuna param name of ``key``: the key itself, or ``key{a,b}`` when the current spec
    cannot share the original's Optuna distribution (then TPE models it from the trials
    sampled under that alias only)."""
    if _same_distribution(original, current):
        return key
    if "choices" in current:
        return f"{key}{{{','.join(str(c) for c in current['choices'])}}}"
    step = f" step {current['step']}" if "step" in current else ""
    return f"{key}{{{current['low']}..{current['high']}{step}{' log' if current.get('log') else ''}}}"


def _contains(old: dict, new: dict) -> bool:
    def inside(v):
        if "choices" in old:
            return v in old["choices"]
        return _number(v) and old["low"] <= v <= old["high"]
    if "choices" in new:
        return all(inside(c) for c in new["choices"])
    return "choices" not in old and old["low"] <= new["low"] and new["high"] <= old["high"]


def narrowing_problem(old: dict[str, Any], new: dict[str, Any], runs, where: str) -> str | None:
    """Why ``new`` does not narrow ``old`` for the given (method, backbone) runs, or None: each
    run must search the same params, each within its old range or choices."""
    for method, backbone in runs:
        a, b = run_params(old, method, backbone), run_params(new, method, backbone)
        if method in GUIDED_METHODS and old.get("warmup_keys") != new.get("warmup_keys"):
            return (f"{where}: warmup_keys {new.get('warmup_keys')!r} differs from the study's "
                    f"{old.get('warmup_keys')!r} (the shared warm-ups were drawn when the study began)")
        if set(a) != set(b):
            return (f"{where}: a resumed study keeps its params; {method}/{backbone} searched "
                    f"{sorted(a)}, the new space {sorted(b)} (fix a param with a one-value "
                    f"'choices' instead of dropping it)")
        for key in a:
            if not _contains(a[key], b[key]):
                return (f"{where}: params.{key} {b[key]} is not inside the study's {a[key]} "
                        f"(a resumed study can only narrow its space)")
    return None


class SearchSpace:
    """Define-by-run space of one (method, backbone) study; see the module docstring."""

    def __init__(self, method: str, backbone: str, max_epochs: int, ranges: dict[str, Any],
                 active: str | Path | None = None, warmup_configs: list[dict] | None = None):
        self.method, self.backbone, self.max_epochs = method, backbone, max_epochs
        self.params = run_params(ranges, method, backbone)     # the study's original space
        self.active = str(active) if active else None
        self._cache: tuple[int, dict] | None = None
        warmup = [k for k in self.params if is_warmup_param(k)]
        keys = ranges.get("warmup_keys")
        # shared warm-ups: a guided run draws its warm-up params as one of K fixed configs
        self.warmup_keys = keys if keys and method in GUIDED_METHODS and warmup else None
        self.warmup_params = warmup if self.warmup_keys else []
        # seeds for the keys (the best baseline trials' warm-up params), fixed at creation
        seeds = []
        for c in warmup_configs or []:      # only this run's warm-up params, each config once
            kept = {k: c[k] for k in self.warmup_params if k in c}
            if kept not in seeds:
                seeds.append(kept)
        self.warmup_configs = seeds[: self.warmup_keys or 0]

    def warmup_values(self, key: int) -> dict[str, Any]:
        """The warm-up params of shared warm-up ``key`` (0..K-1): the key-th seed config where
        one was given (the study's best cl4srec/duorec trials), its missing params and the
        other keys drawn from the study's original ranges by a generator seeded by (method,
        backbone, key), so every trial, driver and resume gets the same values."""
        seed = [zlib.crc32(f"{self.method}/{self.backbone}".encode()), int(key)]
        rng = np.random.default_rng(seed)
        drawn = {k: draw(self.params[k], rng) for k in self.warmup_params}
        configs = getattr(self, "warmup_configs", [])
        return {**drawn, **(configs[key] if key < len(configs) else {})}

    def points_to_evaluate(self, num_samples: int) -> list[dict[str, int]]:
        """The first trials, one per warm-up key, so each shared warm-up is trained once early."""
        if not self.warmup_keys:
            return []
        return [{WARMUP_KEY: k} for k in range(min(self.warmup_keys, num_samples))]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def current(self) -> dict[str, dict]:
        """The specs to sample now: the active file's (re-read when it changes), else the
        original ones."""
        active = getattr(self, "active", None)
        if not active or not Path(active).exists():
            return self.params
        stamp = Path(active).stat().st_mtime_ns
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != stamp:
            cache = (stamp, run_params(load_ranges(active), self.method, self.backbone))
            self._cache = cache
        return cache[1]

    def __call__(self, trial) -> dict[str, Any] | None:
        aliased = {}
        keyed = getattr(self, "warmup_keys", None)
        if keyed:        # on the bare Optuna trial: the config gets the values, not the key
            bare = getattr(trial, "ot_trial", trial)
            aliased.update(self.warmup_values(bare.suggest_categorical(WARMUP_KEY, list(range(keyed)))))
        for key, spec in self.current().items():
            if keyed and key in self.warmup_params:
                continue
            name = optuna_name(key, self.params.get(key, spec), spec)
            # an alias is suggested on the bare Optuna trial (Ray's captor would put the alias
            # into the trial's config) and returned under its config key
            target = trial if name == key else getattr(trial, "ot_trial", trial)
            value = self._suggest(target, name, key, spec)
            if name != key:
                aliased[key] = value
        return aliased or None

    def _suggest(self, trial, name: str, key: str, spec: dict) -> Any:
        if "choices" in spec:
            choices = list(spec["choices"])
            if key == "method.explainer" and self.backbone not in ATTENTION_BACKBONES:
                choices = [c for c in choices if c != "attention"]
            return trial.suggest_categorical(name, choices)
        if key == "method.updates":
            return trial.suggest_int(name, *updates_range(spec, self.max_epochs))
        if _is_int(spec):
            return trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1))
        return trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                   step=spec.get("step"), log=bool(spec.get("log", False)))

    @property
    def empty(self) -> bool:
        return not self.params

    def first_update_epochs(self) -> list[int]:
        """Every epoch at which some trial of this study can make its first importance update."""
        spec = self.current().get("method.updates")
        if spec is None:
            return []
        if "choices" in spec:
            ps = [int(p) for p in spec["choices"] if int(p) <= self.max_epochs - 1]
        else:
            low, high = updates_range(spec, self.max_epochs)
            ps = range(low, high + 1)
        return sorted({self.max_epochs // (p + 1) for p in ps})


def is_warmup_param(key: str) -> bool:
    """Whether config key ``key`` acts in the warm-up phase (before the first update)."""
    from .warmstart import WARMUP_IRRELEVANT
    section, _, name = key.partition(".")
    return name not in WARMUP_IRRELEVANT.get(section, ())


def draw(spec: dict[str, Any], rng: np.random.Generator) -> Any:
    """One value of ``spec`` drawn uniformly (log-uniformly with ``log``) by ``rng``."""
    if "choices" in spec:
        return spec["choices"][int(rng.integers(len(spec["choices"])))]
    low, high, step = spec["low"], spec["high"], spec.get("step")
    if _is_int(spec):
        step = step or 1
        return int(low + step * rng.integers((high - low) // step + 1))
    if step:
        return round(float(low + step * rng.integers(int(math.floor((high - low) / step + 1e-9)) + 1)), 10)
    if spec.get("log"):
        return round(float(math.exp(rng.uniform(math.log(low), math.log(high)))), 10)
    return round(float(rng.uniform(low, high)), 10)


def apply_params(base: Config | dict, params: dict[str, Any]) -> Config:
    """``base`` with each dotted key in ``params`` set (floats rounded to 10 digits)."""
    raw = base.to_dict() if isinstance(base, Config) else {k: dict(v) for k, v in base.items()}
    for key, value in params.items():
        section, _, name = key.partition(".")
        if isinstance(value, float):
            value = round(value, 10)
        raw[section][name] = value
    if "method.updates" in params:
        raw["method"]["update_epochs"] = None      # p decides the schedule
    return Config.from_dict(raw)
