"""Tidy tables of a study (no Ray needed): trials, per-epoch curves, seed re-runs.

Contracts:
- ``trials.csv`` (and ``.parquet`` when pyarrow is there): one row per trial with its run
  (``dataset-method-backbone``), searched params (``method.mu_e`` ...), ``state`` (completed |
  early_stopped | pruned | error), epochs, best validation metrics, wall time, the node(s) it
  ran on, warm-up epochs skipped, times restored, error text, and ``path``: the trial's folder
  relative to the experiment folder (``<run>/trial_<id>``), never an absolute machine path.
- ``epochs.csv``: one row per (trial, epoch), the last report winning when a restored trial
  re-reported an epoch. Validation and training metrics only: no test metric exists here.
- ``seeds.csv``: one row per (run, seed) of the final re-runs, with test and validation metrics.
- :func:`read_table` reads a study table back: a file that is not a CSV, lacks a required
  column or has an empty cell in a required key column (run; dataset, method, backbone, seed)
  is one :class:`TableError` naming the file (and the row); ``tune/report.py`` exits 2 on it.
  A table with a header and no rows is read as empty.
- :func:`export_study` copies the portable results and the durable state (:data:`PORTABLE`);
  the copies carry paths relative to the experiment folder (``trials.csv`` paths,
  ``study.json`` storage folders, ``summary.json``); ``tune/search.py --resume`` continues a
  study from such a copy (ec4srec/search/durable.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..checkpoint import atomic_write_bytes
from ..paths import recorded_path

METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")     # all items (evaluate.py)
UNSEEN_METRICS = tuple(f"{m}_unseen" for m in METRICS)   # the user's history removed
# read when a record has them (runs before 2026-12-06 have only METRICS)
EXTRA_METRICS = UNSEEN_METRICS + ("last_item_top1",)
SEED_RECORD = "seeds/{run}/seed_{seed}.json"    # a study's seed re-run, relative to its folder
RUN_RECORD = "runs/{run}.json"                  # a study's complete run (its trials' records)
FINALS_DIR = "finals"       # finals/<run>/: the final checkpoint of a run's best ended trial
# columns the report needs from each table
REQUIRED = {"trials.csv": ("run", "valid/ndcg@10"),
            "seeds.csv": ("dataset", "method", "backbone", "seed",
                          *(f"test/{m}" for m in METRICS))}


class TableError(ValueError):
    """A study table is malformed; the message names the file."""


def read_table(path: Path) -> pd.DataFrame:
    """A study table (trials.csv, seeds.csv, ...), checked for its required columns and numeric
    metric columns; raises TableError naming the file."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: not a readable CSV table: {' '.join(str(exc).split())}") from None
    missing = [c for c in REQUIRED.get(path.name, ()) if c not in df.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing}")
    # rows are counted as lines of the file (the header is row 1)
    for col in REQUIRED.get(path.name, ()):
        if not col.startswith(("valid/", "test/")) and df[col].isna().any():
            raise TableError(f"{path}: row {int(df.index[df[col].isna()][0]) + 2}: empty "
                             f"{col!r} cell")
    for col in df.columns:
        if str(col).startswith(("valid/", "test/")) and not pd.api.types.is_numeric_dtype(df[col]):
            bad = df[col][pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()]
            if len(bad):          # (a header-only table's columns are empty, not non-numbers)
                raise TableError(f"{path}: column {col!r} holds a non-number: {bad.iloc[0]!r} "
                                 f"(row {int(bad.index[0]) + 2})")
    return df


def portable_path(path: str | None, exp: Path, run: str) -> str | None:
    """A trial folder relative to the experiment folder: ``<run>/<trial folder>``."""
    if not path:
        return path
    p = Path(str(path))
    if not p.is_absolute() and "://" not in str(path):
        return p.as_posix()
    try:
        return p.relative_to(exp).as_posix()
    except (ValueError, TypeError):             # elsewhere, or no experiment folder given
        return f"{run}/{p.name}"


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    try:
        df.to_parquet(path.with_suffix(".parquet"), index=False)
    except (ImportError, ValueError):
        pass


def trial_state(history: list[dict], error: str | None, max_epochs: int) -> str:
    if error:
        return "error"
    if not history:
        return "pruned"
    last = history[-1]
    if last.get("early_stop"):
        return "early_stopped"
    return "completed" if last.get("epoch", 0) >= max_epochs else "pruned"


def write_trial_tables(exp: Path, runs: dict, max_epochs: int | dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`trial_tables`, written to ``exp``/trials.csv and epochs.csv."""
    trials, epochs = trial_tables(runs, max_epochs, exp)
    _write(trials, exp / "trials.csv")
    _write(epochs, exp / "epochs.csv")
    return trials, epochs


def trial_tables(runs: dict, max_epochs: int | dict[str, int],
                 exp: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``runs``: {run name: ((dataset, method, backbone), [trial records])} -> trials, epochs;
    ``max_epochs``: every run's epoch budget N, or N per run name."""
    trial_rows, epoch_rows = [], []
    for name, (key, records) in runs.items():
        dataset, method, backbone = key
        for rec in records:
            by_epoch = {}
            for row in rec["history"]:
                if "epoch" in row:
                    by_epoch[int(row["epoch"])] = row
            hist = [by_epoch[e] for e in sorted(by_epoch)]
            best = max(hist, key=lambda r: r.get("valid/ndcg@10", -1), default={})
            last = hist[-1] if hist else {}
            nodes = sorted({str(r["node_id"]) for r in hist if r.get("node_id")})
            ips = sorted({str(r["node_ip"]) for r in hist if r.get("node_ip")})
            trial_rows.append({
                "run": name, "dataset": dataset, "method": method, "backbone": backbone,
                "trial_id": rec["trial_id"], **rec["params"],
                "state": trial_state(hist, rec["error"], max_epochs[name]
                                     if isinstance(max_epochs, dict) else max_epochs),
                "epochs": int(last.get("epoch", 0)), "best_epoch": int(best.get("epoch", 0)),
                **{f"valid/{m}": best.get(f"valid/{m}") for m in METRICS + EXTRA_METRICS},
                "wall_time_s": round(float(last.get("time_total_s", 0.0)), 2),
                "first_update": last.get("first_update"),
                "warm_start_epoch": int(max((r.get("warm_start_epoch", 0) for r in hist), default=0)),
                "restores": len({r.get("restored_from_epoch") for r in hist} - {0, None}),
                "node_ids": ";".join(nodes), "node_ips": ";".join(ips), "num_nodes": len(nodes),
                "error": rec["error"], "path": portable_path(rec["path"], exp, name),
            })
            for r in hist:
                epoch_rows.append({"run": name, "trial_id": rec["trial_id"], "epoch": r["epoch"],
                                   "guided_epoch": r.get("guided_epoch"),
                                   **{k: v for k, v in r.items()
                                      if k.startswith(("valid/", "train/"))},
                                   "seconds": r.get("time_this_iter_s"), "node_ip": r.get("node_ip"),
                                   "timestamp": r.get("timestamp")})
    return pd.DataFrame(trial_rows), pd.DataFrame(epoch_rows)


def best_trial_id(trials: pd.DataFrame, run: str) -> str | None:
    """The run's best non-error trial by best validation NDCG@10 (ties: smallest id)."""
    ok = trials[(trials["run"] == run) & (trials["state"] != "error")]
    ok = ok.dropna(subset=["valid/ndcg@10"])
    if ok.empty:
        return None
    return str(ok.sort_values(["valid/ndcg@10", "trial_id"], ascending=[False, True]).iloc[0]["trial_id"])


def warm_start_savings(trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> dict:
    """What the warm-up cache saved: epochs skipped / all epochs the trials covered and, given
    the epoch table, an estimate in seconds: each skipped epoch is priced at the median time of
    the warm-up epochs (epoch < first update) that trials of the same run did train.
    ``train_seconds`` is the time of all trained epochs, so the share saved is
    ``seconds_saved / (train_seconds + seconds_saved)``."""
    out = {"skipped": 0, "epochs": 0, "percent": 0.0}
    if trials.empty:
        return out
    skipped, covered = int(trials["warm_start_epoch"].sum()), int(trials["epochs"].sum())
    out.update(skipped=skipped, epochs=covered, percent=100.0 * skipped / covered if covered else 0.0)
    if epochs is None or epochs.empty or "seconds" not in epochs:
        return out
    first = trials.set_index("trial_id")["first_update"]
    saved = 0.0
    for run, group in trials.groupby("run"):
        rows = epochs[epochs["run"] == run]
        if rows.empty:                 # its trials errored before their first epoch
            continue
        warm = rows[rows["epoch"] < rows["trial_id"].map(first).fillna(float("inf"))]
        price = warm["seconds"].median() if len(warm) else rows["seconds"].median()
        if group["warm_start_epoch"].sum() and pd.notna(price):
            saved += float(group["warm_start_epoch"].sum()) * float(price)
    spent = float(epochs["seconds"].fillna(0).sum())
    out.update(seconds_saved=round(saved, 1), train_seconds=round(spent, 1),
               percent_seconds=100.0 * saved / (spent + saved) if spent + saved else 0.0)
    return out


def write_seed_table(exp: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(exp.glob(SEED_RECORD.format(run="*", seed="*"))):
        rec = json.loads(path.read_text())
        dataset = path.parent.name.rsplit("-", 2)[0]
        rows.append({"run": path.parent.name, "dataset": dataset, "method": rec["method"],
                     "backbone": rec["backbone"], "seed": rec["seed"],
                     **{f"test/{m}": (rec.get("test") or {}).get(m) for m in METRICS + EXTRA_METRICS},
                     **{f"valid/{m}": (rec.get("valid") or {}).get(m) for m in METRICS + EXTRA_METRICS},
                     "best_epoch": rec.get("best_epoch"), "epochs": rec.get("epochs_run"),
                     "wall_time_s": rec.get("wall_time_s"), "node_ip": rec.get("node_ip")})
    table = pd.DataFrame(rows)
    if rows:
        _write(table, exp / "seeds.csv")
    return table


# A study's durable state (ec4srec/search/durable.py): what survives losing its machine and what
# --export copies (carried/: the newest checkpoint of each unfinished trial, search/carry.py);
# Ray's run folders (checkpoints, events) and warmup/ are disposable.
PORTABLE = ("study.json", "search_space.yaml", "optuna.journal", "budget.json", "summary.json",
            "trials.csv", "epochs.csv", "seeds.csv", "runs", "trials", "seeds", "best", "report",
            "carried", FINALS_DIR)
# written into an export: a study resumed in place (a fresh checkout) writes its disposable
# folders there too, and git must not take them
EXPORT_GITIGNORE = ("# ec4srec: a study resumed here writes Ray's run folders (checkpoints, "
                    "TensorBoard events)\n# and a warm-up cache; they are disposable, the rest "
                    "is the study's durable state\n/*-*-*/\n/warmup/\n*.tmp\n*.parquet\n")


def _relative_json(value, exp: Path):
    """Every absolute path in a JSON value that is the experiment folder, inside it or the folder
    holding it, made relative to the experiment folder (``.``, ``report``, ``..``); any other
    absolute path as ``paths.recorded_path`` records it."""
    if isinstance(value, dict):
        return {k: _relative_json(v, exp) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_json(v, exp) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        p = Path(value)
        if p == exp.parent:
            return ".."
        try:
            return p.relative_to(exp).as_posix() or "."
        except ValueError:
            return recorded_path(value)             # elsewhere: no machine-specific prefix
    return value


def _portable_bytes(path: Path, exp: Path) -> bytes:
    """The exported content of one file: every JSON file (study.json, summary.json, the trial
    and seed records) and trials.csv with paths relative to the experiment folder or, outside
    it, as ``paths.recorded_path`` records them; anything else unchanged."""
    rel = path.relative_to(exp).as_posix()
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TableError(f"{path}: not valid JSON: {exc}") from None
        return (json.dumps(_relative_json(raw, exp.resolve()), indent=2) + "\n").encode()
    if rel == "trials.csv":
        trials = read_table(path)
        if "path" in trials.columns:
            runs = trials["run"] if "run" in trials.columns else [""] * len(trials)
            trials["path"] = [portable_path(p, exp.resolve(), r) if isinstance(p, str) else p
                              for p, r in zip(trials["path"], runs)]
        return trials.to_csv(index=False).encode()
    return path.read_bytes()


def export_study(exp: Path, dest: Path) -> list[Path]:
    """Copy a study's portable results (tables, best configs, paper tables, figures, options,
    the carried checkpoints of unfinished trials, the runs' finals; no Ray folders or caches) to ``dest``, e.g. a folder under results/ to commit.
    Paths in study.json, summary.json and trials.csv are made relative to the experiment folder.
    Every file is read and checked before the first one is written (a malformed table raises
    TableError and writes nothing); each write is atomic. ``dest``'s portable part then mirrors
    the study's: a portable file the study no longer has (a reopened run's ``runs/<run>.json``)
    is removed from ``dest`` too, so a resume from ``dest`` sees the study as it is; nothing
    else in ``dest`` is touched, and an export onto the study itself removes nothing. Returns
    the written paths."""
    exp = Path(exp)
    contents = {}
    for name in PORTABLE:
        src = exp / name
        files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
        for path in files:
            if not path.exists() or path.suffix in (".tmp", ".parquet"):
                continue
            contents[dest / path.relative_to(exp)] = _portable_bytes(path, exp)
    contents[dest / ".gitignore"] = EXPORT_GITIGNORE.encode()
    for target, data in contents.items():
        atomic_write_bytes(target, data)
    if Path(dest).resolve() != exp.resolve():
        for name in PORTABLE:
            kept = Path(dest) / name
            held = sorted(p for p in kept.rglob("*") if p.is_file()) if kept.is_dir() else \
                [kept] if kept.is_file() else []
            for path in held:
                if path not in contents:
                    path.unlink()
    return list(contents)
