"""Batches for the hot path: length-bucketed, trimmed to their longest history, built with
vectorised numpy gathers (no per-sample Python).

Layout: histories are left-aligned and right-padded with 0, so position 0 is the oldest item
and ``lengths - 1`` indexes the last real item (the upstream SASRec layout). Causal encoders
therefore never let a real position see padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .split import Examples


@dataclass
class Batch:
    items: torch.Tensor    # [B, L] int64, 0 = padding, L = longest history in the batch
    lengths: torch.Tensor  # [B] int64, >= 1
    targets: torch.Tensor  # [B] int64, item ids >= 1
    rows: torch.Tensor     # [B] int64: indices into the Examples the batch was cut from
    # [B, L] int64: the next item of every position (items shifted by one, ending in targets),
    # 0 on padding; only for the all_positions objective
    next_items: torch.Tensor | None = None

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in
                       (self.items, self.lengths, self.targets, self.rows, self.next_items)))

    def __len__(self) -> int:
        return self.items.shape[0]


def gather_histories(items: np.ndarray, end: np.ndarray, length: np.ndarray) -> np.ndarray:
    """[B] ends/lengths -> [B, max(length)] right-padded histories."""
    width = int(length.max())
    cols = np.arange(width, dtype=np.int64)
    idx = (end - length)[:, None] + cols[None, :]          # [B, L]
    valid = cols[None, :] < length[:, None]
    return np.where(valid, items[np.where(valid, idx, 0)], 0)


def make_batch(items: np.ndarray, examples: Examples, rows: np.ndarray,
               next_items: bool = False) -> Batch:
    """Rows ``rows`` of ``examples`` as a trimmed batch; ``next_items`` also gathers every
    position's next item (the all_positions objective's targets)."""
    end, length = examples.end[rows], examples.length[rows]
    return Batch(items=torch.from_numpy(gather_histories(items, end, length)),
                 lengths=torch.from_numpy(length),
                 targets=torch.from_numpy(items[end]),
                 rows=torch.from_numpy(rows.astype(np.int64)),
                 next_items=(torch.from_numpy(gather_histories(items, end + 1, length))
                             if next_items else None))


def train_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                bucket_batches: int = 64) -> list[np.ndarray]:
    """Row indices per batch for one epoch.

    Rows are shuffled, cut into windows of ``bucket_batches * batch_size`` rows, sorted by length
    inside each window (so batches hold similar lengths and need little padding), cut into
    batches, and the batch order is shuffled. Every row appears exactly once.
    """
    perm = rng.permutation(len(lengths))
    window = batch_size * max(bucket_batches, 1)
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), window):
        chunk = perm[start:start + window]
        if bucket_batches > 1:
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_order(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic batches sorted by length (metrics are means, so order is free)."""
    perm = np.argsort(lengths, kind="stable")
    return [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
