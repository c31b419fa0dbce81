"""Epoch hooks for the search tests (no tests here): slow, hold or kill trials, or record
what they hold, through the study constants every trial gets (``tuner.trial_constants``'
``epoch_hooks``). This module is shipped to Ray's workers by value, so they need not import
the tests."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path


def sleep_each_epoch(seconds: float):
    """Sleep ``seconds`` per epoch: slow, predictable trials for driver and budget tests."""
    def hook(session, epoch, restored):
        time.sleep(seconds)
    return hook


def hold_until_started(method: str, n: int, folder: str, timeout: float = 90.0):
    """In trials of ``method``: mark the trial started in ``folder`` at the end of its first
    epoch, then hold it there until ``n`` trials of the method have started (at most
    ``timeout`` seconds). Its trials overlap only if its run holds ``n`` slots at once
    before the first of them ends."""
    def hook(session, epoch, restored):
        from ray import tune
        if epoch != 1 or _trainer().config.method.name != method:
            return
        Path(folder, f"started-{tune.get_context().get_trial_id()}").touch()
        end = time.time() + timeout
        while len(list(Path(folder).glob("started-*"))) < n and time.time() < end:
            time.sleep(0.2)
    return hook


def kill_once_after(k: int):
    """SIGKILL the trial's worker once, at the end of epoch k + 1 before reporting it (so Ray
    must restore the trial from epoch <= k); it leaves ``KILLED_BY_TEST`` in the trial folder."""
    def hook(session, epoch, restored):
        flag = session.trial_dir / "KILLED_BY_TEST"
        if epoch == k + 1 and not restored and not flag.exists():
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _trainer():
    """The Trainer whose epoch callback runs the hooks (trainable.run_trial's ``on_epoch``
    holds it; the hooks are not passed it), found on the caller's stack."""
    from ec4srec.trainer import Trainer
    frame = sys._getframe(1)
    while frame is not None:
        found = [v for v in frame.f_locals.values() if isinstance(v, Trainer)]
        if found:
            return found[0]
        frame = frame.f_back
    raise RuntimeError("no Trainer on the stack of an epoch hook")


def _digest(importance) -> str | None:
    """sha256 of an importance-score tensor's bytes; None when there are none (yet)."""
    return None if importance is None else hashlib.sha256(importance.numpy().tobytes()).hexdigest()


def record_importance(folder: str):
    """Append one JSON line per epoch to ``folder/<trial_id>.jsonl``: ``epoch``, ``restored``,
    ``node_id`` and ``importance``, the digest of the importance scores the trainer holds at
    the end of the epoch; in the first epoch after a restore also ``checkpoint_importance``,
    the digest of those in the checkpoint the trial was restored from."""
    def hook(session, epoch, restored):
        import ray
        from ray import tune

        from ec4srec.checkpoint import load_torch
        from ec4srec.search.trainable import TRAINER_FILE
        line = {"epoch": epoch, "restored": restored,
                "node_id": ray.get_runtime_context().get_node_id(),
                "importance": _digest(getattr(_trainer().method, "importance", None))}
        if restored and epoch == restored + 1:      # get_checkpoint(): the restored one still
            with tune.get_checkpoint().as_directory() as d:
                state = load_torch(Path(d) / TRAINER_FILE)["method"]
            line["checkpoint_importance"] = _digest(state.get("importance"))
        out = Path(folder) / f"{tune.get_context().get_trial_id()}.jsonl"
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return hook


def hold_on_node(node_id: str, k: int, folder: str, timeout: float = 120.0):
    """On node ``node_id`` only, in a trial never restored, hold the trial at the end of epoch
    k + 1 before reporting it (so epoch k's report and checkpoint are its last, and the driver
    has processed them: the trial only trains on once it has): write ``folder/held-<trial_id>``
    and wait until ``folder/release`` exists or ``timeout`` seconds pass (a test removes the
    node meanwhile)."""
    def hook(session, epoch, restored):
        import ray
        from ray import tune
        if epoch != k + 1 or restored or ray.get_runtime_context().get_node_id() != node_id:
            return
        (Path(folder) / f"held-{tune.get_context().get_trial_id()}").write_text(str(os.getpid()))
        deadline = time.monotonic() + timeout
        while not (Path(folder) / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    return hook


def install(monkeypatch, *hooks) -> None:
    """Give every trial the studies start (in this process) ``hooks`` as epoch hooks."""
    import ray.cloudpickle

    from ec4srec.search import tuner
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    constants = tuner.trial_constants
    monkeypatch.setattr(tuner, "trial_constants",
                        lambda *a, **kw: {**constants(*a, **kw), "epoch_hooks": list(hooks)})
