from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ec4srec.config import ModelConfig
from ec4srec.data.io import RawSequences
from ec4srec.data.split import leave_one_out
from ec4srec.evaluate import (compute_ranks, evaluate, metrics_from_ranks, ranks_from_scores,
                              unseen_ranks)
from ec4srec.models import build_model

from conftest import random_sequences


def test_ranks_from_scores_pessimistic_ties():
    scores = torch.tensor([
        [0.5, 0.9, 0.5, 0.1],    # target item 1 (0.5): one higher, one tie -> rank 3
        [0.5, 0.9, 0.5, 0.1],    # target item 2 (0.9): best, no tie -> rank 1
        [0.2, 0.2, 0.2, 0.2],    # target item 4, all equal -> worst rank 4
        [0.0, 1.0, 2.0, 3.0],    # target item 1: three higher -> rank 4
        [3.0, 1.0, 1.0, 0.0],    # target item 3: one higher, one tie -> rank 3
    ])
    targets = torch.tensor([1, 2, 4, 1, 3])
    # rank = 1 + #higher + #other items tied with the target.
    assert ranks_from_scores(scores, targets).tolist() == [3, 1, 4, 4, 3]


def test_metrics_from_ranks_hand_computed():
    m = metrics_from_ranks(torch.tensor([1, 3, 7, 25]))
    # HR@K is the share of ranks <= K.
    assert (m["hr@5"], m["hr@10"], m["hr@20"]) == (0.5, 0.75, 0.75)
    # NDCG@K averages 1/log2(rank+1) over hits (0 for misses).
    assert m["ndcg@5"] == pytest.approx((1 + 1 / 2) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)
    assert m["ndcg@20"] == pytest.approx(m["ndcg@10"])


def test_metrics_from_tied_score_matrix():
    scores = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0],     # target 1 ties with item 2 -> rank 2
                           [0.0] * 6])                         # all tied -> rank 6
    ranks = ranks_from_scores(scores, torch.tensor([1, 3]))
    m = metrics_from_ranks(ranks, ks=(1, 5, 6))
    # A target tied with one other item is not a hit at K=1 (ties count against it).
    assert m["hr@1"] == 0.0
    # At K=5 only the first user is a hit; a fully tied row reaches the worst rank 6.
    assert m["hr@5"] == 0.5 and m["ndcg@5"] == pytest.approx(0.5 / math.log2(3))
    assert m["hr@6"] == 1.0 and m["ndcg@6"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(7)) / 2)


class FixedScores(nn.Module):
    """Scores item j as j regardless of history (item N is best)."""

    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = num_items

    def forward(self, items, lengths):
        return torch.zeros(items.shape[0], 1)

    def scores(self, h):
        return torch.arange(1, self.num_items + 1, dtype=torch.float).repeat(h.shape[0], 1)


def test_unseen_protocol_removes_whole_history_and_counts_seen_target_as_miss():
    # User 0: items 5, 6, 2, 3, 4 with max_len 2: the test history kept for the encoder is
    # [2, 3], but the whole known history 5, 6, 2, 3 leaves the ranking. Target 4.
    # User 1: items 1, 6, 2, 6: the test target 6 was seen before (a repeat): a miss.
    split = leave_one_out(RawSequences.from_lists([[5, 6, 2, 3, 4], [1, 6, 2, 6]]), max_len=2)
    model = FixedScores(6)
    ranks = compute_ranks(model, split, split.test, protocols=True)
    # All items: scores are the item ids, so item 4 is outranked by 5, 6 (rank 3); 6 is first.
    assert ranks["all"].tolist() == [3, 1]
    # Unseen: 5 and 6 are removed for user 0 although they lie beyond max_len (rank 1); user 1's
    # target was seen, so its rank is the worst, N = 6.
    assert ranks["unseen"].tolist() == [1, 6]
    # Neither user's top item (6, 6) is its last history item (3 and 2).
    assert ranks["last_top1"].tolist() == [0, 0]


def test_unseen_ranks_ties_and_duplicates():
    # Scores over 5 items; target 3 scores 0.5, tied with item 1 and below item 5.
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.2, 0.9]])
    targets = torch.tensor([3])
    ranks = ranks_from_scores(scores, targets)
    # Pessimistic ties: items 1 and 5 and the target itself -> rank 3.
    assert ranks.tolist() == [3]
    # History 1, 1, 5 (item 1 twice, padding 0): each removed item counts once -> rank 1.
    got = unseen_ranks(scores, targets, ranks, torch.tensor([[1, 0, 1, 5]]))
    assert got.tolist() == [1]
    # A history holding only the tied item 1 removes the tie -> rank 2.
    got = unseen_ranks(scores, targets, ranks, torch.tensor([[1]]))
    assert got.tolist() == [2]


def test_mask_history_removes_history_items():
    # User 0: items 5, 6, 2, 3 -> test history [5, 6, 2], target 3.
    # User 1: items 1, 4, 6 -> test history [1, 4], target 6.
    split = leave_one_out(RawSequences.from_lists([[5, 6, 2, 3], [1, 4, 6]]), max_len=10)
    model = FixedScores(6)
    # Without masking, everything scored above the target outranks it.
    assert compute_ranks(model, split, split.test).tolist() == [4, 1]
    # With masking, history items (5 and 6 for user 0) are no longer candidates.
    assert compute_ranks(model, split, split.test, mask_history=True).tolist() == [2, 1]


def reference_metrics(model, split, examples, ks=(5, 10, 20), mask_history=False):
    """One user at a time, straight from the definitions, both protocols."""
    model.eval()
    ranks, unseen, last_top1 = [], [], []

    def rank_of(scores, item):
        target = scores[item - 1]
        return 1 + int((scores > target).sum()) + int((scores == target).sum()) - 1

    with torch.no_grad():
        for end, length, start in zip(examples.end, examples.length, examples.start):
            history = torch.as_tensor(split.items[end - length:end]).view(1, -1)
            scores = model.scores(model(history, torch.tensor([length])))[0]
            if mask_history:
                scores[history[0] - 1] = -math.inf
            target = int(split.items[end])
            ranks.append(rank_of(scores, target))
            last_top1.append(rank_of(scores, int(history[0, -1])) == 1)
            seen = torch.as_tensor(split.items[start:end])
            if target in seen.tolist():
                unseen.append(len(scores))
            else:
                scores = scores.clone()
                scores[seen - 1] = -math.inf
                unseen.append(rank_of(scores, target))
    out = {}
    for suffix, values in (("", ranks), ("_unseen", unseen)):
        values = np.array(values, dtype=float)
        for k in ks:
            hit = values <= k
            out[f"hr@{k}{suffix}"] = hit.mean()
            out[f"ndcg@{k}{suffix}"] = np.where(hit, 1 / np.log2(values + 1), 0).mean()
    out["last_item_top1"] = float(np.mean(last_top1))
    return out


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "caser"])
@pytest.mark.parametrize("mask_history", [False, True])
def test_evaluate_matches_per_user_reference(backbone, mask_history):
    torch.manual_seed(0)
    raw = RawSequences.from_lists(random_sequences(num_users=30, num_items=12, min_len=3,
                                                   max_len=10, seed=3))
    split = leave_one_out(raw, max_len=6)
    cfg = ModelConfig(backbone=backbone, hidden_size=16, num_layers=1, num_heads=2, inner_size=32,
                      gru_hidden_size=16, caser_window=3, caser_nv=2, caser_nh=2, init_std=0.5)
    model = build_model(cfg, split.num_items, split.max_len)
    model.train()
    for examples in (split.valid, split.test):
        got = evaluate(model, split, examples, batch_size=7, mask_history=mask_history)
        want = reference_metrics(model, split, examples, mask_history=mask_history)
        # Batched, length-sorted evaluation equals the per-user definition.
        assert got == pytest.approx(want, abs=1e-9)
    model.train()
    evaluate(model, split, split.test)
    # evaluate() restores the model's training mode.
    assert model.training
