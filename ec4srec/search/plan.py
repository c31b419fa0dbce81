"""``tune/search.py --plan-only``: the plan of a study, priced before any compute is spent, and
the checks a study's options pass before it starts (shared with ``study.main``). No Ray here.

Contracts:
- :func:`checked_options` applies ``--resume`` (the saved options with the command line's
  allowed changes) or checks a new study's options and that its folder holds no study; it
  returns the options or raises :class:`PlanError` (the one line to print, exit 2). It writes
  nothing, except that ``--resume --search-space`` (outside ``--plan-only``) makes the narrower
  space the study's active one.
- :func:`main` (``--plan-only``) prints the ``[plan]`` lines a study prints before its first
  trial (``forecast.announce``: runs, trials, epochs, slots and seeds; the epoch cost probed
  here, or the study's measured costs on a resume; what ``--time-budget`` cuts) for
  ``--slots`` trial slots (default: this machine's CPUs / ``--cpus-per-trial``, at most
  ``--max-concurrent``), and exits 0. It starts no Ray, runs no trial and writes nothing: a
  fresh study's folder is not created, a resumed study's files are left as they are.
"""
from __future__ import annotations

import os
import time

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..registry import METHODS, is_guided
from ..report.results import SEED_RECORD
from .budget import Budget, hms
from .carry import read_all_carries, run_folder
from .finals import pending_final
from .forecast import announce
from .lost import credit_study
from .options import (SECONDS_CLOCKS, StudyOptions, asha_clock, asha_grace, base_config,
                      capped_slots, clock_scale, input_error, run_name)
from .resume import resumed_options, run_started


class PlanError(Exception):
    """A study's options cannot be used: the message is the one error line."""


def checked_options(opts: StudyOptions, resume: bool, log=print) -> StudyOptions:
    """The options a study runs with (see the module docstring); raises PlanError."""
    opts.finalize()
    manifest = opts.exp_dir / "study.json"
    if resume:
        if not manifest.exists():
            raise PlanError(f"--resume: no study at {manifest}")
        if getattr(opts, "plan_only", False) and opts.search_space is not None:
            raise PlanError("--plan-only --resume: --search-space would change the study's "
                            "active space; plan without it")
        try:
            opts = resumed_options(opts, manifest)
            carried = read_all_carries(opts.exp_dir)     # a damaged one: before anything runs
        except (ConfigError, OSError, CheckpointError) as exc:
            raise PlanError(str(exc)) from None
        log(f"[search] resuming {opts.exp_dir}" + (f" ({carried} unfinished trial(s) carried)"
                                                     if carried else ""))
        return opts
    if problem := input_error(opts):       # a typo is named even where a study exists
        raise PlanError(problem)
    if manifest.exists():
        raise PlanError(f"{opts.exp_dir} already holds a study; pass --resume or another --name")
    return opts


def make_budget(opts: StudyOptions, started: float, slots: int) -> Budget:
    """The study's budget on ``slots`` trial slots (or, without --time-budget, its cost
    bookkeeping only); a resumed study's ledger (budget.json) is read, not written, and its
    runs are credited with the training their trials lost with a machine (lost.py), and a run
    with a carried trial counts as in progress (``Budget.carrying``)."""
    names = [run_name(k) for k in opts.runs()]
    updates = {run_name(k): base_config(opts, k[1], k[2]).method.updates if is_guided(k[1]) else 0
               for k in opts.runs()}
    weights = {run_name(k): METHODS[k[1]].cost for k in opts.runs()}
    clocks = {run_name(k): asha_clock(opts, k[1]) for k in opts.runs()}
    epochs = {run_name(k): opts.epochs_of(k[1]) for k in opts.runs()}
    # the budget prices rungs in (wall) seconds or in epochs: a cpu-seconds rung as the
    # seconds of work it stands for (t threads count t CPU seconds a second)
    asha = {run: ("seconds" if clock in SECONDS_CLOCKS else clock,
                  asha_grace(opts, clock, epochs[run]) / clock_scale(opts, clock),
                  opts.reduction_factor)
            for run, clock in clocks.items() if clock}
    # the seed re-runs recorded so far (seeds.SeedPhase does not run them again), and a kept
    # final's: that job is one test (finals.py)
    seeds_done = {run: min(opts.seeds, len(list(opts.exp_dir.glob(SEED_RECORD.format(
        run=run, seed="*")))) + pending_final(opts.exp_dir, run)) for run in names}
    budget = Budget(opts.exp_dir, opts.time_budget, names, updates, epochs,
                    opts.num_samples, slots, opts.seeds, started=started,
                    concurrency=min(max(1, opts.concurrent_runs), len(names)), weights=weights,
                    asha=asha, seeds_done=seeds_done)
    credit_study(opts, budget)          # training lost with a machine is not a run's to pay
    # a run with a carried trial is in progress: the trial continues whatever the gate says
    # (checked once already by checked_options: read_all_carries)
    budget.carrying.update(run for run in names
                           if any(run_folder(opts.exp_dir, run).glob("*.json")))
    if opts.staged and any(run_started(opts.exp_dir, run_name(k)) for k in opts.runs()
                           if opts.stage_of(k[1]) == "methods"):
        budget.closed.update(stage_one_runs(opts))  # stage 2's base: never reopened (study.py)
    return budget


def local_slots(opts: StudyOptions) -> int:
    """Trial slots of this machine: its CPUs / --cpus-per-trial (GPUs / --gpus-per-trial when
    trials take GPUs), at most --max-concurrent when that is set; at least 1."""
    if opts.gpus_per_trial:
        import torch
        slots = int(torch.cuda.device_count() / opts.gpus_per_trial)
    else:
        slots = int(len(os.sched_getaffinity(0)) / max(opts.cpus_per_trial, 1e-9))
    return capped_slots(opts, slots)


def main(opts: StudyOptions, resume: bool = False) -> int:
    """``--plan-only``: 0 with the plan printed, 2 on bad input (one error line)."""
    import sys
    asked = getattr(opts, "plan_slots", None)          # a resumed study's options are new
    try:
        opts = checked_options(opts, resume)
        slots = asked or local_slots(opts)
        budget = make_budget(opts, time.time(), slots)
    except (PlanError, ConfigError, OSError) as exc:   # OSError: e.g. an unreadable ledger
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = "--slots" if asked else (
        "this machine's GPUs / --gpus-per-trial" if opts.gpus_per_trial
        else "this machine's CPUs / --cpus-per-trial")
    print(f"[plan] --plan-only: nothing is started or written; {slots} trial slot(s) ({source})",
          flush=True)
    if budget.total_s is not None:
        print(f"[budget] {hms(budget.total_s)} for the study ({hms(budget.used_before)} used "
              f"before), {budget.slots} trial slots", flush=True)
    announce(opts, budget, log=lambda line: print(line, flush=True))
    return 0


def stage_one_runs(opts: StudyOptions) -> list[str]:
    """A staged study's stage-1 runs (the plain method on each backbone)."""
    return [run_name(k) for k in opts.runs() if opts.stage_of(k[1]) == "base"]
