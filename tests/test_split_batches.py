from __future__ import annotations

import numpy as np
import pytest

from ec4srec.data.batches import eval_order, gather_histories, make_batch, train_order
from ec4srec.data.io import RawSequences
from ec4srec.data.split import Examples, leave_one_out
from ec4srec.data.synthetic import generate

from conftest import random_sequences

SEQS = [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12]]


def rows(split, examples: Examples):
    """(user, history list, target) per example, via the public batch builder."""
    batch = make_batch(split.items, examples, np.arange(len(examples)))
    out = []
    for i in range(len(examples)):
        n = int(batch.lengths[i])
        out.append((int(examples.user[i]), batch.items[i, :n].tolist(), int(batch.targets[i])))
    return out


def test_exact_rows():
    split = leave_one_out(RawSequences.from_lists(SEQS), max_len=50)
    # Training rows are every prefix predicting the next item, up to the item before validation.
    assert rows(split, split.train) == [
        (0, [1], 2), (0, [1, 2], 3),
        (2, [9], 10),
    ]
    # Validation: history = all but the last two items, target = second-to-last.
    assert rows(split, split.valid) == [(0, [1, 2, 3], 4), (1, [6], 7), (2, [9, 10], 11)]
    # Test: history = all but the last item (validation item included), target = last.
    assert rows(split, split.test) == [(0, [1, 2, 3, 4], 5), (1, [6, 7], 8), (2, [9, 10, 11], 12)]
    # targets() reads the target item of each example.
    assert split.targets(split.test).tolist() == [5, 8, 12]
    assert split.num_users == 3 and split.num_items == 12


def test_max_len_keeps_last_items():
    split = leave_one_out(RawSequences.from_lists(SEQS), max_len=2)
    # Truncated histories keep the most recent max_len items.
    assert rows(split, split.test) == [(0, [3, 4], 5), (1, [6, 7], 8), (2, [10, 11], 12)]
    assert rows(split, split.train) == [(0, [1], 2), (0, [1, 2], 3), (2, [9], 10)]
    # No history is longer than max_len.
    assert max(split.train.length.max(), split.valid.length.max(), split.test.length.max()) <= 2


@pytest.mark.parametrize("raw", [
    RawSequences.from_lists(SEQS),
    RawSequences.from_lists(random_sequences(num_users=60, num_items=40, min_len=3, max_len=20, seed=5)),
    generate(seed=1).raw,
], ids=["hand", "random", "synthetic"])
def test_no_eval_target_among_training_targets(raw):
    split = leave_one_out(raw, max_len=5)
    lengths, offsets = raw.lengths, raw.offsets
    train = set(zip(split.train.user.tolist(), (split.train.end - offsets[split.train.user]).tolist()))
    valid = set(zip(split.valid.user.tolist(), (split.valid.end - offsets[split.valid.user]).tolist()))
    test = set(zip(split.test.user.tolist(), (split.test.end - offsets[split.test.user]).tolist()))
    # No validation or test (user, position) is ever a training target.
    assert not (train & valid) and not (train & test) and not (valid & test)
    # Valid/test are each user's second-to-last / last positions.
    assert valid == {(u, int(n) - 2) for u, n in enumerate(lengths)}
    assert test == {(u, int(n) - 1) for u, n in enumerate(lengths)}
    # Training covers every other position except the first (n - 3 rows per user).
    assert len(train) == len(split.train) == int(np.maximum(lengths - 3, 0).sum())
    # Every example's history ends right before its target and stays within its user.
    for ex in (split.train, split.valid, split.test):
        assert ((ex.end - ex.length) >= offsets[ex.user]).all() and (ex.length >= 1).all()


def test_gather_histories_right_pads_with_zero():
    items = np.array([5, 6, 7, 8, 9], dtype=np.int64)
    out = gather_histories(items, end=np.array([3, 1, 5]), length=np.array([3, 1, 2]))
    # Histories are left-aligned, right-padded with 0, as wide as the longest.
    assert out.tolist() == [[5, 6, 7], [5, 0, 0], [8, 9, 0]]


@pytest.mark.parametrize("batch_size, bucket", [(7, 1), (7, 4), (64, 64), (1, 2)])
def test_train_order_every_row_once_and_trimmed(batch_size, bucket):
    raw = RawSequences.from_lists(random_sequences(num_users=50, num_items=40, min_len=3,
                                                   max_len=25, seed=2))
    split = leave_one_out(raw, max_len=10)
    order = train_order(split.train.length, batch_size, np.random.default_rng(0), bucket)
    flat = np.concatenate(order)
    # Every training row appears exactly once per epoch.
    assert np.array_equal(np.sort(flat), np.arange(len(split.train)))
    # Batches hold at most batch_size rows.
    assert all(1 <= len(b) <= batch_size for b in order)
    for b in order:
        batch = make_batch(split.items, split.train, b)
        # Each batch is trimmed to its longest history, which has a real last item.
        assert batch.items.shape[1] == int(split.train.length[b].max())
        assert (batch.items[:, -1] != 0).any()
        # Padding is exactly the columns past each row's length.
        pad = np.arange(batch.items.shape[1])[None, :] >= batch.lengths.numpy()[:, None]
        assert ((batch.items.numpy() == 0) == pad).all()
        # Rows and targets index back into the examples.
        assert np.array_equal(batch.rows.numpy(), b)
        assert np.array_equal(batch.targets.numpy(), split.items[split.train.end[b]])


def test_train_order_deterministic_and_shuffled():
    lengths = np.arange(1, 201) % 9 + 1
    a = train_order(lengths, 16, np.random.default_rng(1), 4)
    b = train_order(lengths, 16, np.random.default_rng(1), 4)
    c = train_order(lengths, 16, np.random.default_rng(2), 4)
    # The same generator state gives the same epoch order; another gives a different one.
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_eval_order_covers_all_rows():
    lengths = np.array([5, 1, 3, 3, 2, 9, 1])
    order = eval_order(lengths, 3)
    # Every evaluation row appears exactly once, in batches of at most batch_size.
    assert sorted(np.concatenate(order).tolist()) == list(range(7))
    assert [len(b) for b in order] == [3, 3, 1]
