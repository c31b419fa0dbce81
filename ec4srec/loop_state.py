"""What the training loop carries from epoch to epoch (:class:`LoopState`, saved in every
checkpoint) and the ``history.csv`` it writes from it (:func:`history_csv`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoopState:
    """Everything besides model/optimizer/method that the loop carries across epochs."""

    epoch: int = 0                   # last completed epoch (1-based)
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0       # wall seconds of training + validation, all epochs
    train_cpu_seconds: float = 0.0   # CPU seconds of this process (all threads) over the same
                                     # spans: the ASHA cpu-seconds clock (search/tuner.py)
    stopped_early: bool = False

    def patience_ran_out(self, patience: int, min_epochs: int) -> bool:
        """Early stopping's rule, after the last completed epoch."""
        return self.epoch > 0 and self.bad_epochs >= patience and self.epoch >= min_epochs

    def finished(self, epochs: int, patience: int, min_epochs: int) -> bool:
        """Whether training is over: N epochs done, or stopped early (a checkpoint written at
        the stopping epoch says so by its patience before the loop sets ``stopped_early``)."""
        return self.stopped_early or self.epoch >= epochs or self.patience_ran_out(patience,
                                                                                   min_epochs)

    def count_seconds(self, wall: float, cpu: float) -> None:
        """Add an epoch's wall and CPU seconds (training + validation)."""
        self.train_seconds += wall
        self.train_cpu_seconds += cpu


def history_csv(history: list[dict]) -> str:
    """One row per epoch (train losses, validation metrics), columns in first-seen order; a
    value an epoch lacks is empty."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    lines = [",".join(keys)]
    lines += [",".join("" if h.get(k) is None else repr(h[k]) for k in keys) for h in history]
    return "\n".join(lines) + "\n"
