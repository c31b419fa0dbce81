"""The hot-path kernels compute what the plain PyTorch code computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ec4srec.data.batches import eval_order, make_batch
from ec4srec.data.io import RawSequences
from ec4srec.data.split import leave_one_out
from ec4srec.evaluate import compute_ranks, ranks_from_scores
from ec4srec.methods.base import rec_loss
from ec4srec.models import GRU4Rec, SASRec
from ec4srec.models.fast_ops import full_softmax_ce


def reference_ce(h, weight, targets, offset, num):
    return F.cross_entropy(h @ weight[offset:offset + num].T, targets)


@pytest.mark.parametrize("B,N,d,chunk", [(37, 101, 8, 16), (5, 7, 3, 64), (64, 50, 16, 64),
                                         (1, 4, 2, 1)])
def test_full_softmax_ce_loss_and_gradients_match_cross_entropy(B, N, d, chunk):
    gen = torch.Generator().manual_seed(B * 1000 + N)
    weight = (torch.randn(N + 2, d, generator=gen) * 2).requires_grad_()
    h = (torch.randn(B, d, generator=gen) * 3).requires_grad_()
    targets = torch.randint(0, N, (B,), generator=gen)
    ref = reference_ce(h, weight, targets, 1, N)
    ref_grads = torch.autograd.grad(1.7 * ref, (h, weight))
    out = full_softmax_ce(h, weight, targets, offset=1, num=N, chunk=chunk)
    grads = torch.autograd.grad(1.7 * out, (h, weight))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert grads[1][0].abs().max() == 0 and grads[1][N + 1].abs().max() == 0


def test_full_softmax_ce_extreme_logits_and_partial_requires_grad():
    weight = torch.randn(30, 4) * 40                       # logits of hundreds: no overflow
    h = (torch.randn(9, 4) * 40).requires_grad_()
    targets = torch.randint(0, 30, (9,))
    ref = reference_ce(h, weight, targets, 0, 30)
    out = full_softmax_ce(h, weight, targets, chunk=4)     # weight does not require grad
    assert torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(torch.autograd.grad(out, h)[0], torch.autograd.grad(ref, h)[0],
                               rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(full_softmax_ce(h, weight, targets), ref.detach(),
                                   rtol=1e-6, atol=1e-4)


def test_full_softmax_ce_rejects_out_of_range_targets():
    with pytest.raises(IndexError):
        full_softmax_ce(torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 5]))


@pytest.mark.parametrize("model_cls", [SASRec, GRU4Rec])
def test_rec_loss_equals_plain_cross_entropy_with_model_gradients(model_cls):
    torch.manual_seed(0)
    model = model_cls(40, 10) if model_cls is SASRec else model_cls(40)
    model.eval()
    items = torch.randint(1, 41, (6, 10))
    lengths = torch.full((6,), 10)
    targets = torch.randint(1, 41, (6,))
    plain = F.cross_entropy(model.scores(model(items, lengths)), targets - 1)
    plain_grads = torch.autograd.grad(plain, list(model.parameters()), allow_unused=True)
    fast = rec_loss(model, model(items, lengths), targets)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    for got, want in zip(fast_grads, plain_grads):
        if want is None:
            assert got is None or got.abs().max() == 0
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def reference_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The definition, one row at a time: 1 + #strictly higher + #other items tied."""
    out = []
    for row, target in zip(scores, targets):
        t = row[target - 1]
        others = torch.cat([row[:target - 1], row[target:]])
        out.append(1 + int((others > t).sum()) + int((others == t).sum()))
    return torch.tensor(out)


def test_ranks_from_scores_matches_reference_with_ties_and_infinities():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (50, 12), generator=gen).float()     # many ties
    scores[0] = 1.0                                                    # all tied: worst rank
    scores[1, :5] = float("-inf")
    targets = torch.randint(1, 13, (50,), generator=gen)
    targets[1] = 2                                                     # a -inf target
    got = ranks_from_scores(scores, targets)
    assert got.tolist() == reference_ranks(scores, targets).tolist()
    assert got[0] == 12


def _old_compute_ranks(model, data, examples, batch_size, mask_history):
    """The pre-optimisation compute_ranks: full score matrix, two comparison passes."""
    model.eval()
    ranks = np.empty(len(examples), dtype=np.int64)
    with torch.no_grad():
        for rows in eval_order(examples.length, batch_size):
            batch = make_batch(data.items, examples, rows)
            scores = model.scores(model(batch.items, batch.lengths))
            if mask_history:
                seen = torch.zeros(scores.shape[0], scores.shape[1] + 1, dtype=torch.bool)
                seen.scatter_(1, batch.items, True)
                scores.masked_fill_(seen[:, 1:], float("-inf"))
            t = scores.gather(1, (batch.targets - 1).view(-1, 1))
            ranks[rows] = (1 + (scores > t).sum(1) + (scores == t).sum(1) - 1).numpy()
    return ranks


@pytest.mark.parametrize("mask_history", [False, True])
def test_compute_ranks_equals_unchunked_reference(mask_history, monkeypatch):
    import ec4srec.evaluate as ev
    monkeypatch.setattr(ev, "SCORE_CHUNK", 7)              # several chunks per batch
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice(np.arange(1, 31), rng.integers(4, 12), replace=False))
            for _ in range(40)]
    data = leave_one_out(RawSequences.from_lists(seqs), 10)
    torch.manual_seed(0)
    model = SASRec(30, 10)
    with torch.no_grad():                                  # coarse weights: many exact ties
        model.item_emb.weight.copy_(torch.randint(-1, 2, model.item_emb.weight.shape).float())
    model.train()
    got = compute_ranks(model, data, data.test, batch_size=16, mask_history=mask_history)
    assert model.training                                  # mode restored
    want = _old_compute_ranks(model, data, data.test, 16, mask_history)
    assert got.tolist() == want.tolist()
