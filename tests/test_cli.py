from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ec4srec.cli import main
from ec4srec.config import dump_config, load_config
from ec4srec.trainer import CHECKPOINT, Trainer
from ec4srec.data import load_dataset

from conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {"config.yaml", "metrics.json", CHECKPOINT}


@pytest.fixture
def config_file(tiny_file, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(dump_config(tiny_config(tiny_file, train__epochs=2)))
    return path


def interrupt_after_first_epoch(config, out: Path) -> Path:
    """Train ``config`` into ``out`` and stop it after epoch 1 (as a Ctrl-C would)."""
    def stop(trainer, epoch, metrics):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, load_dataset(config.data), out, callbacks=[stop], log=lambda m: None).fit()
    return out


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    # Errors are exactly one "error: ..." line, never a traceback.
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_train_then_evaluate(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    # A tiny custom-file run trains and exits 0.
    assert main(["train", "--config", str(config_file), "--output", str(out)]) == 0
    # It writes the config, the metrics and the checkpoint.
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()

    # evaluate prints JSON equal to the run's own test metrics (best weights reloaded).
    assert main(["evaluate", "--checkpoint", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("split") == "test" and printed == pytest.approx(metrics["test"])
    # --split valid reproduces the best epoch's validation metrics; a checkpoint file path works.
    assert main(["evaluate", "--checkpoint", str(out / CHECKPOINT), "--split", "valid"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed.pop("split") == "valid" and printed == pytest.approx(metrics["valid"])


def test_flags_and_set_override_config(config_file, tiny_file, tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--config", str(config_file), "--dataset", str(tiny_file),
                 "--backbone", "gru4rec", "--set", "train.epochs=1", "--set", "train.lr=3e-3",
                 "--output", str(out)])
    saved = load_config(out / "config.yaml")
    # Precedence: --config < --backbone/--dataset flags < --set; the run uses the result.
    assert code == 0 and saved.model.backbone == "gru4rec"
    assert (saved.train.epochs, saved.train.lr) == (1, 3e-3)
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize("case", ["malformed", "bad_key", "bad_value", "unknown_dataset",
                                  "bad_yaml"])
def test_errors_exit_2_with_one_line_and_write_nothing(case, config_file, tmp_path, capsys):
    out = tmp_path / "run"
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n2 4 x 6\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {epochs: [1\n")
    args, expected = {
        "malformed": (["--dataset", str(bad)], f"{bad}:2:"),
        "bad_key": (["--set", "train.epoch=3"], "'train.epochs'"),
        "bad_value": (["--set", "model.dropout=1.5"], "model.dropout"),
        "unknown_dataset": (["--dataset", "nosuchset"], "beauty, sports, clothing, ml-1m, synthetic"),
        "bad_yaml": (["--config", str(bad_yaml)], str(bad_yaml)),
    }[case]
    if case != "bad_yaml":
        args = ["--config", str(config_file), *args]
    code = main(["train", *args, "--output", str(out)])
    line = one_error_line(capsys.readouterr().err)
    # Exit status 2 and the message names the file:line, the key (with suggestion) or the choices.
    assert code == 2 and expected in line
    # Nothing is written into --output.
    assert not out.exists()


def test_refuses_to_overwrite_finished_run(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    # The first run finishes normally.
    assert main(["train", "--config", str(config_file), "--output", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    code = main(["train", "--config", str(config_file), "--output", str(out)])
    line = one_error_line(capsys.readouterr().err)
    # A second train into a finished run is refused with exit 2 ...
    assert code == 2 and "already holds a run" in line
    # ... and leaves the finished run's files untouched.
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_without_checkpoint_is_error(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", str(config_file), "--output", str(out), "--resume"])
    line = one_error_line(capsys.readouterr().err)
    # --resume with no checkpoint is a usage error naming the expected checkpoint path.
    assert code == 2 and str(out / CHECKPOINT) in line and not out.exists()


def test_resume_continues_interrupted_run(config_file, tmp_path, capsys):
    config = load_config(config_file)

    interrupt_after_first_epoch(config, tmp_path / "run")
    code = main(["train", "--config", str(config_file), "--output", str(tmp_path / "run"), "--resume"])
    out = capsys.readouterr().out
    # --resume picks up after the saved epoch and finishes the run.
    assert code == 0 and "after epoch 1" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs_run"] == 2


@pytest.mark.parametrize("flags, ok", [(["--data-dir", "."], True), (["--method", "duorec"], False)])
def test_resume_compares_only_the_flags_given(config_file, tmp_path, capsys, flags, ok):
    config = load_config(config_file).with_overrides(["method.name=cl4srec"])

    interrupt_after_first_epoch(config, tmp_path / "run")
    code = main(["train", "--output", str(tmp_path / "run"), "--resume", *flags])
    captured = capsys.readouterr()
    if ok:
        # A bare --data-dir (the data moved) resumes a cl4srec run: the default --method is not
        # compared against the saved run.
        assert code == 0 and "after epoch 1" in captured.out
    else:
        # A --method that differs from the saved run is still refused.
        assert code == 2 and "contradicts" in one_error_line(captured.err)


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    code = main(["evaluate", "--checkpoint", str(tmp_path / "nothing")])
    line = one_error_line(capsys.readouterr().err)
    # evaluate on a directory without a checkpoint is a one-line usage error.
    assert code == 2 and "no checkpoint" in line


def test_subprocess_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n1 4 5 6\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ec4srec.cli", "train", "--dataset", str(bad),
                           "--output", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    line = one_error_line(proc.stderr)
    # A real process exits 2 with one error line naming file:line, and no traceback.
    assert proc.returncode == 2 and f"{bad}:2:" in line and "Traceback" not in proc.stderr
    # Nothing was written.
    assert not (tmp_path / "run").exists()


def test_finish_ends_a_resumed_run_before_its_budget(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--output", str(out)]) == 0
    (out / "metrics.json").unlink()          # as if the run had been stopped mid-way
    code = main(["train", "--output", str(out), "--resume", "--finish"])
    record = json.loads((out / "metrics.json").read_text())
    # --finish tests the best weights once and records the budget it ran against.
    assert code == 0 and record["test"] is not None and record["epochs_run"] <= record["epoch_budget"]


def test_finish_requires_resume(config_file, tmp_path, capsys):
    code = main(["train", "--config", str(config_file), "--output", str(tmp_path / "r"), "--finish"])
    # --finish without --resume is a usage error, not a silent fresh run.
    assert code == 2 and "--resume" in one_error_line(capsys.readouterr().err)


GUIDED_ARGS = ["--set", "train.epochs=5", "--set", "method.update_epochs=[3]",
               "--set", "method.explainer=saliency", "--set", "train.patience=10"]


def test_warm_start_from_another_variant_equals_training_from_scratch(config_file, tmp_path, capsys):
    import pandas as pd
    run = lambda *a: main(["train", "--config", str(config_file), *GUIDED_ARGS, *a])
    donor, scratch, warm = tmp_path / "ec4srec", tmp_path / "sl", tmp_path / "sl-warm"
    assert run("--method", "ec4srec", "--output", str(donor)) == 0
    # A guided run keeps its state after the last warm-up epoch (first update at 3: epoch 2).
    assert (donor / "warmup.pt").is_file()
    assert run("--method", "ec4srec_sl", "--output", str(scratch)) == 0
    capsys.readouterr()
    assert run("--method", "ec4srec_sl", "--warm-start", str(donor), "--output", str(warm)) == 0
    assert "warm-started from" in capsys.readouterr().out
    a = json.loads((scratch / "metrics.json").read_text())
    b = json.loads((warm / "metrics.json").read_text())
    # EC4SRec(SL) started from EC4SRec's warm-up is the run trained from scratch (same seed):
    # the variants share their warm-up bit for bit.
    assert a["test"] == b["test"] and a["valid"] == b["valid"] and a["best_epoch"] == b["best_epoch"]
    pd.testing.assert_frame_equal(pd.read_csv(scratch / "history.csv"), pd.read_csv(warm / "history.csv"))
    # the record says where its 2 warm-up epochs came from
    assert b["warm_start"]["epochs"] == 2 and "warm_start" not in a


@pytest.mark.parametrize("case", ["no_warmup", "other_lr", "other_schedule", "unguided", "with_resume",
                                  "other_runtime"])
def test_warm_start_errors_exit_2_and_write_nothing(case, config_file, tmp_path, capsys):
    donor = tmp_path / "donor"
    assert main(["train", "--config", str(config_file), *GUIDED_ARGS, "--method", "ec4srec",
                 "--output", str(donor)]) == 0
    if case == "other_runtime":             # a warm-up trained with 7 threads
        import torch
        ckpt = torch.load(donor / "warmup.pt", weights_only=False)
        ckpt["runtime"]["threads"] = 7
        torch.save(ckpt, donor / "warmup.pt")
    plain = tmp_path / "plain"
    assert main(["train", "--config", str(config_file), "--output", str(plain)]) == 0
    capsys.readouterr()
    args, expected = {
        "no_warmup": (["--method", "ec4srec_sl", "--warm-start", str(plain)], "no warmup.pt"),
        "other_lr": (["--method", "ec4srec_sl", "--set", "train.lr=0.002", "--warm-start", str(donor)],
                     "train.lr"),
        "other_schedule": (["--method", "ec4srec_sl", "--set", "method.update_epochs=[4]",
                            "--warm-start", str(donor)], "first importance update (epoch 3 vs 4)"),
        "unguided": (["--method", "duorec", "--warm-start", str(donor)], "explanation-guided"),
        "with_resume": (["--method", "ec4srec_sl", "--warm-start", str(donor), "--resume"], "--resume"),
        "other_runtime": (["--method", "ec4srec_sl", "--warm-start", str(donor)], "threads 7 vs 1"),
    }[case]
    out = tmp_path / "run"
    code = main(["train", "--config", str(config_file), *GUIDED_ARGS, *args, "--output", str(out)])
    line = one_error_line(capsys.readouterr().err)
    # exit 2, one line naming what is wrong, and nothing written
    assert code == 2 and expected in line, line
    assert not out.exists()


def test_ctrl_c_says_whether_there_is_anything_to_resume(tmp_path, monkeypatch, capsys):
    import ec4srec.cli as cli

    def interrupt(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupt)
    out = tmp_path / "run"
    # Before the first checkpoint: nothing to resume, so --resume is not suggested.
    assert cli.main(["train", "--dataset", "synthetic", "--output", str(out)]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    # With a checkpoint: the exact resume command.
    assert cli.main(["train", "--dataset", "synthetic", "--output", str(out)]) == 130
    assert f"ec4srec train --output {out} --resume" in capsys.readouterr().err
