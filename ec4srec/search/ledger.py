"""The budget's ledger, ``<exp>/budget.json``: what a study's budget keeps across its driver
runs. Written atomically by ``Budget.write`` (its content is :func:`ledger_report`, also the
cost report in summary.json); read back by a resumed driver (:func:`load_ledger`). No Ray here.

Contracts:
- The ledger holds the study's used seconds, the cost model, every run's plan (:class:`RunPlan`
  with ``used_s``, the run's seconds over every driver so far) and the seed log.
- A resumed driver loads every plan with its clock stopped at what it used; a run skipped
  before any trial started is left out (still to plan, with its share of what is left); a
  run skipped after its trials were lost is kept (its used time counts) and planned again.
  ``lost_s`` is not read back: every driver recomputes it (lost.py).
- A ledger that cannot be read is a ConfigError naming the file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import ConfigError
from .cost import CostModel

LEDGER = "budget.json"
SKIPPED = "budget: skipped"   # RunPlan.closed_by of a run not one trial of which fit


@dataclass
class RunPlan:
    run: str
    share_s: float | None              # None: no budget or nothing measured yet
    planned_trials: int
    started_at: float
    deadline: float | None             # the share's end (wall clock)
    full_trial_s: float | None = None
    expected_trial_s: float | None = None
    trials_started: int = 0
    trials_finished: int = 0
    refused: int = 0                   # suggestions the gate refused
    ended_at: float | None = None
    closed_by: str | None = None       # "budget" when the gate or the deadline ended it
    used_before_s: float = 0.0         # seconds this run used in earlier driver runs
    lost_s: float = 0.0                # of them, trials' training lost with a machine (lost.py)
    done: bool = False                 # the run is complete


def load_ledger(budget, path: Path) -> None:
    """Read ``path`` into ``budget`` (a Budget just made; module contract)."""
    try:
        raw = json.loads(path.read_text())
        budget.used_before = float(raw["used_s"])
        budget.cost = CostModel.from_dict(raw.get("cost_model", {}))
        for run, p in raw.get("plans", {}).items():
            p = dict(p)
            if p.get("closed_by") == SKIPPED and not p.get("trials_started"):
                continue          # never ran: still to plan, with its share of what is left
            if p.get("closed_by") == SKIPPED and not p.get("trials_finished"):
                budget._replan.add(run)       # planned again too, its used time kept
            used = float(p.pop("used_s", 0.0))
            p["lost_s"] = 0.0                 # recomputed by every driver (lost.py)
            # an earlier driver's plan: its clock is stopped at what it used
            budget.plans[run] = RunPlan(**{**p, "used_before_s": used,
                                           "started_at": budget.started, "ended_at": budget.started})
        budget.seed_log = list(raw.get("seeds", []))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a budget ledger of this ec4srec ({exc})") from None


def ledger_report(budget) -> dict:
    """The ledger's content (and the cost report) of ``budget`` now."""
    now, used = budget.clock(), budget.used()
    plans = {r: {**asdict(p), "used_s": round(p.used_before_s + (p.ended_at or now) - p.started_at, 1)}
             for r, p in budget.plans.items()}
    utilisation = budget.utilisation()
    return {"budget_s": budget.total_s, "used_s": round(used, 1),
            "left_s": None if budget.total_s is None else round(budget.total_s - used, 1),
            "slots": budget.slots, "concurrent_runs": budget.concurrency,
            "search_utilisation": None if utilisation is None else round(utilisation, 4),
            "seed_reserve_s": round(budget.seed_reserve(), 1),
            "plans": plans, "seeds": budget.seed_log, "cost_model": budget.cost.to_dict()}
