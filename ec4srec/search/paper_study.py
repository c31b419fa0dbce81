"""The whole paper study on a GPU cluster: Table 3 (four datasets, six methods, SASRec) and
Table 4 (Beauty, Clothing, Sports with GRU4Rec and Caser), each (dataset, backbone) one
budgeted study, then the report of each.

    ray up cluster.yaml
    ray exec cluster.yaml "cd ec4srec && python tune/paper_study.py --storage-path /efs/ray_results \\
        --data-dir /efs/data --budget-per-run 2h --gpus 8"
    python tune/paper_study.py --dry-run --gpus 8              # the plan only, nothing trained

Each study is ``tune/search.py --dataset D --backbones B --methods <all six> --time-budget
(6 x --budget-per-run) --gpus-per-trial G --concurrent-runs 2`` followed by ``tune/report.py``;
a study already finished is skipped and an interrupted one resumed (``--resume``), so the
script can simply be run again. ``--dry-run`` prints the plan: the studies, their commands,
trials per run (from ``--cost-model``, a ``budget.json`` of an earlier study on the same
hardware, when given) and the GPU-hours the budgets bound: ``budget x GPUs`` per study (a
study never runs past its --time-budget by more than 10 %), and beside that bound an estimate
from the CPU costs this project measured (``--costs``, ``results/costs/paper-costs.json`` by
default) scaled by a GPU factor it states, measured or assumed (paper_estimate.py).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from ..config import METHODS, ConfigError
from . import paper_estimate
from .budget import hms, parse_duration
from .options import StudyOptions

ROOT = Path(__file__).resolve().parents[2]      # the checkout: tune/search.py, tune/report.py

TABLE3 = [(d, "sasrec") for d in ("beauty", "clothing", "sports", "ml-1m")]
TABLE4 = [(d, b) for b in ("gru4rec", "caser") for d in ("beauty", "clothing", "sports")]


def plan(args) -> list[dict]:
    """One entry per study: dataset, backbone, name, budget (s), the commands, the estimate."""
    try:
        per_run = parse_duration(args.budget_per_run)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--time-budget", "--budget-per-run")) from None
    args.storage_path = str(Path(args.storage_path).expanduser())
    costs = json.loads(Path(args.cost_model).read_text())["cost_model"]["runs"] \
        if args.cost_model else {}
    slots = max(1, int(args.gpus / args.gpus_per_trial))
    studies = []
    for dataset, backbone in [*TABLE3, *TABLE4]:
        if args.datasets and dataset not in args.datasets:
            continue
        name = f"paper-{dataset}-{backbone}"
        budget = per_run * len(METHODS)
        search = ["python", "tune/search.py", "--dataset", dataset, "--backbones", backbone,
                  "--methods", *METHODS, "--time-budget", f"{int(budget)}s",
                  "--max-epochs", str(args.max_epochs), "--num-samples", str(args.num_samples),
                  "--gpus-per-trial", str(args.gpus_per_trial), "--concurrent-runs", "2",
                  "--storage-path", args.storage_path, "--name", name]
        if args.data_dir:
            search += ["--data-dir", args.data_dir]
        report = ["python", "tune/report.py", "--experiment", f"{args.storage_path}/{name}"]
        trials = {}
        for method in METHODS:
            cost = costs.get(f"{dataset}-{method}-{backbone}")
            if cost and cost.get("epoch_s"):
                expected = cost["epoch_s"] * args.max_epochs * 0.5      # ASHA prior: half of N
                trials[method] = max(1, min(args.num_samples, int(per_run * slots / expected)))
        estimate = None if args.measured is None else paper_estimate.estimate(
            args.measured, dataset, backbone, epochs=args.max_epochs, per_run_s=per_run,
            slots=slots, num_samples=args.num_samples, seeds=StudyOptions.seeds,
            gpus_per_trial=args.gpus_per_trial, factor=args.factor)
        studies.append({"dataset": dataset, "backbone": backbone, "name": name, "budget_s": budget,
                        "gpu_hours": budget * args.gpus / 3600, "trials": trials,
                        "estimate": estimate, "search": search, "report": report})
    return studies


def measured_costs(args) -> None:
    """``args.measured`` (the costs file's tables, None without one) and ``args.factor`` /
    ``args.factor_source`` (paper_estimate.gpu_factor)."""
    path = Path(args.costs) if args.costs else paper_estimate.COSTS
    args.costs_path = path
    args.measured = paper_estimate.load_costs(path) if args.costs or path.exists() else None
    args.factor, args.factor_source = paper_estimate.gpu_factor(args.gpu_factor)


def estimate_lines(s: dict, args) -> list[str]:
    """A study's estimate from measured costs, per method, under its bound."""
    est = s["estimate"]
    if est is None:
        return []
    parts = [f"{m} {r['trials']}+{StudyOptions.seeds} x {hms(r['trial_s'])}"
             for m, r in est["methods"].items() if r is not None]
    bound = min(est["gpu_hours"], s["gpu_hours"])
    line = (f"  estimate ~{bound:.1f} GPU-hours from measured costs "
            f"(trials+seeds x expected trial on its GPU share: {', '.join(parts) or 'none'})")
    if est["missing"]:
        line += f"; not measured: {', '.join(est['missing'])} (benchmarks/paper_costs.py)"
    return [line]


def print_plan(studies: list[dict], args) -> None:
    total = sum(s["gpu_hours"] for s in studies)
    print(f"paper study: {len(studies)} studies x {len(METHODS)} methods, N = {args.max_epochs}, "
          f"up to {args.num_samples} trials per run, {args.gpus} GPUs x "
          f"{1 / args.gpus_per_trial:g} trials each")
    for s in studies:
        trials = (", ".join(f"{m} ~{n}" for m, n in s["trials"].items()) if s["trials"]
                  else "as the estimate below prices them" if s["estimate"]
                  else f"up to {args.num_samples} per run (no --cost-model: not measured yet)")
        print(f"\n[{s['name']}] budget {hms(s['budget_s'])}, at most {s['gpu_hours']:.1f} GPU-hours; "
              f"trials: {trials}")
        for line in estimate_lines(s, args):
            print(line)
        print("  " + shlex.join(s["search"]))
        print("  " + shlex.join(s["report"]))
    print(f"\ntotal: at most {total:.1f} GPU-hours ({sum(s['budget_s'] for s in studies) / 3600:.1f} h "
          f"of wall clock, studies one after another)")
    if args.measured is None:
        print(f"estimate: no measured costs ({args.costs_path} is missing: run "
              f"benchmarks/paper_costs.py)")
        return
    estimated = sum(min(s["estimate"]["gpu_hours"], s["gpu_hours"]) for s in studies)
    print(f"estimate: ~{estimated:.1f} GPU-hours from the CPU costs in {args.costs_path.name} "
          f"(one thread, measured {args.measured.get('date', '?')} at commit "
          f"{args.measured.get('commit', '?')}) divided by a GPU factor of {args.factor:g}, "
          f"{args.factor_source}; a trial trains {paper_estimate.PRIOR_FRACTION:g} x N epochs "
          f"(the ASHA prior) and a packed trial is assumed to keep its solo speed")


def run(studies: list[dict], args) -> int:
    def call(cmd: list[str]) -> int:          # the printed "python" is this interpreter
        return subprocess.call([sys.executable, *cmd[1:]], cwd=ROOT)
    for s in studies:
        exp = Path(args.storage_path).expanduser() / s["name"]
        if (exp / "summary.json").exists():
            print(f"[paper-study] {s['name']}: finished, skipped", flush=True)
        else:
            cmd = s["search"] + (["--resume"] if (exp / "study.json").exists() else [])
            if "--resume" in cmd:    # a resumed study reads its options from study.json
                cmd = ["python", "tune/search.py", "--storage-path", args.storage_path,
                       "--name", s["name"], "--resume"]
            rc = call(cmd)
            if rc != 0:
                print(f"[paper-study] {s['name']}: search.py exited {rc}; run this script again "
                      f"to resume", file=sys.stderr)
                return rc
        rc = call(s["report"])
        if rc != 0:
            return rc
    return 0


def main(argv=None, prog: str | None = None) -> int:
    """``tune/paper_study.py`` / ``ec4srec paper-study``: 0 done (or planned), else the failing
    step's status."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    p.add_argument("--storage-path", default="~/ray_results")
    p.add_argument("--data-dir")
    p.add_argument("--datasets", nargs="+", help="a subset of beauty clothing sports ml-1m")
    p.add_argument("--budget-per-run", default="2h", help="time per (method, backbone) run")
    p.add_argument("--max-epochs", type=int, default=150)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--gpus", type=float, default=8, help="GPUs the cluster has (for the estimate)")
    p.add_argument("--gpus-per-trial", type=float, default=0.25)
    p.add_argument("--cost-model", help="budget.json of an earlier study on the same hardware")
    p.add_argument("--costs", help="measured CPU costs (default: results/costs/paper-costs.json, "
                                   "written by benchmarks/paper_costs.py)")
    p.add_argument("--gpu-factor", type=float, help="GPU speed-up of a trial over one CPU "
                   "thread (default: results/costs/gpu-factor.json if measured, else assumed)")
    args = p.parse_args(argv)
    try:
        measured_costs(args)
        studies = plan(args)
    except (ConfigError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_plan(studies, args)
    return 0 if args.dry_run else run(studies, args)
