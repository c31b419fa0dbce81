"""GPU check: training speed and memory in fp32 and bf16, importance updates, host-device syncs
and a study that packs four trials on one GPU, as one BENCHMARKS.md section.

Run it through ``bash benchmarks/gpu_check.sh`` (which says how); the stages:

(a) training: the three backbones (method sasrec) and the six methods (SASRec backbone), default
    configs, in each precision: a fixed random sample of one epoch's batches (the trainer's
    length-bucketed order; the same rows for every configuration) is timed after warm-up steps
    and scaled to the epoch (extrapolated); guided methods are timed in their guided phase
    (saliency importance first); peak GPU memory is ``torch.cuda.max_memory_allocated`` over
    the timed steps; backbone rows also time one validation pass;
(b) one importance update over all training rows per explainer (SASRec, fp32: the explainers
    run outside the training autocast);
(c) host-device syncs of one training step per configuration (benchmarks/sync_count.py);
(d) ``tune/search.py --smoke-test --gpus-per-trial 0.25`` with four trials, and the largest
    number of trials that ran at once (from Ray's per-report timestamps, 1 s resolution).
(e) the GPU factor: the fp32 rows of (a) for a few configs timed again on one CPU thread,
    on the same batches (benchmarks/gpu_factor.py); written to results/costs/gpu-factor.json.

``--dry-run`` runs the same code on the CPU with a tiny generated dataset, tiny models and one
warm-up and one timed batch per measurement, skips (d), and writes the section to ``--output``
only (never to BENCHMARKS.md). Contract: the section has one row per backbone, method and
explainer, whatever ran; a stage that failed or ran out of ``--budget-s`` says so in its rows.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import common
import gpu_factor
from sync_count import SyncReport, step_syncs
from ec4srec.checkpoint import atomic_write_json
from ec4srec.config import BACKBONES, EXPLAINERS, METHODS, Config
from ec4srec.data import load_dataset
from ec4srec.data.batches import train_order
from ec4srec.data.split import Examples
from ec4srec.explain import compute_importance
from ec4srec.models import refresh_dropout_banks
from ec4srec.models.base import FastDropout
from ec4srec.trainer import Trainer

ROOT = common.ROOT
TINY_MODEL = ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=1",
              "model.inner_size=32", "model.gru_hidden_size=16", "model.caser_window=3",
              "model.caser_nv=2", "model.caser_nh=2", "train.batch_size=32",
              "method.explain_batch_size=64"]
STUDY_METHOD = "cl4srec"          # has searched params, so --num-samples 4 gives four trials


# ------------------------------------------------------------------ set-up
def data_dir(cli_value: str | None) -> str | None:
    """--data-dir, else $EC4SREC_DATA_DIR, else ../shared/data (or shared/data) next to the
    repository when it exists, else None (the package's cache dir; a missing file is fetched)."""
    if cli_value or os.environ.get("EC4SREC_DATA_DIR"):
        return common.data_dir(cli_value)
    for candidate in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data"):
        if candidate.is_dir():
            return str(candidate)
    return None


def tiny_dataset_file(folder: Path, users: int = 64, items: int = 40, seed: int = 0) -> Path:
    """A generated ``user item item ...`` file: ``users`` users of 4..9 distinct items."""
    rng = np.random.default_rng(seed)
    lines = [f"{u} {' '.join(map(str, rng.choice(items, rng.integers(4, 10), replace=False) + 1))}"
             for u in range(1, users + 1)]
    lines[0] = "1 " + " ".join(map(str, range(1, items + 1)))      # every item id occurs
    path = folder / "gpu-check-tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_config(opts: argparse.Namespace, backbone: str, method: str, precision: str) -> Config:
    overrides = [f"data.dataset={opts.dataset}", f"model.backbone={backbone}",
                 f"method.name={method}", "method.explainer=saliency",
                 f"train.precision={precision}", f"train.device={opts.device}",
                 "train.progress=off", "train.tensorboard=false", *opts.overrides]
    config = Config().with_overrides(overrides)
    config.data.data_dir = opts.data_dir
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release() -> None:
    """Free the previous configuration's tensors (and the shared dropout banks) before the
    next one, so that each peak-memory figure is that configuration's own."""
    FastDropout._banks.clear()
    FastDropout._cast_banks.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# ------------------------------------------------------------------ (a) + (c) training
def measure_training(opts, dataset, backbone: str, method: str, precision: str,
                     evaluate: bool, random_importance: bool = False) -> dict[str, Any]:
    """Time ``opts.batches`` training steps after ``opts.warmup`` (same sample for every
    configuration), count one step's syncs, optionally time one validation pass. A guided
    method is timed in its guided phase, on importance from its explainer, or on seeded random
    scores with ``random_importance`` (a step's cost does not depend on the scores' values;
    computing them is an importance update, priced apart)."""
    release()
    config = make_config(opts, backbone, method, precision)
    trainer = Trainer(config, dataset, log=lambda m: None)
    device, split = trainer.device, dataset.split
    epoch = 1
    if trainer.method.update_epochs:                 # the guided phase: importance first
        epoch = trainer.method.update_epochs[0]
        if random_importance:
            scores = torch.rand(len(split.train), split.max_len,
                                generator=torch.Generator().manual_seed(3))   # [R, max_len]
            trainer.method.load_state_dict({"importance": scores})
        else:
            trainer.method.on_epoch_start(epoch)
    order = train_order(split.train.length, config.train.batch_size, np.random.default_rng(0),
                        config.train.bucket_batches)
    picks = np.random.default_rng(1).permutation(len(order))[:opts.warmup + opts.batches]
    sample = [order[i] for i in picks]
    warm, timed = sample[:opts.warmup], sample[opts.warmup:] or sample[-1:]
    trainer.model.train()
    refresh_dropout_banks(trainer.model)
    for rows in warm:
        trainer.train_step(rows, epoch)
    syncs = step_syncs(trainer, timed[0], epoch)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total = torch.zeros((), device=device)
    started = time.perf_counter()
    for rows in timed:
        loss, _ = trainer.train_step(rows, epoch)
        total += loss
    sync(device)
    seconds = time.perf_counter() - started
    result = {"backbone": backbone, "method": method, "precision": trainer.precision,
              "step_ms": 1000 * seconds / len(timed), "epoch_s": seconds / len(timed) * len(order),
              "batches_per_epoch": len(order), "timed": len(timed), "peak_mib": peak_mib(device),
              "loss": float(total) / len(timed), "syncs": syncs}
    if evaluate:
        started = time.perf_counter()
        trainer.validate()
        sync(device)
        result["eval_s"] = time.perf_counter() - started
    del trainer
    return result


# ------------------------------------------------------------------ (b) explainers
def measure_explainer(opts, dataset, explainer: str) -> dict[str, Any]:
    """One importance update (compute_importance, as the guided methods call it) over the
    training rows (all, or the first ``opts.explain_rows`` and scaled), fresh SASRec, fp32."""
    release()
    config = make_config(opts, "sasrec", "sasrec", "fp32")
    trainer = Trainer(config, dataset, log=lambda m: None)
    split, mc = dataset.split, config.method
    rows = split.train
    if opts.explain_rows and opts.explain_rows < len(rows):
        keep = np.random.default_rng(2).permutation(len(rows))[:opts.explain_rows]
        rows = Examples(rows.end[keep], rows.length[keep], rows.user[keep])
    sync(trainer.device)
    started = time.perf_counter()
    compute_importance(trainer.model, split.items, rows, explainer, mc.explain_target,
                       max_len=split.max_len, batch_size=mc.explain_batch_size,
                       ig_steps=mc.ig_steps, device=trainer.device)
    sync(trainer.device)
    seconds = time.perf_counter() - started
    result = {"explainer": explainer, "rows": len(rows), "seconds": seconds,
              "update_s": seconds * len(split.train) / max(len(rows), 1),
              "peak_mib": peak_mib(trainer.device)}
    del trainer
    return result


# ------------------------------------------------------------------ (d) packed study
def max_concurrent(intervals: list[tuple[float, float]]) -> int:
    """Largest number of [start, end] intervals open at one time (touching ends do not count)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))
    best = running = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def trial_intervals(records: list[dict]) -> list[tuple[float, float]]:
    """[start, end] wall-clock seconds of each trial from its reports (Ray's ``timestamp`` of
    the last report minus its ``time_total_s``)."""
    out = []
    for rec in records:
        hist = [r for r in rec["history"] if r.get("timestamp") is not None]
        if hist:
            last = max(hist, key=lambda r: r["timestamp"])
            out.append((float(last["timestamp"]) - float(last.get("time_total_s") or 0.0),
                        float(last["timestamp"])))
    return out


def run_study(opts, seconds: float) -> dict[str, Any]:
    """The smoke study in a subprocess (its own Ray instance), limited to ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="ec4srec-gpu-check-") as storage:
        cmd = [sys.executable, "tune/search.py", "--smoke-test", "--methods", STUDY_METHOD,
               "--num-samples", "4", "--seeds", "0", "--scheduler", "fifo",
               "--gpus-per-trial", "0.25", "--address", "local", "--no-warm-start",
               "--storage-path", storage, "--name", "gpu-check"]
        shown = " ".join(cmd[1:-3]) + " TMP --name gpu-check"
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, timeout=seconds)
            status = f"exit {proc.returncode}"
            tail = proc.stderr[-2000:] if proc.returncode else ""
        except subprocess.TimeoutExpired:
            status, tail = f"timed out after {seconds:.0f} s", ""
        wall = time.perf_counter() - started
        runs = list(Path(storage, "gpu-check", "runs").glob("*.json"))
        records = [rec for path in runs for rec in json.loads(path.read_text())]
    intervals = trial_intervals(records)
    return {"command": f"python {shown}", "status": status, "wall_s": wall,
            "trials": len(records), "errored": sum(1 for r in records if r.get("error")),
            "max_running": max_concurrent(intervals) if intervals else None, "stderr": tail}


# ------------------------------------------------------------------ the section
def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _syncs(report: SyncReport | None) -> str:
    return "n/a (CPU)" if report is None else str(report.count)


def training_table(rows: dict, keys: list[tuple[str, str]], precisions: list[str],
                   with_eval: bool) -> str:
    cols = ["backbone", "method"]
    for p in precisions:
        cols += [f"step {p} (ms)", f"epoch {p} (s)", f"peak GPU {p} (MiB)", f"loss {p}",
                 f"syncs/step {p}"] + ([f"valid eval {p} (s)"] if with_eval else [])
    if len(precisions) == 2:
        cols.append(f"{precisions[1]} speed-up")
    body = []
    for key in keys:
        line = list(key)
        for p in precisions:
            r = rows.get((*key, p))
            if r is None or "error" in r:
                line += [r["error"] if r else "not run"] + ["-"] * (4 + with_eval)
                continue
            line += [_f(r["step_ms"], 1), _f(r["epoch_s"]), _f(r["peak_mib"], 0),
                     _f(r["loss"], 4), _syncs(r["syncs"])]
            line += [_f(r["eval_s"])] if with_eval else []
        if len(precisions) == 2:
            a, b = (rows.get((*key, p), {}) for p in precisions)
            line.append(f"{a['epoch_s'] / b['epoch_s']:.2f}x" if "epoch_s" in a and "epoch_s" in b
                        else "-")
        body.append(line)
    return common.table(cols, body)


def sync_sites_table(rows: dict, keys: list[tuple[str, str]], precisions: list[str]) -> str:
    body = []
    for key in keys:
        reports = [(p, rows.get((*key, p), {}).get("syncs")) for p in precisions]
        sites = "; ".join(f"{p}: {r.describe()}" for p, r in reports if r is not None)
        body.append([*key, sites or "n/a (no CUDA)"])
    return common.table(["backbone", "method", "syncs per call site (path:line (count))"], body)


def header(opts, dataset, title: str) -> str:
    split = dataset.split
    if torch.cuda.is_available() and not opts.dry_run:
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        gpu = "none: CPU dry run" if opts.dry_run else "none (CUDA not available)"
    lines = [f"### {title}", "",
             f"- command: `{os.environ.get('EC4SREC_GPU_CHECK_COMMAND') or ' '.join(sys.argv)}`",
             f"- commit: {common.git_commit()}",
             f"- machine: {common.machine_line(torch.get_num_threads())}",
             f"- GPU: {gpu}",
             f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
             f"- dataset: {dataset.name} ({split.num_users} users, {split.num_items} items, "
             f"{len(split.train)} training rows)"]
    if opts.note:
        lines.append(f"- note: {opts.note}")
    return "\n".join(lines) + "\n"


def build_section(opts, dataset, train_rows: dict, explain_rows: dict, study: dict | None,
                  wall_s: float) -> str:
    precisions = opts.precisions
    backbone_keys = [(b, "sasrec") for b in BACKBONES]
    method_keys = [("sasrec", m) for m in METHODS]
    any_row = next((r for r in train_rows.values() if "timed" in r), None)
    sample = (f"{any_row['timed']} timed of {any_row['batches_per_epoch']} batches per epoch"
              if any_row else "no batch timed")
    title = (f"GPU check on {dataset.name}: fp32 vs bf16 training, importance updates, "
             f"host-device syncs, packed study" + (" (DRY RUN, CPU)" if opts.dry_run else ""))
    text = header(opts, dataset, title)
    text += (f"\nTraining steps (default configs{' + tiny dry-run model' if opts.dry_run else ''}; "
             f"{opts.warmup} warm-up and {sample}, the same random sample for every row; "
             "epoch = mean step time x batches per epoch, **extrapolated**, training steps only; "
             "guided methods in their guided phase; peak GPU = max_memory_allocated over the "
             "timed steps; syncs/step = host-device synchronisations of one step):\n\n")
    text += "Backbones (method sasrec):\n\n"
    text += training_table(train_rows, backbone_keys, precisions, with_eval=True)
    text += "\nMethods (SASRec backbone):\n\n"
    text += training_table(train_rows, method_keys, precisions, with_eval=False)
    text += "\nWhere the syncs of one step come from:\n\n"
    text += sync_sites_table(train_rows, list(dict.fromkeys(backbone_keys + method_keys)),
                             precisions)
    text += ("\nOne importance update per explainer (SASRec, fresh model, fp32, "
             "compute_importance over the training rows; scaled when --explain-rows < all):\n\n")
    body = []
    for e in EXPLAINERS:
        r = explain_rows.get(e) or {"error": "not run"}
        body.append([e, r["error"]] + ["-"] * 3 if "error" in r else
                    [e, _f(r["update_s"]), str(r["rows"]), _f(r["rows"] / r["seconds"], 0),
                     _f(r["peak_mib"], 0)])
    text += common.table(["explainer", "update (s)", "rows timed", "rows/s", "peak GPU (MiB)"],
                         body)
    if study is None:
        text += "\nPacked study: skipped (--dry-run or --skip-study).\n"
    else:
        text += (f"\nPacked study: `{study['command']}` ({study['status']}, "
                 f"{study['wall_s']:.0f} s): {study['trials']} trials, {study['errored']} errored; "
                 f"**max trials running at once: {study['max_running']}** (from Ray's report "
                 "timestamps: 1 s resolution).\n")
        if study["stderr"]:
            text += "\n```\n" + study["stderr"].strip()[-1500:] + "\n```\n"
    text += f"\nTotal wall time of the check: {wall_s:.0f} s.\n"
    return text


# ------------------------------------------------------------------ main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="sports")
    p.add_argument("--data-dir", default=None, help="default: $EC4SREC_DATA_DIR, ../shared/data")
    p.add_argument("--device", default="auto")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batches", type=int, default=40, help="timed batches per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed batches before them")
    p.add_argument("--explain-rows", type=int, default=0,
                   help="rows per importance update, scaled to all (0: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--budget-s", type=float, default=450.0, help="stop starting stages after this")
    p.add_argument("--study-timeout", type=float, default=300.0)
    p.add_argument("--skip-study", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny generated data, no study")
    p.add_argument("--output", type=Path, help="write the section here (not to BENCHMARKS.md)")
    p.add_argument("--note", default=None)
    opts = p.parse_args(argv)
    if opts.dry_run:
        opts.device, opts.batches, opts.warmup, opts.skip_study = "cpu", 1, 1, True
        opts.threads = opts.threads or 1
        opts.overrides = [*TINY_MODEL, *opts.overrides]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    started = time.perf_counter()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    with tempfile.TemporaryDirectory(prefix="ec4srec-gpu-check-data-") as tmp:
        if opts.dry_run:
            opts.dataset, opts.data_dir = str(tiny_dataset_file(Path(tmp))), None
        else:
            opts.data_dir = data_dir(opts.data_dir)
        dataset = load_dataset(make_config(opts, "sasrec", "sasrec", "fp32").data)
    over = lambda: time.perf_counter() - started > opts.budget_s     # noqa: E731

    train_rows: dict[tuple[str, str, str], dict] = {}
    configs = list(dict.fromkeys([(b, "sasrec") for b in BACKBONES]
                                 + [("sasrec", m) for m in METHODS]))
    for backbone, method in configs:
        for precision in opts.precisions:
            key = (backbone, method, precision)
            if over():
                train_rows[key] = {"error": "skipped: over --budget-s"}
                continue
            try:
                train_rows[key] = measure_training(opts, dataset, backbone, method, precision,
                                                   evaluate=method == "sasrec")
            except Exception as exc:          # one failed row must not lose the others
                train_rows[key] = {"error": f"failed: {type(exc).__name__}: {exc}"[:200]}
            print(f"[gpu_check] {key}: {train_rows[key]}", file=sys.stderr, flush=True)
    explain_rows: dict[str, dict] = {}
    for explainer in EXPLAINERS:
        try:
            explain_rows[explainer] = ({"error": "skipped: over --budget-s"} if over() else
                                       measure_explainer(opts, dataset, explainer))
        except Exception as exc:
            explain_rows[explainer] = {"error": f"failed: {type(exc).__name__}: {exc}"[:200]}
        print(f"[gpu_check] {explainer}: {explain_rows[explainer]}", file=sys.stderr, flush=True)
    factor = {"factor": None, "configs": {}}
    try:
        if not over():
            factor = gpu_factor.measure(opts, dataset, train_rows, measure_training)
        if factor["factor"] is not None:          # never a file without a factor
            atomic_write_json(gpu_factor.output_path(opts), factor)
    except Exception as exc:                  # the other stages' rows still count
        print(f"[gpu_check] GPU factor failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"[gpu_check] GPU factor: {factor['factor']}", file=sys.stderr, flush=True)
    study = None
    if not opts.skip_study:
        left = opts.budget_s - (time.perf_counter() - started)
        study = (run_study(opts, min(opts.study_timeout, left)) if left > 30 else
                 {"command": "-", "status": "skipped: over --budget-s", "wall_s": 0.0,
                  "trials": 0, "errored": 0, "max_running": None, "stderr": ""})
    release()
    text = build_section(opts, dataset, train_rows, explain_rows, study,
                         time.perf_counter() - started) + gpu_factor.lines(factor)
    print(text)
    if opts.output:
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        opts.output.write_text(text)
    elif not opts.dry_run:
        common.append_markdown(text)
    failed = [k for k, r in {**train_rows, **explain_rows}.items()
              if r.get("error", "").startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
