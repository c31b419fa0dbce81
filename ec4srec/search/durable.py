"""A study's durable state: what a study keeps when it loses its machine (docs/search.md).

An experiment folder holds two kinds of files:
- durable (``report.results.PORTABLE``, what ``tune/report.py --export`` copies): the options,
  the active space, the Optuna journal, the budget ledger, every ended trial's record
  (``trials/<run>/<trial_id>.json``), finished runs (``runs/``), seed re-runs (``seeds/``),
  best configs, tables and report (small text files), and the newest checkpoint of each
  unfinished trial (``carried/``, carry.py; binary, about 40 MB each for the tuned Beauty
  base): a fresh checkout resumes from them;
- disposable: Ray's run folders (trials, checkpoints, TensorBoard events) and ``warmup/``.

Contracts:
- :class:`TrialRecorder` (a Tune callback, after the result loggers) carries a trial at each
  checkpoint it reports and writes its record, dropping its carry, when it ends or errors,
  atomically: ``trial_id``, ``params``, ``history`` (its result.json
  rows, one per epoch), ``error``, ``path`` (relative), the same record a finished run's
  ``runs/<run>.json`` lists. A trial that ended (not errored) is then offered to
  ``finals.keep_final`` on the carry writer thread.
- :func:`reconcile` runs before a run whose Ray folder is gone starts a new Tuner on its
  existing Optuna study. Every Optuna trial the lost driver left RUNNING is completed with its
  recorded objective when its record exists (it ended; the ``tell`` was lost), else marked
  FAIL and its params returned, to be restarted: from its carried checkpoint when the study
  holds one (carry.py), else from scratch (Ray's checkpoints are not durable).
  A trial with a record is never re-run and never told twice; WAITING trials (points an
  earlier driver enqueued) are queued again behind the restarts (``compat.requeue_waiting``).
- :func:`repair_journal` cuts a journal copied mid-write back to its last whole line.
- :func:`drop_unsnapshotted` sets aside a Ray run folder with no experiment snapshot (a driver
  stopped before Tune's first one), which Tune cannot resume; the run goes on from the
  durable state.
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
from ray.tune import Callback

from ..checkpoint import atomic_write_json
from ..report.results import RUN_RECORD
from . import carry, compat, finals
from .trial_files import (NOT_RECORDED, RAY_TRIAL_ID, RECORDS, has_snapshot, has_tuner,
                          read_history, trial_records)


def merge_records(new: list[dict], recorded: list[dict]) -> list[dict]:
    """``new`` (a ResultGrid's) plus the recorded trials it does not hold (an earlier driver's)."""
    have = {str(r["trial_id"]) for r in new}
    return [*(r for r in recorded if str(r["trial_id"]) not in have), *new]


class TrialRecorder(Callback):
    """Writes ``trials/<run>/<trial_id>.json`` when a trial ends and, with ``carry``, carries it
    at each checkpoint (see the module contract)."""

    def __init__(self, exp: Path, run: str, carry: bool = True):
        self.exp, self.run, self.carry = Path(exp), run, carry

    def _record(self, trial, error: str | None) -> None:
        carry.flush()          # its carries still queued land first, so the drop below is last
        record = {"trial_id": trial.trial_id, **carry.record_params(trial.config),
                  "history": read_history(Path(trial.local_path)), "error": error,
                  "path": f"{self.run}/{Path(str(trial.local_path)).name}"}
        atomic_write_json(self.exp / RECORDS / self.run / f"{trial.trial_id}.json", record)
        carry.drop_carry(self.exp, self.run, trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        """Carry the trial at the checkpoint it just reported (carry.py), on the carry writer
        thread (``carry.submit``: the Tune loop does not wait for the 40-50 MB copy); only from
        a storage path on this machine's file system (a cloud bucket synced here:
        ``tune/carry.py``)."""
        path = Path(getattr(checkpoint, "path", "") or "") / carry.TRAINER_FILE
        if not getattr(self, "carry", True) or not path.is_file() or not trial.last_result \
                or "epoch" not in trial.last_result:
            return
        epoch = int(trial.last_result["epoch"])
        history = [r for r in read_history(Path(trial.local_path)) if int(r["epoch"]) < epoch]
        last = {k: v for k, v in trial.last_result.items() if k not in NOT_RECORDED}
        carry.submit(carry.write_carry_from, self.exp, self.run, trial.trial_id,
                     dict(trial.config or {}), path, [*history, last])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, None)
        # a trial that ended on its own may be its run's first seed re-run (finals.py): its
        # newest checkpoint (reported with its last epoch), when on this machine's file system
        path = Path(getattr(getattr(trial, "checkpoint", None), "path", "") or "") / carry.TRAINER_FILE
        if path.is_file():
            carry.submit(finals.keep_final, self.exp, self.run, trial.trial_id, path)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, repr(getattr(trial, "error", None) or "error")[:500])


class CarriedHistory(Callback):
    """Before Ray's result loggers (first in the callbacks): a trial that continues a carried
    one starts its ``result.json`` with the carried rows, so that its record, epochs.csv and
    learning curves hold every epoch; the loggers then append to it. A restored trial's file
    already exists and is left alone."""

    def __init__(self, exp: Path, run: str):
        self.exp, self.run = Path(exp), run

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        continued = (trial.config or {}).get(carry.CARRIED_KEY)
        path = Path(trial.local_path) / "result.json"
        if not continued or path.exists():
            return
        try:
            rows = json.loads((carry.run_folder(self.exp, self.run) / f"{continued}.json")
                              .read_text())["history"]
        except (OSError, ValueError, KeyError):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tag(searcher, ray_trial_id: str) -> None:
    """Name the Ray trial on the Optuna trial just asked for it (what :func:`reconcile` matches)."""
    _, ot_trials, _ = compat.optuna_search_state(searcher)
    if ray_trial_id in ot_trials:
        ot_trials[ray_trial_id].set_user_attr(RAY_TRIAL_ID, ray_trial_id)


def reconcile(study: optuna.Study, records: list[dict],
              objective: str) -> tuple[list[tuple[str | None, dict]], dict]:
    """Settle the trials a lost driver left RUNNING (module contract). Returns the trials to
    restart, as (their Ray trial id, their params), and counts {"completed", "failed"}."""
    by_id = {str(r["trial_id"]): r for r in records}
    restarts, counts = [], {"completed": 0, "failed": 0}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        record = by_id.get(str(t.user_attrs.get(RAY_TRIAL_ID)))
        values = [row[objective] for row in (record or {}).get("history", []) if objective in row]
        if record is not None and not record.get("error") and values:
            study.tell(t.number, values[-1])
            counts["completed"] += 1
        else:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            counts["failed"] += 1
            if record is None:             # it never ended: run its params again
                rid = t.user_attrs.get(RAY_TRIAL_ID)
                restarts.append((None if rid is None else str(rid), dict(t.params)))
    return restarts, counts


def repair_journal(path: Path) -> bool:
    """Cut an Optuna journal back to its last whole line; True when it was cut."""
    path = Path(path)
    if not path.exists():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    path.write_bytes(data[: data.rfind(b"\n") + 1])
    return True


def reopen_run(exp: Path, run: str) -> None:
    """Make a run that a budget closed incomplete again, for more trials: its finished-run
    record goes (rebuilt at its end from the trial records, which stay) and its Ray folder,
    if any, is set aside as ``<run>.closed-<n>`` (a restored Tuner would only replay the
    closed run); ``make_tuner`` then continues it from the durable state."""
    exp = Path(exp)
    (exp / RUN_RECORD.format(run=run)).unlink(missing_ok=True)
    set_aside(exp, run, "closed")


def drop_unsnapshotted(exp: Path, run: str) -> Path | None:
    """Set aside (as ``<run>.unsnapshotted-<n>``) a Ray run folder that holds a Tuner but no
    experiment snapshot (``experiment_state-*.json``): its driver stopped between writing
    ``tuner.pkl`` and Tune's first snapshot. Tune would restore such a folder as an empty
    experiment whose pickled searcher has already spent trials, and end the run short of its
    trials on every resume; without it ``make_tuner`` continues from the durable state.
    Returns the new place, None when there was nothing to set aside."""
    folder = Path(exp) / run
    if not has_tuner(folder) or has_snapshot(folder):
        return None
    return set_aside(Path(exp), run, "unsnapshotted")


def set_aside(exp: Path, run: str, why: str) -> Path | None:
    """Move ``run``'s Ray folder, if any, to ``<run>.<why>-<n>`` (the first free n): kept for
    inspection, never read again by the search."""
    folder = exp / run
    if not folder.exists():
        return None
    n = 1
    while (exp / f"{run}.{why}-{n}").exists():
        n += 1
    target = exp / f"{run}.{why}-{n}"
    folder.rename(target)
    return target
