"""The seed phase (ec4srec/search/seeds.py): jobs started once each, in batches; the search's
tail hands the slots its last trials leave free to the seed jobs of the runs that ended."""
from __future__ import annotations

from pathlib import Path

import pytest

from ec4srec.search import seeds
from ec4srec.search.budget import Budget
from ec4srec.search.options import StudyOptions
from test_budget import Clock, reports
from test_tuning_helpers import tiny_config


class FakeTask:
    """Stands in for the Ray task: records the jobs started, starts nothing."""

    def __init__(self):
        self.jobs = []

    def remote(self, config, seed, work):
        self.jobs.append((config["method"]["name"], seed))
        return object()


def phase_of(tmp_path, budget=None, n_seeds=2):
    opts = StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s", seeds=n_seeds)
    phase = seeds.SeedPhase(opts, budget)
    phase.task = FakeTask()
    return phase


def best_of(*methods):
    return {f"synthetic-{m}-sasrec": tiny_config(m, epochs=2) for m in methods}


def test_seed_jobs_start_seed_major_at_most_the_limit_and_once_each(tmp_path):
    phase = phase_of(tmp_path)
    best = best_of("sasrec", "cl4srec")
    seed = best["synthetic-sasrec-sasrec"].train.seed
    # a capped start takes the first jobs in seed-major order: every run's first seed first
    assert phase.start(best, {}, limit=1) == 1
    assert phase.task.jobs == [("sasrec", seed)]
    assert phase.start(best, {}, limit=2) == 2
    assert phase.task.jobs[1:] == [("cl4srec", seed), ("sasrec", seed + 1)]
    # the uncapped start that follows (the driver's, after the search) starts only the rest
    assert phase.start(best, {}) == 1 and phase.task.jobs[-1] == ("cl4srec", seed + 1)
    assert phase.start(best, {}) == 0 and len(phase.pending) == phase.total == 4


def test_budget_closing_means_ended_or_refused_a_trial(tmp_path):
    clock = Clock()
    b = Budget(tmp_path, 1000.0, ["r1", "r2"], {"r1": 0, "r2": 0}, max_epochs=10,
               num_samples=20, slots=2, seeds=0, clock=clock)
    b.begin_run("r1")
    b.begin_run("r2")
    reports(b.cost, "r1", "t", [50.0] * 5)                 # a full trial = 500 s
    # admitted a trial: still searching
    assert b.may_start("r1") and not b.closing("r1")
    clock.t += 600                                         # no full trial fits any more
    # refused one: it starts no trial again in this driver
    assert not b.may_start("r1") and b.closing("r1")
    # a run that ended is closing too; one the budget does not know is not
    b.end_run("r2")
    assert b.closing("r2") and not b.closing("elsewhere")


def test_a_run_past_its_share_is_closing_unless_a_carried_restart_is_left(tmp_path):
    clock = Clock()
    b = Budget(tmp_path, 1000.0, ["r1"], {"r1": 0}, max_epochs=10, num_samples=20, slots=2,
               seeds=0, clock=clock)
    plan = b.begin_run("r1")
    # its gate never asked (a restored searcher that said FINISHED under an earlier driver)
    assert plan.refused == 0 and not b.closing("r1")
    clock.t = plan.deadline
    # its share's deadline passed: no new trial can ever be admitted
    assert b.closing("r1")
    left = [1]
    b.carries_left["r1"] = lambda: left[0]
    # ... but a carried restart still to start is admitted regardless
    assert not b.closing("r1")
    left[0] = 0
    assert b.closing("r1")


@pytest.mark.parametrize("closing, free, started", [
    ({"r": True}, 1, 1),      # the last run starts no trial: its free slot takes a seed job
    ({"r": False}, 1, 0),     # it may still start one: the slot is its
    ({"r": True}, 0, 0),      # no slot free: nothing waits in Ray's queue for one
    ({"r": True}, 2, 1),      # Ray shows 2 free, but the run's restored trial waits for one
])
def test_the_searchs_tail_gives_free_slots_to_the_ended_runs_seeds(tmp_path, monkeypatch,
                                                                   closing, free, started):
    class FakeBudget:
        slots = 2
        seed_log: list = []
        unfinished = {"r": 1}                  # the last run's one trial holds or awaits a slot

        def closing(self, run):
            return closing[run]

        def seed_fits(self, run, epochs, queue_end):
            return True, queue_end + 1.0

    phase = phase_of(tmp_path, FakeBudget())
    best = best_of("sasrec")
    monkeypatch.setattr(seeds.ray, "available_resources", lambda: {"CPU": float(free)})
    monkeypatch.setattr(seeds.results, "trial_tables", lambda *a, **k: (None, None))
    monkeypatch.setattr(seeds, "best_configs", lambda opts, done, trials: (best, {}, {}))
    on_poll = phase.tail_starter()
    on_poll({"synthetic-sasrec-sasrec": (("synthetic", "sasrec", "sasrec"), [])}, ["r"])
    # seed jobs of the ended runs start only while every other run is closing, one per free slot
    assert len(phase.task.jobs) == started
    # before the last run's Tune loop has counted its trials: nothing starts
    phase.task.jobs.clear()
    phase._tail_checked = 0.0
    del FakeBudget.unfinished["r"]
    on_poll({"synthetic-sasrec-sasrec": (("synthetic", "sasrec", "sasrec"), [])}, ["r"])
    assert phase.task.jobs == []
    FakeBudget.unfinished["r"] = 1
    # nothing ended yet: nothing to start whatever the slots
    phase.task.jobs.clear()
    phase._tail_checked = 0.0
    on_poll({}, ["r"])
    assert phase.task.jobs == []


def test_run_concurrently_polls_the_tail_once_no_run_is_left_to_start(tmp_path, monkeypatch):
    import threading
    from ec4srec.search import runs
    opts = StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s",
                        concurrent_runs=2, seeds=1)
    keys = [("synthetic", m, "sasrec") for m in ("sasrec", "cl4srec", "duorec")]
    release = {runs.run_name(k): threading.Event() for k in keys}

    def fake_search(opts, key, ranges, budget, reopen, lanes):
        release[runs.run_name(key)].wait(timeout=30)
        return [{"trial_id": runs.run_name(key)}]

    monkeypatch.setattr(runs, "run_search", fake_search)
    polls = []

    def on_poll(done, searching):
        polls.append((sorted(done), sorted(searching)))
        release["synthetic-cl4srec-sasrec"].set()           # the tail seen: let the rest end
        release["synthetic-duorec-sasrec"].set()

    # two threads, three runs: the third starts only when the first ends (after 2.5 s)
    threading.Timer(2.5, release["synthetic-sasrec-sasrec"].set).start()
    result = runs.run_concurrently(opts, keys, None, None, True, on_poll)
    assert sorted(result) == sorted(release)
    # the tail is polled only once no run waits to start: the first run had ended by then, and
    # each poll names the runs that ended and those still searching
    assert polls and all("synthetic-sasrec-sasrec" in done for done, _ in polls)
    assert all(sorted(done + searching) == sorted(release) for done, searching in polls)


@pytest.mark.parametrize("spent", [True, False])
def test_a_restored_run_whose_share_is_spent_ends_complete_not_stalled(tmp_path, monkeypatch, spent):
    from types import SimpleNamespace
    from ec4srec.search import runs
    opts = StudyOptions(dataset="synthetic", storage_path=str(tmp_path), name="s", seeds=0)
    key = ("synthetic", "sasrec", "sasrec")
    clock = Clock()
    names = [runs.run_name(key), "other"]              # its share: half the search time
    budget = Budget(opts.exp_dir, 1000.0, names, {n: 0 for n in names},
                    max_epochs=3, num_samples=5, slots=1, seeds=0, clock=clock)
    ended = SimpleNamespace(metrics={"done": True, "epoch": 3, "trial_id": "a"}, error=None,
                            metrics_dataframe=None, path=str(tmp_path / "trial_a"), config={})
    fits = []

    def fake_tuner(opts, key, ranges, planned, budget, lanes):
        if not fits:        # the restored Tuner: made before its share ran out
            clock.t = budget.plans[runs.run_name(key)].deadline if spent else clock.t
        fits.append(key)
        return object(), 5

    monkeypatch.setattr(runs.tune.Tuner, "can_restore", lambda path: True)
    monkeypatch.setattr(runs, "make_tuner", fake_tuner)
    monkeypatch.setattr(runs.compat, "tune_fit", lambda tuner: ([ended], False))
    asides = []
    monkeypatch.setattr(runs.durable, "set_aside",
                        lambda exp, run, why: asides.append(why) or Path(f"{run}.{why}-1"))
    # the restored Tuner ended its one trial of 5 and creates no more (Tune restored a searcher
    # that said FINISHED under an earlier driver: it never asks the gate again)
    if spent:
        records = runs.run_search(opts, key, None, budget)
        assert not budget.search_over()
        # its share spent, the budget ended it: complete, nothing set aside as stalled
        assert asides == [] and [r["trial_id"] for r in records] == ["a"] and len(fits) == 1
    else:
        with pytest.raises(runs.Interrupted):
            runs.run_search(opts, key, None, budget)
        # with its share left it stalled: set aside, and a fresh Tuner went on (here it stalls too)
        assert asides[0] == "stalled" and len(fits) == 2


def test_seeds_csv_holds_each_record_as_it_lands(tmp_path, monkeypatch):
    import pandas as pd
    phase = phase_of(tmp_path, n_seeds=2)
    best = best_of("sasrec")
    phase.start(best, {})
    seed = best["synthetic-sasrec-sasrec"].train.seed
    records = iter([{"method": "sasrec", "backbone": "sasrec", "seed": s, "test": {"ndcg@10": v},
                     "valid": {}} for s, v in ((seed, 0.1), (seed + 1, 0.2))])
    seen = []

    def one_lands(refs, timeout=None):
        if seen:        # the first record is on disk: seeds.csv already has it
            seen.append(len(pd.read_csv(phase.opts.exp_dir / "seeds.csv")))
        seen.append("wait")
        return [refs[0]], refs[1:]

    monkeypatch.setattr(seeds.ray, "wait", one_lands)
    monkeypatch.setattr(seeds.ray, "get", lambda ref: next(records))
    phase.wait()
    # seeds.csv is rewritten after each record, not only at the end of the seed phase
    assert seen == ["wait", 1, "wait"]
    table = pd.read_csv(phase.opts.exp_dir / "seeds.csv")
    assert sorted(table["test/ndcg@10"]) == [0.1, 0.2]


def test_the_ledger_counts_the_seed_phase_as_it_goes(tmp_path, monkeypatch):
    import json
    clock = Clock()
    budget = Budget(tmp_path / "s", 1000.0, ["r"], {"r": 0}, max_epochs=3, num_samples=5,
                    slots=2, seeds=1, clock=clock)
    phase = phase_of(tmp_path, budget, n_seeds=1)
    phase.pending = {"job": ("r", 1, tmp_path / "out.json", tmp_path / "work")}
    waits = iter([([], ["job"]), (["job"], [])])

    def wait(refs, timeout=None):
        clock.t += 600.0                 # ten minutes of a seed job
        return next(waits)

    monkeypatch.setattr(seeds.ray, "wait", wait)
    monkeypatch.setattr(seeds.ray, "get", lambda ref: {"test": {"ndcg@10": 0.1}})
    monkeypatch.setattr(seeds.results, "write_seed_table", lambda exp: None)
    phase.wait()
    # a driver killed in its seed phase (every session's end) has charged the time it ran
    used = json.loads((tmp_path / "s" / "budget.json").read_text())["used_s"]
    assert used >= 600.0
