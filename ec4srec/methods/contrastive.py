"""CL4SRec, DuoRec and the three EC4SRec variants (Eqs. 1-9) on any backbone.

| method      | before first update           | after (explanation-guided)                      |
|-------------|-------------------------------|-------------------------------------------------|
| cl4srec     | L_rec + l_cl L_cl (random)    | (no updates)                                    |
| duorec      | L_rec + l_sl L_sl (rtrl)      | (no updates)                                    |
| ec4srec_ssl | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_cl+ L_cl+ + l_cl- L_cl-   (Eq. 6)     |
| ec4srec_sl  | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_sl+ L_sl+                 (Eq. 7)     |
| ec4srec     | L_rec + l_cl L_cl + l_sl L_sl | L_rec + l_cl+ L_cl+ + l_cl- L_cl- + l_sl+ L_sl+ (Eq. 9) |

The warm-up column is Section 4.1 ("we combine the losses of CL4SRec and DuoRec");
``method.warmup_loss=rec_only`` gives upstream's L_rec-only warm-up. Importance scores are
recomputed at the start of each scheduled epoch (schedule.py) by the configured explainer, in
eval mode, over all training rows, and kept as method state (so every checkpoint has them).
All views of a batch (anchor, augmented views, retrieved sequences) are pooled and encoded in
length-sorted, trimmed chunks (:func:`encode_together`): fewer, fuller forward passes and no
work on the padding a long retrieved sequence would force on every short view.
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
from . import augment
from .base import Method, rec_loss
from .encoding import encode_together
from .losses import negative_view_loss, negative_view_supcon, pair_nce
from .retrieval import PAIR_TABLE_LIMIT, SameTargetIndex


def build_contrastive(config: Config, data: SplitData, model) -> Method:
    if config.method.name not in ("cl4srec", "duorec", *GUIDED):
        raise ValueError(f"unknown method {config.method.name!r}")
    return Contrastive(config, data, model)


class Contrastive(Method):
    def __init__(self, config: Config, data: SplitData, model):
        super().__init__(config, data, model)
        mc = config.method
        self.name = mc.name
        self.guided = mc.name in GUIDED
        self._updates = (update_epochs(config.train.epochs, mc.updates, mc.update_epochs)
                         if self.guided else [])
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
        mc = self.config.method
        guided_phase = self.guided and self.importance is not None
        warmup = self.guided and not guided_phase and mc.warmup_loss == "paper"
        # A term whose lambda is 0 contributes nothing: its views are neither built nor encoded.
        use_cl = (self.name == "cl4srec" or warmup) and mc.lambda_cl > 0
        use_sl = (self.name == "duorec" or warmup) and mc.lambda_sl > 0
        weights = mc.guided_weights() if guided_phase else {"cl+": 0.0, "cl-": 0.0, "sl+": 0.0}
        # L_cl- needs the positive views too (they are its S+), so they are built for either term.
        use_ssl_plus = weights["cl+"] > 0 or weights["cl-"] > 0
        use_cl_neg = weights["cl-"] > 0
        use_sl_plus = weights["sl+"] > 0

        items, lengths = batch.items, batch.lengths
        views: list[tuple[torch.Tensor, torch.Tensor]] = [(items, lengths)]
        mask_token = self.model.mask_token
        if use_cl:
            v1, l1, v2, l2 = augment.two_random_views(
                items, lengths, mc.augmentations, mc.crop_ratio, mc.mask_ratio, mc.reorder_ratio,
                mask_token)
            views += [(v1, l1), (v2, l2)]
        # L_sl / L_sl+'s anchor: the L_rec forward, or (sl_anchor=dropout) a second encoding.
        second_anchor = (use_sl or use_sl_plus) and mc.sl_anchor == "dropout"
        if second_anchor:
            views.append((items, lengths))
        if use_sl:
            views.append(self.index.histories(self.index.random_partner(batch.rows)))
        if use_ssl_plus or use_sl_plus:
            scores = self._batch_importance(batch)                                  # [B, L]
        if use_ssl_plus:
            k = self.num_lowest(lengths)
            p1, pl1, p2, pl2 = augment.two_guided_views(items, lengths, scores, k, mask_token=mask_token)
            views += [(p1, pl1), (p2, pl2)]
            if use_cl_neg:
                k_high = lengths - k if mc.k_counts == "important" else k
                views.append(augment.one_negative_view(items, lengths, scores, k,
                                                       mask_token=mask_token, k_high=k_high))
        if use_sl_plus:
            partner = self.index.guided_partner(batch.rows, items, lengths, scores, self.data.num_items,
                                                mc.retrieval_candidates, util_table=self.util_table())
            views.append(self.index.histories(partner))

        h, *rest = encode_together(self.model, views)
        l_rec = rec_loss(self.model, h, batch.targets)
        total, parts = l_rec, {"rec": l_rec.detach()}
        tau, sim = mc.tau, mc.similarity
        if use_cl:
            l_cl = pair_nce(rest.pop(0), rest.pop(0), tau, sim)
            total = total + mc.lambda_cl * l_cl
            parts["cl"] = l_cl.detach()
        sl_anchor = rest.pop(0) if second_anchor else h
        if use_sl:
            l_sl = pair_nce(sl_anchor, rest.pop(0), tau, sim)
            total = total + mc.lambda_sl * l_sl
            parts["sl"] = l_sl.detach()
        if use_ssl_plus:
            # weights: Eq. 9's flat l_cl+ L_cl+ + l_cl- L_cl-, or Eq. 6's nested
            # l_cl+ (L_cl+ + l_cl- L_cl-) (MethodConfig.guided_weights)
            z1, z2 = rest.pop(0), rest.pop(0)
            l_pos = l_neg = None
            if weights["cl+"] > 0:
                l_pos = pair_nce(z1, z2, tau, sim)
                parts["cl+"] = l_pos.detach()
            if use_cl_neg:
                zn = rest.pop(0)
                positives = torch.cat([z1, z2])
                valid = lengths >= mc.neg_min_length if mc.neg_min_length > 1 else None
                l_neg = (negative_view_loss(zn, positives, tau, sim, valid) if mc.neg_loss == "paper"
                         else negative_view_supcon(zn, positives, mc.neg_tau, sim, valid))
                parts["cl-"] = l_neg.detach()
            if mc.ssl_weighting == "nested" and l_pos is not None and l_neg is not None:
                total = total + mc.lambda_cl_pos * (l_pos + mc.lambda_cl_neg * l_neg)
            else:
                total = total + sum(w * l for w, l in ((weights["cl+"], l_pos), (weights["cl-"], l_neg))
                                    if l is not None)
        if use_sl_plus:
            l_slp = pair_nce(sl_anchor, rest.pop(0), tau, sim)
            total = total + weights["sl+"] * l_slp
            parts["sl+"] = l_slp.detach()
        return total, parts

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
