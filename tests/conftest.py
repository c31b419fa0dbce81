"""Shared fixtures: tiny dataset files and a tiny, fast run configuration."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ec4srec.config import Config

# Two CPU cores are shared with other work: keep torch to one thread for every test.
torch.set_num_threads(1)


def write_sequences(path: Path, sequences: list[list[int]], user_ids: list[int] | None = None) -> Path:
    """Write ``user item item ...`` lines (gzip when the name ends in .gz)."""
    ids = user_ids or list(range(1, len(sequences) + 1))
    text = "".join(f"{u} {' '.join(map(str, s))}\n" for u, s in zip(ids, sequences))
    path = Path(path)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def random_sequences(num_users: int = 48, num_items: int = 30, min_len: int = 4, max_len: int = 9,
                     seed: int = 0) -> list[list[int]]:
    """Users with distinct items each; item ids 1..num_items (all ids used at least once)."""
    rng = np.random.default_rng(seed)
    seqs = [(rng.choice(num_items, rng.integers(min_len, max_len + 1), replace=False) + 1).tolist()
            for _ in range(num_users)]
    seqs[0] = list(range(1, min(num_items, max_len) + 1))
    seqs[-1] = list(range(num_items, num_items - min(num_items, max_len), -1))
    return seqs


def tiny_config(dataset: str | Path = "synthetic", **sections) -> Config:
    """A tiny SASRec run (hidden 16, 1 layer, 3 epochs, CPU, no progress/tensorboard).

    ``sections`` are dotted overrides written with ``__``: ``train__epochs=5``.
    """
    base = [
        f"data.dataset={dataset}", "data.max_len=10",
        "model.hidden_size=16", "model.num_layers=1", "model.num_heads=1", "model.inner_size=32",
        "model.gru_hidden_size=16", "model.caser_window=3", "model.caser_nv=2", "model.caser_nh=2",
        "train.epochs=3", "train.batch_size=32", "train.eval_batch_size=64", "train.patience=5",
        "train.device=cpu", "train.threads=1", "train.progress=off", "train.tensorboard=false",
        "train.bucket_batches=4",
    ]
    extra = [f"{key.replace('__', '.')}={value}" for key, value in sections.items()]
    return Config().with_overrides(base + extra)


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    """A 48-user, 30-item dataset file with 4..9 items per user."""
    return write_sequences(tmp_path / "tiny.txt", random_sequences())


@pytest.fixture
def tiny_dataset(tiny_file: Path):
    from ec4srec.data import load_dataset

    return load_dataset(tiny_config(tiny_file).data)
