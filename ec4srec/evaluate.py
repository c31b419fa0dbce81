"""Full-ranking evaluation under two protocols, from one pass of scores, batched.

- **all items** (the paper's and RecBole's): every item is a candidate. Metric names as they
  always were: ``hr@K``, ``ndcg@K``.
- **unseen items** (RecTools' ``filter_viewed``): every item the user interacted with before
  the target (the whole known history, beyond ``max_len`` too: ``Examples.start``) is removed
  from the candidates. A target the user had already seen therefore cannot be hit (its rank is
  the worst, N). Names end in ``_unseen``: ``hr@K_unseen``, ``ndcg@K_unseen``.

Rank definition (pessimistic, deterministic): rank = 1 + #{items scored strictly higher than
the target} + #{other items scored exactly equal}. A model that scores everything equally
therefore gets the worst rank, never a lucky one. Padding and the [mask] token are never
candidates. HR@K = 1[rank <= K]; NDCG@K = 1[rank <= K] / log2(rank + 1) (one target).
``last_item_top1`` is the share of examples whose top-ranked item (all items) is the last item
of their history (a model that copies its input; ties count against it). ``mask_history``
(legacy, off by default) removes the last ``max_len`` history items from the all-items ranking.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.batches import eval_order, gather_histories, make_batch
from .data.split import Examples, SplitData
from .models import SequenceEncoder
from .precision import autocast

KS = (5, 10, 20)
UNSEEN = "_unseen"                 # suffix of the unseen-items protocol's metric names


def select_key(protocol: str, metric: str = "ndcg@10") -> str:
    """The metric name of ``metric`` under ``protocol`` ("all" | "unseen")."""
    return metric + (UNSEEN if protocol == "unseen" else "")


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores [B, N] over items 1..N (column j = item j+1), targets [B] item ids -> ranks [B].

    1 + #{strictly higher} + #{equal, other than the target} is #{scores >= target score}
    (the target counts itself once): one comparison pass instead of two. A NaN target score
    gives 0 either way.
    """
    target_scores = scores.gather(1, (targets - 1).view(-1, 1))               # [B, 1]
    return (scores >= target_scores).sum(1)


def metrics_from_ranks(ranks: torch.Tensor, ks=KS) -> dict[str, float]:
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1), 0.0).mean().item()
    return out


SCORE_CHUNK = 64       # rows whose [chunk, N] scores are ranked while still in cache


def mask_items_(scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Set scores [B, N] of the item ids in ``items`` [B, H] (0 = padding, ignored) to -inf,
    in place; returns ``scores``."""
    hidden = torch.zeros(scores.shape[0], scores.shape[1] + 1, dtype=torch.bool, device=scores.device)
    hidden.scatter_(1, items, True)                                           # column 0 = padding
    return scores.masked_fill_(hidden[:, 1:], float("-inf"))


def unseen_ranks(scores: torch.Tensor, targets: torch.Tensor, ranks: torch.Tensor,
                 seen: torch.Tensor) -> torch.Tensor:
    """Ranks with the seen items removed from the candidates, from the all-items ``ranks``.

    scores [B, N]; targets [B]; ranks [B] (all items); seen [B, H] item ids the user
    interacted with before the target, 0 = padding, duplicates allowed. A removed item that
    scored >= the target no longer ranks above it; a seen target gets rank N (a miss)."""
    seen_sorted = seen.sort(dim=1).values                                     # [B, H]
    distinct = torch.ones_like(seen_sorted, dtype=torch.bool)
    distinct[:, 1:] = seen_sorted[:, 1:] != seen_sorted[:, :-1]
    real = (seen_sorted > 0) & distinct
    seen_scores = scores.gather(1, (seen_sorted - 1).clamp(min=0))            # [B, H]
    target_scores = scores.gather(1, (targets - 1).view(-1, 1))               # [B, 1]
    is_target = seen_sorted == targets.view(-1, 1)
    above = (real & ~is_target & (seen_scores >= target_scores)).sum(1)
    return torch.where(is_target.any(1), scores.shape[1], ranks - above)


@torch.inference_mode()
def compute_ranks(model: SequenceEncoder, data: SplitData, examples: Examples,
                  batch_size: int = 1024, mask_history: bool = False,
                  device: torch.device | str = "cpu", precision: str = "fp32",
                  protocols: bool = False):
    """Rank of every example's target, in example order: [R] int64 (all items), or with
    ``protocols`` a dict {"all": [R], "unseen": [R], "last_top1": [R] bool}.

    The encoder runs on ``batch_size`` rows at a time; scores are then formed and ranked
    ``SCORE_CHUNK`` rows at a time, so no ``[batch_size, N]`` score matrix is materialised.
    ``precision`` (resolved: fp32 | bf16, see ``ec4srec.precision``) is the autocast of the
    encoder pass only: scores are always ``model.scores`` of the fp32 representation, outside
    autocast, and ranked in fp32. (bf16 scores keep 8 significant bits: thousands of items would
    tie with the target and the pessimistic tie rule would inflate every rank.) Ranks stay on
    the device until the end: one read-back per call, not per batch.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    names = ("all", "unseen", "last_top1") if protocols else ("all",)
    parts: list[tuple[np.ndarray, list[torch.Tensor]]] = []
    starts = examples.history_start()
    try:
        for rows in eval_order(examples.length, batch_size):
            batch = make_batch(data.items, examples, rows).to(device)
            with autocast(precision, device):
                h = model(batch.items, batch.lengths)                         # [B, d]
            h = h.float()
            if protocols:
                full = torch.from_numpy(gather_histories(
                    data.items, examples.end[rows], examples.end[rows] - starts[rows])).to(device)
            outs = [torch.empty(len(rows), dtype=torch.int64, device=device) for _ in names]
            for start in range(0, len(rows), SCORE_CHUNK):
                stop = start + SCORE_CHUNK
                scores = model.scores(h[start:stop]).float()                  # [c, N] fp32
                targets = batch.targets[start:stop]
                if mask_history:
                    mask_items_(scores, batch.items[start:stop])
                ranks = ranks_from_scores(scores, targets)
                outs[0][start:stop] = ranks
                if protocols:
                    outs[1][start:stop] = unseen_ranks(scores, targets, ranks, full[start:stop])
                    last = batch.items[start:stop].gather(1, (batch.lengths[start:stop] - 1).view(-1, 1))
                    outs[2][start:stop] = ranks_from_scores(scores, last.view(-1)) == 1
            parts.append((rows, outs))
        result = {name: np.empty(len(examples), dtype=np.int64) for name in names}
        if parts:
            order = np.concatenate([r for r, _ in parts])
            for i, name in enumerate(names):
                result[name][order] = torch.cat([o[i] for _, o in parts]).cpu().numpy()
    finally:
        model.train(was_training)
    return result if protocols else result["all"]


def evaluate(model: SequenceEncoder, data: SplitData, examples: Examples, batch_size: int = 1024,
             mask_history: bool = False, device: torch.device | str = "cpu", ks=KS,
             precision: str = "fp32") -> dict[str, float]:
    """Metrics of both protocols (``hr@K``, ``ndcg@K``; ``hr@K_unseen``, ``ndcg@K_unseen``) and
    ``last_item_top1``."""
    ranks = compute_ranks(model, data, examples, batch_size, mask_history, device, precision,
                          protocols=True)
    out = metrics_from_ranks(torch.from_numpy(ranks["all"]), ks)
    unseen = metrics_from_ranks(torch.from_numpy(ranks["unseen"]), ks)
    out.update({k + UNSEEN: v for k, v in unseen.items()})
    out["last_item_top1"] = float(ranks["last_top1"].mean()) if len(examples) else 0.0
    return out
