"""How many integrated-gradients steps an importance update needs: rankings against 20 steps.

On a trained model (``--checkpoint``: a run directory or checkpoint.pt) the IG importance
scores of a fixed random sample of training rows (``--rows``, in the update's own length-sorted
batches) are computed with 20 steps (the reference) and with each of ``--steps``; reported per
step count: the time relative to 20 steps, the mean Spearman rank correlation of a row's
position scores with the reference (rows of length >= 3), and the overlap of the "important"
sets the augmentations use (the top ceil(mu_e * n) positions, mu_e = 0.5) with the reference's.

    python benchmarks/ig_steps_accuracy.py --checkpoint runs/x --write
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import append_markdown, data_dir, header, table
from ec4srec.checkpoint import load_torch
from ec4srec.config import Config
from ec4srec.data import load_dataset
from ec4srec.data.split import Examples
from ec4srec.explain import compute_importance
from ec4srec.models import build_model


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 1.0


def top_overlap(a: np.ndarray, b: np.ndarray, mu_e: float = 0.5) -> float:
    k = max(1, int(np.ceil(mu_e * len(a))))
    top_a = set(np.argsort(-a, kind="stable")[:k])
    top_b = set(np.argsort(-b, kind="stable")[:k])
    return len(top_a & top_b) / k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--steps", type=int, nargs="+", default=[3, 5, 10])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default=None)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from pathlib import Path
    path = Path(args.checkpoint)
    ckpt = load_torch(path / "checkpoint.pt" if path.is_dir() else path)
    config = Config.from_dict(ckpt["config"])
    config.data.data_dir = data_dir(args.data_dir)
    dataset = load_dataset(config.data)
    split = dataset.split
    model = build_model(config.model, split.num_items, split.max_len)
    model.load_state_dict(ckpt["model"])
    rows = np.sort(np.random.default_rng(0).choice(len(split.train), args.rows, replace=False))
    sub = Examples(**{f: getattr(split.train, f)[rows] for f in ("end", "length", "user")})

    def scores(steps: int) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        out = compute_importance(model, split.items, sub, "integrated_gradients",
                                 max_len=split.max_len, ig_steps=steps)
        return out, time.perf_counter() - started

    ref, ref_time = scores(20)
    lengths = sub.length
    table_rows = [["20 (reference)", f"{ref_time:.1f}", "1.00", "1.000", "1.000"]]
    for steps in args.steps:
        got, seconds = scores(steps)
        rho = [spearman(got[i, :n], ref[i, :n]) for i, n in enumerate(lengths) if n >= 3]
        top = [top_overlap(got[i, :n], ref[i, :n]) for i, n in enumerate(lengths) if n >= 2]
        table_rows.append([str(steps), f"{seconds:.1f}", f"{seconds / ref_time:.2f}",
                           f"{np.mean(rho):.3f}", f"{np.mean(top):.3f}"])
        print(table_rows[-1], flush=True)
    text = header("Integrated-gradients steps vs 20 (importance rankings)", args.threads, args.note)
    text += (f"- model: {args.checkpoint} ({config.method.name}/{config.model.backbone}, epoch "
             f"{ckpt['loop']['epoch']}); {args.rows} random training rows of {dataset.name}\n\n")
    text += table(["steps", "time (s)", "vs 20 steps", "mean Spearman vs 20 (n >= 3)",
                   "top-50 % overlap vs 20 (n >= 2)"], table_rows)
    print(text)
    if args.write:
        append_markdown(text)


if __name__ == "__main__":
    main()
