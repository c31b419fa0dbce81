"""Finals (search/finals.py): the best trial that ended on its own stands in for the first seed
re-run of its config, tested from its final checkpoint, with exactly the re-run's numbers."""
import json

import pytest
import torch

from ec4srec.search import finals
from ec4srec.search.space import apply_params
from ec4srec.search.trainable import LocalSession, retrain_seed, run_trial
from ec4srec.trainer import CHECKPOINT
from test_tuning_helpers import require_method, tiny_config

PARAMS = {"train.lr": 0.002}


def trial_end(folder, config, params=PARAMS, stop_after=None):
    """Run a trial (LocalSession); returns its newest checkpoint (the one Ray hands the
    driver's TrialRecorder as the trial ends) and its best validation."""
    session = LocalSession(folder, stop_after=stop_after)
    try:
        run_trial(params, {"base": config.to_dict(), "checkpoint_every": 1}, session)
    except KeyboardInterrupt:
        pass
    return session.checkpoints[-1], session.reports[-1]["valid/best_ndcg@10"]


@pytest.mark.parametrize("method, extra", [("sasrec", []), ("ec4srec", []),
                                           ("sasrec", ["train.epochs=8", "train.patience=1"])])
def test_a_final_stands_in_for_the_first_seed_re_run_exactly(tmp_path, method, extra):
    require_method(method)
    config = tiny_config(method, epochs=3, extra=["method.updates=1", *extra])
    last, _ = trial_end(tmp_path / "trial_a", config)
    assert finals.keep_final(tmp_path, "run", "a", last) is not None
    best = apply_params(config.to_dict(), PARAMS)
    best.train.progress = "auto"                     # as study.py exports it: not numeric
    work = tmp_path / "seed_2020"
    why = finals.seed_from_final(tmp_path, "run", "a", best.to_dict(), best.train.seed, work)
    assert why is None and (work / CHECKPOINT).is_file()
    tested = retrain_seed(best.to_dict(), best.train.seed, str(work))
    retrained = retrain_seed(best.to_dict(), best.train.seed)
    # the final trains no epoch and reports what re-training the config reports
    assert tested["from_trial"] == "a" and "from_trial" not in retrained
    assert tested["test"] == retrained["test"] and tested["valid"] == retrained["valid"]
    assert tested["best_epoch"] == retrained["best_epoch"]
    assert tested["epochs_run"] == retrained["epochs_run"] <= config.train.epochs
    # an early-stopped trial's final says so, as the re-run's record does
    assert tested["stopped_early"] == retrained["stopped_early"] == bool(extra)


def test_only_a_trial_that_ended_on_its_own_with_its_best_weights_is_kept(tmp_path):
    config = tiny_config(epochs=4)
    cut, _ = trial_end(tmp_path / "trial_cut", config, stop_after=2)
    # pruned or stopped by the deadline (newest checkpoint at epoch 2 of 4): no final
    assert finals.keep_final(tmp_path, "run", "cut", cut) is None
    last, _ = trial_end(tmp_path / "trial_whole", config)
    ckpt = torch.load(last, weights_only=False)
    torch.save({**ckpt, "best_weights": None}, last)
    # continued from a carry made before its best epoch: no best weights to test, no final
    assert finals.keep_final(tmp_path, "run", "whole", last) is None
    assert finals.read_final(tmp_path, "run") is None


def test_the_run_keeps_one_final_its_best(tmp_path):
    config = tiny_config(epochs=3)
    a = ("a", *trial_end(tmp_path / "trial_a", config, {"train.lr": 0.002}))
    b = ("b", *trial_end(tmp_path / "trial_b", config, {"train.lr": 0.0001}))
    assert a[2] != b[2]
    (worse, worse_pt, _), (better, better_pt, _) = sorted([a, b], key=lambda t: t[2])
    finals.keep_final(tmp_path, "run", worse, worse_pt)
    finals.keep_final(tmp_path, "run", better, better_pt)
    # the better trial replaces the worse one; the worse one never replaces the better
    assert finals.read_final(tmp_path, "run")["trial_id"] == better
    assert finals.keep_final(tmp_path, "run", worse, worse_pt) is None
    assert sorted(p.name for p in (tmp_path / "finals" / "run").iterdir()) == [
        f"{better}.json", f"{better}.pt"]


def test_a_final_that_cannot_stand_in_says_why_and_places_nothing(tmp_path):
    config = tiny_config(epochs=3)
    finals.keep_final(tmp_path, "run", "a", trial_end(tmp_path / "trial_a", config)[0])
    best = apply_params(config.to_dict(), PARAMS)
    work = tmp_path / "work"
    # another best trial, or another seed: not this final's job, nothing to say
    assert finals.seed_from_final(tmp_path, "run", "b", best.to_dict(), 2020, work) == ""
    assert finals.seed_from_final(tmp_path, "run", "a", best.to_dict(), 2021, work) == ""
    # a config that differs in a key that changes numbers: named
    other = apply_params(config.to_dict(), {"train.lr": 0.003}).to_dict()
    assert "train.lr" in finals.seed_from_final(tmp_path, "run", "a", other, 2020, work)
    # a damaged final: named, and the job re-trains
    pt = tmp_path / "finals" / "run" / "a.pt"
    pt.write_bytes(pt.read_bytes()[:-10])
    assert "damaged" in finals.seed_from_final(tmp_path, "run", "a", best.to_dict(), 2020, work)
    assert not work.exists()


def test_a_final_counts_as_a_seed_done_until_its_record_lands(tmp_path):
    config = tiny_config(epochs=3)
    assert not finals.pending_final(tmp_path, "run")
    finals.keep_final(tmp_path, "run", "a", trial_end(tmp_path / "trial_a", config)[0])
    # the budget prices that seed job as one test, until its record exists
    assert finals.pending_final(tmp_path, "run")
    # a recorded trial better than the final's (pruned or cut: it has none) is the run's best:
    # the seed job re-trains, and the budget prices it so
    (tmp_path / "trials" / "run").mkdir(parents=True)
    better = {"trial_id": "b", "history": [{"epoch": 1, "valid/best_ndcg@10": 1.0}]}
    (tmp_path / "trials" / "run" / "b.json").write_text(json.dumps(better))
    assert not finals.pending_final(tmp_path, "run")
    (tmp_path / "trials" / "run" / "b.json").unlink()
    (tmp_path / "seeds" / "run").mkdir(parents=True)
    (tmp_path / "seeds" / "run" / f"seed_{config.train.seed}.json").write_text("{}")
    assert not finals.pending_final(tmp_path, "run")


def test_a_checkpoint_written_at_the_stopping_epoch_trains_no_more(tmp_path):
    from ec4srec.search.trainable import dataset_for
    from ec4srec.trainer import Trainer
    config = tiny_config(epochs=8, extra=["train.patience=1"])
    whole = Trainer(config, dataset_for(config.data), log=lambda m: None)
    record = whole.fit(run_test=False)
    assert record["epochs_run"] < 8, "the tiny run must stop early for this test"
    stopping = tmp_path / "stopping.pt"
    seen = Trainer(config, dataset_for(config.data), log=lambda m: None,
                   callbacks=[lambda tr, epoch, m: epoch == record["epochs_run"]
                              and tr.save_checkpoint(stopping) and False])
    seen.fit(run_test=False)
    again = Trainer(config, dataset_for(config.data), log=lambda m: None)
    again.load_checkpoint(stopping)
    # saved before the loop sets its flag, the checkpoint's patience says the run is over
    assert not again.state.stopped_early and again.fit(run_test=False)["epochs_run"] == \
        record["epochs_run"]


def test_a_seed_work_folder_of_another_config_is_started_again(tmp_path, capsys):
    from ec4srec.search.study import seed_source
    from ec4srec.search.trainable import dataset_for
    from ec4srec.trainer import Trainer
    config = tiny_config(epochs=3)
    work = tmp_path / "seed_2020"
    Trainer(config, dataset_for(config.data), output_dir=work, log=lambda m: None).save_checkpoint()
    # the job's own checkpoint (its config, this seed): continued
    assert seed_source(tmp_path, "run", config.train.seed, config, None, work) == "carried"
    # the run's best changed since the folder was written: another config's checkpoint is
    # never continued; the folder goes and the job starts again, said in one line
    other = apply_params(config.to_dict(), {"train.lr": 0.003})
    assert seed_source(tmp_path, "run", config.train.seed, other, None, work) == "scratch"
    assert not work.exists() and "another config's (train.lr differ" in capsys.readouterr().out


def test_configs_are_compared_as_configs_the_non_numeric_keys_aside():
    config = tiny_config(epochs=3).to_dict()
    older = {**config, "train": {k: v for k, v in config["train"].items() if k != "logq_correction"}}
    # a key a later ec4srec added (its default on both sides) is no difference; nor is where
    # the data lives or how often a run checkpoints; a searched key is
    assert finals.config_mismatch(older, config) == []
    moved = {**config, "data": {**config["data"], "data_dir": "/elsewhere"},
             "train": {**config["train"], "checkpoint_every": 7}}
    assert finals.config_mismatch(moved, config) == []
    assert finals.config_mismatch({**config, "train": {**config["train"], "lr": 0.5}},
                                  config) == ["train.lr"]
    assert finals.config_mismatch({"not": "a config"}, config) == ["config"]


def test_a_trial_continued_from_a_contending_carry_ends_with_a_final_that_stands_in(tmp_path):
    from ec4srec.search import carry
    config = tiny_config(epochs=4, extra=["train.patience=10"])
    lost = LocalSession(tmp_path / "lost", stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_trial(PARAMS, {"base": config.to_dict(), "checkpoint_every": 1}, lost)
    carry.write_carry(tmp_path, "run", "old", PARAMS, "checkpoint_000002",
                      lost.checkpoints[-1].read_bytes(), [dict(r) for r in lost.reports])
    carried = carry.read_carries(tmp_path, "run")["old"]
    # the run's only trial contends for its best: its carry keeps the best weights
    assert torch.load(carried.path, weights_only=False)["best_weights"] is not None
    new = LocalSession(tmp_path / "new")
    run_trial({**PARAMS, carry.CARRIED_KEY: "old"},
              {"base": config.to_dict(), "checkpoint_every": 1,
               "carried": {"old": carried.checkpoint_bytes()}}, new)
    # continued to its end, the trial leaves a final, and the final is the seed re-run exactly
    assert finals.keep_final(tmp_path, "run", "new", new.checkpoints[-1]) is not None
    best = apply_params(config.to_dict(), PARAMS)
    work = tmp_path / "seed"
    why = finals.seed_from_final(tmp_path, "run", "new", best.to_dict(), best.train.seed, work)
    assert why is None
    tested = retrain_seed(best.to_dict(), best.train.seed, str(work))
    retrained = retrain_seed(best.to_dict(), best.train.seed)
    assert tested["from_trial"] == "new"
    assert tested["test"] == retrained["test"] and tested["best_epoch"] == retrained["best_epoch"]


def test_a_final_goes_once_its_own_seed_record_is_written(tmp_path):
    config = tiny_config(epochs=3)
    seed = config.train.seed
    last = trial_end(tmp_path / "trial_a", config)[0]
    finals.keep_final(tmp_path, "run", "a", last)
    records = tmp_path / "seeds" / "run"
    records.mkdir(parents=True)
    # no record of its seed yet: the final stays
    assert not finals.drop_spent(tmp_path, "run") and finals.read_final(tmp_path, "run")
    (records / f"seed_{seed + 1}.json").write_text(json.dumps({"from_trial": "a"}))
    # another seed's record does not spend it
    assert not finals.drop_spent(tmp_path, "run")
    other = apply_params(config.to_dict(), {"train.lr": 0.003}).to_dict()
    (records / f"seed_{seed}.json").write_text(json.dumps({"config": other}))
    # a record of another config (an earlier best's, to be set aside) does not spend it, nor
    # one that names neither its trial nor its config
    assert not finals.drop_spent(tmp_path, "run")
    (records / f"seed_{seed}.json").write_text(json.dumps({"seed": seed}))
    assert not finals.drop_spent(tmp_path, "run")
    # the record its own job wrote (tested from it, or of its config) does: both files go
    mine = apply_params(config.to_dict(), PARAMS).to_dict()
    for record in ({"from_trial": "a"}, {"config": mine}):
        if not finals.read_final(tmp_path, "run"):
            finals.keep_final(tmp_path, "run", "a", last)
        (records / f"seed_{seed}.json").write_text(json.dumps(record))
        assert finals.drop_spent(tmp_path, "run")
        assert list((tmp_path / "finals" / "run").iterdir()) == []


def test_no_final_is_kept_for_a_trial_below_a_recorded_one(tmp_path):
    config = tiny_config(epochs=3)
    last, best = trial_end(tmp_path / "trial_a", config)
    (tmp_path / "trials" / "run").mkdir(parents=True)
    above = {"trial_id": "b", "history": [{"epoch": 1, "valid/best_ndcg@10": best + 0.1}]}
    (tmp_path / "trials" / "run" / "b.json").write_text(json.dumps(above))
    # a pruned trial above it is the run's best: this final would never stand in (14 MB in git)
    assert finals.keep_final(tmp_path, "run", "a", last) is None
    # an errored trial is never the run's best (report.results.best_trial_id skips it)
    (tmp_path / "trials" / "run" / "b.json").write_text(json.dumps({**above, "error": "boom"}))
    assert finals.keep_final(tmp_path, "run", "a", last) is not None


def test_a_seed_record_of_another_config_is_set_aside_and_run_again(tmp_path, capsys):
    from ec4srec.search.study import set_aside_stale
    config = tiny_config(epochs=2)
    seed = config.train.seed
    out = tmp_path / "seeds" / "run" / f"seed_{seed}.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(retrain_seed(config.to_dict(), seed)))
    # the record names its config: the same best config (where the data lives aside) keeps it
    moved = apply_params(config.to_dict(), {"data.data_dir": "/elsewhere"})
    assert not set_aside_stale(out, "run", seed, moved) and out.exists()
    # the run's best changed since: the record goes to stale/ (kept, not read) and the seed runs
    other = apply_params(config.to_dict(), {"train.lr": 0.003})
    assert set_aside_stale(out, "run", seed, other) and not out.exists()
    assert (out.parent / "stale" / f"seed_{seed}.1.json").is_file()
    assert "its record is another config's (train.lr differ" in capsys.readouterr().out
    # a record written before records held their config is kept as it is
    out.write_text(json.dumps({"seed": seed, "test": {"ndcg@10": 0.1}}))
    assert not set_aside_stale(out, "run", seed, other) and out.exists()
