"""Durations as the command line gives them (``--time-budget 3h``) and as the search prints
them (``1:02:03``)."""
from __future__ import annotations

import math
import re

from ..config import ConfigError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds of ``3h``, ``90m``, ``1h30m``, ``45s``, ``2d`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms]?)", s)
        if not s or not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([dhms]?)", "", s).strip():
            raise ConfigError(f"--time-budget: {text!r} is not a duration (e.g. 3h, 90m, 1h30m, 5400)")
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if not seconds > 0 or math.isinf(seconds):
        raise ConfigError(f"--time-budget: {text!r} must be a positive duration")
    return seconds


def hms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
