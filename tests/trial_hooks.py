"""Epoch hooks for the search tests (no tests here): slow or kill trials through the study
constants every trial gets (``tuner.trial_constants``' ``epoch_hooks``). This module is
shipped to Ray's workers by value, so they need not import the tests."""
from __future__ import annotations

import os
import signal
import sys
import time


def sleep_each_epoch(seconds: float):
    """Sleep ``seconds`` per epoch: slow, predictable trials for driver and budget tests."""
    def hook(session, epoch, restored):
        time.sleep(seconds)
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


def install(monkeypatch, *hooks) -> None:
    """Give every trial the studies start (in this process) ``hooks`` as epoch hooks."""
    import ray.cloudpickle

    from ec4srec.search import tuner
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    constants = tuner.trial_constants
    monkeypatch.setattr(tuner, "trial_constants",
                        lambda *a, **kw: {**constants(*a, **kw), "epoch_hooks": list(hooks)})
