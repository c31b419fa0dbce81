"""Training-epoch time, full-ranking evaluation time and peak memory, per dataset and backbone,
with a naive PyTorch SASRec (benchmarks/naive.py) measured in the same run as the baseline.

    python benchmarks/epoch_time.py                       # Beauty + Sports, 3 backbones
    python benchmarks/epoch_time.py --epochs-sample 0     # time whole epochs (slow)
    python benchmarks/epoch_time.py --write               # also append the table to BENCHMARKS.md

Method:
- Rows: the package's backbones (default configs from ``ec4srec.config``; length-bucketed
  batches trimmed to their longest history, FastDropout, fused full-softmax CE, fused Adam),
  ``sasrec (before)`` = the package's SASRec with the pre-optimisation loss (plain
  ``F.cross_entropy`` of the materialised logits) and evaluation (full ``[1024, N]`` score
  matrix, two comparison passes), and ``naive sasrec`` = benchmarks/naive.py.
- Training: one epoch's batch order is drawn (seed 0, batch 256, the trainer's ``train_order``).
  With ``--epochs-sample N`` (default 64) a fixed random subset of N of its batches (seed 1, the
  same rows for every row of the table) is timed and the epoch time is extrapolated as
  ``sum(time of the N batches) * (#batches / N)``; ``--epochs-sample 0`` times every batch.
  A step is what the trainer does: build the batch, loss, zero_grad, backward, optimizer step.
  Two warm-up batches are not timed. Reported: the median over ``--runs`` repetitions.
- Evaluation: ranks of the validation target of every user (full ranking over all items), the
  median over ``--eval-runs`` repetitions.
- Memory: peak RSS of the configuration's own fresh process (see benchmarks/common.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import common  # noqa: E402

VARIANTS = ("sasrec", "gru4rec", "caser", "sasrec-before", "naive-sasrec")
LABELS = {"sasrec": "sasrec", "gru4rec": "gru4rec", "caser": "caser",
          "sasrec-before": "sasrec (before: plain CE, 2-pass ranks)",
          "naive-sasrec": "naive sasrec (baseline)"}


def child(spec: dict) -> dict:
    """Measure one (dataset, variant) in this process; returns a JSON-able dict."""
    from ec4srec.config import Config
    from ec4srec.data import load_dataset
    from ec4srec.data.batches import make_batch, train_order
    from ec4srec.evaluate import compute_ranks
    from ec4srec.methods import build_method
    from ec4srec.models import build_model, refresh_dropout_banks
    import naive

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    variant = spec["variant"]
    config = Config()
    config.data.dataset = spec["dataset"]
    config.data.data_dir = spec["data_dir"]
    data = load_dataset(config.data, download=False).split
    rss_loaded = common.rss_mb()
    torch.manual_seed(0)

    order = train_order(data.train.length, config.train.batch_size, np.random.default_rng(0),
                        config.train.bucket_batches)
    sample = spec["sample"]
    if sample and sample < len(order):
        picked = np.random.default_rng(1).choice(len(order), sample, replace=False)
    else:
        picked = np.arange(len(order))
    scale = len(order) / len(picked)
    result = {"batches": len(order), "timed_batches": int(len(picked)),
              "mean_L": float(np.mean([data.train.length[order[i]].max() for i in picked]))}

    if variant == "naive-sasrec":
        model = naive.NaiveSASRec(data.num_items, data.max_len)
        opt = naive.make_optimizer(model)
        tr = data.train

        def step(rows):
            naive.train_step(model, opt, data.items, tr.end[rows], tr.length[rows])

        def run_eval():
            naive.evaluate_ranks(model, data.items, data.valid.end, data.valid.length)
    else:
        config.model.backbone = "sasrec" if variant == "sasrec-before" else variant
        model = build_model(config.model, data.num_items, data.max_len)
        opt = torch.optim.Adam(model.parameters(), lr=config.train.lr, fused=True)
        method = build_method(config, data, model)

        def step(rows):
            batch = make_batch(data.items, data.train, rows)
            if variant == "sasrec-before":
                h = model(batch.items, batch.lengths)
                loss = F.cross_entropy(model.scores(h), batch.targets - 1)
            else:
                loss, _ = method.loss(batch, 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def run_eval():
            if variant == "sasrec-before":
                common.before_compute_ranks(model, data, data.valid, config.train.eval_batch_size)
            else:
                compute_ranks(model, data, data.valid, config.train.eval_batch_size)

    model.train()
    if spec["train"]:
        if variant != "naive-sasrec":
            refresh_dropout_banks(model)
        for i in picked[:2]:
            step(order[i])                                                   # warm-up
        epochs = []
        for _ in range(spec["runs"]):
            if variant != "naive-sasrec":
                refresh_dropout_banks(model)                                 # as the trainer
            started = time.perf_counter()
            for i in picked:
                step(order[i])
            epochs.append((time.perf_counter() - started) * scale)
        result["epoch_s"] = epochs
    if spec["eval"]:
        run_eval()                                                           # warm-up
        evals = []
        for _ in range(spec["eval_runs"]):
            started = time.perf_counter()
            run_eval()
            evals.append(time.perf_counter() - started)
        result["eval_s"] = evals
    result["rss_loaded_mb"] = rss_loaded
    result["peak_rss_mb"] = common.peak_rss_mb()
    return result


def main(argv: list[str] | None = None, mode: str = "both") -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["beauty", "sports"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--data-dir", default=None, help="default: $EC4SREC_DATA_DIR or /work/shared/data")
    parser.add_argument("--epochs-sample", type=int, default=64,
                        help="time N random batches of the epoch and extrapolate (0 = whole epoch)")
    parser.add_argument("--runs", type=int, default=3, help="training repetitions (median)")
    parser.add_argument("--eval-runs", type=int, default=3, help="evaluation repetitions (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--note", default=None, help="a line added to the written section")
    parser.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return ""
    threads = args.threads or torch.get_num_threads()
    rows = []
    for dataset in args.datasets:
        results = {}
        for variant in args.variants:
            spec = {"dataset": dataset, "variant": variant, "data_dir": common.data_dir(args.data_dir),
                    "threads": args.threads, "sample": args.epochs_sample, "runs": args.runs,
                    "eval_runs": args.eval_runs, "train": mode in ("both", "train"),
                    "eval": mode in ("both", "eval")}
            res = common.run_child(__file__, spec)
            results[variant] = res
            print(f"{dataset} {variant}: {json.dumps(res)}", file=sys.stderr, flush=True)
        base = results.get("naive-sasrec")
        for variant, res in results.items():
            row = [dataset, LABELS[variant]]
            if "epoch_s" in res:
                ep = statistics.median(res["epoch_s"])
                speed = (f"{statistics.median(base['epoch_s']) / ep:.1f}x"
                         if base and "epoch_s" in base else "-")
                row += [common.fmt(ep), speed]
            if "eval_s" in res:
                ev = statistics.median(res["eval_s"])
                speed = (f"{statistics.median(base['eval_s']) / ev:.1f}x"
                         if base and "eval_s" in base else "-")
                row += [common.fmt(ev), speed]
            row += [f"{res['peak_rss_mb']:.0f}", f"{res['peak_rss_mb'] - res['rss_loaded_mb']:.0f}"]
            rows.append(row)
    columns = ["dataset", "model"]
    if mode in ("both", "train"):
        columns += ["train epoch (s)", "vs naive"]
    if mode in ("both", "eval"):
        columns += ["eval all users (s)", "vs naive"]
    columns += ["peak RSS (MiB)", "delta RSS (MiB)"]
    sample = (f"{args.epochs_sample} random batches per epoch timed and extrapolated"
              if args.epochs_sample else "whole epochs timed")
    title = {"both": "Training epoch and evaluation time", "train": "Training epoch time",
             "eval": "Full-ranking evaluation time"}[mode]
    detail = []
    if mode in ("both", "train"):
        detail.append(f"training: median of {args.runs} runs, {sample}")
    if mode in ("both", "eval"):
        detail.append(f"evaluation: all validation users, median of {args.eval_runs} runs")
    text = (common.header(title, threads, args.note) + f"- {'; '.join(detail)}\n\n"
            + common.table(columns, rows))
    print(text)
    if args.write:
        common.append_markdown(text)
    return text


if __name__ == "__main__":
    main()
