"""How much padding `encode_together` encodes: chunks per batch and padded / real positions.

Counted, not timed: one epoch's batch order (seed 0, batch 256, the trainer's ``train_order``)
for each ``--bucket-batches`` window; every batch's rows are pooled ``--views`` times (the
anchor and CL4SRec's two views, each counted at the row's length) and cut by the same
``length_chunks`` that ``encode_together`` uses.

    python benchmarks/chunk_padding.py --bucket-batches 64 1
"""
from __future__ import annotations

import argparse

import numpy as np

from common import data_dir
from ec4srec.config import Config
from ec4srec.data import load_dataset
from ec4srec.data.batches import train_order
from ec4srec.methods.encoding import length_chunks


def chunk_stats(lengths: np.ndarray, window: int, views: int, token_budget: int = 4096,
                max_rows: int = 512) -> tuple[float, float]:
    """(chunks per batch, padded positions per real position) over one epoch's batches."""
    chunks = padded = real = 0
    order = train_order(lengths, 256, np.random.default_rng(0), window)
    for rows in order:
        pooled = np.sort(np.tile(lengths[rows], views))
        sizes = length_chunks(pooled, token_budget, max_rows)
        ends = np.cumsum(sizes)
        chunks += len(sizes)
        padded += int((np.asarray(sizes) * pooled[ends - 1]).sum())
        real += int(pooled.sum())
    return chunks / len(order), padded / real


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--bucket-batches", type=int, nargs="+", default=[64, 1])
    p.add_argument("--views", type=int, default=3)
    args = p.parse_args()
    config = Config().with_overrides([f"data.dataset={args.dataset}", f"data.data_dir={data_dir(args.data_dir)}"])
    lengths = load_dataset(config.data).split.train.length
    print("| bucket window | chunks per batch | padded / real positions |\n|---|---|---|")
    for window in args.bucket_batches:
        per_batch, ratio = chunk_stats(lengths, window, args.views)
        print(f"| {window} | {per_batch:.1f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
