"""Carried trials: an unfinished trial's newest checkpoint in a study's durable state, so that a
study that loses its machine continues the trials it was running from where they were instead
of from scratch (docs/search.md, "Carried trials").

A carry is two files in ``carried/<run>/``:
- ``<trial_id>.<checkpoint>.pt``: the trainer checkpoint of the trial's newest reported Ray
  checkpoint, without ``best_weights`` (a search trial never tests, so it never reads them;
  they are a third of the file) unless the trial contends for its run's best
  (:func:`contends`): then they stay, so that the trial, continued, may end with a final
  (finals.py) and save its run a seed re-run;
- ``<trial_id>.json``: ``trial_id``, ``params`` (the trial's searched keys), ``epoch`` (the
  checkpoint's), ``checkpoint`` (the Ray checkpoint folder it came from), ``file``, ``bytes``,
  ``sha256`` (of the .pt), ``best_weights`` (whether the .pt keeps them) and ``history`` (the
  trial's result rows up to ``epoch``, what its ``result.json`` held).

Contracts:
- :func:`write_carry` writes the .pt, then the json (each atomically), then deletes the trial's
  other .pt files and the carry of the trial it continues (:data:`CARRIED_KEY`): a reader that finds a json finds its whole .pt (a carry being replaced
  leaves the old pair readable until the new json lands). A carry never goes back to an
  earlier epoch.
- The driver carries each trial at every checkpoint it reports, on one writer thread
  (:func:`submit`), and drops the carry when the trial ends, after the writes queued before
  (:func:`flush`; durable.TrialRecorder); ``--no-carry`` turns this off; ``tune/report.py --export`` first carries every
  unfinished trial of the study's Ray folders (:func:`carry_unfinished`), so an export of a
  study whose driver predates carries holds them too.
- :func:`read_carries` reads a run's carries and checks each .pt against its size and SHA-256;
  a carry that fails is a :class:`~ec4srec.checkpoint.CheckpointError` naming the file (the
  study does not resume over it; deleting the carry's two files restarts that trial from
  scratch instead).
- A restarted trial whose params equal a carry's continues it: its config holds
  :data:`CARRIED_KEY` (the carried trial's id; watch.BudgetedOptunaSearch puts it there, once
  per carry) and the trainable loads the carry when Ray has no checkpoint of its own for it.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, atomic_write_bytes, atomic_write_json
from .finals import keep_final
from .trial_files import (FINISHED_MARKER, OBJECTIVE, RECORDS, TRAINER_FILE, history_best,
                          newest_reported_checkpoint, read_history, run_best)

CARRIED = "carried"              # carried/<run>/<trial_id>.json + <trial_id>.<checkpoint>.pt
CARRIED_KEY = "_carried_from"    # a restarted trial's config: the trial id whose carry it continues
# a seed re-run's work folder (its trainer's output, checkpoint.pt included): carried with the
# trials, so a resume on a new machine continues the job (seeds.SeedPhase)
SEED_WORK = CARRIED + "/seeds/{run}/seed_{seed}"


@dataclass
class Carry:
    """One carried trial, read back and checked (:func:`read_carries`)."""

    trial_id: str
    params: dict[str, Any]
    epoch: int
    history: list[dict] = field(default_factory=list)
    path: Path | None = None          # the .pt

    def checkpoint_bytes(self) -> bytes:
        return Path(self.path).read_bytes()


def params_key(params: dict[str, Any]) -> str:
    """The identity of a trial's searched params (a carry's and a restarted trial's match)."""
    return json.dumps({k: v for k, v in params.items() if k != CARRIED_KEY}, sort_keys=True)


def record_params(config: dict[str, Any] | None) -> dict[str, Any]:
    """A trial record's ``params`` (its searched keys) and, for a trial that continued a carried
    one, ``carried_from`` (that trial's id)."""
    params = dict(config or {})
    continued = params.pop(CARRIED_KEY, None)
    return {"params": params, **({"carried_from": str(continued)} if continued else {})}


def match_restarts(carries: dict[str, Carry],
                   restarts: list[tuple[str | None, dict[str, Any]]]) -> dict[str, Carry]:
    """The carries the restarted trials (``(Ray trial id, params)``, durable.reconcile's)
    continue, by carry id: a restart's own carry, else one with its params (a trial that
    continued a carry and was lost before its own first checkpoint leaves that carry, not one
    of its own), each carry once."""
    by_params = {params_key(c.params): cid for cid, c in carries.items()}
    matched: dict[str, Carry] = {}
    for rid, params in restarts:
        cid = rid if rid in carries else by_params.get(params_key(params))
        if cid is not None and cid not in matched:
            matched[cid] = carries[cid]
    return matched


def order_restarts(carries: dict[str, Carry], restarts: list[tuple[str | None, dict[str, Any]]],
                   objective: str) -> list[tuple[str | None, dict[str, Any]]]:
    """``restarts`` with those that continue a carry (:func:`match_restarts`) first, the most
    promising first (the highest ``objective`` in its carried history), the others after them
    in their order: when a run's lane holds fewer trials than it has carries, its best carried
    trial goes on first."""
    def best(restart) -> float | None:           # None: it continues no carry
        matched = match_restarts(carries, [restart])
        rows = [row[objective] for c in matched.values() for row in c.history if objective in row]
        return max(rows, default=float("-inf")) if matched else None
    scored = [(best(r), r) for r in restarts]
    carried = sorted(((b, r) for b, r in scored if b is not None), key=lambda x: -x[0])
    return [r for _, r in carried] + [r for b, r in scored if b is None]


def run_folder(exp: Path, run: str) -> Path:
    return Path(exp) / CARRIED / run


def strip_best_weights(trainer_pt: bytes) -> bytes:
    """A trainer checkpoint without its best weights (module docstring)."""
    state = torch.load(io.BytesIO(trainer_pt), map_location="cpu", weights_only=False)
    state["best_weights"] = None
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def contends(exp: Path, run: str, trial_id: str, history: list[dict],
             objective: str = OBJECTIVE) -> bool:
    """Whether ``trial_id``, whose result rows so far are ``history``, may still end as ``run``'s
    best trial: its best ``objective`` is at least every ended trial's of the run that did not
    error (their records: ``trial_files.run_best``) and every other carried trial's (the trial
    it continues included: its rows open ``history``). Its carry then keeps the best weights
    (module docstring); so does a trial whose run has an unreadable record (it cannot tell)."""
    mine = history_best(history, objective)
    if mine is None:
        return False
    try:
        ended = run_best(exp, run, (trial_id,), objective)
    except (OSError, ValueError):
        return True
    folder = run_folder(exp, run)
    bests = [ended]
    for meta in folder.glob("*.json") if folder.is_dir() else []:
        if meta.stem != trial_id:
            try:
                bests.append(history_best(json.loads(meta.read_text()).get("history"), objective))
            except (OSError, ValueError, AttributeError):
                continue                    # being replaced, or damaged: read_carries says so
    return all(mine >= best for best in bests if best is not None)


def carried_epoch(exp: Path, run: str, trial_id: str) -> int | None:
    """The epoch of ``trial_id``'s carry, None when it has none (or an unreadable one)."""
    try:
        return int(json.loads((run_folder(exp, run) / f"{trial_id}.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_carry(exp: Path, run: str, trial_id: str, params: dict[str, Any], checkpoint: str,
                trainer_pt: bytes, history: list[dict]) -> Path | None:
    """Carry ``trial_id`` at the epoch of ``history``'s last row (module contract), with its
    best weights when it :func:`contends` for the run's best. Returns the carry's json, None
    when it already holds that epoch or a later one."""
    epoch = int(history[-1]["epoch"])
    have = carried_epoch(exp, run, trial_id)
    if have is not None and have >= epoch:
        return None
    keep_best = contends(exp, run, trial_id, history)
    data = trainer_pt if keep_best else strip_best_weights(trainer_pt)
    folder = run_folder(exp, run)
    pt = folder / f"{trial_id}.{checkpoint}.pt"
    atomic_write_bytes(pt, data)
    record = {"trial_id": trial_id, "params": {k: v for k, v in params.items() if k != CARRIED_KEY},
              "epoch": epoch, "checkpoint": checkpoint, "file": pt.name, "bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "best_weights": keep_best,
              "history": history}
    atomic_write_json(folder / f"{trial_id}.json", record)
    for old in folder.glob(f"{trial_id}.*.pt"):
        if old.name != pt.name:
            old.unlink(missing_ok=True)
    continued = params.get(CARRIED_KEY)
    if continued and str(continued) != trial_id:      # this trial now carries that one on
        drop_carry(exp, run, str(continued))
    return folder / f"{trial_id}.json"


def write_carry_from(exp: Path, run: str, trial_id: str, params: dict[str, Any],
                     trainer_file: Path, history: list[dict]) -> Path | None:
    """:func:`write_carry` of the trainer checkpoint at ``trainer_file`` (in a Ray checkpoint
    folder, whose name the carry records)."""
    return write_carry(exp, run, trial_id, params, Path(trainer_file).parent.name,
                       Path(trainer_file).read_bytes(), history)


_writer: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def submit(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on the driver's one carry writer thread, in submission order (so a
    trial's carries never go back an epoch). A checkpoint deleted before its turn (Ray keeps
    two) is skipped: the next one is carried; any other failure is one printed line, never
    the study's end."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ec4srec-carry")
        _writer.submit(_logged, fn, *args)


def flush() -> None:
    """Wait until every carry submitted so far is written."""
    with _writer_lock:
        writer = _writer
    if writer is not None:
        writer.submit(lambda: None).result()


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except FileNotFoundError:
        pass
    except Exception as exc:                     # noqa: BLE001 - a carry is never fatal
        print(f"[carry] not written: {type(exc).__name__}: {exc}", flush=True)


def drop_carry(exp: Path, run: str, trial_id: str) -> bool:
    """Delete ``trial_id``'s carry (it ended, or another trial carries it on); True if it had one."""
    folder = run_folder(exp, run)
    meta = folder / f"{trial_id}.json"
    had = meta.exists()
    meta.unlink(missing_ok=True)      # the json first: a reader never finds one without its .pt
    for pt in folder.glob(f"{trial_id}.*.pt"):
        pt.unlink(missing_ok=True)
    return had


def read_carries(exp: Path, run: str) -> dict[str, Carry]:
    """``run``'s carries by trial id, each checked (module contract)."""
    folder = run_folder(exp, run)
    carries = {}
    for meta in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            raw = json.loads(meta.read_text())
            carry = Carry(trial_id=str(raw["trial_id"]), params=dict(raw["params"]),
                          epoch=int(raw["epoch"]), history=list(raw.get("history") or []),
                          path=folder / str(raw["file"]))
            size, digest = int(raw["bytes"]), str(raw["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{meta}: not a readable carried trial ({type(exc).__name__}: "
                                  f"{exc}); delete it and its .pt to restart the trial from "
                                  "scratch") from None
        data = carry.path.read_bytes() if carry.path.is_file() else None
        if data is None or len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            what = "is missing" if data is None else "does not match its size and SHA-256"
            raise CheckpointError(f"{carry.path}: the checkpoint carried for trial "
                                  f"{carry.trial_id} {what} ({meta.name}); delete both files "
                                  "to restart the trial from scratch")
        carries[carry.trial_id] = carry
    return carries


def read_all_carries(exp: Path) -> int:
    """Check every carry of the study (:func:`read_carries`); returns how many it holds."""
    runs = sorted(p.name for p in (Path(exp) / CARRIED).iterdir()
                  if p.is_dir() and p.name != "seeds") if (Path(exp) / CARRIED).is_dir() else []
    return sum(len(read_carries(exp, run)) for run in runs)


def carry_unfinished(exp: Path) -> list[tuple[str, str, int]]:
    """Carry every unfinished trial of the study's Ray run folders at its newest reported
    checkpoint, and drop the carries of trials that have since ended (each offered to
    ``finals.keep_final``, as the driver does when a trial ends). A trial is unfinished
    when it has neither a record (``trials/<run>/<id>.json``) nor ``FINISHED.json``. Returns
    ``(run, trial_id, epoch)`` per carry written."""
    exp = Path(exp)
    written = []
    for trial_dir in sorted(exp.glob("*/trial_*")):
        run, trial_id = trial_dir.parent.name, trial_dir.name[len("trial_"):]
        newest = newest_reported_checkpoint(trial_dir)
        if (exp / RECORDS / run / f"{trial_id}.json").exists() or (trial_dir / FINISHED_MARKER).exists():
            drop_carry(exp, run, trial_id)
            if newest is not None:      # it ended: perhaps on its own, its run's best (finals.py)
                keep_final(exp, run, trial_id, trial_dir / newest[0] / TRAINER_FILE)
            continue
        if newest is None:
            continue
        name, epoch = newest
        try:
            params = json.loads((trial_dir / "params.json").read_text())
        except (OSError, ValueError):
            continue                                # a trial Ray never started properly
        history = [row for row in read_history(trial_dir) if int(row["epoch"]) <= epoch]
        if not history or int(history[-1]["epoch"]) != epoch:
            continue
        if write_carry(exp, run, trial_id, params, name,
                       (trial_dir / name / TRAINER_FILE).read_bytes(), history):
            written.append((run, trial_id, epoch))
    for meta in sorted(exp.glob(f"{CARRIED}/*/*.json")):
        if (exp / RECORDS / meta.parent.name / meta.name).exists():
            drop_carry(exp, meta.parent.name, meta.stem)
    return written


def main(argv: list[str] | None = None) -> int:
    """``tune/carry.py --experiment EXP``: carry the unfinished trials of a study whose driver
    does not (one from before carries, or on a cloud storage path synced here) before its
    export. 0 done, 2 no study there."""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="tune/carry.py", description=main.__doc__.split(":", 1)[1]
                                .split(". 0 done")[0].strip() + ".")
    p.add_argument("--experiment", required=True, help="the study's folder (holds study.json)")
    exp = Path(p.parse_args(argv).experiment)
    if not (exp / "study.json").is_file():
        print(f"error: {exp}: no study here (no study.json)", file=sys.stderr)
        return 2
    written = carry_unfinished(exp)
    for run, trial_id, epoch in written:
        print(f"[carry] {run}: trial {trial_id} carried at epoch {epoch}")
    held = sum(1 for _ in (exp / CARRIED).glob("*/*.json"))
    print(f"[carry] {exp}: {len(written)} carry(ies) written, {held} held in {exp / CARRIED}")
    return 0
