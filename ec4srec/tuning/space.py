"""The search space: YAML ranges -> a define-by-run function for OptunaSearch.

Contracts:
- :func:`load_ranges` reads ``default_space.yaml`` (package data) or the file ``--search-space``
  names; it checks every method lists only params that exist.
- ``SearchSpace(method, backbone, max_epochs, ranges)`` is a picklable object that lives in this
  importable module (OptunaSearch pickles it into the experiment state, so ``Tuner.restore``
  needs it importable, never defined in ``__main__``). Called with an Optuna trial it suggests
  exactly the params ``ranges["methods"][method]`` lists, named by their dotted config keys
  (``method.mu_e``), and returns None. Two rules apply on top of the ranges: ``method.updates``
  (p) is capped so that ``floor(max_epochs / (p + 1)) >= 1``; explainer ``attention`` is offered
  only with the ``sasrec`` backbone.
- :func:`apply_params` turns a base Config and suggested params into a validated Config.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import METHODS, Config, ConfigError

ATTENTION_BACKBONES = ("sasrec",)


def load_ranges(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check a search-space YAML (the packaged default when ``path`` is None)."""
    if path is None:
        text = resources.files("ec4srec.tuning").joinpath("default_space.yaml").read_text()
        where = "default_space.yaml"
    else:
        text, where = Path(path).read_text(), str(path)
    raw = yaml.safe_load(text) or {}
    params, methods = raw.get("params") or {}, raw.get("methods") or {}
    for key, spec in params.items():
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)):
            raise ConfigError(f"{where}: params.{key} needs 'choices' or 'low' and 'high'")
        section, _, name = key.partition(".")
        if not hasattr(getattr(Config(), section, None), name):
            raise ConfigError(f"{where}: params.{key} is not a config key")
    for method, names in methods.items():
        if method not in METHODS:
            raise ConfigError(f"{where}: methods.{method} is not one of {METHODS}")
        unknown = set(names or []) - set(params)
        if unknown:
            raise ConfigError(f"{where}: methods.{method} lists undefined params {sorted(unknown)}")
    return {"params": params, "methods": {m: list(n or []) for m, n in methods.items()}}


def updates_range(spec: dict[str, Any], max_epochs: int) -> tuple[int, int]:
    """The searched p range, capped so that every update schedule fits the epoch budget."""
    high = min(int(spec["high"]), max_epochs - 1)
    if high < int(spec["low"]):
        raise ConfigError(f"method.updates >= {spec['low']} needs train.epochs >= {spec['low'] + 1}")
    return int(spec["low"]), high


class SearchSpace:
    """Define-by-run space of one (method, backbone) study; see the module docstring."""

    def __init__(self, method: str, backbone: str, max_epochs: int, ranges: dict[str, Any]):
        self.method, self.backbone, self.max_epochs = method, backbone, max_epochs
        self.params = {k: ranges["params"][k] for k in ranges["methods"].get(method, [])}

    def __call__(self, trial) -> None:
        for key, spec in self.params.items():
            if "choices" in spec:
                choices = list(spec["choices"])
                if key == "method.explainer" and self.backbone not in ATTENTION_BACKBONES:
                    choices = [c for c in choices if c != "attention"]
                trial.suggest_categorical(key, choices)
            elif key == "method.updates":
                trial.suggest_int(key, *updates_range(spec, self.max_epochs))
            elif all(isinstance(spec.get(k, 1), int) for k in ("low", "high", "step")):
                trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
            else:
                trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                    step=spec.get("step"), log=bool(spec.get("log", False)))
        return None

    @property
    def empty(self) -> bool:
        return not self.params

    def first_update_epochs(self) -> list[int]:
        """Every epoch at which some trial of this study can make its first importance update."""
        if "method.updates" not in self.params:
            return []
        low, high = updates_range(self.params["method.updates"], self.max_epochs)
        return sorted({self.max_epochs // (p + 1) for p in range(low, high + 1)})


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
