"""Full-ranking evaluation: HR@K and NDCG@K over all items, batched.

Rank definition (pessimistic, deterministic): rank = 1 + #{items scored strictly higher than
the target} + #{other items scored exactly equal}. A model that scores everything equally
therefore gets the worst rank, never a lucky one. Padding and the [mask] token are never
candidates. ``mask_history`` (off by default, as in the paper) removes the history items from
the candidates. HR@K = 1[rank <= K]; NDCG@K = 1[rank <= K] / log2(rank + 1) (one target).
"""
from __future__ import annotations

import numpy as np
import torch

from .data.batches import eval_order, make_batch
from .data.split import Examples, SplitData
from .models import SequenceEncoder
from .precision import autocast

KS = (5, 10, 20)


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


@torch.inference_mode()
def compute_ranks(model: SequenceEncoder, data: SplitData, examples: Examples,
                  batch_size: int = 1024, mask_history: bool = False,
                  device: torch.device | str = "cpu", precision: str = "fp32") -> np.ndarray:
    """Rank of every example's target, in example order.

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
    ranks = np.empty(len(examples), dtype=np.int64)
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    try:
        for rows in eval_order(examples.length, batch_size):
            batch = make_batch(data.items, examples, rows).to(device)
            with autocast(precision, device):
                h = model(batch.items, batch.lengths)                         # [B, d]
            h = h.float()
            out = torch.empty(len(rows), dtype=torch.int64, device=device)
            for start in range(0, len(rows), SCORE_CHUNK):
                stop = start + SCORE_CHUNK
                scores = model.scores(h[start:stop]).float()                  # [c, N] fp32
                if mask_history:
                    items = batch.items[start:stop]
                    seen = torch.zeros(scores.shape[0], scores.shape[1] + 1, dtype=torch.bool,
                                       device=scores.device)
                    seen.scatter_(1, items, True)                             # column 0 = padding
                    scores.masked_fill_(seen[:, 1:], float("-inf"))
                out[start:stop] = ranks_from_scores(scores, batch.targets[start:stop])
            parts.append((rows, out))
        if parts:
            order = np.concatenate([r for r, _ in parts])
            ranks[order] = torch.cat([o for _, o in parts]).cpu().numpy()
    finally:
        model.train(was_training)
    return ranks


def evaluate(model: SequenceEncoder, data: SplitData, examples: Examples, batch_size: int = 1024,
             mask_history: bool = False, device: torch.device | str = "cpu", ks=KS,
             precision: str = "fp32") -> dict[str, float]:
    ranks = compute_ranks(model, data, examples, batch_size, mask_history, device, precision)
    return metrics_from_ranks(torch.from_numpy(ranks), ks)
