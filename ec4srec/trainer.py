"""The training loop, top to bottom: epochs of trimmed batches, validation every epoch, early
stopping on validation NDCG@10 (of the protocol ``train.select_protocol`` names), best state
restored, test evaluated once at the end.

Contracts:
- The test split is read only by :meth:`Trainer.test`, which ``fit`` calls once after
  training (``fit(run_test=False)`` never touches it: the search uses that).
- A checkpoint holds everything the loop depends on (model, optimizer, RNG states, epoch,
  early-stopping state, best weights, method state such as importance scores), written
  atomically; resuming from it reproduces the uninterrupted run exactly on CPU, also from the
  mid-epoch checkpoints a run with an output folder writes (interrupt.py).
- ``train.precision`` is resolved once per run (:func:`~ec4srec.precision.resolve_precision`)
  and recorded in metrics.json; bf16 runs each step's forward and loss under autocast, backward
  and the Adam step outside it (fp32 parameters and optimizer state).
- The loop itself reads nothing back from the device per step: per-batch losses are summed on
  the device and read back once per epoch (the method's loss may still sync; docs/precision.md).
- ``train.objective=all_positions`` trains on user-sequence rows
  (:func:`~ec4srec.data.split.sequence_rows`): ``self.data.train`` holds those rows, so the
  method (views, same-target partners, importance scores) works per user sequence.
- Epoch-end callbacks ``cb(trainer, epoch, metrics) -> bool | None`` may save checkpoints or
  ask to stop (return True). This module never imports Ray.
- ``history.csv`` (one row per epoch) is rewritten with every checkpoint and at the end.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .checkpoint import (CheckpointError, atomic_write_json, atomic_write_text, capture_rng, load_torch,
                         restore_rng, save_torch)
from .config import Config, ConfigError, dump_config
from .data import Dataset
from .data.batches import make_batch, train_order
from .data.split import sequence_rows
from .device import hardware, resolve_device  # noqa: F401  (importable from here too)
from .evaluate import evaluate, select_key
from .methods import build_method
from .interrupt import EpochCursor, SaveClock, clocks, deferred_sigint, since
from .loop_state import LoopState, history_csv
from .models import bank_origins, build_model, refresh_dropout_banks, restore_banks
from .precision import autocast, resolve_precision

CHECKPOINT = "checkpoint.pt"
WARMUP_CHECKPOINT = "warmup.pt"     # guided runs: the state after the last warm-up epoch
HISTORY = "history.csv"
SELECT_METRIC = "ndcg@10"          # of the protocol train.select_protocol names (select_key)
Callback = Callable[["Trainer", int, dict], "bool | None"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Trainer:
    def __init__(self, config: Config, dataset: Dataset, output_dir: str | Path | None = None,
                 callbacks: list[Callback] | None = None, log: Callable[[str], None] | None = None):
        self.config = config
        self.dataset = dataset
        self.data = dataset.split
        if config.train.objective == "all_positions":
            self.data = replace(self.data, train=sequence_rows(self.data.train, self.data.max_len))
        self.output_dir = Path(output_dir) if output_dir else None
        self.callbacks = list(callbacks or [])
        self.log = log or (lambda msg: print(msg, flush=True))
        tc = config.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(tc.device)
        self.precision = resolve_precision(tc.precision, self.device)     # "fp32" | "bf16"
        torch.manual_seed(tc.seed)
        self.rng = np.random.default_rng(tc.seed)
        self.model = build_model(config.model, self.data.num_items, self.data.max_len).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr,
                                          betas=(tc.adam_beta1, tc.adam_beta2),
                                          weight_decay=tc.weight_decay, fused=True)
        self.method = build_method(config, self.data, self.model)
        self.method.device = self.device
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.warm_start: dict[str, Any] | None = None     # set by load_warmup
        self._cursor: EpochCursor | None = None            # set by a mid-epoch checkpoint
        self._writer = None
        # minutes since the last checkpoint of any kind (epoch-end ones reset it): a run with
        # train.checkpoint_every > 1 and short epochs still checkpoints every few minutes
        self._save_clock = SaveClock(config.train.checkpoint_minutes if self.output_dir else 0.0)
        # Training draws from torch's global RNG; keep its post-init state so that building
        # another Trainer before fit() cannot change this run's numbers.
        self._initial_rng = capture_rng(self.rng)

    # ------------------------------------------------------------------ the loop
    def fit(self, run_test: bool = True) -> dict[str, Any]:
        """Train until the epoch budget or early stopping; then restore the best weights and
        (if ``run_test``) evaluate the test split once. Returns the metrics record."""
        tc = self.config.train
        if self.state.epoch == 0 and self._cursor is None:
            restore_rng(self._initial_rng, self.rng)
        self._write_config()
        self.log(self.plan_line())
        with deferred_sigint(enabled=self.output_dir is not None) as interrupt:
            while not self.state.finished(tc.epochs, tc.patience, tc.min_epochs):
                self._train_one_epoch(interrupt)
        return self.finish(run_test)

    def _train_one_epoch(self, interrupt=None) -> None:
        """The next epoch: importance update (unless resumed mid-epoch after it), training,
        validation, early stopping, checkpoints and callbacks."""
        epoch = self.state.epoch + 1
        started = clocks()                                 # (wall, CPU)
        cursor, self._cursor = self._cursor, None          # a run resumed mid-epoch
        if cursor is None:
            updated = self.method.on_epoch_start(epoch)
        else:
            updated = epoch in self.method.update_epochs   # done before the checkpoint
        # (wall, CPU) seconds a run resumed mid-epoch spent on it (train_epoch moves them on)
        before = (cursor.seconds, cursor.cpu_seconds) if cursor else (0.0, 0.0)
        train_stats = self.train_epoch(epoch, cursor, interrupt, started)
        valid = self.validate()
        self.state.count_seconds(*since(started, before))
        stop = self._end_epoch(epoch, train_stats, valid)
        if self.output_dir is not None and (self._checkpoint_due(epoch, updated) or stop):
            self.save_checkpoint()
            self._write_history()
        if self.output_dir is not None and self.method.update_epochs \
                and epoch == self.method.update_epochs[0] - 1:
            self.save_checkpoint(self.output_dir / WARMUP_CHECKPOINT)   # for --warm-start
        for callback in self.callbacks:
            stop = bool(callback(self, epoch, {**train_stats, **valid})) or stop
        if stop:
            self.state.stopped_early = True
        if interrupt is not None and interrupt.requested:   # Ctrl-C after the last batch
            self.save_checkpoint()
            self._write_history()
            raise KeyboardInterrupt(f"after epoch {epoch}")

    def finish(self, run_test: bool = True) -> dict[str, Any]:
        """Restore the best weights, evaluate the test split once (if ``run_test``) and write
        metrics.json. ``fit`` ends with this; called directly on a resumed trainer it ends a run
        before its epoch budget (``epochs_run`` < ``train.epochs`` in the record says so)."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
        record = self.metrics_record(test=self.test() if run_test else None)
        if self.output_dir:
            self.save_checkpoint()
            self._write_history()
            atomic_write_json(self.output_dir / "metrics.json", record)
        self._close_writer()
        return record

    def train_epoch(self, epoch: int, cursor: EpochCursor | None = None, interrupt=None,
                    started: tuple[float, float] | None = None) -> dict[str, float]:
        """One pass over all training rows in length-bucketed, shuffled batches (the rest of
        ``cursor``'s when resumed mid-epoch). With ``interrupt`` (interrupt.deferred_sigint)
        a Ctrl-C, and every ``train.checkpoint_minutes``, writes a mid-epoch checkpoint
        between two steps; the Ctrl-C then raises KeyboardInterrupt."""
        tc = self.config.train
        started = clocks() if started is None else started
        self.model.train()
        if cursor is None:
            refresh_dropout_banks(self.model)
            order = train_order(self.data.train.length, tc.batch_size, self.rng, tc.bucket_batches)
            cursor = EpochCursor(epoch, order, bank_origins())
        else:
            restore_banks(cursor.banks)
        spent_before = (cursor.seconds, cursor.cpu_seconds)
        totals: dict[str, Any] = dict(cursor.totals)
        clock = self._save_clock
        for i in self._progress(range(cursor.step, len(cursor.order)), epoch, len(cursor.order)):
            loss, parts = self.train_step(cursor.order[i], epoch)
            for key, value in {"loss": loss, **parts}.items():
                totals[key] = totals.get(key, 0.0) + value.float()      # on the device, fp32
            asked = interrupt is not None and interrupt.requested
            if (asked or clock.due()) and i + 1 < len(cursor.order):
                cursor.step, cursor.totals = i + 1, {k: float(v) for k, v in totals.items()}
                cursor.seconds, cursor.cpu_seconds = since(started, spent_before)
                cursor.banks = bank_origins()      # a bank may have been redrawn larger
                self.save_checkpoint(mid_epoch=cursor)
                if asked:
                    raise KeyboardInterrupt(f"epoch {epoch}, after batch {i + 1} of "
                                            f"{len(cursor.order)}")
        stats = {f"train/{k}": float(v) / len(cursor.order) for k, v in totals.items()}   # 1 read-back
        if not np.isfinite(stats["train/loss"]):
            raise NonFiniteLossError(f"epoch {epoch}: training loss is {stats['train/loss']}")
        return stats

    def train_step(self, rows: np.ndarray,
                   epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One Adam step on training rows ``rows``: batch to the device, forward and loss under
        the run's autocast, backward and step outside it. Returns the detached loss and its
        parts, still on the device (this method reads nothing back from the device)."""
        batch = make_batch(self.data.items, self.data.train, rows,
                           next_items=self.config.train.objective == "all_positions").to(self.device)
        self.model.begin_step()                 # this step's item-table dropout (models/base.py)
        with autocast(self.precision, self.device):
            loss, parts = self.method.loss(batch, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), parts

    def validate(self) -> dict[str, float]:
        m = evaluate(self.model, self.data, self.data.valid, self.config.train.eval_batch_size,
                     self.config.train.mask_history, self.device, precision=self.precision)
        return {f"valid/{k}": v for k, v in m.items()}

    def test(self) -> dict[str, float]:
        """The single read of the test split (after model selection on validation)."""
        return evaluate(self.model, self.data, self.data.test, self.config.train.eval_batch_size,
                        self.config.train.mask_history, self.device, precision=self.precision)

    # ------------------------------------------------------------------ bookkeeping
    def _end_epoch(self, epoch: int, train_stats: dict, valid: dict) -> bool:
        """Record the epoch, update early stopping; True when patience has run out."""
        st, tc = self.state, self.config.train
        st.epoch = epoch
        score = valid[f"valid/{self.select_metric}"]
        st.history.append({"epoch": epoch, **train_stats, **valid})
        if score > st.best_score:
            st.best_score, st.best_epoch, st.bad_epochs = score, epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif epoch >= self._patience_starts():
            st.bad_epochs += 1
        self._tensorboard(epoch, {**train_stats, **valid})
        shown = [(name, valid.get(f"valid/{key}")) for name, key in (
            ("ndcg@10", "ndcg@10"), ("unseen", "ndcg@10_unseen"), ("hr@10", "hr@10"),
            ("last-top1", "last_item_top1"))]
        self.log(f"epoch {epoch:4d}/{tc.epochs}  loss {train_stats['train/loss']:.4f}  valid "
                 + " ".join(f"{n} {v:.4f}" for n, v in shown if v is not None)
                 + f"  best {st.best_score:.4f}@{st.best_epoch}  ({st.train_seconds:.0f}s, "
                 f"at most {_minutes(st.train_seconds / epoch * (tc.epochs - epoch))} left)")
        return st.patience_ran_out(tc.patience, tc.min_epochs)

    def plan_line(self) -> str:
        """What the run will do, printed before the first epoch it trains."""
        tc, st, stats = self.config.train, self.state, self.dataset.stats()
        batches = -(-len(self.data.train) // tc.batch_size)
        where = f"from epoch {st.epoch + 1}" if st.epoch else "from scratch"
        if self._cursor is not None:
            where = (f"from epoch {self._cursor.epoch}, batch {self._cursor.step + 1} of "
                     f"{len(self._cursor.order)}")
        return (f"{stats['dataset']}: {stats['users']:,} users, {stats['items']:,} items, "
                f"{len(self.data.train):,} training rows ({tc.objective}, {tc.loss}), "
                f"{batches:,} batches per epoch; {self.config.method.name} on "
                f"{self.config.model.backbone}, {where}, up to {tc.epochs} epochs, stopping after "
                f"{tc.patience} without a better valid {self.select_metric} "
                f"({tc.select_protocol} items)")

    @property
    def select_metric(self) -> str:
        """The validation metric that selects the best epoch and stops early."""
        return select_key(self.config.train.select_protocol, SELECT_METRIC)

    def _patience_starts(self) -> int:
        """Early stopping counts only from the first importance update on, so an
        explanation-guided method is never stopped before its guided phase has begun."""
        updates = self.method.update_epochs
        return updates[0] if updates else 0

    def _checkpoint_due(self, epoch: int, updated: bool) -> bool:
        return updated or epoch % self.config.train.checkpoint_every == 0

    def metrics_record(self, test: dict | None) -> dict[str, Any]:
        st = self.state
        best = next((h for h in st.history if h["epoch"] == st.best_epoch), {})
        return {
            "method": self.config.method.name, "backbone": self.config.model.backbone,
            "dataset": self.dataset.name, "best_epoch": st.best_epoch, "epochs_run": st.epoch,
            "stopped_early": st.stopped_early, "epoch_budget": self.config.train.epochs,
            "valid": {k.split("/", 1)[1]: v for k, v in best.items() if k.startswith("valid/")},
            "test": test, "wall_time_s": round(st.train_seconds, 2),
            "seconds_per_epoch": round(st.train_seconds / max(st.epoch, 1), 3),
            "update_epochs": self.method.update_epochs,
            "data": {**self.dataset.stats(), "rows_trained": len(self.data.train)},
            "hardware": hardware(), "device": str(self.device), "precision": self.precision,
            **({"warm_start": self.warm_start} if self.warm_start else {}),
        }

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self, mid_epoch: EpochCursor | None = None) -> dict[str, Any]:
        """Everything the loop depends on; ``mid_epoch``: where the epoch under way stands
        (the loop state is then the last completed epoch's)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(self.rng), "loop": asdict(self.state),
                "best_weights": self.best_weights, "method": self.method.state_dict(),
                "config": self.config.to_dict(), "warm_start": self.warm_start,
                "runtime": self.runtime(),
                **({"mid_epoch": mid_epoch.state_dict()} if mid_epoch else {})}

    def runtime(self) -> dict[str, Any]:
        """What numbers depend on beyond the config: device type, precision, torch threads
        and version (a warm-up is only shared between runs with the same)."""
        return {"device": self.device.type, "precision": self.precision,
                "threads": torch.get_num_threads(), "torch": torch.__version__}

    def save_checkpoint(self, path: str | Path | None = None,
                        mid_epoch: EpochCursor | None = None) -> Path:
        path = Path(path) if path else self.output_dir / CHECKPOINT
        save_torch(path, self.checkpoint_state(mid_epoch))
        if self.output_dir is not None and path == self.output_dir / CHECKPOINT:
            self._save_clock.restart()          # (not warmup.pt: a resume does not read it)
        return path

    def load_checkpoint(self, path: str | Path, method_state: bool = True) -> None:
        """Restore everything :meth:`checkpoint_state` saved; training continues after
        the checkpoint's epoch exactly as the uninterrupted run would have. With
        ``method_state=False`` the method keeps its own state (the search's shared warm-up
        phase: importance scores are not part of a warm-up)."""
        ckpt = load_torch(path)
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path}: not an ec4srec trainer checkpoint")
        missing = [k for k in ("model", "optimizer", "rng", "loop", "best_weights")
                   + (("method",) if method_state else ()) if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path}: not an ec4srec trainer checkpoint (no {', '.join(missing)})")
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            restore_rng(ckpt["rng"], self.rng)
            self.state = LoopState(**ckpt["loop"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            # load_state_dict lists every mismatching tensor; its first one names the problem
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = " ".join(lines[1:2] or lines[:1])[:200]
            raise CheckpointError(f"{path}: does not fit this run's model/config: {detail}") from None
        self.best_weights = ckpt["best_weights"]
        self.warm_start = ckpt.get("warm_start")
        try:        # a checkpoint written mid-epoch: the epoch goes on where it stopped
            self._cursor = EpochCursor.from_state(ckpt["mid_epoch"]) if "mid_epoch" in ckpt else None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise CheckpointError(f"{path}: its mid-epoch state is malformed") from None
        if self._cursor is not None and not self._cursor.covers(len(self.data.train)):
            raise CheckpointError(
                f"{path}: written mid-epoch over other training rows than this run's "
                f"{len(self.data.train)} (another train.objective than "
                f"{self.config.train.objective!r}, or other data): resume it with the settings "
                f"it was written with")
        if method_state:
            self.method.load_state_dict(ckpt["method"])

    def load_warmup(self, path: str | Path) -> None:
        """Start from another guided run's last warm-up epoch (its ``warmup.pt``): model,
        optimizer, RNG, loop state (history, best so far, seconds) and best weights, as if
        this run had trained those epochs itself, which it would have done bit-identically
        (the caller checks :func:`~ec4srec.warmup.warmup_mismatch`). The metrics
        record keeps where the warm-up came from and what it cost (``warm_start``). A donor
        trained on another device type, precision, thread count or torch version would not
        give the same numbers: ConfigError naming what differs (not checked for donors
        written before the checkpoint recorded it)."""
        donor = load_torch(path).get("runtime")
        if donor:
            mine = self.runtime()
            differ = [f"{k} {donor.get(k)!r} vs {v!r}" for k, v in mine.items() if donor.get(k) != v]
            if differ:
                raise ConfigError(f"--warm-start: {path} was trained with another runtime: "
                                  f"{', '.join(differ)}")
        self.load_checkpoint(path, method_state=False)
        self.warm_start = {"from": str(path), "epochs": self.state.epoch,
                           "seconds": round(self.state.train_seconds, 2)}

    # ------------------------------------------------------------------ output
    def _write_config(self) -> None:
        if self.output_dir:
            atomic_write_text(self.output_dir / "config.yaml", dump_config(self.config))

    def _write_history(self) -> None:
        """history.csv: one row per epoch (train losses, validation metrics), rewritten
        atomically with each checkpoint; the validation curve of the run (tune/report.py)."""
        if self.state.history:
            atomic_write_text(self.output_dir / HISTORY, history_csv(self.state.history))

    def _tensorboard(self, epoch: int, scalars: dict[str, float]) -> None:
        if not (self.output_dir and self.config.train.tensorboard):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(str(self.output_dir / "tb"), purge_step=epoch)
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, epoch)
        self._writer.flush()

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _progress(self, steps: range, epoch: int, total: int):
        mode = self.config.train.progress
        if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
            return steps
        from tqdm import tqdm
        return tqdm(steps, desc=f"epoch {epoch}", leave=False, unit="batch", total=total,
                    initial=steps.start)
