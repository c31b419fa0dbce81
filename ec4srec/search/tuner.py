"""One run's Ray Tune objects: the cluster connection, the Tuner (new or restored) with its
searcher, scheduler, stopper and callbacks, and the study constants every trial gets.

Contracts:
- :func:`make_tuner` builds a run's Tuner from the study's options, active space and budget,
  or restores an unfinished run's from its folder (and gives its restored searcher, stopper
  and callbacks this driver's budget: compat.attach_budget).
- :func:`trial_constants` is the ``study`` dict :func:`~ec4srec.search.trainable.run_trial`
  gets (base config, warm-up cache, checkpoint cadence, ASHA decision epochs).
- :func:`run_trainable` names each run's trainable ``train_<run>``: Ray registers trainables
  cluster-wide by name, and runs sharing the cluster must not share one.
"""
from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ..registry import PLAIN, is_guided, warmup_baselines
from ..report.results import RUN_RECORD
from . import carry, compat, durable
from .budget import Budget
from .compat import ProgressCsvLogger, ResultJsonLogger
from .options import (SECONDS_CLOCKS, SPACE_FILE, StudyOptions, asha_clock, asha_grace,
                      capped_slots, clock_scale, optuna_storage, optuna_study_name, run_base,
                      run_name)
from .space import SearchSpace
from .trainable import train_trial
from .trial_files import OBJECTIVE
from .watch import BudgetedOptunaSearch, BudgetStopper, StudyWatcher

ASHA_METRIC = "valid/select_ndcg@10"   # NDCG@10 under train.select_protocol (trainable.py)
ASHA_CLOCK = "guided_epoch"          # epochs since the first importance update (see trainable)
ASHA_SECONDS = "train_seconds"       # --asha-clock seconds: a trial's training + validation time
ASHA_CPU_SECONDS = "train_cpu_seconds"   # --asha-clock cpu-seconds: the CPU time of the same


def connect(opts: StudyOptions) -> None:
    """Connect to Ray and say to which. No ``--address`` (None): the cluster in RAY_ADDRESS
    when that is set, else a private local instance, never another program's cluster found on
    the machine. ``local``: a private local instance always. ``auto``: RAY_ADDRESS, else the
    cluster this machine last started or joined (as after ``ray up``) when it answers, else a
    local instance. Any other value: that cluster."""
    if ray.is_initialized():
        return
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
    os.environ.update(env)
    # Tune's "experiment state snapshotting ... may become a bottleneck" warning fires whenever
    # trials checkpoint every epoch (by design here: docs/search.md), 27 blocks in a smoke test;
    # it says nothing our user can act on (a user's own setting wins)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # EC4SREC_* (EC4SREC_DATA_DIR, ...) reach the trials on every node
    env.update({k: v for k, v in os.environ.items() if k.startswith("EC4SREC_")})
    kwargs = {"runtime_env": {"env_vars": env}, "log_to_driver": True}
    env_address = os.environ.get("RAY_ADDRESS") or None
    address, source = opts.address, "--address"
    if address is None:                       # not asked: RAY_ADDRESS, else a private one
        address, source = env_address or "local", "RAY_ADDRESS"
    elif address == "auto" and env_address not in (None, "auto", "local"):
        address, source = env_address, "RAY_ADDRESS"
    if address not in ("auto", "local"):
        ray.init(address=address, **kwargs)
        print(f"[search] joined the Ray cluster at {address} ({source})", flush=True)
    else:
        recorded = compat.recorded_cluster_address() if address == "auto" else None
        if recorded and answers(recorded):
            ray.init(address="auto", **kwargs)
            print(f"[search] joined the running Ray cluster at {recorded} (--address auto; "
                  "--address local starts a fresh one)", flush=True)
        else:
            if recorded:     # Ray would retry a dead GCS for minutes: start a local one instead
                print(f"[search] the Ray cluster last recorded here ({recorded}) does not answer; "
                      "starting a local one", flush=True)
            ray.init(address="local", include_dashboard=None, **kwargs)
            print("[search] started a local Ray instance" + (
                " (--address auto joins a cluster running on this machine, as after `ray up`)"
                if opts.address is None else ""), flush=True)
    if opts.gpus_per_trial is None:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus and opts.asha_clock == "cpu-seconds":
            print("[search] --asha-clock cpu-seconds: the trials run on CPUs (a GPU trial's CPU "
                  "time is not its cost; --asha-clock seconds for GPU trials)", flush=True)
        opts.gpus_per_trial = 0.25 if gpus and opts.asha_clock != "cpu-seconds" else 0.0


def address_problem(address: str | None) -> str | None:
    """The error line for an explicit ``host:port`` (not auto, local or ray://) where no Ray
    cluster answers: ray.init would retry it for minutes. None when it answers or is not one."""
    if address in (None, "auto", "local") or "://" in address or answers(address):
        return None
    return (f"--address {address}: no Ray cluster answers there (start one with 'ray start "
            f"--head' or 'ray up cluster.yaml', or use --address local)")


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether host:port accepts a TCP connection within ``timeout`` seconds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def asha_rungs(grace: int, rf: float, max_t: int) -> list[int]:
    """ASHA's decision epochs (in guided epochs): grace, grace * rf, ... below ``max_t``."""
    rungs, t = [], float(grace)
    while t < max_t:
        rungs.append(int(round(t)))
        t *= rf
    return rungs


def baseline_warmups(opts: StudyOptions, key, k: int) -> list[dict]:
    """Warm-up configs for a guided run with ``k`` keys (none when ``k`` is 0): the best finished trials of the study's
    cl4srec and duorec runs on the same dataset and backbone (the warm-up loss is their two
    terms), best first, alternating between the two (SearchSpace keeps the run's warm-up params
    of each and drops repeats). Empty when neither run
    has finished (e.g. runs going concurrently, or a study without them)."""
    dataset, method, backbone = key
    if not k or not is_guided(method):
        return []
    ranked = []
    for base in warmup_baselines(method):
        path = opts.exp_dir / RUN_RECORD.format(run=run_name((dataset, base, backbone)))
        if not path.exists():
            continue
        records = json.loads(path.read_text())
        scored = [(max((h.get("valid/select_ndcg@10", h.get("valid/ndcg@10", -1.0))
                        for h in r["history"]), default=-1.0),
                   r["params"]) for r in records if r["history"] and not r["error"]]
        ranked.append([p for _, p in sorted(scored, key=lambda x: -x[0])])
    out = [r[i] for i in range(max((len(r) for r in ranked), default=0)) for r in ranked
           if i < len(r)]
    return out                  # SearchSpace takes the first k distinct ones


def run_trainable(name: str):
    """:func:`train_trial` under the name ``train_<run>``: Ray registers a run's trainable in a
    cluster-wide registry by its name, so runs sharing the cluster at once (``--concurrent-runs``)
    must not share one, or a trial could start with another run's study constants."""
    def trainable(params, study):
        return train_trial(params, study)
    trainable.__name__ = trainable.__qualname__ = "train_" + re.sub(r"\W", "_", name)
    return trainable


def make_scheduler(opts: StudyOptions, n_epochs: int, method: str = PLAIN):
    """The run's trial scheduler (:func:`~ec4srec.search.options.asha_clock`). ASHA on the
    ``epochs`` clock compares trials at guided epochs (the rungs :func:`asha_rungs` lists,
    where trials checkpoint); on the ``seconds`` clock at seconds of training and validation
    (``train_seconds``, restored with a checkpoint), so that settings whose epochs cost
    differently are compared at equal cost; on the ``cpu-seconds`` clock at the trial
    process's CPU seconds of the same spans (``train_cpu_seconds``), which other programs on a
    shared machine do not stretch; the seconds clocks' rungs run up to a day per trial
    (``max_t``), past which a trial is stopped."""
    clock = asha_clock(opts, method)
    if clock is None:
        return FIFOScheduler()
    grace = asha_grace(opts, clock, n_epochs)
    seconds = clock in SECONDS_CLOCKS
    attr = {"seconds": ASHA_SECONDS, "cpu-seconds": ASHA_CPU_SECONDS}.get(clock, ASHA_CLOCK)
    day = 86_400 * clock_scale(opts, clock)
    return ASHAScheduler(time_attr=attr, metric=ASHA_METRIC,
                         mode="max", max_t=max(day, grace + 1) if seconds else n_epochs,
                         grace_period=grace, reduction_factor=opts.reduction_factor)


def trial_constants(opts: StudyOptions, base, space: SearchSpace) -> dict:
    """The ``study`` dict every trial of a run gets (trainable.run_trial's contract). On the
    seconds clock there are no decision epochs: a trial checkpoints every
    ``checkpoint_every`` epochs only."""
    n_epochs = base.train.epochs
    clock = asha_clock(opts, base.method.name)
    return {"base": base.to_dict(), "checkpoint_every": opts.checkpoint_every,
            "decision_epochs": asha_rungs(asha_grace(opts, clock, n_epochs),
                                          opts.reduction_factor, n_epochs)
            if clock == "epochs" else [], "verbose": opts.verbose,
            "warmup_dir": str(opts.exp_dir / "warmup") if opts.warm_start else None,
            "warmup_epochs": [f - 1 for f in space.first_update_epochs() if f > 1]}


def make_tuner(opts: StudyOptions, key, ranges, planned: int | None = None,
               budget: Budget | None = None,
               lanes: int | Callable[[], int] = 1) -> tuple[tune.Tuner, int]:
    """A new or restored Tuner for one run, and its number of trials: what ``--num-samples``
    leaves the run (a restored run keeps the number it was created with); the budget's gate,
    not this number, ends a budgeted run (``planned``, the budget's estimate of the trials its
    share holds, sizes the warm-up points and the watcher's count only). ``budget``: the
    study's, given to the run's searcher, stopper and watcher (None: no budget). ``lanes``:
    the runs sharing the cluster with this one, or a function giving that number now
    (``run_concurrently``); the run holds at most ceil(slots / lanes) trials at once
    (:func:`lane_cap`, ``--max-concurrent`` instead when given), the budget's plan for a run
    of concurrent runs, so that one run cannot hold every slot while another's trials wait
    and its share of the budget runs out, and a run takes the slots another leaves the
    moment it ends. A restored Tuner gets the same (``compat.keep_current_concurrency_limits``:
    not the limit it was pickled with)."""
    _, method, backbone = key
    name = run_name(key)
    base = run_base(opts, key)
    n_epochs = base.train.epochs
    space = SearchSpace(method, backbone, n_epochs, ranges, active=opts.exp_dir / SPACE_FILE,
                        warmup_configs=baseline_warmups(opts, key, ranges.get("warmup_keys") or 0),
                        stage=opts.stage_of(method))
    num = 1 if space.empty else opts.num_samples
    study = trial_constants(opts, base, space)
    resources = {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial or 0}
    # the run's carried trials (checked); the trials that continue one load its bytes, which
    # go to the trials with the study constants (trainable.py)
    carries = carry.read_carries(opts.exp_dir, name)

    def trainable_for(carried: dict[str, carry.Carry], fn=None):
        constants = {**study, "carried": {cid: c.checkpoint_bytes() for cid, c in carried.items()}}
        return tune.with_resources(tune.with_parameters(fn or run_trainable(name), study=constants),
                                   resources)
    path = f"{opts.storage_path}/{opts.name}/{name}"
    limit, cap = lane_cap(opts, lanes)
    if tune.Tuner.can_restore(path):
        print(f"[search] {name}: restoring unfinished run from {path}", flush=True)
        compat.keep_restores_on_kept_checkpoints()
        # every carry: a trial that began continuing one may have no checkpoint of its own yet
        try:
            tuner = tune.Tuner.restore(path, trainable_for(carries), resume_unfinished=True,
                                       resume_errored=True)
        except ValueError:      # a run of an older ec4srec: its trainable was "train_trial"
            tuner = tune.Tuner.restore(path, trainable_for(carries, train_trial),
                                       resume_unfinished=True, resume_errored=True)
        compat.attach_budget(tuner, budget)
        compat.keep_current_concurrency_limits()
        compat.restored_tune_config(tuner).max_concurrent_trials = limit
        compat.restored_tune_config(tuner).search_alg.lane_cap = cap
        compat.restored_tune_config(tuner).search_alg.on_carry = \
            carry_replayer(compat.restored_tune_config(tuner).scheduler)
        register_searcher(budget, name, compat.restored_tune_config(tuner).search_alg)
        return tuner, compat.restored_num_samples(tuner, num)
    storage = optuna_storage(opts)
    existing_names = {s.study_name for s in storage.get_all_studies()}
    study_name = optuna_study_name(opts, name)
    shown = min(num, planned or num)      # the budget's estimate (module docstring)
    points = space.points_to_evaluate(shown) or None
    sampler_seed = opts.seed
    records: list[dict] = []
    continued: dict[str, carry.Carry] = {}     # restarts that continue a carried trial
    if study_name in existing_names:
        # its Ray folder is gone (a new machine, a fresh checkout): go on from the durable state
        records = durable.trial_records(opts.exp_dir, name)
        existing = optuna.load_study(study_name=study_name, storage=storage)
        restarts, counts = durable.reconcile(existing, records, OBJECTIVE)
        # a fresh sampler with the study's seed would draw its first (random) suggestions
        # again, repeating the first trials; seeded on from the trials it already holds
        sampler_seed = opts.seed + len(existing.trials)
        # the trials the run still lacks: --num-samples less the ended ones
        num = max(0, opts.num_samples - len(records))
        # the restarts first, then the points still queued (compat.requeue_waiting)
        queued = compat.requeue_waiting(existing)
        # the restarts that continue a carry first, the most promising first (the gate admits
        # them: watch.py; a lane cap of one runs them one at a time)
        restarts = carry.order_restarts(carries, restarts, OBJECTIVE)
        continued = carry.match_restarts(carries, restarts[:num])
        points = [params for _, params in restarts[:num]] + queued or None
        print(f"[search] {name}: resuming from the durable state ({len(records)} ended trials "
              f"kept, {counts['completed']} of them told to Optuna now; {len(restarts)} "
              f"unfinished restarted: {len(continued)} from their carried checkpoints, "
              f"{len(restarts) - len(continued)} from scratch; {len(queued)} queued point(s) "
              f"after them); up to {num} more trial(s)", flush=True)
    searcher = BudgetedOptunaSearch(space=space, metric=OBJECTIVE, mode="max", storage=storage,
                                    study_name=study_name, budget_run=name, budget=budget,
                                    points_to_evaluate=points,
                                    sampler=optuna.samplers.TPESampler(seed=sampler_seed))
    searcher.lane_cap = cap
    scheduler = make_scheduler(opts, n_epochs, method)
    searcher.carry_points = {carry.params_key(c.params): (rid, c.epoch, c.history)
                             for rid, c in continued.items()}
    searcher.on_carry = carry_replayer(scheduler)
    register_searcher(budget, name, searcher)
    # ASHA judges the new trials against the ended ones too, as an uninterrupted run's would
    if records and (seeded := compat.replay_asha(
            scheduler, [(str(r["trial_id"]), r.get("history") or []) for r in records])):
        print(f"[search] {name}: ASHA's rungs hold the results of {seeded} ended trial(s)",
              flush=True)
    tuner = tune.Tuner(
        trainable_for(continued),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=num,
                                    # also the number of trials Ray may create ahead
                                    # (pending): 1 without it, which starts trials one
                                    # actor start-up at a time and leaves slots idle
                                    max_concurrent_trials=limit,
                                    reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=f"{opts.storage_path}/{opts.name}",
            verbose=1 if opts.verbose else 0,        # our watcher's lines replace Ray's table
            stop=BudgetStopper(budget),
            callbacks=[durable.CarriedHistory(opts.exp_dir, name),     # before the loggers
                       ResultJsonLogger(), ProgressCsvLogger(),      # replace Ray's defaults
                       durable.TrialRecorder(opts.exp_dir, name, carry=opts.carry),  # after the loggers
                       StudyWatcher(name, min(num, shown), n_epochs, opts.status_every,
                                    budget)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures)))
    return tuner, num


def carry_replayer(scheduler) -> Callable[[str, list[dict]], None]:
    """``(trial id, history) -> None``: record a carried trial's past results in ``scheduler``'s
    rungs under the id of the trial that continues it (``compat.replay_asha``)."""
    return lambda trial_id, history: compat.replay_asha(scheduler, [(trial_id, history)], prefix="")


def register_searcher(budget: Budget | None, run: str, searcher) -> None:
    """Let the budget see the carried restarts ``searcher`` has yet to start
    (``Budget.closing``: a run with one may still start a trial)."""
    if budget is not None:
        budget.carries_left[run] = lambda: len(getattr(searcher, "carry_points", None) or {})


def lane_cap(opts: StudyOptions, lanes: int | Callable[[], int]) -> tuple[int, Callable[[], int] | None]:
    """(Tune's ``max_concurrent_trials`` for a run, the searcher's live cap or None):
    ``--max-concurrent`` when given (fixed, no live cap); else every slot for Tune and
    ceil(slots / lanes) for the searcher, read again at each trial it would start."""
    if opts.max_concurrent:
        return opts.max_concurrent, None
    slots = cluster_slots(opts)
    sharing = lanes if callable(lanes) else (lambda: lanes)
    return slots, lambda: -(-slots // max(1, sharing()))


def cluster_slots(opts: StudyOptions) -> int:
    """Trials that can run at once on the connected cluster."""
    res = ray.cluster_resources()
    if opts.gpus_per_trial:
        slots = int(res.get("GPU", 0) / opts.gpus_per_trial)
    else:
        slots = int(res.get("CPU", 1) / max(opts.cpus_per_trial, 1e-9))
    return capped_slots(opts, slots)


def trial_dirname(trial) -> str:
    """Short trial folder names (Ray's default embeds every param and can get too long)."""
    return f"trial_{trial.trial_id}"
