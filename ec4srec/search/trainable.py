"""The Ray Tune trainable: one trial = one :class:`~ec4srec.trainer.Trainer` run.

Contracts:
- Every epoch the trial reports validation metrics (``valid/*``, both protocols, never test),
  training losses (``train/*``), ``valid/select_ndcg@10`` (this epoch's NDCG@10 under
  ``train.select_protocol``: ASHA's metric), ``valid/best_ndcg@10`` (the best of it so far: the
  searcher's objective), ``epoch``, ``guided_epoch``
  (epochs since the first importance update, counting it; ASHA's clock), its ``method`` and
  ``backbone`` and where it ran (``node_id``, ``node_ip``, ``pid``).
- A trainer checkpoint (model, optimizer, RNG, loop and method state, importance scores
  included) goes with the report at every ``checkpoint_every``-th epoch, every importance-update
  epoch, every ASHA decision epoch and the last epoch. A trial restarted by Ray (worker crash,
  driver restore) continues from ``tune.get_checkpoint()`` exactly as if never interrupted.
- Without a Ray checkpoint, a trial whose config names a carried trial (``carry.CARRIED_KEY``)
  continues from that trial's carried checkpoint (carry.py; the bytes come in ``study["carried"]``).
- Without either, an explanation-guided trial starts from the shared warm-up cache
  (warmcache.py) when one fits, and reports the epochs it skipped as ``warm_start_epoch``.
- NaN/inf loss raises :class:`NonFiniteLossError`, so the trial ends in ERROR; a marker in the
  trial folder makes Ray's retries (FailureConfig.max_failures) fail at once instead of
  training again.
- A trial that ends on its own (its epoch budget or early stopping) first writes its last
  report to ``FINISHED.json`` in its folder on the storage path (where the checkpoints go, so a
  later driver and any node see it). Restored again (a driver died before Ray's experiment
  snapshot recorded the end), it trains nothing: it repeats that report once (a replay:
  ``restored_from_epoch == epoch``, :func:`is_replay`; the same keys as every report) and ends.
- :func:`run_trial` is Ray-free given a session object; :class:`LocalSession` runs it in tests.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ..checkpoint import CheckpointError, atomic_write_json
from ..config import Config
from ..data import load_dataset
from ..trainer import CHECKPOINT, NonFiniteLossError, Trainer
from . import finals
from .carry import CARRIED_KEY
from .space import apply_params
from .trial_files import FINISHED_MARKER, OBJECTIVE, TRAINER_FILE
from .warmcache import WarmupCache

NONFINITE_MARKER = "NONFINITE"
_DATASETS: dict[str, Any] = {}          # per worker process; reuse_actors keeps it warm


def dataset_for(data_config):
    key = json.dumps(asdict(data_config), sort_keys=True)
    if key not in _DATASETS:
        _DATASETS.clear()
        _DATASETS[key] = load_dataset(data_config)
    return _DATASETS[key]


def where() -> dict[str, Any]:
    info = {"pid": os.getpid(), "hostname": socket.gethostname()}
    if ray.is_initialized():
        info["node_id"] = ray.get_runtime_context().get_node_id()
        info["node_ip"] = ray.util.get_node_ip_address()
    return info


class TuneSession:
    """The trial's side of Ray Tune: checkpoints in, reports out."""

    @property
    def trial_dir(self) -> Path:
        return Path(tune.get_context().get_trial_dir())

    def _finished_path(self):
        storage = tune.get_context().get_storage()      # the trial's folder on the storage path
        return storage.storage_filesystem, f"{storage.trial_fs_path}/{FINISHED_MARKER}"

    def read_finished(self) -> dict[str, Any] | None:
        fs, path = self._finished_path()
        try:
            with fs.open_input_stream(path) as f:
                return json.loads(f.read())
        except (FileNotFoundError, ValueError):     # none, or torn: the trial trains again
            return None

    def write_finished(self, report: dict[str, Any]) -> None:
        fs, path = self._finished_path()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path + ".tmp") as f:
            f.write(json.dumps(report).encode())
        fs.move(path + ".tmp", path)                      # a rename on a local or shared disk

    def restore(self, trainer: Trainer) -> int:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return 0
        with checkpoint.as_directory() as d:
            trainer.load_checkpoint(Path(d) / TRAINER_FILE)
        return trainer.state.epoch

    def report(self, metrics: dict[str, Any], trainer: Trainer | None) -> None:
        if trainer is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="ec4srec-ckpt-") as d:
            trainer.save_checkpoint(Path(d) / TRAINER_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))   # persists now


class LocalSession:
    """A Ray-free session for tests: keeps reports, checkpoints in ``trial_dir/ckpt_<epoch>``;
    ``stop_after`` raises KeyboardInterrupt after that epoch's report (a simulated crash)."""

    def __init__(self, trial_dir: str | Path, restore_from: str | Path | None = None,
                 stop_after: int | None = None):
        self.trial_dir = Path(trial_dir)
        self.restore_from = restore_from
        self.stop_after = stop_after
        self.reports: list[dict[str, Any]] = []
        self.checkpoints: list[Path] = []

    def read_finished(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.trial_dir / FINISHED_MARKER).read_text())
        except (FileNotFoundError, ValueError):     # none, or torn: the trial trains again
            return None

    def write_finished(self, report: dict[str, Any]) -> None:
        atomic_write_json(self.trial_dir / FINISHED_MARKER, report)

    def restore(self, trainer: Trainer) -> int:
        if self.restore_from is None:
            return 0
        trainer.load_checkpoint(self.restore_from)
        return trainer.state.epoch

    def report(self, metrics: dict[str, Any], trainer: Trainer | None) -> None:
        self.reports.append(dict(metrics))
        if trainer is not None:
            self.checkpoints.append(trainer.save_checkpoint(self.trial_dir / f"ckpt_{metrics['epoch']}.pt"))
        if self.stop_after is not None and metrics["epoch"] >= self.stop_after:
            raise KeyboardInterrupt(f"simulated crash after epoch {metrics['epoch']}")


def run_trial(params: dict[str, Any], study: dict[str, Any], session) -> None:
    """Train one trial. ``params``: the searched dotted keys; ``study``: the constants of the
    study (``base`` config dict, ``warmup_dir``, ``warmup_epochs``, ``checkpoint_every``,
    ``decision_epochs`` (ASHA milestones, in guided epochs), ``verbose``, and optional
    ``epoch_hooks``: picklable callables ``hook(session, epoch, restored)`` run after each
    epoch, before its report, e.g. to throttle or fault-inject trials from a test)."""
    carried = params.get(CARRIED_KEY)             # it continues a carried trial (carry.py)
    config = apply_params(study["base"], {k: v for k, v in params.items() if k != CARRIED_KEY})
    marker = session.trial_dir / NONFINITE_MARKER
    if marker.exists():                         # a retry of a diverged trial: fail at once
        raise NonFiniteLossError(marker.read_text())
    finished = session.read_finished()
    if finished is not None:                    # it ended under an earlier driver: end again
        session.report({**finished, "restored_from_epoch": finished["epoch"]}, None)
        return
    log = (lambda m: print(m, flush=True)) if study.get("verbose") else (lambda m: None)
    trainer = Trainer(config, dataset_for(config.data), log=log)
    updates = list(trainer.method.update_epochs)
    first = updates[0] if updates else 0
    cache = (WarmupCache(study["warmup_dir"], study.get("warmup_epochs"))
             if study.get("warmup_dir") and first > 1 else None)
    restored = session.restore(trainer) or load_carried(trainer, study, carried)
    waited = cache.wait_for_producer(trainer.config, first) if cache and not restored else 0.0
    warm = cache.load_into(trainer, first) if cache and not restored else 0
    every = int(study.get("checkpoint_every", 1))
    decisions = set(study.get("decision_epochs") or [])
    static = {"method": config.method.name, "backbone": config.model.backbone,
              "warmup_wait_s": round(waited, 1),
              "first_update": first, "restored_from_epoch": restored, "warm_start_epoch": warm,
              **where()}
    tc = config.train

    last = {"seconds": trainer.state.train_seconds}     # for the warm-up lease's epoch time

    def on_epoch(tr: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if cache and cache.wants(epoch, first):
            cache.store(tr, epoch)
        if cache and epoch < first:
            cache.renew_lease(tr, epoch, first, tr.state.train_seconds - last["seconds"])
        last["seconds"] = tr.state.train_seconds
        for hook in study.get("epoch_hooks") or ():
            hook(session, epoch, restored)
        st = tr.state
        guided = epoch - first + 1 if first else epoch
        early = st.patience_ran_out(tc.patience, tc.min_epochs)
        out = {k: v for k, v in metrics.items() if k.startswith(("valid/", "train/"))}
        out.update({"epoch": epoch, "guided_epoch": max(guided, 0),
                    # the protocol train.select_protocol names (evaluate.py): what ASHA compares
                    # this epoch and the searcher maximises at the end
                    "valid/select_ndcg@10": metrics[f"valid/{tr.select_metric}"],
                    OBJECTIVE: max(st.best_score, 0.0), "best_epoch": st.best_epoch,
                    "importance_update": epoch in updates, "early_stop": early,
                    "train_seconds": round(st.train_seconds, 3),
                    "train_cpu_seconds": round(st.train_cpu_seconds, 3), **static})
        last_epoch = st.finished(tc.epochs, tc.patience, tc.min_epochs)
        if last_epoch:
            session.write_finished(out)
        save = epoch % every == 0 or epoch in updates or guided in decisions or last_epoch
        session.report(out, tr if save else None)

    trainer.callbacks.append(on_epoch)
    if restored and trainer.state.finished(tc.epochs, tc.patience, tc.min_epochs):
        # continued from a checkpoint of its last epoch (its end lost before its record
        # landed): that epoch's report again, as the uninterrupted trial's last one
        on_epoch(trainer, trainer.state.epoch, trainer.state.history[-1])
        return
    try:
        trainer.fit(run_test=False)
    except NonFiniteLossError as exc:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(exc))
        raise


def load_carried(trainer: Trainer, study: dict[str, Any], carried: str | None) -> int:
    """Load the carried checkpoint of trial ``carried`` (``study["carried"]``: trial id ->
    its bytes, what the driver read and checked) into ``trainer``; returns its epoch, 0 when
    there is none to continue (the trial then starts from scratch, and says so)."""
    if not carried:
        return 0
    data = (study.get("carried") or {}).get(str(carried))
    if data is None:
        print(f"[trial] the checkpoint carried for trial {carried} is not in this run's study "
              "constants: starting from scratch", flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="ec4srec-carried-") as d:
        path = Path(d) / TRAINER_FILE
        path.write_bytes(data)
        trainer.load_checkpoint(path)
    return trainer.state.epoch


def is_replay(result: dict[str, Any]) -> bool:
    """A finished trial's repeated last report (see the module docstring): nothing trained."""
    return "epoch" in result and result.get("restored_from_epoch") == result["epoch"]


def train_trial(params: dict[str, Any], study: dict[str, Any]) -> None:
    """The function trainable (wrap with ``tune.with_parameters(train_trial, study=...)``)."""
    run_trial(params, study, TuneSession())


def retrain_seed(config_dict: dict[str, Any], seed: int,
                 work_dir: str | None = None) -> dict[str, Any]:
    """Train a final config with ``train.seed = seed`` and test it once (Trainer.fit(run_test=True)).
    Returns the trainer's metrics record plus where it ran and ``resumed_from_epoch``. Without
    ``work_dir`` it writes nothing. With it the job is the trainer's output folder there: it
    checkpoints as a run does (``train.checkpoint_every``, ``train.checkpoint_minutes``) and
    continues from the checkpoint it finds (a seed job its machine lost, carried in the
    durable state: seeds.SeedPhase), reporting exactly what the uninterrupted job would; a
    checkpoint that cannot be loaded is named in one line and the job starts from scratch. A
    search trial's final placed there (finals.py) is tested without training; the record then
    names the trial (``from_trial``). The record holds the job's ``config`` (study.set_aside_stale)."""
    config = Config.from_dict(config_dict)
    config.train.seed = seed
    dataset = dataset_for(config.data)
    trainer = Trainer(config, dataset, output_dir=work_dir, log=lambda m: None)
    resumed, from_trial = 0, None
    if work_dir and (Path(work_dir) / CHECKPOINT).is_file():
        try:     # a search trial's final (finals.py: tested, not trained) or the job's own
            from_trial = finals.load_final(trainer, work_dir)
            if from_trial is None:
                trainer.load_checkpoint(Path(work_dir) / CHECKPOINT)
            resumed = trainer.state.epoch
        except CheckpointError as exc:
            print(f"[seeds] {exc}: seed {seed} starts from scratch", flush=True)
            (Path(work_dir) / finals.FROM_TRIAL).unlink(missing_ok=True)
            trainer = Trainer(config, dataset, output_dir=work_dir, log=lambda m: None)
            from_trial = None
    with contextlib.redirect_stdout(None):
        record = trainer.fit(run_test=True)
    return {**record, "seed": seed, "resumed_from_epoch": resumed,
            **({"from_trial": from_trial} if from_trial else {}), **where(),
            "config": config.to_dict()}
