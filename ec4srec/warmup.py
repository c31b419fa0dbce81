"""The warm-up rules that the trainer's ``--warm-start``, the CLI and the search's shared
warm-up cache all follow (the bottom layer: no torch, no Ray).

Contracts:
- ``WARMUP_IRRELEVANT``: the config keys that act only from the first importance update on
  (mu_e, the explainer and its settings, lambda_*_pos/neg, p and the update schedule) and the
  stopping/logging knobs. Two runs whose configs differ only there train bit-identical epochs
  1..f-1 (f = first update epoch), provided the method keeps no RNG of its own.
- :func:`warmup_key` hashes the config minus those keys (the shared cache's folder name).
- :func:`warmup_mismatch` lists why one guided run's warm-up cannot stand in for another's; the
  guided variants (registry.GUIDED) share one warm-up (Sec. 4.1).
"""
from __future__ import annotations

import hashlib
import json
import os

from .config import Config
from .paths import expand_path
from .registry import is_guided
from .schedule import update_epochs

WARMUP_IRRELEVANT = {
    "method": ("mu_e", "explainer", "lambda_cl_pos", "lambda_cl_neg", "lambda_sl_pos", "updates",
               "update_epochs", "explain_target", "ig_steps", "explain_batch_size",
               "neg_min_length", "occlusion_sign"),
    "train": ("patience", "min_epochs", "checkpoint_every", "checkpoint_minutes", "progress",
              "tensorboard"),
}


def _warmup_view(config: Config, across_variants: bool = False) -> dict:
    raw = config.to_dict()
    # where the data lives as one absolute path: a config.yaml records it portably
    # ($EC4SREC_DATA_DIR/..., ~/...; paths.recorded_path), a checkpoint's config as given
    for name in ("data_dir", "dataset"):
        value = raw["data"][name]
        if isinstance(value, str) and ("$" in value or "~" in value or os.path.isabs(value)):
            try:
                raw["data"][name] = os.path.abspath(expand_path(value))
            except ValueError:                 # an unset variable: compared as written
                pass
    for section, names in WARMUP_IRRELEVANT.items():
        for name in names:
            raw[section].pop(name, None)
    if across_variants and is_guided(config.method.name):
        raw["method"].pop("name")          # the three variants share one warm-up (Sec. 4.1)
    return raw


def warmup_mismatch(donor: Config, config: Config) -> list[str]:
    """The dotted keys that make ``donor``'s warm-up differ from ``config``'s (empty: the
    warm-ups are bit-identical and ``config``'s run may start from ``donor``'s last warm-up
    epoch). Both must be guided with the same first importance update; the variants
    (EC4SRec(SSL), (SL), EC4SRec, any guided lambdas) share their warm-up."""
    if not is_guided(donor.method.name) or not is_guided(config.method.name):
        return ["method.name (both runs must be explanation-guided)"]
    a, b = _warmup_view(donor, True), _warmup_view(config, True)
    keys = sorted(f"{sec}.{k}" for sec in a for k in set(a[sec]) | set(b.get(sec, {}))
                  if a[sec].get(k) != b.get(sec, {}).get(k))
    first = [update_epochs(c.train.epochs, c.method.updates, c.method.update_epochs)[0]
             for c in (donor, config)]
    if first[0] != first[1]:
        keys.append(f"the first importance update (epoch {first[0]} vs {first[1]})")
    return keys


def warmup_key(config: Config) -> str:
    """The hash of ``config``'s warm-up: equal keys train bit-identical warm-up epochs."""
    blob = json.dumps(_warmup_view(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def is_warmup_param(key: str) -> bool:
    """Whether config key ``key`` (``section.name``) acts in the warm-up phase (before the
    first importance update)."""
    section, _, name = key.partition(".")
    return name not in WARMUP_IRRELEVANT.get(section, ())
