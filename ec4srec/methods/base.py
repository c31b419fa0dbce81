"""The method interface and the plain recommendation objective (Eq. 2, full softmax)."""
from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from ..config import Config
from ..data.batches import Batch
from ..data.split import SplitData
from .encoding import encode_together


def rec_loss(model, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2: cross-entropy of the target against all items (full softmax, mean over batch).

    Equal to ``F.cross_entropy(model.scores(h), targets - 1)``; for a model that keeps the
    default :meth:`SequenceEncoder.scores` it runs the chunked kernel
    :func:`ec4srec.models.fast_ops.full_softmax_ce` (no ``[B, N]`` logits kept for backward).
    """
    from ..models.base import SequenceEncoder
    from ..models.fast_ops import full_softmax_ce

    if (type(model).scores is SequenceEncoder.scores
            and type(model).item_matrix is SequenceEncoder.item_matrix):
        return full_softmax_ce(h, model.item_emb.weight, targets - 1, offset=1,
                               num=model.num_items)
    return F.cross_entropy(model.scores(h), targets - 1)


class Method:
    """Base: L_rec only. Subclasses add contrastive terms and state."""

    def __init__(self, config: Config, data: SplitData, model):
        self.config = config
        self.data = data
        self.model = model
        self.device = torch.device("cpu")

    # schedule ----------------------------------------------------------------------------
    @property
    def update_epochs(self) -> list[int]:
        """Epochs (1-based) at whose start importance is recomputed; none for plain methods."""
        return []

    def on_epoch_start(self, epoch: int) -> bool:
        """Hook before epoch ``epoch`` trains; returns True when it changed method state."""
        return False

    # objective ---------------------------------------------------------------------------
    def loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts (summed per epoch by the trainer)."""
        loss, _ = self.rec_forward(batch)
        return loss, {"rec": loss.detach()}

    def rec_forward(self, batch: Batch, h: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_rec (Eq. 2) of ``batch`` and the anchor's representation h [B, d]: the one place
        L_rec is computed. ``h`` is the anchor when a caller encoded it already (pooled with
        other views: ``Contrastive.pool_anchor``); None encodes it here.

        With random batches (``train.bucket_batches=1``) a batch is padded to its longest row,
        nearly always ``max_len``, so its rows are encoded in length-sorted chunks trimmed to
        their own longest row, as every contrastive view is (:func:`encode_together`; rows are
        independent, so only the dropout draws differ from one padded pass). Bucketed batches
        are already about as long as their rows and keep the single pass.
        """
        if h is None and self.config.train.bucket_batches == 1:
            h = encode_together(self.model, [(batch.items, batch.lengths)])[0]    # [B, d]
        elif h is None:
            h = self.model(batch.items, batch.lengths)                    # [B, d]
        return rec_loss(self.model, h, batch.targets), h

    # state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RecOnly(Method):
    """``--method sasrec``: the backbone trained with L_rec alone."""
