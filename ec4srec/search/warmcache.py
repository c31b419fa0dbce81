"""A shared cache of warm-up phases: trials that train identically before their first importance
update start from one stored checkpoint instead of each retraining those epochs.

Contracts:
- Trials share a warm-up when their :func:`~ec4srec.warmup.warmup_key` is equal (the rules are
  ec4srec/warmup.py's, shared with ``ec4srec train --warm-start``).
- ``<root>/<key>/epoch_<e>.pt`` holds the full trainer checkpoint after epoch e; writes go to
  a temp file and ``os.replace`` (checkpoint.save_torch), so concurrent trials on a shared
  folder never see half a file and racing writers store equal bytes.
- :meth:`WarmupCache.load_into` restores only model, optimizer, RNG, loop state and best
  weights: the trainer keeps its own config and its own (not yet updated) method state.
- A trial training a warm-up leaves ``<key>/lease.json`` (its first update, its last warm-up
  epoch, that epoch's seconds, when), rewritten each warm-up epoch. A trial of the same key that
  starts meanwhile waits (:meth:`WarmupCache.wait_for_producer`) for the epoch it can use
  instead of training the same epochs again beside it: it never waits longer than the producer
  needs to get there, which is less than training them itself. A lease not renewed within
  ``3 x its epoch seconds + LEASE_GRACE`` is stale (its trial died or was stopped) and ignored.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..checkpoint import atomic_write_json, atomic_write_text, save_torch
from ..config import Config, dump_config
from ..warmup import warmup_key

LEASE = "lease.json"
LEASE_GRACE = 30.0              # seconds added to 3 epochs before a lease counts as stale


class WarmupCache:
    """Warm-up checkpoints of one experiment, keyed by :func:`warmup_key`."""

    def __init__(self, root: str | Path, epochs: list[int] | None = None):
        """``epochs``: which warm-up epochs to store (None: all); a study passes f - 1 for every
        first-update epoch f its space can produce, so the cache stays small."""
        self.root = Path(root)
        self.epochs = None if epochs is None else set(epochs)

    def _dir(self, config: Config) -> Path:
        return self.root / warmup_key(config)

    def wants(self, epoch: int, first_update: int) -> bool:
        return 1 <= epoch < first_update and (self.epochs is None or epoch in self.epochs)

    def store(self, trainer, epoch: int) -> Path:
        """Store the trainer's state after warm-up epoch ``epoch`` (atomic; idempotent)."""
        directory = self._dir(trainer.config)
        path = directory / f"epoch_{epoch}.pt"
        if not path.exists():
            save_torch(path, trainer.checkpoint_state())
            readme = directory / "config.yaml"
            if not readme.exists():
                atomic_write_text(readme, dump_config(trainer.config))
        return path

    def renew_lease(self, trainer, epoch: int, first_update: int, epoch_seconds: float) -> None:
        """This trial is training ``key``'s warm-up: it has finished ``epoch``."""
        atomic_write_json(self._dir(trainer.config) / LEASE,
                          {"first_update": first_update, "epoch": epoch,
                           "epoch_seconds": epoch_seconds, "time": time.time()})

    def _lease(self, config: Config) -> dict | None:
        try:
            lease = json.loads((self._dir(config) / LEASE).read_text())
            stale = time.time() - lease["time"] > 3 * lease["epoch_seconds"] + LEASE_GRACE
            return None if stale else lease
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def wait_for_producer(self, config: Config, first_update: int, poll: float = 1.0,
                          sleep=time.sleep) -> float:
        """Wait while a live trial of the same warm-up is still producing an epoch this trial
        could start from (below ``first_update``, and one that producer will store); returns
        the seconds waited."""
        waited = 0.0
        while True:
            lease = self._lease(config)
            if lease is None:
                return waited
            reachable = min(first_update, int(lease["first_update"])) - 1
            have = max([e for e in self.cached_epochs(config) if e < first_update], default=0)
            wanted = [e for e in (self.epochs or range(1, reachable + 1)) if have < e <= reachable]
            if not wanted or int(lease["epoch"]) >= reachable:
                return waited
            sleep(poll)
            waited += poll

    def cached_epochs(self, config: Config) -> list[int]:
        directory = self._dir(config)
        if not directory.is_dir():
            return []
        found = (re.fullmatch(r"epoch_(\d+)\.pt", p.name) for p in directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load_into(self, trainer, first_update: int) -> int:
        """Restore the largest cached epoch below ``first_update`` into ``trainer``; returns that
        epoch (the epochs this trial skips), or 0 when nothing fits."""
        usable = [e for e in self.cached_epochs(trainer.config) if e < first_update]
        if not usable:
            return 0
        epoch = usable[-1]
        trainer.load_checkpoint(self._dir(trainer.config) / f"epoch_{epoch}.pt", method_state=False)
        return epoch
