"""The anytime curve of a study: the best validation NDCG@10 found so far against the
trial-epochs spent, per run, so that a reader sees whether the search budget was enough.

Contracts:
- Input: ``epochs.csv`` (one row per trial and epoch). Epochs are put in the order they were
  reported: by ``timestamp`` (Ray's, whole seconds), ties by the table's row order; a table
  without timestamps (studies before 2026-12-06) is read in row order (trial by trial), and
  the output says so (``ordered_by``).
- ``anytime.csv``: run, trial_epochs (cumulative), seconds (cumulative ``seconds`` where the
  table has them), best_valid (the running maximum of ``valid/ndcg@10``).
- ``anytime.md``: per run, the final best, the trial-epochs spent, and the first point where
  the curve came within ``TOLERANCE`` (1 %) of its final best, as a share of the trial-epochs:
  a share near 1 says the search was still improving when its budget ended.
- ``anytime.png``: one line per run.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .run_figures import pyplot

TOLERANCE = 0.01
METRIC = "valid/ndcg@10"


def anytime_table(epochs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(curve rows, how the epochs were ordered: "timestamp" | "row order")."""
    df = epochs.dropna(subset=[METRIC]).copy()
    df["_row"] = range(len(df))
    ordered_by = "timestamp" if "timestamp" in df and df["timestamp"].notna().all() else "row order"
    df = df.sort_values(["timestamp", "_row"] if ordered_by == "timestamp" else ["_row"])
    rows = []
    for run, group in df.groupby("run", sort=True):
        seconds = group["seconds"].fillna(0.0).cumsum() if "seconds" in group else None
        best = group[METRIC].cummax()
        for i, value in enumerate(best):
            rows.append({"run": run, "trial_epochs": i + 1,
                         "seconds": None if seconds is None else round(float(seconds.iloc[i]), 1),
                         "best_valid": float(value)})
    return pd.DataFrame(rows), ordered_by


def anytime_summary(curve: pd.DataFrame) -> pd.DataFrame:
    """Per run: final best, trial-epochs, and when the curve first came within TOLERANCE of it."""
    out = []
    for run, group in curve.groupby("run", sort=True):
        final, spent = group["best_valid"].iloc[-1], len(group)
        near = group[group["best_valid"] >= (1 - TOLERANCE) * final]["trial_epochs"].iloc[0]
        out.append({"run": run, "final_best_valid": round(final, 4), "trial_epochs": spent,
                    "within_1pct_at": int(near), "within_1pct_share": round(near / spent, 3)})
    return pd.DataFrame(out)


def write_anytime(epochs: pd.DataFrame, out: Path) -> Path | None:
    """Write anytime.{csv,md,png} to ``out``; None when there is no epoch with a validation score."""
    curve, ordered_by = anytime_table(epochs)
    if curve.empty:
        return None
    out.mkdir(parents=True, exist_ok=True)
    curve.to_csv(out / "anytime.csv", index=False)
    summary = anytime_summary(curve)
    lines = ["| run | best valid NDCG@10 | trial-epochs | within 1 % of the best at | share |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.run} | {r.final_best_valid:.4f} | {r.trial_epochs} | {r.within_1pct_at} | "
              f"{r.within_1pct_share:.0%} |" for r in summary.itertuples()]
    lines += ["", f"Best validation NDCG@10 (all items) found so far against the trial-epochs "
              f"spent, epochs ordered by {ordered_by}; the share is the point where the curve "
              f"first came within 1 % of its final value, over all trial-epochs."]
    (out / "anytime.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run, group in curve.groupby("run", sort=True):
        ax.step(group["trial_epochs"], group["best_valid"], where="post", label=run)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best validation NDCG@10 so far")
    ax.set_title("anytime curve of the search")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "anytime.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
