"""Ray Tune's result loggers, made restart-safe (one line per epoch, the driver's own staging
file kept over a stale storage copy), and the short trial folder names. The study passes these
to every Tuner in place of Ray's default loggers."""
from __future__ import annotations

import json
from pathlib import Path

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback


class _KeepLocalLogMixin:
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


class _OneLinePerEpochMixin:
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
        import csv
        import io
        return {int(float(r["epoch"])) for r in csv.DictReader(io.StringIO(text)) if r.get("epoch")}
    epochs = set()
    for line in text.splitlines():
        try:
            epochs.add(int(json.loads(line)["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue                   # a torn last line of a killed driver
    return epochs


class ResultJsonLogger(_OneLinePerEpochMixin, _KeepLocalLogMixin, JsonLoggerCallback):
    """``result.json`` (what ``ResultGrid.metrics_dataframe`` reads), restart-safe."""
    _file_name = "result.json"

    def _open(self, trial) -> None:
        self.log_trial_start(trial)


class ProgressCsvLogger(_OneLinePerEpochMixin, _KeepLocalLogMixin, CSVLoggerCallback):
    """``progress.csv``, restart-safe."""
    _file_name = "progress.csv"

    def _open(self, trial) -> None:
        self._setup_trial(trial)


def trial_dirname(trial) -> str:
    """Short trial folder names (Ray's default embeds every param and can get too long)."""
    return f"trial_{trial.trial_id}"
