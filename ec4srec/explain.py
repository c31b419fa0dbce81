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
  perturbation of the whole batch per forward pass. We perturb only real positions and compute
  only what an occlusion changes (``SequenceEncoder.occlusion_states``: SASRec and GRU4Rec
  recompute positions >= i from cached states of positions < i, Caser only its last-window
  positions; the base class packs ``internal_batch_size`` copies per pass). With window (1, d) and a
  zero baseline the attributions are identical (tests check it): raw = |y(orig) - y(occluded)|
  per position (captum gives that difference to each of the d dims of the window; the factor d
  cancels in Eq. 5).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import EXPLAIN_TARGETS, EXPLAINERS
from .data.batches import eval_order, gather_histories, make_batch
from .data.split import Examples
from .evaluate import mask_items_
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


PREDICT_CHUNK = 64     # rows whose [chunk, N] scores are reduced while still in cache


def predicted_columns(model: SequenceEncoder, h: torch.Tensor) -> torch.Tensor:
    """[B, d] -> [B] argmax over all items (0-based columns), ``PREDICT_CHUNK`` rows at a time
    so that no [B, N] score matrix is written to memory."""
    return torch.cat([model.scores(part).argmax(1) for part in h.split(PREDICT_CHUNK)])


@torch.no_grad()
def predicted_unseen_items(model: SequenceEncoder, items: torch.Tensor, lengths: torch.Tensor,
                           seen: torch.Tensor) -> torch.Tensor:
    """[B] item ids: the top-scored item outside ``seen`` [B, H] (the rows' whole known
    histories, 0 = padding), ``PREDICT_CHUNK`` rows at a time. Call in eval mode."""
    h = model(items, lengths)                                                 # [B, d]
    out = []
    for start in range(0, h.shape[0], PREDICT_CHUNK):
        scores = model.scores(h[start:start + PREDICT_CHUNK]).float()         # [c, N]
        mask_items_(scores, seen[start:start + PREDICT_CHUNK])
        out.append(scores.argmax(1) + 1)
    return torch.cat(out)


def _real_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[B] lengths -> [B, L] bool, True at real positions."""
    return torch.arange(width, device=lengths.device).view(1, -1) < lengths.view(-1, 1)


def raw_attributions(model: SequenceEncoder, items: torch.Tensor, lengths: torch.Tensor,
                     explainer: str, target_items: torch.Tensor | None = None, ig_steps: int = 20,
                     internal_batch_size: int = 1024, occlusion_sign: str = "abs") -> torch.Tensor:
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
                raw = weights[-1].mean(1).squeeze(1)         # [B, 1, L]: the last real query's row
                return raw.float().masked_fill(~mask, 0.0)
            if target_items is None:
                cols = predicted_columns(model, model.encode_embedded(emb, lengths))  # [B]
            else:
                cols = target_items.to(items.device).long() - 1
        if explainer == "occlusion":
            raw = _occlusion(model, emb, lengths, cols, internal_batch_size, occlusion_sign)
        else:
            raw = _gradient(_selected_score(model), emb, lengths, cols, explainer, ig_steps,
                            internal_batch_size)
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


def _occlusion(model: SequenceEncoder, emb: torch.Tensor, lengths: torch.Tensor,
               cols: torch.Tensor, internal_batch_size: int, sign: str = "abs") -> torch.Tensor:
    """|y(orig) - y(position i's embedding zeroed)| for every real (b, i); [B, L], 0 elsewhere.
    ``sign="positive"``: max(y(orig) - y(occluded), 0) instead (upstream's captum attribution,
    clamped: only a position whose removal lowers the score counts as important).

    The occluded representations come from ``model.occlusion_states`` (each backbone computes
    only what an occlusion changes; the base class runs one pass per copy)."""
    B, L, _ = emb.shape
    with torch.no_grad():
        h0 = model.encode_embedded(emb, lengths)                              # [B, d]
        h_occ = model.occlusion_states(emb, lengths, internal_batch_size)     # [B, L, d]
        if type(model).scores is SequenceEncoder.scores:
            w = model.item_matrix()[cols]                                     # [B, d]
            y0 = (h0 * w).sum(-1)                                             # [B]
            y = (h_occ * w.unsqueeze(1)).sum(-1)                              # [B, L]
        else:
            y0 = model.scores(h0).gather(1, cols.view(-1, 1)).squeeze(1)
            y = torch.stack([model.scores(h_occ[:, i]).gather(1, cols.view(-1, 1)).squeeze(1)
                             for i in range(L)], dim=1)
    if sign not in ("abs", "positive"):
        raise ValueError(f"occlusion sign must be 'abs' or 'positive', got {sign!r}")
    delta = y0.unsqueeze(1) - y                                               # [B, L]
    delta = delta.abs() if sign == "abs" else delta.clamp(min=0.0)
    return delta.masked_fill(~_real_mask(lengths, L), 0.0)


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
                  internal_batch_size: int = 1024, occlusion_sign: str = "abs") -> torch.Tensor:
    """Eq. 5 importance scores: items [B, L] right-padded, lengths [B] -> [B, L] float32.

    One score per real position (>= 0, summing to 1 per row), padding exactly 0. ``explainer``:
    saliency | integrated_gradients | occlusion | attention (SASRec only, else ValueError).
    ``target_items`` [B] (item ids) selects y_u; None explains the predicted item.
    ``internal_batch_size`` bounds the rows of one forward pass (IG steps, occlusion copies).
    """
    raw = raw_attributions(model, items, lengths, explainer, target_items, ig_steps,
                           internal_batch_size, occlusion_sign)
    return normalise(raw, lengths)


def compute_importance(model: SequenceEncoder, items_flat: np.ndarray, examples: Examples,
                       explainer: str, explain_target: str = "predicted", max_len: int = 50,
                       batch_size: int = 1024, ig_steps: int = 20,
                       device: str | torch.device = "cpu", occlusion_sign: str = "abs") -> np.ndarray:
    """Scores of every example: -> [len(examples), max_len] float32, row i = examples row i,
    columns >= its length 0. Length-sorted batches trimmed to their longest row;
    ``batch_size`` is both the rows per batch and the internal batch size.
    ``explain_target``: "predicted" (y_u = argmax item), "predicted_unseen" (the argmax item
    outside the row's whole known history, ``examples.history_start()``) or "target"
    (items_flat[examples.end])."""
    if explain_target not in EXPLAIN_TARGETS:
        raise ValueError(f"explain_target must be one of {EXPLAIN_TARGETS}, got {explain_target!r}")
    starts = examples.history_start()
    device = torch.device(device)
    out = np.zeros((len(examples), max_len), dtype=np.float32)
    if len(examples) and int(examples.length.max()) > max_len:
        raise ValueError(f"an example is longer than max_len={max_len}")
    for rows in eval_order(examples.length, batch_size):
        batch = make_batch(items_flat, examples, rows).to(device)
        targets = batch.targets if explain_target == "target" else None
        if explain_target == "predicted_unseen":
            seen = torch.from_numpy(gather_histories(items_flat, examples.end[rows],
                                                     examples.end[rows] - starts[rows])).to(device)
            was_training = model.training
            model.eval()
            targets = predicted_unseen_items(model, batch.items, batch.lengths, seen)
            model.train(was_training)
        scores = explain_batch(model, batch.items, batch.lengths, explainer, targets, ig_steps,
                               batch_size, occlusion_sign)                    # [b, L_batch]
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
