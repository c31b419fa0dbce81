"""ertrl+ cost: per-batch util() against the util table built once per importance update.

On one dataset (SASRec backbone, default config, importance from the attention explainer of an
untrained model: the cost does not depend on the scores' values) the same fixed sample of
``--batches`` training batches draws ertrl+ partners (a) computing util per batch over the item
vocabulary and (b) looking it up in ``SameTargetIndex.util_table``; both are scaled to an
epoch. The table's build time (once per update) is reported beside them.

    python benchmarks/retrieval_time.py --write
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import append_markdown, data_dir, header, table
from ec4srec.config import Config
from ec4srec.data import load_dataset
from ec4srec.data.batches import make_batch, train_order
from ec4srec.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default=None)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = Config().with_overrides([f"data.dataset={args.dataset}", "method.name=ec4srec",
                                      "method.explainer=attention", "train.progress=off",
                                      "train.tensorboard=false"])
    config.data.data_dir = data_dir(args.data_dir)
    dataset = load_dataset(config.data)
    split = dataset.split
    trainer = Trainer(config, dataset, log=lambda m: None)
    method = trainer.method
    method.on_epoch_start(method.update_epochs[0])
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0))
    batches = [make_batch(split.items, split.train, rows) for rows in order[:args.batches]]
    index, cap = method.index, config.method.retrieval_candidates

    def epoch_seconds(table_or_none) -> float:
        started = time.perf_counter()
        for b in batches:
            index.guided_partner(b.rows, b.items, b.lengths, method._batch_importance(b),
                                 split.num_items, cap, util_table=table_or_none)
        return (time.perf_counter() - started) * len(order) / len(batches)

    per_batch = epoch_seconds(None)
    started = time.perf_counter()
    util = method.util_table()
    build = time.perf_counter() - started
    lookup = epoch_seconds(util)
    text = header(f"ertrl+ util: per batch vs a table per update ({args.dataset})", args.threads, args.note)
    text += (f"- {len(split.train)} training rows, {index.pair_count()} same-target pairs; "
             f"{args.batches} batches timed and scaled to the epoch's {len(order)}\n\n")
    text += table(["ertrl+ util", "per epoch (s)", "once per update (s)"],
                  [["per batch (before)", f"{per_batch:.2f}", "-"],
                   ["table lookup (now)", f"{lookup:.2f}", f"{build:.1f} (build)"]])
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
