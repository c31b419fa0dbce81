"""`tune/search.py` as a subprocess: interrupted by SIGINT or SIGKILL mid-study, it exits
non-zero (printing the resume command for SIGINT) and `--resume` completes the study without
losing or repeating completed trials."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from test_tuning_helpers import ray_session

ROOT = Path(__file__).resolve().parents[1]
# tune/search.py with each trial epoch taking 0.4 s more, so the tests can interrupt mid-study
SLOW_SEARCH = [str(ROOT / "tests" / "slow_search.py"), "0.4"]


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


def interrupt_when(condition, proc, sig=signal.SIGINT, timeout: float = 180) -> int:
    """Wait for ``condition``, send ``sig`` to search.py, return its exit status; whatever
    happens, nothing of its process group is left running."""
    try:
        wait_for(condition, timeout, proc)
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)              # leftovers of our own process group
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_without_repeating_trials(ray_local, tmp_path, sig):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002, 0.003]}\nmethods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address     # reuse the test's cluster
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test", "--methods", "sasrec",
           "--search-space", str(space), "--num-samples", "3", "--max-epochs", "3",
           "--max-concurrent", "1", "--seeds", "0", "--scheduler", "fifo", *common]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = tmp_path / "s" / "synthetic-sasrec-sasrec"
    def one_done_and_next_running():
        reps = trial_reports(run_dir)
        return (any(finished(r) for r in reps.values())
                and any(r and not finished(r) for r in reps.values()))
    rc = interrupt_when(one_done_and_next_running, proc, sig, timeout=120)
    text = (tmp_path / "first.log").read_text()
    # the plan (probed speed, trials, the study's length) is printed before the first run
    assert "[plan] speed: synthetic-sasrec-sasrec epoch ~" in text
    assert text.index("[plan] a full trial ~") < text.index("=== synthetic-sasrec-sasrec ===")
    if sig == signal.SIGINT:
        assert rc == 130, text[-3000:]
        assert "python tune/search.py --storage-path" in text and "--resume" in text
        # ... and not Tune's own hint, which restores one run rather than the study
        assert "Tuner.restore" not in text
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


@pytest.mark.slow
def test_resume_with_a_narrower_space_applies_it_to_trials_not_yet_created(ray_local, tmp_path):
    wide, narrow = tmp_path / "wide.yaml", tmp_path / "narrow.yaml"
    wide.write_text("params:\n  train.lr: {choices: [0.001, 0.003]}\nmethods:\n  sasrec: [train.lr]\n")
    narrow.write_text("params:\n  train.lr: {choices: [0.003]}\nmethods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test", "--methods", "sasrec",
           "--search-space", str(wide), "--num-samples", "4", "--max-epochs", "3", "--seed", "1",
           "--max-concurrent", "1", "--seeds", "0", "--scheduler", "fifo", *common]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = tmp_path / "s" / "synthetic-sasrec-sasrec"
    rc = interrupt_when(lambda: any(finished(r) for r in trial_reports(run_dir).values())
                        and any(r and not finished(r) for r in trial_reports(run_dir).values()), proc)
    assert rc == 130, (tmp_path / "first.log").read_text()[-3000:]
    # trials that existed at the interrupt (max-concurrent 1: none was pending unstarted)
    before = {name.removeprefix("trial_") for name in trial_reports(run_dir)}
    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume",
                              "--search-space", str(narrow), *common],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "s" / "trials.csv").set_index("trial_id")
    new = [t for t in trials.index if t not in before]
    # the study completed its 4 trials (the smoke-test cap); some were created after the resume
    assert len(trials) == 4 and new
    # every trial created after the resume was sampled from the narrowed space
    assert (trials.loc[new, "train.lr"] == 0.003).all(), trials[["train.lr"]]
    # the trial tables hold config keys only (the Optuna alias of the narrowed choice does not leak)
    assert not [c for c in trials.columns if "{" in c]
    import optuna
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "optuna.journal")))
    ot = optuna.load_study(study_name="synthetic-sasrec-sasrec", storage=storage).trials
    # the restored searcher itself sampled the narrowed choice (under its Optuna alias) for
    # exactly the trials created after the resume; the ones before used the wide choice
    assert sum("train.lr{0.003}" in t.params for t in ot) == len(new)
    assert sum("train.lr" in t.params and "train.lr{0.003}" not in t.params for t in ot) == len(before)


@pytest.mark.slow
def test_interrupted_concurrent_runs_resume_without_repeating_trials(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002, 0.003]}\n"
                     "methods:\n  sasrec: [train.lr]\n  duorec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test",
           "--methods", "sasrec", "duorec", "--concurrent-runs", "2", "--search-space", str(space),
           "--num-samples", "3", "--max-epochs", "3", "--max-concurrent", "1", "--seeds", "0",
           "--scheduler", "fifo", *common]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    runs = [tmp_path / "s" / f"synthetic-{m}-sasrec" for m in ("sasrec", "duorec")]
    # both runs going at once, each with a finished trial: interrupt mid-study
    rc = interrupt_when(lambda: all(any(finished(r) for r in trial_reports(d).values()) for d in runs),
                        proc, timeout=240)
    text = (tmp_path / "first.log").read_text()
    # SIGINT with both runs in flight: exit 130 and the resume command
    assert rc == 130, text[-3000:]
    assert "--resume" in text
    before = {d.name: {n: r for n, r in trial_reports(d).items() if finished(r)} for d in runs}
    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume", *common],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    for d in runs:
        after = trial_reports(d)
        # each run's trials finished before the interrupt were not re-run
        assert all(after[n] == r for n, r in before[d.name].items())
        mine = trials[trials["run"] == d.name]
        # each run completed its own 3 trials, none repeated, none in the other run's study
        assert len(mine) == 3 and mine["trial_id"].is_unique
        assert (mine["state"] == "completed").all() and (mine["epochs"] == 3).all()
    epochs = pd.read_csv(tmp_path / "s" / "epochs.csv")
    assert len(epochs) == 18 and not epochs.duplicated(["trial_id", "epoch"]).any()


SNAPSHOT_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def snapshot_checkpoints(run_dir: Path) -> dict[str, str | None]:
    """Trial id -> the checkpoint folder its last result in the run's newest snapshot names."""
    data = json.loads(sorted(run_dir.glob("experiment_state-*.json"))[-1].read_text())
    return {json.loads(state)["trial_id"]: (json.loads(meta).get("last_result") or {}).get("checkpoint_dir_name")
            for state, meta in data["trial_data"]}


def snapshot_statuses(run_dir: Path) -> dict[str, str]:
    """Trial id -> status in the run's newest experiment snapshot ({} before the first)."""
    files = sorted(run_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        data = json.loads(files[-1].read_text())
        return {s["trial_id"]: s["status"] for s in (json.loads(t[0]) for t in data["trial_data"])}
    except (ValueError, KeyError, IndexError):
        return {}                                     # being written


@pytest.mark.slow
def test_a_trial_that_ended_after_the_last_snapshot_is_not_retrained_on_resume(ray_local, tmp_path):
    """The CI failure of 2026-12-02: a driver killed after a trial ended (Optuna told) but
    before Ray's next experiment snapshot. Made deterministic: the snapshot taken while the
    first trial was running is put back after the kill."""
    import optuna
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002, 0.003]}\nmethods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test", "--methods", "sasrec",
           "--search-space", str(space), "--num-samples", "2", "--max-epochs", "3",
           "--max-concurrent", "1", "--seeds", "0", "--scheduler", "fifo", *common]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = tmp_path / "s" / "synthetic-sasrec-sasrec"
    journal = str(tmp_path / "s" / "optuna.journal")
    old = tmp_path / "old-snapshot"

    def first_running_in_snapshot() -> bool:
        running = [t for t, s in snapshot_statuses(run_dir).items() if s == "RUNNING"]
        if not running or not trial_reports(run_dir).get(f"trial_{running[0]}"):
            return False
        old.mkdir(exist_ok=True)
        for pattern in SNAPSHOT_FILES:
            for f in run_dir.glob(pattern):
                (old / f.name).write_bytes(f.read_bytes())
        return True

    def optuna_has_a_complete_trial() -> bool:
        try:
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
            trials = optuna.load_study(study_name="synthetic-sasrec-sasrec", storage=storage).trials
        except (KeyError, ValueError, OSError):
            return False
        return any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    try:
        wait_for(first_running_in_snapshot, 120, proc)
        wait_for(optuna_has_a_complete_trial, 120, proc)
    except BaseException:
        interrupt_when(lambda: True, proc, signal.SIGKILL)
        raise
    rc = interrupt_when(lambda: True, proc, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    for f in old.iterdir():                        # the driver died before its next snapshot
        (run_dir / f.name).write_bytes(f.read_bytes())
    ended = [t for t, s in snapshot_statuses(run_dir).items() if s == "RUNNING"]
    assert len(ended) == 1
    # num_to_keep deletes checkpoints after the snapshot named one (the CI failure of stop 28,
    # "does not exist on storage anymore"): keep only the newest, so the snapshot's is gone
    # unless it was the newest already
    kept = sorted((run_dir / f"trial_{ended[0]}").glob("checkpoint_*"))
    for old_checkpoint in kept[:-1]:
        shutil.rmtree(old_checkpoint)
    named = snapshot_checkpoints(run_dir)[ended[0]]
    # what the storage path holds of the ended trial (its result file can be a sync behind)
    before = trial_reports(run_dir)[f"trial_{ended[0]}"]
    checkpoints = sorted(p.name for p in (run_dir / f"trial_{ended[0]}").glob("checkpoint_*"))
    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume", *common],
                             capture_output=True, text=True, timeout=300)
    out = resumed.stdout + resumed.stderr
    # the resume completes (no UpdateFinishedTrialError) and says what it found
    assert resumed.returncode == 0, out[-3000:]
    assert f"finished after the last snapshot ({ended[0]})" in out
    # a snapshot naming a deleted checkpoint restores the trial from its newest kept one
    if named != kept[-1].name:
        assert f"trial {ended[0]}: its snapshot's checkpoint {named} is gone" in out
        assert f"it resumes from {kept[-1].name}" in out
    # the ended trial did not train again (no new checkpoint); its file keeps what it had and
    # has each of its 3 epochs once (a replayed last report fills a line the sync had not copied)
    after = trial_reports(run_dir)[f"trial_{ended[0]}"]
    assert sorted(p.name for p in (run_dir / f"trial_{ended[0]}").glob("checkpoint_*")) == checkpoints
    assert after[:len(before)] == before and [r["epoch"] for r in after] == [1, 2, 3]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    ot = optuna.load_study(study_name="synthetic-sasrec-sasrec", storage=storage).trials
    # Optuna: the ended trial complete once, with its first driver's value; the trials of the
    # resumed study complete; one the dead driver started after the snapshot (Ray never
    # resumes it) failed, not RUNNING for good
    states = [t.state for t in ot]
    assert ot[0].state == optuna.trial.TrialState.COMPLETE
    assert ot[0].value == pytest.approx(after[-1]["valid/best_ndcg@10"])
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    # the study's tables: two trials of 3 epochs, both completed, none twice
    assert len(trials) == 2 and trials["trial_id"].is_unique
    assert (trials["state"] == "completed").all() and (trials["epochs"] == 3).all()


@pytest.mark.slow
def test_ctrl_c_in_the_seed_phase_stops_the_study_at_once_and_resume_finishes_it(ray_local, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002]}\nmethods:\n  sasrec: [train.lr]\n")
    address = ray_local.get_runtime_context().gcs_address
    common = ["--storage-path", str(tmp_path), "--name", "s", "--address", address]
    cmd = [sys.executable, *SLOW_SEARCH, "--smoke-test", "--methods", "sasrec",
           "--search-space", str(space), "--num-samples", "2", "--max-epochs", "2",
           "--seeds", "2", "--scheduler", "fifo", *common]
    log_path = tmp_path / "first.log"
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    # "[seeds]" begins the seed phase ("seed re-run(s)" alone is in the [plan] lines too)
    rc = interrupt_when(lambda: "[seeds]" in log_path.read_text(), proc, timeout=180)
    text = log_path.read_text()
    # the first Ctrl-C ends the seed phase (Tune's leftover handler used to swallow it)
    assert rc == 130, text[-3000:]
    assert "--resume" in text and not (tmp_path / "s" / "seeds.csv").exists()
    resumed = subprocess.run([sys.executable, str(ROOT / "tune" / "search.py"), "--resume", *common],
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # the resumed driver re-runs no trial and finishes both seeds
    seeds = pd.read_csv(tmp_path / "s" / "seeds.csv")
    assert len(seeds) == 2 and len(pd.read_csv(tmp_path / "s" / "trials.csv")) == 2


@pytest.mark.slow
@pytest.mark.parametrize("resume_with", ["search.py", "tune-restores-it"])
def test_a_ctrl_c_before_tunes_first_snapshot_resumes_to_every_trial(ray_local, tmp_path, resume_with):
    """A driver stopped between Ray's tuner.pkl and Tune's first experiment snapshot: Tune
    would restart that folder as an empty experiment that creates fewer trials than planned,
    and every --resume ended "interrupted" again (CI, stop 27). The folder is set aside; if
    Tune restores it anyway (``tune-restores-it``), the stalled restored run is."""
    import optuna
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  train.lr: {choices: [0.001, 0.002]}\nmethods:\n  sasrec: [train.lr]\n")
    common = ["--storage-path", str(tmp_path), "--name", "s",
              "--address", ray_local.get_runtime_context().gcs_address]
    stop = str(ROOT / "tests" / "stop_search.py")
    first = subprocess.run([sys.executable, stop, "before-fit", "--smoke-test", "--methods", "sasrec",
                            "--search-space", str(space), "--num-samples", "2", "--max-epochs", "2",
                            "--seeds", "0", "--scheduler", "fifo", *common],
                           capture_output=True, text=True, timeout=240)
    run_dir = tmp_path / "s" / "synthetic-sasrec-sasrec"
    # the first driver stopped with a Tuner and no snapshot of it
    assert first.returncode == 130, first.stdout[-2000:] + first.stderr[-2000:]
    assert (run_dir / "tuner.pkl").exists() and not list(run_dir.glob("experiment_state-*.json"))
    entry = [str(ROOT / "tune" / "search.py")] if resume_with == "search.py" else [stop, "keep-unsnapshotted"]
    resumed = subprocess.run([sys.executable, *entry, "--resume", *common],
                             capture_output=True, text=True, timeout=300)
    out = resumed.stdout + resumed.stderr
    # one resume finishes the run
    assert resumed.returncode == 0, out[-3000:]
    aside = "unsnapshotted-1" if resume_with == "search.py" else "stalled-1"
    # the folder Tune cannot go on from is kept aside, never deleted
    assert f"set aside as synthetic-sasrec-sasrec.{aside}" in out
    assert (tmp_path / "s" / f"synthetic-sasrec-sasrec.{aside}").is_dir()
    trials = pd.read_csv(tmp_path / "s" / "trials.csv")
    # both planned trials, each once, trained to their budget
    assert len(trials) == 2 and trials["trial_id"].is_unique and (trials["epochs"] == 2).all()
    ot = optuna.load_study(study_name="synthetic-sasrec-sasrec", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s" / "optuna.journal")))).trials
    # Optuna was told each trial once
    assert sorted(t.user_attrs.get("ray_trial_id") for t in ot if t.state.name == "COMPLETE") \
        == sorted(trials["trial_id"].astype(str))


def test_the_search_cli_sees_a_concurrent_runs_thread_alive():
    import threading

    from ec4srec.search.command import run_threads_alive
    from ec4srec.search.options import RUN_THREAD_PREFIX
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name=f"{RUN_THREAD_PREFIX}0", daemon=True)
    thread.start()
    # while a run's thread is inside Tune, an interrupted driver ends at once (os._exit)
    assert run_threads_alive()
    release.set()
    thread.join()
    # with none left it exits normally
    assert not run_threads_alive()
