"""The importance-update schedule of Section 4.1.

With an epoch budget N and p updates, importance is recomputed at epochs l * floor(N / (p + 1))
for l = 1..p (1-based epochs). An update "at epoch e" runs at the start of epoch e, on the model
trained for e - 1 epochs, so epochs 1..floor(N/(p+1)) - 1 form the warm-up phase exactly as
the paper says. Example: N = 100, p = 3 -> epochs 25, 50, 75.
"""
from __future__ import annotations


def update_epochs(epochs: int, updates: int, explicit: list[int] | None = None) -> list[int]:
    """Sorted, distinct update epochs within 1..epochs. ``explicit`` overrides the formula
    (upstream used [15, 30]). Raises ValueError when the budget is too small for p updates."""
    if explicit:
        chosen = sorted({e for e in explicit if 1 <= e <= epochs})
        if not chosen:
            raise ValueError(f"method.update_epochs {explicit} has no epoch within 1..{epochs}")
        return chosen
    step = epochs // (updates + 1)
    if step < 1:
        raise ValueError(f"method.updates={updates} needs train.epochs >= {updates + 1}, got {epochs}")
    return [l * step for l in range(1, updates + 1)]
