"""Leave-one-out split into prefix training rows, validation and test examples.

For a user with items v_1..v_n (oldest first):
- test:       history v_1..v_{n-1}  -> target v_n
- validation: history v_1..v_{n-2}  -> target v_{n-1}
- training:   history v_1..v_{t-1}  -> target v_t for every t in 2..n-2
Every history keeps only its last ``max_len`` items. A row is stored as the flat index of its
target (``end``) and its history length, so history = items[end - length : end]: no copies.
Validation and test targets never appear as training targets (tests check this).
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
                     length=np.minimum(pos_in_user, max_len), user=train_user)
    valid = Examples(end=offsets + lengths - 2, length=np.minimum(lengths - 2, max_len), user=users)
    test = Examples(end=offsets + lengths - 1, length=np.minimum(lengths - 1, max_len), user=users)
    return SplitData(items=raw.items, num_items=raw.num_items, max_len=max_len,
                     train=train, valid=valid, test=test, num_users=num_users)
