"""Leave-one-out split into prefix training rows, validation and test examples.

For a user with items v_1..v_n (oldest first):
- test:       history v_1..v_{n-1}  -> target v_n
- validation: history v_1..v_{n-2}  -> target v_{n-1}
- training:   history v_1..v_{t-1}  -> target v_t for every t in 2..n-2
Every history keeps only its last ``max_len`` items. A row is stored as the flat index of its
target (``end``) and its history length, so history = items[end - length : end]: no copies.
Validation and test targets never appear as training targets (tests check this).

:func:`sequence_rows` gives the same training targets as user sequences
(``train.objective=all_positions``): a row (end, length) then stands for the inputs
items[end - length : end] and the targets items[end - length + 1 : end + 1], every position
predicting its next item.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import RawSequences


@dataclass
class Examples:
    """A set of (history, target) examples addressed into the flat item array."""

    end: np.ndarray      # [R] int64: flat index of the target item
    length: np.ndarray   # [R] int64: history length, 1..max_len
    user: np.ndarray     # [R] int64: user index (0-based, file order)
    # [R] int64: flat index where the user's whole known history starts (items[start:end] is
    # every item the user interacted with before the target, beyond max_len too); None = the
    # row's own history (end - length). The "unseen items" protocol removes these items.
    start: np.ndarray | None = None

    def history_start(self) -> np.ndarray:
        return self.end - self.length if self.start is None else self.start

    def __len__(self) -> int:
        return len(self.end)


@dataclass
class SplitData:
    items: np.ndarray    # flat item ids, users concatenated
    num_items: int
    max_len: int
    train: Examples
    valid: Examples
    test: Examples
    num_users: int

    def targets(self, examples: Examples) -> np.ndarray:
        return self.items[examples.end]


def leave_one_out(raw: RawSequences, max_len: int) -> SplitData:
    lengths = raw.lengths
    offsets = raw.offsets[:-1]
    num_users = len(lengths)
    users = np.arange(num_users, dtype=np.int64)

    # Training targets: positions 1 .. n-3 inside each user (0-based), i.e. n-3 rows per user.
    rows_per_user = np.maximum(lengths - 3, 0)
    train_user = np.repeat(users, rows_per_user)
    first_row = np.concatenate([[0], np.cumsum(rows_per_user)[:-1]])
    pos_in_user = np.arange(len(train_user), dtype=np.int64) - np.repeat(first_row, rows_per_user) + 1
    train = Examples(end=offsets[train_user] + pos_in_user,
                     length=np.minimum(pos_in_user, max_len), user=train_user,
                     start=offsets[train_user])
    valid = Examples(end=offsets + lengths - 2, length=np.minimum(lengths - 2, max_len), user=users,
                     start=offsets.copy())
    test = Examples(end=offsets + lengths - 1, length=np.minimum(lengths - 1, max_len), user=users,
                    start=offsets.copy())
    return SplitData(items=raw.items, num_items=raw.num_items, max_len=max_len,
                     train=train, valid=valid, test=test, num_users=num_users)


def sequence_rows(train: Examples, max_len: int) -> Examples:
    """Prefix training rows -> user-sequence rows covering the same targets, each exactly once.

    A user's prefix rows are consecutive with consecutive targets. Cut from the user's last
    training target backwards, each sequence row takes up to ``max_len`` targets: the row ending
    at target position p (0-based in the user) with length m has inputs at positions p - m ..
    p - 1 and targets p - m + 1 .. p; the next row back ends at p - m. Rows come out in user
    order, newest window first within a user. A target's history inside its row is therefore
    the last 1..max_len items before it (prefix rows always keep the last max_len): identical
    for users with at most max_len + 1 training items (99.4 % of Beauty's users).
    """
    if len(train) == 0:
        return train
    user = train.user
    pos = train.end - (train.start if train.start is not None else train.end - train.length)
    # [R] position of each target in its user; last row of each user
    last = np.flatnonzero(np.r_[user[1:] != user[:-1], True])
    first_of_user = np.r_[0, last[:-1] + 1]
    ends, lengths, users, starts = [], [], [], []
    for lo, hi in zip(first_of_user, last):
        # the user's targets are rows lo..hi, positions pos[lo]..pos[hi] consecutive
        p = hi
        while p >= lo:
            m = min(max_len, int(pos[p]))
            ends.append(train.end[p])
            lengths.append(m)
            users.append(user[p])
            starts.append(train.end[p] - pos[p])
            p -= m
    return Examples(end=np.asarray(ends, dtype=np.int64), length=np.asarray(lengths, dtype=np.int64),
                    user=np.asarray(users, dtype=np.int64), start=np.asarray(starts, dtype=np.int64))
