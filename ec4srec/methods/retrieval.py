"""Retrieval of same-target training sequences: DuoRec's rtrl and the paper's ertrl+ (Sec. 4.3).

Only training rows are candidates (validation/test targets are never used). Rows that share
a target are grouped once at construction; sampling is batched on the batch's device.

Fallback (no partner): when a row is the only training row with its target, its partner is
the row itself; the two encodings then differ only by dropout, which is DuoRec's unsupervised
augmentation. ertrl+ falls back to uniform sampling over the candidates when every candidate
has util = 0 (no item shared with the anchor).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.split import Examples


def _rand(shape, device, generator) -> torch.Tensor:
    """Uniform [0, 1) draws; ``generator`` (if any) must live on ``device``."""
    return torch.rand(shape, device=device, generator=generator)


class SameTargetIndex:
    """Training rows grouped by target item."""

    def __init__(self, items: np.ndarray, train: Examples, device: torch.device | str = "cpu"):
        targets = items[train.end]                                         # [R]
        order = np.argsort(targets, kind="stable")
        sorted_targets = targets[order]
        start = np.searchsorted(sorted_targets, targets, side="left")
        size = np.searchsorted(sorted_targets, targets, side="right") - start
        rank = np.empty(len(targets), dtype=np.int64)
        rank[order] = np.arange(len(targets))
        to = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64, device=device)  # noqa: E731
        self.sorted_rows, self.start, self.size = to(order), to(start), to(size)
        self.offset = to(rank - start)                    # position of each row inside its group
        self.items = to(items)
        self.end, self.length = to(train.end), to(train.length)

    def _member(self, rows: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The j-th OTHER member (0 <= j < size - 1) of each row's group; j: [B] or [B, C]."""
        rows = rows.unsqueeze(1) if j.dim() == 2 else rows
        j = j + (j >= self.offset[rows]).long()                  # skip the row itself
        j = torch.minimum(j, self.size[rows] - 1)                # a singleton stays in its group
        return self.sorted_rows[self.start[rows] + j]

    def random_partner(self, rows: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """rtrl: a uniformly random other row with the same target, else the row itself."""
        others = self.size[rows] - 1                                       # [B]
        j = (_rand(rows.shape, rows.device, generator) * others).long().clamp(max=(others - 1).clamp(min=0))
        partner = self._member(rows, j)
        return torch.where(others > 0, partner, rows)

    def histories(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded histories [n, max length] and lengths [n] of training rows (any shape)."""
        flat = rows.reshape(-1)
        length = self.length[flat]
        width = int(length.max())
        cols = torch.arange(width, device=rows.device)
        idx = (self.end[flat] - length).unsqueeze(1) + cols
        valid = cols < length.unsqueeze(1)
        seq = torch.where(valid, self.items[idx.clamp(max=len(self.items) - 1)], 0)
        return seq.view(*rows.shape, width), length.view(rows.shape)

    def guided_partner(self, rows: torch.Tensor, anchor_items: torch.Tensor, anchor_lengths: torch.Tensor,
                       anchor_scores: torch.Tensor, num_items: int, max_candidates: int = 64,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """ertrl+: sample a same-target row s_k with probability proportional to

            util(s_k) = |s_u ∩ s_k| / |s_u ∪ s_k| * sum_{v in s_u ∩ s_k} score_u(v)

        where score_u are the anchor's importance scores. Groups larger than ``max_candidates``
        are represented by ``max_candidates`` members drawn uniformly with replacement (cost
        bound, documented); sampling within the candidates is exact (Gumbel-max).
        anchor_items/anchor_scores: [B, L] right-padded; returns partner rows [B].
        """
        B, device = rows.shape[0], rows.device
        others = self.size[rows] - 1                                                  # [B]
        C = int(min(max_candidates, max(int(others.max()), 1)))
        slot = torch.arange(C, device=device).expand(B, C)
        exhaustive = (others <= C).unsqueeze(1)
        drawn = (_rand((B, C), device, generator) * others.unsqueeze(1)).long()
        j = torch.where(exhaustive, slot, drawn).clamp(max=(others - 1).clamp(min=0).unsqueeze(1))
        valid = slot < others.unsqueeze(1)                                            # [B, C]
        cand = self._member(rows, j)                                                  # [B, C]

        # Dense per-anchor lookups over the item vocabulary: membership and importance.
        real = anchor_items > 0
        has = torch.zeros(B, num_items + 2, dtype=torch.bool, device=device)
        has.scatter_(1, anchor_items, real)
        has[:, 0] = False
        weight = torch.zeros(B, num_items + 2, device=device)
        weight.scatter_(1, anchor_items, torch.where(real, anchor_scores.float(), 0.0))
        weight[:, 0] = 0.0

        cand_items, cand_len = self.histories(cand)                                   # [B, C, Lc]
        anchor_idx = torch.arange(B, device=device).view(B, 1, 1)
        inter = has[anchor_idx, cand_items].sum(-1)                                   # [B, C]
        inter_score = weight[anchor_idx, cand_items].sum(-1)
        union = anchor_lengths.unsqueeze(1) + cand_len - inter
        util = inter / union.clamp(min=1) * inter_score                               # [B, C]

        gumbel = -torch.log(-torch.log(_rand((B, C), device, generator).clamp(1e-20, 1 - 1e-7)))
        positive = (util > 0) & valid
        any_positive = positive.any(1, keepdim=True)
        key = torch.where(any_positive, torch.log(util.clamp(min=1e-30)), 0.0) + gumbel
        key = key.masked_fill(~valid | (any_positive & ~positive), float("-inf"))
        choice = cand.gather(1, key.argmax(1, keepdim=True)).squeeze(1)
        return torch.where(others > 0, choice, rows)
