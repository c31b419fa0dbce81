"""The budget's cost model: seconds per epoch, per importance update and per trial start-up of
each run, measured from the study's own reports (see budget.py's module docstring for how the
plan uses them), and the search phase's slot utilisation. No Ray here."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

PRIOR_FRACTION = 0.5           # of N, for a trial under ASHA before any trial finished


@dataclass
class CostModel:
    """Measured seconds per run: plain epochs, update epochs, trial start-ups; trained
    fractions of N of finished trials (all, and unpruned ones)."""

    epoch: dict[str, list[float]] = field(default_factory=dict)
    update: dict[str, list[float]] = field(default_factory=dict)
    startup: dict[str, list[float]] = field(default_factory=dict)
    overhead: dict[str, list[float]] = field(default_factory=dict)   # per trial, beyond epochs
    # run -> fractions of its N its ended trials trained (all; unpruned ones)
    fractions: dict[str, list[float]] = field(default_factory=dict)
    full_fractions: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)   # run -> relative epoch cost (prior)
    # run -> epoch seconds probed before any trial (forecast.probe_epoch_seconds); used only
    # while no run has a measured epoch
    probe: dict[str, float] = field(default_factory=dict)
    probe_overhead: dict[str, float] = field(default_factory=dict)  # its data load + model build
    _last: dict[str, int] = field(default_factory=dict)      # trial id -> last reported epoch
    # trial id -> [seconds its session reported, its first report's, its plain epochs']
    _session: dict[str, list] = field(default_factory=dict)

    def observe(self, run: str, trial_id: str, result: dict) -> None:
        """One trial report (``epoch``, ``time_this_iter_s``, ``importance_update``)."""
        epoch, seconds = result.get("epoch"), result.get("time_this_iter_s")
        if epoch is None or seconds is None:
            return
        previous = self._last.get(trial_id)
        self._last[trial_id] = int(epoch)
        update = bool(result.get("importance_update"))
        if previous is None or int(epoch) != previous + 1:   # a session's first report
            self.startup.setdefault(run, []).append(float(seconds))
            self._session[trial_id] = [float(seconds), float(seconds), []]
            return
        session = self._session.setdefault(trial_id, [0.0, 0.0, []])
        session[0] += float(seconds)
        if not update:
            session[2].append(float(seconds))
        kind = self.update if update else self.epoch
        kind.setdefault(run, []).append(float(seconds))

    def trial_wall(self, run: str, trial_id: str, wall_s: float) -> None:
        """A trial session took ``wall_s`` as the driver saw it (start to end): what it cost
        beyond its epochs (actor start, imports, data loading, checkpoint syncs) is its
        overhead, the part ``time_this_iter_s`` does not see."""
        if trial_id not in self._session:       # no report this session: nothing to price
            return
        reported, first, plain = self._session.pop(trial_id)
        # beyond what its own reports timed, plus its first report's start-up over its own
        # epochs (not the run's median epoch: a searched size makes epochs cost 1x-7x each
        # other, and the run's median would count a slow config's epochs as overhead)
        own = statistics.median(plain) if plain else first
        self.overhead.setdefault(run, []).append(max(0.0, wall_s - reported + max(0.0, first - own)))

    def finished(self, epochs: int, max_epochs: int, pruned: bool, run: str = "") -> None:
        """A trial of ``run`` ended after ``epochs`` of ``max_epochs`` (pruned: stopped by the
        scheduler)."""
        fraction = min(1.0, epochs / max_epochs) if max_epochs else 1.0
        self.fractions.setdefault(run, []).append(fraction)
        if not pruned:
            self.full_fractions.setdefault(run, []).append(fraction)

    @staticmethod
    def _median(values: dict[str, list[float]], run: str) -> float | None:
        if values.get(run):
            return statistics.median(values[run])
        others = [statistics.median(v) for v in values.values() if v]
        return statistics.median(others) if others else None

    def epoch_seconds(self, run: str) -> float | None:
        """The run's median plain epoch; a run not measured yet: the measured runs' medians,
        each scaled by the relative cost prior (``weights``, 1 when unknown), their median;
        with no run measured, the probed epochs (``probe``) scaled the same way."""
        if self.epoch.get(run):
            return statistics.median(self.epoch[run])
        w = self.weights.get(run, 1.0)
        others = [statistics.median(v) * w / self.weights.get(r, 1.0)
                  for r, v in self.epoch.items() if v]
        if not others:              # nothing measured: the probe, the same way
            others = [s * w / self.weights.get(r, 1.0) for r, s in self.probe.items()]
        return statistics.median(others) if others else None

    def update_extra_seconds(self, run: str) -> float:
        """Extra seconds of an update epoch over a plain one (0 when nothing is known)."""
        base = self.epoch_seconds(run)
        if base is None:
            return 0.0
        if self.update.get(run):
            return max(0.0, statistics.median(self.update[run]) - base)
        ratios = [statistics.median(u) / statistics.median(self.epoch[r]) - 1.0
                  for r, u in self.update.items() if u and self.epoch.get(r)]
        return max(0.0, statistics.median(ratios)) * base if ratios else 0.0

    def full_trial_seconds(self, run: str, epochs: int, updates: int,
                           cold: bool = False) -> float | None:
        """A trial of ``epochs`` epochs and ``updates`` updates; ``cold``: in a fresh worker
        (a seed re-run is a new Ray task), priced with the largest overhead seen (the first
        trials' cold actor starts) instead of the median (Tune reuses warm actors)."""
        base = self.epoch_seconds(run)
        if base is None:
            return None
        overhead = self._median(self.overhead, run)
        if cold and self.overhead.get(run):
            overhead = max(self.overhead[run])
        if overhead is None:             # no trial ended yet: the first report's start-up,
            startup = self._median(self.startup, run)    # else the probe's
            overhead = (max(0.0, startup - base) if startup is not None
                        else statistics.median(self.probe_overhead.values()) if self.probe_overhead
                        else 0.0)
        return epochs * base + updates * self.update_extra_seconds(run) + overhead

    def trial_fraction(self, prior: float = PRIOR_FRACTION, run: str | None = None) -> float:
        """The mean fraction of N ``run``'s ended trials trained; before one of them ended, the
        mean over every run's (another N, another clock: a borrowed estimate); ``prior``
        before any ended."""
        return _mean_of(self.fractions, run, prior)

    def seed_fraction(self, run: str | None = None) -> float:
        """The same over unpruned trials (how much of N a seed re-run trains; prior 1.0)."""
        return _mean_of(self.full_fractions, run, 1.0)

    def to_dict(self) -> dict:
        runs = sorted(set(self.epoch) | set(self.update) | set(self.startup))
        return {"runs": {r: {"epoch_s": _round(self.epoch_seconds(r)),
                             "update_extra_s": _round(self.update_extra_seconds(r)),
                             "measured_epochs": len(self.epoch.get(r, [])),
                             "measured_updates": len(self.update.get(r, []))} for r in runs},
                "trial_fraction": round(self.trial_fraction(), 4),
                "seed_fraction": round(self.seed_fraction(), 4),
                "samples": {"epoch": self.epoch, "update": self.update, "startup": self.startup,
                            "overhead": self.overhead, "probe": self.probe,
                            "probe_overhead": self.probe_overhead,
                            "fractions": self.fractions, "full_fractions": self.full_fractions}}

    @classmethod
    def from_dict(cls, raw: dict) -> "CostModel":
        s = raw.get("samples", {})
        return cls(epoch=dict(s.get("epoch", {})), update=dict(s.get("update", {})),
                   startup=dict(s.get("startup", {})), overhead=dict(s.get("overhead", {})),
                   probe=dict(s.get("probe", {})), probe_overhead=dict(s.get("probe_overhead", {})),
                   fractions=_by_run(s.get("fractions", {})),
                   full_fractions=_by_run(s.get("full_fractions", {})))


def _mean_of(values: dict[str, list[float]], run: str | None, prior: float) -> float:
    if run is not None and values.get(run):
        return statistics.mean(values[run])
    pooled = [v for vs in values.values() for v in vs]
    return statistics.mean(pooled) if pooled else prior


def _by_run(raw) -> dict[str, list[float]]:
    """A ledger's fractions: per run, or (an older ledger) one pooled list, kept under ""."""
    return {"": list(raw)} if isinstance(raw, list) else {r: list(v) for r, v in raw.items()}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def asha_expected(rungs: list[float], reduction_factor: float, end: float) -> float:
    """ASHA's expected trial length, in its clock's unit, when each rung keeps ``1 /
    reduction_factor`` of the trials reaching it and a trial ends at ``end`` at the latest:
    ``r_0 + sum_k (r_k - r_(k-1)) / rf^k`` over the rungs below ``end``, then ``end``."""
    points = [r for r in rungs if r < end] + [end]
    total = points[0]
    for k in range(1, len(points)):
        total += (points[k] - points[k - 1]) / reduction_factor ** k
    return total


def slot_utilisation(busy: list[tuple[float, float]], slots: int, start: float,
                     end: float) -> float | None:
    """Busy slot-seconds / slot-seconds from ``start`` to ``end`` of trial sessions ``busy``
    ((start, end) each). Busy slot-seconds integrate min(sessions running, slots) over time, so
    the callbacks' latency (a reused actor's next trial can start before the last one's end is
    seen) never counts a slot twice. None for an empty span."""
    span = (end - start) * slots
    events = sorted([(a, 1) for a, _ in busy] + [(b, -1) for _, b in busy])
    used, running, last = 0.0, 0, None
    for t, step in events:
        if last is not None:
            used += min(running, slots) * (t - last)
        running, last = running + step, t
    return used / span if span > 0 else None


def list_schedule_bound(jobs: list[float], slots: int) -> float:
    """An upper bound on the makespan of ``jobs`` (seconds) started in any order, each on the
    slot that frees first (Graham's list scheduling): sum / slots + (1 - 1/slots) x the
    longest; 0 without jobs."""
    if not jobs:
        return 0.0
    return sum(jobs) / slots + (1 - 1 / slots) * max(jobs)


def trial_costs(cost: CostModel, run: str, full: float, asha: tuple[str, float, float] | None,
                n: int, updates: int) -> tuple[float, float]:
    """(expected, first-decision) seconds of a new trial of ``run`` (N ``n`` epochs, ``updates``
    importance updates), given a ``full`` one and its ASHA (clock "epochs"|"seconds", first
    rung, reduction factor; None: no ASHA). Expected: ``full`` times the fraction of N the
    run's ended trials trained (the study's until one of its own ended), before any ended
    ASHA's expected length if each rung kept 1/rf of the trials (without ASHA,
    ``PRIOR_FRACTION``); under ASHA never less than the first decision, which every trial
    reaches (a borrowed fraction of seconds-clock runs priced a guided trial below its own
    first rung). First decision: what a trial needs to be compared with the others: ASHA's
    first rung (guided: after its first importance update), without ASHA a full trial."""
    if asha is None:
        return full * cost.trial_fraction(run=run), full
    clock, grace, rf = asha
    if clock == "seconds":
        rungs = [grace * rf ** k for k in range(64) if grace * rf ** k < full]
        prior = asha_expected(rungs, rf, full) / full if full > 0 else 1.0
        first = min(full, grace)
        return max(first, full * cost.trial_fraction(prior, run)), first
    offset = n // (updates + 1) - 1 if updates else 0   # guided epochs count from the first update
    rungs = [offset + grace * rf ** k for k in range(64) if offset + grace * rf ** k < n]
    prior = asha_expected(rungs, rf, n) / n
    first = min(full, full * (offset + grace) / n)
    return max(first, full * cost.trial_fraction(prior, run)), first
