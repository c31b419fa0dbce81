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
import sys
import threading
import time
from pathlib import Path

import ray
from ray import tune

from ..checkpoint import atomic_write_json, atomic_write_text, os_error_line
from ..config import Config, ConfigError, dump_config
from ..registry import METHODS, PLAIN, is_guided
from ..report import results, tables
from . import compat, durable
from .budget import Budget, hms
from .forecast import announce
# the study's options are part of its API: importable from here too (tests, benchmarks)
from .options import (SPACE_FILE, STUDY_VERSION, StudyOptions, asha_clock,  # noqa: F401
                      asha_grace, base_config, best_params, input_error, narrow_space,
                      read_manifest, run_base, run_name, write_manifest)
from .ranges import dump_ranges, load_ranges
from .space import apply_params
from .resume import resumed_options, run_started
from .summary import cost_report, failed_runs, print_summary
from .trainable import retrain_seed
from .tuner import address_problem, cluster_slots, connect, make_tuner


class Interrupted(Exception):
    """The study stopped before every run finished."""


def grid_records(grid, run: str | None = None) -> list[dict]:
    """Plain per-trial records (params, per-epoch history, error) of a ResultGrid."""
    records = []
    for r in grid:
        df = r.metrics_dataframe
        history = [] if df is None else json.loads(df.to_json(orient="records", double_precision=15))
        last = r.metrics or {}
        # a trial stopped (by the budget) before its first report has no result files, which
        # Ray reports as an error: it is a trial without history, not a failed one
        error = r.error
        if error is not None and not history and isinstance(error, FileNotFoundError) \
                and "Could not fetch metrics" in str(error):
            error = None
        records.append({"trial_id": last.get("trial_id") or Path(r.path).name,
                        "params": r.config or {},
                        "history": history, "error": repr(error)[:500] if error else None,
                        # relative to the experiment folder (<run>/<trial folder>), never a
                        # machine's absolute path or a bucket URI
                        "path": f"{run}/{Path(str(r.path)).name}" if run else r.path})
    return records


def run_search(opts: StudyOptions, key, ranges, budget: Budget | None = None,
               reopen: bool = True) -> list[dict]:
    """Run (or restore) one run until complete, under ``budget`` (None: none); its records are
    saved to runs/<run>.json. A run the budget closed reopens when the budget grew
    (``Budget.reopens``), unless ``reopen`` is False."""
    done_file = opts.exp_dir / "runs" / f"{run_name(key)}.json"
    if done_file.exists():
        done = json.loads(done_file.read_text())
        # a run whose every trial errored is not reopened: more trials would fail the same way
        if not (reopen and budget is not None and not all(r.get("error") for r in done)
                and budget.reopens(run_name(key))):
            print(f"[search] {run_name(key)}: complete, not re-run", flush=True)
            return done
        # closed by a smaller budget: its trials are kept, more added
        print(f"[budget] {run_name(key)}: reopened: the budget now gives every run a larger "
              f"total, and the trials it closed this run with are kept", flush=True)
        durable.reopen_run(opts.exp_dir, run_name(key))
    plan = budget.begin_run(run_name(key)) if budget else None
    if plan is not None and plan.share_s is not None:
        print(f"[budget] {run_name(key)}: share {hms(plan.share_s)}, planned "
              f"{plan.planned_trials} trials (a full trial ~{hms(plan.full_trial_s)}, expected "
              f"~{hms(plan.expected_trial_s)} with ASHA), study {hms(budget.used())} of "
              f"{hms(budget.total_s)}", flush=True)
        later = [r for r in budget.runs if r not in budget.plans and r not in budget.fitting_runs()]
        if later:
            print(f"[budget] at the measured costs {', '.join(later)} do not fit with their seed "
                  f"re-runs: they will be skipped (resume with a larger --time-budget)", flush=True)
    restorable = tune.Tuner.can_restore(f"{opts.storage_path}/{opts.name}/{run_name(key)}")
    if plan is not None and not restorable and not budget.may_start(run_name(key), count=False):
        print(f"[budget] {run_name(key)}: skipped, not one trial fits in what is left of the "
              f"budget (resume with a larger --time-budget to run it)", flush=True)
        budget.skip_run(run_name(key))
        return []
    tuner, num = make_tuner(opts, key, ranges, plan.planned_trials if plan else None, budget)
    # 0 trials: every planned trial ended under a lost driver (durable.py)
    grid = compat.tune_fit(tuner) if num > 0 else []
    deadline_passed = budget is not None and budget.search_over()
    closed = deadline_passed or (plan is not None and plan.closed_by == "budget")
    # After SIGINT, interrupted trials may look TERMINATED: a trial counts as finished when it
    # errored, is "done", or its last report shows it ended on its own (its epoch budget or
    # early stopping). The last test matters after a driver crash: a restored trial's final
    # result can arrive without Ray's "done" flag although it trained to its budget.
    def ended(m: dict) -> bool:
        return bool(m.get("done") or m.get("early_stop") or m.get("epoch", 0) >= opts.epochs_of(key[1]))
    finished = sum(1 for r in grid if r.error is not None or ended(r.metrics or {}))
    # a run is complete when all its trials ended, or the budget ended it: the gate refused
    # further trials (and the started ones ended), or the search deadline stopped them all
    if not deadline_passed and (finished < len(grid) or (len(grid) < num and not closed)):
        raise Interrupted(f"{run_name(key)}: {finished}/{num} trials finished")
    # plus the trials an earlier driver ended whose Ray folder is gone (durable.py)
    records = durable.merge_records(grid_records(grid, run_name(key)),
                                    durable.trial_records(opts.exp_dir, run_name(key)))
    atomic_write_json(done_file, records)
    if budget is not None:
        budget.end_run(run_name(key), deadline_passed)
    return records


def run_concurrently(opts: StudyOptions, keys: list, ranges, budget: Budget | None = None,
                     reopen: bool = True) -> dict:
    """Up to ``opts.concurrent_runs`` runs at once, each its own Tuner (own Optuna study and
    ASHA brackets) in a thread of this driver, sharing the cluster's slots: when one run's ASHA
    tail leaves slots idle, another run's trials take them. Runs start in ``opts.runs()`` order
    as threads free up. Tune catches SIGINT only in the main thread: here Ctrl-C ends the
    driver (Interrupted, exit 130) and ``--resume`` restores each unfinished run from its last
    experiment snapshot, as after a killed driver."""
    compat.serialise_ray_registry()
    keys = list(keys)
    done: dict[str, tuple] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    todo = list(keys)

    def worker() -> None:
        while True:
            with lock:
                if not todo or failures:
                    return
                key = todo.pop(0)
            print(f"[search] === {run_name(key)} (concurrent) ===", flush=True)
            try:
                records = run_search(opts, key, ranges, budget, reopen)
            except BaseException as exc:        # noqa: BLE001 - re-raised by the main thread
                with lock:
                    failures.append(exc)
                return
            with lock:
                done[run_name(key)] = (key, records)

    threads = [threading.Thread(target=worker, daemon=True, name=f"ec4srec-run-{i}")
               for i in range(min(opts.concurrent_runs, len(keys)))]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
    except KeyboardInterrupt:
        raise Interrupted("SIGINT: the concurrent runs resume from their last snapshots") from None
    if failures:
        interrupted = [f for f in failures if isinstance(f, Interrupted)]
        if interrupted:
            raise Interrupted("; ".join(str(f) for f in interrupted))
        raise failures[0]
    return {run_name(k): done[run_name(k)] for k in keys}


def run_seeds(opts: StudyOptions, best: dict[str, Config], expected_epochs: dict[str, int],
              budget: Budget | None = None) -> None:
    """Re-train each best config with ``opts.seeds`` seeds and test once each, as Ray tasks;
    seeds already recorded in seeds/<run>/seed_<s>.json are skipped. Under a time budget a
    seed job starts only if it can end before the study's deadline (``expected_epochs``: what
    the best trial trained); the ones that cannot are skipped and listed in the cost report."""
    task = ray.remote(retrain_seed).options(num_cpus=opts.cpus_per_trial,
                                            num_gpus=opts.gpus_per_trial or 0, max_retries=2)
    slots = [0.0] * (budget.slots if budget else 1)      # when each slot is free (planning)
    pending = {}
    for i in range(opts.seeds):                          # seed-major: every run gets seed 1 first
        for name, config in best.items():
            seed = config.train.seed + i
            out = opts.exp_dir / "seeds" / name / f"seed_{seed}.json"
            if out.exists():
                continue
            if budget is not None:
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
            pending[task.remote(config.to_dict(), seed)] = (name, seed, out)
    total = len(pending)
    if total:
        print(f"[seeds] {total} seed re-run(s) of {len(best)} best config(s) started; each "
              f"trains to early stopping and is tested once", flush=True)
    while pending:
        [ref], _ = ray.wait(list(pending))
        name, seed, out = pending.pop(ref)
        record = ray.get(ref)
        atomic_write_json(out, record)
        print(f"[seeds] {name} seed {seed}: test ndcg@10 {record['test']['ndcg@10']:.4f} "
              f"({total - len(pending)}/{total})", flush=True)


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
    """The study's budget (or, without --time-budget, its cost bookkeeping only)."""
    names = [run_name(k) for k in opts.runs()]
    updates = {run_name(k): base_config(opts, k[1], k[2]).method.updates if is_guided(k[1]) else 0
               for k in opts.runs()}
    weights = {run_name(k): METHODS[k[1]].cost for k in opts.runs()}
    clocks = {run_name(k): asha_clock(opts, k[1]) for k in opts.runs()}
    epochs = {run_name(k): opts.epochs_of(k[1]) for k in opts.runs()}
    asha = {run: (clock, asha_grace(opts, clock, epochs[run]), opts.reduction_factor)
            for run, clock in clocks.items() if clock}
    return Budget(opts.exp_dir, opts.time_budget, names, updates, epochs,
                  opts.num_samples, cluster_slots(opts), opts.seeds, started=started,
                  concurrency=min(max(1, opts.concurrent_runs), len(names)), weights=weights,
                  asha=asha)


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
    best = {}
    for name, (key, records) in all_records.items():
        best_id = results.best_trial_id(trials, name)
        if best_id is None:
            continue
        params = next(r["params"] for r in records if str(r["trial_id"]) == best_id)
        config = apply_params(run_base(opts, key), params)
        config.train.progress, config.train.tensorboard = "auto", True
        best[name] = config
        atomic_write_text(exp / "best" / f"{name}.yaml", dump_config(config))
    if opts.seeds > 0:
        expected = {name: seed_epochs(trials, name, config.train.patience, budgets[name])
                    for name, config in best.items()}
        run_seeds(opts, best, expected, budget)
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
    manifest = opts.exp_dir / "study.json"
    if resume:
        if not manifest.exists():
            print(f"error: --resume: no study at {manifest}", file=sys.stderr)
            return 2
        try:
            opts = resumed_options(opts, manifest)
        except (ConfigError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"[search] resuming {opts.exp_dir}", flush=True)
    elif problem := input_error(opts):       # a typo is named even where a study exists
        print(f"error: {problem}", file=sys.stderr)
        return 2
    elif manifest.exists():
        print(f"error: {opts.exp_dir} already holds a study; pass --resume or another --name",
              file=sys.stderr)
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
