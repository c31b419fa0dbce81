"""Encoding many right-padded rows without work on their padding.

Rows are independent through every backbone, so they can be pooled, sorted by length and
encoded in chunks trimmed to each chunk's longest row: the result equals one padded pass (up to
the dropout draws, which follow the chunks in training mode).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def length_chunks(sorted_lengths: np.ndarray, token_budget: int, max_rows: int) -> list[int]:
    """Chunk sizes for ascending lengths: each chunk holds at most ``max_rows`` rows and
    rows * (its longest length) <= ``token_budget`` (a lone row may exceed it). A chunk that is
    over budget shrinks to ``token_budget // (its longest length)`` rows until it fits, so it
    can be smaller than the largest one that would fit (lengths 1, 1, 2, 3, 5, 5 with budget 6
    give chunks of 2, 1, 1, 1, 1 rows, not 2, 2, 1, 1)."""
    sizes, start, n = [], 0, len(sorted_lengths)
    while start < n:
        stop = min(start + max_rows, n)
        while stop - start > 1 and (stop - start) * sorted_lengths[stop - 1] > token_budget:
            stop = start + max(1, token_budget // int(sorted_lengths[stop - 1]))
        sizes.append(stop - start)
        start = stop
    return sizes


def encode_together(model, views: list[tuple[torch.Tensor, torch.Tensor]],
                    token_budget: int = 4096, max_rows: int = 512) -> list[torch.Tensor]:
    """Encode several right-padded [B_i, L_i] batches; returns their [B_i, d] representations.

    All rows are pooled, sorted by length and encoded in chunks trimmed to their own longest
    row, each holding about ``token_budget`` positions: views differ a lot in length (a
    retrieved sequence can be 50 items long while bucketed anchors hold 5), and padding every
    view to the longest would multiply the work. Rows are independent, so the result equals
    encoding each view separately.
    """
    width = max(items.shape[1] for items, _ in views)
    items = torch.cat([F.pad(v, (0, width - v.shape[1])) for v, _ in views])     # [sum B_i, W]
    lengths = torch.cat([l for _, l in views])
    if items.device.type != "cpu":
        # On an accelerator one padded pass beats trimmed chunks, whose sizes would need the
        # lengths on the host (a device synchronisation every step).
        return list(model(items, lengths).split([v.shape[0] for v, _ in views]))
    order = torch.argsort(lengths, stable=True)
    sizes = length_chunks(lengths[order].cpu().numpy(), token_budget, max_rows)
    h_sorted = []
    for idx in order.split(sizes):
        chunk_len = lengths[idx]
        h_sorted.append(model(items[idx, :int(chunk_len.max())], chunk_len))
    h = torch.empty(len(lengths), h_sorted[0].shape[1], dtype=h_sorted[0].dtype, device=items.device)
    h = h.index_put((order,), torch.cat(h_sorted))
    return list(h.split([v.shape[0] for v, _ in views]))
