"""Sequence augmentations as batched tensor ops (no per-sequence Python).

Layout (data/batches.py): ``items`` [B, L] int64, left-aligned, right-padded with 0;
``lengths`` [B] int64 >= 1; n = a row's length. Every op returns ``(new_items [B, L],
new_lengths [B])`` with the same layout: surviving items keep their time order, padding is 0
beyond the new length, and no view is empty (new_lengths >= 1). Outputs live on the inputs'
device. Randomness comes from ``generator`` (None = torch's global RNG); a generator on another
device than the inputs (e.g. a CPU generator for CUDA batches) draws there and the draws are
moved, so a seeded CPU generator gives the same views on every device.

Random ops follow CL4SRec (paper Sec. 3.2): crop / mask / reorder. Explanation-guided ops follow
Sec. 4.3: ``scores`` [B, L] float is the importance per position (padding values are ignored) and
``k`` [B] int64 = floor(mu_e * n) is the number of lowest-importance items, computed by the caller.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

RANDOM_OPS = ("crop", "mask", "reorder")
POSITIVE_OPS = ("ecrop", "emask", "erord")
NEGATIVE_OPS = ("ecrop", "emask")


# helpers -----------------------------------------------------------------------------------
def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """U[0, 1) draws on the generator's device, returned on ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)


def _randint(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Per-row uniform integer in [0, high] (high [B] int64 >= 0)."""
    u = _rand(tuple(high.shape), generator, high.device)
    return torch.minimum((u * (high + 1)).long(), high)


def _count(ratio: float, lengths: torch.Tensor) -> torch.Tensor:
    """floor(ratio * n) per row, in float64 like Python's ``math.floor(ratio * n)``."""
    return torch.floor(ratio * lengths.double()).long()


def _clamp(k: torch.Tensor, lo: torch.Tensor | int, hi: torch.Tensor | int) -> torch.Tensor:
    """Elementwise clamp to [lo, hi]; Python-int bounds never become device tensors (a blocking
    host-to-device copy on CUDA)."""
    k = k.clamp(min=lo) if isinstance(lo, int) else torch.maximum(k, lo)
    return k.clamp(max=hi) if isinstance(hi, int) else torch.minimum(k, hi)


def real_mask(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: True at positions < n."""
    pos = torch.arange(items.shape[1], device=items.device)
    return pos[None, :] < lengths[:, None]


def compact(items: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop positions where ``keep`` [B, L] is False and left-align the rest in order.

    ``keep`` must be False at padding. Kept item j goes to column cumsum(keep)[j] - 1; dropped
    ones are scattered into a spare column L that is cut off.
    """
    B, L = items.shape
    dest = torch.where(keep, keep.long().cumsum(1) - 1, L)                 # [B, L]
    out = items.new_zeros(B, L + 1).scatter_(1, dest, items)               # [B, L + 1]
    return out[:, :L], keep.sum(1)


def _permute_within(items: torch.Tensor, sel: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Uniformly permute the items at the selected positions ``sel`` [B, L] among themselves."""
    B, L = items.shape
    # selected positions first, in time order; then the others in time order
    by_time = torch.sort((~sel).to(torch.int32), dim=1, stable=True).indices          # [B, L]
    # selected positions first, in random order; then the others in time order
    keys = torch.where(sel, _rand((B, L), generator, items.device), 2.0)
    by_rand = torch.sort(keys, dim=1, stable=True).indices                           # [B, L]
    # slot j of by_time receives the item at by_rand[j]; unselected slots map to themselves
    return torch.empty_like(items).scatter_(1, by_time, items.gather(1, by_rand))


def _two_distinct(batch: int, num_ops: int, generator: torch.Generator | None,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row an ordered pair (a, b) of distinct op indices in [0, num_ops), uniform."""
    a = _randint(torch.full((batch,), num_ops - 1, device=device), generator)
    b = (a + 1 + _randint(torch.full((batch,), num_ops - 2, device=device), generator)) % num_ops
    return a, b


def _select(views: list[tuple[torch.Tensor, torch.Tensor]],
            choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row b of the result is row b of views[choice[b]]."""
    rows = torch.arange(choice.shape[0], device=choice.device)
    items = torch.stack([v[0] for v in views])[choice, rows]                 # [B, L]
    lengths = torch.stack([v[1] for v in views])[choice, rows]               # [B]
    return items, lengths


def _check_ops(ops: Sequence[str], allowed: tuple[str, ...], least: int) -> list[str]:
    ops = list(ops)
    if len(set(ops)) != len(ops) or not set(ops) <= set(allowed) or len(ops) < least:
        raise ValueError(f"ops must be >= {least} distinct names from {allowed}, got {ops}")
    return ops


# random ops (CL4SRec, Sec. 3.2) --------------------------------------------------------------
def random_crop(items: torch.Tensor, lengths: torch.Tensor, ratio: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep one contiguous window of w = clamp(floor(ratio * n), 1, n) items at a uniform start
    in [0, n - w], shifted to position 0."""
    w = _clamp(_count(ratio, lengths), 1, lengths)                           # [B]
    start = _randint(lengths - w, generator)                                 # [B]
    pos = torch.arange(items.shape[1], device=items.device)[None, :]         # [1, L]
    idx = (start[:, None] + pos).clamp(max=items.shape[1] - 1)
    return torch.where(pos < w[:, None], items.gather(1, idx), 0), w


def random_mask(items: torch.Tensor, lengths: torch.Tensor, ratio: float, mask_token: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace m = min(floor(ratio * n), n - 1) distinct uniform real positions by
    ``mask_token``. The cap n - 1 keeps at least one real item (n = 1: nothing is masked)."""
    m = _clamp(_count(ratio, lengths), 0, lengths - 1)                       # [B]
    real = real_mask(items, lengths)
    keys = torch.where(real, _rand(tuple(items.shape), generator, items.device), 2.0)
    order = keys.argsort(dim=1)                                              # real positions first
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(items.shape[1], device=items.device).expand_as(order))
    return torch.where(rank < m[:, None], mask_token, items), lengths.clone()


def random_reorder(items: torch.Tensor, lengths: torch.Tensor, ratio: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly shuffle the items inside one window of w = clamp(floor(ratio * n), 0, n)
    positions at a uniform start in [0, n - w]; everything else is unchanged."""
    w = _clamp(_count(ratio, lengths), 0, lengths)
    start = _randint(lengths - w, generator)
    pos = torch.arange(items.shape[1], device=items.device)[None, :]
    window = (pos >= start[:, None]) & (pos < (start + w)[:, None])
    return _permute_within(items, window, generator), lengths.clone()


def two_random_views(items: torch.Tensor, lengths: torch.Tensor, ops: Sequence[str],
                     crop_ratio: float, mask_ratio: float, reorder_ratio: float, mask_token: int,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CL4SRec views: per sequence two different ops drawn uniformly from ``ops`` (>= 2 distinct
    of 'crop', 'mask', 'reorder'). Each op runs once on the whole batch; rows are then selected.
    Returns (view1, len1, view2, len2)."""
    ops = _check_ops(ops, RANDOM_OPS, 2)
    run = {"crop": lambda: random_crop(items, lengths, crop_ratio, generator),
           "mask": lambda: random_mask(items, lengths, mask_ratio, mask_token, generator),
           "reorder": lambda: random_reorder(items, lengths, reorder_ratio, generator)}
    views = [run[op]() for op in ops]
    a, b = _two_distinct(items.shape[0], len(ops), generator, items.device)
    return (*_select(views, a), *_select(views, b))


# explanation-guided ops (Sec. 4.3) -----------------------------------------------------------
def rank_positions(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """order [B, L]: positions from least to most important, padding last.

    Ties: among equal scores the EARLIER position is less important (a recency prior), i.e.
    a stable ascending sort. NaN scores count as most important; padding scores are ignored.
    """
    keep = real_mask(scores, lengths) & ~scores.isnan()
    keys = torch.where(keep, scores, float("inf"))
    # stable: padding (also +inf) sits right of every real position, so it sorts last
    return torch.sort(keys, dim=1, stable=True).indices


def _rank(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """rank [B, L] of each position in :func:`rank_positions` (0 = least important)."""
    order = rank_positions(scores, lengths)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ar)


def lowest_k_mask(scores: torch.Tensor, lengths: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the min(k, n) least important real positions of each row."""
    return (_rank(scores, lengths) < k[:, None]) & real_mask(scores, lengths)


def highest_k_mask(scores: torch.Tensor, lengths: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the min(k, n) most important real positions of each row."""
    return (_rank(scores, lengths) >= (lengths - k)[:, None]) & real_mask(scores, lengths)


def ecrop_pos(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor, k: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """ecrop+: remove the k least important items, k clamped to [0, n - 1] (>= 1 item stays)."""
    drop = lowest_k_mask(scores, lengths, _clamp(k, 0, lengths - 1))
    return compact(items, real_mask(items, lengths) & ~drop)


def ecrop_neg(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor, k: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """ecrop-: keep only the k least important items in time order, k clamped to [1, n - 1]
    (n = 1 keeps its single item)."""
    k = _clamp(k, 1, torch.clamp(lengths - 1, min=1))
    return compact(items, lowest_k_mask(scores, lengths, k))


def emask_pos(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor, k: torch.Tensor,
              mask_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """emask+: mask the k least important items, k clamped to [0, n - 1]."""
    sel = lowest_k_mask(scores, lengths, _clamp(k, 0, lengths - 1))
    return torch.where(sel, mask_token, items), lengths.clone()


def emask_neg(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor, k: torch.Tensor,
              mask_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    """emask-: mask the k MOST important items (paper Sec. 4.3), k clamped to [1, n]."""
    sel = highest_k_mask(scores, lengths, _clamp(k, 1, lengths))
    return torch.where(sel, mask_token, items), lengths.clone()


def erord_pos(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor, k: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """erord+: uniformly permute the k least important items among their own positions
    i1 < ... < ik; everything else fixed. k clamped to [0, n]."""
    sel = lowest_k_mask(scores, lengths, _clamp(k, 0, lengths))
    return _permute_within(items, sel, generator), lengths.clone()


def two_guided_views(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor,
                     k: torch.Tensor, ops: Sequence[str] = POSITIVE_OPS, *, mask_token: int,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two positive views: per sequence two different ops from ``ops`` (>= 2 distinct of
    'ecrop', 'emask', 'erord', meaning their + variants). Returns (view1, len1, view2, len2)."""
    ops = _check_ops(ops, POSITIVE_OPS, 2)
    run = {"ecrop": lambda: ecrop_pos(items, lengths, scores, k),
           "emask": lambda: emask_pos(items, lengths, scores, k, mask_token),
           "erord": lambda: erord_pos(items, lengths, scores, k, generator)}
    views = [run[op]() for op in ops]
    a, b = _two_distinct(items.shape[0], len(ops), generator, items.device)
    return (*_select(views, a), *_select(views, b))


def one_negative_view(items: torch.Tensor, lengths: torch.Tensor, scores: torch.Tensor,
                      k: torch.Tensor, ops: Sequence[str] = NEGATIVE_OPS, *, mask_token: int,
                      generator: torch.Generator | None = None, k_high: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative view: per sequence one op drawn uniformly from ``ops`` (>= 1 distinct of
    'ecrop', 'emask', meaning their - variants). emask- masks the ``k_high`` (default: k)
    most important items."""
    ops = _check_ops(ops, NEGATIVE_OPS, 1)
    k_high = k if k_high is None else k_high
    run = {"ecrop": lambda: ecrop_neg(items, lengths, scores, k),
           "emask": lambda: emask_neg(items, lengths, scores, k_high, mask_token)}
    views = [run[op]() for op in ops]
    choice = _randint(torch.full((items.shape[0],), len(ops) - 1, device=items.device), generator)
    return _select(views, choice)
