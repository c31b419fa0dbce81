"""``ec4srec train | evaluate | explain | diagnose | search | report | paper-study``.

Bad input (unknown dataset, malformed data line, invalid config key or value, missing or corrupt
checkpoint) prints one ``error: ...`` line and exits with status 2, without a traceback and
without writing into the output directory.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from .config import Config, ConfigError, load_config
from .errors import CLIError
from .paths import recorded_path
from .registry import BACKBONE_NAMES, GUIDED, METHOD_NAMES, explainer_backbones, explainer_fits
from .warmup import warmup_mismatch

EXIT_USAGE = 2
# The handlers import torch-heavy modules (data, trainer, checkpoint, ...) inside themselves, so
# that ``ec4srec --help`` and a bad flag answer at once; ``train`` never imports Ray.
# commands whose flags and code live in their own module (each imports Ray, matplotlib, ...
# only when it runs): name -> (module, its one-line help)
DELEGATED = {"search": ("ec4srec.search.command", "hyperparameter search on a Ray cluster "
                        "(tune/search.py; docs/search.md)"),
             "report": ("ec4srec.report.command", "tables and figures of a finished study or of "
                        "finished train runs (tune/report.py)"),
             "paper-study": ("ec4srec.search.paper_study", "the paper's whole study on a GPU "
                             "cluster (tune/paper_study.py)")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ec4srec", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one model and test it once")
    train.add_argument("--config", help="YAML config (e.g. a config.yaml a run or the search wrote), "
                       "or paper:DATASET-METHOD for the paper's settings shipped with the package "
                       "(e.g. paper:beauty-ec4srec; docs/paper-settings.md)")
    train.add_argument("--dataset", help="beauty | sports | clothing | ml-1m | synthetic | PATH")
    train.add_argument("--data-dir", help="directory holding the datasets (default: "
                       "$EC4SREC_DATA_DIR, else ~/.cache/ec4srec)")
    train.add_argument("--backbone", choices=list(BACKBONE_NAMES))
    train.add_argument("--method", choices=list(METHOD_NAMES))
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.epochs=50 (repeatable)")
    train.add_argument("--output", required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    train.add_argument("--warm-start", metavar="RUN_DIR",
                       help="an explanation-guided run to start from: its warmup.pt (the state "
                            "after its last warm-up epoch), when its warm-up equals this run's "
                            "(any guided variant and guided lambdas; docs/methods.md)")
    train.add_argument("--finish", action="store_true",
                       help="with --resume: stop the run now (budget cut), test its best weights "
                            "once and write metrics.json")

    ev = sub.add_parser("evaluate", help="evaluate a trained run's best weights")
    ev.add_argument("--checkpoint", required=True, help="run directory (or its checkpoint.pt)")
    ev.add_argument("--split", choices=["valid", "test"], default="test")
    ev.add_argument("--data-dir")

    ex = sub.add_parser("explain", help="write item importance scores of users' latest histories")
    ex.add_argument("--checkpoint", required=True, help="run directory (or its checkpoint.pt)")
    ex.add_argument("--users", nargs="*", type=int, help="user ids (default: all)")
    ex.add_argument("--explainer", help="override the run's method.explainer")
    ex.add_argument("--output", required=True, help="CSV file: user,position,item,score")
    ex.add_argument("--data-dir")

    dg = sub.add_parser("diagnose", help="how much room explanation guidance has on the data "
                        "(and, given a run, what its explainer scores): docs/methods.md")
    dg.add_argument("--checkpoint", help="a run directory (or its checkpoint.pt): adds the "
                    "explainer's profile on its best weights")
    dg.add_argument("--config", help="YAML config or paper:DATASET-METHOD (without --checkpoint)")
    dg.add_argument("--dataset", help="beauty | sports | clothing | ml-1m | synthetic | PATH")
    dg.add_argument("--method", choices=list(GUIDED))
    dg.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value (with --checkpoint: method.* keys only)")
    dg.add_argument("--data-dir")
    dg.add_argument("--weights", choices=["last", "best"],
                    help="with --checkpoint: the weights as saved (default: what an importance "
                         "update would explain now) or the best validation weights")
    dg.add_argument("--rows", type=int, help="with --checkpoint: training rows the explainer "
                    "scores (default 2000)")
    dg.add_argument("--seed", type=int, help="with --checkpoint: seed of the row sample (default 0)")
    dg.add_argument("--output", help="also write the report as JSON (atomically)")
    for name, (_, text) in DELEGATED.items():      # listed in --help; main() hands them over
        sub.add_parser(name, help=text, add_help=False)
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """Precedence: defaults < --config file < --dataset/--backbone/... flags < --set."""
    config = load_config(args.config) if args.config else Config()
    for flag, section, key in (("dataset", "data", "dataset"), ("data_dir", "data", "data_dir"),
                               ("backbone", "model", "backbone"), ("method", "method", "name")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(getattr(config, section), key, value)
    return config.with_overrides(args.overrides)


def resolve_resumed_config(args: argparse.Namespace, output: Path) -> Config:
    """--resume continues the run in OUTPUT with its own config.yaml; --set may still change
    keys (e.g. train.epochs to extend the budget, train.threads); a --config/--dataset/
    --backbone/--method that contradicts the saved run is an error."""
    saved = load_config(output / "config.yaml")
    wanted = resolve_config(args) if (args.config or args.dataset or args.backbone or args.method
                                     or args.data_dir) else None
    if wanted is not None:
        # Only what the command line actually names is compared: a bare --data-dir (the data
        # moved) must not compare the defaults of --method etc. against the saved run.
        given = {"data.dataset": args.config or args.dataset, "model.backbone": args.config or args.backbone,
                 "method.name": args.config or args.method}
        for key, value in (("data.dataset", wanted.data.dataset), ("model.backbone", wanted.model.backbone),
                           ("method.name", wanted.method.name)):
            if not given[key]:
                continue
            section, name = key.split(".")
            if getattr(getattr(saved, section), name) != value:
                raise CLIError(f"--resume: {key}={value!r} contradicts the run in {output} "
                               f"({key}={getattr(getattr(saved, section), name)!r})")
        saved.data.data_dir = wanted.data.data_dir
    resumed = saved.with_overrides(args.overrides)
    # --set may extend the budget or change the runtime, not what the checkpoint is a run of:
    # its dataset, its method, or the shape of its model.
    fixed = [("data.dataset", saved.data.dataset, resumed.data.dataset),
             ("data.max_len", saved.data.max_len, resumed.data.max_len),
             ("method.name", saved.method.name, resumed.method.name)]
    fixed += [(f"model.{k}", v, getattr(resumed.model, k)) for k, v in vars(saved.model).items()]
    for key, before, after in fixed:
        if before != after:
            raise CLIError(f"--resume: --set {key}={after!r} contradicts the run in {output} "
                           f"({key}={before!r})")
    return resumed


def cmd_train(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .trainer import CHECKPOINT, Trainer

    output = Path(args.output)
    ckpt = output / CHECKPOINT
    if args.resume and not ckpt.is_file():
        raise CLIError(f"--resume: no checkpoint at {ckpt}")
    if args.finish and not args.resume:
        raise CLIError("--finish ends a run that already exists: use it with --resume")
    if args.warm_start and args.resume:
        raise CLIError("--warm-start starts a new run; a run with a checkpoint continues with --resume")
    config = resolve_resumed_config(args, output) if args.resume else resolve_config(args)
    warmup = check_warm_start(Path(args.warm_start), config) if args.warm_start else None
    if not args.resume and ((output / "metrics.json").exists() or ckpt.exists()):
        raise CLIError(f"{output} already holds a run ({'metrics.json' if (output / 'metrics.json').exists() else CHECKPOINT}); "
                       "choose another --output, or pass --resume to continue it")
    dataset = load_dataset(config.data)      # all input is validated before anything is written
    started = time.perf_counter()
    trainer = Trainer(config, dataset, output_dir=output)
    if args.resume:
        trainer.load_checkpoint(ckpt)
        print(f"resumed from {ckpt} after epoch {trainer.state.epoch}", flush=True)
    elif warmup is not None:
        trainer.load_warmup(warmup)
        print(f"warm-started from {warmup} after epoch {trainer.state.epoch}", flush=True)
    record = trainer.finish() if args.finish else trainer.fit()
    print(f"best epoch {record['best_epoch']}  valid ndcg@10 {record['valid']['ndcg@10']:.4f}  "
          f"test ndcg@10 {record['test']['ndcg@10']:.4f} hr@10 {record['test']['hr@10']:.4f}  "
          f"({time.perf_counter() - started:.0f}s) -> {output}/metrics.json", flush=True)
    return 0


def check_warm_start(run_dir: Path, config) -> Path:
    """The donor's warmup.pt, checked before anything is written: it exists, is readable and
    its warm-up equals this run's (else one CLIError naming the file or the keys)."""
    from .checkpoint import load_torch
    from .trainer import WARMUP_CHECKPOINT
    path = run_dir / WARMUP_CHECKPOINT if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise CLIError(f"--warm-start: no {WARMUP_CHECKPOINT} in {run_dir} (a guided run writes it "
                       f"after its last warm-up epoch)")
    try:
        donor = Config.from_dict(load_torch(path)["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CLIError(f"--warm-start: {path} holds no usable config ({exc})") from None
    differ = warmup_mismatch(donor, config)
    if differ:
        raise CLIError(f"--warm-start: the warm-up of {path} differs from this run's in "
                       f"{', '.join(differ)}")
    return path


def _load_run(path: str, data_dir: str | None, best: bool = True):
    """The trainer of a run's checkpoint, with its best weights loaded (``best=False``: the
    weights as saved, i.e. the model an importance update at that point would explain)."""
    from .checkpoint import load_torch
    from .data import load_dataset
    from .trainer import CHECKPOINT, Trainer

    ckpt_path = Path(path)
    if ckpt_path.is_dir():
        ckpt_path = ckpt_path / CHECKPOINT
    if not ckpt_path.is_file():
        raise CLIError(f"no checkpoint at {ckpt_path}")
    ckpt = load_torch(ckpt_path)
    if not isinstance(ckpt, dict) or not {"config", "model"} <= set(ckpt):
        raise CLIError(f"{ckpt_path}: not an ec4srec trainer checkpoint (no config/model state)")
    try:
        config = Config.from_dict(ckpt["config"])
    except ConfigError as exc:
        raise ConfigError(f"{ckpt_path}: its config: {exc}") from None
    if data_dir:
        config.data.data_dir = data_dir
    trainer = Trainer(config, load_dataset(config.data), log=lambda m: None)
    trainer.load_checkpoint(ckpt_path)
    if best and trainer.best_weights is not None:
        trainer.model.load_state_dict(trainer.best_weights)
    return trainer


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate

    trainer = _load_run(args.checkpoint, args.data_dir)
    examples = trainer.data.test if args.split == "test" else trainer.data.valid
    metrics = evaluate(trainer.model, trainer.data, examples, trainer.config.train.eval_batch_size,
                       trainer.config.train.mask_history, trainer.device,
                       precision=trainer.precision)
    print(json.dumps({"split": args.split, **metrics}, indent=2))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain_cli import check_output, write_explanations
    check_output(Path(args.output))             # before the run is loaded and scored
    trainer = _load_run(args.checkpoint, args.data_dir)
    count = write_explanations(trainer, args.users, args.explainer, Path(args.output))
    print(f"wrote {count} rows to {args.output}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    from .checkpoint import atomic_write_text
    from .diagnostics import explainer_profile, format_report, guidance_room, recommendation_profile

    explain_flags = {"--rows": args.rows, "--seed": args.seed, "--weights": args.weights}
    if not args.checkpoint:
        given = [flag for flag, value in explain_flags.items() if value is not None]
        if given:
            raise CLIError(f"{given[0]} is about a run's explainer: it needs --checkpoint RUN")
    args.rows = 2000 if args.rows is None else args.rows
    args.seed = 0 if args.seed is None else args.seed
    args.weights = args.weights or "last"
    if args.rows < 1:
        raise CLIError(f"--rows must be >= 1, got {args.rows}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    output = Path(args.output) if args.output else None
    if output is not None and (output.is_dir() or output.parent.is_file()):
        raise CLIError(f"--output {output}: not a writable file path")
    if args.checkpoint:
        if args.config or args.dataset or args.method:
            raise CLIError("--checkpoint diagnoses the run's own config: drop --config/--dataset/"
                           "--method (--set method.KEY=VALUE may change how it is explained)")
        other = [o for o in args.overrides if not o.strip().startswith("method.")]
        if other:
            raise CLIError(f"--set {other[0]}: with --checkpoint only method.* keys (the "
                           f"explainer, explain_target, mu_e, ...) can be changed")
        trainer = _load_run(args.checkpoint, args.data_dir, best=args.weights == "best")
        config, data = trainer.config.with_overrides(args.overrides), trainer.data
        explainer, backbone = config.method.explainer, config.model.backbone
        if not explainer_fits(explainer, backbone):
            raise CLIError(f"method.explainer={explainer} needs a {'|'.join(explainer_backbones(explainer))} "
                           f"run ({args.checkpoint} is {backbone}, which has no {explainer} weights)")
    else:
        if not (args.config or args.dataset):
            raise CLIError("give --checkpoint RUN, or --dataset / --config for the data-only report")
        from .data import load_dataset
        args.backbone = None
        if not args.config:
            args.method = args.method or "ec4srec"     # the guided terms are what it is about
        config = resolve_config(args)
        data = load_dataset(config.data).split
    report = {"dataset": config.data.dataset, "method": config.method.name,
              "guidance_room": guidance_room(data, config.method)}
    if args.checkpoint:
        state = trainer.state
        report["checkpoint"] = {"path": recorded_path(args.checkpoint), "weights": args.weights,
                                "epoch": state.best_epoch if args.weights == "best" else state.epoch}
        report["recommendations"] = recommendation_profile(
            trainer.model, data, config.train.eval_batch_size, trainer.device)
        report["explainer"] = explainer_profile(trainer.model, data, config.method, args.rows,
                                                args.seed, config.method.explain_batch_size,
                                                trainer.device)
    print(format_report(report))
    if output is not None:
        try:
            atomic_write_text(output, json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise CLIError(f"--output {output}: {exc.strerror or exc}") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError, os_error_line
    from .data import DataError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return module.main(argv[1:], prog=f"ec4srec {argv[0]}")
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "explain": cmd_explain,
                "diagnose": cmd_diagnose}
    try:
        return handlers[args.command](args)
    except (ConfigError, DataError, CLIError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as exc:   # trainer.NonFiniteLossError: the loss diverged
        print(f"error: {exc}; the checkpoint holds the last finite epoch (lower train.lr?)",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(os_error_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(interrupted_line(args), file=sys.stderr)
        return 130


def interrupted_line(args: argparse.Namespace) -> str:
    """What a Ctrl-C left: a train run with a checkpoint resumes; one stopped before its first
    checkpoint (the first epoch) has nothing to resume and is started again."""
    from .trainer import CHECKPOINT
    output = getattr(args, "output", None)
    if args.command != "train" or not output:
        return "interrupted"
    if (Path(output) / CHECKPOINT).exists():
        return f"interrupted; continue with: ec4srec train --output {output} --resume"
    return (f"interrupted before the first epoch ended: nothing to resume in {output}; "
            "run the same command again")


if __name__ == "__main__":
    sys.exit(main())
