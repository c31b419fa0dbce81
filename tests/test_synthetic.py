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


# --------------------------------------------------------------------------- data.synthetic_split
def split_rows(split, examples):
    """(user, history, target) per example, read through the batch builder the trainer uses."""
    from ec4srec.data.batches import make_batch
    batch = make_batch(split.items, examples, np.arange(len(examples)))
    return [(int(examples.user[i]), batch.items[i, :int(batch.lengths[i])].tolist(),
             int(batch.targets[i])) for i in range(len(examples))]


def test_default_split_is_unchanged_prefixes():
    from ec4srec.data.split import leave_one_out
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_seed=1))
    ref = leave_one_out(generate(seed=1).raw, 50)
    # The default is still the every-prefix leave-one-out split.
    assert DataConfig().synthetic_split == "prefixes"
    # It addresses the generated sequences themselves (no copy) ...
    assert ds.split.items is ds.raw.items
    for name in ("train", "valid", "test"):
        a, b = getattr(ds.split, name), getattr(ref, name)
        # ... and its rows are exactly those of split.leave_one_out on them.
        assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("end", "length", "user"))
    # 10 training rows per user ...
    assert (np.bincount(ds.split.train.user) == 10).all()
    # ... of which one per user (the full 10-item history) predicts a next item.
    assert int((ds.split.train.length == HISTORY).sum()) == 500


@pytest.mark.parametrize("seed", [0, 3])
def test_paper_split_one_row_per_user_on_the_history(seed):
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_seed=seed, synthetic_split="paper"))
    split, seqs = ds.split, users(ds)
    for ex in (split.train, split.valid, split.test):
        # One training, one validation and one test example per user.
        assert len(ex) == 500 and (np.sort(ex.user) == np.arange(500)).all()
    for name, nxt in (("train", 0), ("valid", 1), ("test", 2)):
        for u, hist, target in split_rows(split, getattr(split, name)):
            # Every history is the user's 10 historical items, in order ...
            assert hist == seqs[u][:HISTORY].tolist()
            # ... and the targets are next items 1, 2, 3 for train, valid, test.
            assert target == int(seqs[u][HISTORY + nxt])
    # raw.offsets still address split.items (the users' full sequences come first).
    assert np.array_equal(split.items[:len(ds.raw.items)], ds.raw.items)


def test_paper_split_no_leakage():
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_split="paper"))
    split = ds.split
    train, valid, test = (split_rows(split, ex) for ex in (split.train, split.valid, split.test))
    seen = {}
    for u, hist, target in train:
        seen.setdefault(u, set()).update([*hist, target])
    next_items = {u: set(seq[HISTORY:].tolist()) for u, seq in enumerate(users(ds))}
    for (u, vhist, vt), (u2, thist, tt) in zip(sorted(valid), sorted(test)):
        # A user's validation and test targets never occur in its training rows.
        assert vt not in seen[u] and tt not in seen[u2]
        # The test history does not contain the validation target, nor vice versa.
        assert vt not in thist and tt not in vhist
        # No next item is ever part of a history (only the 10 historical items are).
        assert not next_items[u] & set(vhist) and not next_items[u2] & set(thist)
    # No training history holds a next item either.
    assert all(not next_items[u] & set(hist) for u, hist, _ in train)


def test_paper_split_max_len_keeps_last_items():
    ds = load_dataset(DataConfig(dataset="synthetic", synthetic_split="paper", max_len=4))
    seqs = users(ds)
    for ex in (ds.split.train, ds.split.valid, ds.split.test):
        # Histories keep the last max_len historical items, as in the prefix split.
        assert all(h == seqs[u][HISTORY - 4:HISTORY].tolist() for u, h, _ in split_rows(ds.split, ex))


def test_paper_split_rejects_other_shapes_and_datasets():
    from ec4srec.config import Config, ConfigError
    from ec4srec.data import DataError
    from ec4srec.data.io import RawSequences
    from ec4srec.data.synthetic import paper_split
    # A sequence that is not 10 + 3 items is a DataError naming the user.
    with pytest.raises(DataError, match="user 2 has 5"):
        paper_split(RawSequences.from_lists([list(range(1, 14)), [20, 21, 22, 23, 24]]), 50)
    # synthetic_split=paper on a real dataset (the default beauty) is a ConfigError ...
    with pytest.raises(ConfigError, match="data.synthetic_split.*needs data.dataset=synthetic"):
        Config().with_overrides(["data.synthetic_split=paper"])
    # ... and so is an unknown split name.
    with pytest.raises(ConfigError, match="data.synthetic_split must be one of"):
        Config().with_overrides(["data.dataset=synthetic", "data.synthetic_split=every"])


def test_paper_split_trains():
    from conftest import tiny_config
    from ec4srec.trainer import Trainer
    config = tiny_config(data__synthetic_split="paper", method__name="cl4srec", train__epochs=1)
    ds = load_dataset(config.data)
    record = Trainer(config, ds, log=lambda m: None).fit()
    # A CL4SRec epoch on the paper split trains, validates and tests end to end.
    assert record["epochs_run"] == 1 and 0.0 <= record["test"]["ndcg@10"] <= 1.0
