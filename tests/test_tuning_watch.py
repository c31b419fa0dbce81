"""A study under --time-budget on a real local Ray: it plans, stops starting trials that cannot
finish, keeps time for the seed re-runs, ends within 10 % of the budget, prints a line per
finished trial and periodic summaries, and its Optuna journal is readable by optuna-dashboard."""
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

import trial_hooks
from test_tuning_helpers import TINY, ray_session

from ec4srec.search import study as study_mod  # noqa: E402
from ec4srec.search.watch import OBJECTIVE  # noqa: E402

BUDGET_S = 60.0
MANY = 60                      # far more trials than fit: the budget, not num_samples, binds


@pytest.fixture(scope="module")
def budgeted_study(tmp_path_factory):
    ray_session()
    tmp = tmp_path_factory.mktemp("budget")
    opts = study_mod.StudyOptions(
        dataset="synthetic", storage_path=str(tmp), name="budgeted", methods=["sasrec"],
        num_samples=MANY, max_epochs=4, scheduler="fifo", seeds=1, cpus_per_trial=1,
        gpus_per_trial=0, warm_start=False, time_budget=BUDGET_S, status_every=5,
        overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    started = time.time()
    import contextlib
    import io
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.MonkeyPatch.context() as patch:
        trial_hooks.install(patch, trial_hooks.sleep_each_epoch(1.0))   # epochs dominate a trial's cost
        summary = study_mod.run(opts)
    wall = time.time() - started
    return {"summary": summary, "wall": wall, "stdout": buffer.getvalue(),
            "exp": Path(summary["exp"])}


@pytest.mark.slow
def test_the_study_keeps_its_time_budget(budgeted_study):
    s, exp = budgeted_study["summary"], budgeted_study["exp"]
    cost = s["cost"]
    # the whole study, Ray start-up, seed re-run and tables included, ends within 10 %
    assert budgeted_study["wall"] <= 1.10 * BUDGET_S, budgeted_study["wall"]
    assert cost["used_s"] <= 1.10 * BUDGET_S
    plan = cost["plans"]["synthetic-sasrec-sasrec"]
    # the budget, not num_samples, ended the search: the gate refused further trials
    assert plan["closed_by"] == "budget" and 2 <= plan["trials_started"] < MANY
    # every started trial finished (none was left running), and the trial table has them all
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == plan["trials_started"] == plan["trials_finished"]
    # time was kept for the seed re-run; it ran and was tested unless the budget's own
    # estimate said it could not end in time (then it is listed as skipped, never cut)
    started = [x for x in cost["seeds"] if x["state"] == "started"]
    assert cost["seed_reserve_s"] > 0 and len(cost["seeds"]) == 1
    assert (exp / "seeds.csv").exists() == bool(started)
    # the cost model measured the run's epochs; the ledger and summary.json keep the report
    assert cost["cost_model"]["runs"]["synthetic-sasrec-sasrec"]["epoch_s"] > 0.4
    assert json.loads((exp / "summary.json").read_text())["cost"]["budget_s"] == BUDGET_S
    assert json.loads((exp / "budget.json").read_text())["plans"]


@pytest.mark.slow
def test_the_study_prints_a_line_per_trial_and_summaries(budgeted_study):
    out = budgeted_study["stdout"]
    trial_lines = [l for l in out.splitlines() if l.startswith("[trial] synthetic-sasrec-sasrec")]
    # one line per finished trial, each with its end, epochs and best validation NDCG@10 (on
    # a loaded machine the search deadline may stop the last trials: they get their line too)
    trials = pd.read_csv(budgeted_study["exp"] / "trials.csv")
    assert len(trial_lines) == len(trials)
    ends = r"(completed its budget after 4|stopped by the time budget after [0-4]) epochs"
    assert all(re.search(ends + r", best valid ndcg@10 (0\.|-)", l) for l in trial_lines), trial_lines
    # the periodic summary: trials done/planned, best so far, elapsed vs budget, ETA
    status = [l for l in out.splitlines() if l.startswith("[study] synthetic-sasrec-sasrec")]
    assert status and all("of 0:01:00" in l and "ETA" in l and "trials done" in l for l in status)
    # the plan is printed when the run starts
    assert "[budget] synthetic-sasrec-sasrec: share" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_reads_the_study_journal(budgeted_study):
    journal = budgeted_study["exp"] / "optuna.journal"
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    # the documented command: optuna-dashboard <exp>/optuna.journal
    proc = subprocess.Popen([str(exe), str(journal), "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        studies = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read().decode())
                time.sleep(0.2)
        assert studies is not None, "optuna-dashboard did not answer"
        by_name = {s["study_name"]: s for s in studies}
        trials = pd.read_csv(budgeted_study["exp"] / "trials.csv")
        # the run's Optuna study is there, maximising, with one Optuna trial per Tune trial
        study = by_name["synthetic-sasrec-sasrec"]
        assert study["directions"] == ["maximize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}",
                                    timeout=5) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == len(trials)
        # the best value the dashboard shows is the trial table's best validation NDCG@10
        best = max(t["values"][0] for t in detail["trials"] if t.get("values"))
        assert best == pytest.approx(trials["valid/ndcg@10"].max())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_concurrent_runs_share_the_cluster_without_mixing(tmp_path, monkeypatch):
    ray_session()
    opts = study_mod.StudyOptions(
        dataset="synthetic", storage_path=str(tmp_path), name="together",
        methods=["sasrec", "cl4srec"], num_samples=2, max_epochs=3, scheduler="fifo", seeds=0,
        cpus_per_trial=1, gpus_per_trial=0, warm_start=False, concurrent_runs=2,
        status_every=1e9, overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    # cl4srec's first trial is held until its second has started: that can only happen once
    # sasrec's run has ended and left cl4srec its slot
    trial_hooks.install(monkeypatch, trial_hooks.hold_until_started("cl4srec", 2, str(tmp_path)))
    summary = study_mod.run(opts)
    exp = Path(summary["exp"])
    spans, trials = {}, {}
    for method in ("sasrec", "cl4srec"):
        records = json.loads((exp / "runs" / f"synthetic-{method}-sasrec.json").read_text())
        # each run finished its trials, and every report of its trials is its own method's:
        # the runs' trainables are registered under their own names, never swapped
        assert len(records) == 2
        assert {r["method"] for rec in records for r in rec["history"]} == {method}
        # each trial's (start, last report): its first report's time less its training time
        trials[method] = sorted((rec["history"][0]["timestamp"] - rec["history"][0]["time_total_s"],
                                 rec["history"][-1]["timestamp"]) for rec in records)
        spans[method] = (min(s for s, _ in trials[method]), max(e for _, e in trials[method]))
    # the two runs trained at the same time (one slot each while both ran), which one after
    # another would leave one of the 2 slots idle throughout
    (a0, a1), (b0, b1) = spans.values()
    assert a0 <= b1 and b0 <= a1
    # once sasrec's run ended, cl4srec took its slot at once: its second trial started while
    # its first still ran (a cap fixed when its Tuner was made would have kept it to one, and
    # the first would have waited out the hook's timeout alone)
    (first_start, first_end), (second_start, _) = trials["cl4srec"]
    assert second_start < first_end, trials
    cost = summary["cost"]
    # the cost report says how many runs shared the cluster and how busy the slots were
    assert cost["concurrent_runs"] == 2 and 0 < cost["search_utilisation"] <= 1.0


def test_restored_searcher_trusts_the_optuna_storage_over_an_older_snapshot(tmp_path):
    import optuna
    from ec4srec.search.watch import ENDED_BEFORE_RESTORE, OBJECTIVE, BudgetedOptunaSearch, BudgetStopper

    def searcher():
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal")))
        return BudgetedOptunaSearch(
            space={"train.lr": optuna.distributions.CategoricalDistribution([0.001, 0.002])},
            metric=OBJECTIVE, mode="max", storage=storage, study_name="run", budget_run="run",
            sampler=optuna.samplers.TPESampler(seed=0))

    first = searcher()
    first.suggest("a")
    first.suggest("b")
    first.on_trial_result("a", {OBJECTIVE: 0.1, "training_iteration": 1})
    first.save(str(tmp_path / "snapshot.pkl"))        # Ray's snapshot: both trials running
    first.on_trial_complete("a", {OBJECTIVE: 0.2, "training_iteration": 2})   # then a ends
    # the driver dies here; the next one restores the older snapshot
    second = searcher()
    second.restore(str(tmp_path / "snapshot.pkl"))
    # the trial Optuna holds as finished is known as such; the running one is not
    assert second.finished_before_restore == {"a"}
    # the stopper ends it at its first report (where it re-trains), never the running one
    assert "a" in ENDED_BEFORE_RESTORE and "b" not in ENDED_BEFORE_RESTORE
    assert BudgetStopper()("a", {}) and not BudgetStopper()("b", {})
    ENDED_BEFORE_RESTORE.discard("a")
    # its re-run (Ray restores it as running) reports and completes without an Optuna error
    second.on_trial_result("a", {OBJECTIVE: 0.15, "training_iteration": 2})
    second.on_trial_complete("a", {OBJECTIVE: 0.25, "training_iteration": 2})
    second.on_trial_result("b", {OBJECTIVE: 0.3, "training_iteration": 1})
    second.on_trial_complete("b", {OBJECTIVE: 0.3, "training_iteration": 1})
    trials = optuna.load_study(study_name="run", storage=second._ot_study._storage).trials
    # Optuna keeps the first driver's value of the re-run trial and gets the running one's
    assert [t.value for t in trials] == [0.2, 0.3]
    # and the re-run's report was not added to its intermediate values
    assert trials[0].intermediate_values == {1: 0.1}


@pytest.mark.parametrize("slots, lanes, max_concurrent, tune_cap, share", [
    (2, 1, 0, 2, 2),      # a run alone uses every slot
    (2, 2, 0, 2, 1),      # two runs on two slots: one each, as the budget plans them
    (4, 3, 0, 4, 2),      # ceil(4 / 3): together the caps cover every slot
    (4, 2, 3, 3, None),   # --max-concurrent, when given, decides (Tune's cap, fixed)
])
def test_a_concurrent_runs_tuner_holds_at_most_its_lanes_share_of_the_slots(
        tmp_path, monkeypatch, slots, lanes, max_concurrent, tune_cap, share):
    from ec4srec.search import compat, tuner as tuner_mod
    from ec4srec.search.ranges import load_ranges
    opts = study_mod.StudyOptions(
        dataset="synthetic", storage_path=str(tmp_path), name="caps", methods=["sasrec"],
        num_samples=2, max_epochs=2, scheduler="fifo", seeds=0, max_concurrent=max_concurrent,
        overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    opts.exp_dir.mkdir(parents=True)
    monkeypatch.setattr(tuner_mod, "cluster_slots", lambda o: min(slots, o.max_concurrent or slots))
    tuner, _ = tuner_mod.make_tuner(opts, opts.runs()[0], load_ranges(opts.search_space), lanes=lanes)
    config = compat.restored_tune_config(tuner)
    # Tune may run every slot's worth (or --max-concurrent) ...
    assert config.max_concurrent_trials == tune_cap
    # ... and the run's searcher holds it to its share of the slots (one run cannot starve another)
    cap = config.search_alg.lane_cap
    assert (cap() if cap else None) == share


def _searcher_with_lanes(tmp_path, sharing):
    from ec4srec.search import tuner as tuner_mod
    from ec4srec.search.watch import BudgetedOptunaSearch
    opts = SimpleNamespace(max_concurrent=0)
    searcher = BudgetedOptunaSearch(space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
                                    metric=OBJECTIVE, mode="max", study_name="lanes",
                                    storage=optuna.storages.InMemoryStorage())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tuner_mod, "cluster_slots", lambda o: 2)
        _, searcher.lane_cap = tuner_mod.lane_cap(opts, sharing)
    return searcher


def test_a_run_takes_the_slots_another_run_leaves_the_moment_it_ends(tmp_path):
    sharing = [2]
    searcher = _searcher_with_lanes(tmp_path, lambda: sharing[0])
    # two runs share two slots: this run starts one trial, then waits (None: ask again later)
    assert isinstance(searcher.suggest("a"), dict)
    assert searcher.suggest("b") is None
    sharing[0] = 1
    # the other run ended: the next ask starts a second trial at once, and no third
    assert isinstance(searcher.suggest("b"), dict)
    assert searcher.suggest("c") is None
    searcher.on_trial_complete("a", {OBJECTIVE: 0.1})
    # a trial ended: its slot is the run's again
    assert searcher.live_trials() == 1 and isinstance(searcher.suggest("c"), dict)


def test_the_lane_cap_is_not_pickled_with_the_searcher(tmp_path):
    import pickle
    searcher = _searcher_with_lanes(tmp_path, lambda: 2)      # a share of one slot
    searcher.suggest("a")
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    saved = pickle.loads(path.read_bytes())
    # the driver's live cap (a closure over its threads) stays out of the run's folder ...
    assert "lane_cap" not in saved and "lane_cap" not in searcher.__getstate__()
    # ... and the driver keeps it after saving
    assert searcher.lane_cap is not None and searcher.suggest("b") is None


def test_a_restored_concurrency_limiter_keeps_the_restoring_drivers_limit():
    from ray.tune.search import ConcurrencyLimiter
    from ec4srec.search import compat
    from ec4srec.search.watch import BudgetedOptunaSearch
    inner = BudgetedOptunaSearch(space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
                                 metric=OBJECTIVE, mode="max")
    saved = ConcurrencyLimiter(inner, max_concurrent=1)
    saved.suggest("a")
    state = saved.get_state()
    compat.keep_current_concurrency_limits()
    restored = ConcurrencyLimiter(inner, max_concurrent=2)
    restored.set_state(state)
    # the limit is the restoring driver's; the trials the saved limiter held live come back
    assert restored.max_concurrent == 2 and restored.live_trials == {"a"}


def test_a_restored_runs_status_counts_the_trials_that_ended_before_it(capsys):
    from types import SimpleNamespace
    from ec4srec.search.watch import OBJECTIVE, StudyWatcher
    watcher = StudyWatcher("r", planned=6, max_epochs=3, status_every=0)
    trial = lambda i, status, value: SimpleNamespace(                    # noqa: E731
        trial_id=f"t{i}", status=status, last_result={OBJECTIVE: value, "epoch": 3})
    trials = [trial(i, "TERMINATED", 0.01 * (i + 1)) for i in range(5)] + [trial(5, "RUNNING", 0.02)]
    watcher.on_step_end(0, trials)
    line = capsys.readouterr().out
    # the five trials the previous driver ended count as done, and their best is the best so far
    assert "5/6 trials done" in line and "best valid ndcg@10 0.0500" in line
    watcher.running["t5"] = 0.0
    trials[5].status = "TERMINATED"
    watcher.on_trial_complete(1, trials, trials[5])
    watcher.on_step_end(1, trials)
    out = capsys.readouterr().out
    # the run's last trial is its 6th, not its 1st; it is not counted twice
    assert "(6/6)" in out and "6/6 trials done" in out
    # this driver's pace counts only the trial it saw end
    assert watcher.done == 1 and watcher.earlier == 5


def test_the_status_never_shows_fewer_planned_trials_than_the_gate_admitted(capsys):
    from types import SimpleNamespace
    from ec4srec.search.watch import StudyWatcher
    watcher = StudyWatcher("r", planned=1, max_epochs=3, status_every=0)
    watcher.running.update({"t0": 0.0, "t1": 0.0})      # two trials started (on_trial_start)
    watcher.on_step_end(0, [SimpleNamespace(trial_id=t, status="RUNNING", last_result={})
                            for t in watcher.running])
    # the budget estimated one trial; the gate admitted two: "0/2", never "0/1, 2 running"
    assert "0/2 trials done, 2 running" in capsys.readouterr().out


def test_the_eta_counts_the_running_trials_the_gate_admitted_beyond_the_estimate():
    from ec4srec.search.watch import StudyWatcher
    watcher = StudyWatcher("r", planned=1, max_epochs=3, status_every=0)
    watcher.done, watcher.started = 1, 1000.0          # one trial ended in this driver's 100 s
    # the estimate said one trial; the gate admitted a second, still running: one more trial's
    # worth of time is left, not none
    assert watcher.status_line(1100.0, running=1).endswith("ETA of this run 0:01:40")
    assert watcher.status_line(1100.0, running=0).endswith("ETA of this run 0:00:00")
