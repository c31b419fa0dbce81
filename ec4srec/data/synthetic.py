"""The Section 3.3 synthetic dataset, with ground-truth important items.

The paper gives only its shape: 500 users, 10 historical items plus 3 next items each
(training, validation and test targets), 3 of the historical items "important" and shared with
the next items, the rest noise. Our design makes the next items a function of the important
items alone:

- ``num_patterns`` latent patterns. Pattern k owns a triple of *signal* items (drawn without
  replacement from a pool of ``num_signal_items``; pools overlap between patterns, so a single
  signal item is ambiguous and the model must combine the three) and a triple of *next* items
  (drawn from a pool of ``num_next_items``).
- A user picks a pattern uniformly. Its 10 historical items are the pattern's 3 signal items
  plus 7 noise items drawn without replacement from ``num_noise_items``, in a random order.
  Its 3 next items are the pattern's next items in a random order.
- The noise items carry no information about the next items, so a perfect model needs only the
  3 important positions; ``important`` records them (0-based, within the 10 history items).

Item ids: signal 1..S, next S+1..S+T, noise S+T+1..S+T+N. Deterministic for a seed.

Two splits (``data.synthetic_split``): ``prefixes`` (default) is the leave-one-out split every
dataset gets (split.py): each 13-item sequence yields 10 training rows (every prefix), and only
the last of them predicts a next item; ``paper`` is Section 3.3's protocol, :func:`paper_split`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import DataError, RawSequences
from .split import Examples, SplitData

HISTORY = 10
NUM_IMPORTANT = 3
NUM_NEXT = 3


@dataclass
class SyntheticData:
    raw: RawSequences
    important: np.ndarray    # [U, 3] int64: positions (0-based) of the important history items
    pattern: np.ndarray      # [U] int64: each user's latent pattern


def generate(seed: int = 0, num_users: int = 500, num_patterns: int = 50,
             num_signal_items: int = 40, num_next_items: int = 60,
             num_noise_items: int = 300) -> SyntheticData:
    rng = np.random.default_rng(seed)
    signal = np.stack([rng.choice(num_signal_items, NUM_IMPORTANT, replace=False)
                       for _ in range(num_patterns)]) + 1
    nexts = np.stack([rng.choice(num_next_items, NUM_NEXT, replace=False)
                      for _ in range(num_patterns)]) + 1 + num_signal_items
    noise_base = 1 + num_signal_items + num_next_items
    pattern = rng.integers(num_patterns, size=num_users)
    sequences, important = [], []
    for u in range(num_users):
        history = np.concatenate([signal[pattern[u]],
                                  rng.choice(num_noise_items, HISTORY - NUM_IMPORTANT, replace=False)
                                  + noise_base])
        order = rng.permutation(HISTORY)
        history = history[order]
        important.append(np.sort(np.flatnonzero(order < NUM_IMPORTANT)))
        sequences.append([*history.tolist(), *rng.permutation(nexts[pattern[u]]).tolist()])
    raw = RawSequences.from_lists(sequences)
    raw.num_items = noise_base + num_noise_items - 1
    return SyntheticData(raw=raw, important=np.stack(important).astype(np.int64),
                         pattern=pattern.astype(np.int64))


def paper_split(raw: RawSequences, max_len: int) -> SplitData:
    """Section 3.3's split: one training, one validation and one test example per user.

    The paper: "the dataset consists of 500 user sequences each with 10 historical items and 3
    additional items at the end serving as the next-items. Among the historical items are 3
    important items shared by the 3 next-items to be used for training, validation and test
    respectively." So for a user with historical items h_1..h_10 and next items n_1, n_2, n_3:

    - training:   h_1..h_10 -> n_1   (the only training row of the user)
    - validation: h_1..h_10 -> n_2
    - test:       h_1..h_10 -> n_3

    The paper does not say what the validation and test histories are. We use the 10
    historical items for all three: the paper calls only those items "historical", all three
    next items depend on the same 3 important historical items, and the masking experiment
    augments historical items. (Leave-one-out histories -- h_1..h_10, n_1 for validation and
    h_1..h_10, n_1, n_2 for test -- would hand the model other next items of the same pattern
    as input and ask SASRec to read position embeddings at positions 11-12 that training
    never reaches.) Validation and test targets are never training targets, and no next item
    is ever part of a history.

    Every history must be contiguous right before its target (``Examples``), so the returned
    ``items`` array is ``raw.items`` (training rows address it at the user's n_1) followed by one
    block ``h_1..h_10, n_2, h_1..h_10, n_3`` per user for the validation and test rows.
    ``raw.offsets`` still address ``items`` (explain_cli reads users' full sequences through them).
    Histories keep their last ``max_len`` items, as in split.py.
    """
    span = HISTORY + NUM_NEXT
    lengths = raw.lengths
    if not (lengths == span).all():
        bad = int(np.flatnonzero(lengths != span)[0])
        raise DataError(f"data.synthetic_split=paper needs {HISTORY} historical + {NUM_NEXT} next "
                        f"items per user; user {int(raw.user_ids[bad])} has {int(lengths[bad])}")
    num_users = len(lengths)
    users = np.arange(num_users, dtype=np.int64)
    seqs = raw.items.reshape(num_users, span)                      # [U, 13]: offsets are u * 13
    history = seqs[:, :HISTORY]                                    # [U, 10]
    extra = np.concatenate([history, seqs[:, HISTORY + 1:HISTORY + 2],
                            history, seqs[:, HISTORY + 2:HISTORY + 3]], axis=1)   # [U, 22]
    items = np.concatenate([raw.items, extra.ravel()]).astype(raw.items.dtype, copy=False)
    block = len(raw.items) + users * (2 * (HISTORY + 1))           # start of each user's block
    length = np.full(num_users, min(HISTORY, max_len), dtype=np.int64)
    train = Examples(end=raw.offsets[:-1] + HISTORY, length=length.copy(), user=users.copy())
    valid = Examples(end=block + HISTORY, length=length.copy(), user=users.copy())
    test = Examples(end=block + 2 * HISTORY + 1, length=length.copy(), user=users.copy())
    return SplitData(items=items, num_items=raw.num_items, max_len=max_len,
                     train=train, valid=valid, test=test, num_users=num_users)
