from __future__ import annotations

import json

import pytest
import torch

import ec4srec.trainer as trainer_mod
from ec4srec.checkpoint import load_torch
from ec4srec.config import load_config
from ec4srec.evaluate import evaluate
from ec4srec.trainer import CHECKPOINT, Trainer

from conftest import tiny_config

TIMING = ("wall_time_s", "seconds_per_epoch", "hardware")


def quiet(config, dataset, out=None, **kw):
    return Trainer(config, dataset, output_dir=out, log=lambda m: None, **kw)


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_writes_run_files(tiny_file, tiny_dataset, tmp_path):
    config = tiny_config(tiny_file, train__tensorboard="true", train__epochs=2)
    out = tmp_path / "run"
    record = quiet(config, tiny_dataset, out).fit()
    # config.yaml loads back to exactly the run's config.
    assert load_config(out / "config.yaml") == config
    # metrics.json is the returned record, with validation and test metrics of both protocols.
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(record))
    assert record["epochs_run"] == 2 and set(record["test"]) == {
        f"{m}@{k}{p}" for m in ("hr", "ndcg") for k in (5, 10, 20) for p in ("", "_unseen")} | {
        "last_item_top1"}
    # The checkpoint holds the model, optimizer, RNG and loop state, and the config.
    ckpt = load_torch(out / CHECKPOINT)
    assert {"model", "optimizer", "rng", "loop", "best_weights", "method", "config"} <= set(ckpt)
    assert ckpt["loop"]["epoch"] == 2 and ckpt["config"] == config.to_dict()
    # TensorBoard event files are written when train.tensorboard is on.
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # Files are written atomically but get a plain file's mode (0666 minus the umask), not
    # the 0600 of a temp file.
    import os
    umask = os.umask(0)
    os.umask(umask)
    for name in ("metrics.json", "config.yaml", CHECKPOINT, "history.csv"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask
    # history.csv holds one row per epoch, equal to the loop history (the run's curve).
    import pandas as pd
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    assert history["valid/ndcg@10"].tolist() == [h["valid/ndcg@10"] for h in ckpt["loop"]["history"]]


def test_fit_without_output_writes_nothing(tiny_file, tiny_dataset, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    record = quiet(tiny_config(tiny_file, train__epochs=1, train__tensorboard="true"), tiny_dataset).fit()
    # Without an output directory nothing is written (not even into the working directory).
    assert record["epochs_run"] == 1 and list(cwd.iterdir()) == []


def test_record_matches_best_epoch_and_test(tiny_file, tiny_dataset):
    trainer = quiet(tiny_config(tiny_file, train__epochs=3), tiny_dataset)
    record = trainer.fit()
    best = trainer.state.history[record["best_epoch"] - 1]
    # The recorded validation metrics are those of the best epoch.
    assert record["valid"] == {k.split("/", 1)[1]: v for k, v in best.items() if k.startswith("valid/")}
    # The best validation NDCG@10 is the maximum over epochs.
    assert record["valid"]["ndcg@10"] == max(h["valid/ndcg@10"] for h in trainer.state.history)
    # The test metrics are those of the restored (best) model.
    assert record["test"] == evaluate(trainer.model, trainer.data, trainer.data.test, 64)


def scripted_validation(monkeypatch, scores: list[float]):
    calls = iter(scores)

    def validate(self):
        s = next(calls)
        return {"valid/ndcg@10": s, "valid/hr@10": s}
    monkeypatch.setattr(Trainer, "validate", validate)


def test_early_stopping_restores_best_weights(tiny_file, tiny_dataset, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.1, 0.3, 0.2, 0.1, 0.05, 0.4, 0.5])
    snapshots = {}

    def snapshot(trainer, epoch, metrics):
        snapshots[epoch] = weights(trainer)
    trainer = quiet(tiny_config(tiny_file, train__epochs=7, train__patience=2), tiny_dataset,
                    tmp_path / "run", callbacks=[snapshot])
    record = trainer.fit(run_test=False)
    # Two epochs without improvement after epoch 2 stop the run at epoch 4.
    assert (record["epochs_run"], record["best_epoch"], record["stopped_early"]) == (4, 2, True)
    assert sorted(snapshots) == [1, 2, 3, 4]
    # Training went on after the best epoch (so restoring is observable) ...
    assert not same_weights(snapshots[2], snapshots[4])
    # ... and the final model holds exactly the best epoch's weights.
    assert same_weights(weights(trainer), snapshots[2])


def test_early_stopping_without_output_dir(tiny_file, tiny_dataset, monkeypatch):
    scripted_validation(monkeypatch, [0.3, 0.2, 0.1])
    record = quiet(tiny_config(tiny_file, train__epochs=3, train__patience=1), tiny_dataset).fit()
    # Early stopping works for in-memory runs (no output directory), e.g. inside a search.
    assert (record["epochs_run"], record["best_epoch"], record["stopped_early"]) == (2, 1, True)


def test_min_epochs_delays_early_stopping(tiny_file, tiny_dataset, tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.3, 0.2, 0.1, 0.1, 0.1, 0.1])
    trainer = quiet(tiny_config(tiny_file, train__epochs=6, train__patience=1, train__min_epochs=4),
                    tiny_dataset, tmp_path / "run")
    record = trainer.fit(run_test=False)
    # Patience ran out at epoch 2, but the run may not stop before min_epochs.
    assert (record["epochs_run"], record["best_epoch"], record["stopped_early"]) == (4, 1, True)


class Interrupted(Exception):
    pass


def interrupt_at(k: int):
    def callback(trainer, epoch, metrics):
        if epoch == k:
            raise Interrupted
    return callback


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec", "caser"])
def test_resume_equals_uninterrupted(tiny_file, tiny_dataset, tmp_path, backbone):
    config = tiny_config(tiny_file, train__epochs=4, model__backbone=backbone)
    full = quiet(config, tiny_dataset, tmp_path / "a")
    record_a = full.fit()

    with pytest.raises(Interrupted):
        quiet(config, tiny_dataset, tmp_path / "b", callbacks=[interrupt_at(2)]).fit()
    resumed = quiet(config, tiny_dataset, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / CHECKPOINT)
    # The interrupted run left a checkpoint after epoch 2.
    assert resumed.state.epoch == 2
    record_b = resumed.fit()
    # Resuming reproduces the uninterrupted run: same per-epoch losses and metrics ...
    assert resumed.state.history == full.state.history
    # ... the same final record (timings aside) ...
    assert comparable(record_b) == comparable(record_a)
    # ... and bit-identical final weights.
    assert same_weights(weights(resumed), weights(full))


def test_same_seed_same_result_other_seed_differs(tiny_file, tiny_dataset):
    runs, records = [], []
    for seed in (7, 7, 8):
        # Construct and fit one at a time: the trainer seeds torch's global RNG in __init__.
        runs.append(quiet(tiny_config(tiny_file, train__seed=seed), tiny_dataset))
        records.append(comparable(runs[-1].fit()))
    # The same seed gives identical histories, metrics and weights.
    assert runs[0].state.history == runs[1].state.history and records[0] == records[1]
    assert same_weights(weights(runs[0]), weights(runs[1]))
    # A different seed gives a different run (so the check above can fail).
    assert runs[0].state.history != runs[2].state.history


def test_test_split_evaluated_exactly_once(tiny_file, tiny_dataset, monkeypatch):
    reads = {"valid": 0, "test": 0}
    real = trainer_mod.evaluate

    def counting(model, data, examples, *args, **kw):
        reads["test" if examples is data.test else "valid"] += 1
        return real(model, data, examples, *args, **kw)
    monkeypatch.setattr(trainer_mod, "evaluate", counting)
    record = quiet(tiny_config(tiny_file, train__epochs=3), tiny_dataset).fit()
    # Validation is read once per epoch, test exactly once after training.
    assert reads == {"valid": 3, "test": 1} and record["test"] is not None

    reads.update(valid=0, test=0)
    record = quiet(tiny_config(tiny_file, train__epochs=2), tiny_dataset).fit(run_test=False)
    # fit(run_test=False) never touches the test split.
    assert reads == {"valid": 2, "test": 0} and record["test"] is None
