"""Finals: the checkpoint a run's best trial ended with, kept in the study's durable state, so
that the first seed re-run of the run's best config is that trial itself, tested once, instead
of a re-training that would reproduce it (docs/search.md, "Seed re-runs").

Why it may stand in: a seed re-run trains the best config with ``train.seed = s`` to early
stopping and tests it once (``trainable.retrain_seed``); for ``s`` = the trials' own seed that
config is the best trial's, which trained the same epochs (same seed, same numbers; a warm start
and a carried continuation are bit-identical to training through) and chose its best epoch the
same way, on validation. Only a trial that ended on its own qualifies (early stopping or its N
epochs; not one ASHA pruned or the search deadline cut), and only with its best weights (a trial
continued from a carry has them only if it contended for its run's best when carried:
``carry.contends``).

Contracts:
- :func:`keep_final` (``durable.TrialRecorder`` as a trial ends, on the carry writer thread;
  ``carry.carry_unfinished`` for the ended trials of the Ray folders) keeps such a trial when
  its best validation beats the run's kept final and no recorded trial's is above it (the
  run's best trial as far as the records tell): ``finals/<run>/<trial_id>.pt`` (its newest
  trainer checkpoint, reported with its last epoch, with the best weights as the model, no
  optimizer moments, no method state: what a test reads; 14 MB for the Beauty study's base)
  and ``<trial_id>.json`` (trial id, best validation, epoch, the config, bytes, sha256),
  written .pt first, each atomically; the run's other finals go. One per run.
- :func:`seed_from_final` (``seeds.SeedPhase``): when the kept final is the run's best trial and
  its config equals the seed job's in every key that changes numbers (``NOT_NUMERIC`` aside),
  the final (checked against its size and SHA-256) becomes the job's checkpoint, with
  ``FROM_TRIAL`` beside it; the job then trains no epoch and tests once (its record says
  ``from_trial``). Anything else: the job re-trains, as without finals.
- :func:`pending_final`: a run whose final's seed has no record yet (the budget's seed reserve
  counts that job as done: it costs one test).
- :func:`drop_spent`: once that seed's record is written (this final's job: tested from it,
  or of its config), the final goes (its job is done; the record holds its test).
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, atomic_write_bytes, atomic_write_json, load_torch
from ..config import Config, ConfigError
from ..loop_state import LoopState
from ..report.results import FINALS_DIR, SEED_RECORD
from ..trainer import CHECKPOINT
from .trial_files import OBJECTIVE, run_best

FROM_TRIAL = "from_trial.json"   # in a seed job's work folder: its checkpoint is a trial's final
# keys that change no number a run reports (where data lives: its files are checksummed)
NOT_NUMERIC = {"train": ("checkpoint_every", "checkpoint_minutes", "progress", "tensorboard"),
               "data": ("data_dir",)}


def final_folder(exp: Path, run: str) -> Path:
    return Path(exp) / FINALS_DIR / run


def read_final(exp: Path, run: str) -> dict | None:
    """The json of ``run``'s kept final (the best, should a crash have left two), None without
    one; an unreadable json is no final."""
    metas = []
    for path in final_folder(exp, run).glob("*.json"):
        try:
            metas.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return max(metas, key=lambda m: m.get("best", float("-inf")), default=None)


def keep_final(exp: Path, run: str, trial_id: str, trainer_file: Path) -> Path | None:
    """Keep ``trial_id``'s final from its newest trainer checkpoint ``trainer_file`` (module
    contract); returns its json, None when it does not qualify (cut short, no best weights, or
    not better than the run's kept final)."""
    try:
        ckpt = load_torch(trainer_file)
        loop, train = LoopState(**ckpt["loop"]), ckpt["config"]["train"]
        ended = loop.finished(train["epochs"], train["patience"], train["min_epochs"])
    except (CheckpointError, KeyError, TypeError):
        return None                       # not a whole trainer checkpoint: nothing to keep
    if not ended or ckpt.get("best_weights") is None:
        return None
    kept = read_final(exp, run)
    if kept is not None and kept["trial_id"] != trial_id and kept["best"] >= loop.best_score:
        return None
    try:                     # a recorded trial above it is the run's best (its final is gone)
        rival = run_best(exp, run, (trial_id,))
    except (OSError, ValueError):
        rival = None
    if rival is not None and rival > loop.best_score:
        return None
    best = ckpt["best_weights"]
    final = {**ckpt, "model": best, "best_weights": best, "method": {},
             "optimizer": {"state": {}, "param_groups": ckpt["optimizer"]["param_groups"]}}
    buffer = io.BytesIO()
    torch.save(final, buffer)
    data = buffer.getvalue()
    folder = final_folder(exp, run)
    atomic_write_bytes(folder / f"{trial_id}.pt", data)
    meta = folder / f"{trial_id}.json"
    atomic_write_json(meta, {"trial_id": trial_id, "best": loop.best_score,
                             "best_epoch": loop.best_epoch, "epoch": loop.epoch,
                             "config": ckpt["config"], "bytes": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()})
    for old in folder.glob("*.json"):        # each json before its .pt (a reader never finds
        if old.stem != trial_id:                # a json without its .pt)
            old.unlink(missing_ok=True)
            old.with_suffix(".pt").unlink(missing_ok=True)
    return meta


def config_mismatch(a: dict, b: dict) -> list[str]:
    """The dotted keys in which configs ``a`` and ``b`` (``Config.to_dict()``) differ, the
    ``NOT_NUMERIC`` ones aside; each is read as a Config first (a key a later ec4srec added
    takes its default on both sides). A dict that is not a config differs in ``config``."""
    try:
        a, b = Config.from_dict(a).to_dict(), Config.from_dict(b).to_dict()
    except (ConfigError, TypeError, ValueError):
        return ["config"]
    return sorted(f"{sec}.{key}" for sec in set(a) | set(b)
                  for key in set(a.get(sec) or {}) | set(b.get(sec) or {})
                  if key not in NOT_NUMERIC.get(sec, ())
                  and (a.get(sec) or {}).get(key) != (b.get(sec) or {}).get(key))


def seed_from_final(exp: Path, run: str, best_trial: str | None, config: dict, seed: int,
                    work: Path) -> str | None:
    """Make ``run``'s kept final the checkpoint of its seed job in ``work`` (module contract).
    ``config``: the seed job's config dict (the best config); returns None when the final
    stands in, else why not (a line for the log; "" when the run has no final to try)."""
    meta = read_final(exp, run)
    if meta is None or meta["trial_id"] != best_trial or meta["config"]["train"]["seed"] != seed:
        return ""
    job = {**config, "train": {**config["train"], "seed": seed}}
    if differ := config_mismatch(meta["config"], job):
        return f"its final (trial {best_trial}) differs in {', '.join(differ[:4])}"
    path = final_folder(exp, run) / f"{best_trial}.pt"
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{path}: unreadable ({exc.strerror or exc})"
    if len(data) != meta["bytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        return f"{path}: damaged (its size or SHA-256 differs from {path.with_suffix('.json').name})"
    shutil.rmtree(work, ignore_errors=True)
    # the marker first: a folder with a checkpoint and no marker is a job's own (carried)
    atomic_write_json(Path(work) / FROM_TRIAL, {"trial_id": best_trial})
    atomic_write_bytes(Path(work) / CHECKPOINT, data)
    return None


def pending_final(exp: Path, run: str, objective: str = OBJECTIVE) -> bool:
    """Whether ``run`` has a kept final that is its best trial so far (no recorded trial's
    ``objective`` above it) and whose seed has no record yet."""
    meta = read_final(exp, run)
    if meta is None or (Path(exp) / SEED_RECORD.format(
            run=run, seed=meta["config"]["train"]["seed"])).exists():
        return False
    best = run_best(exp, run, objective=objective)
    return best is None or meta["best"] >= best


def drop_spent(exp: Path, run: str) -> bool:
    """Delete ``run``'s kept final when its seed's record is its job's (module contract): the
    record was tested from this final (``from_trial``) or holds the final's config. A record
    of another config (the run's best changed since: ``study.set_aside_stale`` sets it aside)
    or one that says neither leaves the final. Each json goes before its .pt; True when one
    went."""
    meta = read_final(exp, run)
    if meta is None:
        return False
    try:
        record = json.loads((Path(exp) / SEED_RECORD.format(
            run=run, seed=meta["config"]["train"]["seed"])).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    config = record.get("config")
    if not (record.get("from_trial") == meta["trial_id"]
            or (isinstance(config, dict) and not config_mismatch(config, meta["config"]))):
        return False
    for path in final_folder(exp, run).glob("*.json"):
        path.unlink(missing_ok=True)
        path.with_suffix(".pt").unlink(missing_ok=True)
    return True


def load_final(trainer, work: Path) -> str | None:
    """Load the final placed in ``work`` into ``trainer`` (``trainable.retrain_seed``); returns
    the trial id it came from, None when ``work`` holds no final. A final that does not load
    or has not finished training raises CheckpointError."""
    if not (Path(work) / FROM_TRIAL).is_file():
        return None
    trial_id = json.loads((Path(work) / FROM_TRIAL).read_text())["trial_id"]
    trainer.load_checkpoint(Path(work) / CHECKPOINT, method_state=False)
    tc, st = trainer.config.train, trainer.state
    if not st.finished(tc.epochs, tc.patience, tc.min_epochs):
        raise CheckpointError(f"{work}: the final of trial {trial_id} has not finished training")
    # saved at the stopping epoch before the loop set its flag: the record says what it was
    st.stopped_early = st.stopped_early or st.patience_ran_out(tc.patience, tc.min_epochs)
    return trial_id
