"""Where the seconds of an epoch go: a phase breakdown of training steps, evaluation and updates.

A step is split with wall-clock timers (CPU work is synchronous, so the phases add up):
``batch`` (building the trimmed batch), ``views`` (augmentations and retrieval: everything the
method does before encoding, measured as the method's loss time minus the encoder and loss
parts), ``encoder fwd`` (the backbone's forward over every view), ``loss head`` (full-softmax CE
and the contrastive terms; the chunked CE kernel computes its gradients here), ``backward``
(autograd through the encoder), ``optimizer`` (zero_grad + Adam). Encoder calls are timed by
wrapping the model's ``forward``; the rest of ``method.loss`` is split by timing
the next-item losses (``methods/objective.py``: full and sampled softmax) and the
``pair_nce``-style calls in their modules' namespaces. Times are per epoch
(a fixed sample of ``--batches`` batches, scaled) plus the validation pass and one importance
update per explainer (a fixed sample of its batches, scaled). The floor estimate counts the
FLOPs of the logits (forward + two gradient matmuls) and of the encoder (forward + 2x for
backward) at a measured matmul rate.

    python benchmarks/profile_epoch.py --methods sasrec ec4srec --write
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

from common import append_markdown, data_dir, header, table
from ec4srec.config import Config
from ec4srec.data import load_dataset
from ec4srec.data.batches import eval_order, make_batch, train_order
from ec4srec.data.split import Examples
from ec4srec.explain import compute_importance
from ec4srec.methods import contrastive as method_contrastive
from ec4srec.methods import objective as method_objective
from ec4srec.trainer import Trainer

EXPLAINERS = ("occlusion", "saliency", "integrated_gradients", "attention")


class PhaseTimer:
    """Accumulates wall seconds per phase; ``wrap`` times every call of a function."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
        return timed


def profile_method(method: str, dataset, batches: int, overrides: list[str]) -> dict[str, float]:
    config = Config().with_overrides([f"method.name={method}", "train.progress=off",
                                      "train.tensorboard=false", "method.explainer=attention",
                                      *overrides])
    trainer = Trainer(config, dataset, log=lambda m: None)
    split = dataset.split
    if trainer.method.update_epochs:
        trainer.method.on_epoch_start(trainer.method.update_epochs[0])
    timer = PhaseTimer()
    model = trainer.model
    model.forward = timer.wrap("encoder fwd", model.forward)
    patched = []
    for module, names in ((method_objective, ["full_softmax_loss", "sampled_softmax_loss"]),
                          (method_contrastive, ["pair_nce", "negative_view_loss",
                                                "negative_view_supcon"])):
        for name in names:
            original = getattr(module, name)
            patched.append((module, name, original))
            setattr(module, name, timer.wrap("loss head", original))
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0),
                        config.train.bucket_batches)
    sample = order[:batches]
    model.train()
    torch.manual_seed(0)
    try:
        for rows in sample[:2]:                                          # warm-up, untimed
            loss, _ = trainer.method.loss(make_batch(split.items, split.train, rows), epoch=999)
            loss.backward()
        timer.seconds.clear()
        wall = time.perf_counter()
        for rows in sample:
            t0 = time.perf_counter()
            batch = make_batch(split.items, split.train, rows)
            t1 = time.perf_counter()
            loss, _ = trainer.method.loss(batch, epoch=999)
            t2 = time.perf_counter()
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            trainer.optimizer.step()
            t4 = time.perf_counter()
            timer.seconds["batch"] += t1 - t0
            timer.seconds["method.loss"] += t2 - t1
            timer.seconds["backward"] += t3 - t2
            timer.seconds["optimizer"] += t4 - t3
        wall = time.perf_counter() - wall
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
        del model.forward
    s = timer.seconds
    s["views"] = s.pop("method.loss") - s["encoder fwd"] - s["loss head"]
    scale = len(order) / len(sample)
    out = {k: v * scale for k, v in s.items()}
    out["total"] = wall * scale
    started = time.perf_counter()
    trainer.validate()
    out["evaluation"] = time.perf_counter() - started
    return out


def profile_explainer(explainer: str, dataset, batches: int) -> float:
    trainer = Trainer(Config().with_overrides(["train.progress=off"]), dataset, log=lambda m: None)
    split = dataset.split
    all_batches = eval_order(split.train.length, 1024)
    pick = np.random.default_rng(0).choice(len(all_batches), min(batches, len(all_batches)), replace=False)
    total = 0.0
    for b in pick:
        rows = all_batches[b]
        sub = Examples(**{f: getattr(split.train, f)[rows] for f in ("end", "length", "user")})
        started = time.perf_counter()
        compute_importance(trainer.model, split.items, sub, explainer, max_len=split.max_len)
        total += time.perf_counter() - started
    return total * len(all_batches) / len(pick)


def matmul_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * 2048 ** 3 / statistics.median(times) / 1e9


def floor_estimate(dataset, config: Config, gflops: float) -> tuple[float, float, float]:
    """(logit TFLOP, encoder TFLOP, seconds at ``gflops``) of one SASRec full-CE epoch on
    length-bucketed batches (positions = sum over batches of rows x trimmed length)."""
    split = dataset.split
    m = config.model
    d, n_items = m.hidden_size, split.num_items
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0))
    positions = sum(len(rows) * int(split.train.length[rows].max()) for rows in order)
    rows = len(split.train)
    logits = 3 * 2 * rows * n_items * d                         # forward + grad_h + grad_W
    per_pos = 2 * (3 * d * d + d * d + 2 * d * m.inner_size) * m.num_layers
    encoder = 3 * positions * per_pos                           # forward + ~2x backward
    return logits / 1e12, encoder / 1e12, (logits + encoder) / (gflops * 1e9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", nargs="+", default=["sasrec", "ec4srec"])
    p.add_argument("--explainers", nargs="+", default=list(EXPLAINERS), choices=EXPLAINERS)
    p.add_argument("--batches", type=int, default=48)
    p.add_argument("--explain-batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--note", default=None)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = Config().with_overrides([f"data.dataset={args.dataset}"])
    config.data.data_dir = data_dir(args.data_dir)
    dataset = load_dataset(config.data)
    load_before = open("/proc/loadavg").read().split()[:3]
    phases = ["batch", "views", "encoder fwd", "loss head", "backward", "optimizer"]
    rows = []
    for method in args.methods:
        prof = profile_method(method, dataset, args.batches, args.overrides)
        rows.append([method] + [f"{prof[k]:.1f} ({100 * prof[k] / prof['total']:.0f} %)" for k in phases]
                    + [f"{prof['total']:.1f}", f"{prof['evaluation']:.2f}"])
        print(rows[-1], flush=True)
    upd = {e: profile_explainer(e, dataset, args.explain_batches) for e in args.explainers}
    gflops = matmul_gflops()
    logit_tf, enc_tf, floor_s = floor_estimate(dataset, config, gflops)
    text = header(f"Profile of one epoch on {args.dataset} (SASRec backbone)", args.threads, args.note)
    load_after = open("/proc/loadavg").read().split()[:3]
    text += (f"- {args.batches} training batches timed per method and scaled to the epoch; "
             f"updates from {args.explain_batches} of their 1024-row batches, scaled; "
             f"overrides: {' '.join(args.overrides) or 'none'}\n"
             f"- load average (1/5/15 min): {' '.join(load_before)} before, {' '.join(load_after)} after\n\n")
    text += table(["method", *phases, "epoch (s)", "evaluation (s)"], rows)
    text += "\n" + table(["explainer", "one update over all training rows (s)"],
                         [[e, f"{t:.1f}"] for e, t in upd.items()])
    text += (f"\nFloor of a SASRec full-CE epoch: {logit_tf:.2f} TFLOP of logits (forward and both "
             f"gradients) + {enc_tf:.2f} TFLOP of encoder (forward + 2x backward, bucketed batches) "
             f"at the measured {gflops:.0f} GFLOP/s (a 2048^2 fp32 matmul, {args.threads} thread(s)) "
             f"= {floor_s:.1f} s.\n")
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
