"""Hyperparameter search for EC4SRec and its baselines on a Ray cluster (docs/search.md).

    python tune/search.py --dataset sports                       # all methods, SASRec backbone
    python tune/search.py --smoke-test                           # tiny CI run on synthetic data
    python tune/search.py --name ec4srec-sports --resume         # continue an interrupted study
    python tune/search.py --dataset beauty --time-budget 3h      # plan trials to end within 3 h
    python tune/search.py --dataset beauty --time-budget 3h --plan-only   # only print that plan

Joins the running Ray cluster (RAY_ADDRESS or one found on this machine), else starts a local
one. Exits 0 when done (--plan-only: when the plan is printed; nothing is started or written);
1 when done but every trial of some run errored (one error line per such run, naming its first
error; the tables are written); 130 when interrupted (the resume command is printed); 2 on bad
input (an --address host:port where no Ray cluster answers included).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import threading

from ..config import BACKBONES, METHODS, ConfigError
from .budget import parse_duration
from .options import RUN_THREAD_PREFIX, StudyOptions

D = StudyOptions()


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module doc as written, and every flag's default in --help."""


def parse(argv=None, prog: str | None = None) -> tuple[StudyOptions, bool]:
    """The study's options and whether to resume, from the command line (exits 2 on bad flags)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", default=D.dataset, help="beauty | sports | clothing | ml-1m | synthetic | PATH")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, metavar="METHOD",
                   help=f"methods to search, of {', '.join(METHODS)} (default: all; with "
                   "--resume: more methods to add to the study)")
    p.add_argument("--backbones", nargs="+", choices=BACKBONES, default=D.backbones,
                   metavar="BACKBONE", help=f"backbones, of {', '.join(BACKBONES)}")
    p.add_argument("--num-samples", type=int, default=D.num_samples, help="trials per (method, backbone)")
    p.add_argument("--max-epochs", type=int, default=D.max_epochs, help="epoch budget N of every trial")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="fractional values pack trials on one GPU (default: 0.25 if the cluster has GPUs)")
    p.add_argument("--cpus-per-trial", type=float, default=D.cpus_per_trial)
    p.add_argument("--max-concurrent", type=int, default=D.max_concurrent, help="0 = resource-bound")
    p.add_argument("--storage-path", default=D.storage_path, help="local dir, NFS/EFS mount or s3://bucket/path")
    p.add_argument("--local-dir", help="tables and caches when --storage-path is a URI")
    p.add_argument("--name", help="experiment name (default: ec4srec-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the study --storage-path/--name")
    p.add_argument("--seed", type=int, default=D.seed, help="seed of the TPE sampler")
    p.add_argument("--search-space", help="default | paper (packaged spaces) | FILE.yaml; with "
                   "--resume: a narrower space for the trials not yet created")
    p.add_argument("--data-dir", help="dataset directory on every node (default: $EC4SREC_DATA_DIR)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget on synthetic data (CI)")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default=D.scheduler)
    p.add_argument("--asha-clock", choices=["epochs", "seconds", "cpu-seconds"], default=D.asha_clock,
                   help="what ASHA's rungs count: epochs after the first importance update, or "
                   "seconds of a trial's training and validation (fair across settings whose "
                   "epochs cost differently, e.g. a searched train.objective), or the CPU "
                   "seconds of the same (CPU trials on a shared machine: other programs' load "
                   "does not stretch them)")
    p.add_argument("--grace-period", type=int, help="ASHA's first rung, in --asha-clock units "
                   "(default: min(10, N // 10) epochs, or 300 seconds)")
    p.add_argument("--reduction-factor", type=float, default=D.reduction_factor)
    p.add_argument("--seeds", type=int, default=D.seeds, help="re-runs of each best config (0: none)")
    p.add_argument("--optuna-storage", help="RDB URL for the Optuna studies (default: journal file)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the base config, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--address", default=D.address, help="default: the cluster in RAY_ADDRESS "
                   "when that is set, else a private local Ray instance | local: a private one "
                   "always | auto: the cluster this machine runs, e.g. after `ray up` | "
                   "ray://host:10001 | host:6379 (a host:port where no cluster answers: exit 2 "
                   "at once)")
    p.add_argument("--max-failures", type=int, default=D.max_failures, help="retries of a crashed trial")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                   help="do not share warm-up checkpoints between trials")
    p.add_argument("--no-carry", dest="carry", action="store_false",
                   help="keep no checkpoint of unfinished trials in the durable state (for a "
                   "storage path that outlives its machines; docs/search.md, carried trials)")
    p.add_argument("--checkpoint-every", type=int, default=D.checkpoint_every)
    p.add_argument("--verbose", action="store_true", help="print every trial's epoch lines")
    p.add_argument("--time-budget", help="wall clock of the whole study, seed re-runs included "
                   "(3h, 90m, 1h30m, seconds); see docs/search.md")
    p.add_argument("--concurrent-runs", type=int,
                   help="(method, backbone) runs sharing the cluster at once (default 1: one "
                   "after another; with --resume: from now on); see docs/search.md")
    p.add_argument("--staged", action="store_true",
                   help="stage 1 tunes the base model with the plain method (sasrec); stage 2 "
                   "each other method's own params and the space's retune keys on stage 1's "
                   "best (docs/search.md); with --resume: turn a study of sasrec alone into stage 1")
    p.add_argument("--stage2-epochs", type=int, help="--staged: the epoch budget N of stage 2's "
                   "runs, which sets the importance-update schedule (default: --max-epochs); "
                   "with --resume: before stage 2 has started")
    p.add_argument("--plan-only", action="store_true",
                   help="print the study's plan (runs, trials, the epoch cost probed here or, "
                   "with --resume, the study's measured costs, what --time-budget cuts) and "
                   "exit 0: no Ray, no trial, nothing written")
    p.add_argument("--slots", type=int, help="--plan-only: trial slots to plan for (default: "
                   "this machine's CPUs / --cpus-per-trial, at most --max-concurrent)")
    p.add_argument("--status-every", type=float, help="seconds between progress summaries "
                   "(default 30 on a terminal, 120 in a log)")
    args = vars(p.parse_args(argv))
    # Numeric flags checked before anything is written (a reduction factor <= 1 would make
    # ASHA's rung list endless; a bad count would fail deep inside Ray).
    at_least = {"num_samples": 1, "max_epochs": 1, "seeds": 0, "max_failures": 0, "max_concurrent": 0,
                "checkpoint_every": 1, "concurrent_runs": 1, "grace_period": 1,
                "stage2_epochs": 1, "slots": 1}                                       # integers
    above = {"cpus_per_trial": 0, "status_every": 0, "reduction_factor": 1}         # finite floats
    for key, value in args.items():
        flag = f"--{key.replace('_', '-')} {value}"
        if value is None:
            continue
        if key in at_least and value < at_least[key]:
            p.error(f"{flag}: must be an integer >= {at_least[key]}")
        if key in above and not (math.isfinite(value) and value > above[key]):
            p.error(f"{flag}: must be a finite number > {above[key]}")
        if key == "gpus_per_trial" and not (math.isfinite(value) and value >= 0):
            p.error(f"{flag}: must be a finite number >= 0")
    if args["time_budget"] is not None:
        try:
            args["time_budget"] = parse_duration(args["time_budget"])
        except ConfigError as exc:
            p.error(str(exc))
    resume = args.pop("resume")
    plan_only, slots = args.pop("plan_only"), args.pop("slots")
    if slots is not None and not plan_only:
        p.error("--slots: only with --plan-only (a study runs on the cluster's slots)")
    concurrency = args["concurrent_runs"]
    if concurrency is None:
        args["concurrent_runs"] = D.concurrent_runs
    if args["methods"] is None:
        args["methods"] = list(D.methods)
        added = None
    else:
        added = list(dict.fromkeys(args["methods"]))
    opts = StudyOptions(**args)
    opts.extend = added if resume else None       # --resume --methods / --staged (study.main)
    opts.new_concurrency = concurrency if resume else None      # --resume --concurrent-runs
    opts.plan_only, opts.plan_slots = plan_only, slots          # --plan-only (plan.py)
    return opts, resume


def main(argv=None, prog: str | None = None) -> int:
    """``tune/search.py`` / ``ec4srec search``: 0 done, 1 every trial of a run errored, 130
    interrupted, 2 bad input. Ray is imported here, when a study runs, and not before
    (``--plan-only`` never imports it)."""
    opts, resume = parse(argv, prog)
    if opts.plan_only:
        from .plan import main as print_plan
        return print_plan(opts, resume=resume)
    from .study import main as run_study
    rc = run_study(opts, resume=resume)
    if rc == 130 and run_threads_alive():
        # Ctrl-C with --concurrent-runs: Tune stops only the main thread's fit, so the runs'
        # threads are still inside Tune, and interpreter shutdown with them running can crash
        # (SIGSEGV instead of 130: seen once in CI's driver test). Nothing is left to save
        # (those Tuners resume from their last snapshot), so end here; the processes of a
        # private local Ray end with the driver (Ray's fate sharing).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def run_threads_alive() -> bool:
    """Whether a concurrent run's thread (runs.run_concurrently, ``ec4srec-run-<i>``) runs."""
    return any(t.name.startswith(RUN_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())
