"""A study's files about one trial: the layout Ray and the trainable give a trial folder, and
where a study keeps an ended trial's record. One place for the names the trainable, the
durable state (durable.py) and the carries (carry.py) share."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINER_FILE = "trainer.pt"          # in a Ray checkpoint folder: the trainer checkpoint
FINISHED_MARKER = "FINISHED.json"    # in a trial folder: the trial ended on its own
RECORDS = "trials"                   # <exp>/trials/<run>/<trial_id>.json: an ended trial's record
RAY_TRIAL_ID = "ray_trial_id"        # the Optuna trial's user attribute naming its Ray trial
OBJECTIVE = "valid/best_ndcg@10"     # what the search maximises: a trial's best validation so far


# Ray's bookkeeping fields a record does not keep (the params are the record's own field)
NOT_RECORDED = ("config", "date", "hostname", "pid", "checkpoint_dir_name", "should_checkpoint",
                "time_since_restore", "iterations_since_restore")


def has_tuner(run_dir: Path) -> bool:
    """Whether a Ray run folder holds a Tuner (``tuner.pkl``)."""
    return (Path(run_dir) / "tuner.pkl").exists()


def has_snapshot(run_dir: Path) -> bool:
    """Whether a Ray run folder holds an experiment snapshot (``experiment_state-*.json``)."""
    return any(Path(run_dir).glob("experiment_state-*.json"))


def trial_records(exp: Path, run: str) -> list[dict[str, Any]]:
    """The recorded (ended) trials of ``run``, by trial id."""
    folder = Path(exp) / RECORDS / run
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def history_best(history: list[dict] | None, objective: str = OBJECTIVE) -> float | None:
    """The best ``objective`` in a trial's result rows, None without one."""
    return max((row[objective] for row in history or [] if objective in row), default=None)


def run_best(exp: Path, run: str, without: tuple[str, ...] = (),
             objective: str = OBJECTIVE) -> float | None:
    """The best ``objective`` of ``run``'s ended trials that did not error (their records, the
    trials of ``without`` aside; as ``report.results.best_trial_id`` skips errored trials),
    None without one. An unreadable record raises OSError or ValueError."""
    bests = (history_best(r.get("history"), objective) for r in trial_records(exp, run)
             if str(r.get("trial_id")) not in without and not r.get("error"))
    return max((b for b in bests if b is not None), default=None)


def read_history(trial_dir: Path) -> list[dict]:
    """A trial folder's result.json rows, one per epoch (the last report of an epoch wins),
    without the fields of :data:`NOT_RECORDED`."""
    path = trial_dir / "result.json"
    by_epoch: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue                      # a torn last line of a killed driver
            if "epoch" in row:
                by_epoch[int(row["epoch"])] = {k: v for k, v in row.items() if k not in NOT_RECORDED}
    return [by_epoch[e] for e in sorted(by_epoch)]


def newest_reported_checkpoint(trial_dir: Path) -> tuple[str, int] | None:
    """(folder name, epoch) of the newest ``checkpoint_*`` of a trial folder that a line of its
    ``result.json`` reports and that holds a trainer checkpoint; None without one."""
    path = Path(trial_dir) / "result.json"
    reported: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue                           # a torn last line of a killed driver
        name = row.get("checkpoint_dir_name") if isinstance(row, dict) else None
        if name and "epoch" in row and (Path(trial_dir) / name / TRAINER_FILE).is_file():
            reported[str(name)] = int(row["epoch"])
    if not reported:
        return None
    name = max(reported, key=lambda n: reported[n])
    return name, reported[name]
