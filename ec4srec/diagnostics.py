"""``ec4srec diagnose``: how much room the explanation guidance has on a dataset, and what a
trained model's explainer actually scores.

Three reports; the first two on the training rows (the only rows the guided terms see):

- :func:`guidance_room` (data and method config only): how many rows get a guided view that
  is the anchor itself (k = 0 or a length-1 row, where ecrop+ and emask+, which act on at most
  |s| - 1 items, and erord+ change nothing; k <= 1: erord+, which permutes the k lowest items
  among themselves, changes nothing), how many are left out of
  L_cl- (``method.neg_min_length``), and for ertrl+ (Sec. 4.3) how many rows have no
  same-target partner (L_sl+ contrasts the row with itself), how many have partners of which
  none shares an item with the row (util = 0 for all: ertrl+ samples uniformly, i.e. it is
  DuoRec's rtrl) and how many have exactly one partner sharing an item (ertrl+ picks it
  whenever it is among the candidates).
  Overlap is counted over every partner; training samples at most
  ``method.retrieval_candidates`` of a larger group, so the shares of uniform fallback are
  lower bounds there.
- :func:`explainer_profile` (a trained model): on a seeded sample of training rows, the
  explained item y_u (``method.explain_target``: the model's predicted item or the row's
  target) and the Eq. 5 scores of ``method.explainer``: how often y_u is an item of the row's
  own history (and how often its last item), how often the highest-scored position is the
  last one (beside the chance 1/|s| that a random position is the last), and the mean score of
  the last position (beside 1/|s|, what uniform scores give it), over rows of length >= 2.
  ``explain_target=predicted_unseen`` explains the top item outside the row's history.
- :func:`recommendation_profile` (a trained model): the share of validation users whose top-1
  item is their own last item (a model that copies its input), and validation NDCG@10 under
  both protocols (evaluate.py).
"""
from __future__ import annotations

import numpy as np
import torch

from .data.batches import eval_order, gather_histories, make_batch
from .data.split import Examples, SplitData
from .evaluate import evaluate
from .explain import explain_batch, predicted_columns, predicted_unseen_items
from .methods.contrastive import lowest_count
from .methods.retrieval import PAIR_TABLE_LIMIT, SameTargetIndex


def _share(mask: np.ndarray | torch.Tensor) -> float:
    mask = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return round(float(mask.mean()), 6) if mask.size else 0.0


def guidance_room(data: SplitData, mc) -> dict:
    """Data-only shares over the training rows (fractions in [0, 1]); see the module doc.
    ``mc``: the run's MethodConfig (mu_e, k_counts, k_rounding, neg_min_length)."""
    lengths = torch.from_numpy(data.train.length.astype(np.int64))                # [R]
    k = lowest_count(lengths, mc)                                                 # [R]
    out = {"rows": int(len(lengths)),
           "length_1": _share(lengths == 1),
           # ecrop+/emask+ act on at most |s| - 1 items: a length-1 row's views are the anchor
           "k_zero": _share((k == 0) | (lengths == 1)),
           "reorder_identity": _share(k <= 1),
           "cl_neg_left_out": _share(lengths < mc.neg_min_length) if mc.neg_min_length > 1 else 0.0}
    index = SameTargetIndex(data.items, data.train)
    others = index.size - 1                                                       # [R]
    out["no_partner"] = _share(others == 0)
    if index.pair_count() > PAIR_TABLE_LIMIT:
        out["retrieval"] = f"not computed: {index.pair_count()} same-target pairs"
        return out
    # util > 0 exactly when a partner shares an item with the row (any positive scores will
    # do for the test: uniform ones here)
    ones = torch.ones(len(lengths), data.max_len)
    positive = index.util_table(ones) > 0                                         # [P]
    owner = torch.repeat_interleave(torch.arange(len(lengths)), others)           # [P]
    sharing = torch.bincount(owner[positive], minlength=len(lengths))             # [R]
    out["uniform_fallback"] = _share((others > 0) & (sharing == 0))
    out["one_sharing_partner"] = _share(sharing == 1)
    out["mean_partners"] = round(float(others.double().mean()), 3) if len(others) else 0.0
    return out


def explainer_profile(model, data: SplitData, mc, rows: int = 2000, seed: int = 0,
                      batch_size: int = 256, device: str | torch.device = "cpu") -> dict:
    """What ``mc.explainer`` scores for ``model`` on ``rows`` training rows drawn without
    replacement by ``seed`` (all rows when fewer); see the module doc. The model is put in
    eval mode for the call and restored."""
    train, device = data.train, torch.device(device)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(rows, len(train)), replace=False))
    sample = Examples(end=train.end[pick], length=train.length[pick], user=train.user[pick],
                      start=train.history_start()[pick])
    in_history, is_last, is_target, top_last, last_score, chance = [], [], [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for part in eval_order(sample.length, batch_size):
            batch = make_batch(data.items, sample, part).to(device)
            items, lengths = batch.items, batch.lengths                           # [B, L], [B]
            if mc.explain_target == "target":
                explained = batch.targets
            elif mc.explain_target == "predicted_unseen":
                seen = torch.from_numpy(gather_histories(
                    data.items, sample.end[part], sample.end[part] - sample.start[part])).to(device)
                explained = predicted_unseen_items(model, items, lengths, seen)
            else:
                with torch.no_grad():
                    h = model.encode_embedded(model.embed_items(items), lengths)  # [B, d]
                    explained = predicted_columns(model, h) + 1                   # item ids [B]
            scores = explain_batch(model, items, lengths, mc.explainer, explained, mc.ig_steps,
                                   batch_size, mc.occlusion_sign)                  # [B, L]
            in_history.append((items == explained.unsqueeze(1)).any(1).cpu())
            last_item = items.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)           # [B]
            is_last.append((explained == last_item).cpu())
            is_target.append((explained == batch.targets).cpu())
            many = lengths >= 2
            last = lengths - 1
            top = scores.argmax(1)                   # ties: the earliest position
            top_last.append((top == last)[many].cpu())
            last_score.append(scores.gather(1, last.unsqueeze(1)).squeeze(1)[many].cpu())
            chance.append((1.0 / lengths[many].double()).cpu())
    finally:
        model.train(was_training)
    cat = lambda parts: torch.cat(parts) if parts else torch.zeros(0)             # noqa: E731
    chance_t = cat(chance)
    return {"rows": int(len(pick)), "rows_length_2_plus": int(len(chance_t)),
            "explainer": mc.explainer, "explain_target": mc.explain_target,
            "explained_in_history": _share(cat(in_history)),
            "explained_is_last_item": _share(cat(is_last)),
            "explained_is_target": _share(cat(is_target)),
            "top_is_last": _share(cat(top_last)),
            "top_is_last_chance": round(float(chance_t.mean()), 6) if len(chance_t) else 0.0,
            "last_score": round(float(cat(last_score).double().mean()), 6) if len(chance_t) else 0.0,
            "last_score_uniform": round(float(chance_t.mean()), 6) if len(chance_t) else 0.0}


def recommendation_profile(model, data: SplitData, batch_size: int = 1024,
                           device: str | torch.device = "cpu") -> dict:
    """What the model recommends to the validation users: the share whose top-1 item (all
    items) is their own last item, and validation NDCG@10 under both protocols."""
    metrics = evaluate(model, data, data.valid, batch_size, device=device)
    return {"valid_users": int(len(data.valid)), "top1_is_last_item": round(metrics["last_item_top1"], 6),
            "ndcg@10": round(metrics["ndcg@10"], 6), "ndcg@10_unseen": round(metrics["ndcg@10_unseen"], 6)}


LABELS = {
    "top1_is_last_item": "validation users whose top-1 (all items) is their own last item",
    "ndcg@10": "validation NDCG@10, all items",
    "ndcg@10_unseen": "validation NDCG@10, unseen items (history removed)",
    "length_1": "training rows of length 1",
    "k_zero": "k = 0 or length 1: ecrop+/emask+/erord+ views equal the anchor",
    "reorder_identity": "k <= 1: erord+ view equals the anchor",
    "cl_neg_left_out": "left out of L_cl- (shorter than neg_min_length)",
    "no_partner": "no same-target partner (L_sl+ pairs the row with itself)",
    "uniform_fallback": "partners, none sharing an item: ertrl+ = uniform rtrl",
    "one_sharing_partner": "exactly one partner shares an item: ertrl+ picks it if drawn",
    "explained_in_history": "explained item y_u is in the row's own history",
    "explained_is_last_item": "explained item y_u is the row's last item",
    "explained_is_target": "explained item y_u is the row's target",
    "top_is_last": "highest-scored position is the last (length >= 2)",
    "last_score": "mean score of the last position (length >= 2)",
}


def format_report(report: dict) -> str:
    """Plain-text lines of a :func:`guidance_room` / :func:`explainer_profile` report."""
    lines = []
    for section, values in report.items():
        if not isinstance(values, dict):
            lines.append(f"{section}: {values}")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key.endswith(("_uniform", "_chance")):
                continue
            label = LABELS.get(key, key.replace("_", " "))
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            if f"{key}_chance" in values:
                shown += f"   (a random position: {values[f'{key}_chance']:.4f})"
            elif f"{key}_uniform" in values:
                shown += f"   (uniform scores: {values[f'{key}_uniform']:.4f})"
            lines.append(f"  {label:<62} {shown}")
    return "\n".join(lines)
