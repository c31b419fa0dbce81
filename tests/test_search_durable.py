"""A study that loses its machine: `--resume` from a folder holding only the durable state (the
export of tune/report.py: options, space, Optuna journal, ended trials' records, the carried
checkpoints of unfinished trials; no Ray folders) keeps every ended trial, tells Optuna each
once, continues the carried trials and restarts the other unfinished ones from scratch."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from ec4srec.report.results import export_study
from ec4srec.search import durable
from test_tuning_driver import SLOW_SEARCH, finished, interrupt_when, ray_local, trial_reports  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = "valid/best_ndcg@10"


def journal_study(tmp_path, name="run"):
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    storage = optuna.storages.JournalStorage(backend)
    return optuna.create_study(study_name=name, storage=storage, direction="maximize")


def record(trial_id, value, error=None):
    return {"trial_id": trial_id, "params": {}, "error": error, "path": f"run/trial_{trial_id}",
            "history": [{"epoch": 1, OBJECTIVE: value / 2}, {"epoch": 2, OBJECTIVE: value}]}


def test_reconcile_completes_recorded_trials_and_restarts_the_rest(tmp_path):
    study = journal_study(tmp_path)
    trials = {}
    for rid in "abc":   # a: ended and told; b: ended, its tell lost; c: never ended
        trials[rid] = study.ask({"lr": optuna.distributions.FloatDistribution(0.0, 1.0)})
        trials[rid].set_user_attr(durable.RAY_TRIAL_ID, rid)
    study.tell(trials["a"], 0.5)
    lost = trials["c"]
    restarts, counts = durable.reconcile(study, [record("a", 0.5), record("b", 0.25)], OBJECTIVE)
    states = {t.user_attrs[durable.RAY_TRIAL_ID]: (t.state.name, t.value) for t in study.trials}
    # the ended trial gets its recorded last objective; the finished one is not told again
    assert states["a"] == ("COMPLETE", 0.5) and states["b"] == ("COMPLETE", 0.25)
    # the unfinished trial is failed and comes back (its Ray id, its params) for a restart
    assert states["c"][0] == "FAIL" and restarts == [("c", lost.params)]
    assert counts == {"completed": 1, "failed": 1}
    # a second reconcile finds nothing left running: nothing is counted twice
    assert durable.reconcile(study, [record("a", 0.5), record("b", 0.25)], OBJECTIVE) == \
        ([], {"completed": 0, "failed": 0})


def test_a_journal_cut_mid_line_is_repaired_to_its_last_whole_line(tmp_path):
    study = journal_study(tmp_path)
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 1.0)
    path = tmp_path / "optuna.journal"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 5, "worker')          # a copy taken mid-write
    # the torn line is cut; what was whole is kept byte for byte
    assert durable.repair_journal(path) and path.read_bytes() == whole
    assert not durable.repair_journal(path)


def test_merge_records_keeps_an_earlier_drivers_trials_once():
    merged = durable.merge_records([record("b", 0.3), record("c", 0.1)],
                                   [record("a", 0.5), record("b", 0.25)])
    # b comes from the new grid (its newer record), a from the earlier driver, each once
    assert [r["trial_id"] for r in merged] == ["a", "b", "c"]
    assert merged[1]["history"][-1][OBJECTIVE] == 0.3


@pytest.mark.slow
def test_a_study_resumes_from_its_durable_state_alone(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {low: 0.0005, high: 0.005, log: true}\n"
                     "methods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address
    first = tmp_path / "machine1"
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test", "--methods", "sasrec",
           "--search-space", str(space), "--num-samples", "3", "--max-epochs", "3",
           "--max-concurrent", "1", "--seeds", "0", "--scheduler", "fifo",
           "--storage-path", str(first), "--name", "s", "--address", address]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = first / "s" / "synthetic-sasrec-sasrec"
    records_dir = first / "s" / "trials" / "synthetic-sasrec-sasrec"

    carried_dir = first / "s" / "carried" / "synthetic-sasrec-sasrec"

    def carried_epochs() -> dict[str, int]:
        out = {}
        for path in carried_dir.glob("*.json"):
            try:
                out[path.stem] = json.loads(path.read_text())["epoch"]
            except (OSError, ValueError):
                continue                       # dropped as it was read: the trial ended
        return out

    def one_recorded_and_next_carried_at_epoch_one():
        # two epochs (0.4 s of sleep each) from its end: the kill lands before it ends
        return (records_dir.is_dir() and any(records_dir.glob("*.json"))
                and 1 in carried_epochs().values())
    assert interrupt_when(one_recorded_and_next_carried_at_epoch_one, proc,
                          signal.SIGKILL) == -signal.SIGKILL
    kept = {p.stem: json.loads(p.read_text()) for p in records_dir.glob("*.json")}
    assert 1 <= len(kept) < 3
    carried = {p.stem: json.loads(p.read_text()) for p in carried_dir.glob("*.json")
               if p.stem not in kept}
    # the driver carried the running trial at a checkpoint it reported, short of its last epoch
    assert carried and all(1 <= c["epoch"] < 3 for c in carried.values())

    # the machine is lost: only the exported durable state reaches the next one
    second = tmp_path / "checkout" / "results"
    export_study(first / "s", second / "s")
    shutil.rmtree(first)
    assert not any(p.name.startswith("trial_") for p in second.rglob("*"))
    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume",
                              "--storage-path", str(second), "--name", "s", "--address", address],
                             capture_output=True, text=True, timeout=300)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "resuming from the durable state" in out
    runs = json.loads((second / "s" / "runs" / "synthetic-sasrec-sasrec.json").read_text())
    by_id = {str(r["trial_id"]): r for r in runs}
    # the carried trial is continued by one new trial, from its carried epoch on: its record
    # holds the carried epochs as they were, then epochs trained from the carried checkpoint
    for old_id, c in carried.items():
        assert f"continues trial {old_id} from its carried checkpoint (epoch {c['epoch']})" in out
        (cont,) = [r for r in runs if r.get("carried_from") == old_id]
        assert [row["epoch"] for row in cont["history"]] == [1, 2, 3]
        picked = ("epoch", "valid/ndcg@10", "train/loss", "train_seconds")
        assert [{k: pytest.approx(row[k], rel=1e-12) for k in picked} for row in c["history"]] == \
            [{k: row[k] for k in picked} for row in cont["history"][:c["epoch"]]]
        assert all(row["restored_from_epoch"] == c["epoch"] for row in cont["history"][c["epoch"]:])
    assert not any((second / "s" / "carried").rglob("*.json"))   # ended: no carry is left
    # the study ends with its 3 planned trials: the ended ones kept as they were, not re-run
    assert len(runs) == 3
    for trial_id, rec in kept.items():
        assert by_id[trial_id]["history"] == rec["history"]
    trials = pd.read_csv(second / "s" / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique and (trials["epochs"] == 3).all()
    # Optuna holds each ended trial once: 3 COMPLETE, the lost one FAIL (restarted as a new trial)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(second / "s" / "optuna.journal")))
    study = optuna.load_study(study_name="synthetic-sasrec-sasrec", storage=storage)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states.count("RUNNING") == 0
    ray_ids = [t.user_attrs.get(durable.RAY_TRIAL_ID) for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(ray_ids) == sorted(by_id)
    # a lost trial that had its params ran them again (one killed before its suggestion
    # holds none: its restart is a new draw)
    failed = [t.params for t in study.trials if t.state.name == "FAIL"]
    completed = [t.params for t in study.trials if t.state.name == "COMPLETE"]
    assert all(p in completed for p in failed if p)
    # the resumed sampler does not repeat the first driver's draws
    lrs = [p["train.lr"] for p in completed]
    assert len(set(lrs)) == len(lrs)


def test_a_record_keeps_one_row_per_epoch_without_rays_bookkeeping(tmp_path):
    rows = [{"epoch": 1, OBJECTIVE: 0.1, "config": {"train.lr": 0.1}, "pid": 7},
            {"epoch": 2, OBJECTIVE: 0.2}, {"epoch": 2, OBJECTIVE: 0.25}]     # epoch 2 re-reported
    (tmp_path / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"epo')
    history = durable.read_history(tmp_path)
    # the last report of an epoch wins, a torn last line is skipped, config and pid are dropped
    assert history == [{"epoch": 1, OBJECTIVE: 0.1}, {"epoch": 2, OBJECTIVE: 0.25}]


@pytest.mark.slow
def test_a_reopened_run_the_gate_then_refuses_stays_complete_with_its_trials(tmp_path):
    from ec4srec.search.ledger import RunPlan
    from ec4srec.search.options import StudyOptions, run_name
    from ec4srec.search.runs import run_search
    opts = StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s",
                        methods=["sasrec"]).finalize()
    key = opts.runs()[0]
    run, exp = run_name(key), opts.exp_dir
    record = {"trial_id": "t1", "params": {"train.lr": 0.001}, "error": None, "path": f"{run}/t1",
              "history": [{"epoch": 1, "valid/ndcg@10": 0.1}]}
    (exp / "trials" / run).mkdir(parents=True)
    (exp / "trials" / run / "t1.json").write_text(json.dumps(record))
    (exp / "runs").mkdir()
    (exp / "runs" / f"{run}.json").write_text(json.dumps([record]))

    class ReopensThenRefuses:             # the budget reopens the run, then admits no trial
        skipped = None

        def reopens(self, name):
            return True

        def begin_run(self, name):
            return RunPlan(name, None, 1, 0.0, None)

        def may_start(self, name, count=True, gate=True):
            return False

        def skip_run(self, name):
            self.skipped = name

    budget = ReopensThenRefuses()
    records = run_search(opts, key, None, budget)
    # the run is complete again with the trials it had: its record is back, and the study's
    # tables and seed re-runs still see its best trial
    assert budget.skipped == run and records == [record]
    assert json.loads((exp / "runs" / f"{run}.json").read_text()) == [record]


def test_a_run_the_budget_closed_reopens_when_the_budget_grows(ray_local, tmp_path, monkeypatch):
    from ec4srec.search import budget as budget_mod
    from ec4srec.search import study as study_mod
    from ec4srec.search.options import StudyOptions
    from ec4srec.search.resume import resumed_options
    from test_tuning_helpers import TINY
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {low: 0.0005, high: 0.005, log: true}\n"
                     "methods:\n  sasrec: [train.lr]\n")
    opts = StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s", methods=["sasrec"],
                        num_samples=4, max_epochs=2, max_concurrent=1, cpus_per_trial=1,
                        gpus_per_trial=0, seeds=0, scheduler="fifo", search_space=str(space),
                        time_budget=3600.0,
                        overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    original = budget_mod.Budget._may_start

    def two_only(self, run, count, gate=True):       # the gate closes the run after two trials
        plan = self.plans.get(run)
        if plan is not None and plan.trials_started >= 2:
            if count:
                plan.refused, plan.closed_by = plan.refused + 1, "budget"
            return False
        return original(self, run, count, gate)
    monkeypatch.setattr(budget_mod.Budget, "_may_start", two_only)
    study_mod.run(opts)
    monkeypatch.setattr(budget_mod.Budget, "_may_start", original)
    exp, run = opts.exp_dir, "synthetic-sasrec-sasrec"
    first = pd.read_csv(exp / "trials.csv")
    ledger = json.loads((exp / "budget.json").read_text())
    # the run ended with two of its four trials, closed by the budget
    assert len(first) == 2 and ledger["plans"][run]["closed_by"] == "budget"
    assert (exp / "runs" / f"{run}.json").exists()
    again = resumed_options(StudyOptions(storage_path=str(tmp_path), name="s",
                                         time_budget=7200.0).finalize(), exp / "study.json")
    study_mod.run(again)
    trials = pd.read_csv(exp / "trials.csv")
    # a larger budget reopens it: the two closed trials kept, two more added, none repeated
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert set(first["trial_id"]) <= set(trials["trial_id"])
    assert (trials["state"] == "completed").all()
    ot = optuna.load_study(study_name=run, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "optuna.journal")))).trials
    # Optuna holds each trial once, each with its value
    assert len(ot) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in ot)
    # the closed run's Ray folder was set aside, not replayed
    assert (exp / f"{run}.closed-1").is_dir()


def test_a_new_tuner_over_ended_trials_starts_with_their_results_in_asha(ray_local, tmp_path):
    from ec4srec.search import compat
    from ec4srec.search.options import StudyOptions
    from ec4srec.search.ranges import load_ranges
    from ec4srec.search.tuner import make_tuner
    opts = StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s", methods=["sasrec"],
                        num_samples=4, max_epochs=9, grace_period=1, cpus_per_trial=1,
                        gpus_per_trial=0, seeds=0).finalize()
    run = "synthetic-sasrec-sasrec"
    exp = opts.exp_dir
    (exp / "trials" / run).mkdir(parents=True)
    journal_study(exp, run)              # the run's Optuna study exists; its Ray folder does not
    for trial_id, value in (("t1", 0.5), ("t2", 0.4)):
        history = [{"epoch": 1, "guided_epoch": 1, "valid/select_ndcg@10": value, OBJECTIVE: value}]
        (exp / "trials" / run / f"{trial_id}.json").write_text(json.dumps(
            {"trial_id": trial_id, "params": {"train.lr": 1e-3}, "error": None,
             "path": f"{run}/trial_{trial_id}", "history": history}))
    tuner, num = make_tuner(opts, ("synthetic", "sasrec", "sasrec"), load_ranges())
    scheduler = compat.restored_tune_config(tuner).scheduler
    # the new Tuner (a resume from the durable state) plans the trials left, and its ASHA's
    # first rung already holds the two ended trials' results, as an uninterrupted run's would
    assert num == 2
    assert dict(scheduler._brackets[0]._rungs)[1] == {"ended-t1": 0.5, "ended-t2": 0.4}


def test_a_new_tuner_offers_each_carried_trial_to_its_restart(ray_local, tmp_path):
    import torch

    from ec4srec.search import carry, compat
    from ec4srec.search.options import StudyOptions
    from ec4srec.search.ranges import load_ranges
    from ec4srec.search.tuner import make_tuner
    opts = StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s", methods=["sasrec"],
                        num_samples=4, max_epochs=9, grace_period=1, cpus_per_trial=1,
                        gpus_per_trial=0, seeds=0).finalize()
    run = "synthetic-sasrec-sasrec"
    opts.exp_dir.mkdir(parents=True)
    study = journal_study(opts.exp_dir, run)
    lost = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    lost.set_user_attr(durable.RAY_TRIAL_ID, "t3")         # running when its machine was lost
    torch.save({"model": {}, "best_weights": None}, tmp_path / "trainer.pt")
    history = [{"epoch": e, "guided_epoch": e, "valid/select_ndcg@10": 0.1 * e} for e in (1, 2)]
    carry.write_carry(opts.exp_dir, run, "t3", lost.params, "checkpoint_000001",
                      (tmp_path / "trainer.pt").read_bytes(), history)
    tuner, num = make_tuner(opts, ("synthetic", "sasrec", "sasrec"), load_ranges())
    config = compat.restored_tune_config(tuner)
    searcher = config.search_alg
    # the restart of t3 is offered its carry, with the carried epoch and history
    assert searcher.carry_points == {carry.params_key(lost.params): ("t3", 2, history)}
    searcher.on_carry("new", history)
    # the trial continuing it enters ASHA's rungs with its carried results, under its own id
    assert dict(config.scheduler._brackets[0]._rungs)[1] == {"new": 0.1}


def lr_study(tmp_path):
    """(options, searched ranges, run, its Optuna study) of a smoke study searching train.lr only,
    whose run's Ray folder is gone: make_tuner goes on from the durable state."""
    from ec4srec.search.options import StudyOptions
    from ec4srec.search.ranges import load_ranges
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {low: 0.0005, high: 0.005, log: true}\n"
                     "methods:\n  sasrec: [train.lr]\n")
    opts = StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s", methods=["sasrec"],
                        num_samples=4, max_epochs=9, cpus_per_trial=1, gpus_per_trial=0,
                        seeds=0, scheduler="fifo").finalize()
    run = "synthetic-sasrec-sasrec"
    opts.exp_dir.mkdir(parents=True)
    study = journal_study(opts.exp_dir, run)
    return opts, load_ranges(space), run, study


def test_a_lost_trials_restart_runs_before_the_points_an_earlier_driver_left_queued(ray_local, tmp_path):
    import torch

    from ec4srec.search import carry, compat
    from ec4srec.search.tuner import make_tuner
    opts, ranges, run, study = lr_study(tmp_path)
    for lr in (0.001, 0.002, 0.003):          # the first driver's queued points
        study.enqueue_trial({"train.lr": lr})
    lost = study.ask({"train.lr": optuna.distributions.FloatDistribution(5e-4, 5e-3, log=True)})
    lost.set_user_attr(durable.RAY_TRIAL_ID, "t1")     # it took the first; its machine was lost
    torch.save({"model": {}, "best_weights": None}, tmp_path / "trainer.pt")
    carry.write_carry(opts.exp_dir, run, "t1", lost.params, "checkpoint_000000",
                      (tmp_path / "trainer.pt").read_bytes(), [{"epoch": 1}])
    tuner, num = make_tuner(opts, ("synthetic", "sasrec", "sasrec"), ranges)
    searcher = compat.restored_tune_config(tuner).search_alg
    searcher.lane_cap = None                   # (this test asks for three at once)
    asked = [searcher.suggest(f"new{i}") for i in range(3)]
    # the lost trial's restart comes first and continues its carry; the queued points follow,
    # in their order, each once
    assert asked[0] == {"train.lr": 0.001, carry.CARRIED_KEY: "t1"}
    assert [a["train.lr"] for a in asked[1:]] == [0.002, 0.003]
    states = sorted(t.state.name for t in study.get_trials(deepcopy=False))
    # the stale queue entries are retired (FAIL, marked requeued); nothing is left waiting
    assert "WAITING" not in states
    assert sum(bool(t.user_attrs.get("requeued")) for t in study.get_trials(deepcopy=False)) == 2


def test_a_carried_trial_continues_where_the_budget_admits_no_new_trial(ray_local, tmp_path):
    import torch
    from ray.tune.search import Searcher

    from ec4srec.search import carry, compat
    from ec4srec.search.tuner import make_tuner
    opts, ranges, run, study = lr_study(tmp_path)
    dist = {"train.lr": optuna.distributions.FloatDistribution(5e-4, 5e-3, log=True)}
    plain, kept = study.ask(dist), study.ask(dist)       # two lost trials, the second carried
    plain.set_user_attr(durable.RAY_TRIAL_ID, "t0")
    kept.set_user_attr(durable.RAY_TRIAL_ID, "t1")
    torch.save({"model": {}, "best_weights": None}, tmp_path / "trainer.pt")
    carry.write_carry(opts.exp_dir, run, "t1", kept.params, "checkpoint_000000",
                      (tmp_path / "trainer.pt").read_bytes(), [{"epoch": 1}])

    class Spent:                  # a budget whose gate admits no new trial
        admitted: list = []

        def may_start(self, run, count=True, gate=True):
            if not gate:
                self.admitted.append(run)
            return not gate
        plans: dict = {}
    tuner, _ = make_tuner(opts, ("synthetic", "sasrec", "sasrec"), ranges)
    searcher = compat.restored_tune_config(tuner).search_alg
    searcher.lane_cap, searcher.budget = None, Spent()
    first, second = searcher.suggest("new0"), searcher.suggest("new1")
    # the carried trial continues first, counted without the gate; then the
    # gate decides: the uncarried restart is a new trial and does not fit
    assert first == {**kept.params, carry.CARRIED_KEY: "t1"}
    assert Spent.admitted == [run] and second == Searcher.FINISHED


def lr_run(tmp_path, num_samples):
    """(options, space file) of a smoke study searching train.lr only, 2 epochs a trial."""
    from ec4srec.search.options import StudyOptions
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {low: 0.0005, high: 0.005, log: true}\n"
                     "methods:\n  sasrec: [train.lr]\n")
    return StudyOptions(smoke_test=True, storage_path=str(tmp_path), name="s", methods=["sasrec"],
                        num_samples=num_samples, max_epochs=2, cpus_per_trial=1, gpus_per_trial=0,
                        seeds=0, scheduler="fifo").finalize(), space


def test_a_restored_tuner_that_ended_its_trials_goes_on_while_the_gate_admits_more(ray_local, tmp_path):
    import dataclasses

    from ec4srec.search.budget import Budget
    from ec4srec.search.options import run_name
    from ec4srec.search.ranges import load_ranges
    from ec4srec.search.runs import run_search
    opts, space = lr_run(tmp_path, num_samples=1)
    key = opts.runs()[0]
    run, exp = run_name(key), opts.exp_dir

    def gate_open():              # no time budget: the gate admits every trial
        return Budget(exp, None, [run], {run: 0}, max_epochs=2, num_samples=2, slots=1, seeds=0)
    first = run_search(opts, key, load_ranges(space), gate_open())
    # a Tuner made for one trial (an older ec4srec made it the budget's plan); its run record
    # is lost with its driver
    assert len(first) == 1
    (exp / "runs" / f"{run}.json").unlink()
    records = run_search(dataclasses.replace(opts, num_samples=2), key, load_ranges(space),
                         gate_open())
    # restored, it ends its one trial; the gate admits more, so it is set aside and a fresh
    # Tuner adds the second; the first trial is kept once
    assert (exp / f"{run}.grown-1").is_dir()
    assert len(records) == 2 and len({r["trial_id"] for r in records}) == 2
    assert first[0]["trial_id"] in {r["trial_id"] for r in records}


def test_the_budgets_estimate_of_a_runs_trials_does_not_cap_it_the_gate_does(ray_local, tmp_path,
                                                                           monkeypatch):
    from ec4srec.search.budget import Budget
    from ec4srec.search.options import run_name
    from ec4srec.search.ranges import load_ranges
    from ec4srec.search.runs import run_search
    opts, space = lr_run(tmp_path, num_samples=3)
    key = opts.runs()[0]
    run = run_name(key)
    budget = Budget(opts.exp_dir, None, [run], {run: 0}, max_epochs=2, num_samples=3, slots=1,
                    seeds=0)
    # the plan expects one trial (its trials priced long: ASHA then stopped them early), and
    # the gate still admits every one
    original = budget.begin_run

    def one_expected(name):
        plan = original(name)
        plan.planned_trials = 1
        return plan
    monkeypatch.setattr(budget, "begin_run", one_expected)
    records = run_search(opts, key, load_ranges(space), budget)
    # the run goes on while its gate admits trials, up to --num-samples: a run whose trials
    # ended early no longer leaves its share, and its slot, unused (session 21, Beauty)
    assert len(records) == 3
