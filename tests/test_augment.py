"""Property tests of the batched augmentations against per-row Python references."""
from __future__ import annotations

import math

import pytest
import torch

from ec4srec.methods import augment as A

MASK = 999
SEEDS = range(12)


def make_batch(seed: int, batch: int = 24, width: int = 15, max_len: int = 12):
    """Rows of distinct item ids (so an item identifies its position), lengths 1..max_len,
    scores with garbage (very low, NaN-free) values at padding, k in [0, n + 1]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    lengths[0], lengths[1] = 1, max_len                         # always cover the extremes
    items = torch.zeros(batch, width, dtype=torch.long)
    for b, n in enumerate(lengths.tolist()):
        items[b, :n] = torch.randperm(200, generator=g)[:n] + 1
    # coarse scores so ties occur; padding gets -1e9 which must be ignored
    scores = torch.randint(0, 4, (batch, width), generator=g).float() / 4
    scores[~A.real_mask(items, lengths)] = -1e9
    k = (torch.rand(batch, generator=g) * (lengths + 2)).long()
    return items, lengths, scores, k


def rows(items, lengths):
    return [items[b, :n].tolist() for b, n in enumerate(lengths.tolist())]


def assert_layout(out, out_len, width):
    # shape kept, no empty view, padding is 0 beyond the new length
    assert out.shape[1] == width and out.dtype == torch.long
    assert (out_len >= 1).all()
    assert (out[~A.real_mask(out, out_len)] == 0).all()


def is_subsequence(sub, seq):
    it = iter(seq)
    return all(x in it for x in sub)


def ref_order(scores_row, n):
    """Least to most important; equal scores -> earlier position first."""
    return sorted(range(n), key=lambda i: (scores_row[i], i))


def test_compact_matches_reference():
    items, lengths, _, _ = make_batch(0)
    keep = (torch.rand(items.shape, generator=torch.Generator().manual_seed(1)) < 0.5)
    keep &= A.real_mask(items, lengths)
    out, out_len = A.compact(items, keep)
    for b in range(items.shape[0]):
        expect = items[b][keep[b]].tolist()
        # kept items, left-aligned, original order; the rest zero
        assert out[b, :out_len[b]].tolist() == expect and out_len[b] == len(expect)
        assert (out[b, out_len[b]:] == 0).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.6, 1.0])
def test_random_crop(seed, ratio):
    items, lengths, _, _ = make_batch(seed)
    out, out_len = A.random_crop(items, lengths, ratio, torch.Generator().manual_seed(seed))
    assert_layout(out, out_len, items.shape[1])
    for src, dst, n in zip(rows(items, lengths), rows(out, out_len), lengths.tolist()):
        # length max(1, floor(ratio n)); a contiguous window of the original
        assert len(dst) == max(1, math.floor(ratio * n))
        s = src.index(dst[0])
        assert src[s:s + len(dst)] == dst


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 1.0])
def test_random_mask(seed, ratio):
    items, lengths, _, _ = make_batch(seed)
    out, out_len = A.random_mask(items, lengths, ratio, MASK, torch.Generator().manual_seed(seed))
    assert_layout(out, out_len, items.shape[1])
    # length unchanged
    assert torch.equal(out_len, lengths)
    for src, dst, n in zip(rows(items, lengths), rows(out, lengths), lengths.tolist()):
        # exactly min(floor(ratio n), n - 1) masks; every other position untouched
        assert dst.count(MASK) == min(math.floor(ratio * n), n - 1)
        assert all(d == s for s, d in zip(src, dst) if d != MASK)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 1.0])
def test_random_reorder(seed, ratio):
    items, lengths, _, _ = make_batch(seed)
    out, out_len = A.random_reorder(items, lengths, ratio, torch.Generator().manual_seed(seed))
    assert_layout(out, out_len, items.shape[1])
    # length unchanged
    assert torch.equal(out_len, lengths)
    for src, dst, n in zip(rows(items, lengths), rows(out, lengths), lengths.tolist()):
        w = math.floor(ratio * n)
        # some window [s, s + w) holds the same items shuffled; outside it nothing moved
        assert any(src[:s] == dst[:s] and src[s + w:] == dst[s + w:]
                   and sorted(src[s:s + w]) == sorted(dst[s:s + w]) for s in range(n - w + 1))


def test_reorder_actually_shuffles():
    items, lengths, _, _ = make_batch(0, batch=64)
    out, _ = A.random_reorder(items, lengths, 1.0, torch.Generator().manual_seed(0))
    # with the whole sequence as window, long rows are (almost surely) not all left unchanged
    long = lengths >= 5
    assert (out[long] != items[long]).any(1).float().mean() > 0.5


def test_rank_positions_ties_and_padding():
    scores = torch.tensor([[0.5, 0.5, 0.1, 0.5, -7.0], [0.3, 0.3, 0.3, 0.3, 0.3]])
    lengths = torch.tensor([4, 3])
    order = A.rank_positions(scores, lengths)
    # ascending score, equal scores -> earlier position first, padding last
    assert order[0].tolist() == [2, 0, 1, 3, 4]
    assert order[1].tolist() == [0, 1, 2, 3, 4]
    k = torch.tensor([2, 1])
    # lowest 2 of row 0 = positions 2, 0; highest 1 of row 1 = its LAST real position
    assert A.lowest_k_mask(scores, lengths, k)[0].nonzero().flatten().tolist() == [0, 2]
    assert A.highest_k_mask(scores, lengths, k)[1].nonzero().flatten().tolist() == [2]


@pytest.mark.parametrize("seed", SEEDS)
def test_rank_and_masks_match_reference(seed):
    items, lengths, scores, k = make_batch(seed)
    order = A.rank_positions(scores, lengths)
    low, high = A.lowest_k_mask(scores, lengths, k), A.highest_k_mask(scores, lengths, k)
    for b, n in enumerate(lengths.tolist()):
        ref = ref_order(scores[b].tolist(), n)
        kk = min(int(k[b]), n)
        # real positions ranked by (score, position); padding after them
        assert order[b, :n].tolist() == ref and sorted(order[b, n:].tolist()) == list(range(n, 15))
        # masks pick the kk ends of that order, real positions only
        assert set(low[b].nonzero().flatten().tolist()) == set(ref[:kk])
        assert set(high[b].nonzero().flatten().tolist()) == set(ref[n - kk:])


def test_guided_hand_example():
    items = torch.tensor([[11, 12, 13, 14, 0]])
    lengths = torch.tensor([4])
    scores = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0]])
    k = torch.tensor([2])
    pos, pos_len = A.ecrop_pos(items, lengths, scores, k)
    neg, neg_len = A.ecrop_neg(items, lengths, scores, k)
    # ecrop+ drops the 2 lowest (positions 0, 2); ecrop- keeps exactly them, in time order
    assert pos.tolist() == [[12, 14, 0, 0, 0]] and pos_len.tolist() == [2]
    assert neg.tolist() == [[11, 13, 0, 0, 0]] and neg_len.tolist() == [2]
    # emask+ masks the 2 lowest; emask- masks the 2 highest (positions 1, 3)
    assert A.emask_pos(items, lengths, scores, k, MASK)[0].tolist() == [[MASK, 12, MASK, 14, 0]]
    assert A.emask_neg(items, lengths, scores, k, MASK)[0].tolist() == [[11, MASK, 13, MASK, 0]]
    # equal scores: the earlier items are the less important ones
    flat = torch.full_like(scores, 0.25)
    assert A.ecrop_pos(items, lengths, flat, k)[0].tolist() == [[13, 14, 0, 0, 0]]


@pytest.mark.parametrize("seed", SEEDS)
def test_guided_ops_match_reference(seed):
    items, lengths, scores, k = make_batch(seed)
    g = torch.Generator().manual_seed(seed)
    cp, cp_len = A.ecrop_pos(items, lengths, scores, k)
    cn, cn_len = A.ecrop_neg(items, lengths, scores, k)
    mp, _ = A.emask_pos(items, lengths, scores, k, MASK)
    mn, _ = A.emask_neg(items, lengths, scores, k, MASK)
    rp, rp_len = A.erord_pos(items, lengths, scores, k, g)
    for out, out_len in ((cp, cp_len), (cn, cn_len), (mp, lengths), (mn, lengths), (rp, rp_len)):
        assert_layout(out, out_len, items.shape[1])
    for b, n in enumerate(lengths.tolist()):
        src, ref, kb = items[b, :n].tolist(), ref_order(scores[b].tolist(), n), int(k[b])
        low = lambda j: set(ref[:j])                                             # noqa: E731
        kp, kn = min(kb, n - 1), min(max(kb, 1), max(n - 1, 1))
        # ecrop+: the complement of the kp lowest, in time order
        assert cp[b, :cp_len[b]].tolist() == [src[i] for i in range(n) if i not in low(kp)]
        # ecrop-: exactly the kn lowest, in time order
        assert cn[b, :cn_len[b]].tolist() == [src[i] for i in range(n) if i in low(kn)]
        # emask+: masks exactly the kp lowest; emask-: the clamp(k, 1, n) highest
        assert [i for i in range(n) if mp[b, i] == MASK] == sorted(low(kp))
        kh = min(max(kb, 1), n)
        assert [i for i in range(n) if mn[b, i] == MASK] == sorted(ref[n - kh:])
        # erord+: same length, only the min(k, n) lowest positions may change, same multiset there
        sel = sorted(low(min(kb, n)))
        dst = rp[b, :n].tolist()
        assert rp_len[b] == n and all(dst[i] == src[i] for i in range(n) if i not in sel)
        assert sorted(dst[i] for i in sel) == sorted(src[i] for i in sel)


def test_two_distinct_covers_all_pairs():
    a, b = A._two_distinct(3000, 3, torch.Generator().manual_seed(0), torch.device("cpu"))
    # never the same op twice; all 6 ordered pairs occur
    assert (a != b).all()
    assert len(set(zip(a.tolist(), b.tolist()))) == 6


@pytest.mark.parametrize("seed", SEEDS)
def test_two_random_views_use_different_ops(seed):
    items, lengths, _, _ = make_batch(seed)
    v1, l1, v2, l2 = A.two_random_views(items, lengths, ["crop", "mask"], 0.5, 0.5, 0.6, MASK,
                                        torch.Generator().manual_seed(seed))
    assert_layout(v1, l1, items.shape[1])
    assert_layout(v2, l2, items.shape[1])
    for b, n in enumerate(lengths.tolist()):
        if n >= 2:
            crop_first = bool(l1[b] < n)
            # one view is the crop (shorter, no mask), the other the mask (full length, masked)
            c, m = ((v1, l1), (v2, l2)) if crop_first else ((v2, l2), (v1, l1))
            assert c[1][b] == max(1, n // 2) and (c[0][b] != MASK).all()
            assert m[1][b] == n and (m[0][b] == MASK).sum() == n // 2


@pytest.mark.parametrize("seed", SEEDS)
def test_two_guided_views_use_different_ops(seed):
    items, lengths, scores, k = make_batch(seed)
    k = torch.maximum(k, torch.ones_like(k))
    g = torch.Generator().manual_seed(seed)
    v1, l1, v2, l2 = A.two_guided_views(items, lengths, scores, k, ("ecrop", "emask"),
                                        mask_token=MASK, generator=g)
    cp, cp_len = A.ecrop_pos(items, lengths, scores, k)
    mp, _ = A.emask_pos(items, lengths, scores, k, MASK)
    key = lambda v, n, b: (tuple(v[b].tolist()), int(n[b]))                     # noqa: E731
    for b in range(items.shape[0]):
        # the two (deterministic) views of each row are ecrop+ and emask+, one each
        assert {key(v1, l1, b), key(v2, l2, b)} == {key(cp, cp_len, b), key(mp, lengths, b)}


def test_one_negative_view_picks_each_op():
    items, lengths, scores, k = make_batch(3, batch=64)
    out, out_len = A.one_negative_view(items, lengths, scores, k, mask_token=MASK,
                                       generator=torch.Generator().manual_seed(0))
    cn, cn_len = A.ecrop_neg(items, lengths, scores, k)
    mn, _ = A.emask_neg(items, lengths, scores, k, MASK)
    is_crop = (out == cn).all(1) & (out_len == cn_len)
    is_mask = (out == mn).all(1) & (out_len == lengths)
    # every row is one of the two negative views, and both ops are used
    assert (is_crop | is_mask).all()
    assert (is_crop & ~is_mask).any() and (is_mask & ~is_crop).any()


def _all_views(items, lengths, scores, k, seed):
    g = torch.Generator().manual_seed(seed)
    return [A.random_crop(items, lengths, 0.6, g), A.random_mask(items, lengths, 0.3, MASK, g),
            A.random_reorder(items, lengths, 0.6, g), A.erord_pos(items, lengths, scores, k, g),
            A.two_random_views(items, lengths, list(A.RANDOM_OPS), 0.6, 0.3, 0.6, MASK, g),
            A.two_guided_views(items, lengths, scores, k, mask_token=MASK, generator=g),
            A.one_negative_view(items, lengths, scores, k, mask_token=MASK, generator=g),
            A.ecrop_pos(items, lengths, scores, k), A.ecrop_neg(items, lengths, scores, k),
            A.emask_pos(items, lengths, scores, k, MASK),
            A.emask_neg(items, lengths, scores, k, MASK)]


def test_same_seed_same_views():
    batch = make_batch(5, batch=64)
    first, again, other = (_all_views(*batch, s) for s in (7, 7, 8))
    # identical seeds reproduce every output; another seed changes the random ones
    assert all(torch.equal(x, y) for a, b in zip(first, again) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for a, b in zip(first[:7], other[:7]) for x, y in zip(a, b))


def test_extra_padding_columns():
    items, lengths, scores, k = make_batch(2, width=20, max_len=5)
    for out in _all_views(items, lengths, scores, k, 0):
        # every view keeps the width, has length >= 1 and zero padding, even far past max(n)
        for view, view_len in zip(out[0::2], out[1::2]):
            assert_layout(view, view_len, 20)
            assert (view[:, 5:] == 0).all()


def test_invalid_ops_rejected():
    items, lengths, scores, k = make_batch(0)
    # one op, a duplicate or an unknown name cannot make two different views
    for ops in (["crop"], ["crop", "crop"], ["crop", "shuffle"]):
        with pytest.raises(ValueError):
            A.two_random_views(items, lengths, ops, 0.6, 0.3, 0.6, MASK)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_cpu_generator():
    batch = make_batch(4, batch=64)
    cpu = _all_views(*batch, 11)
    gpu = _all_views(*(t.cuda() for t in batch), 11)
    # a CPU generator gives the same views on CUDA inputs, returned on the CUDA device
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            assert y.is_cuda and torch.equal(x, y.cpu())
