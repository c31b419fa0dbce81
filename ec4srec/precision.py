"""Numeric precision of training and evaluation (``train.precision``: auto | fp32 | bf16).

Contracts:
- :func:`resolve_precision` turns the config value into ``"fp32"`` or ``"bf16"`` for one device;
  ``auto`` is :data:`CPU_AUTO_PRECISION` on a CPU and :data:`CUDA_AUTO_PRECISION` on a GPU that
  runs bf16 natively (else fp32). The trainer records the resolved value in metrics.json.
- :func:`autocast` is the context the forward pass and the loss run in: nothing for fp32,
  ``torch.autocast(device_type, dtype=torch.bfloat16)`` for bf16. Backward and the optimizer
  step run outside it; parameters, gradients and Adam state stay fp32 (autocast only casts the
  inputs of matmul-like ops). docs/precision.md says what runs in which dtype.
"""
from __future__ import annotations

import contextlib

import torch

from .config import PRECISIONS

CPU_AUTO_PRECISION = "fp32"       # what ``auto`` means on a CPU (to change after measuring bf16)
CUDA_AUTO_PRECISION = "bf16"      # what ``auto`` means on a GPU with native bf16 (Ampere and later)


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``name`` (one of :data:`PRECISIONS`) on ``device`` -> ``"fp32"`` or ``"bf16"``."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        native = (torch.cuda.is_available()
                  and torch.cuda.is_bf16_supported(including_emulation=False))
        return CUDA_AUTO_PRECISION if native else "fp32"
    return CPU_AUTO_PRECISION if device.type == "cpu" else "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved ``precision`` on ``device`` (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"resolved precision must be 'fp32' or 'bf16', got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
