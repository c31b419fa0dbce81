"""The time budget's arithmetic on a fake clock: durations, the cost model, the plan, the gate,
the deadline, the seed phase and the ledger that carries a study across resumes (no Ray)."""
import json

import pytest

from ec4srec.config import ConfigError
from ec4srec.search.budget import Budget, parse_duration
from ec4srec.search.cost import PRIOR_FRACTION, CostModel


@pytest.mark.parametrize("text,seconds", [("3h", 10800), ("90m", 5400), ("1h30m", 5400),
                                          ("45s", 45), ("2d", 172800), ("5400", 5400),
                                          (" 1h 15m ", 4500), (120, 120)])
def test_parse_duration(text, seconds):
    # every accepted spelling gives the same seconds
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3x", "h", "-1h", "0", "soon", "3h!"])
def test_parse_duration_rejects_bad_values(text):
    # anything else is one ConfigError naming the option
    with pytest.raises(ConfigError, match="--time-budget"):
        parse_duration(text)


def reports(model: CostModel, run: str, trial: str, seconds: list[float], updates=()):
    for epoch, s in enumerate(seconds, start=1):
        model.observe(run, trial, {"epoch": epoch, "time_this_iter_s": s,
                                   "importance_update": epoch in updates})


def test_cost_model_separates_startup_epochs_and_updates():
    model = CostModel()
    # first report 9 s (start-up + epoch), plain epochs 2 s, the update epoch (3) 7 s
    reports(model, "a", "t1", [9.0, 2.0, 7.0, 2.0, 2.0], updates={3})
    # the first report of a session is start-up, never an epoch price
    assert model.epoch_seconds("a") == 2.0
    # an update costs its epoch plus 5 s
    assert model.update_extra_seconds("a") == 5.0
    # a full trial: 10 epochs, 2 updates, start-up overhead 9 - 2 = 7
    assert model.full_trial_seconds("a", 10, 2) == pytest.approx(10 * 2 + 2 * 5 + 7)
    # an unmeasured run borrows the measured runs' epoch price and update ratio (7/2 - 1)
    reports(model, "b", "t2", [3.0, 4.0, 4.0])
    assert model.epoch_seconds("c") == pytest.approx(3.0)         # median of 2 and 4
    assert model.update_extra_seconds("b") == pytest.approx(4.0 * 2.5)
    # a restored trial's first report (epoch jumps) counts as start-up again
    model.observe("a", "t1", {"epoch": 9, "time_this_iter_s": 50.0})
    assert model.epoch_seconds("a") == 2.0


def test_an_unmeasured_run_is_priced_by_the_methods_relative_cost():
    model = CostModel(weights={"sasrec": 1.0, "ec4srec": 3.6, "duorec": 2.4})
    reports(model, "sasrec", "t1", [9.0, 10.0, 10.0])
    # measured: its own median; not measured: the measured run's epoch x 3.6 / 1.0
    assert model.epoch_seconds("sasrec") == 10.0
    assert model.epoch_seconds("ec4srec") == pytest.approx(36.0)
    reports(model, "duorec", "t2", [30.0, 30.0])
    # two measured runs: the median of their scaled prices (36 and 30 x 3.6 / 2.4 = 45)
    assert model.epoch_seconds("ec4srec") == pytest.approx((36.0 + 45.0) / 2)
    # a run without a prior weighs 1
    assert model.epoch_seconds("other") == pytest.approx((10.0 + 30.0 / 2.4) / 2)


def test_trial_overhead_is_what_the_driver_saw_beyond_the_epochs():
    model = CostModel()
    reports(model, "a", "t1", [9.0, 2.0, 7.0, 2.0, 2.0], updates={3})
    # the driver saw the trial take 40 s; its 5 epochs (one an update) price at 5 x 2 + 5
    model.trial_wall("a", "t1", 40.0)
    assert model.overhead["a"] == [pytest.approx(25.0)]
    # a full trial now carries that overhead instead of the first report's start-up
    assert model.full_trial_seconds("a", 10, 2) == pytest.approx(10 * 2 + 2 * 5 + 25)


def test_cost_model_round_trips_through_the_ledger_format():
    model = CostModel()
    reports(model, "a", "t1", [5.0, 1.0, 1.5])
    model.finished(3, 6, pruned=True)
    again = CostModel.from_dict(json.loads(json.dumps(model.to_dict())))
    # the samples survive, so a resumed study prices runs as before
    assert again.epoch_seconds("a") == model.epoch_seconds("a")
    assert again.trial_fraction() == model.trial_fraction() == 0.5


def test_trained_fractions_are_per_run_and_borrowed_only_before_a_run_has_its_own():
    model = CostModel()
    model.finished(20, 200, pruned=True, run="stage1")      # seconds clock, N = 200: 10 %
    # a run with no ended trial borrows the study's (better than the prior)
    assert model.trial_fraction(run="stage2") == pytest.approx(0.1)
    model.finished(30, 60, pruned=False, run="stage2")      # N = 60: 50 %
    # once it has its own, the other run's N and clock no longer price it
    assert model.trial_fraction(run="stage2") == pytest.approx(0.5)
    # unpruned trials price seed re-runs the same way: stage1 has none of its own yet
    assert model.seed_fraction("stage2") == pytest.approx(0.5)
    assert model.seed_fraction("stage1") == pytest.approx(0.5)
    # an older ledger's pooled list still loads, as one pool
    old = CostModel.from_dict({"samples": {"fractions": [0.25, 0.75], "full_fractions": [1.0]}})
    assert old.trial_fraction(run="any") == 0.5 and old.seed_fraction("any") == 1.0


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(tmp_path, clock, total=3600.0, runs=("r1", "r2"), seeds=1, slots=2, num=20):
    return Budget(tmp_path, total, list(runs), {r: 0 for r in runs}, max_epochs=10,
                  num_samples=num, slots=slots, seeds=seeds, clock=clock)


def test_plan_splits_the_search_time_and_sizes_the_run(tmp_path):
    clock = Clock()
    b = make(tmp_path, clock)
    plan = b.begin_run("r1")
    # nothing measured: no seed reserve yet, the search time (budget - 60 s tables) in 2 shares
    assert plan.share_s == pytest.approx((3600 - 60) / 2)
    assert plan.planned_trials == 20                      # unknown cost: up to num_samples
    reports(b.cost, "r1", "t", [10.0] + [10.0] * 9)        # 10 s epochs, start-up 0
    b.end_run("r1")
    clock.t += 600
    plan = b.begin_run("r2")
    full = 10 * 10.0
    # seed reserve: 2 runs x 1 seed on 2 slots = 1 wave of a full trial (prior fraction 1.0)
    assert b.seed_reserve() == pytest.approx(full)
    # r2 gets everything left of the search time (one run left)
    assert plan.share_s == pytest.approx(3600 - 600 - full - 60)
    # trials: share x slots / expected trial (full x the prior fraction under ASHA), capped
    expected = full * PRIOR_FRACTION
    assert plan.planned_trials == min(20, int(plan.share_s * 2 / expected))


def test_gate_and_deadline(tmp_path):
    clock = Clock()
    b = make(tmp_path, clock, total=1000.0, runs=("r1",), seeds=0)
    b.begin_run("r1")
    reports(b.cost, "r1", "t", [50.0] * 5)                 # a full trial = 10 x 50 = 500 s
    # early on, a trial fits: the gate lets it start and counts it
    assert b.may_start("r1") and b.plans["r1"].trials_started == 1
    clock.t += 1000 - 50 - 500 + 1                         # a full trial no longer fits
    # the gate refuses, and the refusal closes the run "by the budget"
    assert not b.may_start("r1")
    assert b.plans["r1"].refused == 1 and b.plans["r1"].closed_by == "budget"
    assert not b.search_over()
    clock.t = 1000 + 1000 - 50                             # the tables' reserve (5 %) begins
    # past the search deadline every trial is stopped
    assert b.search_over()


def test_seed_phase_skips_jobs_that_cannot_end_in_time(tmp_path):
    clock = Clock()
    b = make(tmp_path, clock, total=1000.0, runs=("r1",), seeds=3, slots=1)
    reports(b.cost, "r1", "t", [10.0] * 4)                 # 10 s epochs, no start-up overhead
    clock.t += 700                                         # 300 s left, 50 s for the tables
    fits, end = b.seed_fits("r1", expected_epochs=10, queue_end=0.0)
    # a 100 s job fits at once and ends 100 s from now
    assert fits and end == pytest.approx(clock.t + 100)
    fits, end2 = b.seed_fits("r1", 10, queue_end=end)
    assert fits
    # a third queued behind two others would end after the deadline - reserve: skipped
    fits, _ = b.seed_fits("r1", 10, queue_end=end2)
    assert not fits


def test_a_budget_too_small_for_every_run_keeps_the_runs_that_fit(tmp_path):
    """Beauty-5k at 45 min (6 runs, 1 seed, 2 slots): the seeds of six runs alone would need
    3 waves of a full trial, more than the budget. Only runs that fit get seed time."""
    clock = Clock(0.0)
    runs = [f"r{i}" for i in range(1, 7)]
    b = make(tmp_path, clock, total=2700.0, runs=runs, seeds=1, slots=2)
    first = b.begin_run("r1")
    # nothing measured: the search time in six shares
    assert first.share_s == pytest.approx((2700 - 60) / 6)
    reports(b.cost, "r1", "t1", [100.0] * 3)               # a full trial: 10 x 100 s
    clock.t = 200.0
    # at the measured costs r1 and r2 fit with their seeds (r2's full trial + one seed wave of
    # 1000 s after r1's share); r3 would need a second seed wave: the reserve is for r1, r2
    assert b.fitting_runs() == ["r1", "r2"]
    assert b.seed_reserve() == pytest.approx(1000.0)
    # so r1's running trials go on (the reserve of all six runs, 3000 s, would stop them now)
    assert not b.search_over()
    clock.t = first.deadline
    b.trial_done("r1", epochs=5, pruned=True)             # ASHA: half of N, as the prior
    b.end_run("r1")
    second = b.begin_run("r2")
    # r2 gets the search time up to the seed reserve and the tables, and its trials start
    assert second.share_s == pytest.approx(2700 - 60 - 1000 - clock.t)
    assert b.may_start("r2")
    clock.t = second.deadline
    b.trial_done("r2", epochs=5, pruned=True)
    b.end_run("r2")
    b.begin_run("r3")
    # r3 does not fit: its first trial is refused (the study skips it, left for a resume)
    assert not b.may_start("r3", count=False)
    b.end_run("r3")
    # the seeds of r1 and r2 (one wave on two slots) end within the budget
    fits, end = b.seed_fits("r1", 10, queue_end=0.0)
    assert fits and end <= 2700 - b.table_reserve
    assert b.fitting_runs() == ["r1", "r2"]


def test_concurrent_runs_fit_side_by_side(tmp_path):
    clock = Clock(0.0)
    b = Budget(tmp_path, 4000.0, ["a", "b"], {"a": 0, "b": 0}, max_epochs=10, num_samples=20,
               slots=4, seeds=1, clock=clock, concurrency=2)
    reports(b.cost, "a", "t0", [10.0] * 3)                # known costs: a full trial is 100 s
    first = b.begin_run("a")
    second = b.begin_run("b")
    # with two lanes, b starts beside a (a's share does not delay it): both get the same share
    assert b.fitting_runs() == ["a", "b"]
    assert second.share_s == pytest.approx(first.share_s) and second.share_s > 0
    assert b.may_start("b")


def test_ledger_carries_used_time_across_drivers(tmp_path):
    clock = Clock()
    b = make(tmp_path, clock)
    b.begin_run("r1")
    clock.t += 1200
    b.end_run("r1")
    b.write()
    # a resumed driver starts with what the first one used
    later = Clock(50_000.0)
    again = make(tmp_path, later)
    assert again.used_before == pytest.approx(1200)
    assert again.deadline == pytest.approx(50_000 + 3600 - 1200)
    # the finished run keeps its plan and the time it used; the other run is still to plan
    assert again.plans["r1"].done and again.report()["plans"]["r1"]["used_s"] == pytest.approx(1200)
    later.t += 100
    assert again.begin_run("r2").share_s == pytest.approx(3600 - 1200 - 100 - 60)


def lanes_budget(tmp_path, runs, seeds):
    """Budgets (by clock and total) of ``runs`` on two slots, two runs at a time."""
    def budget(clock, total):
        return Budget(tmp_path, total, runs, {r: 0 for r in runs}, max_epochs=10, num_samples=20,
                      slots=2, seeds=seeds, clock=clock, concurrency=2)
    return budget


def test_a_skipped_run_is_planned_again_by_a_resumed_driver(tmp_path):
    budget = lanes_budget(tmp_path, ["r1", "r2", "r3"], seeds=0)
    clock = Clock(0.0)
    b = budget(clock, 1500.0)
    reports(b.cost, "r1", "t1", [100.0] * 3)               # a full trial: 10 x 100 s
    b.begin_run("r1")
    clock.t = 900.0
    b.begin_run("r2")                                      # beside r1, late
    # r2 cannot finish one trial before the search deadline: skipped; then the driver dies
    assert not b.may_start("r2", count=False)
    b.skip_run("r2")
    b.write()
    # a resumed driver with a larger budget: r2 is a run not yet started again
    again = budget(Clock(10_000.0), 6000.0)
    assert "r2" not in again.plans and not again.plans["r1"].done
    # so the restored r1 leaves r2 its share: three runs on two lanes are two waves, and r1,
    # which searched 900 s already, gets the equal total less those 900 s
    share = again.begin_run("r1").share_s
    assert share == pytest.approx((6000 - 900 - again.table_reserve) / 2 + 900 / 3 - 900)
    assert again.begin_run("r2").share_s > 0 and again.may_start("r2")


def test_a_run_skipped_after_its_trials_were_lost_is_planned_again(tmp_path):
    budget = lanes_budget(tmp_path, ["r1", "r2"], seeds=1)
    clock = Clock(0.0)
    b = budget(clock, 3000.0)
    reports(b.cost, "r1", "t1", [100.0] * 3)               # a full trial: 10 x 100 s
    b.begin_run("r1")
    b.begin_run("r2")
    assert b.may_start("r2")                              # its trial starts, then its driver dies
    clock.t = 600.0
    b.write()
    # the next driver skips r2 (as when the gate refuses it), its started trial never finished
    resumed = budget(Clock(5_000.0), 3000.0)
    resumed.begin_run("r2")
    resumed.skip_run("r2")
    # within that driver r2 is over: it gets no seed time
    assert "r2" not in resumed.fitting_runs()
    resumed.write()
    # a third driver plans it again (its used time kept): the forecast counts it as a run to
    # plan, which fits in a larger budget, not as neither started nor pending
    again = budget(Clock(10_000.0), 6000.0)
    assert again.plans["r2"].trials_started == 1 and again.run_used("r2", 10_000.0) > 0
    assert again.fitting_runs() == ["r1", "r2"]


def test_a_run_resumed_after_part_of_its_share_gets_only_the_rest(tmp_path):
    clock = Clock(0.0)
    runs = ["a", "b", "c"]
    b = Budget(tmp_path, 3060.0, runs, {r: 0 for r in runs}, max_epochs=10, num_samples=20,
               slots=2, seeds=0, clock=clock)
    first = b.begin_run("a")
    # three equal shares of the search time (3060 s less 60 s of tables)
    assert first.share_s == pytest.approx(1000.0)
    clock.t = 600.0                                         # the driver stops; a used 600 s
    b.write()
    again = Budget(tmp_path, 3060.0, runs, {r: 0 for r in runs}, max_epochs=10, num_samples=20,
                   slots=2, seeds=0, clock=Clock(5000.0))
    # resumed, a gets what is left of its 1000 s, not a third of what is left of the study
    assert again.begin_run("a").share_s == pytest.approx(400.0)
    again.clock.t += 400.0
    again.end_run("a")
    # and the next run gets a full 1000 s: every run the same total
    assert again.begin_run("b").share_s == pytest.approx(1000.0)


def test_a_corrupt_ledger_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "budget.json").write_text('{"budget_s": 5}')
    # a ledger without its keys is refused with the file's name
    with pytest.raises(ConfigError, match="budget.json"):
        make(tmp_path, Clock())


def test_utilisation_integrates_busy_slots_capped_at_the_slot_count(tmp_path):
    clock = Clock(0.0)
    b = make(tmp_path, clock, slots=2)
    b.begin_run("r1")                       # the search starts at t = 0
    b.note_busy(0.0, 10.0)
    b.note_busy(0.0, 5.0)
    b.note_busy(4.0, 10.0)                  # overlaps: 3 sessions for 1 s, counted as 2 slots
    clock.t = 10.0
    b.end_run("r1")
    # busy slot-seconds: 2 x 10 (both slots busy all along) of 2 x 10
    assert b.utilisation() == pytest.approx(1.0)
    b.busy = [(0.0, 10.0)]
    # one slot of two busy: half
    assert b.utilisation() == pytest.approx(0.5)


def test_asha_expected_length_by_hand():
    from ec4srec.search.cost import asha_expected
    # rungs 10, 30, 90 (rf 3) up to 200: 10 + 20/3 + 60/9 + 110/27
    assert asha_expected([10, 30, 90], 3, 200) == pytest.approx(10 + 20 / 3 + 60 / 9 + 110 / 27)
    # a trial shorter than the first rung is never cut
    assert asha_expected([10, 30], 3, 6) == 6


@pytest.mark.parametrize("clock_name", ["epochs", "seconds"])
def test_under_asha_the_gate_asks_for_the_first_rung_not_a_full_trial(tmp_path, clock_name):
    clock = Clock()
    grace = 2 if clock_name == "epochs" else 100
    b = Budget(tmp_path, 1000.0, ["r1"], {"r1": 0}, max_epochs=10, num_samples=20, slots=1,
               seeds=0, clock=clock, asha={"r1": (clock_name, grace, 3.0)})
    b.begin_run("r1")
    reports(b.cost, "r1", "t", [50.0] * 5)                 # a full trial = 10 x 50 = 500 s
    expected, first = b.trial_costs("r1", 500.0)
    # nothing ended yet: ASHA's expected length (2, 6 epochs / 100, 300 s rungs), first rung
    if clock_name == "epochs":
        assert (expected, first) == (pytest.approx(50 * (2 + 4 / 3 + 4 / 9)), 100.0)
    else:
        assert (expected, first) == (pytest.approx(100 + 200 / 3 + 200 / 9), 100.0)
    clock.t += 1000 - 50 - 250                             # 250 s to the search deadline
    # a full trial (500 s) no longer fits, but the expected one and the first rung do
    assert b.may_start("r1")
    clock.t += 200
    # 50 s left: not even the first rung fits
    assert not b.may_start("r1")


def test_the_seed_reserve_never_takes_more_than_half_the_budget(tmp_path):
    clock = Clock()
    b = make(tmp_path, clock, total=1000.0, runs=("r1",), seeds=3, slots=1)
    b.begin_run("r1")
    reports(b.cost, "r1", "t", [100.0] * 3)                 # a full trial: 1000 s, 3 waves
    # 3 x 1000 s of seeds would leave the search nothing: the reserve stops at half
    assert b.seed_reserve() == pytest.approx(500.0)


@pytest.mark.parametrize("seeds_done, reserve", [
    ({}, 2100 / 2 + 400 / 2),          # 9 jobs: greedy packing's bound, under 5 waves of 400 s
    ({"a": 3}, 1800 / 2 + 400 / 2),    # a's three are recorded: 6 jobs, under 3 waves (1200 s)
    ({"a": 3, "c": 3}, 2 * 400),       # b's three alone: 2 waves of 400 s, under the bound
])
def test_the_seed_reserve_packs_each_runs_jobs_and_leaves_out_recorded_seeds(tmp_path, seeds_done,
                                                                              reserve):
    runs = ["a", "b", "c"]
    b = Budget(tmp_path, 100_000.0, runs, {r: 0 for r in runs}, max_epochs=10, num_samples=20,
               slots=2, seeds=3, clock=Clock(), seeds_done=seeds_done)
    for run, epoch_s in (("a", 10.0), ("b", 40.0), ("c", 20.0)):   # full trials 100, 400, 200 s
        reports(b.cost, run, "t", [epoch_s] * 3)
    # each job priced at its own run's seed (a full trial before any ended on its own)
    assert b.seed_reserve(runs) == pytest.approx(reserve)


def test_a_seed_rerun_is_priced_to_early_stopping_not_at_its_cut_trials_length():
    import pandas as pd
    from ec4srec.search.study import seed_epochs
    trials = pd.DataFrame({
        "run": ["r"] * 3, "trial_id": ["a", "b", "c"], "state": ["pruned", "early_stopped", "pruned"],
        "epochs": [11, 39, 3], "best_epoch": [11, 24, 3], "valid/ndcg@10": [0.06, 0.05, 0.01]})
    # the best trial (a) was cut at 11 epochs: its seeds train at least 11 + patience 15, and
    # the run's early-stopped trials took 39
    assert seed_epochs(trials, "r", patience=15, n=200) == 39
    assert seed_epochs(trials, "r", patience=40, n=200) == 51
    # never more than N
    assert seed_epochs(trials, "r", patience=15, n=30) == 30


def test_a_slow_configs_epochs_are_not_counted_as_overhead():
    model = CostModel()
    reports(model, "a", "fast", [3.0, 1.0, 1.0])
    model.trial_wall("a", "fast", 6.0)
    reports(model, "a", "slow", [12.0, 10.0, 10.0])        # a bigger model of the same run
    # its wall is its own epochs plus 2 s of start-up: 2 s of overhead, not 32 - 3 x median
    model.trial_wall("a", "slow", 34.0)
    assert model.overhead["a"] == [pytest.approx(3.0), pytest.approx(4.0)]


def test_under_asha_a_run_fits_when_its_first_rung_does(tmp_path):
    clock = Clock(0.0)
    # three runs under ASHA (first rung: 2 of N = 100 epochs), 1 seed, 2 slots, 2500 s
    asha = {r: ("epochs", 2, 3.0) for r in ("a", "b", "c")}
    b = Budget(tmp_path, 2500.0, ["a", "b", "c"], {r: 0 for r in "abc"}, max_epochs=100,
               num_samples=20, slots=2, seeds=1, clock=clock, asha=asha)
    reports(b.cost, "a", "t0", [10.0] * 3)                # an epoch 10 s: a full trial 1000 s
    b.cost.finished(6, 100, pruned=False, run="a")         # seeds train 6 % of N: 60 s each
    # three full trials (3000 s) and the seeds would not fit in 2500 s, but the gate admits a
    # run's first trial when it reaches its first rung (20 s): every run keeps its seed time
    # and its share, as the gate will (a full-trial rule skipped the guided runs of a study)
    assert b.fitting_runs() == ["a", "b", "c"]


def test_an_expected_trial_is_never_shorter_than_its_first_decision(tmp_path):
    asha = {"g": ("epochs", 6, 3.0)}
    b = Budget(tmp_path, None, ["s", "g"], {"s": 0, "g": 5}, max_epochs=60, num_samples=20,
               slots=2, seeds=0, asha=asha)
    b.cost.finished(3, 60, pruned=True, run="s")           # a seconds-clock run: 5 % of N
    expected, first = b.trial_costs("g", 600.0)
    # g's first rung: its first update at epoch 60 // 6 = 10, then 6 guided epochs: 15 of 60
    assert first == pytest.approx(600.0 * 15 / 60)
    # the borrowed 5 % would price it at 30 s; every trial trains to its first rung
    assert expected == pytest.approx(first)


@pytest.mark.parametrize("finished, expected", [(2, True), (20, False)])
def test_a_run_with_fewer_trials_than_asked_reopens_when_the_budget_grows(tmp_path, finished,
                                                                         expected):
    clock = Clock(0.0)
    b = Budget(tmp_path, 3060.0, ["a", "b"], {"a": 0, "b": 0}, max_epochs=10, num_samples=20,
               slots=2, seeds=0, clock=clock)
    reports(b.cost, "a", "t0", [10.0] * 3)                # a full trial 100 s, expected 50 s
    b.begin_run("a")
    b.plans["a"].trials_finished = finished
    clock.t = 100.0
    b.end_run("a")                                         # planned trials done: not "budget"
    # its Tuner's count was the budget's plan: with room left in its equal total (about
    # 1500 s) it reopens, unless it already ran every trial --num-samples asks for
    assert b.reopens("a") is expected


def finished_run(b: Budget, clock: Clock, run: str, used: float, trials: int = 2) -> None:
    """``run`` searched ``used`` seconds (from now on the clock) with ``trials`` trials, then
    completed."""
    b.begin_run(run)
    clock.t += used
    b.plans[run].trials_finished = trials
    b.end_run(run)


def test_complete_runs_reopen_only_as_far_as_the_search_time_left_holds_them(tmp_path):
    # the Beauty study at session 20: five runs on two lanes, CL4SRec and DuoRec complete after
    # about 7 h and 6.5 h, EC4SRec(SSL) and EC4SRec(SL) complete after one trial each, EC4SRec
    # still searching; every trial's expected length 1 h
    runs = ["cl4", "duo", "ssl", "sl", "ec4"]
    clock = Clock(0.0)
    b = lanes_budget(tmp_path, runs, seeds=0)(clock, 100_000.0)
    for run in runs:
        reports(b.cost, run, "t", [720.0] * 3)           # a full trial 2 h, expected 1 h
    for run, used in (("cl4", 25_000.0), ("duo", 23_000.0), ("ssl", 9_000.0), ("sl", 11_000.0)):
        finished_run(b, clock, run, used)
    b.begin_run("ec4")
    clock.t += 7_000.0
    b.total_s = clock.t - 0.0 + 22_000.0 + b.table_reserve   # 22,000 s of search time left
    assert b.search_deadline - clock.t == pytest.approx(22_000.0)
    # judged each against EC4SRec alone, every complete run would reopen on the same 6 h
    alone = {r: b.equal_total([r, "ec4"], clock.t) - b.run_used(r, clock.t) for r in runs[:4]}
    assert all(share >= 3600.0 for share in alone.values())
    # together: the two least used join EC4SRec (three runs, two waves), the others do not:
    # their used time already exceeds that total less one trial
    assert b.open_runs() == ["ssl", "sl", "ec4"]
    total = b.equal_total(["ssl", "sl", "ec4"], clock.t)
    assert total == pytest.approx(22_000.0 / 2 + (9_000.0 + 11_000.0 + 7_000.0) / 3)
    assert [b.reopens(r) for r in runs[:4]] == [False, False, True, True]
    # and a closed run (a staged study's stage 1) never reopens
    b.closed.add("ssl")
    assert not b.reopens("ssl") and b.open_runs() == ["sl", "ec4"]


def ssl_and_ec4(tmp_path, seeds, total):
    """(runs, clock, budget): two runs on two lanes, each trial priced 2 h full, 1 h expected."""
    runs, clock = ["ssl", "ec4"], Clock(0.0)
    b = lanes_budget(tmp_path, runs, seeds=seeds)(clock, total)
    for run in runs:
        reports(b.cost, run, "t", [720.0] * 3)
    return runs, clock, b


def test_a_reopened_run_gets_its_share_beside_a_run_that_began_first(tmp_path):
    # the session-20 resume: EC4SRec (in progress) began first and took a lane until near the
    # search deadline; EC4SRec(SSL), complete after one trial and credited for a lost one,
    # reopened and was then judged as a run not yet started behind that lane: share 0, skipped
    runs, clock, b = ssl_and_ec4(tmp_path, seeds=1, total=60_000.0)
    finished_run(b, clock, "ssl", 9_000.0, trials=1)
    b.credit_lost("ssl", 4_000.0)
    b.begin_run("ec4")
    clock.t += 3_000.0
    b.begin_run("ec4")                                    # the resumed driver re-plans it first
    assert b.reopens("ssl")
    plan = b.begin_run("ssl")
    # the reopened run keeps its credit and gets the equal total of the two open runs, as
    # reopens() judged it: room for its expected trial, and the gate admits one
    assert plan.lost_s == 4_000.0
    assert plan.share_s == pytest.approx(
        b.equal_total(runs, clock.t) - b.run_used("ssl", clock.t)) and plan.share_s >= 3600.0
    assert b.may_start("ssl", count=False)


def test_a_run_whose_only_trials_are_carried_is_in_progress_when_resumed(tmp_path):
    # the session-21 resume: EC4SRec(SSL) (one finished trial, less used) began first and its
    # share ran past the search deadline; EC4SRec, whose three trials were all lost with the
    # machine (two carried), was then judged as a run not yet started behind that lane and
    # its seeds did not fit: share 0, though its carried trial continued anyway
    runs, clock, b = ssl_and_ec4(tmp_path, seeds=3, total=100_000.0)
    b.begin_run("ssl")
    b.begin_run("ec4")
    clock.t = 20_000.0
    b.plans["ssl"].trials_finished = 1                   # ec4 finished none
    b.plans["ssl"].trials_started = b.plans["ec4"].trials_started = 2
    b.write()
    clock.t = 30_000.0                                   # a new machine: a new driver
    r = lanes_budget(tmp_path, runs, seeds=3)(clock, 100_000.0)
    r.credit_lost("ssl", 8_000.0)
    r.carrying.add("ec4")                                # plan.make_budget: it has a carry
    ssl, ec4 = r.begin_run("ssl"), r.begin_run("ec4")
    left = r.search_deadline - clock.t
    # no share runs past the search deadline: the search stops every trial there
    assert 0 < ssl.share_s <= left + 1e-6
    # the run with carried trials is in progress: its seeds are kept and it gets its share
    # of the equal total, as a run with a finished trial would
    assert "ec4" in r.fitting_runs()
    assert ec4.share_s == pytest.approx(min(left, r.equal_total(runs, clock.t)
                                            - r.run_used("ec4", clock.t)))
    assert ec4.share_s > 3600.0 and ec4.planned_trials >= 2
