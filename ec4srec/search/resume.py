"""``--resume``: a study's saved options read back (``study.json``), and what the command line
may change in them: where the study lives now, the address, verbosity, status interval, total
time budget, runs at once, carries off (``--no-carry``), data directory, a narrower search space, added methods, ``--staged``
and stage 2's epoch budget (before it starts). Nothing here starts Ray."""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from ..paths import expand_path
from ..registry import PLAIN
from ..report.results import RUN_RECORD
from .options import (SPACE_FILE, StudyOptions, check_runs, narrow_space, read_manifest,
                      run_name)
from .ranges import load_ranges


def resumed_options(opts: StudyOptions, manifest: Path) -> StudyOptions:
    """The options of the study at ``manifest`` with the command line's allowed changes
    (``opts``: the parsed command line). Raises ConfigError (or OSError) naming the problem."""
    new_space, new_budget = opts.search_space, opts.time_budget
    saved = read_manifest(manifest)
    version = saved.pop("_version")
    saved.update(address=opts.address, verbose=opts.verbose)
    if saved.get("optuna_storage") and "optuna_prefix" not in saved:
        saved["optuna_prefix"] = ""      # begun before prefixes: its runs' studies are <run>
    if "://" not in opts.storage_path and "://" not in saved.get("storage_path", ""):
        # the study lives where it was found (moved, exported, a fresh checkout)
        saved.update(storage_path=opts.storage_path, name=opts.name)
    if opts.data_dir or (saved.get("data_dir") and not _is_dir(saved["data_dir"])):
        saved["data_dir"] = opts.data_dir     # else $EC4SREC_DATA_DIR
    if opts.status_every is not None:
        saved["status_every"] = opts.status_every
    if not opts.carry:               # --resume --no-carry: no carries from now on
        saved["carry"] = False
    if new_budget is not None:       # a resumed study may get a new total budget
        saved["time_budget"] = new_budget
    if getattr(opts, "new_concurrency", None) is not None:
        # runs not yet finished share the slots with more (or fewer) others from now on: a
        # run whose trials are all created no longer leaves its tail's slots idle
        saved["concurrent_runs"] = opts.new_concurrency
    extend(saved, getattr(opts, "extend", None), opts.staged,
           verb="--plan-only: would add" if getattr(opts, "plan_only", False) else "adding")
    if opts.stage2_epochs is not None:
        set_stage2_epochs(saved, opts.stage2_epochs)
    opts = StudyOptions(**saved)
    if new_space is not None:
        narrow_space(opts, new_space, version)
    active = opts.exp_dir / SPACE_FILE
    # the study's own space, checked now, with every run's needs (its methods, stages and N
    # may have changed); a study of an older ec4srec without one: its original space
    check_runs(opts, load_ranges(active if active.exists() else opts.search_space))
    return opts


def _is_dir(path: str) -> bool:
    """Whether a saved data directory (an exported study records ``$EC4SREC_DATA_DIR`` or
    ``~/...``) is a folder here."""
    try:
        return Path(expand_path(path)).is_dir()
    except ValueError:
        return False


def extend(saved: dict, methods: list[str] | None, staged: bool, verb: str = "adding") -> None:
    """``--resume --methods M...`` adds the methods the study lacks (new runs, after its own);
    ``--resume --staged`` makes a study whose finished runs are all the plain method's the
    first stage of a staged study. Raises ConfigError where that cannot hold."""
    added = [m for m in methods or [] if m not in saved["methods"]]
    saved["methods"] = [*saved["methods"], *added]
    if added:
        print(f"[search] {verb} {', '.join(added)} to the study", flush=True)
    if not staged or saved.get("staged"):
        return
    if PLAIN not in saved["methods"]:
        raise ConfigError(f"--staged: the study has no {PLAIN} run to be its stage 1")
    probe = StudyOptions(**saved).finalize()
    others = [run_name(k) for k in probe.runs() if k[1] != PLAIN]
    started = [r for r in others if run_started(probe.exp_dir, r)]
    if started:
        raise ConfigError(f"--staged: {', '.join(started)} started outside a staged study (on "
                          "the untuned base); start a new study instead")
    saved["staged"] = True


def run_started(exp: Path, run: str) -> bool:
    """Whether ``run`` of the study in ``exp`` has begun: its Ray folder, its finished-run
    record, a trial record or its Optuna study in the study's journal (a run whose driver died
    before its first trial ended has only the last)."""
    if any((exp / sub).exists() for sub in (run, RUN_RECORD.format(run=run), f"trials/{run}")):
        return True
    journal = exp / "optuna.journal"
    try:
        with journal.open() as f:
            return any(f'"study_name":"{run}"' in line.replace(" ", "") for line in f)
    except OSError:
        return False


def set_stage2_epochs(saved: dict, epochs: int) -> None:
    """``--resume --stage2-epochs N``: stage 2's epoch budget, while none of its runs started
    (its trials' update schedules follow N). Raises ConfigError otherwise."""
    if not saved.get("staged"):
        raise ConfigError("--stage2-epochs: only a --staged study has a stage 2")
    probe = StudyOptions(**saved).finalize()
    started = [run_name(k) for k in probe.runs() if probe.stage_of(k[1]) == "methods"
               and run_started(probe.exp_dir, run_name(k))]
    if started and epochs != saved.get("stage2_epochs"):
        raise ConfigError(f"--stage2-epochs: stage 2 has started ({', '.join(started)}); its "
                          f"epoch budget cannot change")
    saved["stage2_epochs"] = epochs


