"""Training lost with a machine: what a run's budget share is not charged for
(docs/search.md, "Carried trials"). No Ray here.

A trial is *lost* when its machine went before it ended: the durable state holds no record of
it, and its Optuna trial either was marked FAIL by a later driver that restarted it
(``durable.reconcile``) or is still RUNNING in a run that resumes from the durable state (its
Ray folder cannot be restored). Its lost epochs are those it reported (its Optuna intermediate
values: one per epoch, re-reported epochs counted once) less those a record or a carry still
holds (result rows with its trial id: a trial that continues a carry starts its history with
the carried rows). They are priced at the mean seconds of the trial's kept epochs, else at the
run's measured epoch (``CostModel.epoch_seconds``), else not at all (nothing measured).

Contract: :func:`lost_epochs` is a pure function of the durable state and every driver
recomputes the credit from it (the ledger does not keep it), so a loss is credited once however
often the study resumes. ``Budget.credit_lost`` leaves it out of what the run used: each
method's equal share pays for the training its trials kept, not for what a lost machine took;
the study's clock still counts it (that time was spent).
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path

from .budget import Budget, hms
from .carry import read_carries
from .options import StudyOptions, optuna_storage, optuna_study_name
from .trial_files import RAY_TRIAL_ID, has_snapshot, has_tuner, trial_records


def lost_epochs(trials: Iterable, records: list[dict], carried: list[list[dict]],
                restorable: bool) -> dict[str, tuple[int, float | None]]:
    """{Ray trial id: (epochs lost, mean seconds of its kept epochs or None)} of the lost trials
    among ``trials`` (Optuna FrozenTrials of one run); ``records`` are the run's trial records,
    ``carried`` its carries' histories; a RUNNING trial counts as lost only when the run's Ray
    folder cannot be restored (``restorable`` False)."""
    recorded = {str(r.get("trial_id")) for r in records}
    histories = [r.get("history") or [] for r in records] + [list(h) for h in carried]
    lost = {}
    for t in trials:
        rid = t.user_attrs.get(RAY_TRIAL_ID)
        state = getattr(t.state, "name", str(t.state))
        if rid is None or str(rid) in recorded or not (
                state == "FAIL" or (state == "RUNNING" and not restorable)):
            continue
        kept = max(([r for r in rows if str(r.get("trial_id")) == str(rid)] for rows in histories),
                   key=len, default=[])
        epochs = len(t.intermediate_values) - len(kept)
        if epochs > 0:
            seconds = [float(r["time_this_iter_s"]) for r in kept if "time_this_iter_s" in r]
            lost[str(rid)] = (epochs, statistics.fmean(seconds) if seconds else None)
    return lost


def credit(budget: Budget, run: str, trials: Iterable, exp: Path,
           restorable: bool) -> tuple[float, dict[str, int]]:
    """Credit ``run`` with its lost trials' training (:func:`lost_epochs` over the run's
    records and carries in ``exp``); returns (seconds credited, {trial id: epochs lost})."""
    carried = [c.history for c in read_carries(exp, run).values()]
    lost = lost_epochs(trials, trial_records(exp, run), carried, restorable)
    measured = budget.cost.epoch_seconds(run)
    seconds = sum(n * (each if each is not None else measured or 0.0)
                  for n, each in lost.values())
    if seconds > 0:
        budget.credit_lost(run, seconds)
    return seconds, {rid: n for rid, (n, _) in lost.items()}


def credit_study(opts: StudyOptions, budget: Budget) -> None:
    """Credit every planned run of the study with its lost trials' training (module contract).
    A run's Ray folder counts as restorable when it holds a Tuner and an experiment snapshot;
    with remote storage (``--storage-path`` a URI) it always does, so a RUNNING trial's loss
    is credited by the next driver, once ``durable.reconcile`` has marked it FAIL."""
    import optuna
    if not opts.optuna_storage and not (opts.exp_dir / "optuna.journal").exists():
        return
    storage = optuna_storage(opts)
    names = {s.study_name for s in storage.get_all_studies()}
    for run in budget.runs:
        name = optuna_study_name(opts, run)
        if run not in budget.plans or name not in names:
            continue
        folder = opts.exp_dir / run
        restorable = "://" in opts.storage_path or (has_tuner(folder) and has_snapshot(folder))
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        credit(budget, run, trials, opts.exp_dir, restorable)


def describe(budget: Budget) -> list[str]:
    """The ``[budget]`` lines naming each run's credit."""
    return [f"[budget] {run}: {hms(plan.lost_s)} of its trials' training was lost with a "
            f"machine: not charged to its share" for run, plan in budget.plans.items()
            if plan.lost_s > 0]
