"""The trial body without Ray (LocalSession): reported keys, checkpoint/restore equals the
uninterrupted run, NaN handling, and the shared warm-up cache."""
import time

import pytest
import torch

from ec4srec.checkpoint import load_torch
from ec4srec.data import load_dataset
from ec4srec.trainer import NonFiniteLossError, Trainer
from ec4srec.search.ranges import load_ranges
from ec4srec.search.space import SearchSpace
from ec4srec.search.trainable import (FINISHED_MARKER, NONFINITE_MARKER, LocalSession, is_replay,
                                      run_trial)
from ec4srec.search.warmcache import WarmupCache
from ec4srec.warmup import warmup_key
from test_tuning_helpers import CONTRASTIVE, GUIDED, require_method, tiny_config

VALID_KEYS = {f"valid/{m}" for m in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")}


def study_of(config, **extra):
    return {"base": config.to_dict(), "checkpoint_every": 1, **extra}


def test_reports_validation_metrics_every_epoch_and_never_test(tmp_path):
    session = LocalSession(tmp_path)
    run_trial({"train.lr": 0.002}, study_of(tiny_config(epochs=3)), session)
    assert [r["epoch"] for r in session.reports] == [1, 2, 3]
    for r in session.reports:
        assert VALID_KEYS <= set(r) and "valid/best_ndcg@10" in r and "train/loss" in r
        assert not any("test" in k for k in r)
        assert r["guided_epoch"] == r["epoch"] and r["pid"] > 0
    assert len(session.checkpoints) == 3                    # every epoch (cheap: measured)
    best = max(r["valid/ndcg@10"] for r in session.reports)
    assert session.reports[-1]["valid/best_ndcg@10"] == best


def _history(reports):
    return [{k: v for k, v in r.items() if k.startswith(("valid/", "train/")) or k == "epoch"}
            for r in reports]


@pytest.mark.parametrize("method", ["sasrec", *CONTRASTIVE])
def test_restore_from_checkpoint_equals_uninterrupted_run(tmp_path, method):
    require_method(method)
    config = tiny_config(method, epochs=4, extra=["method.updates=1"])      # update at epoch 2
    full = LocalSession(tmp_path / "full")
    run_trial({}, study_of(config), full)
    broken = LocalSession(tmp_path / "broken", stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_trial({}, study_of(config), broken)
    resumed = LocalSession(tmp_path / "broken", restore_from=broken.checkpoints[-1])
    run_trial({}, study_of(config), resumed)
    assert [r["epoch"] for r in resumed.reports] == [3, 4]
    assert all(r["restored_from_epoch"] == 2 for r in resumed.reports)
    assert _history(broken.reports + resumed.reports) == _history(full.reports)
    a, b = load_torch(full.checkpoints[-1]), load_torch(resumed.checkpoints[-1])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key])
    assert repr(a["method"]) == repr(b["method"])          # importance scores included
    if method in GUIDED:
        assert a["method"], "a guided method must checkpoint its importance state"


def test_a_trial_continued_from_its_last_epochs_checkpoint_reports_that_epoch_again(tmp_path):
    config = tiny_config(epochs=3)
    full = LocalSession(tmp_path / "full")
    run_trial({}, study_of(config), full)
    # its end was lost before its record landed: the carry (or Ray) holds its last epoch
    again = LocalSession(tmp_path / "again", restore_from=full.checkpoints[-1])
    run_trial({}, study_of(config), again)
    # it trains nothing and reports its last epoch again, and says it ended
    assert [r["epoch"] for r in again.reports] == [3]
    assert _history(again.reports) == _history(full.reports[-1:])
    assert (tmp_path / "again" / FINISHED_MARKER).exists()


class MachineLost(Exception):
    pass


@pytest.mark.parametrize("method", ["sasrec", "ec4srec"])
def test_a_seed_job_lost_with_its_machine_continues_from_its_work_folder(tmp_path, method):
    from ec4srec.search.trainable import dataset_for, retrain_seed
    require_method(method)
    config = tiny_config(method, epochs=4, extra=["method.updates=1"])      # update at epoch 2
    whole = retrain_seed(config.to_dict(), 7)
    lost = tiny_config(method, epochs=4, extra=["method.updates=1", "train.seed=7"])

    def machine_goes(trainer, epoch, metrics):          # after epoch 2's checkpoint
        if epoch == 2:
            raise MachineLost
    work = tmp_path / "seed_7"
    with pytest.raises(MachineLost):
        Trainer(lost, dataset_for(lost.data), output_dir=work, callbacks=[machine_goes],
                log=lambda m: None).fit()
    resumed = retrain_seed(config.to_dict(), 7, str(work))
    # the job continues after epoch 2 and reports exactly what the uninterrupted one did
    assert resumed["resumed_from_epoch"] == 2 and whole["resumed_from_epoch"] == 0
    assert resumed["test"] == whole["test"] and resumed["valid"] == whole["valid"]
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_a_seed_job_whose_checkpoint_is_damaged_starts_again_and_says_so(tmp_path, capsys):
    from ec4srec.search.trainable import retrain_seed
    config = tiny_config(epochs=2)
    whole = retrain_seed(config.to_dict(), 3)
    work = tmp_path / "seed_3"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"not a checkpoint")
    again = retrain_seed(config.to_dict(), 3, str(work))
    # one line names the file; the job trains from scratch to the same numbers
    assert "checkpoint.pt" in capsys.readouterr().out
    assert again["resumed_from_epoch"] == 0 and again["test"] == whole["test"]


def test_a_finished_trial_restored_again_repeats_its_last_report_and_trains_nothing(tmp_path):
    config = tiny_config(epochs=3)
    first = LocalSession(tmp_path)
    run_trial({}, study_of(config), first)
    # the trial ended on its own: its last report is on disk
    assert (tmp_path / FINISHED_MARKER).exists()
    # Ray restores it from an older checkpoint (its snapshot predates the end)
    again = LocalSession(tmp_path, restore_from=first.checkpoints[0])
    run_trial({}, study_of(config), again)
    # one report, the last one again with the same keys, a replay; no new checkpoint
    (replay,) = again.reports
    assert is_replay(replay) and not any(is_replay(r) for r in first.reports)
    assert set(replay) == set(first.reports[-1])
    assert {k: v for k, v in replay.items() if k != "restored_from_epoch"} == \
        {k: v for k, v in first.reports[-1].items() if k != "restored_from_epoch"}
    assert again.checkpoints == []


def test_a_torn_finished_marker_means_the_trial_trains_again(tmp_path):
    config = tiny_config(epochs=2)
    (tmp_path / FINISHED_MARKER).write_text('{"epoch": 2, "valid/nd')
    session = LocalSession(tmp_path)
    run_trial({}, study_of(config), session)
    # nothing replayed: both epochs trained and reported; the marker is whole again
    assert [r["epoch"] for r in session.reports] == [1, 2] and not any(map(is_replay, session.reports))
    assert session.read_finished() == session.reports[-1]


def test_a_trial_interrupted_before_its_last_epoch_is_not_marked_finished(tmp_path):
    broken = LocalSession(tmp_path, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_trial({}, study_of(tiny_config(epochs=3)), broken)
    # only a trial that ended on its own may skip training when restored
    assert not (tmp_path / FINISHED_MARKER).exists()


def test_nonfinite_loss_fails_and_retries_fail_at_once(tmp_path):
    config = tiny_config(epochs=3, extra=["train.lr=1e30"])
    session = LocalSession(tmp_path)
    with pytest.raises(NonFiniteLossError):
        run_trial({}, study_of(config), session)
    assert (tmp_path / NONFINITE_MARKER).exists() and session.reports == []
    started = time.perf_counter()
    with pytest.raises(NonFiniteLossError):                 # what a Ray retry would do
        run_trial({}, study_of(config), LocalSession(tmp_path))
    assert time.perf_counter() - started < 1.0


def test_warmup_key_ignores_only_post_update_settings():
    a = tiny_config("ec4srec")
    b = tiny_config("ec4srec", extra=["method.mu_e=0.2", "method.explainer=saliency", "method.updates=1",
                                      "method.lambda_cl_pos=0.4", "method.lambda_sl_pos=0.5",
                                      "train.patience=3"])
    assert warmup_key(a) == warmup_key(b)
    for change in ("method.tau=0.5", "method.lambda_cl=0.3", "train.lr=0.01", "train.seed=1",
                   "model.hidden_size=32", "method.name=ec4srec_sl"):
        assert warmup_key(tiny_config("ec4srec", extra=[change])) != warmup_key(a), change


def test_warm_start_skips_epochs_and_continues_identically(tmp_path):
    """Two configs equal up to warm-up-irrelevant keys: the second starts from the first's
    cached epoch f-1 and then trains exactly like an uninterrupted run (SASRec as the carrier,
    a pretend first update at epoch 3)."""
    cfg_a = tiny_config(epochs=4)
    cfg_b = tiny_config(epochs=4, extra=["method.mu_e=0.2", "train.patience=5"])
    data = load_dataset(cfg_a.data)
    cache = WarmupCache(tmp_path / "warmup", epochs=[1, 2])
    first = 3

    def store(trainer, epoch, metrics):
        if cache.wants(epoch, first):
            cache.store(trainer, epoch)

    full = Trainer(cfg_a, data, callbacks=[store], log=lambda m: None)
    full.fit(run_test=False)
    assert cache.cached_epochs(cfg_a) == [1, 2]
    assert not list((tmp_path / "warmup").rglob("*.tmp"))   # atomic writes leave nothing behind

    warm = Trainer(cfg_b, data, log=lambda m: None)
    assert cache.load_into(warm, first) == 2
    assert warm.config.method.mu_e == 0.2                   # its own config, not the cache's
    warm.fit(run_test=False)
    assert warm.state.history == full.state.history
    other = Trainer(tiny_config(epochs=4, extra=["train.lr=0.01"]), data, log=lambda m: None)
    assert cache.load_into(other, first) == 0               # different warm-up: no sharing


@pytest.mark.parametrize("method", GUIDED)
def test_trials_share_the_warmup_phase(tmp_path, method):
    require_method(method)
    config = tiny_config(method, epochs=4, extra=["method.explainer=saliency"])
    space = SearchSpace(method, "sasrec", 4, load_ranges())
    study = study_of(config, warmup_dir=str(tmp_path / "warmup"),
                     warmup_epochs=[f - 1 for f in space.first_update_epochs() if f > 1])
    a = LocalSession(tmp_path / "a")
    run_trial({"method.updates": 1, "method.mu_e": 0.5}, study, a)          # first update: epoch 2
    b = LocalSession(tmp_path / "b")
    run_trial({"method.updates": 1, "method.mu_e": 0.3}, study, b)
    assert b.reports[0]["warm_start_epoch"] == 1 and b.reports[0]["epoch"] == 2
    scratch = LocalSession(tmp_path / "c")
    run_trial({"method.updates": 1, "method.mu_e": 0.3}, study_of(config), scratch)
    assert _history(b.reports) == _history(scratch.reports[1:])
