"""What a finished driver run prints and keeps: the cost report (the budget's, plus trial-hours
and what ASHA saved), the runs whose every trial errored, and the closing summary lines."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from .budget import Budget, hms

if TYPE_CHECKING:
    from .options import StudyOptions


def cost_report(budget: Budget, trials, epochs, max_epochs: int | dict[str, int]) -> dict:
    """The budget's report plus trial-hours and what ASHA and warm-up sharing saved
    (``max_epochs``: every run's N, or N per run)."""
    out = budget.report()
    out["trial_hours"] = round(float(trials["wall_time_s"].sum()) / 3600, 3) if len(trials) else 0.0
    saved_epochs, saved_s = 0, 0.0
    if len(trials):
        for run, group in trials.groupby("run"):
            pruned = group[group["state"] == "pruned"]
            budget_n = max_epochs[run] if isinstance(max_epochs, dict) else max_epochs
            n = int((budget_n - pruned["epochs"]).clip(lower=0).sum())
            price = budget.cost.epoch_seconds(run)
            if price is None and epochs is not None and len(epochs) and "seconds" in epochs:
                price = pd.to_numeric(epochs[epochs["run"] == run]["seconds"]).median()
            saved_epochs += n
            saved_s += n * float(price or 0.0)
    out["asha_saved"] = {"epochs": saved_epochs, "seconds": round(saved_s, 1)}
    return out


def failed_runs(trials) -> dict[str, dict]:
    """The runs whose every trial errored: {run: {"trials": n, "error": the first trial's
    error, on one line}}. A run without trials (skipped by the budget) is not one."""
    out = {}
    if not len(trials):
        return out
    for run, group in trials.groupby("run", sort=False):
        if (group["state"] == "error").all():
            errors = group["error"].dropna()
            first = " ".join(str(errors.iloc[0]).split()) if len(errors) else "(no message)"
            out[str(run)] = {"trials": len(group), "error": first[:300]}
    return out


def print_summary(opts: StudyOptions, summary: dict) -> None:
    exp = Path(summary["exp"])
    saved = summary["warm_start"]
    lines = [
        f"study {opts.name} finished in {summary['seconds']}s: {summary['trials']} trials "
        f"({summary['errored']} errored)",
        f"  trial table   {exp / 'trials.csv'}  (per epoch: {exp / 'epochs.csv'})",
        f"  tensorboard   tensorboard --logdir {opts.storage_path}/{opts.name}",
        f"  best configs  {exp / 'best'}/*.yaml  (ec4srec train --config FILE --output DIR)",
        f"  seed re-runs  {exp / 'seeds.csv'}",
        f"  paper tables  {summary['report'] or '(no seed re-runs)'}",
        f"  optuna        optuna-dashboard {opts.optuna_storage or exp / 'optuna.journal'}",
        f"  warm-up cache skipped {saved['skipped']} of {saved['epochs']} trained epochs "
        f"({saved['percent']:.1f}%)"
        + (f", about {saved['seconds_saved']:.0f}s of {saved['train_seconds'] + saved['seconds_saved']:.0f}s "
           f"({saved['percent_seconds']:.1f}%)" if "seconds_saved" in saved else ""),
    ]
    lines += cost_lines(summary["cost"])
    print("\n".join(lines), flush=True)


def cost_lines(cost: dict) -> list[str]:
    """The cost report as printed at the end (summary.json keeps it whole)."""
    budget = (f"{hms(cost['used_s'])} used of a {hms(cost['budget_s'])} budget "
              f"({100 * cost['used_s'] / cost['budget_s']:.0f}%)" if cost.get("budget_s")
              else f"{hms(cost['used_s'])} used (no time budget)")
    lines = [f"  cost          {budget}; {cost['trial_hours']:.2f} trial-hours on "
             f"{cost['slots']} slots; ASHA saved {cost['asha_saved']['epochs']} epochs "
             f"(~{hms(cost['asha_saved']['seconds'])})"]
    for run, p in cost["plans"].items():
        share = f"share {hms(p['share_s'])}, " if p.get("share_s") is not None else ""
        lines.append(f"    {run}: {share}used {hms(p['used_s'])}; trials planned "
                     f"{p['planned_trials']}, started {p['trials_started']}, finished "
                     f"{p['trials_finished']}" + (" (ended by the budget)" if p.get("closed_by") else ""))
    skipped = [s for s in cost.get("seeds", []) if s["state"] != "started"]
    if skipped:
        lines.append(f"    seed re-runs skipped by the budget: "
                     + ", ".join(f"{s['run']} seed {s['seed']}" for s in skipped))
    return lines
