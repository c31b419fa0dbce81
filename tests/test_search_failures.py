"""A study that cannot do what it was asked: every trial of a run errored (exit 1, the run and
its first error named, the tables written), or an explicit --address where no Ray cluster
answers (exit 2 at once, nothing written)."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ec4srec.search import study
from ec4srec.search.options import StudyOptions

ROOT = Path(__file__).resolve().parents[1]
CRASH = "ConfigError('train.device=cuda, but this torch has no CUDA')"


def fake_run_search(opts, key, ranges, budget=None, reopen=True):
    """Two errored trials for sasrec, one good trial for any other method (no Ray)."""
    if key[1] == "sasrec":
        return [{"trial_id": f"t{i}", "params": {"train.device": "cuda"}, "history": [],
                 "error": f"RayTaskError(ConfigError)(\n  {CRASH})" if i == 0 else "later",
                 "path": f"{study.run_name(key)}/trial_t{i}"} for i in range(2)]
    history = [{"epoch": 1, "valid/ndcg@10": 0.1, "time_total_s": 1.0, "first_update": 2}]
    return [{"trial_id": "g0", "params": {}, "history": history, "error": None,
             "path": f"{study.run_name(key)}/trial_g0"}]


def test_a_study_whose_every_trial_errored_says_so_and_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study, "connect", lambda opts: None)
    monkeypatch.setattr(study, "cluster_slots", lambda opts: 1)
    monkeypatch.setattr(study, "run_search", fake_run_search)
    opts = StudyOptions(dataset="synthetic", methods=["sasrec", "cl4srec"], max_epochs=1, seeds=0,
                        storage_path=str(tmp_path), name="crash", address="local")
    code = study.main(opts)
    err = capsys.readouterr().err.splitlines()
    # exit 1 (not 0): the study finished, but a run has no trial that trained
    assert code == 1
    # one line, naming the failed run (not the good one) and its first trial's error, on one line
    assert err == [f"error: synthetic-sasrec-sasrec: every trial errored (2); the first: "
                   f"RayTaskError(ConfigError)( {CRASH})"]
    exp = tmp_path / "crash"
    trials = pd.read_csv(exp / "trials.csv")
    # the trial table is still written, with every trial of both runs
    assert sorted(trials["state"]) == ["completed", "error", "error"]
    # and the good run's results (its best config)
    assert (exp / "best" / "synthetic-cl4srec-sasrec.yaml").exists()
    # summary.json keeps the failed run
    assert list(json.loads((exp / "summary.json").read_text())["failed_runs"]) == \
        ["synthetic-sasrec-sasrec"]


def test_an_explicit_address_where_no_cluster_answers_fails_at_once(tmp_path):
    with socket.socket() as s:          # a local port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--smoke-test",
                          "--storage-path", str(tmp_path / "s"), "--address", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120)
    # exit 2 within seconds (ray.init would retry the dead address for minutes)
    assert out.returncode == 2 and time.monotonic() - started < 60
    # exactly one error line naming the address and what to do
    assert out.stderr == (f"error: --address 127.0.0.1:{port}: no Ray cluster answers there "
                          f"(start one with 'ray start --head' or 'ray up cluster.yaml', or use "
                          f"--address local)\n")
    # nothing written
    assert not (tmp_path / "s").exists()
