"""Epoch time of every method relative to SASRec, and the cost of one importance update.

For each method (SASRec backbone, default config, Beauty) the same fixed random sample of
training batches is timed (``--batches``, scaled up to a full epoch) in the guided phase: the
EC4SRec variants get importance scores first, so their timed steps include the explanation-
guided augmentations and ertrl+. Medians over ``--runs``. Then one importance update over ALL
training rows is timed for every explainer; targets from the issue: ec4srec <= 3x SASRec,
occlusion <= one SASRec epoch, saliency <= 0.3 of one.

    python benchmarks/method_time.py --write
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from common import append_markdown, data_dir, fmt, header, table
from ec4srec.config import METHODS, Config
from ec4srec.data import load_dataset
from ec4srec.data.batches import make_batch, train_order
from ec4srec.explain import compute_importance
from ec4srec.trainer import Trainer

EXPLAINERS = ("occlusion", "saliency", "integrated_gradients", "attention")


def time_method(method: str, dataset, batches: int, runs: int, bucket_batches: int = 64) -> float:
    config = Config().with_overrides([f"method.name={method}", "train.progress=off",
                                      "train.tensorboard=false", "method.explainer=saliency"])
    trainer = Trainer(config, dataset, log=lambda m: None)
    split = dataset.split
    if trainer.method.update_epochs:          # enter the guided phase (scores: saliency, cheap)
        trainer.method.on_epoch_start(trainer.method.update_epochs[0])
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0),
                        bucket_batches)
    sample = order[:batches]
    trainer.model.train()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for rows in sample:
            loss, _ = trainer.method.loss(make_batch(split.items, split.train, rows), epoch=999)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        times.append((time.perf_counter() - started) * len(order) / len(sample))
    return statistics.median(times)


def time_explainer(explainer: str, dataset, runs: int) -> float:
    trainer = Trainer(Config().with_overrides(["train.progress=off"]), dataset, log=lambda m: None)
    split = dataset.split
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        compute_importance(trainer.model, split.items, split.train, explainer, max_len=split.max_len)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--explainers", nargs="+", default=list(EXPLAINERS), choices=EXPLAINERS)
    parser.add_argument("--batches", type=int, default=48, help="timed batches per run (scaled)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--explain-runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--note", default=None)
    parser.add_argument("--bucket-batches", type=int, nargs="+", default=None,
                        help="compare length-bucketing windows (1 = random batches); no updates")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Config().with_overrides([f"data.dataset={args.dataset}"])
    config.data.data_dir = data_dir(args.data_dir)
    dataset = load_dataset(config.data)

    if args.bucket_batches:
        return compare_windows(args, dataset)
    epoch = {m: time_method(m, dataset, args.batches, args.runs) for m in args.methods}
    base = epoch.get("sasrec") or time_method("sasrec", dataset, args.batches, args.runs)
    rows = [[m, fmt(t), f"{t / base:.2f}x"] for m, t in epoch.items()]
    text = header(f"Method epoch time and importance updates on {args.dataset} (SASRec backbone)",
                  torch.get_num_threads(), args.note)
    text += ("\nTraining epoch (extrapolated from a fixed sample of batches, guided phase for the "
             "EC4SRec variants), median of runs:\n\n")
    text += table(["method", "epoch (s)", "vs sasrec"], rows)
    upd = {e: time_explainer(e, dataset, args.explain_runs) for e in args.explainers}
    text += f"\nOne importance update over all {len(dataset.split.train)} training rows:\n\n"
    text += table(["explainer", "update (s)", "vs one SASRec epoch"],
                  [[e, fmt(t), f"{t / base:.2f}x"] for e, t in upd.items()])
    load = open("/proc/loadavg").read().split()[0]
    text += f"\nLoad average when finished: {load} (2 cores).\n"
    print(text)
    if args.write:
        append_markdown(text)


def compare_windows(args, dataset) -> None:
    """Epoch time per method and length-bucketing window; windows alternate per method."""
    times = {m: {w: time_method(m, dataset, args.batches, args.runs, w) for w in args.bucket_batches}
             for m in args.methods}
    first = args.bucket_batches[0]
    heads = ["method"] + [f"window {w} (s)" for w in args.bucket_batches] + \
        [f"window {w} vs {first}" for w in args.bucket_batches[1:]]
    rows = [[m] + [fmt(t[w]) for w in args.bucket_batches] +
            [f"{t[w] / t[first]:.2f}x" for w in args.bucket_batches[1:]] for m, t in times.items()]
    text = header(f"Random vs length-bucketed batches on {args.dataset} (SASRec backbone)",
                  torch.get_num_threads(), args.note)
    text += ("\nTraining epoch (extrapolated from a sample of each order's batches, guided phase "
             "for the EC4SRec variants), median of runs; window 1 = random batches:\n\n")
    text += table(heads, rows)
    text += f"\nLoad average when finished: {open('/proc/loadavg').read().split()[0]} (2 cores).\n"
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
