"""Every use of Ray Tune's and Optuna's private internals, in one place, for the pinned
versions (:data:`PINNED`: pyproject.toml pins them). tests/test_search_compat.py checks that
each internal named here still exists and fails loudly when a version changes, so an upgrade
starts by re-reading this file.

What relies on internals, and why:
- :func:`serialise_ray_registry`: Ray's trainable registry (``ray.tune.registry._Registry``) is
  not thread-safe; concurrent Tuners (``--concurrent-runs``) register under a lock.
- :func:`restored_tune_config` / :func:`restored_run_config`: a restored Tuner's pickled
  TuneConfig (its trial count) and RunConfig (the searcher, stopper and callbacks that came
  back with it, which get the new driver's budget: :func:`attach_budget`), via
  ``Tuner._local_tuner``.
- :func:`optuna_search_state`: Ray's OptunaSearch keeps its Optuna study, its Ray-trial ->
  Optuna-trial map and its finished trials in private attributes; the restore of
  watch.BudgetedOptunaSearch reconciles them with the Optuna storage (Optuna's
  ``Study._storage``, ``Trial._trial_id``).
- :func:`replay_asha`: a new ASHA scheduler's rungs (``_brackets``, ``_Bracket._rungs`` and
  ``on_result``, ``_time_attr``, ``_metric``, ``_metric_op``) are given the results of the
  trials a run ended before its Tuner was made (a reopened run, a resume from the durable
  state), so its decisions are the ones an uninterrupted run's ASHA would make.
- :func:`repoint_lost_checkpoints`: a restored trial whose last checkpoint (as Ray's experiment
  snapshot records it: ``Trial.run_metadata.checkpoint_manager``, ``_TrainingResult``) was
  deleted after the snapshot (``CheckpointConfig.num_to_keep``) resumes from its newest kept
  one; :func:`keep_restores_on_kept_checkpoints` hooks it into
  ``TuneController._restore_trials``.
- :func:`keep_current_concurrency_limits`: ``ConcurrencyLimiter.set_state`` (its saved
  ``__dict__``) keeps the restoring driver's ``max_concurrent``.
- The result loggers (:class:`ResultJsonLogger`, :class:`ProgressCsvLogger`) override Ray's
  ``_restore_from_remote`` and use ``_trial_files``/``_setup_trial``: restart-safe, one line per
  epoch (see the mixins).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from ray.tune import registry
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

PINNED = {"ray": "2.60.0", "optuna": "5.0.0"}
_REGISTRY_LOCK = threading.RLock()


def recorded_cluster_address() -> str | None:
    """The address of the Ray cluster this machine last started or joined (what
    ``ray.init(address="auto")`` would try), from Ray's private address file; None when there is
    none."""
    from ray._private.utils import get_ray_address_file
    try:
        text = Path(get_ray_address_file(None)).read_text().strip()
    except OSError:
        return None
    return text or None


def serialise_ray_registry() -> None:
    """Ray 2.60's trainable registry iterates a dict that another thread's registration may
    grow ("dictionary changed size during iteration"); concurrent Tuners register under a lock."""
    if getattr(registry._Registry.register, "_ec4srec_locked", False):
        return
    for name in ("register", "flush_values"):
        original = getattr(registry._Registry, name)

        def locked(self, *args, _original=original, **kwargs):
            with _REGISTRY_LOCK:
                return _original(self, *args, **kwargs)
        locked._ec4srec_locked = True
        setattr(registry._Registry, name, locked)


def restored_tune_config(tuner):
    """The TuneConfig a restored Tuner was created with (pickled with the run)."""
    return tuner._local_tuner._tune_config


def restored_run_config(tuner):
    """The RunConfig (stopper, callbacks) a restored Tuner was created with."""
    return tuner._local_tuner._run_config


def restored_num_samples(tuner, default: int) -> int:
    """The trial count a restored Tuner was created with (its pickled TuneConfig)."""
    try:
        return int(restored_tune_config(tuner).num_samples)
    except (AttributeError, TypeError, ValueError):
        return default


def replay_asha(scheduler, histories: list[tuple[str, list[dict]]], prefix: str = "ended-") -> int:
    """Record ended trials' results in a new ASHA ``scheduler``'s rungs as its own trials'
    would have been: each ``(trial_id, history)`` (the trial's reports in order) is fed to the
    bracket's ``on_result`` under the scheduler's time attribute, metric and mode (one bracket,
    as ``make_scheduler`` builds it; a report without them is skipped), under ``prefix`` + its
    id (``""``: a carried trial's past, under the id of the trial that continues it). Returns
    how many trials reached a rung; 0 for another scheduler."""
    from types import SimpleNamespace

    from ray.tune.schedulers import AsyncHyperBandScheduler
    if not isinstance(scheduler, AsyncHyperBandScheduler) or len(scheduler._brackets) != 1:
        return 0
    bracket, attr, metric = scheduler._brackets[0], scheduler._time_attr, scheduler._metric
    reached = 0
    for trial_id, history in histories:
        trial = SimpleNamespace(trial_id=f"{prefix}{trial_id}")
        for result in history:
            if result.get(attr) is not None and result.get(metric) is not None:
                bracket.on_result(trial, result[attr], scheduler._metric_op * result[metric])
        reached += any(trial.trial_id in recorded for _, recorded in bracket._rungs)
    return reached


def attach_budget(tuner, budget) -> None:
    """Give the searcher, stopper and callbacks a restored Tuner brought back (pickled without
    a budget: watch.BudgetBound) this driver's ``budget``."""
    run_config = restored_run_config(tuner)
    parts = [restored_tune_config(tuner).search_alg, run_config.stop, *(run_config.callbacks or [])]
    for part in parts:
        if hasattr(part, "budget"):
            part.budget = budget


def optuna_search_state(searcher) -> tuple:
    """(Optuna study, {Ray trial id: Optuna trial}, set of finished Ray trial ids) of Ray's
    OptunaSearch ``searcher``; the set is the searcher's own (callers may add to it)."""
    return searcher._ot_study, searcher._ot_trials, searcher._completed_trials


def optuna_storage(study):
    """An Optuna study's storage."""
    return study._storage


def requeue_waiting(study) -> list[dict]:
    """Take an Optuna study's WAITING trials (points an earlier driver enqueued and never asked
    for) out of its queue, in queue order: each is marked FAIL (user attribute ``requeued``)
    and its fixed params returned, so that a resumed run enqueues them again behind its
    restarts. Optuna's ``ask`` takes the oldest WAITING trial first: left queued, a stale
    point would run before a lost trial's restart, and the restart's carried checkpoint
    (carry.py) could go unused for good."""
    from optuna.trial import TrialState
    storage, points = study._storage, []
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        storage.set_trial_user_attr(t._trial_id, "requeued", True)
        storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        if t.system_attrs.get("fixed_params"):
            points.append(dict(t.system_attrs["fixed_params"]))
    return points


def optuna_trial_id(trial) -> int:
    """An Optuna trial's storage id (``Trial``, ``FrozenTrial`` or Ray's captured trial)."""
    return trial._trial_id


# ------------------------------------------------------------------ restored checkpoints
def repoint_lost_checkpoints(trials) -> list[tuple[str, str, str | None]]:
    """Point each restored Ray trial whose last recorded checkpoint is gone from the storage
    path at its newest kept one. Ray's experiment snapshot is written every few seconds, the
    checkpoints as the trials report, and ``num_to_keep`` deletes the older ones at once: a
    driver that dies two checkpoints after its last snapshot leaves a snapshot naming a deleted
    checkpoint, and Ray's restore fails the trial ("Could not recover from checkpoint as it
    does not exist on storage anymore"). The replacement is the newest ``checkpoint_*`` folder
    that a line of the trial's ``result.json`` on the storage path names (reported, so written
    whole), with that line's metrics (Ray's iteration count goes on from it); when that file is
    a sync behind the newest folders, the newest non-empty folder, without metrics (Ray counts
    iterations from 0 again; the trial's epochs come from its own checkpoint). The trial then
    continues from a later epoch than the snapshot's, which trains nothing twice. Without any
    the trial starts from scratch (a finished trial still ends at once: trainable.py's
    ``FINISHED.json``). Returns ``(trial_id, lost, replacement or None)`` per repointed trial."""
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import _exists_at_fs_path, _list_at_fs_path
    from ray.tune import Checkpoint

    changed = []
    for trial in trials:
        manager = trial.run_metadata.checkpoint_manager
        latest = manager.latest_checkpoint_result
        if latest is None or _exists_at_fs_path(latest.checkpoint.filesystem, latest.checkpoint.path):
            continue
        fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        reported = _reported_checkpoints(fs, f"{folder}/result.json")
        on_disk = sorted((name for name in _list_at_fs_path(fs, folder)
                          if name.startswith("checkpoint_") and _list_at_fs_path(fs, f"{folder}/{name}")),
                         reverse=True)
        kept = next((name for name in on_disk if name in reported), on_disk[0] if on_disk else None)
        results = [r for r in manager._checkpoint_results
                   if _exists_at_fs_path(r.checkpoint.filesystem, r.checkpoint.path)]
        if kept:
            result = _TrainingResult(checkpoint=Checkpoint(f"{folder}/{kept}", filesystem=fs),
                                     metrics=reported.get(kept, {}))
            results = [r for r in results if Path(r.checkpoint.path).name != kept] + [result]
        manager._checkpoint_results = results
        manager._latest_checkpoint_result = results[-1] if results else None
        changed.append((trial.trial_id, Path(latest.checkpoint.path).name, kept))
    return changed


def _reported_checkpoints(fs, path: str) -> dict[str, dict]:
    """{checkpoint folder name: the metrics of the result line that reported it} of a
    ``result.json`` on ``fs`` (empty when there is none; a torn line is skipped)."""
    try:
        with fs.open_input_stream(path) as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError):
        return {}
    out = {}
    for line in text.splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and result.get("checkpoint_dir_name"):
            out[str(result["checkpoint_dir_name"])] = result
    return out


def keep_restores_on_kept_checkpoints() -> None:
    """Run :func:`repoint_lost_checkpoints` on the trials every Tune restore brings back
    (``TuneController._restore_trials``), saying which it repointed; installed once."""
    from ray.tune.execution.tune_controller import TuneController
    original = TuneController._restore_trials
    if getattr(original, "_ec4srec_repoints", False):
        return

    def restore_trials(self, experiment_state):
        trials = original(self, experiment_state)
        for trial_id, lost, kept in repoint_lost_checkpoints(trials):
            then = f"resumes from {kept}" if kept else "starts again (no reported checkpoint is kept)"
            print(f"[search] trial {trial_id}: its snapshot's checkpoint {lost} is gone (deleted "
                  f"after the last snapshot); it {then}", flush=True)
        return trials
    restore_trials._ec4srec_repoints = True
    TuneController._restore_trials = restore_trials


def keep_current_concurrency_limits() -> None:
    """A restored run's ``ConcurrencyLimiter`` (Tune wraps the searcher in one for
    ``max_concurrent_trials``) takes its saved state, the trials it holds live, but keeps the
    limit the restoring driver gives it: Tune's ``set_state`` would put back the one it was
    pickled with (``__dict__.update``), so a run made when it shared the slots would hold
    fewer for good (tuner.make_tuner). Installed once."""
    from ray.tune.search import ConcurrencyLimiter
    original = ConcurrencyLimiter.set_state
    if getattr(original, "_ec4srec_keeps_limit", False):
        return

    def set_state(self, state):
        limit = self.max_concurrent
        original(self, state)
        self.max_concurrent = limit
    set_state._ec4srec_keeps_limit = True
    ConcurrencyLimiter.set_state = set_state


# ------------------------------------------------------------------ result loggers
class KeepLocalLogMixin:
    """Ray's result loggers write ``result.json``/``progress.csv`` to the driver's staging
    folder, which a background sync copies to the storage path now and then. When a trial
    restarts (a worker crashed, FailureConfig retry) the logger "resumes" the file by copying
    the storage copy over the staging one: if the last sync is still running or was skipped
    (a loaded machine), that copy is stale and the epochs reported since are lost for good
    (the next sync uploads the truncated file). The staging file, when it exists, is this
    driver's own and never older than the storage copy, so keep it; copy from storage only
    when it is missing (``Tuner.restore`` in a new driver)."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if (Path(trial.local_path) / file_name).exists():
            return
        super()._restore_from_remote(file_name, trial)


class OneLinePerEpochMixin:
    """One line per epoch: a report of an epoch the trial's file already has is not written
    again. A trial restarted from an older checkpoint (a Ray retry, a driver's resume from an
    older snapshot) re-reports the epochs since, with the same numbers; a finished trial
    restored by a resumed driver repeats its last report (trainable.py's replay), which is
    written only where the file lacks it (the storage copy a new driver starts from can be a
    sync behind the epochs reported)."""

    def _epochs_on_file(self, trial) -> set:
        known = self.__dict__.setdefault("_epochs", {})
        if trial.trial_id not in known:
            if trial not in self._trial_files:
                self._open(trial)          # a new driver's file starts as the storage copy
            path = Path(trial.local_path) / self._file_name
            known[trial.trial_id] = _logged_epochs(path) if path.exists() else set()
        return known[trial.trial_id]

    def log_trial_result(self, iteration, trial, result) -> None:
        epoch = result.get("epoch")
        if epoch is not None:
            epochs = self._epochs_on_file(trial)
            if epoch in epochs:
                return
            epochs.add(epoch)
        super().log_trial_result(iteration, trial, result)


def _logged_epochs(path: Path) -> set:
    """The epochs a result.json (JSON lines) or progress.csv holds."""
    text = path.read_text()
    if path.suffix == ".csv":
        return {int(float(r["epoch"])) for r in csv.DictReader(io.StringIO(text)) if r.get("epoch")}
    epochs = set()
    for line in text.splitlines():
        try:
            epochs.add(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue                   # a torn last line of a killed driver
    return epochs


class ResultJsonLogger(OneLinePerEpochMixin, KeepLocalLogMixin, JsonLoggerCallback):
    """``result.json`` (what ``ResultGrid.metrics_dataframe`` reads), restart-safe."""
    _file_name = "result.json"

    def _open(self, trial) -> None:
        self.log_trial_start(trial)


class ProgressCsvLogger(OneLinePerEpochMixin, KeepLocalLogMixin, CSVLoggerCallback):
    """``progress.csv``, restart-safe."""
    _file_name = "progress.csv"

    def _open(self, trial) -> None:
        self._setup_trial(trial)


# ------------------------------------------------------------------ signals
class _NoRestoreHint(logging.Filter):
    """Drops Tune's "Experiment has been interrupted ... Resume experiment with:
    Tuner.restore(...)" warning (``ray.tune.tune``, logged when a fit is interrupted): the
    study prints its own resume command, and Tune's restores one run, not the study."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with:" not in record.getMessage()


TUNE_LOGGER = "ray.tune.tune"


def hide_tune_restore_hint() -> None:
    """Install :class:`_NoRestoreHint` on Tune's logger once."""
    log = logging.getLogger(TUNE_LOGGER)
    if not any(isinstance(f, _NoRestoreHint) for f in log.filters):
        log.addFilter(_NoRestoreHint())


def tune_fit(tuner) -> tuple[Any, bool]:
    """``(tuner.fit(), whether a SIGINT stopped it)``, then the SIGINT handler that was there
    before. Tune installs its own handler for the experiment and puts the old one back only
    when a SIGINT arrives (``ray.tune.tune._setup_signal_catching``), so the old one being back
    after the fit means a SIGINT came; after a normal fit the next Ctrl-C (in the seed phase,
    say) would only set an event nobody reads, hence the reset. Outside the main thread (and
    under ``TUNE_DISABLE_SIGINT_HANDLER=1``) Tune catches no SIGINT: the flag is then False,
    resp. always True."""
    hide_tune_restore_hint()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        grid = tuner.fit()
        return grid, main and signal.getsignal(signal.SIGINT) is previous
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
