"""Stopping a training run between two steps: Ctrl-C and the mid-epoch checkpoint.

Contracts:
- :class:`EpochCursor` is where an epoch stands: its number, the batches it draws (row ids, in
  order), how many of them it has trained, the loss sums so far, the seconds spent on it, and
  how its dropout banks were drawn (models.base.bank_origins). Saved with the RNG states of the
  same moment (a step boundary), it lets a resumed run train the rest of the epoch exactly as
  the uninterrupted run would have (bit for bit on CPU; tests/test_interrupt.py).
- :func:`deferred_sigint` turns the first SIGINT into a request (``flag.requested``) that the
  training loop reads after its current step: it then writes a mid-epoch checkpoint and raises
  KeyboardInterrupt, so no step is half-applied. A second SIGINT interrupts at once (the
  previous handler is back). Outside the main thread (a Ray worker) it does nothing.
- :class:`SaveClock` says when a periodic mid-epoch checkpoint is due
  (``train.checkpoint_minutes``), so even a killed run loses at most that much work.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class EpochCursor:
    epoch: int
    order: list[np.ndarray]               # the epoch's batches: training-row ids, in order
    banks: list                           # models.base.bank_origins() at the epoch's start
    step: int = 0                         # batches trained
    totals: dict[str, float] = field(default_factory=dict)   # loss part -> sum over them
    seconds: float = 0.0                  # spent on this epoch before the checkpoint
    cpu_seconds: float = 0.0              # the process's CPU seconds of the same span

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "order": [torch.from_numpy(np.asarray(b)) for b in self.order],
                "banks": self.banks, "step": self.step, "totals": dict(self.totals),
                "seconds": self.seconds, "cpu_seconds": self.cpu_seconds}

    def covers(self, rows: int) -> bool:
        """Whether the epoch's batches are a permutation of ``rows`` training rows (a run
        resumed with another ``train.objective`` or data has other rows)."""
        ids = np.concatenate([np.asarray(b) for b in self.order]) if self.order else np.zeros(0)
        return len(ids) == rows and bool(np.array_equal(np.sort(ids), np.arange(rows)))

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "EpochCursor":
        return cls(epoch=int(state["epoch"]), order=[b.numpy() for b in state["order"]],
                   banks=list(state["banks"]), step=int(state["step"]),
                   totals={k: float(v) for k, v in state["totals"].items()},
                   seconds=float(state["seconds"]),
                   cpu_seconds=float(state.get("cpu_seconds", 0.0)))   # older: none


def clocks() -> tuple[float, float]:
    """(wall, CPU) readings: ``time.perf_counter()`` and ``time.process_time()`` (this
    process's CPU seconds, all threads: other programs' load does not stretch it)."""
    return time.perf_counter(), time.process_time()


def since(started: tuple[float, float], before: tuple[float, float] = (0.0, 0.0)
          ) -> tuple[float, float]:
    """(wall, CPU) seconds from ``started`` (:func:`clocks`) to now, plus ``before``."""
    now = clocks()
    return now[0] - started[0] + before[0], now[1] - started[1] + before[1]


class InterruptFlag:
    """Set by the first SIGINT under :func:`deferred_sigint`."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def deferred_sigint(enabled: bool = True):
    """Yield an :class:`InterruptFlag` the first SIGINT sets (see the module contract)."""
    flag = InterruptFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def request(signum, frame):
        flag.requested = True
        signal.signal(signal.SIGINT, previous)        # a second Ctrl-C interrupts at once

    signal.signal(signal.SIGINT, request)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class SaveClock:
    """Due every ``minutes`` of wall clock (never when ``minutes`` is 0)."""

    def __init__(self, minutes: float, clock=time.monotonic):
        self.every, self.clock = minutes * 60.0, clock
        self.last = clock()

    def due(self) -> bool:
        if self.every <= 0 or self.clock() - self.last < self.every:
            return False
        self.last = self.clock()
        return True

    def restart(self) -> None:
        """A checkpoint was just written: the next is due ``minutes`` from now."""
        self.last = self.clock()
