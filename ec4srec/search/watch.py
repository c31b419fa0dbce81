"""The driver's view of a running study: the budget's gate and stop inside Ray Tune, and the
lines a user watches (one per finished trial, a periodic summary with ETA).

Contracts:
- The driver passes its :class:`~ec4srec.search.budget.Budget` to each Tune object here
  (searcher, stopper, callback; ``budget=None``: no budget, no cost bookkeeping). They are
  pickled into a run's folder without it (:class:`BudgetBound`) and restored with the run by
  ``Tuner.restore``; the resumed driver then gives them its own budget
  (:func:`~ec4srec.search.compat.attach_budget`), so its deadlines apply to restored runs too.
- :class:`BudgetedOptunaSearch` is Ray's OptunaSearch that returns ``Searcher.FINISHED`` once
  the budget's gate refuses the run another trial; :class:`BudgetStopper` stops each trial
  at its first report past the search deadline; :class:`StudyWatcher` feeds each report to the cost model and
  prints the lines below.
- Per finished trial: ``[trial] <run> <id>: <how it ended> after <e> epochs, best valid
  ndcg@10 <v> (<done>/<planned>)``. Summary every ``status_every`` seconds (default 30 on a
  TTY, 120 otherwise): trials done/planned and running, best so far, elapsed vs budget, ETA.
  On a TTY the summary is bold; in a log it is a plain line.
"""
from __future__ import annotations

import math
import sys
import time

import optuna
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from . import carry, compat, durable
from .budget import Budget, hms
from .trainable import is_replay
from .trial_files import OBJECTIVE
# Trials Optuna holds as finished that Ray restored as running (see BudgetedOptunaSearch): the
# stopper ends them at their first report and the result files and the watcher ignore them.
ENDED_BEFORE_RESTORE: set[str] = set()


class BudgetBound:
    """A Tune object that holds the driver's live budget (``self.budget``) and, a searcher,
    its run's live share of the slots (``self.lane_cap``), but is pickled without them: both
    belong to one driver process (a lock and a clock; the runs that process is running)."""

    budget: Budget | None = None
    lane_cap = None                 # () -> the trials this run may have at once now, or None
    on_carry = None                 # (trial id, history) -> None: ASHA learns a carried past
    DRIVER_ONLY = ("budget", "lane_cap", "on_carry")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.DRIVER_ONLY}


class BudgetedOptunaSearch(BudgetBound, OptunaSearch):
    """OptunaSearch whose run stops starting trials when the budget's gate says so, and whose
    restore trusts the Optuna storage over Ray's snapshot. With ``lane_cap`` (runs sharing the
    cluster: ``tuner.make_tuner``) it starts no trial while the run holds its live share of the
    slots, so that a run's share grows the moment another run ends (Tune's own
    ``max_concurrent_trials``, fixed when the Tuner is made and pickled with it, is then the
    cluster's slots).

    The storage is written at once (``tell`` when a trial ends); Ray's experiment snapshot,
    which holds this searcher's pickled state and the trials' statuses, only every few
    seconds. A driver that dies in between (SIGKILL, or Ctrl-C during ``--concurrent-runs``,
    whose Tuners run outside the main thread and save nothing on the way out) leaves trials
    that Optuna holds as finished but that Ray restores as running. Such a trial is listed in
    :data:`ENDED_BEFORE_RESTORE` and ends again at once: it repeats its last report
    (trainable.py's ``FINISHED.json``) or, where the trial was stopped (ASHA, the deadline)
    rather than ending on its own, :class:`BudgetStopper` stops it at its first report, one
    epoch from its last checkpoint. Its repeat reports reach neither Optuna (which refuses to
    update a finished trial, ``UpdateFinishedTrialError``) nor the cost model, and the result
    files take only epochs they lack: what Optuna holds is the first driver's. Trials started
    after the snapshot are unknown to Ray and never resumed; their Optuna trials, RUNNING
    for good otherwise, are marked FAIL."""

    def __init__(self, *args, budget_run: str | None = None, budget: Budget | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget_run, self.budget = budget_run, budget
        self.finished_before_restore: set[str] = set()
        # params_key -> (carried trial id, its epoch, its history): restarts that continue one
        self.carry_points: dict[str, tuple[str, int, list]] = {}

    def save(self, checkpoint_path: str) -> None:
        # Ray pickles the searcher's __dict__
        kept = {k: self.__dict__.pop(k) for k in self.DRIVER_ONLY if k in self.__dict__}
        try:
            super().save(checkpoint_path)
        finally:
            self.__dict__.update(kept)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.finished_before_restore = set()
        study, ot_trials, completed = compat.optuna_search_state(self)
        storage = compat.optuna_storage(study)
        for trial_id, ot_trial in ot_trials.items():
            if trial_id in completed:
                continue
            try:
                state = storage.get_trial(compat.optuna_trial_id(ot_trial)).state
            except KeyError:
                continue
            if state.is_finished():
                completed.add(trial_id)
                self.finished_before_restore.add(trial_id)
        ENDED_BEFORE_RESTORE.update(self.finished_before_restore)
        if self.finished_before_restore:
            say(f"[search] {self.budget_run}: {len(self.finished_before_restore)} trial(s) "
                   f"finished after the last snapshot ({', '.join(sorted(self.finished_before_restore))}); "
                   f"they end again at once, Optuna keeps their value")
        # trials the dead driver asked Optuna for after the snapshot: Ray does not know them
        # and never resumes them, so they would stay RUNNING in the study for good
        known = {compat.optuna_trial_id(t) for t in ot_trials.values()}
        orphans = [t for t in study.get_trials(deepcopy=False,
                                               states=(optuna.trial.TrialState.RUNNING,))
                   if compat.optuna_trial_id(t) not in known]
        for t in orphans:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if orphans:
            say(f"[search] {self.budget_run}: {len(orphans)} Optuna trial(s) started after the "
                   f"last snapshot (number {', '.join(str(t.number) for t in orphans)}) marked "
                   f"FAIL: Ray's snapshot does not have them, so they are not resumed")

    def live_trials(self) -> int:
        """The run's trials started and not ended (restored running ones included)."""
        _, ot_trials, completed = compat.optuna_search_state(self)
        return sum(1 for t in ot_trials if t not in completed)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.finished_before_restore:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.finished_before_restore:
            super().on_trial_complete(trial_id, result, error)

    def suggest(self, trial_id: str):
        if self.lane_cap is not None and self.live_trials() >= self.lane_cap():
            return None                     # its share of the slots is full: ask again later
        budget = self.budget
        # a carried trial continues as under the driver that admitted it: the gate decides on
        # new trials only (the carried restarts come first in the queue: tuner.make_tuner)
        carrying = bool(getattr(self, "carry_points", None))
        if carrying and budget is not None and self.budget_run:
            budget.may_start(self.budget_run, gate=False)
        elif budget is not None and self.budget_run and not budget.may_start(self.budget_run):
            if budget.plans.get(self.budget_run) and budget.plans[self.budget_run].refused == 1:
                say(f"[budget] {self.budget_run}: no new trial fits in its share of the "
                       f"budget; finishing the running ones")
            return Searcher.FINISHED
        suggestion = super().suggest(trial_id)
        if isinstance(suggestion, dict):
            durable.tag(self, trial_id)
            suggestion = self._continue_carry(trial_id, suggestion)
        return suggestion

    def _continue_carry(self, trial_id: str, config: dict) -> dict:
        """A restarted trial whose params are a carried trial's continues that carry (carry.py):
        its config names it (once per carry), and ASHA gets the carried trial's past results
        under the new id (``on_carry``): the rungs it passed, as an uninterrupted trial's."""
        hit = (getattr(self, "carry_points", None) or {}).pop(carry.params_key(config), None)
        if hit is None:
            return config
        carried_id, epoch, history = hit
        if self.on_carry is not None:
            self.on_carry(trial_id, history)
        say(f"[search] {self.budget_run}: trial {trial_id} continues trial {carried_id} from "
            f"its carried checkpoint (epoch {epoch})")
        return {**config, carry.CARRIED_KEY: carried_id}


class BudgetStopper(BudgetBound, tune.Stopper):
    """Past the search deadline (seed reserve kept) each trial is stopped at its next report:
    Tune's ordinary stop, which tells the searcher (the Optuna trial gets its value) and the
    callbacks. ``stop_all`` is only the backstop at the end of the seed time: ending the
    experiment there drops the running trials without telling the searcher."""

    def __init__(self, budget: Budget | None = None):
        self.budget = budget

    def __call__(self, trial_id, result) -> bool:
        if trial_id in ENDED_BEFORE_RESTORE:      # it ended under the previous driver
            return True
        return self.budget is not None and self.budget.search_over()

    def stop_all(self) -> bool:
        return backstop_passed(self.budget)


def backstop_passed(budget: Budget | None) -> bool:
    """The seed time is over too: the study's deadline minus the tables' reserve."""
    return budget is not None and budget.deadline is not None and \
        budget.clock() >= budget.deadline - budget.table_reserve


def say(line: str, bold: bool = False) -> None:
    """Print one whole line in one write (concurrent runs' threads print side by side)."""
    if bold and sys.stdout.isatty():
        line = f"\033[1m{line}\033[0m"
    print(line + "\n", end="", flush=True)


class StudyWatcher(BudgetBound, tune.Callback):
    """Per-trial lines, the periodic summary and the cost model's measurements of one run."""

    def __init__(self, run: str, planned: int, max_epochs: int, status_every: float | None = None,
                 budget: Budget | None = None):
        self.run, self.planned, self.max_epochs, self.budget = run, planned, max_epochs, budget
        self.status_every = status_every
        self._reset()

    def _reset(self) -> None:
        self.started = time.time()
        self.done = 0                              # trials that ended under this driver
        self.earlier_ids: set[str] = set()         # ... and before it (a restored run)
        self.ended_ids: set[str] = set()
        self.best = None
        self.last_status = time.time()
        self.running: dict[str, float] = {}       # trial id -> when it started (driver clock)

    def __setstate__(self, state):      # restored with the run: a fresh clock for this driver
        self.__dict__.update(state)
        self._reset()

    def _every(self) -> float:
        if self.status_every is not None:
            return self.status_every
        return 30.0 if sys.stdout.isatty() else 120.0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in ENDED_BEFORE_RESTORE:
            return
        if self.budget is not None and not is_replay(result):
            self.budget.cost.observe(self.run, trial.trial_id, result)
            self.budget.write(force=False)
        value = result.get(OBJECTIVE)
        if value is not None and (self.best is None or value > self.best):
            self.best = value

    def _ended(self, trial, how: str | None = None) -> None:
        began = self.running.pop(trial.trial_id, None)
        last = trial.last_result or {}
        # a replayed end (trainable.py's FINISHED.json) or a trial that ended under the
        # previous driver trained nothing worth counting here: its costs were that driver's
        earlier = trial.trial_id in ENDED_BEFORE_RESTORE
        replayed = is_replay(last) or earlier
        budget = self.budget
        if budget is not None and began is not None and not replayed:
            budget.cost.trial_wall(self.run, trial.trial_id, time.time() - began)
            budget.note_busy(began, time.time())
        self.done += 1
        self.ended_ids.add(trial.trial_id)
        epochs = int(last.get("epoch", 0))
        if how is None and earlier:
            how = "ended under the previous driver"
        if how is None:
            if last.get("early_stop"):
                how = "early-stopped (patience)"
            elif epochs >= self.max_epochs:
                how = "completed its budget"
            elif budget is not None and budget.search_over():
                how = "stopped by the time budget"
            else:
                how = "stopped by ASHA"
        if budget is not None and not replayed:
            budget.trial_done(self.run, epochs, pruned=how.startswith("stopped"))
        best = last.get(OBJECTIVE)
        best_text = f"{best:.4f}" if isinstance(best, (int, float)) else "-"
        say(f"[trial] {self.run} {trial.trial_id}: {how} after {epochs} epochs, best valid "
               f"ndcg@10 {best_text} ({self.earlier + self.done}/{self.shown_planned()})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial, "error")

    def on_experiment_end(self, trials, **info):
        # Trials the backstop stopped (BudgetStopper.stop_all) end with the experiment,
        # without on_trial_complete: count them here, or the plan, the cost model and the
        # utilisation would miss them. Trials still running after Ctrl-C or a driver error are
        # not finished (a resume continues them) and are not counted.
        if not backstop_passed(self.budget):
            return
        for trial in trials:
            if trial.trial_id in self.running:
                self._ended(trial, "stopped by the time budget")

    def on_step_end(self, iteration, trials, **info):
        self._count_earlier(trials)
        if self.budget is not None:     # the slots this run holds or waits for (seeds.py)
            self.budget.unfinished[self.run] = sum(
                1 for t in trials if t.status in ("PENDING", "RUNNING", "PAUSED"))
        now = time.time()
        if now - self.last_status < self._every():
            return
        self.last_status = now
        say(self.status_line(now, len(self.running)), bold=True)

    def _count_earlier(self, trials) -> None:
        """The trials of a restored run that ended before this driver: counted as done (and
        their best kept) but not in this driver's pace."""
        earlier = [t for t in trials if t.status in ("TERMINATED", "ERROR")
                   and t.trial_id not in self.ended_ids]
        self.earlier_ids = {t.trial_id for t in earlier}
        for t in earlier:
            value = (t.last_result or {}).get(OBJECTIVE)
            if isinstance(value, (int, float)) and (self.best is None or value > self.best):
                self.best = value

    def shown_planned(self, running: int = 0) -> int:
        """The planned count the lines show: the budget's estimate, or the trials seen so far
        when the gate admitted more (the estimate does not cap a run: tuner.make_tuner)."""
        return max(self.planned, self.earlier + self.done + running)

    @property
    def earlier(self) -> int:
        """Trials that ended before this driver (their ids less those it saw end)."""
        return len(self.earlier_ids - self.ended_ids)

    def status_line(self, now: float, running: int) -> str:
        elapsed = now - self.started
        left = max(0, self.shown_planned(running) - self.earlier - self.done)   # running included
        eta = elapsed / self.done * left if self.done else None
        used, budget = "", self.budget
        plan = budget.plans.get(self.run) if budget is not None else None
        if eta is None and plan is not None and plan.expected_trial_s:
            # before a trial ended: the planned trials at the priced length, on the slots
            slots = max(1, int(budget.slots / budget.concurrency))   # this run's
            eta = max(0.0, math.ceil(left / slots) * plan.expected_trial_s - elapsed)
        if budget is not None and budget.total_s is not None:
            if plan is not None and plan.deadline is not None:
                eta = min(eta, max(0.0, plan.deadline - now)) if eta is not None else \
                    max(0.0, plan.deadline - now)
            used = f", study {hms(budget.used())} of {hms(budget.total_s)}"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return (f"[study] {self.run}: {self.earlier + self.done}/{self.shown_planned(running)} "
                f"trials done, "
                f"{running} running, "
                f"best valid ndcg@10 {best}, run elapsed {hms(elapsed)}{used}, "
                f"ETA of this run {hms(eta)}")
