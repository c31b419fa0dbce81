"""Read and validate the sequence text format.

Format (plain or .gz): one line per user, ``user_id item item ...``, single whitespace
separated, items oldest first. Ids are positive integers; 0 is reserved for padding.

Policy (documented in docs/data.md):
- a blank line is skipped;
- a non-integer token, a non-positive id, a repeated user id or an item repeated within a
  user's line -> :class:`DataError` naming file and line;
- a user with fewer than 3 items cannot be split into train/validation/test: counted and
  skipped (``short_users="skip"``, the default) or an error (``short_users="error"``).
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_USER_LEN = 3   # one validation target, one test target, one history item
MAX_ID = 2**31 - 1   # user and item ids
SPARSE_FACTOR, SPARSE_SLACK = 4, 1000   # largest item id allowed: 4 x distinct items + 1000


class DataError(ValueError):
    """Bad input data; the message names the file (and line)."""


@dataclass
class RawSequences:
    """Users' item sequences in file order. ``items`` is flat; user u is items[offsets[u]:offsets[u+1]]."""

    user_ids: np.ndarray     # [U] int64, as in the file
    items: np.ndarray        # [sum of lengths] int64, ids >= 1
    offsets: np.ndarray      # [U + 1] int64
    num_items: int           # largest item id (ids are 1..num_items)
    skipped_short: int = 0   # users dropped for having < MIN_USER_LEN items
    sha256: str = ""         # of the uncompressed text

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, sequences: list[list[int]], user_ids: list[int] | None = None) -> "RawSequences":
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        items = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.arange(1, len(sequences) + 1) if user_ids is None else np.asarray(user_ids)
        return cls(ids.astype(np.int64), items, offsets, int(items.max()) if len(items) else 0)


def read_sequences(path: str | Path, short_users: str = "skip") -> RawSequences:
    """Parse and validate ``path``. Raises DataError on the first bad line."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None

    user_ids: list[int] = []
    chunks: list[list[int]] = []
    seen_users: dict[int, int] = {}
    skipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        bad = next((t for t in tokens if not _is_id(t.removeprefix("-"))), None)   # '-4': not positive, below
        if bad is not None:
            raise DataError(f"{path}:{lineno}: {bad!r} is not an integer id "
                            "(expected 'user_id item item ...', ids of ASCII digits)")
        ids = [int(t) for t in tokens]
        if max(ids) > MAX_ID:
            raise DataError(f"{path}:{lineno}: id {max(ids)} is larger than {MAX_ID}")
        if min(ids) <= 0:
            bad = next(i for i in ids if i <= 0)
            raise DataError(f"{path}:{lineno}: id {bad} is not positive (0 is reserved for padding)")
        user, seq = ids[0], ids[1:]
        if user in seen_users:
            raise DataError(f"{path}:{lineno}: user {user} already appeared on line {seen_users[user]}")
        seen_users[user] = lineno
        if len(set(seq)) != len(seq):
            dup = next(i for k, i in enumerate(seq) if i in seq[:k])
            raise DataError(f"{path}:{lineno}: item {dup} appears twice in user {user}'s sequence")
        if len(seq) < MIN_USER_LEN:
            if short_users == "error":
                raise DataError(f"{path}:{lineno}: user {user} has {len(seq)} item(s); "
                                f"the leave-one-out split needs at least {MIN_USER_LEN}")
            skipped += 1
            continue
        user_ids.append(user)
        chunks.append(seq)
    if not chunks:
        raise DataError(f"{path}: no usable user sequences (each needs >= {MIN_USER_LEN} items)")
    raw = RawSequences.from_lists(chunks, user_ids)
    distinct = len(np.unique(raw.items))
    if raw.num_items > SPARSE_FACTOR * distinct + SPARSE_SLACK:
        raise DataError(f"{path}: item ids must be about dense (the embedding table has a row for "
                        f"every id up to the largest): the largest is {raw.num_items} for "
                        f"{distinct} distinct items; renumber them 1..{distinct}")
    raw.skipped_short = skipped
    raw.sha256 = digest
    return raw


def _is_id(token: str) -> bool:
    """Plain ASCII digits only: ``int`` would also take '1_0', '+5' and non-ASCII digits."""
    return token.isascii() and token.isdigit()
