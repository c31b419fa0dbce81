"""Warm-up sharing by design (``warmup_keys``) vs sampling the warm-up params per trial: two
studies of one guided method with the same number of trials.

    python benchmarks/warmup_sharing.py --num-samples 12 --max-epochs 150

Both use the packaged default space; the second drops its ``warmup_keys`` line (warm-up params
sampled per trial; the warm-up cache still shares when two trials happen to match). Printed per
study: trials, epochs skipped / covered (the warm-up cache's saving), epochs trained, best
validation NDCG@10 (of all its trials, and of the per-trial study's trials that ended before it
had trained as many epochs as the keyed study: the same compute), wall time. Synthetic data, tiny models, a local Ray with this machine's cores.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="ec4srec")
    p.add_argument("--max-epochs", type=int, default=150)
    p.add_argument("--num-samples", type=int, default=12)
    p.add_argument("--with-baselines", action="store_true",
                   help="run cl4srec and duorec first in both studies (the keys are then seeded "
                        "by their best trials); the table is the guided method's")
    args = p.parse_args(argv)

    import ray
    from common import TINY_TRIAL

    from ec4srec.search import study as study_mod
    from ec4srec.search.ranges import dump_ranges, load_ranges
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"}})
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ranges = load_ranges(None)
        unkeyed = Path(d) / "unkeyed.yaml"
        unkeyed.write_text(dump_ranges({**ranges, "warmup_keys": None}))
        for label, space in (("warmup_keys 4 (default)", None), ("per-trial warm-up params", str(unkeyed))):
            opts = study_mod.StudyOptions(
                dataset="synthetic", storage_path=d, name=f"w{len(rows)}",
                methods=(["cl4srec", "duorec"] if args.with_baselines else []) + [args.method],
                num_samples=args.num_samples, max_epochs=args.max_epochs, seeds=0,
                cpus_per_trial=1, gpus_per_trial=0, search_space=space, status_every=1e9,
                overrides=TINY_TRIAL).finalize()
            started = time.time()
            summary = study_mod.run(opts)
            import pandas as pd
            trials = pd.read_csv(Path(summary["exp"]) / "trials.csv")
            trials = trials[trials["method"] == args.method]
            saved = study_mod.results.warm_start_savings(trials)
            trained = saved["epochs"] - saved["skipped"]
            rows.append({"label": label, "trials": len(trials), "saved": saved, "trained": trained,
                         "best": float(trials["valid/ndcg@10"].max()), "wall": time.time() - started,
                         "curve": best_by_compute(Path(summary["exp"]), args.method)})
    keyed = rows[0]
    same = rows[1]["curve"]
    at_same = max([b for spent, b in same if spent <= keyed["trained"]], default=float("nan"))
    print(f"\n{args.method}, N = {args.max_epochs}, ASHA, {args.num_samples} trials each, "
          f"synthetic data, tiny model")
    print("| warm-up | trials | epochs skipped / covered | saved | epochs trained | best valid NDCG@10 | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["saved"]
        print(f"| {r['label']} | {r['trials']} | {s['skipped']} / {s['epochs']} | {s['percent']:.1f} % "
              f"| {r['trained']} | {r['best']:.4f} | {r['wall']:.0f} |")
    print(f"\nper-trial study's best among trials ended within the keyed study's "
          f"{keyed['trained']} trained epochs: {at_same:.4f}")
    return 0


def best_by_compute(exp: Path, method: str):
    """(trained epochs spent so far, best valid NDCG@10 so far) after each trial, in the order
    the trials ended (their last report's timestamp in runs/<run>.json)."""
    import json
    ended = []
    for path in (exp / "runs").glob(f"*-{method}-*.json"):
        for rec in json.loads(path.read_text()):
            hist = rec["history"]
            if hist:
                trained = len(hist)          # reports = epochs this trial trained
                ended.append((hist[-1]["timestamp"], trained,
                              max(h.get("valid/ndcg@10", -1.0) for h in hist)))
    spent, best, out = 0, float("-inf"), []
    for _, trained, score in sorted(ended):
        spent += trained
        best = max(best, score)
        out.append((spent, best))
    return out

if __name__ == "__main__":
    sys.exit(main())
