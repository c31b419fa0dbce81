"""`tune/search.py` as a subprocess: interrupted by SIGINT or SIGKILL mid-study, it exits
non-zero (printing the resume command for SIGINT) and `--resume` completes the study without
losing or repeating completed trials."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from test_tuning_helpers import ray_session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ray_local():
    """The process-wide local Ray (started once; a multi-node test may have replaced it)."""
    return ray_session()


def trial_reports(run_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in run_dir.glob("trial_*/result.json"):
        lines = [l for l in path.read_text().splitlines() if l.strip()]
        out[path.parent.name] = [json.loads(l) for l in lines]
    return out


def finished(reports: list[dict]) -> bool:
    """All 3 epochs reported (FIFO, no early stop at this budget)."""
    return any(r.get("epoch") == 3 for r in reports)


def wait_for(condition, timeout: float, proc) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "search.py ended before the interrupt"
        assert time.time() < deadline, "timed out waiting for the study to progress"
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_without_repeating_trials(ray_local, tmp_path, sig):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002, 0.003]}\nmethods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address     # reuse the test's cluster
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, str(ROOT / "tune" / "search.py"), "--smoke-test", "--methods", "sasrec",
           "--search-space", str(space), "--num-samples", "3", "--max-epochs", "3",
           "--max-concurrent", "1", "--seeds", "0", "--scheduler", "fifo", *common]
    log = (tmp_path / "first.log").open("w")
    env = {**os.environ, "EC4SREC_TEST_EPOCH_SLEEP": "0.4"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)
    run_dir = tmp_path / "s" / "synthetic-sasrec-sasrec"
    try:
        def one_done_and_next_running():
            reps = trial_reports(run_dir)
            return (any(finished(r) for r in reps.values())
                    and any(r and not finished(r) for r in reps.values()))
        wait_for(one_done_and_next_running, 120, proc)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)              # leftovers of our own process group
        except ProcessLookupError:
            pass
    text = (tmp_path / "first.log").read_text()
    if sig == signal.SIGINT:
        assert rc == 130, text[-3000:]
        assert "python tune/search.py --storage-path" in text and "--resume" in text
    else:
        assert rc == -signal.SIGKILL
    before = trial_reports(run_dir)
    done = {name: reps for name, reps in before.items() if finished(reps)}
    assert 1 <= len(done) < 3

    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume", *common],
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = trial_reports(run_dir)
    for name, reps in done.items():                      # completed trials were not re-run
        assert after[name] == reps
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    assert (trials["state"] == "completed").all() and (trials["epochs"] == 3).all()
    epochs = pd.read_csv(tmp_path / "s" / "epochs.csv")
    assert len(epochs) == 9 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert "trial table" in resumed.stdout and "tensorboard --logdir" in resumed.stdout
