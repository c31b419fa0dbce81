"""The method interface and the plain recommendation objective (Eq. 2, full softmax)."""
from __future__ import annotations

from typing import Any

import torch
from ..config import Config
from ..data.batches import Batch
from ..data.split import SplitData
from .objective import RecObjective, full_softmax_loss, target_counts


rec_loss = full_softmax_loss          # Eq. 2 with the full softmax (methods/objective.py)


class Method:
    """Base: L_rec only. Subclasses add contrastive terms and state."""

    def __init__(self, config: Config, data: SplitData, model):
        self.config = config
        self.data = data
        self.model = model
        self.device = torch.device("cpu")
        tc = config.train
        counts = (target_counts(data.items, data.train, data.num_items, tc.objective)
                  if tc.loss == "sampled_softmax" and tc.negative_sampler == "popularity" else None)
        num_items = data.num_items if data is not None else getattr(model, "num_items", 0)
        self.objective = RecObjective(tc, num_items, counts)

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
        """L_rec of ``batch`` under ``train.objective`` and ``train.loss``
        (:class:`RecObjective`) and the anchor's representation h [B, d] (each row's last
        position): the one place L_rec is computed. ``h`` is the anchor when a caller encoded it
        already (pooled with other views: ``Contrastive.pool_anchor``, prefix rows only); None
        encodes it here.

        With random batches (``train.bucket_batches=1``) a prefix-row batch is padded to its
        longest row, nearly always ``max_len``, so its rows are encoded in length-sorted chunks
        trimmed to their own longest row, as every contrastive view is (rows are independent,
        so only the dropout draws differ from one padded pass). Bucketed batches are already
        about as long as their rows and keep the single pass."""
        return self.objective.forward(self.model, batch, h)

    # state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RecOnly(Method):
    """``--method sasrec``: the backbone trained with L_rec alone."""
