"""The seed phase of a study: each run's best config re-trained with ``--seeds`` seeds to early
stopping and tested once, as Ray tasks (docs/search.md, "Seed re-runs").

Contracts:
- :class:`SeedPhase` starts the jobs (:meth:`SeedPhase.start`, seed-major, each (run, seed)
  once per driver) and waits for them (:meth:`SeedPhase.wait`), writing each record as it
  lands. ``start`` may be called more than once: by the search's tail (below) with the
  complete runs and a cap on the jobs, then by the driver with every run's best.
- The search's tail (:meth:`SeedPhase.tail_starter`, called by ``runs.run_concurrently`` as it
  polls): once every run of the stage has either ended or been refused a new trial by the
  budget's gate (``Budget.closing``: it starts no trial again in this driver), the slots its
  last trials leave free take seed jobs of the runs that have ended, one per free slot (the
  budget's slots less the trials Tune has not ended in the runs still searching, pending ones
  included: ``Budget.unfinished``, and the seed jobs running; at most Ray's free resources),
  instead of idling until the last trial ends.
- :func:`best_configs`: each run's best config (validation only), its trial id and the
  epochs its seed jobs are expected to train: one rule for the tail and the driver.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import ray

from ..checkpoint import CheckpointError, atomic_write_json, load_torch
from ..config import Config
from ..report import results
from ..trainer import CHECKPOINT
from . import carry, finals
from .budget import Budget
from .carry import SEED_WORK
from .options import StudyOptions, run_base
from .space import apply_params
from .trainable import retrain_seed


class SeedPhase:
    """The seed re-runs of one driver (module contract)."""

    TAIL_EVERY = 10.0       # seconds between two looks at the free slots during the search's tail

    def __init__(self, opts: StudyOptions, budget: Budget | None = None):
        self.opts, self.budget = opts, budget
        self.task = ray.remote(retrain_seed).options(num_cpus=opts.cpus_per_trial,
                                                     num_gpus=opts.gpus_per_trial or 0,
                                                     max_retries=2)
        self.slots = [0.0] * (budget.slots if budget else 1)   # when each slot is free (planning)
        self.pending: dict = {}
        self.decided: set[tuple[str, int]] = set()              # started, skipped or recorded
        self.total = 0
        self.dropped: set[str] = set()
        self._tail_checked = 0.0

    def start(self, best: dict[str, Config], expected_epochs: dict[str, int],
              best_ids: dict[str, str] | None = None, limit: int | None = None) -> int:
        """Start the seed jobs of ``best`` not decided yet, at most ``limit`` (module
        contract); returns how many started. Seeds already recorded in seeds/<run>/seed_<s>.json
        are skipped. Each job checkpoints in its work folder under ``carried/``
        (:data:`SEED_WORK`: part of the durable state, so a resume on a new machine continues
        it), removed once its record is written. Under a time budget a seed job starts only if
        it can end before the study's deadline (``expected_epochs``: what the best trial
        trained); the ones that cannot are skipped and listed in the cost report. The first
        seed of a run whose best trial (``best_ids``) ended on its own with that seed is that
        trial, tested from its final checkpoint (finals.py), never skipped for the budget; the
        final goes once that record is written. A record of another config (the run's best
        changed since it was written: a resume searched on) is set aside and the seed runs
        again (:func:`set_aside_stale`)."""
        opts, budget, started = self.opts, self.budget, 0
        for name in set(best) - self.dropped:      # a final whose seed is recorded: done
            finals.drop_spent(opts.exp_dir, name)
            self.dropped.add(name)
        for i in range(opts.seeds):                # seed-major: every run gets seed 1 first
            for name, config in best.items():
                seed = config.train.seed + i
                if (name, seed) in self.decided or (limit is not None and started >= limit):
                    continue
                out = opts.exp_dir / results.SEED_RECORD.format(run=name, seed=seed)
                if out.exists() and not set_aside_stale(out, name, seed, config):
                    self.decided.add((name, seed))
                    continue
                self.decided.add((name, seed))
                work = opts.exp_dir / SEED_WORK.format(run=name, seed=seed)
                best_id = (best_ids or {}).get(name)
                source = seed_source(opts.exp_dir, name, seed, config, best_id, work)
                if budget is not None and source == "final":        # a final costs one test
                    budget.seed_log.append({"run": name, "seed": seed, "state": "started",
                                            "from_trial": best_id})
                elif budget is not None:
                    slot = min(range(len(self.slots)), key=self.slots.__getitem__)
                    fits, end = budget.seed_fits(
                        name, expected_epochs.get(name, config.train.epochs), self.slots[slot])
                    budget.seed_log.append({"run": name, "seed": seed,
                                            "state": "started" if fits else "skipped: over budget"})
                    if not fits:
                        print(f"[seeds] {name} seed {seed}: skipped, it cannot end within the "
                              f"time budget", flush=True)
                        continue
                    self.slots[slot] = end
                ref = self.task.remote(config.to_dict(), seed, str(work))
                self.pending[ref] = (name, seed, out, work)
                started += 1
        self.total += started
        if started:
            print(f"[seeds] {started} seed re-run(s) of {len(best)} best config(s) started; each "
                  f"trains to early stopping and is tested once", flush=True)
        return started

    def wait(self) -> None:
        """Wait for every job started, writing each record as it lands (and seeds.csv)."""
        while self.pending:
            ready, _ = ray.wait(list(self.pending), timeout=60.0)
            if self.budget is not None:     # the ledger counts the seed phase's time as it goes
                self.budget.write(force=False)
            if not ready:
                continue
            [ref] = ready
            name, seed, out, work = self.pending.pop(ref)
            record = ray.get(ref)
            atomic_write_json(out, record)
            shutil.rmtree(work, ignore_errors=True)
            finals.drop_spent(self.opts.exp_dir, name)
            # seeds.csv (what the tables and an export read) holds every record so far: the
            # seed phase of a study that spans machines ends in a later driver
            results.write_seed_table(self.opts.exp_dir)
            print(f"[seeds] {name} seed {seed}: test ndcg@10 {record['test']['ndcg@10']:.4f} "
                  f"({self.total - len(self.pending)}/{self.total})", flush=True)

    def tail_starter(self) -> Callable[[dict, list[str]], None]:
        """The callback ``runs.run_concurrently`` calls as it polls, with the runs that ended
        (name -> (key, records)) and the names of those still searching (module contract)."""
        def on_poll(done: dict, searching: list[str]) -> None:
            now = time.monotonic()
            budget = self.budget
            if (budget is None or not done or now - self._tail_checked < self.TAIL_EVERY
                    or not all(budget.closing(run) for run in searching)):
                return
            self._tail_checked = now
            # the slots no unfinished trial holds or waits for (a restored trial may not have
            # its slot yet) and no seed job of this phase runs in, at most what Ray has free;
            # not before each searching run's Tune loop has said how many it has
            if any(run not in budget.unfinished for run in searching):
                return
            live = sum(budget.unfinished[run] for run in searching)
            running = len(ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)[1]) \
                if self.pending else 0
            cpus = ray.available_resources().get("CPU", 0)
            free = min(budget.slots - live - running,
                       int(cpus // max(self.opts.cpus_per_trial, 1e-9)))
            if self.opts.gpus_per_trial:
                free = min(free, int(ray.available_resources().get("GPU", 0)
                                     // self.opts.gpus_per_trial))
            if free <= 0:
                return
            carry.flush()                  # the finals the ended runs' trials left are written
            budgets = {name: self.opts.epochs_of(key[1]) for name, (key, _) in done.items()}
            trials, _ = results.trial_tables(done, budgets, self.opts.exp_dir)
            best, best_ids, expected = best_configs(self.opts, done, trials)
            if self.start(best, expected, best_ids, limit=free):
                print(f"[seeds] the search's last trials leave {free} slot(s) free: seed "
                      f"re-runs of the runs that ended use them", flush=True)
        return on_poll


def best_configs(opts: StudyOptions, records: dict, trials) -> tuple[dict, dict, dict]:
    """(best config, best trial id, expected seed epochs) per run of ``records`` (name ->
    (key, trial records)) that has a best trial in ``trials`` (validation only:
    ``results.best_trial_id``). Each config is the run's base with the best params, progress
    and TensorBoard on (as ``best/<run>.yaml`` holds it)."""
    best, best_ids, expected = {}, {}, {}
    for name, (key, recs) in records.items():
        best_id = results.best_trial_id(trials, name)
        if best_id is None:
            continue
        params = next(r["params"] for r in recs if str(r["trial_id"]) == best_id)
        config = apply_params(run_base(opts, key), params)
        config.train.progress, config.train.tensorboard = "auto", True
        best[name], best_ids[name] = config, best_id
        expected[name] = seed_epochs(trials, name, config.train.patience, opts.epochs_of(key[1]))
    return best, best_ids, expected


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
