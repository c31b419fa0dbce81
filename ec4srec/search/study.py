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

import json
import os
import shutil
import sys
import time
from pathlib import Path

import ray

from ..checkpoint import (CheckpointError, atomic_write_json, atomic_write_text, load_torch,
                          os_error_line)
from ..config import Config, dump_config
from ..trainer import CHECKPOINT
from ..registry import PLAIN
from ..report import results, tables
from . import carry, durable, finals, plan
from .budget import Budget, hms
from .carry import SEED_WORK
from .forecast import announce
# the study's options are part of its API: importable from here too (tests, benchmarks)
from .options import (SPACE_FILE, STUDY_VERSION, StudyOptions, asha_clock,  # noqa: F401
                      asha_grace, base_config, best_params, input_error, narrow_space,
                      read_manifest, run_base, run_name, write_manifest)
from .ranges import dump_ranges, load_ranges
from .space import apply_params
from .resume import run_started
from .runs import Interrupted, run_concurrently, run_search
from .summary import cost_report, failed_runs, print_summary
from .trainable import retrain_seed
from .tuner import address_problem, cluster_slots, connect


def run_seeds(opts: StudyOptions, best: dict[str, Config], expected_epochs: dict[str, int],
              budget: Budget | None = None, best_ids: dict[str, str] | None = None) -> None:
    """Re-train each best config with ``opts.seeds`` seeds and test once each, as Ray tasks;
    seeds already recorded in seeds/<run>/seed_<s>.json are skipped. Each job checkpoints in
    its work folder under ``carried/`` (:data:`SEED_WORK`: part of the durable state, so a
    resume on a new machine continues it), removed once its record is written. Under a time budget a
    seed job starts only if it can end before the study's deadline (``expected_epochs``: what
    the best trial trained); the ones that cannot are skipped and listed in the cost report.
    The first seed of a run whose best trial (``best_ids``) ended on its own with that seed is
    that trial, tested from its final checkpoint (finals.py), never skipped for the budget;
    the final goes once that record is written. A record of another config (the run's best
    changed since it was written: a resume searched on) is set aside and the seed runs again
    (:func:`set_aside_stale`)."""
    for name in best:                    # a final whose seed is recorded has done its job
        finals.drop_spent(opts.exp_dir, name)
    task = ray.remote(retrain_seed).options(num_cpus=opts.cpus_per_trial,
                                            num_gpus=opts.gpus_per_trial or 0, max_retries=2)
    slots = [0.0] * (budget.slots if budget else 1)      # when each slot is free (planning)
    pending = {}
    for i in range(opts.seeds):                          # seed-major: every run gets seed 1 first
        for name, config in best.items():
            seed = config.train.seed + i
            out = opts.exp_dir / results.SEED_RECORD.format(run=name, seed=seed)
            if out.exists() and not set_aside_stale(out, name, seed, config):
                continue
            work = opts.exp_dir / SEED_WORK.format(run=name, seed=seed)
            source = seed_source(opts.exp_dir, name, seed, config, (best_ids or {}).get(name), work)
            if budget is not None and source == "final":        # a final costs one test
                budget.seed_log.append({"run": name, "seed": seed, "state": "started",
                                        "from_trial": (best_ids or {}).get(name)})
            elif budget is not None:
                slot = min(range(len(slots)), key=slots.__getitem__)
                fits, end = budget.seed_fits(name, expected_epochs.get(name, config.train.epochs),
                                             slots[slot])
                budget.seed_log.append({"run": name, "seed": seed,
                                        "state": "started" if fits else "skipped: over budget"})
                if not fits:
                    print(f"[seeds] {name} seed {seed}: skipped, it cannot end within the "
                          f"time budget", flush=True)
                    continue
                slots[slot] = end
            pending[task.remote(config.to_dict(), seed, str(work))] = (name, seed, out, work)
    total = len(pending)
    if total:
        print(f"[seeds] {total} seed re-run(s) of {len(best)} best config(s) started; each "
              f"trains to early stopping and is tested once", flush=True)
    while pending:
        [ref], _ = ray.wait(list(pending))
        name, seed, out, work = pending.pop(ref)
        record = ray.get(ref)
        atomic_write_json(out, record)
        shutil.rmtree(work, ignore_errors=True)
        finals.drop_spent(opts.exp_dir, name)
        print(f"[seeds] {name} seed {seed}: test ndcg@10 {record['test']['ndcg@10']:.4f} "
              f"({total - len(pending)}/{total})", flush=True)


def seed_source(exp: Path, name: str, seed: int, config: Config, best_id: str | None,
                work: Path) -> str:
    """Where the seed job of ``name`` in ``work`` starts, said in one line: "final" (its best
    trial's final checkpoint, tested, not trained: finals.py), "carried" (its own checkpoint,
    from a driver that lost it) or "scratch"."""
    why, job = "", config.to_dict()
    job["train"]["seed"] = seed
    if (work / CHECKPOINT).is_file() and (stale := stale_work(work, job)):
        shutil.rmtree(work, ignore_errors=True)
        print(f"[seeds] {name} seed {seed}: its work folder is another config's ({stale}: the "
              f"run's best changed since): started again", flush=True)
    if not (work / CHECKPOINT).is_file():
        why = finals.seed_from_final(exp, name, best_id, config.to_dict(), seed, work)
    if (work / finals.FROM_TRIAL).is_file():
        print(f"[seeds] {name} seed {seed}: its best trial {best_id} ended on its own with this "
              f"config and seed: tested from its final checkpoint, not re-trained", flush=True)
        return "final"
    if (work / CHECKPOINT).is_file():
        print(f"[seeds] {name} seed {seed}: continues from its carried checkpoint", flush=True)
        return "carried"
    if why:
        print(f"[seeds] {name} seed {seed}: re-trained: {why}", flush=True)
    return "scratch"


def stale_work(work: Path, job: dict) -> str | None:
    """Why the checkpoint in a seed job's work folder is not this job's (its config differs from
    ``job`` in a key that changes numbers, finals.NOT_NUMERIC aside; or it cannot be read),
    None when it is."""
    try:
        saved = load_torch(work / CHECKPOINT)["config"]
    except (CheckpointError, KeyError, TypeError):
        return "unreadable"
    differ = finals.config_mismatch(saved, job)
    return f"{', '.join(differ[:4])} differ" if differ else None


STALE_SEEDS = "stale"     # seeds/<run>/stale/: records of a config no longer the run's best


def set_aside_stale(out: Path, name: str, seed: int, config: Config) -> bool:
    """Move the seed record ``out`` to ``seeds/<run>/stale/`` (as ``seed_<s>.<n>.json``, the first
    free n: kept, never read by the tables) when its ``config`` differs from the seed job of
    ``config`` in a key that changes numbers (finals.NOT_NUMERIC aside); True when it went.
    A record without a config (written before records held one) or unreadable is kept."""
    try:
        saved = json.loads(Path(out).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(saved, dict):
        return False
    job = config.to_dict()
    job["train"]["seed"] = seed
    if not (differ := finals.config_mismatch(saved, job)):
        return False
    folder = Path(out).parent / STALE_SEEDS
    n = 1
    while (folder / f"seed_{seed}.{n}.json").exists():
        n += 1
    folder.mkdir(parents=True, exist_ok=True)
    Path(out).rename(folder / f"seed_{seed}.{n}.json")
    print(f"[seeds] {name} seed {seed}: its record is another config's ({', '.join(differ[:4])} "
          f"differ: the run's best changed since): set aside in {folder.name}/, run again",
          flush=True)
    return True


def seed_epochs(trials, run: str, patience: int, n: int) -> int:
    """The epochs a seed re-run of ``run``'s best config is expected to train (the seed phase's
    budget prices it so): it trains to early stopping, so at least the best trial's best epoch
    plus ``patience``, its own length when it ran further, and the median length of the run's
    early-stopped trials; at most N. (The best trial's length alone undercounts when ASHA or
    the deadline cut it: on Beauty a trial cut after 11 epochs gave seeds of 40.)"""
    rows = trials[trials["run"] == run]
    best = rows[rows["trial_id"].astype(str) == results.best_trial_id(trials, run)]
    if not len(best):
        return n
    stopped = rows[rows["state"] == "early_stopped"]["epochs"]
    guesses = [int(best["epochs"].iloc[0]), int(best["best_epoch"].iloc[0]) + patience,
               int(stopped.median()) if len(stopped) else 0]
    return min(n, max(guesses))


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
    if budget.total_s is not None:
        print(f"[budget] {hms(budget.total_s)} for the study ({hms(budget.used_before)} used "
              f"before), {budget.slots} trial slots", flush=True)
    announce(opts, budget, log=lambda line: print(line, flush=True))
    # a staged study runs stage 1 (the plain method) to the end before stage 2 starts from it
    keys = opts.runs()
    groups = ([[k for k in keys if opts.stage_of(k[1]) == "base"],
               [k for k in keys if opts.stage_of(k[1]) == "methods"]] if opts.staged else [keys])
    for stage, group in enumerate(g for g in groups if g):
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
            all_records.update(run_concurrently(opts, group, ranges, budget, reopen))
        else:
            for key in group:
                print(f"[search] === {run_name(key)} ===", flush=True)
                all_records[run_name(key)] = (key, run_search(opts, key, ranges, budget, reopen))
    budgets = {name: opts.epochs_of(key[1]) for name, (key, _) in all_records.items()}
    trials, epochs = results.write_trial_tables(exp, all_records, budgets)
    best, best_ids = {}, {}
    for name, (key, records) in all_records.items():
        best_id = results.best_trial_id(trials, name)
        if best_id is None:
            continue
        best_ids[name] = best_id
        params = next(r["params"] for r in records if str(r["trial_id"]) == best_id)
        config = apply_params(run_base(opts, key), params)
        config.train.progress, config.train.tensorboard = "auto", True
        best[name] = config
        atomic_write_text(exp / "best" / f"{name}.yaml", dump_config(config))
    if opts.seeds > 0:
        carry.flush()                  # the finals the last trials left are written
        expected = {name: seed_epochs(trials, name, config.train.patience, budgets[name])
                    for name, config in best.items()}
        run_seeds(opts, best, expected, budget, best_ids)
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
