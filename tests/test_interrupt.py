"""Ctrl-C and the mid-epoch checkpoint: a real SIGINT during an epoch writes a checkpoint
between two steps, and the run resumed from it equals the uninterrupted run bit for bit (the
dropout banks, batch order, loss sums, RNG states and importance scores carried over)."""
from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

import ec4srec.interrupt as interrupt_mod
from ec4srec import cli
from ec4srec.checkpoint import load_torch
from ec4srec.config import dump_config
from ec4srec.models import FastDropout
from ec4srec.trainer import CHECKPOINT, Trainer

from conftest import tiny_config

TIMING = ("wall_time_s", "seconds_per_epoch", "hardware")
CASES = [("sasrec", "sasrec"), ("ec4srec", "gru4rec"), ("cl4srec", "caser")]
ORIGINAL_STEP = Trainer.train_step


def quiet(config, dataset, out=None):
    return Trainer(config, dataset, output_dir=out, log=lambda m: None)


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def sigint_at(monkeypatch, epoch: int, step: int) -> None:
    """Send this process a real SIGINT right after training step ``step`` of ``epoch``."""
    original, seen = Trainer.train_step, {"n": 0}

    def train_step(self, rows, e):
        out = original(self, rows, e)
        if e == epoch:
            seen["n"] += 1
            if seen["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(Trainer, "train_step", train_step)


def config_for(tiny_file, method, backbone):
    # one importance update, at epoch 2: the interrupted epoch of the guided case
    return tiny_config(tiny_file, train__epochs=4, model__backbone=backbone, method__name=method,
                       method__updates=1)


@pytest.mark.parametrize("method, backbone, bank", [(*c, None) for c in CASES] + [
    ("sasrec", "sasrec", 64)])
def test_ctrl_c_mid_epoch_resumes_exactly(tiny_file, tiny_dataset, tmp_path, monkeypatch,
                                          method, backbone, bank):
    if bank:            # banks smaller than one activation: redrawn larger within the epoch
        monkeypatch.setattr(FastDropout, "min_bank_size", bank)
    config = config_for(tiny_file, method, backbone)
    full = quiet(config, tiny_dataset, tmp_path / "a")
    record_a = full.fit()
    sigint_at(monkeypatch, epoch=2, step=3)
    with pytest.raises(KeyboardInterrupt):
        quiet(config, tiny_dataset, tmp_path / "b").fit()
    monkeypatch.setattr(Trainer, "train_step", ORIGINAL_STEP)
    ckpt = load_torch(tmp_path / "b" / CHECKPOINT)
    # the checkpoint stands after batch 3 of epoch 2, the loop state is epoch 1's
    assert ckpt["mid_epoch"]["step"] == 3 and ckpt["mid_epoch"]["epoch"] == 2
    assert ckpt["loop"]["epoch"] == 1
    FastDropout._banks.clear()                 # a new process: no dropout bank drawn yet
    resumed = quiet(config, tiny_dataset, tmp_path / "b")
    resumed.load_checkpoint(tmp_path / "b" / CHECKPOINT)
    record_b = resumed.fit()
    # the resumed run equals the uninterrupted one: losses, metrics, record and weights
    assert resumed.state.history == full.state.history
    assert comparable(record_b) == comparable(record_a)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_periodic_mid_epoch_checkpoint_survives_a_kill(tiny_file, tiny_dataset, tmp_path,
                                                         monkeypatch):
    config = config_for(tiny_file, "sasrec", "sasrec")
    full = quiet(config, tiny_dataset, tmp_path / "a")
    full.fit()
    # the clock says a checkpoint is due at the 11th step of the run (in epoch 2 or 3); keep
    # that file aside, as a run killed (SIGKILL) a moment later would have left it
    due = iter([False] * 10 + [True] + [False] * 1000)
    monkeypatch.setattr(interrupt_mod.SaveClock, "due", lambda self: next(due))
    kept = tmp_path / "killed"
    original = Trainer.save_checkpoint

    def save(self, path=None, mid_epoch=None):
        written = original(self, path, mid_epoch)
        if mid_epoch is not None and not kept.exists():
            kept.mkdir()
            shutil.copy(written, kept / CHECKPOINT)
        return written
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    quiet(config, tiny_dataset, tmp_path / "b").fit()        # trains on to the end
    monkeypatch.undo()
    # a mid-epoch checkpoint was written while the epoch went on
    mid = load_torch(kept / CHECKPOINT)["mid_epoch"]
    assert mid["epoch"] >= 2 and 0 < mid["step"] < len(mid["order"])
    FastDropout._banks.clear()                 # a new process: no dropout bank drawn yet
    resumed = quiet(config, tiny_dataset, kept)
    resumed.load_checkpoint(kept / CHECKPOINT)
    resumed.fit()
    # from it the run ends exactly as the uninterrupted one
    assert resumed.state.history == full.state.history


def test_a_mid_epoch_checkpoint_refuses_a_run_with_other_training_rows(tiny_file, tiny_dataset,
                                                                       tmp_path, monkeypatch):
    from ec4srec.checkpoint import CheckpointError
    config = config_for(tiny_file, "sasrec", "sasrec")
    sigint_at(monkeypatch, epoch=2, step=3)
    with pytest.raises(KeyboardInterrupt):
        quiet(config, tiny_dataset, tmp_path / "b").fit()
    monkeypatch.setattr(Trainer, "train_step", ORIGINAL_STEP)
    other = config.with_overrides(["train.objective=all_positions"])
    # the epoch's batch order indexes prefix rows: resumed over user sequences it would train
    # on the wrong rows (or index past them), so it is one clear error naming the cause
    with pytest.raises(CheckpointError, match="written mid-epoch over other training rows"):
        quiet(other, tiny_dataset, tmp_path / "b").load_checkpoint(tmp_path / "b" / CHECKPOINT)
    # the same settings still resume
    quiet(config, tiny_dataset, tmp_path / "b").load_checkpoint(tmp_path / "b" / CHECKPOINT)


def test_the_cli_says_how_to_resume_after_ctrl_c_in_the_first_epoch(tiny_file, tiny_dataset,
                                                                      tmp_path, monkeypatch, capsys):
    config = config_for(tiny_file, "sasrec", "sasrec")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(dump_config(config))
    cli.main(["train", "--config", str(config_file), "--output", str(tmp_path / "a")])
    sigint_at(monkeypatch, epoch=1, step=2)
    out = tmp_path / "b"
    # a Ctrl-C in the first epoch exits 130 and leaves something to resume
    assert cli.main(["train", "--config", str(config_file), "--output", str(out)]) == 130
    assert f"ec4srec train --output {out} --resume" in capsys.readouterr().err
    monkeypatch.undo()
    assert cli.main(["train", "--output", str(out), "--resume"]) == 0
    import json
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    # the resumed run's test metrics are the uninterrupted run's
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_a_second_ctrl_c_interrupts_at_once():
    with interrupt_mod.deferred_sigint() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        # the first only asks the loop to stop after its step
        assert flag.requested
        # the second gets the handler from before: Python's KeyboardInterrupt
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_validation_stops_after_the_epoch_with_a_checkpoint(tiny_file, tiny_dataset,
                                                                        tmp_path, monkeypatch):
    config = config_for(tiny_file, "sasrec", "sasrec")
    original = Trainer.validate

    def validate(self):
        out = original(self)
        if self.state.epoch == 1:          # during epoch 2's validation
            os.kill(os.getpid(), signal.SIGINT)
        return out
    monkeypatch.setattr(Trainer, "validate", validate)
    with pytest.raises(KeyboardInterrupt):
        quiet(config, tiny_dataset, tmp_path / "b").fit()
    ckpt = load_torch(tmp_path / "b" / CHECKPOINT)
    # the run stops at the end of that epoch, its checkpoint complete (no mid-epoch part)
    assert ckpt["loop"]["epoch"] == 2 and "mid_epoch" not in ckpt


def test_the_periodic_checkpoint_clock_runs_across_epochs(tiny_file, tiny_dataset, tmp_path,
                                                          monkeypatch):
    # epochs of 40 s (fake clock), a checkpoint every minute, none at epoch ends
    config = tiny_config(tiny_file, train__epochs=3, train__checkpoint_every=100,
                         train__checkpoint_minutes=1.0)
    trainer = quiet(config, tiny_dataset, tmp_path / "run")
    now = [0.0]
    trainer._save_clock = interrupt_mod.SaveClock(1.0, clock=lambda: now[0])
    steps = -(-len(trainer.data.train) // config.train.batch_size)      # an upper bound
    original, saved = Trainer.save_checkpoint, []

    def train_step(self, rows, epoch):
        now[0] += 40.0 / steps
        return ORIGINAL_STEP(self, rows, epoch)

    def save(self, path=None, mid_epoch=None):
        saved.append((self.state.epoch + 1, now[0], mid_epoch is not None))
        return original(self, path, mid_epoch)
    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    trainer.fit(run_test=False)
    mid = [(epoch, t) for epoch, t, is_mid in saved if is_mid]
    # no epoch lasts a minute, yet a mid-epoch checkpoint comes a minute after the start: the
    # clock counts from the last checkpoint, not from each epoch's start
    assert mid and mid[0][0] >= 2 and 60.0 <= mid[0][1] < 60.0 + 40.0
