"""The search space: YAML ranges -> a define-by-run function for OptunaSearch.

Contracts:
- The ranges come from a space file (ranges.py: :func:`~ec4srec.search.ranges.load_ranges`).
- A (method, backbone) run searches ``common`` + ``backbones[backbone]`` + ``methods[method]``
  (:func:`run_params`), in that order, each param once; in a staged study's second stage
  (``stage="methods"``: every method but the plain one, on stage 1's best base model) it
  searches ``methods[method]`` + the ``retune`` keys its backbone reads.
- ``SearchSpace(method, backbone, max_epochs, ranges, active=None)`` is a picklable object that
  lives in this importable module (OptunaSearch pickles it into the experiment state, so
  ``Tuner.restore`` needs it importable, never defined in ``__main__``). Called with an Optuna
  trial it suggests exactly the run's params, named by their dotted config keys
  (``method.mu_e``), and returns None. Two rules apply on top of the ranges: ``method.updates``
  (p) is capped so that ``floor(max_epochs / (p + 1)) >= 1``; an explainer is offered only
  with the backbones it can explain (:func:`ec4srec.registry.explainer_fits`).
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

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, ConfigError, field_type
from ..registry import explainer_fits, is_guided
from ..warmup import is_warmup_param
from .ranges import is_number, load_ranges

WARMUP_KEY = "warmup_key"       # the Optuna param that picks one of a run's shared warm-ups


def run_params(ranges: dict[str, Any], method: str, backbone: str,
               stage: str | None = None) -> dict[str, dict]:
    """The specs a (method, backbone) run searches: common, then backbone, then method params;
    in a staged study's second stage (``stage="methods"``) the method's params, then the
    ``retune`` keys among the base model's (common + backbone), everything else fixed."""
    base = [*ranges.get("common", []), *ranges.get("backbones", {}).get(backbone, [])]
    own = ranges.get("methods", {}).get(method, [])
    if stage == "methods":
        names = [*own, *(k for k in ranges.get("retune", []) if k in base)]
    else:
        names = [*base, *own]
    return {k: ranges["params"][k] for k in dict.fromkeys(names)}


def updates_range(spec: dict[str, Any], max_epochs: int) -> tuple[int, int]:
    """The searched p range, capped so that every update schedule fits the epoch budget."""
    high = min(int(spec["high"]), max_epochs - 1)
    if high < int(spec["low"]):
        raise ConfigError(f"method.updates >= {spec['low']} needs train.epochs >= {spec['low'] + 1}")
    return int(spec["low"]), high


def _same_distribution(old: dict, new: dict, key: str | None = None) -> bool:
    """Whether Optuna accepts ``new`` as the same param's distribution after ``old`` (numeric
    ranges of the same kind, log flag and step; Optuna refuses a changed categorical)."""
    if old == new:
        return True
    if "choices" in old or "choices" in new:
        return False
    return (bool(old.get("log")) == bool(new.get("log")) and old.get("step") == new.get("step")
            and _is_int(old, key) == _is_int(new, key))


def _is_int(spec: dict, key: str | None = None) -> bool:
    """Whether a numeric range draws integers: by the config field's declared type when
    ``key`` is a config key (``train.weight_decay: {low: 0, high: 1}`` draws floats), else by
    its bounds' types."""
    if "choices" in spec:
        return False
    if key is not None:
        try:
            return field_type(key) is int
        except (KeyError, TypeError):
            pass
    return all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step"))


def optuna_name(key: str, original: dict, current: dict) -> str:
    """The Optuna param name of ``key``: the key itself, or ``key{a,b}`` when the current spec
    cannot share the original's Optuna distribution (then TPE models it from the trials
    sampled under that alias only)."""
    if _same_distribution(original, current, key):
        return key
    if "choices" in current:
        return f"{key}{{{','.join(str(c) for c in current['choices'])}}}"
    step = f" step {current['step']}" if "step" in current else ""
    return f"{key}{{{current['low']}..{current['high']}{step}{' log' if current.get('log') else ''}}}"


def _contains(old: dict, new: dict) -> bool:
    def inside(v):
        if "choices" in old:
            return v in old["choices"]
        return is_number(v) and old["low"] <= v <= old["high"]
    if "choices" in new:
        return all(inside(c) for c in new["choices"])
    return "choices" not in old and old["low"] <= new["low"] and new["high"] <= old["high"]


def narrowing_problem(old: dict[str, Any], new: dict[str, Any], runs, where: str) -> str | None:
    """Why ``new`` does not narrow ``old`` for the given runs, or None: each run must search
    the same params, each within its old range or choices. A run is (method, backbone) or
    (method, backbone, stage): a staged study's stage-2 run searches its own params and the
    retune keys only (``run_params``)."""
    for method, backbone, *stage in runs:
        stage = stage[0] if stage else None
        a, b = run_params(old, method, backbone, stage), run_params(new, method, backbone, stage)
        if is_guided(method) and old.get("warmup_keys") != new.get("warmup_keys"):
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
                 active: str | Path | None = None, warmup_configs: list[dict] | None = None,
                 stage: str | None = None):
        self.method, self.backbone, self.max_epochs = method, backbone, max_epochs
        self.stage = stage                                       # None | "base" | "methods"
        self.params = run_params(ranges, method, backbone, stage)   # the study's original space
        self.active = str(active) if active else None
        self._cache: tuple[int, dict] | None = None
        warmup = [k for k in self.params if is_warmup_param(k)]
        keys = ranges.get("warmup_keys")
        # shared warm-ups: a guided run draws its warm-up params as one of K fixed configs
        self.warmup_keys = keys if keys and is_guided(method) and warmup else None
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
        drawn = {k: draw(self.params[k], rng, k) for k in self.warmup_params}
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
            cache = (stamp, run_params(load_ranges(active), self.method, self.backbone,
                                       getattr(self, "stage", None)))
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
            if key == "method.explainer":
                choices = [c for c in choices if explainer_fits(c, self.backbone)]
            return trial.suggest_categorical(name, choices)
        if key == "method.updates":
            return trial.suggest_int(name, *updates_range(spec, self.max_epochs))
        if _is_int(spec, key):
            return trial.suggest_int(name, int(spec["low"]), int(spec["high"]),
                                     step=int(spec.get("step", 1)))
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


def draw(spec: dict[str, Any], rng: np.random.Generator, key: str | None = None) -> Any:
    """One value of ``spec`` (of config key ``key``) drawn uniformly (log-uniformly with
    ``log``) by ``rng``."""
    if "choices" in spec:
        return spec["choices"][int(rng.integers(len(spec["choices"])))]
    low, high, step = spec["low"], spec["high"], spec.get("step")
    if _is_int(spec, key):
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
