"""Cluster configs validate against Ray's own schema; a smoke study runs on a real multi-node
Ray cluster on this machine and its trials land on more than one node."""
import copy
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

import trial_hooks
from test_tuning_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_yaml_passes_rays_schema(name):
    from ray.autoscaler._private.util import prepare_config, validate_config
    raw = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    commands = "\n".join(raw["setup_commands"])
    assert "pip install -e" in commands and "git clone" in commands and "resolve(" in commands
    if name == "cluster.yaml":
        assert raw["provider"]["type"] == "aws"
        workers = raw["available_node_types"]["gpu_worker"]
        assert workers["resources"]["GPU"] >= 1 and workers["min_workers"] == 0
        assert workers["max_workers"] > 0 and "/efs" in commands
        assert "GPU" not in raw["available_node_types"][raw["head_node_type"]]["resources"]
    else:
        assert raw["provider"]["type"] == "local" and raw["provider"]["worker_ips"]


@pytest.mark.slow
def test_smoke_study_spreads_over_a_multinode_cluster(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from ec4srec.search import study as study_mod

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {
            "RAY_CHDIR_TO_TRIAL_DIR": "0"}})
        trial_hooks.install(monkeypatch, trial_hooks.sleep_each_epoch(0.3))
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        space = tmp_path / "space.yaml"
        space.write_text("params:\n  train.lr: {choices: [0.001, 0.002]}\nmethods:\n  sasrec: [train.lr]\n")
        opts = study_mod.StudyOptions(
            smoke_test=True, storage_path=str(tmp_path), name="multi", methods=["sasrec"],
            num_samples=2, max_epochs=3, max_concurrent=2, cpus_per_trial=1, gpus_per_trial=0,
            seeds=0, scheduler="fifo", search_space=str(space),
            overrides=[o for o in TINY if not o.startswith("data.")]).finalize()
        summary = study_mod.run(opts)
    finally:
        ray.shutdown()
        cluster.shutdown()
    trials = pd.read_csv(Path(summary["exp"]) / "trials.csv")
    assert len(trials) == 2 and (trials["state"] == "completed").all()
    nodes = set()
    for ids in trials["node_ids"]:
        nodes |= set(str(ids).split(";"))
    assert len(nodes) == 2, trials[["trial_id", "node_ids", "node_ips"]]
    assert all(ip for ip in trials["node_ips"])
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
