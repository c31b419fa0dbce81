"""The loop's two clocks (loop_state.LoopState): wall seconds and the process's CPU seconds of
training + validation, the second what ``--asha-clock cpu-seconds`` compares trials by."""
from __future__ import annotations

import time

import pytest

from ec4srec.checkpoint import load_torch
from ec4srec.interrupt import since
from ec4srec.trainer import CHECKPOINT, Trainer

from conftest import tiny_config


def test_since_adds_what_was_spent_before():
    # (wall, CPU) from a reading one second and two CPU seconds ago, plus (10, 20) before
    now = (time.perf_counter(), time.process_time())
    wall, cpu = since((now[0] - 1.0, now[1] - 2.0), (10.0, 20.0))
    assert 11.0 <= wall < 11.5 and 22.0 <= cpu < 22.5


def test_waiting_counts_on_the_wall_clock_and_not_on_the_cpu_clock(tiny_file, tiny_dataset,
                                                                   monkeypatch):
    original = Trainer.validate

    def slow_validate(self):          # the core held by another program for 0.6 s per epoch
        time.sleep(0.6)
        return original(self)
    monkeypatch.setattr(Trainer, "validate", slow_validate)
    trainer = Trainer(tiny_config(tiny_file, train__epochs=2), tiny_dataset, log=lambda m: None)
    trainer.fit(run_test=False)
    st = trainer.state
    # both clocks ran: the epochs cost CPU time
    assert st.train_cpu_seconds > 0
    # the 1.2 s of waiting are on the wall clock only
    assert st.train_seconds - st.train_cpu_seconds > 1.0


def test_a_mid_epoch_checkpoint_carries_the_epochs_cpu_seconds(tiny_file, tiny_dataset, tmp_path,
                                                               monkeypatch):
    config = tiny_config(tiny_file, train__epochs=2, train__checkpoint_minutes=1e-9)
    original, steps = Trainer.train_step, {"n": 0}

    def train_step(self, rows, epoch):     # stop the run after its third step of epoch 2
        steps["n"] += epoch == 2
        if steps["n"] == 4:
            raise KeyboardInterrupt
        return original(self, rows, epoch)
    monkeypatch.setattr(Trainer, "train_step", train_step)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tiny_dataset, output_dir=tmp_path, log=lambda m: None).fit()
    ckpt = load_torch(tmp_path / CHECKPOINT)
    mid, loop = ckpt["mid_epoch"], ckpt["loop"]
    # the checkpoint stands inside epoch 2 and holds both clocks of the part trained
    assert mid["epoch"] == 2 and mid["cpu_seconds"] > 0 and mid["seconds"] > 0
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = Trainer(config, tiny_dataset, output_dir=tmp_path, log=lambda m: None)
    resumed.load_checkpoint(tmp_path / CHECKPOINT)
    resumed.fit(run_test=False)
    # the resumed epoch adds what was spent before the checkpoint to the CPU clock
    assert resumed.state.train_cpu_seconds >= loop["train_cpu_seconds"] + mid["cpu_seconds"]
