"""Training lost with a machine (ec4srec/search/lost.py): which trials lost what, and the credit
a run's budget share gets for it."""
from __future__ import annotations

import io

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from ec4srec.search import lost
from ec4srec.search.budget import Budget
from ec4srec.search.carry import write_carry
from ec4srec.search.options import StudyOptions, optuna_storage
from ec4srec.search.trial_files import RAY_TRIAL_ID

optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial(rid: str | None, state: TrialState, epochs: int):
    """A FrozenTrial named ``rid`` that reported ``epochs`` epochs (one intermediate value each)."""
    return create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                        intermediate_values={e: 0.01 * e for e in range(1, epochs + 1)},
                        user_attrs={} if rid is None else {RAY_TRIAL_ID: rid})


def rows(rid: str, seconds: list[float], first_epoch: int = 1) -> list[dict]:
    return [{"trial_id": rid, "epoch": first_epoch + i, "time_this_iter_s": s}
            for i, s in enumerate(seconds)]


def test_lost_epochs_are_the_reported_ones_no_record_or_carry_keeps():
    trials = [
        trial("gone", TrialState.FAIL, 5),          # lost, nothing kept
        trial("carried", TrialState.FAIL, 6),       # lost after its carry at epoch 4
        trial("moved", TrialState.FAIL, 7),         # its carry continued by "next", recorded
        trial("next", TrialState.COMPLETE, 2),
        trial("errored", TrialState.FAIL, 3),       # ended with an error: recorded
        trial(None, TrialState.FAIL, 0),            # a point taken out of the queue (requeued)
        trial("whole", TrialState.FAIL, 4),         # restarted from a carry of every epoch
    ]
    records = [{"trial_id": "next", "history": rows("moved", [10.0, 20.0, 30.0]) + rows("next", [5.0, 5.0], 4)},
               {"trial_id": "errored", "history": rows("errored", [1.0, 1.0, 1.0])}]
    carried = [rows("carried", [8.0, 8.0, 9.0, 11.0]), rows("whole", [2.0] * 4)]
    got = lost.lost_epochs(trials, records, carried, restorable=True)
    # epochs reported less epochs kept; priced at the trial's kept epochs when it has any
    assert got == {"gone": (5, None), "carried": (2, pytest.approx(9.0)),
                   "moved": (4, pytest.approx(20.0))}


@pytest.mark.parametrize("restorable, expected", [(True, {}), (False, {"running": (3, None)})])
def test_a_running_trial_is_lost_only_when_its_ray_folder_cannot_be_restored(restorable, expected):
    trials = [trial("running", TrialState.RUNNING, 3)]
    # Ray restores a restorable run's running trial from its own checkpoint: nothing lost
    assert lost.lost_epochs(trials, [], [], restorable) == expected


def test_a_credit_is_left_out_of_what_the_run_used_and_recomputed_by_each_driver(tmp_path):
    clock = [1000.0]
    runs = ["a", "b"]

    def budget():       # one run at a time: two waves, a share is not the whole search left
        return Budget(tmp_path, 36_000.0, runs, {r: 0 for r in runs}, max_epochs=10,
                      num_samples=20, slots=2, seeds=0, clock=lambda: clock[0], concurrency=1)

    b = budget()
    for run in runs:
        b.begin_run(run)
    clock[0] += 4000.0
    b.write()
    again = budget()
    used = again.run_used("a", clock[0])
    share = again.share_plan("a", runs, None, clock[0])[0]
    again.credit_lost("a", 1500.0)
    # the credit is not charged to the run: it gets that much more of the equal total, less
    # its half of what the runs left now used together
    assert again.run_used("a", clock[0]) == pytest.approx(used - 1500.0)
    assert again.share_plan("a", runs, None, clock[0])[0] == pytest.approx(share + 750.0)
    # the study's own clock still counts it
    assert again.used() == pytest.approx(4000.0)
    again.write()
    # the ledger shows the credit, but a later driver recomputes it (never credited twice)
    assert budget().plans["a"].lost_s == 0.0


def study_with_a_lost_trial(tmp_path, epochs_reported: int, carried_epochs: int):
    """A study folder whose run ``r`` has one trial ``t1`` lost with its machine after
    ``epochs_reported`` epochs, carried at ``carried_epochs`` (0: no carry)."""
    opts = StudyOptions(storage_path=str(tmp_path), name="s").finalize()
    opts.exp_dir.mkdir(parents=True)
    study = optuna.create_study(study_name="r", storage=optuna_storage(opts), direction="maximize")
    t = study.ask()
    t.set_user_attr(RAY_TRIAL_ID, "t1")
    for epoch in range(1, epochs_reported + 1):
        t.report(0.01 * epoch, epoch)
    study.tell(t, state=TrialState.FAIL)          # what durable.reconcile did on a resume
    if carried_epochs:
        buffer = io.BytesIO()
        torch.save({"epoch": carried_epochs}, buffer)
        write_carry(opts.exp_dir, "r", "t1", {}, "checkpoint_000000", buffer.getvalue(),
                    rows("t1", [50.0] * carried_epochs))
    return opts


@pytest.mark.parametrize("carried_epochs, expected", [(0, 5 * 40.0), (3, 2 * 50.0)])
def test_credit_study_reads_the_journal_records_and_carries(tmp_path, carried_epochs, expected):
    opts = study_with_a_lost_trial(tmp_path, epochs_reported=5, carried_epochs=carried_epochs)
    b = Budget(opts.exp_dir, 36_000.0, ["r"], {"r": 0}, max_epochs=10, num_samples=20, slots=1,
               seeds=0, clock=lambda: 0.0)
    for epoch, seconds in enumerate([99.0, 40.0, 40.0, 40.0], start=1):   # the run's epochs: 40 s
        b.cost.observe("r", "t0", {"epoch": epoch, "time_this_iter_s": seconds})
    b.begin_run("r")
    lost.credit_study(opts, b)
    # without a carry every reported epoch is lost, at the run's measured epoch; with one, the
    # epochs after it, at the carried epochs' own seconds
    assert b.plans["r"].lost_s == pytest.approx(expected)
    # and the study says so before its first trial
    assert lost.describe(b) == [f"[budget] r: 0:0{int(expected) // 60}:{int(expected) % 60:02d} "
                                "of its trials' training was lost with a machine: not charged "
                                "to its share"]
