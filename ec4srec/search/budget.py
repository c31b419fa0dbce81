"""The study's time budget (``--time-budget 3h``): a cost model measured from the study's own
reports, a plan per run, and the two rules that keep the study inside the budget. No Ray here:
study.py feeds it reports and asks it questions.

Contracts:
- The budget is the wall clock of the whole study, seed re-runs and tables included, summed
  over every driver run of it (``--resume`` continues the ledger ``<exp>/budget.json``,
  ledger.py; it is rewritten atomically every ``LEDGER_EVERY`` seconds and at each run's
  start/end). A run's share is charged what the run used less the training its trials lost
  with a machine (lost.py: :meth:`Budget.credit_lost`).
- Cost model (``cost.py``): per run, the median plain epoch, the extra seconds of an update
  epoch and the per-trial overhead, measured from the trials' reports; a run not measured yet
  borrows the measured runs' (scaled by ``MethodSpec.cost``), and a fresh study the probe's
  (``forecast.py``).
- The plan, made when a run starts: ``search_left = budget - used - seed_reserve -
  TABLE_RESERVE``; the run's share is ``search_left / runs_left`` (the same for every (method,
  backbone); the runs left are :meth:`Budget.open_runs`, complete runs that reopen included);
  planned trials (an estimate: the gate ends a run) ``= clamp(share * slots / expected_trial_s,
  1, num_samples)``, where
  ``expected_trial_s`` is a full trial (N epochs, p updates, start-up) times the fraction of N
  the run's finished trials trained on average (the study's until one of the run's ended; ASHA
  and early stopping; prior ``PRIOR_FRACTION``; under ASHA, ASHA's expected length if each rung
  kept 1/rf of the trials, :func:`~ec4srec.search.cost.asha_expected`). The seed reserve prices
  each seed re-run still to run (``seeds_done``: the recorded ones are not re-run) at its run's
  full trial times the fraction of N that unpruned trials trained (prior 1.0), packed on the
  slots (the smaller of waves of the longest job and Graham's bound for greedy packing,
  :func:`~ec4srec.search.cost.list_schedule_bound`), and never holds more than ``SEED_SHARE``
  of the budget.
- Gate (:meth:`Budget.may_start`): a run starts a new trial only while ``now + expected trial
  <= its share's end`` and the trial can reach its first decision before the search deadline
  (seed reserve kept): ASHA's first rung, or without ASHA a full trial (:meth:`trial_costs`). A
  run the gate refuses its first trial is skipped (no Tuner; it stays incomplete, so a resume
  plans it again). Stop (:meth:`Budget.search_over`): past the search deadline every running
  trial is stopped; its best validation so far still counts.
- Seed phase (:meth:`Budget.seed_fits`): a seed job starts only if it can end before the
  study's deadline, given the slots' queue.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import atomic_write_json
from .cost import CostModel, list_schedule_bound, slot_utilisation, trial_costs
from .durations import hms, parse_duration  # noqa: F401  (the study's modules import them from here)
from .ledger import LEDGER, SKIPPED, RunPlan, ledger_report, load_ledger

SEED_SHARE = 0.5        # the seed reserve's cap, as a share of the whole budget
LEDGER_EVERY = 30.0            # seconds between ledger writes while a run is going
TABLE_RESERVE, TABLE_RESERVE_MIN = 60.0, 15.0   # for the tables: 5 % of the budget, 15-60 s


class Budget:
    """The clock, plan and ledger of one study (see the module docstring).

    ``runs``: every run name in order; ``updates``: importance updates of a full trial per run;
    ``slots``: trials that run at once; ``total_s``: the budget (None: no budget, the plan and
    cost report are still kept); ``seeds_done``: seed re-runs already recorded per run."""

    def __init__(self, exp: Path, total_s: float | None, runs: list[str], updates: dict[str, int],
                 max_epochs: int | dict[str, int], num_samples: int, slots: int, seeds: int,
                 clock=time.time, started: float | None = None, concurrency: int = 1,
                 weights: dict[str, float] | None = None,
                 asha: dict[str, tuple[str, float, float]] | None = None,
                 seeds_done: dict[str, int] | None = None):
        self.exp, self.total_s, self.runs, self.updates = Path(exp), total_s, list(runs), updates
        # N of each run (one number: every run's)
        self.epochs = (dict(max_epochs) if isinstance(max_epochs, dict)
                       else {r: max_epochs for r in self.runs})
        self.max_epochs = max(self.epochs.values(), default=1)
        self.num_samples, self.seeds = num_samples, seeds
        self.seeds_done = dict(seeds_done or {})          # run -> seed re-runs recorded
        self.closed: set[str] = set()      # runs that never reopen (a staged study's stage 1)
        # run -> carried restarts to start (tuner.py); trials not ended, pending too (watch.py)
        self.carries_left: dict[str, Callable[[], int]] = {}
        self.unfinished: dict[str, int] = {}
        self.carrying: set[str] = set()    # runs with a carried trial: in progress (carry.py)
        self.slots, self.clock = max(1, int(slots)), clock
        self.concurrency = max(1, int(concurrency))      # runs sharing the slots at once
        # run -> (ASHA clock "epochs"|"seconds", first rung, reduction factor); absent: no ASHA
        self.asha = dict(asha or {})
        self.busy: list[tuple[float, float]] = []        # (start, end) of trial sessions
        self.search_started = self.search_ended = None
        self._lock = threading.RLock()
        self.started = clock() if started is None else started   # this driver's start
        self.used_before, self.plans, self.cost = 0.0, {}, CostModel()
        self.seed_log: list[dict] = []
        self._written = 0.0
        self._replan: set[str] = set()   # loaded skipped runs whose trials were lost: to plan
        if (self.exp / LEDGER).exists():
            load_ledger(self, self.exp / LEDGER)
        self.cost.weights = dict(weights or {})

    # ---------------------------------------------------------------- ledger
    def used(self) -> float:
        return self.used_before + (self.clock() - self.started)

    def write(self, force: bool = True) -> None:
        with self._lock:
            now = self.clock()
            if not force and now - self._written < LEDGER_EVERY:
                return
            self._written = now
            atomic_write_json(self.exp / LEDGER, self.report())

    # ---------------------------------------------------------------- deadlines
    @property
    def deadline(self) -> float | None:
        """Wall-clock end of the whole study."""
        return None if self.total_s is None else self.started + self.total_s - self.used_before

    def seed_reserve(self, runs: list[str] | None = None) -> float:
        """Seconds kept for the seed re-runs of ``runs`` (default: the runs that will have
        seeds, :meth:`fitting_runs`)."""
        if not self.seeds:
            return 0.0
        runs = self.fitting_runs() if runs is None else runs
        costs = [self.cost.full_trial_seconds(r, self.n(r), self.updates.get(r, 0), cold=True)
                 for r in runs]
        if not any(c is not None for c in costs):
            return 0.0
        job = max(c * self.cost.seed_fraction(r) for r, c in zip(runs, costs) if c is not None)
        # the jobs still to run (a run's recorded seeds are not re-run), each at its run's
        # cost (an unmeasured run at the largest), in waves or greedily packed, the smaller
        jobs = [job if c is None else c * self.cost.seed_fraction(r)
                for r, c in zip(runs, costs) for _ in range(self.seeds - self.seeds_done.get(r, 0))]
        packed = min(math.ceil(len(jobs) / self.slots) * job, list_schedule_bound(jobs, self.slots))
        # never more than SEED_SHARE of the budget: until a trial ends on its own a seed is
        # priced at the full N epochs, which early stopping rarely trains; a seed that does
        # not fit when its turn comes is skipped and listed (seed_fits)
        return min(packed, SEED_SHARE * self.total_s if self.total_s is not None else math.inf)

    def fitting_runs(self) -> list[str]:
        """The runs the budget keeps seed time for: runs that ended with a finished trial, the
        runs in progress (one with a carried trial is), and, in order, every run not yet started
        that fits (a skipped run whose trials were lost is planned again): on K lanes
        (``concurrency``; a running run holds its lane until its share ends, a free lane is free
        now) each such run takes what the gate needs to admit its first trial (its first
        decision: ASHA's first rung, or a full trial without ASHA) on the earliest lane, and the
        last lane's end plus the seed re-runs of all of these must come before the deadline's
        table reserve. A run that does not fit is skipped when its turn comes (the gate refuses
        its first trial) and left for a resume; without this rule the seeds of runs that never
        run would be reserved, and a budget too small for every run would stop the study before
        any run finished a trial."""
        with self._lock:
            started = [r for r in self.runs if r in self.plans and (r in self.carrying or (
                r not in self._replan and (not self.plans[r].done
                                           or self.plans[r].trials_finished)))]
            pending = [r for r in self.runs
                       if r not in started and (r not in self.plans or r in self._replan)]
            if self.deadline is None or not pending:
                return started + pending
            now = self.clock()
            running = sorted(max(now, p.deadline) for p in self.plans.values()
                             if not p.done and p.deadline)
            lanes = (running + [now] * self.concurrency)[:max(self.concurrency, len(running))]
            end = self.deadline - self.table_reserve
            chosen: list[str] = []
            for run in pending:
                full = self.cost.full_trial_seconds(run, self.n(run), self.updates.get(run, 0))
                if full is None:              # nothing measured yet: it cannot be judged
                    chosen.append(run)
                    continue
                trial_lanes = sorted(lanes)
                trial_lanes[0] += self.trial_costs(run, full)[1]     # its first decision
                if max(trial_lanes) + self.seed_reserve(started + chosen + [run]) > end:
                    continue                  # a cheaper run after it may still fit
                chosen.append(run)
                lanes = trial_lanes
            return started + chosen

    @property
    def search_deadline(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - self.seed_reserve() - self.table_reserve

    @property
    def table_reserve(self) -> float:
        if self.total_s is None:
            return 0.0
        return min(TABLE_RESERVE, max(TABLE_RESERVE_MIN, 0.05 * self.total_s), 0.5 * self.total_s)

    def search_over(self) -> bool:
        return self.search_deadline is not None and self.clock() >= self.search_deadline

    # ---------------------------------------------------------------- runs
    def begin_run(self, run: str) -> RunPlan:
        """Plan ``run`` now (a restored run is re-planned from what is left)."""
        with self._lock:
            return self._begin_run(run)

    def _begin_run(self, run: str) -> RunPlan:
        now = self.clock()
        previous = self.plans.get(run)
        self._replan.discard(run)
        if previous is not None and not previous.trials_finished and run not in self.carrying:
            del self.plans[run]   # judged as not yet started (finished or carried trials: is)
        fitting = self.fitting_runs()
        self.plans.update({} if previous is None else {run: previous})
        left = self.runs_left(run, fitting)
        full = self.cost.full_trial_seconds(run, self.n(run), self.updates.get(run, 0))
        expected = None if full is None else self.trial_costs(run, full)[0]
        share = deadline = None
        planned = self.num_samples
        if self.search_started is None:
            self.search_started = now
        if self.search_deadline is not None:
            share, planned = self.share_plan(run, left, expected, now) if run in left else (0.0, 1)
            deadline = now + share
        plan = RunPlan(run, share, planned, now, deadline, full, expected)
        if previous is not None:          # restored: keep its counts and the time it used
            plan.trials_started, plan.trials_finished = previous.trials_started, previous.trials_finished
            plan.used_before_s = previous.used_before_s + (
                (previous.ended_at or now) - previous.started_at)
            plan.lost_s = previous.lost_s
        self.plans[run] = plan
        self.write()
        return plan

    def reopens(self, run: str) -> bool:
        """Whether ``run``, complete with fewer than ``num_samples`` trials, gets more now: it
        joins the open runs (:meth:`open_runs`: their equal total holds one more trial of it)."""
        with self._lock:
            return run in self._reopen_candidates() and run in self.open_runs()

    def _reopen_candidates(self) -> list[str]:
        """Complete runs that may search more: fewer than ``num_samples`` trials, not
        ``closed``, a measured trial cost, and a search deadline to share."""
        if self.search_deadline is None:
            return []
        return [r for r, p in self.plans.items() if p.done and r not in self.closed
                and r not in self._replan and p.trials_finished < self.num_samples
                and self._expected_trial(r)]

    def _expected_trial(self, run: str) -> float | None:
        full = self.cost.full_trial_seconds(run, self.n(run), self.updates.get(run, 0))
        return None if not full else self.trial_costs(run, full)[0]

    def open_runs(self, fitting: list[str] | None = None) -> list[str]:
        """The runs that share the search time left, in ``fitting``'s order (default:
        :meth:`fitting_runs`): every one not complete, and the complete runs that reopen,
        found by water-filling: least used first, a complete run joins while its used time and
        one expected trial fit in the equal total of the open runs with it
        (:meth:`equal_total`); a run that no longer fits once others joined leaves again.
        Without it each complete run would be judged against the runs still searching alone,
        and several would reopen on the same search time (overcommitted: the last run to start
        would find the search deadline)."""
        fitting = self.fitting_runs() if fitting is None else fitting
        now = self.clock()
        open_ = [r for r in fitting if r not in self.plans or not self.plans[r].done
                 or r in self._replan]
        joined = []
        for r in sorted((r for r in self._reopen_candidates() if r in fitting),
                        key=lambda r: self.run_used(r, now)):
            if self.run_used(r, now) + self._expected_trial(r) <= self.equal_total(
                    open_ + joined + [r], now):
                joined.append(r)
        while joined:                      # each that joined still fits with all of them
            total = self.equal_total(open_ + joined, now)
            kept = [r for r in joined if self.run_used(r, now) + self._expected_trial(r) <= total]
            if kept == joined:
                break
            joined = kept
        return [r for r in fitting if r in open_ or r in joined]

    def runs_left(self, run: str, fitting: list[str]) -> list[str]:
        """The runs left to search that fit (:meth:`open_runs`), ``run`` included (absent when
        it does not fit)."""
        opened = self.open_runs(fitting)
        return [r for r in fitting if r == run or r in opened]

    def equal_total(self, runs: list[str], now: float) -> float:
        """The total each of ``runs`` gets when they share the search time left: that time
        over ceil(len / K) waves (K runs share the slots at once) plus their mean used time."""
        waves = math.ceil(max(1, len(runs)) / self.concurrency)
        used = [self.run_used(r, now) for r in runs]
        return max(0.0, self.search_deadline - now) / waves + sum(used) / max(1, len(runs))

    def run_used(self, run: str, now: float) -> float:
        """Seconds ``run`` has searched so far, over every driver run of the study, less the
        training its trials lost with a machine (:meth:`credit_lost`)."""
        plan = self.plans.get(run)
        return 0.0 if plan is None else max(0.0, plan.used_before_s + (plan.ended_at or now)
                                            - plan.started_at - plan.lost_s)

    def credit_lost(self, run: str, seconds: float) -> None:
        """``run``'s trials lost ``seconds`` of training with a machine: not charged to its
        share (the study's clock still counts them: that time was spent)."""
        if run in self.plans:
            self.plans[run].lost_s = float(seconds)

    def share_plan(self, run: str, left: list[str], expected: float | None,
                   now: float) -> tuple[float, int]:
        """(share seconds, planned trials) of ``run`` planned ``now``, ``left`` the runs left
        to search (itself included). Every run gets the same total: the search time left plus
        what the runs left used, split equally, less what ``run`` used. K runs share the slots
        at once: ceil(left / K) waves, each run with slots / K of the cluster. A share never
        runs past the search deadline (the search stops every trial there)."""
        share = max(0.0, min(self.search_deadline - now, self.equal_total(left, now)
                             - (self.run_used(run, now) if run in left else 0.0)))
        if not expected:
            return share, self.num_samples
        slots = self.slots / self.concurrency
        return share, max(1, min(self.num_samples, int(share * slots / expected)))

    def n(self, run: str) -> int:
        """The run's epoch budget N."""
        return self.epochs.get(run, self.max_epochs)

    def trial_costs(self, run: str, full: float) -> tuple[float, float]:
        """(expected, first-decision) seconds of a new trial of ``run``, given a ``full`` one
        (:func:`~ec4srec.search.cost.trial_costs`)."""
        return trial_costs(self.cost, run, full, self.asha.get(run), self.n(run),
                           self.updates.get(run, 0))

    def may_start(self, run: str, count: bool = True, gate: bool = True) -> bool:
        """The gate: may ``run`` start another trial now? Counted unless ``count`` is False;
        ``gate=False`` only counts (a carried trial, admitted by the driver that started it)."""
        with self._lock:
            return self._may_start(run, count, gate)

    def _may_start(self, run: str, count: bool, gate: bool = True) -> bool:
        plan, ok = self.plans.get(run), True
        if plan is not None and self.deadline is not None and gate:
            now = self.clock()
            full = self.cost.full_trial_seconds(run, self.n(run), self.updates.get(run, 0))
            if full is not None:
                plan.full_trial_s = full
                plan.expected_trial_s, first = self.trial_costs(run, full)
                ok = (now + plan.expected_trial_s <= plan.deadline
                      and now + first <= self.search_deadline)
            else:
                ok = now < plan.deadline
        if plan is not None and count:
            if ok:
                plan.trials_started += 1
            else:
                plan.refused += 1
                plan.closed_by = "budget"
        return ok

    def closing(self, run: str) -> bool:
        """Whether ``run`` starts no trial again in this driver: it ended, or its gate refused
        one (its searcher said FINISHED) or never can (its share's deadline passed), and no
        carried restart is left to start (the gate admits those regardless)."""
        plan, left = self.plans.get(run), self.carries_left.get(run)
        if plan is None or (left is not None and left()):
            return False
        spent = self.deadline is not None and plan.deadline is not None and self.clock() >= plan.deadline
        return plan.done or plan.refused > 0 or spent

    def note_busy(self, start: float, end: float) -> None:
        """A trial session held a slot from ``start`` to ``end`` (driver clock)."""
        with self._lock:
            self.busy.append((start, max(start, end)))

    def utilisation(self) -> float | None:
        """Busy slot-seconds / slot-seconds of the search phase (this driver run;
        :func:`~ec4srec.search.cost.slot_utilisation`)."""
        if self.search_started is None:
            return None
        return slot_utilisation(self.busy, self.slots, self.search_started,
                                self.search_ended or self.clock())

    def trial_done(self, run: str, epochs: int, pruned: bool) -> None:
        self.cost.finished(epochs, self.n(run), pruned, run)
        if run in self.plans:
            self.plans[run].trials_finished += 1

    def skip_run(self, run: str) -> None:
        """``run`` was planned but not one trial of it fits: it ends without trials; a later
        driver (``--resume``) plans it again as a run not yet started."""
        if run in self.plans:
            self.plans[run].closed_by = SKIPPED
        self.end_run(run)

    def end_run(self, run: str, stopped_by_deadline: bool = False) -> None:
        plan, self.search_ended = self.plans.get(run), self.clock()
        if plan is not None:
            plan.ended_at, plan.done = self.clock(), True
            if stopped_by_deadline:
                plan.closed_by = "budget"
        self.write()

    # ---------------------------------------------------------------- seeds
    def seed_fits(self, run: str, expected_epochs: int, queue_end: float) -> tuple[bool, float]:
        """Can a seed job of ``run`` (about ``expected_epochs`` epochs) start at ``queue_end``
        (when a slot is free) and end before the deadline? Returns (fits, its end)."""
        cost = self.cost.full_trial_seconds(run, expected_epochs, self.updates.get(run, 0), cold=True)
        end = max(queue_end, self.clock()) + (cost or 0.0)
        fits = self.deadline is None or cost is None or end <= self.deadline - self.table_reserve
        return fits, end

    # ---------------------------------------------------------------- report
    def report(self) -> dict:       # the cost report (summary.json's "cost"; ledger.py)
        return ledger_report(self)
