"""One run's Tuner to completion, and several runs at once (study.py calls them).

Contracts:
- :func:`run_search` runs (or restores) one (dataset, method, backbone) run until every trial
  ended or the budget closed it, and saves its trial records to ``runs/<run>.json``; a run
  stopped short (Ctrl-C, a lost driver) raises :class:`Interrupted` and ``--resume`` goes on.
  A Ray folder Tune cannot go on from (no experiment snapshot; a restored run that creates no
  more trials) is set aside and the run continues from the durable state (durable.py).
- :func:`run_concurrently` runs several such runs in threads sharing the cluster's slots.
- :func:`grid_records` turns a ResultGrid into the plain trial records the study keeps.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from ray import tune

from ..checkpoint import atomic_write_json
from ..report.results import RUN_RECORD
from . import carry, compat, durable
from .budget import Budget, hms
from .options import RUN_THREAD_PREFIX, StudyOptions, run_name
from .resume import run_started
from .tuner import make_tuner
from .watch import say


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
                        **carry.record_params(r.config),
                        "history": history, "error": repr(error)[:500] if error else None,
                        # relative to the experiment folder (<run>/<trial folder>), never a
                        # machine's absolute path or a bucket URI
                        "path": f"{run}/{Path(str(r.path)).name}" if run else r.path})
    return records


def run_search(opts: StudyOptions, key, ranges, budget: Budget | None = None,
               reopen: bool = True, lanes: int | Callable[[], int] = 1) -> list[dict]:
    """Run (or restore) one run until complete, under ``budget`` (None: none); its records are
    saved to runs/<run>.json. A run the budget closed reopens when the budget grew
    (``Budget.reopens``), unless ``reopen`` is False."""
    done_file = opts.exp_dir / RUN_RECORD.format(run=run_name(key))
    if done_file.exists():
        done = json.loads(done_file.read_text())
        # a run whose every trial errored is not reopened: more trials would fail the same way
        if not (reopen and budget is not None and not all(r.get("error") for r in done)
                and budget.reopens(run_name(key))):
            say(f"[search] {run_name(key)}: complete, not re-run")
            return done
        # closed by a smaller budget: its trials are kept, more added
        say(f"[budget] {run_name(key)}: reopened: the budget now gives every run a larger "
              f"total, and the trials it closed this run with are kept")
        durable.reopen_run(opts.exp_dir, run_name(key))
    plan = budget.begin_run(run_name(key)) if budget else None
    if plan is not None and plan.share_s is not None:
        say(f"[budget] {run_name(key)}: share {hms(plan.share_s)}, planned "
              f"{plan.planned_trials} trials (a full trial ~{hms(plan.full_trial_s)}, expected "
              f"~{hms(plan.expected_trial_s)} with ASHA), study {hms(budget.used())} of "
              f"{hms(budget.total_s)}")
        later = [r for r in budget.runs if r not in budget.plans and r not in budget.fitting_runs()]
        if later:
            say(f"[budget] at the measured costs {', '.join(later)} do not fit with their seed "
                  f"re-runs: they will be skipped (resume with a larger --time-budget)")
    if aside := durable.drop_unsnapshotted(opts.exp_dir, run_name(key)):
        say(f"[search] {run_name(key)}: its Ray folder has no experiment snapshot (the last "
              f"driver stopped before Tune wrote one); set aside as {aside.name}, going on from "
              f"the durable state")
    restorable = tune.Tuner.can_restore(f"{opts.storage_path}/{opts.name}/{run_name(key)}")
    carried = bool(carry.read_carries(opts.exp_dir, run_name(key)))  # continued, not gated
    if plan is not None and not restorable and not carried \
            and not budget.may_start(run_name(key), count=False):
        budget.skip_run(run_name(key))
        if kept := durable.trial_records(opts.exp_dir, run_name(key)):   # it had reopened
            atomic_write_json(done_file, kept)
            say(f"[budget] {run_name(key)}: not one more trial fits in what is left of the "
                f"budget; complete with its {len(kept)} trial(s)")
            return kept
        say(f"[budget] {run_name(key)}: skipped, not one trial fits in what is left of the "
              f"budget (resume with a larger --time-budget to run it)")
        return []
    # After SIGINT, interrupted trials may look TERMINATED: a trial counts as finished when it
    # errored, is "done", or its last report shows it ended on its own (its epoch budget or
    # early stopping). The last test matters after a driver crash: a restored trial's final
    # result can arrive without Ray's "done" flag although it trained to its budget.
    def ended(m: dict) -> bool:
        return bool(m.get("done") or m.get("early_stop") or m.get("epoch", 0) >= opts.epochs_of(key[1]))
    planned = plan.planned_trials if plan else None
    while True:
        tuner, num = make_tuner(opts, key, ranges, planned, budget, lanes)
        # 0 trials: every planned trial ended under a lost driver (durable.py)
        grid, signalled = compat.tune_fit(tuner) if num > 0 else ([], False)
        carry.flush()        # its trials' carries and finals land before the folder may move
        deadline_passed = budget is not None and budget.search_over()
        # the budget ended it: the gate refused a trial, or can never admit one (its share
        # spent: a restored searcher that said FINISHED under an earlier driver never asks)
        closed = deadline_passed or (plan is not None and plan.closed_by == "budget") \
            or (budget is not None and budget.closing(run_name(key)))
        finished = sum(1 for r in grid if r.error is not None or ended(r.metrics or {}))
        short = len(grid) < num and not closed
        # a restored Tuner whose trials all ended short of its number with no Ctrl-C, deadline
        # or budget to stop it creates no more (Tune restarted it without a snapshot): the
        # durable state goes on with a fresh one
        if restorable and short and finished == len(grid) and not signalled and not deadline_passed:
            aside = durable.set_aside(opts.exp_dir, run_name(key), "stalled")
            say(f"[search] {run_name(key)}: the restored Ray run ended after {len(grid)} of its "
                  f"{num} trials and creates no more; set aside as {aside.name}, going on from "
                  f"the durable state")
            restorable = False
            continue
        # a restored Tuner holds the trial count of the driver that made it (an older ec4srec
        # made it the budget's plan): when it ended them all and the gate still admits a trial,
        # the durable state goes on with a fresh Tuner (its carried trials first)
        if restorable and not short and finished == len(grid) and not signalled \
                and not deadline_passed and plan is not None and plan.closed_by != "budget" \
                and len(durable.trial_records(opts.exp_dir, run_name(key))) < opts.num_samples \
                and budget.may_start(run_name(key), count=False):
            aside = durable.set_aside(opts.exp_dir, run_name(key), "grown")
            say(f"[search] {run_name(key)}: the restored Ray run ended its {num} trial(s) and "
                f"its share holds more: set aside as {aside.name if aside else '(not local)'}, "
                f"going on from the durable state")
            restorable, planned = False, max(1, plan.planned_trials - finished)
            continue
        break
    # a run is complete when all its trials ended, or the budget ended it: the gate refused
    # further trials (and the started ones ended), or the search deadline stopped them all
    if not deadline_passed and (finished < len(grid) or short):
        raise Interrupted(f"{run_name(key)}: {finished}/{num} trials finished")
    # plus the trials an earlier driver ended whose Ray folder is gone (durable.py)
    records = durable.merge_records(grid_records(grid, run_name(key)),
                                    durable.trial_records(opts.exp_dir, run_name(key)))
    atomic_write_json(done_file, records)
    if budget is not None:
        budget.end_run(run_name(key), deadline_passed)
    return records


def start_order(opts: StudyOptions, keys: list) -> list:
    """``keys`` in the order their runs start: the runs in progress (begun, not complete: a
    resume continues their trials) first, then the others, each group in ``keys``' order, so
    that a resume never pauses running trials behind runs that reopen or have not begun."""
    def in_progress(key) -> bool:
        name = run_name(key)
        return run_started(opts.exp_dir, name) and not (opts.exp_dir / RUN_RECORD.format(run=name)).exists()
    return sorted(keys, key=lambda k: not in_progress(k))


def run_concurrently(opts: StudyOptions, keys: list, ranges, budget: Budget | None = None,
                     reopen: bool = True,
                     on_poll: Callable[[dict, list[str]], None] | None = None) -> dict:
    """Up to ``opts.concurrent_runs`` runs at once, each its own Tuner (own Optuna study and
    ASHA brackets) in a thread of this driver, sharing the cluster's slots: each runs at most
    ceil(slots / K) trials at once (K: the runs sharing them now, running or waiting for a
    thread, read again before each trial it starts: ``make_tuner``), so when one run's ASHA
    tail leaves its slots idle, the other runs keep theirs busy, no run holds every slot while
    another waits, and the last run takes every slot once the others have ended. Runs start
    in :func:`start_order` as threads free up. Tune catches SIGINT only in the main thread:
    here Ctrl-C ends the driver (Interrupted, exit 130) and ``--resume`` restores each
    unfinished run from its last experiment snapshot, as after a killed driver. ``on_poll``
    (the seed phase's tail: seeds.SeedPhase.tail_starter) is called from this thread as it
    waits, with the runs that ended (name -> (key, records)) and those not ended, once none is
    left to start."""
    compat.serialise_ray_registry()
    keys = start_order(opts, keys)
    done: dict[str, tuple] = {}
    failures: list[BaseException] = []
    lock = threading.Lock()
    todo = list(keys)
    running = [0]

    def lanes() -> int:
        # the runs that share the slots now: running, or waiting for a thread; a run left
        # alone (the last) gets every slot, also one that started beside others
        return max(1, min(opts.concurrent_runs, running[0] + len(todo)))

    def worker() -> None:
        while True:
            with lock:
                if not todo or failures:
                    return
                key = todo.pop(0)
                running[0] += 1
            say(f"[search] === {run_name(key)} (concurrent) ===")
            try:
                records = run_search(opts, key, ranges, budget, reopen, lanes)
            except BaseException as exc:        # noqa: BLE001 - re-raised by the main thread
                with lock:
                    failures.append(exc)
                return
            with lock:
                done[run_name(key)] = (key, records)
                running[0] -= 1

    threads = [threading.Thread(target=worker, daemon=True, name=f"{RUN_THREAD_PREFIX}{i}")
               for i in range(min(opts.concurrent_runs, len(keys)))]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
            if on_poll is not None:
                with lock:
                    ended, waiting = dict(done), bool(todo)
                try:
                    if not waiting:
                        on_poll(ended, [run_name(k) for k in keys if run_name(k) not in ended])
                except Exception as exc:            # noqa: BLE001 - the search goes on without it
                    say(f"[seeds] no seed job starts beside the search's last trials: "
                        f"{type(exc).__name__}: {exc}")
                    on_poll = None
    except KeyboardInterrupt:
        raise Interrupted("SIGINT: the concurrent runs resume from their last snapshots") from None
    if failures:
        interrupted = [f for f in failures if isinstance(f, Interrupted)]
        if interrupted:
            raise Interrupted("; ".join(str(f) for f in interrupted))
        raise failures[0]
    return {run_name(k): done[run_name(k)] for k in keys}
