from __future__ import annotations

import numpy as np
import pytest

from ec4srec.config import DataConfig
from ec4srec.data import load_dataset
from ec4srec.data.synthetic import HISTORY, generate

SIGNAL, NEXT, NOISE = 40, 60, 300          # generate()'s default pool sizes


def users(data):
    raw = data.raw
    return [raw.items[raw.offsets[u]:raw.offsets[u + 1]] for u in range(len(raw.lengths))]


def test_deterministic_for_seed():
    a, b, c = generate(seed=3), generate(seed=3), generate(seed=4)
    # The same seed gives identical sequences, important positions and patterns.
    assert np.array_equal(a.raw.items, b.raw.items)
    assert np.array_equal(a.important, b.important) and np.array_equal(a.pattern, b.pattern)
    # A different seed gives different data.
    assert not np.array_equal(a.raw.items, c.raw.items)


def test_shape():
    data = generate(seed=0)
    # 500 users, each with 10 history items + 3 next items, 3 important positions each.
    assert len(data.raw.lengths) == 500 and (data.raw.lengths == 13).all()
    assert data.important.shape == (500, 3) and data.pattern.shape == (500,)
    # Item ids span signal + next + noise pools.
    assert data.raw.num_items == SIGNAL + NEXT + NOISE


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_important_positions_hold_signal_items(seed):
    data = generate(seed=seed)
    for u, seq in enumerate(users(data)):
        history = seq[:HISTORY]
        imp = data.important[u]
        rest = np.setdiff1d(np.arange(HISTORY), imp)
        # Important positions are sorted, distinct and inside the history.
        assert list(imp) == sorted(set(imp.tolist())) and imp.max() < HISTORY
        # They hold exactly the signal items (ids 1..S); every other history item is noise.
        assert ((history[imp] >= 1) & (history[imp] <= SIGNAL)).all()
        assert (history[rest] > SIGNAL + NEXT).all()
        # The 3 next items come from the next-item pool, never from signal or noise ids.
        assert ((seq[HISTORY:] > SIGNAL) & (seq[HISTORY:] <= SIGNAL + NEXT)).all()
        # No item repeats within a user (the data format forbids it).
        assert len(set(seq.tolist())) == len(seq)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_next_items_are_function_of_important_items(seed):
    data = generate(seed=seed)
    by_pattern: dict[int, tuple] = {}
    by_signal: dict[frozenset, frozenset] = {}
    for u, seq in enumerate(users(data)):
        signal = frozenset(seq[data.important[u]].tolist())
        nxt = frozenset(seq[HISTORY:].tolist())
        # Users with the same pattern share the same signal set and the same 3 next items.
        assert by_pattern.setdefault(int(data.pattern[u]), (signal, nxt)) == (signal, nxt)
        # The next-item set is determined by the important items alone.
        assert by_signal.setdefault(signal, nxt) == nxt


def test_load_dataset_synthetic():
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_seed=2))
    # dataset=synthetic generates with data.synthetic_seed and keeps the ground truth.
    assert ds.synthetic is not None and np.array_equal(ds.raw.items, generate(seed=2).raw.items)
    # Each user has 10 training rows (targets at history positions 1..9 plus the first next item).
    assert len(ds.split.train) == 500 * 10 and len(ds.split.valid) == len(ds.split.test) == 500
