"""Build and run the search: one Tuner run per (dataset, method, backbone), then seed re-runs of
each run's best config, then the tables.

Why one Tuner per (method, backbone) and not one grid: each has its own search space (a method
searches only its own params), its own Optuna study and ASHA brackets; a run's folder is
exactly what ``Tuner.restore`` resumes, so restore stays per-study and trivially correct. The
runs go one after another, each using the whole cluster.

Experiment folder ``<storage_path>/<name>`` (``exp`` below; for an ``s3://`` storage path the
non-Ray files go to ``--local-dir``):
  study.json                the options of the study (``--resume`` reads them back; format
                            ``STUDY_VERSION``, checked by :func:`read_manifest`)
  search_space.yaml         the study's active space: every run's SearchSpace reads it, and
                            ``--resume --search-space FILE`` replaces it with a narrower one
  <dataset>-<method>-<backbone>/   Ray's run folder: trials, checkpoints, TensorBoard events
  optuna.journal            the Optuna studies (``optuna-dashboard exp/optuna.journal``)
  warmup/                   shared warm-up checkpoints (warmcache.py)
  runs/<run>.json           finished runs' trial records (written once a run is complete)
  trials/<run>/<id>.json    every ended trial's record, as it ends (durable.py: what a study
                            resumes from when its Ray folders are lost)
  trials.csv|parquet, epochs.csv|parquet, best/<run>.yaml, seeds/<run>/seed_<s>.json, seeds.csv
  report/                   paper-style tables and figures (ec4srec/report/tables.py)

Completion: a run is complete when every one of its trials is TERMINATED or ERROR; after SIGINT
``Tuner.fit`` returns with trials unfinished, and :func:`main` exits 130 printing the resume
command. Finished runs are never re-run on ``--resume``; unfinished ones are restored. A run
whose every trial errored is finished too: the tables are written, and :func:`main` names it
with its first error and exits 1.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..checkpoint import atomic_write_json, atomic_write_text, os_error_line
from ..config import dump_config
from ..registry import PLAIN
from ..report import results, tables
from . import carry, durable, plan
from .budget import Budget, hms
from .forecast import announce
# the study's options are part of its API: importable from here too (tests, benchmarks)
from .options import (SPACE_FILE, STUDY_VERSION, StudyOptions, asha_clock,  # noqa: F401
                      asha_grace, base_config, best_params, input_error, narrow_space,
                      read_manifest, run_base, run_name, write_manifest)
from .ranges import dump_ranges, load_ranges
from .resume import run_started
from .runs import Interrupted, run_concurrently, run_search
from .summary import cost_report, failed_runs, print_summary
# the seed phase (seeds.py); its helpers importable from here too (tests)
from .seeds import (SeedPhase, best_configs, seed_epochs,  # noqa: F401
                    seed_source, set_aside_stale, stale_work)
from .tuner import address_problem, cluster_slots, connect


def make_budget(opts: StudyOptions, started: float) -> Budget:
    """The study's budget on the connected cluster's slots (plan.make_budget)."""
    return plan.make_budget(opts, started, cluster_slots(opts))


def run(opts: StudyOptions) -> dict:
    """The whole study; returns a summary (paths, counts). Raises Interrupted."""
    exp = opts.exp_dir
    exp.mkdir(parents=True, exist_ok=True)
    fresh = not (exp / "study.json").exists()
    write_manifest(opts)
    active = exp / SPACE_FILE
    if active.exists():          # a resumed study (possibly narrowed by main)
        ranges = load_ranges(active)
    else:
        ranges = load_ranges(opts.search_space)
        if fresh:                # (a resumed pre-version-2 study has none and gets none: its
            atomic_write_text(active, dump_ranges(ranges))   # searchers pickled their ranges)
    # a journal copied while written can end mid-line: cut back to its last whole line once,
    # here, before any run's storage (concurrent runs write it from threads) is opened
    durable.repair_journal(exp / "optuna.journal")
    started = time.time()          # the budget counts Ray's start-up too
    connect(opts)
    budget = make_budget(opts, started)
    try:
        return _run_phases(opts, exp, ranges, budget, started)
    finally:
        budget.write()


def _run_phases(opts: StudyOptions, exp: Path, ranges, budget: Budget, started: float) -> dict:
    all_records = {}
    seed_phase = SeedPhase(opts, budget)
    if budget.total_s is not None:
        print(f"[budget] {hms(budget.total_s)} for the study ({hms(budget.used_before)} used "
              f"before), {budget.slots} trial slots", flush=True)
    announce(opts, budget, log=lambda line: print(line, flush=True))
    # a staged study runs stage 1 (the plain method) to the end before stage 2 starts from it
    keys = opts.runs()
    groups = ([[k for k in keys if opts.stage_of(k[1]) == "base"],
               [k for k in keys if opts.stage_of(k[1]) == "methods"]] if opts.staged else [keys])
    stages = [g for g in groups if g]
    for stage, group in enumerate(stages):
        if opts.staged:
            print(f"[search] --- stage {stage + 1}: "
                  f"{'the base model' if stage == 0 else 'every method on the tuned base'} ---",
                  flush=True)
        if stage == 1:                # a stage-2 run needs its backbone's stage-1 best
            missing = [k for k in group if best_params(exp, (k[0], PLAIN, k[2])) is None]
            for key in missing:
                print(f"[search] {run_name(key)}: skipped: stage 1 on {key[2]} has no finished "
                      f"trial (resume to run it once stage 1 has one)", flush=True)
            group = [k for k in group if k not in missing]
            budget.closed.update(plan.stage_one_runs(opts))   # nor shares stage 2's time
        # stage 1 never reopens once a stage-2 run has begun: its best is their base
        reopen = not (opts.staged and stage == 0 and any(
            run_started(exp, run_name(k)) for g in groups[1:] for k in g))
        if opts.concurrent_runs > 1 and len(group) > 1:
            # the last stage's tail only: an earlier stage's seed jobs would hold the next
            # stage's slots for hours
            last = stage == len(stages) - 1
            tail = seed_phase.tail_starter() if opts.seeds > 0 and last else None
            all_records.update(run_concurrently(opts, group, ranges, budget, reopen, tail))
        else:
            for key in group:
                print(f"[search] === {run_name(key)} ===", flush=True)
                all_records[run_name(key)] = (key, run_search(opts, key, ranges, budget, reopen))
    budgets = {name: opts.epochs_of(key[1]) for name, (key, _) in all_records.items()}
    trials, epochs = results.write_trial_tables(exp, all_records, budgets)
    best, best_ids, expected = best_configs(opts, all_records, trials)
    for name, config in best.items():
        atomic_write_text(exp / "best" / f"{name}.yaml", dump_config(config))
    if opts.seeds > 0:
        carry.flush()                  # the finals the last trials left are written
        seed_phase.start(best, expected, best_ids)
        seed_phase.wait()
    seeds = results.write_seed_table(exp)
    report_dir = tables.render(exp) if len(seeds) else None
    summary = {"exp": str(exp), "trials": len(trials),
               "errored": int((trials["state"] == "error").sum()) if len(trials) else 0,
               "failed_runs": failed_runs(trials),
               "warm_start": results.warm_start_savings(trials, epochs), "best": sorted(best),
               "report": str(report_dir) if report_dir else None,
               "seconds": round(time.time() - started, 1),
               "cost": cost_report(budget, trials, epochs, budgets)}
    atomic_write_json(exp / "summary.json", summary)   # of this (possibly resumed) driver run
    return summary



def main(opts: StudyOptions, resume: bool = False) -> int:
    """CLI entry: 0 done, 1 done but every trial of some run errored (one line per such run;
    tables and results written), 130 interrupted (resume command printed), 2 usage error."""
    opts.finalize()
    # before anything is written (RAY_ADDRESS is the address when --address is not given)
    if problem := address_problem(opts.address or os.environ.get("RAY_ADDRESS") or None):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        opts = plan.checked_options(opts, resume, log=lambda line: print(line, flush=True))
    except plan.PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run(opts)
    except OSError as exc:           # e.g. a --storage-path below a file, a read-only place
        if exc.filename is None:
            raise
        print(os_error_line(exc), file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"\n[search] interrupted ({str(exc) or 'SIGINT'}); completed trials are kept.\n"
              f"resume with:\n  {opts.resume_command()}", file=sys.stderr, flush=True)
        return 130
    print_summary(opts, summary)
    failed = summary.get("failed_runs") or {}
    for name, run_info in failed.items():
        print(f"error: {name}: every trial errored ({run_info['trials']}); the first: "
              f"{run_info['error']}", file=sys.stderr)
    return 1 if failed else 0
