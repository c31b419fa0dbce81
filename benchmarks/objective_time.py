"""Training-epoch time of the next-item objectives and losses (train.objective, train.loss) and of
every method under a chosen objective, all in one run, interleaved.

    python benchmarks/objective_time.py --threads 1                         # the objectives table
    python benchmarks/objective_time.py --threads 1 --methods --objective all_positions
    python benchmarks/objective_time.py --threads 1 --write                 # append to BENCHMARKS.md
    python benchmarks/objective_time.py --smoke-test                        # synthetic data, seconds

Method: each setting is a list of ``--set`` overrides on the package defaults (SASRec backbone).
A step is what the trainer does (``Trainer.train_step``: batch, loss, backward, Adam step). For
every setting a fixed sample of its own epoch's batches (seed 0; ``--batches`` of them) is timed
and the epoch is extrapolated as time x (#batches / sample). The settings are timed round-robin
(A B C A B C ...) so that a change of machine load hits them alike; reported: the median over
``--runs`` rounds, and the ratio to the first setting. EC4SRec variants are timed in their guided
phase (scores from one saliency update, cheap). One validation pass (both protocols) is timed
per setting too: it is part of every epoch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import append_markdown, data_dir, fmt, header, table  # noqa: E402
from ec4srec.config import METHODS, Config  # noqa: E402
from ec4srec.data import load_dataset  # noqa: E402
from ec4srec.data.batches import train_order  # noqa: E402
from ec4srec.trainer import Trainer  # noqa: E402

ESASREC = ["model.num_layers=1", "model.num_heads=1", "model.inner_size=64", "model.dropout=0.2", "model.attn_dropout=0.2",
           "model.item_dropout=0.2", "model.norm=pre", "model.positions=from_end",
           "model.ffn_activation=relu", "model.init=xavier_normal", "train.adam_beta2=0.98",
           "train.batch_size=128"]
SAMPLED = ["train.loss=sampled_softmax", "train.negatives=256"]
ALL = ["train.objective=all_positions"]
OBJECTIVES = {
    "prefix rows, full softmax (the paper's)": [],
    "all positions, full softmax": ALL,
    "all positions, sampled 256 (shared)": ALL + SAMPLED,
    "all positions, sampled 256 + seen": ALL + SAMPLED + ["train.seen_negatives=true"],
    "all positions, sampled 256 per target": ALL + SAMPLED + ["train.shared_negatives=false"],
    "eSASRec settings, sampled 256 (shared)": ALL + SAMPLED + ESASREC,
    "eSASRec settings, sampled 256 per target": ALL + SAMPLED + ESASREC
    + ["train.shared_negatives=false"],
}


class Timed:
    """One setting: a trainer (guided methods in their guided phase) and its batch sample."""

    def __init__(self, overrides: list[str], dataset, batches: int):
        config = Config().with_overrides(["train.progress=off", "train.tensorboard=false",
                                          "method.explainer=saliency"] + overrides)
        self.trainer = Trainer(config, dataset, log=lambda m: None)
        method = self.trainer.method
        if method.update_epochs:
            method.on_epoch_start(method.update_epochs[0])
        train = self.trainer.data.train
        self.order = train_order(train.length, config.train.batch_size, np.random.default_rng(0),
                                 config.train.bucket_batches)
        pick = np.random.default_rng(1).choice(len(self.order), min(batches, len(self.order)),
                                               replace=False)
        self.sample = [self.order[i] for i in sorted(pick)]
        self.epochs: list[float] = []
        self.valid: list[float] = []

    def round(self) -> None:
        tr = self.trainer
        tr.model.train()
        for rows in self.sample[:2]:                     # warm-up, not timed
            tr.train_step(rows, 999)
        started = time.perf_counter()
        for rows in self.sample:
            tr.train_step(rows, 999)
        self.epochs.append((time.perf_counter() - started) * len(self.order) / len(self.sample))
        started = time.perf_counter()
        tr.validate()
        self.valid.append(time.perf_counter() - started)


def measure(settings: dict[str, list[str]], dataset, batches: int, runs: int) -> dict[str, Timed]:
    timed = {name: Timed(overrides, dataset, batches) for name, overrides in settings.items()}
    for _ in range(runs):
        for t in timed.values():
            t.round()
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--methods", action="store_true",
                        help="time every method (SASRec backbone) under --objective instead")
    parser.add_argument("--objective", default="all_positions", choices=["prefix_rows", "all_positions"])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override for every setting of --methods (repeatable)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches per setting")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--note", default=None)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--smoke-test", action="store_true", help="synthetic data, 2 batches, 1 run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke_test:
        args.dataset, args.batches, args.runs = "synthetic", 2, 1
    torch.manual_seed(0)
    config = Config().with_overrides([f"data.dataset={args.dataset}"])
    config.data.data_dir = data_dir(args.data_dir)
    dataset = load_dataset(config.data)
    if args.methods:
        base = [f"train.objective={args.objective}"] + args.overrides
        settings = {m: base + [f"method.name={m}"] for m in METHODS}
        title = (f"Method epoch time with train.objective={args.objective} on {args.dataset} "
                 f"(SASRec backbone{', ' + ' '.join(args.overrides) if args.overrides else ''})")
    else:
        settings = OBJECTIVES
        title = f"Next-item objectives and losses on {args.dataset} (SASRec, plain method)"
    timed = measure(settings, dataset, args.batches, args.runs)
    first = statistics.median(next(iter(timed.values())).epochs)
    rows = []
    for name, t in timed.items():
        epoch, valid = statistics.median(t.epochs), statistics.median(t.valid)
        rows.append([name, str(len(t.order)), fmt(epoch), f"{first / epoch:.2f}x", fmt(valid)])
    text = header(title, torch.get_num_threads(), args.note)
    text += (f"\nTraining epoch extrapolated from {args.batches} sampled batches per setting, "
             f"settings interleaved, median of {args.runs} rounds; speed-up against the first row; "
             "one validation pass (both protocols) beside it:\n\n")
    text += table(["setting", "batches", "epoch (s)", "speed-up", "validation (s)"], rows)
    text += f"\nLoad average when finished: {open('/proc/loadavg').read().split()[0]} (2 cores).\n"
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
