"""A study's options: ``StudyOptions`` (the command line of ``tune/search.py``, resolved), the
``study.json`` manifest that ``--resume`` reads back (checked: :func:`read_manifest`), each
run's base config, and the checks of a new study's inputs and of ``--resume --search-space``.
Nothing here starts Ray."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import atomic_write_json, atomic_write_text
from ..config import METHODS, Config, ConfigError
from ..paths import expand_path
from ..registry import PLAIN, is_guided
from ..report import results
from ..data.sources import DATASETS, SYNTHETIC
from ..typed import suggest
from .ranges import dump_ranges, is_packaged_name, load_ranges
from .space import SearchSpace, apply_params, narrowing_problem

STUDY_VERSION = 2                    # study.json format; 1 = no "version" key (same fields)
SPACE_FILE = "search_space.yaml"     # the study's active search space, in the experiment folder
SECONDS_GRACE = 300                  # --asha-clock seconds / cpu-seconds: the default first rung
SECONDS_CLOCKS = ("seconds", "cpu-seconds")   # the ASHA clocks that count seconds of a trial
RUN_THREAD_PREFIX = "ec4srec-run-"  # the threads of concurrent runs (runs.run_concurrently)


@dataclass
class StudyOptions:
    dataset: str = "sports"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    backbones: list[str] = field(default_factory=lambda: ["sasrec"])
    num_samples: int = 20
    max_epochs: int = 100
    gpus_per_trial: float | None = None       # None: 0.25 when the cluster has GPUs, else 0
    cpus_per_trial: float = 1.0
    max_concurrent: int = 0                   # 0: as many as resources allow
    storage_path: str = "~/ray_results"
    name: str | None = None                   # default: ec4srec-<dataset>
    local_dir: str | None = None              # non-Ray files when storage_path is a URI
    seed: int = 0                             # TPE seed
    search_space: str | None = None
    data_dir: str | None = None
    smoke_test: bool = False
    scheduler: str = "asha"
    asha_clock: str = "epochs"                # epochs (guided epochs) | seconds (train_seconds)
                                              # | cpu-seconds (train_cpu_seconds)
    grace_period: int | None = None           # ASHA's first rung, in the clock's unit; default:
                                              # max(1, min(10, N // 10)) epochs | 300 seconds
    reduction_factor: float = 3.0
    seeds: int = 3
    optuna_storage: str | None = None         # RDB URL; default: journal file in exp
    # in an RDB: the prefix of the runs' Optuna study names, fixed when the study begins (its
    # name then; a study resumed under another name keeps it)
    optuna_prefix: str | None = None
    overrides: list[str] = field(default_factory=list)
    address: str | None = None                # None: RAY_ADDRESS if set, else private | local | auto | ray://... | host:port
    max_failures: int = 2
    warm_start: bool = True
    carry: bool = True                        # carried trials in the durable state (carry.py)
    checkpoint_every: int = 1
    verbose: bool = False
    time_budget: float | None = None          # seconds of the whole study (budget.py)
    concurrent_runs: int = 1                  # runs that share the cluster at once
    status_every: float | None = None         # seconds between summaries (None: 30 TTY, 120 log)
    staged: bool = False                      # stage 1: the plain method's base model; stage 2:
                                              # the other methods on its best (stage_of)
    stage2_epochs: int | None = None          # N of stage 2's runs (None: max_epochs)

    def finalize(self) -> "StudyOptions":
        """Apply --smoke-test and resolve defaults (idempotent)."""
        if self.optuna_storage and self.optuna_prefix is None:
            self.optuna_prefix = self.name
        if self.smoke_test:
            self.dataset = "synthetic"
            self.max_epochs = min(self.max_epochs, 6)
            self.stage2_epochs = self.stage2_epochs and min(self.stage2_epochs, 6)
            self.num_samples = min(self.num_samples, 4)
            self.seeds = min(self.seeds, 2)
            self.grace_period = self.grace_period or 1
            self.overrides = ["model.hidden_size=16", "model.num_layers=1", "model.inner_size=32",
                              "train.batch_size=256", *[o for o in self.overrides
                                                        if not o.startswith("model.hidden_size=")]]
        if not self.named_dataset and "://" not in self.dataset:
            # a file: absolute, so that every trial reads the same file whatever its cwd
            self.dataset = str(Path(self.dataset).expanduser().resolve())
        self.name = self.name or f"ec4srec-{self.dataset_label}"
        if "://" not in self.storage_path:
            self.storage_path = str(Path(self.storage_path).expanduser().resolve())
        else:   # tables, journal and warm-up cache stay on this machine: pin the folder
            self.local_dir = str(Path(self.local_dir or f"ec4srec-results/{self.name}")
                                 .expanduser().resolve())
        if self.data_dir:          # (an exported study records $EC4SREC_DATA_DIR or ~/...)
            try:
                self.data_dir = str(Path(expand_path(self.data_dir)).resolve())
            except ValueError as exc:
                raise ConfigError(f"--data-dir: {exc}") from None
        if self.search_space and not is_packaged_name(self.search_space) \
                and Path(self.search_space).expanduser().exists():
            self.search_space = str(Path(self.search_space).expanduser().resolve())
        return self

    @property
    def exp_dir(self) -> Path:
        if "://" in self.storage_path:
            return Path(self.local_dir or f"ec4srec-results/{self.name}").expanduser().resolve()
        return Path(self.storage_path) / self.name

    @property
    def named_dataset(self) -> bool:
        """A dataset known by name (not a file path)."""
        return self.dataset in DATASETS or self.dataset == SYNTHETIC

    @property
    def dataset_label(self) -> str:
        """The dataset's name in run names, file names and tables: a known dataset's name, or a
        file's name without its suffixes (``/data/beauty-5k.txt.gz`` -> ``beauty-5k``)."""
        if self.named_dataset:
            return self.dataset
        return Path(self.dataset).name.split(".")[0] or "data"

    def runs(self) -> list[tuple[str, str, str]]:
        """The study's (dataset, method, backbone) runs in order; staged: stage 1's first."""
        runs = [(self.dataset_label, m, b) for m in self.methods for b in self.backbones]
        if self.staged:
            runs.sort(key=lambda k: self.stage_of(k[1]) != "base")     # stable
        return runs

    def epochs_of(self, method: str) -> int:
        """The epoch budget N of a method's runs: ``stage2_epochs`` in a staged study's second
        stage (it sets the importance-update schedule), else ``max_epochs``."""
        if self.stage2_epochs and self.stage_of(method) == "methods":
            return self.stage2_epochs
        return self.max_epochs

    def stage_of(self, method: str) -> str | None:
        """None (not staged) | "base" (the plain method: searches the base model) |
        "methods" (any other: its own params and the retune keys, on stage 1's best)."""
        if not self.staged:
            return None
        return "base" if method == PLAIN else "methods"

    def resume_command(self) -> str:
        local = f" --local-dir {self.local_dir}" if "://" in self.storage_path else ""
        return (f"python tune/search.py --storage-path {self.storage_path} --name {self.name}"
                f"{local} --resume")


def run_name(key: tuple[str, str, str]) -> str:
    return "-".join(key)


def read_manifest(path: Path) -> dict:
    """The options saved in ``study.json``, checked: one ConfigError naming the file and the
    problem for a truncated or malformed file, another format version, an unknown option or a
    value of the wrong type."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object of study options, got {type(raw).__name__}")
    version = raw.pop("version", 1)
    if version not in (1, STUDY_VERSION):
        raise ConfigError(f"{path}: study format version {version!r}; this ec4srec reads versions "
                          f"1..{STUDY_VERSION} (written by another version?)")
    fields = {f.name: f for f in dataclasses.fields(StudyOptions)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown study options {unknown} (written by another version?)")
    for name, value in raw.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if default is None:
            ok = value is None or isinstance(value, (str, int, float)) and not isinstance(value, bool)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (isinstance(default, float) or isinstance(value, int))
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"{path}: option {name!r} has the wrong type: {value!r}")
    raw["_version"] = version
    return raw


def write_manifest(opts: "StudyOptions") -> None:
    atomic_write_json(opts.exp_dir / "study.json",
                      {"version": STUDY_VERSION, **dataclasses.asdict(opts)})


def base_config(opts: StudyOptions, method: str, backbone: str) -> Config:
    """The config every trial of a run starts from: flags, then --set overrides."""
    raw = Config().to_dict()
    raw["data"].update(dataset=opts.dataset, data_dir=opts.data_dir)
    raw["model"]["backbone"], raw["method"]["name"] = backbone, method
    epochs = opts.epochs_of(method)
    raw["train"].update(epochs=epochs, progress="off", tensorboard=False,
                        threads=trial_threads(opts))
    # the default p must fit a small budget (the searched p is capped the same way)
    raw["method"]["updates"] = max(1, min(raw["method"]["updates"], epochs - 1))
    return Config.from_dict(raw).with_overrides(opts.overrides)



def trial_threads(opts: StudyOptions) -> int:
    """A trial's torch threads: --cpus-per-trial, at least 1."""
    return max(1, int(opts.cpus_per_trial))


def capped_slots(opts: StudyOptions, slots: int) -> int:
    """Trial slots at most --max-concurrent (when set), at least 1."""
    return max(1, min(slots, opts.max_concurrent) if opts.max_concurrent else slots)


def clock_scale(opts: StudyOptions, clock: str | None) -> int:
    """Clock seconds per second of a trial's work: its threads on the cpu-seconds clock (t busy
    threads count t CPU seconds a second), else 1."""
    return trial_threads(opts) if clock == "cpu-seconds" else 1


def asha_clock(opts: StudyOptions, method: str) -> str | None:
    """The ASHA clock of a run: None without ASHA; ``--asha-clock`` for an unguided method; a
    guided method always ``epochs`` (guided epochs: its rungs must follow its importance
    updates, which a seconds clock would judge before the first one)."""
    if opts.scheduler != "asha":
        return None
    return "epochs" if is_guided(method) else opts.asha_clock


def asha_grace(opts: StudyOptions, clock: str | None, n_epochs: int) -> int:
    """ASHA's first rung in the clock's unit: --grace-period for runs on the --asha-clock (its
    unit), else the clock's default: 300 seconds (of each of a trial's threads on the
    cpu-seconds clock), or max(1, min(10, N // 10)) epochs (a guided run under a seconds clock)."""
    if opts.grace_period and clock == opts.asha_clock:
        return opts.grace_period
    if clock in SECONDS_CLOCKS:
        return SECONDS_GRACE * clock_scale(opts, clock)
    return max(1, min(10, n_epochs // 10))


def run_base(opts: StudyOptions, key: tuple[str, str, str]) -> Config:
    """The config a run's trials start from: :func:`base_config`, and in a staged study's
    second stage with the best stage-1 trial's params (the plain method's run on the same
    backbone) applied on top. Raises ConfigError when that run has not finished."""
    dataset, method, backbone = key
    base = base_config(opts, method, backbone)
    if opts.stage_of(method) != "methods":
        return base
    stage1 = run_name((dataset, PLAIN, backbone))
    params = best_params(opts.exp_dir, (dataset, PLAIN, backbone))
    if params is None:
        raise ConfigError(f"{run_name(key)}: stage 2 starts from the best trial of {stage1}, "
                          f"which has {'none' if (opts.exp_dir / 'runs' / f'{stage1}.json').exists() else 'not finished'}")
    return apply_params(base, params)


def best_params(exp: Path, key: tuple[str, str, str]) -> dict | None:
    """The params of a finished run's best trial (results.best_trial_id's rule), else None."""
    run = run_name(key)
    path = exp / results.RUN_RECORD.format(run=run)
    if not path.exists():
        return None
    records = json.loads(path.read_text())
    trials, _ = results.trial_tables({run: (key, records)}, 0)
    best = results.best_trial_id(trials, run) if len(trials) else None
    return next((r["params"] for r in records if str(r["trial_id"]) == best), None)


def input_error(opts: StudyOptions) -> str | None:
    """What is wrong with a new study's inputs (dataset file, --set keys, search space), checked
    before Ray starts or anything is written; None when they are fine."""
    if not opts.named_dataset and "://" not in opts.dataset and not Path(opts.dataset).is_file():
        known = [*DATASETS, SYNTHETIC]
        name = Path(opts.dataset).name
        return (f"--dataset: {opts.dataset} is neither a known dataset ({', '.join(known)}) nor a "
                f"file{suggest(name.lower(), known)}")
    try:
        check_runs(opts, load_ranges(opts.search_space))
    except (ConfigError, OSError, ValueError) as exc:
        return str(exc)
    return None


def check_runs(opts: StudyOptions, ranges: dict) -> None:
    """What every run of the study needs, for a new study and for a resumed one (whose
    --methods, --staged or --stage2-epochs may have changed): --staged with the plain method,
    --stage2-epochs only when staged, N set by the flags (not --set train.epochs), each run's
    space valid for its N (p fits), ASHA's first rung within N. Raises ConfigError."""
    if opts.staged and PLAIN not in opts.methods:
        raise ConfigError(f"--staged: stage 1 tunes the plain method's base model, so --methods "
                          f"must include {PLAIN}")
    if opts.stage2_epochs and not opts.staged:
        raise ConfigError("--stage2-epochs: only a --staged study has a stage 2")
    if opts.asha_clock == "cpu-seconds" and opts.gpus_per_trial:
        raise ConfigError("--asha-clock cpu-seconds: for CPU trials (a GPU trial's CPU time is "
                          "not its cost); with --gpus-per-trial use --asha-clock seconds")
    if any(o.split("=", 1)[0].strip() == "train.epochs" for o in opts.overrides):
        raise ConfigError("--set train.epochs: a study's epoch budget is --max-epochs (and "
                          "--stage2-epochs for a staged study's second stage)")
    for method in opts.methods:
        for backbone in opts.backbones:
            n = base_config(opts, method, backbone).train.epochs
            SearchSpace(method, backbone, n, ranges, stage=opts.stage_of(method)).first_update_epochs()
            clock = asha_clock(opts, method)
            if clock == "epochs" and asha_grace(opts, clock, n) > n:
                raise ConfigError(f"--grace-period {asha_grace(opts, clock, n)}: ASHA's first "
                                  f"rung is past the {n} epochs of the {method} runs")


def narrow_space(opts: StudyOptions, new_space: str, version: int) -> None:
    """``--resume --search-space NEW``: check that NEW narrows the study's active space for every
    unfinished run, then make it the active space (``<exp>/search_space.yaml``, which every
    run's SearchSpace reads) and the study's ``search_space`` option. Raises ConfigError."""
    active = opts.exp_dir / SPACE_FILE
    if version < STUDY_VERSION or not active.exists():
        raise ConfigError(f"--search-space: {opts.exp_dir} was written by an older ec4srec whose "
                          f"restored searcher cannot take a new space; resume without it")
    resolved = StudyOptions(search_space=new_space).finalize().search_space
    old, new = load_ranges(active), load_ranges(resolved)
    runs = [(m, b, opts.stage_of(m)) for (_, m, b) in opts.runs()
            if not (opts.exp_dir / results.RUN_RECORD.format(run=run_name((opts.dataset_label, m, b)))).exists()]
    problem = narrowing_problem(old, new, runs, str(new_space))
    if problem:
        raise ConfigError(problem)
    for _, method, backbone in opts.runs():     # p still fits the budget, etc.
        epochs = base_config(opts, method, backbone).train.epochs
        SearchSpace(method, backbone, epochs, new, stage=opts.stage_of(method)).first_update_epochs()
    opts.search_space = resolved
    atomic_write_text(active, dump_ranges(new))
    write_manifest(opts)
    print(f"[search] search space narrowed to {new_space} for trials not yet created", flush=True)


def optuna_study_name(opts: StudyOptions, run: str) -> str:
    """The Optuna study of ``run``: the run's name in the study's own journal; in an RDB
    (``--optuna-storage``), which several ec4srec studies may share, ``<prefix>/<run>`` with
    the prefix fixed when the study began (``optuna_prefix``: a study resumed under another
    name keeps it; a study from before prefixes has ``""`` and keeps ``<run>``), so that a
    second study's run never joins (and resumes into) another study's."""
    if not opts.optuna_storage or not opts.optuna_prefix:
        return run
    return f"{opts.optuna_prefix}/{run}"


def optuna_storage(opts: StudyOptions):
    """The study's Optuna storage: --optuna-storage (an RDB URL), else exp/optuna.journal
    (which ``study.run`` repaired once, before any run could write to it)."""
    import optuna
    if opts.optuna_storage:
        return optuna.storages.RDBStorage(opts.optuna_storage)
    journal = opts.exp_dir / "optuna.journal"
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
