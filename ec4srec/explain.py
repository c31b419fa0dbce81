"""Explanation-guided importance scores (paper Section 4.2, Eq. 5).

For a history s_u = [v_1..v_n] and the explained output y_u (the model's score of one item),
an explainer gives an attribution a[i, j] per position i and embedding dimension j of the
*item embeddings* (the input the explainers perturb). Eq. 5 then scores position i as

    score(v_i) = sum_j |a[i, j]|  /  sum_{i' <= n} sum_j |a[i', j]|

Documented choices:
- The absolute value is taken per dimension before the sum over the d dimensions (the paper's
  ||dy/de_{i,j}|| for Saliency, applied alike to every explainer).
- Normalisation is per sequence over its real positions (Eq. 5; upstream normalised by the norm
  of the whole batch). Padding positions are exactly 0. A sequence whose raw total is 0 (no
  position moves y_u) gets uniform scores 1/n.
- y_u is the score of ``target_items`` when given, else of the model's predicted item (argmax
  over all items for the unperturbed history: the paper's y_u and upstream's choice).
- Explaining always runs in eval mode (the model's mode is restored afterwards); gradients are
  taken with ``torch.autograd.grad`` w.r.t. the embedding input only, so parameters' ``.grad``
  are never touched.
- "attention" (SASRec only) ignores y_u: last layer's weights, averaged over heads, at the
  query row of the last real position, over key positions (already sums to 1 over real
  positions because of the causal mask).
- "occlusion" is our own vectorised implementation, not ``captum.attr.Occlusion``: captum slides
  its window over all L positions of the padded batch (padding included) and evaluates one
  perturbation of the whole batch per forward pass. We perturb only real positions, packing
  ``internal_batch_size`` (sequence, position) copies per forward pass. With window (1, d) and a
  zero baseline the attributions are identical (tests check it): raw = |y(orig) - y(occluded)|
  per position (captum gives that difference to each of the d dims of the window; the factor d
  cancels in Eq. 5).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import EXPLAINERS
from .data.batches import eval_order, make_batch
from .data.split import Examples
from .models.base import SequenceEncoder

ForwardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _selected_score(model: SequenceEncoder) -> ForwardFn:
    """(emb [B, L, d], lengths [B], cols [B]) -> y [B] = scores(h)[b, cols[b]] (cols = item - 1)."""
    plain = type(model).scores is SequenceEncoder.scores

    def forward(emb: torch.Tensor, lengths: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        h = model.encode_embedded(emb, lengths)                               # [B, d]
        if plain:     # h @ item_matrix.T restricted to one column per row: no [B, N] logits
            return (h * model.item_matrix()[cols]).sum(-1)                   # [B]
        return model.scores(h).gather(1, cols.view(-1, 1)).squeeze(1)       # [B]

    return forward


def _real_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B] lengths -> [B, L] bool, True at real positions."""
    return torch.arange(width, device=lengths.device).view(1, -1) < lengths.view(-1, 1)


def raw_attributions(model: SequenceEncoder, items: torch.Tensor, lengths: torch.Tensor,
                     explainer: str, target_items: torch.Tensor | None = None, ig_steps: int = 20,
                     internal_batch_size: int = 1024) -> torch.Tensor:
    """Unnormalised Eq. 5 numerators: items [B, L] -> [B, L] float32, sum_j |a[i, j]| per position
    (attention: the weights themselves); padding positions exactly 0. Same contract as
    :func:`explain_batch` otherwise (eval mode, parameters' grads untouched)."""
    if explainer not in EXPLAINERS:
        raise ValueError(f"unknown explainer {explainer!r}; expected one of {EXPLAINERS}")
    if explainer == "attention" and not getattr(model, "has_attention", False):
        raise ValueError("the attention explainer needs a backbone with attention (sasrec); "
                         f"{type(model).__name__.lower()} has none")
    B, L = items.shape
    mask = _real_mask(lengths, L)                                             # [B, L]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            emb = model.embed_items(items).detach()                           # [B, L, d]
            if explainer == "attention":
                _, weights = model.encode_embedded(emb, lengths, return_attention=True)
                last = weights[-1].mean(1)                                    # [B, L, L]
                rows = (lengths - 1).view(-1, 1, 1).expand(-1, 1, L)
                raw = last.gather(1, rows).squeeze(1)                         # [B, L]
                return raw.float().masked_fill(~mask, 0.0)
            if target_items is None:
                cols = model.scores(model.encode_embedded(emb, lengths)).argmax(1)   # [B]
            else:
                cols = target_items.to(items.device).long() - 1
        forward = _selected_score(model)
        if explainer == "occlusion":
            raw = _occlusion(forward, emb, lengths, cols, internal_batch_size)
        else:
            raw = _gradient(forward, emb, lengths, cols, explainer, ig_steps, internal_batch_size)
        return raw.float().masked_fill(~mask, 0.0)
    finally:
        model.train(was_training)


def _gradient(forward: ForwardFn, emb: torch.Tensor, lengths: torch.Tensor, cols: torch.Tensor,
              explainer: str, ig_steps: int, internal_batch_size: int) -> torch.Tensor:
    """captum Saliency (abs=True) or IntegratedGradients (zero baseline) -> [B, L] sum_j |a|."""
    from captum.attr import IntegratedGradients, Saliency

    # cuDNN's RNN backward refuses eval mode; the native kernels give the same values.
    with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
        if explainer == "saliency":
            leaf = emb.detach().requires_grad_()                              # [B, L, d]
            attr = Saliency(forward).attribute(leaf, additional_forward_args=(lengths, cols),
                                               abs=True)                    # [B, L, d]
            return attr.detach().abs().sum(-1)
        # IG evaluates B * n_steps rows; captum's internal batching splits the steps, not the
        # rows, so we cut the rows into chunks whose steps fit one internal batch.
        ig = IntegratedGradients(forward)
        rows = max(1, internal_batch_size // ig_steps)
        out = []
        for start in range(0, emb.shape[0], rows):
            sl = slice(start, start + rows)
            attr = ig.attribute(emb[sl], baselines=torch.zeros_like(emb[sl]),
                                additional_forward_args=(lengths[sl], cols[sl]),
                                n_steps=ig_steps, internal_batch_size=internal_batch_size)
            out.append(attr.detach().abs().sum(-1))                           # [b, L]
        return torch.cat(out)


def _occlusion(forward: ForwardFn, emb: torch.Tensor, lengths: torch.Tensor, cols: torch.Tensor,
               internal_batch_size: int) -> torch.Tensor:
    """|y(orig) - y(position i's embedding zeroed)| for every real (b, i); [B, L], 0 elsewhere."""
    B, L, _ = emb.shape
    raw = torch.zeros(B, L, device=emb.device)
    b_idx, p_idx = _real_mask(lengths, L).nonzero(as_tuple=True)              # [P], [P]
    with torch.no_grad():
        y0 = forward(emb, lengths, cols)                                      # [B]
        for start in range(0, len(b_idx), internal_batch_size):
            b, p = b_idx[start:start + internal_batch_size], p_idx[start:start + internal_batch_size]
            copies = emb[b]                                                   # [C, L, d]
            copies[torch.arange(len(b), device=emb.device), p] = 0.0
            raw[b, p] = (y0[b] - forward(copies, lengths[b], cols[b])).abs()
    return raw


def normalise(raw: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Eq. 5 denominator: [B, L] nonnegative -> rows summing to 1 over real positions, padding 0;
    a row with total 0 becomes uniform 1/n."""
    mask = _real_mask(lengths, raw.shape[1])
    raw = raw.float().masked_fill(~mask, 0.0)
    total = raw.sum(1, keepdim=True)                                          # [B, 1]
    uniform = mask.float() / lengths.view(-1, 1).float()
    return torch.where(total > 0, raw / total.clamp(min=torch.finfo(torch.float32).tiny), uniform)


def explain_batch(model: SequenceEncoder, items: torch.Tensor, lengths: torch.Tensor,
                  explainer: str, target_items: torch.Tensor | None = None, ig_steps: int = 20,
                  internal_batch_size: int = 1024) -> torch.Tensor:
    """Eq. 5 importance scores: items [B, L] right-padded, lengths [B] -> [B, L] float32.

    One score per real position (>= 0, summing to 1 per row), padding exactly 0. ``explainer``:
    saliency | integrated_gradients | occlusion | attention (SASRec only, else ValueError).
    ``target_items`` [B] (item ids) selects y_u; None explains the predicted item.
    ``internal_batch_size`` bounds the rows of one forward pass (IG steps, occlusion copies).
    """
    raw = raw_attributions(model, items, lengths, explainer, target_items, ig_steps,
                           internal_batch_size)
    return normalise(raw, lengths)


def compute_importance(model: SequenceEncoder, items_flat: np.ndarray, examples: Examples,
                       explainer: str, explain_target: str = "predicted", max_len: int = 50,
                       batch_size: int = 1024, ig_steps: int = 20,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """Scores of every example: -> [len(examples), max_len] float32, row i = examples row i,
    columns >= its length 0. Length-sorted batches trimmed to their longest row;
    ``batch_size`` is both the rows per batch and the internal batch size.
    ``explain_target``: "predicted" (y_u = argmax item) or "target" (items_flat[examples.end])."""
    if explain_target not in ("predicted", "target"):
        raise ValueError(f"explain_target must be 'predicted' or 'target', got {explain_target!r}")
    device = torch.device(device)
    out = np.zeros((len(examples), max_len), dtype=np.float32)
    if len(examples) and int(examples.length.max()) > max_len:
        raise ValueError(f"an example is longer than max_len={max_len}")
    for rows in eval_order(examples.length, batch_size):
        batch = make_batch(items_flat, examples, rows).to(device)
        targets = batch.targets if explain_target == "target" else None
        scores = explain_batch(model, batch.items, batch.lengths, explainer, targets, ig_steps,
                               batch_size)                                    # [b, L_batch]
        out[rows, :scores.shape[1]] = scores.cpu().numpy()
    return out


def topk_hits(scores: np.ndarray | torch.Tensor, important: np.ndarray, k: int = 3) -> float:
    """Mean over rows of |top-k scored positions ∩ important positions| / important.shape[1].
    scores [U, L]; important [U, m] ground-truth positions (synthetic data: m = k = 3). Ties
    are broken towards the earlier position."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores, important = np.asarray(scores), np.asarray(important)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]                   # [U, k]
    hits = (top[:, :, None] == important[:, None, :]).any(1).sum(1)          # [U]
    return float(np.mean(hits / important.shape[1]))
