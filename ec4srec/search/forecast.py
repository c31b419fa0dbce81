"""The plan a study prints before its first trial: a probe of the epoch cost on this machine,
and from it (or from the study's own measurements, once there are any) how long each run and
the whole study would take and what ``--time-budget`` cuts. No Ray here.

Contracts:
- :func:`probe_epoch_seconds` times ``steps`` training steps of a config (after ``warmup``
  untimed ones) and one full validation pass, in this process, on the trials' thread count, and
  scales the steps to a whole epoch. It is an estimate of a plain (warm-up phase) epoch: the
  importance updates of a guided run are priced once the first one is measured. The budget's
  cost model keeps it apart from measured epochs (``CostModel.probe``) and uses it only while a
  run and every other run have no measured epoch.
- :func:`forecast` prices every run not complete at ``num_samples`` trials, each of the
  expected length (ASHA and early stopping, :meth:`Budget.trial_costs`), packed on the slots,
  plus the seed re-runs at the fraction of N unpruned trials trained; all None while nothing
  is priced. It reads the budget and changes nothing.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data import load_dataset
from ..data.batches import train_order
from ..report.results import RUN_RECORD
from ..trainer import Trainer
from .budget import Budget, hms

# Ray's share of a trial that the probe cannot time in the driver, measured on the 2-core
# development machine (the smoke study, tiny data: median first-report start-up beyond the
# epoch 6-25 s, a report ~1-2 s beyond its epoch under load): a trial actor's start (a fresh
# Python with torch) and Tune's handling of each epoch's report and checkpoint
ACTOR_START_S = 5.0
REPORT_S = 1.0


def probe_epoch_seconds(config: Config, steps: int = 10, warmup: int = 2) -> dict:
    """Seconds of one epoch of ``config`` in a trial here: ``{"epoch_s"`` (training steps,
    validation, checkpoint save and ``REPORT_S``), ``"train_s", "valid_s", "save_s",
    "startup_s"`` (loading the data and building the model, plus ``ACTOR_START_S``),
    ``"steps", "steps_per_epoch"}`` (see the module docstring). Restores torch's thread
    count."""
    threads = torch.get_num_threads()
    try:
        started = time.perf_counter()
        trainer = Trainer(config, load_dataset(config.data, download=False), log=lambda m: None)
        startup_s = time.perf_counter() - started
        tc = trainer.config.train
        order = train_order(trainer.data.train.length, tc.batch_size, np.random.default_rng(0),
                            tc.bucket_batches)
        trainer.method.on_epoch_start(1)
        trainer.model.train()
        picked = [order[i % len(order)] for i in range(warmup + steps)]
        for rows in picked[:warmup]:
            trainer.train_step(rows, 1)
        started = time.perf_counter()
        for rows in picked[warmup:]:
            loss, _ = trainer.train_step(rows, 1)
        float(loss)                                   # wait for the device
        per_step = (time.perf_counter() - started) / max(1, steps)
        started = time.perf_counter()
        trainer.validate()
        valid_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:      # a trial checkpoints every epoch
            started = time.perf_counter()
            trainer.save_checkpoint(Path(folder) / "checkpoint.pt")
            save_s = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    train_s = per_step * len(order)
    return {"epoch_s": train_s + valid_s + save_s + REPORT_S, "train_s": train_s,
            "valid_s": valid_s, "save_s": save_s, "startup_s": startup_s + ACTOR_START_S,
            "steps": steps, "steps_per_epoch": len(order)}


def forecast(budget: Budget, done: set[str] | None = None) -> dict:
    """Per run not in ``done``: its full and expected trial seconds; and the study's search,
    seed and total wall seconds on the budget's slots if every run ran all ``num_samples``
    trials (None where nothing is priced yet)."""
    done = done or set()
    runs, search, seeds, unknown = {}, 0.0, 0.0, False
    for run in budget.runs:
        if run in done:
            continue
        full = budget.cost.full_trial_seconds(run, budget.n(run), budget.updates.get(run, 0))
        expected = None if full is None else budget.trial_costs(run, full)[0]
        runs[run] = {"full_trial_s": full, "expected_trial_s": expected}
        if expected is None:
            unknown = True
            continue
        search += math.ceil(budget.num_samples / budget.slots) * expected
        cold = budget.cost.full_trial_seconds(run, budget.n(run), budget.updates.get(run, 0), cold=True)
        seeds += budget.seeds * cold * budget.cost.seed_fraction(run) / budget.slots
    total = None if unknown else search + seeds
    return {"runs": runs, "search_s": None if unknown else search,
            "seeds_s": None if unknown else seeds, "total_s": total}


def plan_lines(budget: Budget, done: set[str], probe: dict | None, probed_run: str | None,
               threads: int) -> list[str]:
    """The ``[plan]`` lines: runs, trials, epochs and seeds; the speed they are priced at;
    the unbudgeted length of the study; what the budget cuts."""
    left = [r for r in budget.runs if r not in done]
    if not left:
        return []
    ns = sorted({budget.n(r) for r in left})
    lines = [f"[plan] {len(left)} run(s) to search ({', '.join(left)}): up to "
             f"{budget.num_samples} trials each of at most {'/'.join(map(str, ns))} epochs, "
             f"{budget.slots} at a time; {budget.seeds} seed re-run(s) of each best"]
    if probe is not None:
        lines.append(f"[plan] speed: {probed_run} epoch ~{hms(probe['epoch_s'])} (probed here: "
                     f"{probe['steps']} of its {probe['steps_per_epoch']} steps and one "
                     f"validation, {threads} thread(s); start-up ~{hms(probe['startup_s'])}); "
                     f"other methods scaled by their relative "
                     f"cost; the plan is re-priced from the trials' own epochs as they report")
    fc = forecast(budget, done)
    if fc["total_s"] is None:
        lines.append("[plan] the cost is not known yet: the first trials measure it (see the "
                     "[budget] line of each run and the [study] status lines)")
        return lines
    first = fc["runs"][left[0]]
    lines.append(f"[plan] a full trial ~{hms(first['full_trial_s'])}, expected "
                 f"~{hms(first['expected_trial_s'])} with ASHA/early stopping ({left[0]}); "
                 f"without a budget the study would take ~{hms(fc['total_s'])} "
                 f"(search ~{hms(fc['search_s'])}, seeds ~{hms(fc['seeds_s'])})")
    if budget.total_s is not None:
        lines.append(budget_verdict(budget, left, fc))
    return lines


def budget_verdict(budget: Budget, left: list[str], fc: dict) -> str:
    """What ``--time-budget`` leaves of the forecast, by the budget's own rules
    (:meth:`Budget.fitting_runs`, :meth:`Budget.share_plan`: each run an equal share of the
    search time after the seed and table reserves; a run whose first trial and seeds do not
    fit is skipped): trials per run, or that it covers the study."""
    left_s = budget.total_s - budget.used()
    all_fitting = budget.fitting_runs()
    fitting = [r for r in all_fitting if r in left]
    planned = {r: budget.share_plan(r, budget.runs_left(r, all_fitting),
                                    fc["runs"][r]["expected_trial_s"], budget.clock())[1]
               for r in fitting}
    skipped = [r for r in left if r not in fitting]
    head = f"[plan] --time-budget {hms(budget.total_s)} ({hms(left_s)} left)"
    if not skipped and all(n == budget.num_samples for n in planned.values()):
        return f"{head} covers it"
    cut = ", ".join(f"{r} ~{n}" for r, n in planned.items())
    return (f"{head} cuts it: trials per run {cut or 'none'}"
            + (f"; skipped (no room for one trial and its seeds): {', '.join(skipped)}"
               if skipped else "") + " (re-planned as each run starts, from measured costs)")


def announce(opts, budget: Budget, log=print) -> None:
    """Print the study's plan before its first trial (``opts``: StudyOptions). A study with
    no measured epoch first probes its first pending run here (skipped, and said so, when the
    trials run on GPUs the driver may not have, or the run's config cannot be built yet)."""
    from .lost import describe
    from .options import run_base, run_name
    for line in describe(budget):       # training lost with a machine, not charged (lost.py)
        log(line)
    keys = opts.runs()
    # complete runs, less those the budget reopens (Budget.open_runs): those search again
    done = {run_name(k) for k in keys if (opts.exp_dir / RUN_RECORD.format(run=run_name(k))).exists()
            and not budget.reopens(run_name(k))}
    pending = [k for k in keys if run_name(k) not in done]
    probe = probed = None
    measured = any(budget.cost.epoch.values()) or budget.cost.probe
    if pending and not measured:
        key = pending[0]
        if opts.gpus_per_trial:
            log("[plan] trials run on GPUs: their speed is known after their first epochs")
        else:
            try:
                probe = probe_epoch_seconds(run_base(opts, key))
                probed = run_name(key)
                budget.cost.probe[probed] = probe["epoch_s"]
                budget.cost.probe_overhead[probed] = probe["startup_s"]
            except Exception as exc:        # noqa: BLE001 - the plan is advisory
                log(f"[plan] no probe of {run_name(key)} ({type(exc).__name__}: {exc}): the "
                    f"first trials measure the cost")
    for line in plan_lines(budget, done, probe, probed, max(1, int(opts.cpus_per_trial))):
        log(line)
