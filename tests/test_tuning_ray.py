"""Studies on a real local Ray (one per test session): a killed trial worker resumes from its
checkpoint, a NaN trial errors while the study goes on, seeds re-runs, best-config export."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import trial_hooks
from test_tuning_helpers import TINY, ray_session, require_method, tiny_config

from ec4srec.config import load_config  # noqa: E402
from ec4srec.search import compat  # noqa: E402
from ec4srec.search import study as study_mod  # noqa: E402
from ec4srec.search.space import apply_params  # noqa: E402
from ec4srec.search.trainable import NONFINITE_MARKER, LocalSession, run_trial  # noqa: E402


@pytest.fixture
def ray_local():
    """The process-wide local Ray (started once; a multi-node test may have replaced it)."""
    return ray_session()


def options(tmp_path, name, **kw):
    kw = {"cpus_per_trial": 1, "gpus_per_trial": 0, "seeds": 0, "address": "auto",
          "overrides": [o for o in TINY if not o.startswith("data.")], **kw}
    opts = study_mod.StudyOptions(smoke_test=True, storage_path=str(tmp_path), name=name, **kw)
    return opts.finalize()


@pytest.mark.parametrize("method", ["sasrec", pytest.param("ec4srec", marks=pytest.mark.slow)])
def test_killed_worker_resumes_from_its_checkpoint(ray_local, tmp_path, method, monkeypatch):
    require_method(method)
    opts = options(tmp_path, "kill", methods=[method], num_samples=1, max_epochs=4,
                   scheduler="fifo", max_failures=1, warm_start=False,
                   optuna_storage=f"sqlite:///{tmp_path}/optuna.db")     # the RDB option
    trial_hooks.install(monkeypatch, trial_hooks.kill_once_after(2))   # SIGKILL the trial actor once
    summary = study_mod.run(opts)
    trials = pd.read_csv(Path(summary["exp"]) / "trials.csv")
    assert len(trials) == 1
    import optuna
    names = {st.study_name for st in optuna.get_all_study_summaries(opts.optuna_storage)}
    # in an RDB, which other studies may share, the run's Optuna study is named by its study
    assert names == {f"kill/synthetic-{method}-sasrec"}
    row = trials.iloc[0]
    assert row["state"] == "completed" and row["epochs"] == 4 and row["restores"] >= 1
    trial_dir = Path(summary["exp"]) / row["path"]           # relative to the experiment folder
    assert (trial_dir / "KILLED_BY_TEST").exists()
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    resumed_at = {r["restored_from_epoch"] for r in reports} - {0}
    assert resumed_at and max(resumed_at) >= 1                # continued, did not start over
    # the resumed trial equals an uninterrupted run of the same config (importance included)
    params = {k: row[k] for k in trials.columns
              if k.startswith(("data.", "method.", "model.", "train.")) and pd.notna(row[k])}
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
    base = study_mod.base_config(opts, method, "sasrec")
    local = LocalSession(tmp_path / "local")
    run_trial(params, {"base": base.to_dict()}, local)
    epochs = pd.read_csv(Path(summary["exp"]) / "epochs.csv").sort_values("epoch")
    expected = [r["valid/ndcg@10"] for r in local.reports]
    # no epoch reported before the kill may be lost (see test_restarted_trial_keeps_...)
    assert epochs["epoch"].tolist() == [r["epoch"] for r in local.reports] == [1, 2, 3, 4]
    assert epochs["valid/ndcg@10"].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["result.json", "progress.csv"])
def test_restarted_trial_keeps_its_newer_local_logs(tmp_path, name):
    """On a trial restart the loggers keep the driver's staging file (newer than the storage
    copy, which only a background sync updates); a missing one is fetched from storage."""
    from types import SimpleNamespace

    import pyarrow.fs
    remote, local = tmp_path / "remote", tmp_path / "local"
    remote.mkdir()
    local.mkdir()
    (remote / name).write_text("epoch 1\n")                       # stale: synced after epoch 1
    trial = SimpleNamespace(checkpoint=object(), local_path=str(local), storage=SimpleNamespace(
        trial_fs_path=str(remote), storage_filesystem=pyarrow.fs.LocalFileSystem()))
    for logger in (compat.ResultJsonLogger(), compat.ProgressCsvLogger()):
        (local / name).write_text("epoch 1\nepoch 2\n")
        logger._restore_from_remote(name, trial)
        assert (local / name).read_text() == "epoch 1\nepoch 2\n"
        (local / name).unlink()                                     # a new driver (Tuner.restore)
        logger._restore_from_remote(name, trial)
        assert (local / name).read_text() == "epoch 1\n"


@pytest.mark.slow
def test_nan_trial_fails_cleanly_and_the_study_goes_on(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 1.0e+30]}\nmethods:\n  sasrec: [train.lr]\n")
    # seeded TPE: the first trial gets lr = 1e30 (NaN), the second 0.001; one retry allowed
    opts = options(tmp_path, "nan", methods=["sasrec"], num_samples=2, max_epochs=3, seed=0,
                   search_space=str(space), scheduler="fifo", max_failures=1, seeds=2,
                   max_concurrent=1)
    summary = study_mod.run(opts)
    exp = Path(summary["exp"])
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == 2
    bad, good = trials[trials["train.lr"] > 1], trials[trials["train.lr"] < 1]
    assert len(bad) >= 1 and len(good) >= 1, trials[["train.lr", "state"]]
    assert (bad["state"] == "error").all() and bad["error"].str.contains("NonFiniteLoss").all()
    assert all((exp / p / NONFINITE_MARKER).exists() for p in bad["path"])
    assert (good["state"] == "completed").all()
    assert all(list((exp / p).glob("events.out.tfevents*")) for p in good["path"])   # TensorBoard
    # seeds re-runs of the best config: one test per seed, then the paper tables
    seeds = pd.read_csv(exp / "seeds.csv")
    assert sorted(seeds["seed"]) == [2020, 2021] and seeds["test/ndcg@10"].notna().all()
    assert (exp / "report" / "table3.md").exists()
    # the best trial ended on its own (3 epochs of 3) with seed 2020: that seed is the trial,
    # tested from its final checkpoint (finals.py); seed 2021 is re-trained
    record = {s: json.loads((exp / "seeds" / "synthetic-sasrec-sasrec" / f"seed_{s}.json")
                            .read_text()) for s in (2020, 2021)}
    assert record[2020].get("from_trial") == str(good["trial_id"].iloc[0])
    assert "from_trial" not in record[2021]
    # the exported best config loads and trains unchanged with `ec4srec train --config`
    best = exp / "best" / "synthetic-sasrec-sasrec.yaml"
    config = load_config(best)
    assert config.train.lr == 0.001 and config.train.epochs == 3 and config.model.hidden_size == 16
    out = subprocess.run([sys.executable, "-m", "ec4srec.cli", "train", "--config", str(best),
                          "--output", str(tmp_path / "retrain")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "retrain" / "metrics.json").read_text())
    assert metrics["test"]["ndcg@10"] == pytest.approx(
        seeds.loc[seeds["seed"] == 2020, "test/ndcg@10"].item(), abs=1e-9)


@pytest.mark.slow
def test_uri_storage_keeps_tables_in_the_local_dir(ray_local, tmp_path):
    """A URI storage path (file:// here, s3:// on a cluster): Ray's trial folders go to the URI,
    tables, Optuna journal, warm-up cache and best configs to --local-dir."""
    bucket, local = tmp_path / "bucket", tmp_path / "local"
    opts = study_mod.StudyOptions(
        smoke_test=True, storage_path=f"file://{bucket}", local_dir=str(local), name="uri",
        methods=["sasrec"], num_samples=1, max_epochs=2, scheduler="fifo", seeds=1,
        cpus_per_trial=1, gpus_per_trial=0, address="auto",
        overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
    summary = study_mod.run(opts)
    # the experiment folder is the local dir; Ray's run (checkpoints, result.json) is in the bucket
    assert Path(summary["exp"]) == local
    assert (local / "trials.csv").exists() and (local / "seeds.csv").exists()
    assert (local / "best" / "synthetic-sasrec-sasrec.yaml").exists()
    assert list((bucket / "uri" / "synthetic-sasrec-sasrec").glob("trial_*/result.json"))
    assert not list(bucket.rglob("trials.csv"))
    # the resume command names both folders (the local one holds study.json)
    assert f"--local-dir {local}" in opts.resume_command() and f"file://{bucket}" in opts.resume_command()


def test_best_config_matches_apply_params(tmp_path):
    base = tiny_config()
    cfg = apply_params(base, {"train.lr": 0.003})
    assert cfg.train.lr == 0.003 and cfg.to_dict()["model"] == base.to_dict()["model"]
