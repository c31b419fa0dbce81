"""The next-item objective L_rec: which (history, next item) pairs a batch trains on, and the
softmax they are scored with (docs/methods.md, "Objectives and losses").

- ``train.objective=prefix_rows`` (the paper's): a row is one history and its next item; the
  representation of the history's last position is scored against the target (Eq. 2).
- ``train.objective=all_positions``: a row is a user sequence (data/split.py
  :func:`~ec4srec.data.split.sequence_rows`); one encoder pass gives every position's state and
  every position predicts its next item. The same targets as prefix rows, each once; L_rec is
  the mean over all real positions of the batch.
- ``train.loss=full_softmax``: cross-entropy against all items (the chunked kernel of
  models/fast_ops.py when the backbone scores with its item table).
- ``train.loss=sampled_softmax``: cross-entropy of the target against ``train.negatives``
  sampled items, drawn per target (RecTools) or once per batch (``shared_negatives``),
  uniformly or by training popularity (``negative_sampler``), from torch's RNG. A sampled item
  equal to the target (an accidental hit) is removed from that target's logits.
  ``logq_correction`` subtracts log(n q(j)) from every logit, the target's included (TensorFlow's
  ``sampled_softmax_loss``); with the uniform sampler that is one constant for every logit, so
  it changes nothing (a test checks that). No ``[targets, items]`` matrix is formed.
  ``seen_negatives`` adds, for every target, the items its user had already seen at that point
  (the row's inputs up to the target's position; not the target itself, never padding) to its
  negatives, without correction. Uniform negatives almost never include the item just seen
  (256 of 12,101 items on Beauty: 2 %), so sampled softmax almost never pushes its score down,
  where the full softmax always has it among the negatives (docs/methods.md has the measurement).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ..data.batches import Batch
from ..models.base import SequenceEncoder, last_real
from ..models.fast_ops import full_softmax_ce
from ..models.sasrec import future_mask
from .encoding import encode_together


def full_softmax_loss(model, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2: mean cross-entropy of targets [T] (item ids) against all items, h [T, d].

    Equal to ``F.cross_entropy(model.scores(h), targets - 1)``; for a model that keeps the
    default :meth:`SequenceEncoder.scores` it runs the chunked kernel
    :func:`ec4srec.models.fast_ops.full_softmax_ce` (no ``[T, N]`` logits kept for backward).
    """
    if (type(model).scores is SequenceEncoder.scores
            and type(model).item_matrix is SequenceEncoder.item_matrix):
        return full_softmax_ce(h, model.output_table(), targets - 1, offset=1, num=model.num_items)
    return F.cross_entropy(model.scores(h), targets - 1)


def draw_negatives(shape: tuple[int, ...], num_items: int, probs: torch.Tensor | None,
                   device: torch.device) -> torch.Tensor:
    """Item ids (1..num_items) of the given shape: uniform (``probs`` None) or from ``probs``
    [num_items] (with replacement), from torch's global RNG."""
    if probs is None:
        return torch.randint(1, num_items + 1, shape, device=device)
    n = math.prod(shape)
    return (torch.multinomial(probs, n, replacement=True) + 1).view(shape)


def sampled_softmax_loss(model, h: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor,
                         log_q: torch.Tensor | None = None,
                         extra_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over targets of -log softmax(target | target + negatives [+ extra]).

    h [T, d]; targets [T] item ids; negatives [n] (shared by every target) or [T, n] item ids;
    ``log_q`` [num_items + 1] log(n q(j)) by item id, subtracted from every sampled logit and
    the target's (None: no correction). Logits of negatives equal to their row's target are
    -inf. ``extra_logits`` [T, m]: more negatives' logits, uncorrected (-inf = none).
    """
    pos = (h * model.output_vectors(targets)).sum(-1)                            # [T]
    vectors = model.output_vectors(negatives)                                    # [n|T,n, d]
    if negatives.dim() == 1:
        neg = h @ vectors.T                                                      # [T, n]
        hits = negatives.view(1, -1) == targets.view(-1, 1)                      # [T, n]
    else:
        neg = torch.einsum("tnd,td->tn", vectors, h)                             # [T, n]
        hits = negatives == targets.view(-1, 1)
    if log_q is not None:
        pos = pos - log_q[targets]
        neg = neg - log_q[negatives]
    parts = [pos.unsqueeze(1), neg.masked_fill(hits, float("-inf"))]
    if extra_logits is not None:
        parts.append(extra_logits)
    return F.cross_entropy(torch.cat(parts, dim=1), torch.zeros_like(targets))


def seen_logits(model, states: torch.Tensor, items: torch.Tensor, next_items: torch.Tensor
                ) -> torch.Tensor:
    """Logits of the items already seen at each position: states [B, L, d], items [B, L]
    (inputs), next_items [B, L] (targets) -> [B, L, L], entry (b, j, k) the score of
    items[b, k] for position j; -inf where k > j (not yet seen), items[b, k] is padding or
    equals the target next_items[b, j]."""
    vectors = model.output_vectors(items)                                        # [B, L, d]
    logits = states @ vectors.transpose(1, 2)                                    # [B, L, L]
    future = future_mask(items.shape[1], items.device)                          # k > j, cached
    hidden = future | (items == 0).unsqueeze(1) | (items.unsqueeze(1) == next_items.unsqueeze(2))
    return logits.masked_fill(hidden, float("-inf"))


class RecObjective:
    """L_rec of a run: ``forward(model, batch) -> (l_rec, h_last)``, h_last [B, d] the state of
    each row's last position (the anchor every contrastive term uses)."""

    def __init__(self, train_config, num_items: int, target_counts: np.ndarray | None = None):
        self.tc = train_config
        self.num_items = num_items
        self.all_positions = train_config.objective == "all_positions"
        self.sampled = train_config.loss == "sampled_softmax"
        self._counts = target_counts
        self._probs: torch.Tensor | None = None
        self._log_q: torch.Tensor | None = None
        self._device: torch.device | None = None

    def forward(self, model, batch: Batch, h: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_rec, h_last); ``h`` [B, d]: the anchor already encoded (prefix rows only)."""
        if self.all_positions:
            states = model.all_states(batch.items, batch.lengths)                # [B, L, d]
            h_last = last_real(states, batch.lengths)                            # [B, d]
            real = batch.next_items > 0                                          # [B, L]
            extra = (seen_logits(model, states, batch.items, batch.next_items)[real]
                     if self.sampled and self.tc.seen_negatives else None)       # [T, L]
            return self.loss(model, states[real], batch.next_items[real], extra), h_last
        if h is None and self.tc.bucket_batches == 1:
            # random batches are padded to ~max_len: encode in trimmed length-sorted chunks
            h = encode_together(model, [(batch.items, batch.lengths)])[0]        # [B, d]
        elif h is None:
            h = model(batch.items, batch.lengths)                                # [B, d]
        return self.loss(model, h, batch.targets, self.history_logits(model, h, batch)), h

    def history_logits(self, model, h: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """Prefix rows with ``seen_negatives``: [B, L] logits of each row's history items
        (-inf on padding and on items equal to the target); else None."""
        if not (self.sampled and self.tc.seen_negatives):
            return None
        logits = torch.einsum("bld,bd->bl", model.output_vectors(batch.items), h)
        hidden = (batch.items == 0) | (batch.items == batch.targets.view(-1, 1))
        return logits.masked_fill(hidden, float("-inf"))

    def loss(self, model, h: torch.Tensor, targets: torch.Tensor,
             extra_logits: torch.Tensor | None = None) -> torch.Tensor:
        """h [T, d], targets [T] item ids -> the configured softmax's mean cross-entropy
        (``extra_logits`` [T, m]: the seen items' logits, sampled softmax only)."""
        if not self.sampled:
            return full_softmax_loss(model, h, targets)
        self._prepare(h.device)
        n = self.tc.negatives
        shape = (n,) if self.tc.shared_negatives else (h.shape[0], n)
        negatives = draw_negatives(shape, self.num_items, self._probs, h.device)
        return sampled_softmax_loss(model, h, targets, negatives, self._log_q, extra_logits)

    def _prepare(self, device: torch.device) -> None:
        """Sampling probabilities and log(n q) by item id, built once per device."""
        if self._device == device:
            return
        self._device = device
        if self.tc.negative_sampler == "popularity":
            counts = torch.as_tensor(self._counts, dtype=torch.float64)
            probs = counts / counts.sum()
            self._probs = probs.float().to(device)
        else:
            probs = torch.full((self.num_items,), 1.0 / self.num_items, dtype=torch.float64)
            self._probs = None
        if self.tc.logq_correction:
            log_q = torch.cat([torch.zeros(1, dtype=torch.float64),
                               torch.log(probs.clamp(min=1e-30) * self.tc.negatives)])
            self._log_q = log_q.float().to(device)
        else:
            self._log_q = None


def target_counts(items: np.ndarray, train, num_items: int, objective: str) -> np.ndarray:
    """[num_items] how often each item (id j at index j - 1) is a training target: the
    popularity sampler's weights (+1 each, so every item can be drawn)."""
    if objective == "all_positions":
        # a sequence row (end, length) has targets items[end - length + 1 : end + 1]
        first = np.repeat(train.end - train.length + 1, train.length)             # row's first target
        offset = np.arange(len(first)) - np.repeat(np.cumsum(train.length) - train.length, train.length)
        targets = items[first + offset]
    else:
        targets = items[train.end]
    return np.bincount(targets, minlength=num_items + 1)[1:] + 1
