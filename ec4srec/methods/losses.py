"""Contrastive losses of Eqs. 3, 4, 6 and 8, batched, with in-batch negatives.

Shared conventions (docs/methods.md, "Contrastive terms"):
- sim(a, b) is a raw dot product (``kind="dot"``, upstream's) or cosine (``kind="cosine"``);
  every term is divided by the temperature tau, also Eq. 3 and L_cl+, which print none (Eqs. 4
  and 8 do). Callers pass both; the defaults live in the config only (method.similarity=cosine,
  method.tau=0.2; the paper's regime is dot and 1.0).
- ``pair_nce`` is the symmetric InfoNCE over 2B views: each of the 2B views has one positive
  (its partner) and 2B - 2 negatives (all other views in the batch). Per-view terms are
  averaged, i.e. L = (1 / 2B) * sum over views, which is Eq. 3 averaged over both directions and
  Eqs. 4/8 (a sum of two directions) divided by 2. The constant factor is absorbed in lambda.
  Same-target sequences are not removed from the negatives (as upstream).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """[n, d] x [m, d] -> [n, m]: dot products (``kind="dot"``) or cosines (``"cosine"``)."""
    if kind == "cosine":
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return a @ b.T


def pair_nce(z1: torch.Tensor, z2: torch.Tensor, tau: float, kind: str) -> torch.Tensor:
    """Symmetric InfoNCE for positive pairs (z1[i], z2[i]); z1, z2: [B, d] -> scalar.

    Used for L_cl (Eq. 3, CL4SRec), L_cl+ (two explanation-guided positive views), L_sl (Eq. 4,
    anchor vs retrieved) and L_sl+ (Eq. 8, anchor vs ertrl+ view).
    """
    B = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)                                    # [2B, d]
    logits = similarity(z, z, kind) / tau                             # [2B, 2B]
    logits = logits.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.arange(2 * B, device=z.device).add_(B).remainder_(2 * B)     # i <-> i + B
    return F.cross_entropy(logits, partner)


def _pair_mask(B: int, valid: torch.Tensor | None, device) -> torch.Tensor:
    """[B, B] bool: pairs (u, u'), u != u', both rows valid (``valid`` [B] bool or None = all)."""
    off_diag = ~torch.eye(B, dtype=torch.bool, device=device)
    return off_diag if valid is None else off_diag & valid.view(-1, 1) & valid.view(1, -1)


def negative_view_loss(neg: torch.Tensor, pos: torch.Tensor, tau: float, kind: str,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """L_cl- of Section 4.4.1; neg: [B, d] negative views, pos: [P, d] all positive views (S+).

    For each negative view n_u and each other negative view n_u' (u' != u):
        -log exp(sim(n_u, n_u')/tau) / (exp(sim(n_u, n_u')/tau) + sum_{s in S+} exp(sim(n_u, s)/tau))
    averaged over u' (the 1/(|S-| - 1) of the equation) and then over u. Negative views are
    pulled together and pushed away from every positive view. ``valid`` [B] bool (None = all)
    leaves rows out of S- (as anchor and as partner; S+ keeps every positive view): the trainer
    leaves out degenerate negative views (docs/methods.md). Needs >= 2 valid rows (else 0).
    """
    B = neg.shape[0]
    if B < 2:
        return neg.sum() * 0.0
    nn_logits = similarity(neg, neg, kind) / tau                      # [B, B]
    pos_lse = torch.logsumexp(similarity(neg, pos, kind) / tau, dim=1, keepdim=True)   # [B, 1]
    log_prob = nn_logits - torch.logaddexp(nn_logits, pos_lse)        # [B, B]
    pairs = _pair_mask(B, valid, neg.device)
    return -(log_prob * pairs).sum() / pairs.sum().clamp(min=1)


def negative_view_supcon(neg: torch.Tensor, pos: torch.Tensor, tau: float, kind: str,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Upstream's variant of L_cl- (``method.neg_loss=upstream``): supervised contrastive loss
    in which the B negative views form one class. For each negative view, every other negative
    view is a positive and the denominator runs over ALL other views (the other negative views
    and all positive views), at temperature ``neg_tau`` (0.1 upstream). ``valid`` as in
    :func:`negative_view_loss` (left-out rows are neither anchors nor in any denominator)."""
    B = neg.shape[0]
    if B < 2:
        return neg.sum() * 0.0
    z = torch.cat([neg, pos], dim=0)                                  # [B + P, d]
    logits = similarity(neg, z, kind) / tau                           # [B, B + P]
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:, :B] = torch.eye(B, dtype=torch.bool, device=neg.device)
    if valid is not None:
        self_mask[:, :B] |= ~valid.view(1, -1)
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), 1, keepdim=True)
    same_class = torch.zeros_like(self_mask)
    same_class[:, :B] = _pair_mask(B, valid, neg.device)
    return -(log_prob * same_class).sum() / same_class.sum().clamp(min=1)
