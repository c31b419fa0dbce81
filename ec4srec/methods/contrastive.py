"""CL4SRec, DuoRec and the three EC4SRec variants (Eqs. 1-9) on any backbone.

| method      | before first update           | after (explanation-guided)                      |
|-------------|-------------------------------|-------------------------------------------------|
| cl4srec     | L_rec + l_cl L_cl (random)    | (no updates)                                    |
| duorec      | L_rec + l_sl L_sl (rtrl)      | (no updates)                                    |
| ec4srec_ssl | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_cl+ L_cl+ + l_cl- L_cl-   (Eq. 6)     |
| ec4srec_sl  | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_sl+ L_sl+                 (Eq. 7)     |
| ec4srec     | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_cl+ L_cl+ + l_cl- L_cl- + l_sl+ L_sl+ (Eq. 9) |

The warm-up column is Section 4.1 ("we combine the losses of CL4SRec and DuoRec");
``method.warmup_loss=rec_only`` gives upstream's L_rec-only warm-up. This table is data in
terms.py: each term names the views it reads, each (method, phase) row weights the terms.
Importance scores are recomputed at the start of each scheduled epoch (schedule.py) by the
configured explainer, in eval mode, over all training rows, and kept as method state (so every
checkpoint has them). All views of a batch (anchor, augmented views, retrieved sequences) are
built once, in terms.VIEWS order, pooled in that order and encoded in length-sorted, trimmed
chunks (:func:`encode_together`): fewer, fuller forward passes and no work on the padding a long
retrieved sequence would force on every short view.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.batches import Batch
from ..data.split import SplitData
from ..registry import GUIDED
from ..schedule import update_epochs
from . import augment, terms
from .base import Method
from .encoding import encode_together
from .losses import negative_view_loss, negative_view_supcon, pair_nce
from .retrieval import PAIR_TABLE_LIMIT, SameTargetIndex


def build_contrastive(config: Config, data: SplitData, model) -> Method:
    if config.method.name not in terms.METHODS:
        raise ValueError(f"unknown method {config.method.name!r}")
    return Contrastive(config, data, model)


class Contrastive(Method):
    def __init__(self, config: Config, data: SplitData, model):
        super().__init__(config, data, model)
        mc = config.method
        self.name = mc.name
        self._updates = (update_epochs(config.train.epochs, mc.updates, mc.update_epochs)
                         if mc.name in GUIDED else [])
        # The anchor is encoded in the pool with the other views (first); False encodes it on
        # its own in rec_forward and pools the other views without it: the all_positions
        # objective needs every position's state of the anchor, not only its last.
        self.pool_anchor = config.train.objective == "prefix_rows"
        self.importance: torch.Tensor | None = None          # [R, max_len] float32, CPU
        self._importance_device: torch.Tensor | None = None  # its copy on the training device
        self._index: SameTargetIndex | None = None
        self._util: torch.Tensor | None = None               # ertrl+ util table of the scores

    # ------------------------------------------------------------------ schedule and state
    @property
    def update_epochs(self) -> list[int]:
        return self._updates

    def on_epoch_start(self, epoch: int) -> bool:
        if epoch not in self._updates:
            return False
        from ..explain import compute_importance
        mc = self.config.method
        scores = compute_importance(
            self.model, self.data.items, self.data.train, mc.explainer, mc.explain_target,
            max_len=self.data.max_len, batch_size=mc.explain_batch_size, ig_steps=mc.ig_steps,
            device=self.device, occlusion_sign=mc.occlusion_sign)
        self.importance = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        self._importance_device = self._util = None
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.importance = state.get("importance")
        self._importance_device = self._util = None

    # ------------------------------------------------------------------ the objective
    def loss(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """sum of weight x term over the phase's row of the term table (terms.py), and every
        term's detached value. Only the views the row's terms read are built and encoded."""
        mc = self.config.method
        row = terms.weights(mc, terms.phase_of(mc, self.importance is not None))
        names = terms.terms_of(row)
        views = self.build_views(batch, terms.views_of(names, mc.sl_anchor))
        pooled = {v: x for v, x in views.items() if v != "anchor" or self.pool_anchor}
        encoded = encode_together(self.model, list(pooled.values())) if pooled else []
        z = dict(zip(pooled, encoded))                  # view name -> [B, d]
        values = {}                                     # term name -> scalar
        values["rec"], z["anchor"] = self.rec_forward(batch, z.get("anchor"))
        if mc.sl_anchor == "rec":
            z["anchor_sl"] = z["anchor"]               # L_sl / L_sl+ pair the L_rec forward
        for name in names:
            if name != "rec":
                values[name] = self.term(name, z, batch)
        return terms.weighted_sum(row, values), {t: values[t].detach() for t in names}

    def build_views(self, batch: Batch, names: tuple[str, ...]
                    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The views ``names`` of ``batch`` (each ``(items [B, L_v], lengths [B])``), built and
        returned in terms.VIEWS order: augmentations and retrieval draw from torch's global RNG
        in this order, so it fixes the numbers. aug1/aug2 and pos1/pos2 are built in pairs, and
        the anchor always."""
        mc = self.config.method
        items, lengths = batch.items, batch.lengths
        mask_token = self.model.mask_token
        wanted = set(names)
        views = {"anchor": (items, lengths)}
        if {"aug1", "aug2"} & wanted:
            v1, l1, v2, l2 = augment.two_random_views(
                items, lengths, mc.augmentations, mc.crop_ratio, mc.mask_ratio, mc.reorder_ratio,
                mask_token)
            views["aug1"], views["aug2"] = (v1, l1), (v2, l2)
        if "anchor_sl" in wanted:
            views["anchor_sl"] = (items, lengths)      # re-encoded: its own dropout draws
        if "same_target" in wanted:
            views["same_target"] = self.index.histories(self.index.random_partner(batch.rows))
        if {"pos1", "pos2", "neg", "guided_partner"} & wanted:
            scores = self._batch_importance(batch)                                  # [B, L]
            k = self.num_lowest(lengths)                                            # [B]
        if {"pos1", "pos2"} & wanted:
            p1, pl1, p2, pl2 = augment.two_guided_views(items, lengths, scores, k, mask_token=mask_token)
            views["pos1"], views["pos2"] = (p1, pl1), (p2, pl2)
        if "neg" in wanted:
            k_high = lengths - k if mc.k_counts == "important" else k
            views["neg"] = augment.one_negative_view(items, lengths, scores, k,
                                                     mask_token=mask_token, k_high=k_high)
        if "guided_partner" in wanted:
            partner = self.index.guided_partner(batch.rows, items, lengths, scores, self.data.num_items,
                                                mc.retrieval_candidates, util_table=self.util_table())
            views["guided_partner"] = self.index.histories(partner)
        return views

    def term(self, name: str, z: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """The scalar contrastive term ``name`` (terms.TERM_VIEWS) of the encoded views ``z``
        (view name -> [B, d])."""
        mc = self.config.method
        tau, sim = mc.tau, mc.similarity
        if name == "cl-":
            positives = torch.cat([z["pos1"], z["pos2"]])                         # [2B, d], S+
            valid = batch.lengths >= mc.neg_min_length if mc.neg_min_length > 1 else None
            if mc.neg_loss == "paper":
                return negative_view_loss(z["neg"], positives, tau, sim, valid)
            return negative_view_supcon(z["neg"], positives, mc.neg_tau, sim, valid)
        a, b = terms.TERM_VIEWS[name]                   # cl, sl, cl+, sl+: InfoNCE of (a, b)
        return pair_nce(z[a], z[b], tau, sim)

    # ------------------------------------------------------------------ helpers
    @property
    def index(self) -> SameTargetIndex:
        if self._index is None:
            self._index = SameTargetIndex(self.data.items, self.data.train, self.device)
        return self._index

    def util_table(self) -> torch.Tensor | None:
        """ertrl+ util of every same-target pair under the current scores, built on first use
        after each update (None when the index has more than PAIR_TABLE_LIMIT pairs)."""
        if self._util is None and self.index.pair_count() <= PAIR_TABLE_LIMIT:
            self._batch_importance_table()
            self._util = self.index.util_table(self._importance_device)
        return self._util

    def _batch_importance_table(self) -> torch.Tensor:
        if self._importance_device is None:
            self._importance_device = self.importance.to(self.device)
        return self._importance_device

    def _batch_importance(self, batch: Batch) -> torch.Tensor:
        return self._batch_importance_table()[batch.rows, :batch.items.shape[1]]

    def num_lowest(self, lengths: torch.Tensor) -> torch.Tensor:
        """k, the number of lowest-importance items the positive ops act on: :func:`lowest_count`."""
        return lowest_count(lengths, self.config.method)


def lowest_count(lengths: torch.Tensor, mc) -> torch.Tensor:
    """k, the number of lowest-importance items the positive ops act on (Sec. 4.3), per row
    of ``lengths`` [B] under the method config ``mc``.

    ``k_counts=unimportant`` (default, the equations): k = floor(mu_e * |s|).
    ``k_counts=important`` (upstream): mu_e is the share of important (top) items, so
    k = |s| - floor(mu_e * |s|). ``k_rounding=ceil`` rounds mu_e * |s| up instead.
    """
    share = mc.mu_e * lengths.double()
    m = torch.ceil(share - 1e-9) if mc.k_rounding == "ceil" else torch.floor(share + 1e-9)
    m = m.long()
    return lengths - m if mc.k_counts == "important" else m
