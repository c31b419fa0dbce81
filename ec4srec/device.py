"""Where a run runs: its torch device (:func:`resolve_device`) and the hardware its metrics
record (:func:`hardware`)."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

from .config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"train.device={name}: this torch sees {count} CUDA device(s)"
                              + ("" if torch.backends.cuda.is_built() else " (a CPU-only build)"))
    return torch.device(name)


def hardware() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
