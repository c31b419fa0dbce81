"""Slot utilisation of a study, runs one after another vs runs sharing the cluster.

    python benchmarks/slot_utilisation.py --repeats 2

Starts a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: --nodes x --cpus-per-node
slots), runs the same small ASHA study (three methods on synthetic data, trials slowed to
--epoch-sleep seconds per epoch so that epochs, not this machine's load, set their length)
once with ``concurrent_runs=1`` and once with ``concurrent_runs=len(methods)``, and prints the
search phase's utilisation (busy slot-seconds / slot-seconds, from the cost report) and wall
time for each; medians over --repeats, both variants measured in the same process, alternating.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path



def one_study(root: Path, name: str, concurrent: int, args) -> dict:
    from common import TINY_TRIAL

    from ec4srec.search import study as study_mod
    from ec4srec.search import tuner
    opts = study_mod.StudyOptions(
        dataset="synthetic", storage_path=str(root), name=name, methods=args.methods,
        num_samples=args.num_samples, max_epochs=args.max_epochs, scheduler="asha",
        grace_period=1, reduction_factor=3, seeds=0, cpus_per_trial=1, gpus_per_trial=0,
        warm_start=False, concurrent_runs=concurrent, status_every=1e9,
        overrides=TINY_TRIAL).finalize()
    seconds = args.epoch_sleep

    def sleep(session, epoch, restored):      # in __main__: Ray pickles it by value
        time.sleep(seconds)
    constants = tuner.trial_constants
    tuner.trial_constants = lambda *a, **kw: {**constants(*a, **kw), "epoch_hooks": [sleep]}
    started = time.time()
    summary = study_mod.run(opts)
    cost = summary["cost"]
    return {"utilisation": cost["search_utilisation"], "wall_s": time.time() - started,
            "trials": summary["trials"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=["sasrec", "cl4srec", "duorec"])
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--max-epochs", type=int, default=9)
    p.add_argument("--epoch-sleep", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import os
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node})
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=args.cpus_per_node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}})
    out = {1: [], len(args.methods): []}
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(args.repeats):
                for k in out:
                    res = one_study(Path(d), f"u{k}-{r}", k, args)
                    out[k].append(res)
                    print(f"concurrent_runs={k} repeat {r}: utilisation {res['utilisation']:.3f}, "
                          f"wall {res['wall_s']:.1f}s, {res['trials']} trials", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    slots = args.nodes * args.cpus_per_node
    print(f"\n{slots} slots on {args.nodes} nodes; {len(args.methods)} runs x {args.num_samples} "
          f"trials, N = {args.max_epochs}, ASHA (grace 1, rf 3); medians of {args.repeats}")
    print("| runs at once | search utilisation | study wall time (s) |\n|---|---|---|")
    for k, rows in out.items():
        print(f"| {k} | {statistics.median(r['utilisation'] for r in rows):.3f} | "
              f"{statistics.median(r['wall_s'] for r in rows):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
