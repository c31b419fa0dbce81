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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import RawSequences

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
