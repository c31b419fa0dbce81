"""Count the host-device synchronisations of one training step on CUDA.

``torch.cuda.set_sync_debug_mode("warn")`` makes the synchronising calls that go through c10's
``memcpy_and_sync``/``stream_synchronize`` (a blocking copy between host and device: ``.item()``,
``int()``/``float()``/``.cpu()`` of a device tensor, ``torch.tensor(..., device="cuda")``,
``.to("cuda")`` of a CPU tensor, ``nonzero``, ...) issue the warning "called a synchronizing
CUDA operation", attributed to the Python line that made the call (for the backward pass: the
``loss.backward()`` line); :func:`count_syncs` captures and counts them per line. Not reported
(torch's own limits): ``torch.cuda.synchronize()``, event waits, and ``non_blocking=True``
copies from pageable host memory (which the driver may still stage synchronously). Importable
without CUDA: there :func:`count_syncs` returns None. ``benchmarks/gpu_check.py`` reports them.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SYNC_MESSAGE = "synchronizing CUDA operation"       # torch's warn_or_error_on_sync() text


@dataclass
class SyncReport:
    count: int = 0
    sites: Counter = field(default_factory=Counter)    # "path:line" -> syncs made there

    def describe(self) -> str:
        """``path:line (n)`` per call site, most frequent first; "-" when there were none."""
        return "; ".join(f"{site} ({n})" for site, n in self.sites.most_common()) or "-"


def _site(filename: str, lineno: int) -> str:
    path = Path(filename)
    try:
        return f"{path.resolve().relative_to(ROOT)}:{lineno}"
    except ValueError:
        return f"{path.name}:{lineno}"


def count_syncs(fn: Callable[[], Any]) -> SyncReport | None:
    """Run ``fn()`` once with sync warnings on; its syncs per call site. None without CUDA.

    Queued work is drained before and after (outside the count), and the sync debug mode is
    reset to "default" whatever ``fn`` raises."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    report = SyncReport()
    for w in caught:
        if SYNC_MESSAGE in str(w.message):
            report.count += 1
            report.sites[_site(w.filename, w.lineno)] += 1
    return report


def step_syncs(trainer, rows: np.ndarray, epoch: int) -> SyncReport | None:
    """Syncs of one :meth:`ec4srec.trainer.Trainer.train_step` on ``rows`` (run a few steps
    first: the first step of a run also pays one-time set-up)."""
    return count_syncs(lambda: trainer.train_step(rows, epoch))
