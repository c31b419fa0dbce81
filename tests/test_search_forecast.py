"""The plan a study prints before its first trial: the probe of an epoch's cost, the cost
model's use of it, the study's forecast (hand-computed), and which Ray cluster the search joins."""
import math

import numpy as np
import pytest
import torch

from ec4srec.data import load_dataset
from ec4srec.data.batches import train_order
from ec4srec.search import tuner
from ec4srec.search.budget import Budget
from ec4srec.search.cost import CostModel
from ec4srec.search.forecast import (ACTOR_START_S, REPORT_S, forecast, plan_lines,
                                     probe_epoch_seconds)
from ec4srec.search.options import StudyOptions
from test_tuning_helpers import tiny_config


def test_probe_scales_its_steps_to_a_whole_epoch():
    config = tiny_config("sasrec")
    threads = torch.get_num_threads()
    probe = probe_epoch_seconds(config, steps=3, warmup=1)
    split = load_dataset(config.data).split
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0),
                        config.train.bucket_batches)
    # an epoch is every training step of the config plus one validation pass
    assert probe["steps_per_epoch"] == len(order) and probe["steps"] == 3
    # an epoch in a trial: its steps, a validation, a checkpoint and Tune's report
    assert probe["epoch_s"] == pytest.approx(probe["train_s"] + probe["valid_s"] + probe["save_s"]
                                             + REPORT_S)
    assert min(probe["train_s"], probe["valid_s"], probe["save_s"]) > 0
    # a trial's start-up: the data and model, plus a Ray actor's start
    assert probe["startup_s"] > ACTOR_START_S
    # the probe leaves torch's thread count as it found it
    assert torch.get_num_threads() == threads


def test_the_cost_model_uses_the_probe_only_until_an_epoch_is_measured():
    cost = CostModel(weights={"a": 1.0, "b": 2.0}, probe={"a": 10.0})
    # nothing measured: the probed run's epoch, and another run's scaled by the cost prior
    assert cost.epoch_seconds("a") == 10.0 and cost.epoch_seconds("b") == 20.0
    cost.observe("b", "t1", {"epoch": 1, "time_this_iter_s": 99.0})     # a session's start-up
    cost.observe("b", "t1", {"epoch": 2, "time_this_iter_s": 5.0})
    # one measured epoch anywhere replaces the probe: "a" is priced from "b" (5 s / 2)
    assert cost.epoch_seconds("a") == 2.5 and cost.epoch_seconds("b") == 5.0
    # the ledger keeps the probe
    assert CostModel.from_dict(cost.to_dict()).probe == {"a": 10.0}


def test_a_trial_start_up_is_the_probe_s_until_a_trial_reports():
    cost = CostModel(probe={"a": 10.0}, probe_overhead={"a": 4.0})
    # 3 epochs and the probed start-up
    assert cost.full_trial_seconds("a", 3, 0) == 3 * 10.0 + 4.0
    cost.observe("a", "t1", {"epoch": 1, "time_this_iter_s": 17.0})
    # a first report (17 s) holds a measured start-up over the run's epoch (10 s): 7 s
    assert cost.full_trial_seconds("a", 3, 0) == 3 * 10.0 + 7.0
    assert CostModel.from_dict(cost.to_dict()).probe_overhead == {"a": 4.0}


def _budget(tmp_path, total_s=None):
    budget = Budget(tmp_path, total_s, ["a", "b"], {"a": 0, "b": 0}, 10, num_samples=4,
                    slots=2, seeds=1, clock=lambda: 1000.0)
    budget.cost.probe["a"] = 6.0
    return budget


def test_forecast_prices_every_run_and_its_seeds(tmp_path):
    fc = forecast(_budget(tmp_path))
    # a full trial: 10 epochs x 6 s (no start-up known); expected: half of it (no ASHA, prior)
    assert fc["runs"]["a"] == {"full_trial_s": 60.0, "expected_trial_s": 30.0}
    assert fc["runs"]["b"] == fc["runs"]["a"]
    # search: 2 runs x ceil(4 trials / 2 slots) x 30 s; seeds: 2 runs x 1 seed x 60 s / 2 slots
    assert fc["search_s"] == 2 * math.ceil(4 / 2) * 30.0 and fc["seeds_s"] == 2 * 60.0 / 2
    assert fc["total_s"] == 180.0
    # a finished run is not priced again
    assert list(forecast(_budget(tmp_path), done={"a"})["runs"]) == ["b"]


def test_forecast_without_a_price_is_unknown(tmp_path):
    budget = Budget(tmp_path, None, ["a"], {"a": 0}, 10, num_samples=4, slots=2, seeds=1)
    # nothing probed or measured: no number is made up
    assert forecast(budget)["total_s"] is None
    assert "the first trials measure it" in plan_lines(budget, set(), None, None, 1)[-1]


@pytest.mark.parametrize("total_s, expected", [
    (1000.0, "covers it"),
    # 200 s: both runs' first trials (60 s each, one after another) and their seeds (one wave
    # of 60 s) end by 185 s (tables: 15 s); (200 - 60 - 15) / 2 runs = 62.5 s a run, x 2
    # slots / 30 s a trial = 4 trials each: all of them
    (200.0, "covers it"),
    # 150 s: b's first trial would end at 120 s, its seeds at 180 s > 135 s: skipped, as the
    # budget will skip it; a gets (150 - 60 - 15) x 2 / 30 = 5, at most 4
    (150.0, "cuts it: trials per run a ~4; skipped (no room for one trial and its seeds): b"),
    (100.0, "cuts it: trials per run none; skipped (no room for one trial and its seeds): a, b"),
])
def test_plan_lines_say_what_the_budget_cuts(tmp_path, total_s, expected):
    lines = plan_lines(_budget(tmp_path, total_s), set(), None, None, 1)
    # the unbudgeted length, then the budget's verdict
    assert "without a budget the study would take ~0:03:00" in lines[1]
    assert expected in lines[-1]


@pytest.mark.parametrize("address, env, recorded_answers, joined", [
    (None, None, True, "local"),                 # a cluster found on the machine is not joined
    (None, "10.0.0.1:6379", True, "10.0.0.1:6379"),    # RAY_ADDRESS asks for one
    ("local", "10.0.0.1:6379", True, "local"),   # --address local: private, always
    ("auto", None, True, "auto"),                # --address auto: the recorded cluster
    ("auto", None, False, "local"),              # ... unless it does not answer
    ("10.0.0.2:6379", None, True, "10.0.0.2:6379"),
    (None, "auto", True, "auto"),                # RAY_ADDRESS=auto: the recorded cluster
    (None, "auto", False, "local"),              # ... which does not answer: a private one
    (None, "local", True, "local"),              # RAY_ADDRESS=local: a private one
    ("auto", "10.0.0.1:6379", True, "10.0.0.1:6379"),   # auto takes RAY_ADDRESS first
])
def test_the_search_joins_a_cluster_only_when_asked(monkeypatch, capsys, address, env,
                                                    recorded_answers, joined):
    calls = []
    monkeypatch.setattr(tuner.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(tuner.ray, "init", lambda address=None, **kw: calls.append(address))
    monkeypatch.setattr(tuner.compat, "recorded_cluster_address", lambda: "127.0.0.9:6379")
    monkeypatch.setattr(tuner, "answers", lambda a, timeout=2.0: recorded_answers)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tuner.connect(StudyOptions(address=address, gpus_per_trial=0))
    # ray.init gets exactly the cluster the rules choose, and the first line names it
    assert calls == [joined]
    out = capsys.readouterr().out
    assert ("started a local Ray instance" in out) == (joined == "local")


def test_a_run_whose_trials_trained_nothing_does_not_break_the_plan(tmp_path):
    budget = _budget(tmp_path, total_s=1000.0)
    budget.cost.finished(0, 10, pruned=False, run="a")      # errored at start-up: 0 epochs
    budget.cost.finished(0, 10, pruned=False, run="b")
    lines = plan_lines(budget, set(), None, None, 1)
    # an expected trial of 0 s plans every trial (as Budget.begin_run does), no division by 0
    assert lines[-1].endswith("covers it")


def test_optuna_study_names_in_a_shared_rdb_are_fixed_when_the_study_begins(tmp_path):
    from ec4srec.search.resume import resumed_options
    from ec4srec.search.options import write_manifest
    from ec4srec.search.tuner import optuna_study_name
    rdb = f"sqlite:///{tmp_path}/o.db"
    opts = StudyOptions(storage_path=str(tmp_path), name="first", optuna_storage=rdb).finalize()
    # a journal holds one study's runs: plain names; an RDB: the study's name in front
    assert optuna_study_name(StudyOptions(name="x").finalize(), "r") == "r"
    assert optuna_study_name(opts, "r") == "first/r"
    write_manifest(opts)
    moved = tmp_path / "moved"
    (tmp_path / "first").rename(moved)
    again = resumed_options(StudyOptions(storage_path=str(tmp_path), name="moved").finalize(),
                            moved / "study.json")
    # resumed under another name, its runs keep the Optuna studies they began with
    assert again.name == "moved" and optuna_study_name(again, "r") == "first/r"


def test_the_plan_lists_a_complete_run_the_budget_reopens_as_a_run_to_search(tmp_path):
    from ec4srec.search.forecast import announce
    from ec4srec.search.options import run_name
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"],
                        storage_path=str(tmp_path), name="s").finalize()
    first, second = (run_name(k) for k in opts.runs())
    (opts.exp_dir / "runs").mkdir(parents=True)
    (opts.exp_dir / "runs" / f"{first}.json").write_text("[]")
    clock = [0.0]
    b = Budget(opts.exp_dir, 50_000.0, [first, second], {first: 0, second: 0}, max_epochs=10,
               num_samples=20, slots=2, seeds=0, clock=lambda: clock[0], concurrency=2)
    for run in (first, second):
        for epoch in range(1, 4):
            b.cost.observe(run, "t", {"epoch": epoch, "time_this_iter_s": 100.0})
    b.begin_run(first)
    clock[0] = 1000.0
    b.plans[first].trials_finished = 2
    b.end_run(first)                     # complete after 1,000 s, far below its equal total
    lines = []
    announce(opts, b, log=lines.append)
    # it reopens, so the plan counts it among the runs to search
    assert b.reopens(first)
    assert lines[0].startswith(f"[plan] 2 run(s) to search ({first}, {second})")
