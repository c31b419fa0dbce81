"""Node loss: a worker node of a multi-node Ray cluster removed mid-study; its trial resumes
from its last checkpoint on the remaining node, importance scores intact, nothing lost or
repeated (issue #24)."""
import json
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import trial_hooks
from test_tuning_helpers import TINY

from ec4srec.search import durable
from ec4srec.search.watch import OBJECTIVE

K = 3               # the lost trial's last checkpoint: past the importance update at epoch 2
EPOCHS = 4          # the lost trial has epoch 4 left to train after the loss
# node death is noticed by the GCS's health checks (Ray's defaults: every 3 s, dead after 5
# failures of up to 10 s each); these keys are Ray 2.60's (src/ray/common/ray_config_def.h).
# A killed node fails each check at once (connection refused): dead in about 3 s; a live node
# slowed by a loaded machine would have to miss 3 checks of 5 s in a row
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
                   "health_check_timeout_ms": 5000, "health_check_failure_threshold": 3}


def remove_when_held(cluster, node, markers: Path, removed: dict, timeout: float = 120.0) -> None:
    """Kill ``node`` (no graceful shutdown: a lost machine) once a trial holds on it
    (trial_hooks.hold_on_node's marker), unless ``markers/release`` appears first; records the
    held trial's id, or the error, in ``removed``."""
    try:
        deadline = time.monotonic() + timeout
        while not (held := list(markers.glob("held-*"))):
            if (markers / "release").exists():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("no trial held on the worker node")
            time.sleep(0.1)
        cluster.remove_node(node, allow_graceful=False)
        removed["trial_id"] = held[0].name.removeprefix("held-")
    except BaseException as exc:                # noqa: BLE001 - asserted by the test
        removed["error"] = exc


@pytest.mark.slow
def test_a_lost_nodes_trial_resumes_on_the_remaining_node_with_its_importance(tmp_path,
                                                                              monkeypatch):
    """Head (1 CPU) and worker (1 CPU), two ec4srec trials, one per node. The worker's trial is
    held at the end of epoch K + 1 (its last checkpoint: epoch K, past the importance update)
    and the worker node killed. The head is the node that remains (losing it ends the study: the
    driver and GCS run there), so the lost trial must resume there once the head's own trial
    is done. Contract: every trial completes, the lost one from its epoch-K checkpoint with
    the importance scores it saved; no epoch lost or repeated, in Ray's results, the Optuna
    journal or trials.csv."""
    import ray
    from ray.cluster_utils import Cluster

    from ec4srec.search import study as study_mod

    if ray.is_initialized():
        ray.shutdown()
    # Cluster() records its head as this machine's current cluster, which `--address auto`
    # studies running beside the test would join: not recorded
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *a, **kw: None)
    markers, records = tmp_path / "markers", tmp_path / "importance"
    markers.mkdir()
    records.mkdir()
    removed: dict = {}
    remover = None
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "_system_config": FAST_NODE_DEATH})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        head_id, worker_id = cluster.head_node.node_id, worker.node_id
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {
            "RAY_CHDIR_TO_TRIAL_DIR": "0"}})
        trial_hooks.install(monkeypatch, trial_hooks.record_importance(str(records)),
                            trial_hooks.hold_on_node(worker_id, K, str(markers)))
        space = tmp_path / "space.yaml"
        space.write_text("params:\n  train.lr: {choices: [0.001, 0.002]}\nmethods:\n"
                         "  ec4srec: [train.lr]\n")
        opts = study_mod.StudyOptions(
            smoke_test=True, storage_path=str(tmp_path), name="nodeloss", methods=["ec4srec"],
            num_samples=2, max_epochs=EPOCHS, max_concurrent=2, cpus_per_trial=1,
            gpus_per_trial=0, seeds=0, scheduler="fifo", search_space=str(space),
            max_failures=1, warm_start=False, checkpoint_every=1,
            overrides=[*(o for o in TINY if not o.startswith("data.")),
                       "method.updates=1"]).finalize()          # one update, at epoch 2
        remover = threading.Thread(target=remove_when_held,
                                   args=(cluster, worker, markers, removed), daemon=True)
        remover.start()
        summary = study_mod.run(opts)
    finally:
        (markers / "release").touch()           # a held trial (a failed removal) goes on
        if remover is not None:
            remover.join(timeout=30)
        ray.shutdown()
        cluster.shutdown()
    # the worker node was removed while a trial held on it
    assert "error" not in removed and "trial_id" in removed, removed
    lost = removed["trial_id"]
    exp = Path(summary["exp"])
    trials = pd.read_csv(exp / "trials.csv", dtype={"trial_id": str})
    # trials.csv: both trials, each once, the lost one among them
    assert len(trials) == 2 and trials["trial_id"].is_unique and lost in set(trials["trial_id"])
    # every trial completed its whole epoch budget
    assert (trials["state"] == "completed").all() and (trials["epochs"] == EPOCHS).all()
    row = trials.set_index("trial_id").loc[lost]
    # the lost trial was restored once and ran on both nodes
    assert row["restores"] == 1 and set(row["node_ids"].split(";")) == {head_id, worker_id}
    result = (exp / row["path"] / "result.json").read_text()
    rows = [json.loads(line) for line in result.splitlines()]
    # Ray's results: every epoch of the lost trial reported exactly once, none missing
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), [r["epoch"] for r in rows]
    # epochs 1..K ran on the worker, from scratch
    assert all(r["node_id"] == worker_id and r["restored_from_epoch"] == 0 for r in rows[:K])
    # the epochs after K ran on the head, restored from the epoch-K checkpoint
    assert all(r["node_id"] == head_id and r["restored_from_epoch"] == K for r in rows[K:])
    # the importance update happened before the loss (epoch 2), none after it
    assert [r["epoch"] for r in rows if r["importance_update"]] == [2]
    seen = [json.loads(line) for line in (records / f"{lost}.jsonl").read_text().splitlines()]
    before = {s["epoch"]: s for s in seen if s["node_id"] == worker_id}
    after = {s["epoch"]: s for s in seen if s["node_id"] == head_id}
    # the hook saw epochs 1..K+1 on the worker (K+1 held, never reported) ...
    assert sorted(before) == list(range(1, K + 2))
    # ... and K+1..N on the head
    assert sorted(after) == list(range(K + 1, EPOCHS + 1))
    # scores exist from the update on (the comparison below is not of two Nones)
    assert before[1]["importance"] is None and before[2]["importance"] is not None
    # the restored checkpoint holds the scores the trainer had when it saved epoch K
    assert after[K + 1]["checkpoint_importance"] == before[K]["importance"]
    # the resumed trainer uses exactly those, to the end
    assert all(s["importance"] == before[K]["importance"] for s in after.values())
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(exp / "optuna.journal")))
    ot = optuna.load_study(study_name="synthetic-ec4srec-sasrec", storage=storage).trials
    by_ray_id = {t.user_attrs.get(durable.RAY_TRIAL_ID): t for t in ot}
    # Optuna holds one trial per Ray trial
    assert len(ot) == 2 and set(by_ray_id) == set(trials["trial_id"])
    # each complete, with one value
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 1 for t in ot)
    # the lost trial's value is its final objective
    assert by_ray_id[lost].value == pytest.approx(rows[-1][OBJECTIVE])
    ops = [json.loads(line) for line in (exp / "optuna.journal").read_text().splitlines()]
    told = [op["trial_id"] for op in ops       # SET_TRIAL_STATE_VALUES with values: a tell
            if op["op_code"] == 6 and op.get("values") is not None]
    # the journal tells each trial a value once (the restart told Optuna nothing)
    assert len(told) == len(set(told)) == 2
    steps = {t: [op["step"] for op in ops if op["op_code"] == 7 and op["trial_id"] == t]
             for t in told}                 # SET_TRIAL_INTERMEDIATE_VALUE: one per report
    # and each epoch's intermediate value once: the resumed trial went on at step K + 1
    assert all(s == list(range(1, EPOCHS + 1)) for s in steps.values()), steps
