"""A peer in the same run: RecTools' SASRecModel on our leave-one-out split, epoch time and accuracy.

Commands (RecTools lives in its own virtual environment, see "Install" below):

    # 3 timed Beauty epochs, one torch thread, low priority (the median epoch time is reported)
    nice -n 10 /root/peer-venv/bin/python benchmarks/rectools_peer.py --epochs 3 --threads 1 \
        --output results/peer/rectools-beauty-epochs.json

    # converged run: early stopping on validation NDCG@10 (our conventions), then test once
    nice -n 10 /root/peer-venv/bin/python benchmarks/rectools_peer.py --converge --epochs 200 \
        --patience 50 --threads 1 --output results/peer/rectools-beauty-converged.json

    # end-to-end check on a tiny synthetic dataset (seconds)
    /root/peer-venv/bin/python benchmarks/rectools_peer.py --smoke-test

Install (never in the project's own environment: rectools 0.19.0 requires numpy < 2 and
pandas < 3, which the project pins at 2.4.6 and 3.1.1; the venv shadows them and reuses the
system torch 2.13.0+cpu):

    python -m venv --system-site-packages /root/peer-venv
    /root/peer-venv/bin/pip install "rectools[torch]==0.19.0" "torch==2.13.0"
    # resolves to rectools 0.19.0, pytorch-lightning 2.5.2, torchmetrics 1.9.0,
    # numpy 1.26.4, pandas 2.3.3 inside the venv; torch stays 2.13.0+cpu

Model (the eSASRec benchmark's SASRec+SS on Beauty, docs/rectools-sasrec.md): 1 block, 1 head,
d 64, dropout 0.2, session_max_len 50, loss "sampled_softmax" with 256 negatives drawn uniformly
per position (RecTools' CatalogUniformSampler; accidental hits kept, no logQ), batch 128, Adam
lr 1e-3 betas (0.9, 0.98) (hard-coded in RecTools), Xavier-normal init, no key-padding mask.
The benchmark ran RecTools 0.13.0, whose item network also applies dropout to the whole
item-embedding table (input and output side); 0.16+ removed it. This script restores it with a
subclass of IdEmbeddingsItemNet (``--item-table-dropout``, default = dropout 0.2; 0 = stock 0.19.0).

Split (ours): per user, the last item is the test target, the one before it the validation
target. RecTools is fit on each user's items except the last two (a Dataset built from them, no
``get_val_mask_func``); RecTools then keeps each user's last session_max_len + 1 = 51 of them
(its shifted-sequence window). Validation input = those training items; test input = training
items + the validation item (the last 50 known items in both cases, as RecTools' ``recommend``).

How the scores come out of RecTools: after (or during) ``fit``, the torch backbone
``model.lightning_model.torch_model`` is put in eval mode; ``item_embs =
torch_model.item_model.get_all_embeddings()`` (the item table, no dropout in eval mode) and
``user_embs = torch_model.encode_sessions({"x": x}, item_embs)[:, -1, :]`` for left-padded
internal-id sequences ``x`` (RecTools' own ``_get_user_item_embeddings`` does exactly this);
scores = ``user_embs @ item_embs.T`` (the default DistanceSimilarityModule, distance "dot"). The
internal ids are mapped back to ours with ``model.data_preparator.item_id_map``. ``--smoke-test``
checks that the top-10 of the "unseen items" protocol equals ``model.recommend(k=10,
filter_viewed=True)``.

Metrics (ours): full ranking over all items of the dataset; pessimistic ties: rank = #{items with
score >= target score}; NDCG@10 = 1/log2(rank + 1) if rank <= 10 else 0; HR@10 likewise.
"all items": nothing removed. "unseen items": every item of the user's history before the target
is removed from the ranking (the whole history, not only the last 50); a target that was seen
counts as a miss. Items RecTools never saw in training (absent from its item map) cannot be
scored: they are ranked last, and such a target counts as a miss (the count is reported).

Early stopping (``--converge``): validation NDCG@10 after every epoch under ``--select``
(default "unseen", as the eSASRec benchmark selects on history-removed Recall@10), patience
``--patience`` (default 50), at most ``--epochs`` epochs (default 200); the best epoch's weights
are restored and evaluated on validation and test once, under both protocols.

Epoch time = wall time from Lightning's on_train_epoch_start to on_train_epoch_end (RecTools'
collate, negative sampling, forward, backward, Adam); evaluation is outside it. Reported: every
epoch and the median.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, git_commit  # noqa: E402  (standard library only: fine in the venv)

ROOT = Path(__file__).resolve().parents[1]
K = 10
MISSING_RECTOOLS = ("error: rectools is not installed here: it needs its own venv (numpy < 2), see "
                    "the Install section at the top of benchmarks/rectools_peer.py")

# The eSASRec benchmark's Beauty settings (docs/rectools-sasrec.md), as ec4srec's "eSASRec" config.
ESASREC = {
    "n_blocks": 1,
    "n_heads": 1,
    "n_factors": 64,
    "dropout_rate": 0.2,
    "session_max_len": 50,
    "loss": "sampled_softmax",
    "n_negatives": 256,
    "batch_size": 128,
    "lr": 1e-3,
    "adam_betas": [0.9, 0.98],          # hard-coded inside RecTools, recorded for the record
}


# --------------------------------------------------------------------------------------------
# RecTools, imported lazily
# --------------------------------------------------------------------------------------------

def import_rectools():
    """Import what the script needs from RecTools, or exit with one line saying how to install it."""
    try:
        import pytorch_lightning as pl
        import rectools
        import torch
        from rectools import Columns
        from rectools.dataset import Dataset
        from rectools.models import SASRecModel
        from rectools.models.nn.item_net import IdEmbeddingsItemNet
    except ImportError:
        print(MISSING_RECTOOLS, file=sys.stderr)
        raise SystemExit(2)
    return {"pl": pl, "rectools": rectools, "torch": torch, "Columns": Columns,
            "Dataset": Dataset, "SASRecModel": SASRecModel, "IdEmbeddingsItemNet": IdEmbeddingsItemNet}


def table_dropout_item_net(rt, rate: float):
    """IdEmbeddingsItemNet with dropout on the whole item-embedding table (RecTools 0.13.0 behaviour).

    RecTools calls the item network on the whole catalogue once per forward
    (``get_all_embeddings``), and the same table feeds the input lookup and the output scores,
    so this drops entries of the whole table, shared by both sides, in training mode only.
    """
    torch = rt["torch"]

    class IdEmbeddingsTableDropoutItemNet(rt["IdEmbeddingsItemNet"]):
        table_dropout_rate = rate

        def __init__(self, n_factors, n_items, dropout_rate, **kwargs):
            super().__init__(n_factors, n_items, dropout_rate, **kwargs)
            self.dropout = torch.nn.Dropout(self.table_dropout_rate)

        def forward(self, items):
            return self.dropout(super().forward(items))

    IdEmbeddingsTableDropoutItemNet.__module__ = __name__
    IdEmbeddingsTableDropoutItemNet.__qualname__ = "IdEmbeddingsTableDropoutItemNet"
    globals()["IdEmbeddingsTableDropoutItemNet"] = IdEmbeddingsTableDropoutItemNet
    return IdEmbeddingsTableDropoutItemNet


# --------------------------------------------------------------------------------------------
# Data and split
# --------------------------------------------------------------------------------------------

def load_sequences(path: Path) -> list[list[int]]:
    """One line per user ``user_id item item ...`` (oldest first), gzip: the item lists, in file order."""
    seqs = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 1:
                seqs.append([int(x) for x in parts[1:]])
    return seqs


def synthetic_sequences(n_users: int = 300, n_items: int = 80, seed: int = 0) -> list[list[int]]:
    """Tiny learnable data: each next item is usually the previous item + 1 (mod n_items)."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        length = int(rng.integers(5, 25))
        item = int(rng.integers(1, n_items + 1))
        seq = [item]
        for _ in range(length - 1):
            step = 1 if rng.random() < 0.8 else int(rng.integers(2, 6))
            item = (item - 1 + step) % n_items + 1
            seq.append(item)
        seqs.append(seq)
    return seqs


def split(seqs: list[list[int]]):
    """Leave-one-out: training items, validation (history, target), test (history, target)."""
    users = [u for u, s in enumerate(seqs) if len(s) >= 3]
    train = {u: seqs[u][:-2] for u in users}
    valid = {u: (seqs[u][:-2], seqs[u][-2]) for u in users}
    test = {u: (seqs[u][:-1], seqs[u][-1]) for u in users}
    return users, train, valid, test


def interactions_frame(rt, seqs_by_user: dict[int, list[int]]):
    """RecTools interactions: one row per (user, item), datetime = position in the user's line."""
    import pandas as pd
    C = rt["Columns"]
    users, items, times = [], [], []
    for u, s in seqs_by_user.items():
        users.extend([u + 1] * len(s))
        items.extend(s)
        times.extend(range(1, len(s) + 1))
    return pd.DataFrame({C.User: np.asarray(users, dtype=np.int64), C.Item: np.asarray(items, dtype=np.int64),
                         C.Weight: np.ones(len(users), dtype=np.float32),
                         C.Datetime: np.asarray(times, dtype=np.int64)})


# --------------------------------------------------------------------------------------------
# Scores straight from RecTools' torch model, and our metrics
# --------------------------------------------------------------------------------------------

class RecToolsScorer:
    """Full-catalogue scores in OUR item ids from a fitted (or training) RecTools SASRec."""

    def __init__(self, rt, model, n_items: int):
        self.torch = rt["torch"]
        self.model = model
        self.n_items = n_items
        self.session_max_len = model.data_preparator.session_max_len
        id_map = model.data_preparator.item_id_map.to_internal      # external -> internal
        col = np.full(n_items + 1, -1, dtype=np.int64)               # our item id -> RecTools column
        for ext, internal in id_map.items():
            if isinstance(ext, (int, np.integer)) and 1 <= int(ext) <= n_items:
                col[int(ext)] = int(internal)
        self.col = col
        self.known = col >= 0
        self.known[0] = False

    def user_scores(self, torch_model, histories: list[list[int]]):
        """[n_users, n_items + 1] scores (column 0 and unknown items = -inf), eval mode, no grad."""
        torch = self.torch
        L = self.session_max_len
        x = np.zeros((len(histories), L), dtype=np.int64)
        for i, h in enumerate(histories):
            ids = self.col[np.asarray(h, dtype=np.int64)]
            ids = ids[ids >= 0][-L:]                                  # RecTools drops unknown items
            if len(ids):
                x[i, L - len(ids):] = ids                             # left padding
        with torch.no_grad():
            item_embs = torch_model.item_model.get_all_embeddings()
            sess = torch_model.encode_sessions({"x": torch.from_numpy(x)}, item_embs)[:, -1, :]
            sim = torch_model.similarity_module
            if hasattr(sim, "session_tower_forward"):                 # identity for "dot" (RT 0.17+)
                sess = sim.session_tower_forward(sess)
                item_embs = sim.item_tower_forward(item_embs)
            internal = sess @ item_embs.T                             # [n, n_map]
        out = torch.full((len(histories), self.n_items + 1), float("-inf"))
        known = torch.from_numpy(np.nonzero(self.known)[0])
        out[:, known] = internal[:, torch.from_numpy(self.col[known.numpy()])]
        return out


def evaluate(scorer: RecToolsScorer, torch_model, cases: dict[int, tuple[list[int], int]],
             batch_users: int = 1024) -> dict:
    """NDCG@10 / HR@10 under both protocols, pessimistic ties, full ranking."""
    torch = scorer.torch
    was_training = torch_model.training
    torch_model.eval()
    users = list(cases)
    ndcg = {"all": 0.0, "unseen": 0.0}
    hr = {"all": 0.0, "unseen": 0.0}
    unknown_targets = 0
    seen_targets = 0
    try:
        for start in range(0, len(users), batch_users):
            chunk = users[start:start + batch_users]
            hists = [cases[u][0] for u in chunk]
            targets = torch.tensor([cases[u][1] for u in chunk])
            scores = scorer.user_scores(torch_model, hists)
            rows = torch.arange(len(chunk))
            known_t = torch.from_numpy(scorer.known[targets.numpy()])
            unknown_targets += int((~known_t).sum())
            for protocol in ("all", "unseen"):
                s = scores
                hit_ok = known_t.clone()
                if protocol == "unseen":
                    s = scores.clone()
                    r_idx = np.concatenate([np.full(len(h), i) for i, h in enumerate(hists)]) if hists else []
                    c_idx = np.concatenate([np.asarray(h, dtype=np.int64) for h in hists]) if hists else []
                    s[torch.as_tensor(r_idx, dtype=torch.long), torch.as_tensor(c_idx, dtype=torch.long)] = float("-inf")
                    seen = torch.tensor([cases[u][1] in set(cases[u][0]) for u in chunk])
                    seen_targets += int(seen.sum())
                    hit_ok &= ~seen
                t_score = s[rows, targets].unsqueeze(1)
                rank = (s >= t_score).sum(1).double()                 # pessimistic ties, rank >= 1
                good = hit_ok & (rank <= K)
                ndcg[protocol] += float(torch.where(good, 1.0 / torch.log2(rank + 1), torch.zeros_like(rank)).sum())
                hr[protocol] += float(good.double().sum())
    finally:
        torch_model.train(was_training)
    n = len(users)
    return {"ndcg@10_all": ndcg["all"] / n, "hr@10_all": hr["all"] / n,
            "ndcg@10_unseen": ndcg["unseen"] / n, "hr@10_unseen": hr["unseen"] / n,
            "users": n, "targets_not_in_rectools_item_map": unknown_targets,
            "targets_seen_before": seen_targets}


# --------------------------------------------------------------------------------------------
# Training with Lightning callbacks: epoch timer and our early stopping
# --------------------------------------------------------------------------------------------

def make_callbacks(rt, get_scorer, valid_cases, args):
    pl = rt["pl"]

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self._t0 = None

        def on_train_epoch_start(self, trainer, pl_module):
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._t0)
            if args.verbose:
                print(f"epoch {trainer.current_epoch + 1}: {self.seconds[-1]:.2f} s", flush=True)

    class OurEarlyStopping(pl.Callback):
        """Validation NDCG@10 by our conventions after each epoch; keeps the best weights."""

        def __init__(self):
            self.history: list[dict] = []
            self.best = -1.0
            self.best_epoch = 0
            self.best_state = None
            self.bad_epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            t0 = time.perf_counter()
            scorer = get_scorer()
            m = evaluate(scorer, pl_module.torch_model, valid_cases)
            epoch = trainer.current_epoch + 1
            row = {"epoch": epoch, **{k: v for k, v in m.items() if k.startswith(("ndcg", "hr"))},
                   "eval_s": round(time.perf_counter() - t0, 3)}
            self.history.append(row)
            value = m[f"ndcg@10_{args.select}"]
            if value > self.best:
                self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
                self.best_state = copy.deepcopy(pl_module.torch_model.state_dict())
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= args.patience:
                    trainer.should_stop = True
            if args.verbose:
                print(f"  valid ndcg@10 all {m['ndcg@10_all']:.4f} unseen {m['ndcg@10_unseen']:.4f}"
                      f" (best {self.best:.4f} @ {self.best_epoch})", flush=True)

    return EpochTimer, OurEarlyStopping


def run_rectools(rt, seqs: list[list[int]], args, converge: bool, max_epochs: int) -> dict:
    torch = rt["torch"]
    pl = rt["pl"]
    pl.seed_everything(args.seed, workers=True)
    n_items = max(max(s) for s in seqs)
    users, train, valid, test = split(seqs)

    Dataset = rt["Dataset"]
    dataset = Dataset.construct(interactions_frame(rt, train))
    item_net = (table_dropout_item_net(rt, args.item_table_dropout),) if args.item_table_dropout > 0 \
        else (rt["IdEmbeddingsItemNet"],)
    model = rt["SASRecModel"](
        n_blocks=args.n_blocks, n_heads=args.n_heads, n_factors=args.n_factors,
        dropout_rate=args.dropout, session_max_len=ESASREC["session_max_len"],
        loss=ESASREC["loss"], n_negatives=args.negatives, lr=ESASREC["lr"],
        batch_size=ESASREC["batch_size"], epochs=max_epochs, deterministic=False,
        item_net_block_types=item_net, recommend_torch_device="cpu", verbose=0,
    )
    # The scorer needs RecTools' item map, which exists once fit() has processed the dataset
    # (before the first epoch): build it on first use.
    cache: dict = {}

    def get_scorer():
        if "scorer" not in cache:
            cache["scorer"] = RecToolsScorer(rt, model, n_items)
        return cache["scorer"]

    EpochTimer, OurEarlyStopping = make_callbacks(rt, get_scorer, valid, args)
    callbacks = [EpochTimer()]
    if converge:
        callbacks.append(OurEarlyStopping())
    model._trainer = pl.Trainer(              # documented way to use a custom trainer (SASRecModel docs)
        max_epochs=max_epochs, min_epochs=1, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=callbacks,
    )

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model.fit(dataset)
    fit_s = time.perf_counter() - t0
    load_after = os.getloadavg()

    fitted = model.fit_trainer.callbacks                 # fit() deep-copies the trainer
    timer = next(c for c in fitted if type(c).__name__ == "EpochTimer")
    epoch_s = timer.seconds
    out = {
        "epochs_run": len(epoch_s),
        "epoch_seconds": [round(s, 3) for s in epoch_s],
        "median_epoch_s": round(statistics.median(epoch_s), 3) if epoch_s else None,
        "fit_wall_s": round(fit_s, 2),
        "fit_overhead_s": round(fit_s - sum(epoch_s), 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "train_users": len(users),
        "items": n_items,
        "rectools_item_map_items": int(model.data_preparator.item_id_map.size) - 1,
        "train_batches_per_epoch": math.ceil(len(users) / ESASREC["batch_size"]),
    }
    scorer = RecToolsScorer(rt, model, n_items)
    torch_model = model.lightning_model.torch_model
    if converge:
        stopper = next(c for c in fitted if type(c).__name__ == "OurEarlyStopping")
        if stopper.best_state is not None:
            torch_model.load_state_dict(stopper.best_state)
        out["select"] = f"ndcg@10_{args.select}"
        out["patience"] = args.patience
        out["max_epochs"] = max_epochs
        out["best_epoch"] = stopper.best_epoch
        out["stopped_early"] = len(epoch_s) < max_epochs
        out["history"] = stopper.history
        out["valid"] = evaluate(scorer, torch_model, valid)
        out["test"] = evaluate(scorer, torch_model, test)
    out["_model"] = model
    out["_scorer"] = scorer
    out["_split"] = (users, train, valid, test)
    return out


def check_against_recommend(rt, run: dict, n_users: int = 200) -> dict:
    """Our "unseen items" top-10 from the torch model vs RecTools' recommend(filter_viewed=True)."""
    torch = rt["torch"]
    C = rt["Columns"]
    model, scorer = run["_model"], run["_scorer"]
    users, train, valid, test = run["_split"]
    chosen = users[:n_users]
    hist = {u: test[u][0] for u in chosen}                   # test input: training items + validation item
    ds = rt["Dataset"].construct(interactions_frame(rt, hist))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reco = model.recommend(users=[u + 1 for u in chosen], dataset=ds, k=K, filter_viewed=True)
    theirs = reco.groupby(C.User)[C.Item].apply(lambda s: set(int(i) for i in s)).to_dict()
    torch_model = model.lightning_model.torch_model
    torch_model.eval()
    scores = scorer.user_scores(torch_model, [hist[u] for u in chosen])
    for i, u in enumerate(chosen):
        scores[i, torch.as_tensor(hist[u], dtype=torch.long)] = float("-inf")
    top = scores.topk(K, dim=1).indices.numpy()
    same = sum(set(int(j) for j in top[i]) == theirs.get(u + 1, set()) for i, u in enumerate(chosen))
    return {"users": len(chosen), "top10_sets_equal": int(same)}


# --------------------------------------------------------------------------------------------
# Ours (same run)
# --------------------------------------------------------------------------------------------

def time_ours(args):
    """ec4srec's SASRec with the same settings, timed in the same run right after the peer:
    ``benchmarks/objective_time.py`` in the project's own interpreter (this one is the peer's
    venv), whole epochs, one thread, the eSASRec settings with negatives per target (as
    RecTools) and shared per batch (our default). Returns its JSON, or None with --no-ours."""
    if args.no_ours:
        return None
    out = Path(tempfile.mkdtemp()) / "ours.json"
    here = Path(__file__).resolve().parent
    command = [getattr(sys, "_base_executable", sys.executable), str(here / "objective_time.py"),
               "--threads", str(args.threads), "--runs", str(min(args.epochs, 3)), "--batches",
               "4" if args.smoke_test else "0", "--settings", "esasrec-target", "esasrec",
               "--json", str(out)]
    if args.smoke_test:
        command += ["--smoke-test"]
    elif args.data_dir:
        command += ["--data-dir", args.data_dir]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    subprocess.run(command, check=True, env=env)
    return json.loads(out.read_text())


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="beauty", help="<data-dir>/<dataset>.txt.gz (default beauty)")
    p.add_argument("--data-dir", default=None,
                   help="default: $EC4SREC_DATA_DIR or /work/shared/data")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs to time (default 3); with --converge the maximum (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--converge", action="store_true",
                   help="train with early stopping on validation NDCG@10, then test once")
    p.add_argument("--patience", type=int, default=50, help="epochs without improvement (default 50)")
    p.add_argument("--select", choices=["unseen", "all"], default="unseen",
                   help="protocol whose validation NDCG@10 drives early stopping (default unseen)")
    p.add_argument("--seed", type=int, default=32, help="seed_everything (default 32, the benchmark's)")
    p.add_argument("--n-factors", type=int, default=ESASREC["n_factors"])
    p.add_argument("--n-blocks", type=int, default=ESASREC["n_blocks"])
    p.add_argument("--n-heads", type=int, default=ESASREC["n_heads"])
    p.add_argument("--dropout", type=float, default=ESASREC["dropout_rate"])
    p.add_argument("--negatives", type=int, default=ESASREC["n_negatives"])
    p.add_argument("--item-table-dropout", type=float, default=None,
                   help="dropout on the whole item table (default = --dropout, RecTools 0.13.0); 0 = stock")
    p.add_argument("--output", type=Path, default=None, help="write the result JSON here (atomically)")
    p.add_argument("--smoke-test", action="store_true", help="tiny synthetic dataset, seconds")
    p.add_argument("--verbose", action="store_true", help="print every epoch")
    p.add_argument("--no-ours", action="store_true",
                   help="skip timing ec4srec's SASRec with the same settings after the peer")
    args = p.parse_args(argv)
    if args.item_table_dropout is None:
        args.item_table_dropout = args.dropout
    if args.epochs is None:
        args.epochs = 4 if args.smoke_test else (200 if args.converge else 3)
    if args.smoke_test and args.patience == 50:
        args.patience = 1
    if args.smoke_test and args.negatives == ESASREC["n_negatives"]:
        args.negatives = 32                            # seconds, not minutes, on a loaded core
    for name in ("epochs", "threads", "patience"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)            # before torch is imported
    rt = import_rectools()
    torch = rt["torch"]
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", category=FutureWarning, module="rectools")
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings")   # custom item net type
    import logging
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)

    if args.smoke_test:
        seqs = synthetic_sequences()
        source = "synthetic (300 users, 80 items)"
    else:
        data_dir = Path(args.data_dir or os.environ.get("EC4SREC_DATA_DIR") or "/work/shared/data")
        path = data_dir / f"{args.dataset}.txt.gz"
        if not path.exists():
            print(f"error: {path} not found (see /work/shared/data/README.md)", file=sys.stderr)
            return 2
        seqs = load_sequences(path)
        source = str(path)

    import pandas
    import pytorch_lightning
    result = {
        "peer": "rectools.SASRecModel",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                    "python": platform.python_version()},
        "versions": {"rectools": rt["rectools"].__version__, "torch": torch.__version__,
                     "pytorch_lightning": pytorch_lightning.__version__,
                     "numpy": np.__version__, "pandas": pandas.__version__},
        "data": source,
        "settings": {**ESASREC, "n_blocks": args.n_blocks, "n_heads": args.n_heads,
                     "n_factors": args.n_factors, "dropout_rate": args.dropout,
                     "n_negatives": args.negatives, "item_table_dropout": args.item_table_dropout,
                     "negative_sampler": "CatalogUniformSampler (uniform per position, hits kept, no logQ)",
                     "use_key_padding_mask": False, "seed": args.seed},
        "protocols": {"all": "full ranking, nothing removed",
                      "unseen": "full ranking, the user's whole history before the target removed"},
        "ties": "pessimistic: rank = #{items with score >= target score}",
    }
    run = run_rectools(rt, seqs, args, converge=args.converge or args.smoke_test, max_epochs=args.epochs)
    if args.smoke_test:
        run["recommend_check"] = check_against_recommend(rt, run)
    result["rectools"] = {k: v for k, v in run.items() if not k.startswith("_")}
    result["ours"] = time_ours(args)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    r = result["rectools"]
    print(f"rectools {result['versions']['rectools']} SASRec on {source}: {r['epochs_run']} epochs, "
          f"median {r['median_epoch_s']} s/epoch ({r['epoch_seconds']}), load {r['loadavg_after']}")
    if "test" in r:
        for split_name in ("valid", "test"):
            m = r[split_name]
            print(f"  {split_name} (best epoch {r['best_epoch']}): NDCG@10 all {m['ndcg@10_all']:.4f} "
                  f"unseen {m['ndcg@10_unseen']:.4f} | HR@10 all {m['hr@10_all']:.4f} "
                  f"unseen {m['hr@10_unseen']:.4f} | targets not in RecTools' map "
                  f"{m['targets_not_in_rectools_item_map']}")
    if args.smoke_test:
        c = r["recommend_check"]
        print(f"  recommend(filter_viewed=True) check: top-10 sets equal for {c['top10_sets_equal']}"
              f"/{c['users']} users")
        if c["top10_sets_equal"] < 0.98 * c["users"]:
            print("error: scores from the torch model disagree with RecTools' recommend", file=sys.stderr)
            return 1
    if args.output is not None:
        write_json_atomic(args.output, result)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
