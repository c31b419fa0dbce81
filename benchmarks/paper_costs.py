"""Measured costs of the paper study: CPU seconds per epoch of every (dataset, backbone, method)
that ``tune/paper_study.py`` searches, per validation pass, and per importance update of every
explainer, on one thread; written to ``results/costs/paper-costs.json``, which
``tune/paper_study.py --dry-run`` turns into its GPU-hour estimate (a stated GPU factor scales
them; ``benchmarks/gpu_check.sh`` measures that factor where a GPU is lent).

    python benchmarks/paper_costs.py                       # all of Table 3 and Table 4
    python benchmarks/paper_costs.py --datasets beauty --backbones sasrec --methods sasrec cl4srec
    python benchmarks/paper_costs.py --dry-run --output /tmp/costs.json   # tiny data (the tests)

How (the same code as ``benchmarks/gpu_check.py``'s stages (a) and (b), on the CPU): a fixed
random sample of one epoch's batches (the trainer's length-bucketed order) is timed after
warm-up steps and scaled to the epoch; guided methods are timed in their guided phase (on
seeded random importance: the update that computes real scores is priced apart); one
validation pass per (dataset, backbone); one importance update over a random sample of
``--explain-rows`` training rows scaled to all of them. Default configs (the paper's objective:
prefix rows, full softmax), the paper study's own. Each measurement is one sample of a loaded,
shared machine: the file records the load average before and after. A (dataset, backbone,
method) already in ``--output`` is kept unless ``--remeasure``, so an interrupted run resumes;
the file is rewritten atomically after every measurement.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
from gpu_check import TINY_MODEL, make_config, measure_training, release, tiny_dataset_file
from ec4srec.checkpoint import atomic_write_json
from ec4srec.config import EXPLAINERS, METHODS
from ec4srec.data import load_dataset
from ec4srec.data.split import Examples
from ec4srec.explain import compute_importance
from ec4srec.search.paper_estimate import CostsError, load_costs
from ec4srec.search.paper_study import TABLE3, TABLE4
from ec4srec.trainer import Trainer

FORMAT = 1
OUTPUT = common.ROOT / "results" / "costs" / "paper-costs.json"


def measure_update(opts, dataset, backbone: str, explainer: str) -> dict[str, Any]:
    """One importance update (as the guided methods run it) over ``opts.explain_rows`` random
    training rows of a fresh ``backbone`` model, scaled to all rows."""
    release()
    config = make_config(opts, backbone, "sasrec", "fp32")
    trainer = Trainer(config, dataset, log=lambda m: None)
    split, mc = dataset.split, config.method
    rows = split.train
    if opts.explain_rows and opts.explain_rows < len(rows):
        keep = np.sort(np.random.default_rng(2).permutation(len(rows))[:opts.explain_rows])
        rows = Examples(rows.end[keep], rows.length[keep], rows.user[keep])
    started = time.perf_counter()
    compute_importance(trainer.model, split.items, rows, explainer, mc.explain_target,
                       max_len=split.max_len, batch_size=mc.explain_batch_size,
                       ig_steps=mc.ig_steps, device=trainer.device)
    seconds = time.perf_counter() - started
    return {"rows": len(rows), "seconds": seconds,
            "update_s": seconds * len(split.train) / max(len(rows), 1)}


def studies(opts) -> list[tuple[str, str]]:
    """The (dataset, backbone) pairs of the paper study asked for, in its order."""
    return [(d, b) for d, b in [*TABLE3, *TABLE4]
            if (not opts.datasets or d in opts.datasets)
            and (not opts.backbones or b in opts.backbones)]


def load_previous(path: Path, remeasure: bool) -> dict[str, Any]:
    if remeasure or not path.exists():
        return {}
    try:
        previous = load_costs(path)           # the reader tune/paper_study.py uses
    except CostsError as exc:
        raise SystemExit(f"error: {exc}; pass --remeasure to start over")
    if previous.get("format") != FORMAT:
        raise SystemExit(f"error: {path}: format {previous.get('format')!r}, expected {FORMAT}; "
                         f"pass --remeasure to start over")
    return previous


def measure_all(opts, record: dict[str, Any], save) -> None:
    """Fill ``record``'s ``epoch``, ``eval_s`` and ``update_s`` tables, saving after each."""
    for dataset_name, backbone in studies(opts):
        wanted = [m for m in (opts.methods or METHODS)
                  if f"{dataset_name}/{backbone}/{m}" not in record["epoch"]]
        explainers = [e for e in EXPLAINERS if (e != "attention" or backbone == "sasrec")
                      and f"{dataset_name}/{backbone}/{e}" not in record["update_s"]]
        if not wanted and not explainers and f"{dataset_name}/{backbone}" in record["eval_s"]:
            continue
        opts.dataset = opts.dataset_files.get(dataset_name, dataset_name)
        dataset = load_dataset(make_config(opts, backbone, "sasrec", "fp32").data)
        for method in wanted:
            evaluate = f"{dataset_name}/{backbone}" not in record["eval_s"]
            row = measure_training(opts, dataset, backbone, method, "fp32", evaluate=evaluate,
                                   random_importance=True)
            record["epoch"][f"{dataset_name}/{backbone}/{method}"] = {
                k: row[k] for k in ("epoch_s", "step_ms", "batches_per_epoch", "timed")}
            if "eval_s" in row:
                record["eval_s"][f"{dataset_name}/{backbone}"] = row["eval_s"]
            print(f"[paper_costs] {dataset_name}/{backbone}/{method}: epoch "
                  f"{row['epoch_s']:.1f} s", file=sys.stderr, flush=True)
            save()
        for explainer in explainers:
            row = measure_update(opts, dataset, backbone, explainer)
            record["update_s"][f"{dataset_name}/{backbone}/{explainer}"] = row["update_s"]
            print(f"[paper_costs] {dataset_name}/{backbone} {explainer} update: "
                  f"{row['update_s']:.1f} s", file=sys.stderr, flush=True)
            save()
        del dataset
        release()


def markdown(record: dict[str, Any]) -> str:
    """The file's tables for a reader: epoch seconds per (dataset, backbone) x method, the
    validation pass, and one importance update per explainer."""
    pairs = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in [*record["epoch"], *record["update_s"]]))
    cell = lambda v: "-" if v is None else f"{v:.0f}"           # noqa: E731
    lines = ["| dataset/backbone | " + " | ".join(METHODS) + " | validation | "
             + " | ".join(f"update: {e}" for e in EXPLAINERS) + " |",
             "|---" * (len(METHODS) + len(EXPLAINERS) + 2) + "|"]
    for pair in pairs:
        epochs = [cell((record["epoch"].get(f"{pair}/{m}") or {}).get("epoch_s")) for m in METHODS]
        updates = [cell(record["update_s"].get(f"{pair}/{e}")) for e in EXPLAINERS]
        lines.append(f"| {pair} | " + " | ".join(epochs) + f" | {cell(record['eval_s'].get(pair))} | "
                     + " | ".join(updates) + " |")
    return (f"CPU seconds on one thread ({record['machine']}); commit {record['commit']}; "
            f"`{record['command']}`; {record['date']}; wall {record['wall_s']:.0f} s; load "
            f"average {record['load_before'][0]:.1f} before, {record['load_after'][0]:.1f} after.\n\n"
            + "\n".join(lines) + "\n")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=sorted({d for d, _ in [*TABLE3, *TABLE4]}))
    p.add_argument("--backbones", nargs="+", choices=sorted({b for _, b in [*TABLE3, *TABLE4]}))
    p.add_argument("--methods", nargs="+", choices=list(METHODS))
    p.add_argument("--data-dir", default=None, help="default: $EC4SREC_DATA_DIR, ../shared/data")
    p.add_argument("--batches", type=int, default=10, help="timed batches per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches before them")
    p.add_argument("--explain-rows", type=int, default=512,
                   help="rows per importance update, scaled to all")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output", type=Path, default=OUTPUT)
    p.add_argument("--remeasure", action="store_true", help="drop what --output holds")
    p.add_argument("--dry-run", action="store_true", help="tiny generated data and models")
    opts = p.parse_args(argv)
    opts.device, opts.dataset_files = "cpu", {}
    if opts.dry_run:
        opts.batches, opts.warmup, opts.explain_rows = 1, 1, 8
        opts.overrides = [*TINY_MODEL, *opts.overrides]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    torch.set_num_threads(1)                   # a trial's thread count (train.threads=1)
    started = time.perf_counter()
    record = load_previous(opts.output, opts.remeasure) or {
        "format": FORMAT, "epoch": {}, "eval_s": {}, "update_s": {}}
    record.update({
        "what": "CPU seconds on one thread, fp32, default configs (prefix rows, full softmax): "
                "epoch = training steps only (a sample of batches scaled to the epoch), eval_s = "
                "one validation pass, update_s = one importance update over every training row",
        "command": common.command_line(), "commit": common.git_commit(),
        "machine": common.machine_line(1), "batches": opts.batches, "warmup": opts.warmup,
        "explain_rows": opts.explain_rows, "overrides": opts.overrides,
        "load_before": list(os.getloadavg()), "dry_run": opts.dry_run,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})

    def save() -> None:
        record["load_after"] = list(os.getloadavg())
        record["wall_s"] = round(record.get("wall_before_s", 0.0) + time.perf_counter() - started, 1)
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(opts.output, record)

    record["wall_before_s"] = record.get("wall_s", 0.0)
    with tempfile.TemporaryDirectory(prefix="ec4srec-paper-costs-") as tmp:
        if opts.dry_run:        # one tiny file stands in for every dataset
            tiny = str(tiny_dataset_file(Path(tmp)))
            opts.dataset_files = {d: tiny for d, _ in [*TABLE3, *TABLE4]}
            opts.data_dir = None
        else:
            opts.data_dir = common.data_dir(opts.data_dir)
        measure_all(opts, record, save)
    save()
    print(markdown(record))
    print(f"[paper_costs] {len(record['epoch'])} epochs, {len(record['update_s'])} updates in "
          f"{opts.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
