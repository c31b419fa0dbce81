"""Retrieval of same-target training sequences: DuoRec's rtrl and the paper's ertrl+ (Sec. 4.3).

Only training rows are candidates (validation/test targets are never used). Rows that share
a target are grouped once at construction; sampling is batched on the batch's device.

ertrl+'s util() depends only on histories and the anchors' importance scores, so between
importance updates it is a fixed table over all (row, same-target row) pairs
(:meth:`SameTargetIndex.util_table`, built once per update; ``PAIR_TABLE_LIMIT`` bounds its
size, beyond which util is computed per batch).

Fallback (no partner): when a row is the only training row with its target, its partner is
the row itself; the two encodings then differ only by dropout, which is DuoRec's unsupervised
augmentation. ertrl+ falls back to uniform sampling over the candidates when every candidate
has util = 0 (no item shared with the anchor).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.split import Examples


PAIR_TABLE_LIMIT = 1 << 26     # pairs (float32: 256 MiB); larger indexes compute util per batch


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
        others = self.size - 1
        self.pair_start = torch.cumsum(others, 0) - others    # row r's first entry in a util table
        self.max_length = int(train.length.max()) if len(train.length) else 1
        self.max_others = int(size.max()) - 1 if len(size) else 0
        self.pairs = int((size - 1).sum())                    # host ints: no device reads later
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
        # On an accelerator the width is the longest training row: reading the batch's longest
        # would synchronise with the host.
        width = int(length.max()) if flat.device.type == "cpu" else self.max_length
        cols = torch.arange(width, device=rows.device)
        idx = (self.end[flat] - length).unsqueeze(1) + cols
        valid = cols < length.unsqueeze(1)
        seq = torch.where(valid, self.items[idx.clamp(max=len(self.items) - 1)], 0)
        return seq.view(*rows.shape, width), length.view(rows.shape)

    def pair_count(self) -> int:
        """Number of (row, other row with the same target) pairs: the size of a util table."""
        return self.pairs

    def util_table(self, importance: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
        """ertrl+'s util() of every (row, j-th other member of its group) pair, flat [pairs]
        float32; row r's entries start at ``self.pair_start[r]`` (order of j as in
        :meth:`_member`). ``importance``: [R, max_len] scores of the training rows.

        util depends only on the rows' histories and the anchors' importance scores, which
        change only at importance updates: computed once per update, every batch then looks its
        candidates up instead of recomputing intersections over the item vocabulary."""
        device = self.size.device
        others = self.size - 1
        rows = torch.repeat_interleave(torch.arange(len(others), device=device), others)   # [P]
        j = torch.arange(len(rows), device=device) - self.pair_start[rows]
        out = torch.empty(len(rows), dtype=torch.float32, device=device)
        importance = importance.to(device)
        for start in range(0, len(rows), chunk):
            r, jj = rows[start:start + chunk], j[start:start + chunk]
            a_items, a_len = self.histories(r)
            c_items, c_len = self.histories(self._member(r, jj))
            out[start:start + chunk] = _pair_util(a_items, a_len, importance[r, :a_items.shape[1]],
                                                  c_items, c_len)
        return out

    def guided_partner(self, rows: torch.Tensor, anchor_items: torch.Tensor, anchor_lengths: torch.Tensor,
                       anchor_scores: torch.Tensor, num_items: int, max_candidates: int = 64,
                       generator: torch.Generator | None = None,
                       util_table: torch.Tensor | None = None) -> torch.Tensor:
        """ertrl+: sample a same-target row s_k with probability proportional to

            util(s_k) = |s_u ∩ s_k| / |s_u ∪ s_k| * sum_{v in s_u ∩ s_k} score_u(v)

        where score_u are the anchor's importance scores. Groups larger than ``max_candidates``
        are represented by ``max_candidates`` members drawn uniformly with replacement (cost
        bound, documented); sampling within the candidates is exact (Gumbel-max).
        anchor_items/anchor_scores: [B, L] right-padded; returns partner rows [B].
        ``util_table`` (from :meth:`util_table` for the current scores) replaces the per-batch
        util computation by a lookup; the partners are the same for the same random draws.
        """
        B, device = rows.shape[0], rows.device
        others = self.size[rows] - 1                                                  # [B]
        most = int(others.max()) if device.type == "cpu" else self.max_others   # no sync on CUDA
        C = int(min(max_candidates, max(most, 1)))
        slot = torch.arange(C, device=device).expand(B, C)
        exhaustive = (others <= C).unsqueeze(1)
        drawn = (_rand((B, C), device, generator) * others.unsqueeze(1)).long()
        j = torch.where(exhaustive, slot, drawn).clamp(max=(others - 1).clamp(min=0).unsqueeze(1))
        valid = slot < others.unsqueeze(1)                                            # [B, C]
        cand = self._member(rows, j)                                                  # [B, C]
        if util_table is not None:
            util = torch.where(valid, util_table[(self.pair_start[rows].unsqueeze(1) + j)
                                                 .clamp(max=max(len(util_table) - 1, 0))], 0.0) \
                if len(util_table) else torch.zeros(B, C, device=device)
        else:
            util = self._batch_util(anchor_items, anchor_lengths, anchor_scores, cand, num_items)

        gumbel = -torch.log(-torch.log(_rand((B, C), device, generator).clamp(1e-20, 1 - 1e-7)))
        positive = (util > 0) & valid
        any_positive = positive.any(1, keepdim=True)
        key = torch.where(any_positive, torch.log(util.clamp(min=1e-30)), 0.0) + gumbel
        key = key.masked_fill(~valid | (any_positive & ~positive), float("-inf"))
        choice = cand.gather(1, key.argmax(1, keepdim=True)).squeeze(1)
        return torch.where(others > 0, choice, rows)

    def _batch_util(self, anchor_items: torch.Tensor, anchor_lengths: torch.Tensor,
                    anchor_scores: torch.Tensor, cand: torch.Tensor, num_items: int) -> torch.Tensor:
        """util of candidates cand [B, C] for anchors [B, L]: dense per-anchor lookups over the
        item vocabulary (membership and importance). -> [B, C] float32."""
        B, device = cand.shape[0], cand.device
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
        return inter / union.clamp(min=1) * inter_score                               # [B, C]


def _pair_util(a_items: torch.Tensor, a_len: torch.Tensor, a_scores: torch.Tensor,
               c_items: torch.Tensor, c_len: torch.Tensor) -> torch.Tensor:
    """util of P (anchor, candidate) pairs by sorted membership: anchors [P, La] with scores,
    candidates [P, Lc], right-padded with 0 -> [P] float32. Counts candidate positions whose
    item is in the anchor (as :meth:`SameTargetIndex._batch_util`); an anchor item's score is
    that of its position (histories have no repeated items in the bundled datasets; with
    repeats the earliest position's score is used)."""
    big = torch.iinfo(a_items.dtype).max
    keyed = torch.where(a_items > 0, a_items, big)
    sorted_items, order = torch.sort(keyed, dim=1, stable=True)                        # [P, La]
    sorted_scores = a_scores.float().gather(1, order)
    pos = torch.searchsorted(sorted_items, c_items.contiguous()).clamp(max=a_items.shape[1] - 1)
    found = (sorted_items.gather(1, pos) == c_items) & (c_items > 0)                 # [P, Lc]
    inter = found.sum(1)
    inter_score = torch.where(found, sorted_scores.gather(1, pos), 0.0).sum(1)
    union = a_len + c_len - inter
    return inter / union.clamp(min=1) * inter_score
