"""The GPU factor of ``benchmarks/gpu_check.sh``: how many times faster a training epoch runs on
the GPU than on one CPU thread (a trial's ``train.threads=1``), for the configs in
:data:`CONFIGS`, on the same sample of batches; their median is what
``tune/paper_study.py --dry-run`` divides the measured CPU costs by
(``ec4srec/search/paper_estimate.py``). A real run writes ``results/costs/gpu-factor.json``;
a dry run (CPU against CPU, a factor near 1) writes only beside ``--output``."""
from __future__ import annotations

import datetime as _dt
import statistics
from pathlib import Path
from typing import Any

import torch

import common

CONFIGS = [("sasrec", "sasrec"), ("sasrec", "cl4srec"), ("gru4rec", "sasrec"), ("caser", "sasrec")]
CPU_BATCHES = 10                 # timed CPU batches (a prefix of the GPU rows' sample)
OUTPUT = common.ROOT / "results" / "costs" / "gpu-factor.json"


def measure(opts, dataset, train_rows: dict, measure_training) -> dict[str, Any]:
    """``{"factor", "configs": {backbone/method: {cpu_epoch_s, gpu_epoch_s, factor}}, ...}``
    from the fp32 rows of stage (a) that ran, each timed again on the CPU with
    ``measure_training`` (gpu_check's); factor None when none ran."""
    device, batches, threads = opts.device, opts.batches, torch.get_num_threads()
    rows = {}
    try:
        opts.device, opts.batches = "cpu", min(opts.batches, CPU_BATCHES)
        torch.set_num_threads(1)
        for backbone, method in CONFIGS:
            gpu = train_rows.get((backbone, method, "fp32")) or {}
            if "epoch_s" not in gpu:
                continue
            cpu = measure_training(opts, dataset, backbone, method, "fp32", evaluate=False)
            rows[f"{backbone}/{method}"] = {"cpu_epoch_s": cpu["epoch_s"],
                                            "gpu_epoch_s": gpu["epoch_s"],
                                            "factor": cpu["epoch_s"] / gpu["epoch_s"]}
    finally:
        opts.device, opts.batches = device, batches
        torch.set_num_threads(threads)
    gpu_name = (torch.cuda.get_device_name(0) if torch.cuda.is_available() and not opts.dry_run
                else "none: CPU dry run")
    return {"factor": statistics.median(r["factor"] for r in rows.values()) if rows else None,
            "configs": rows, "gpu": gpu_name, "dataset": dataset.name,
            "how": "median over configs of (one-thread CPU epoch / GPU epoch), fp32, training "
                   "steps of the same batch sample, default configs; a solo trial on the GPU",
            "commit": common.git_commit(), "command": common.command_line(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def lines(result: dict[str, Any]) -> str:
    """The section's paragraph on the factor."""
    if result["factor"] is None:
        return "\nGPU factor: not measured (no fp32 training row ran).\n"
    parts = ", ".join(f"{k} {r['factor']:.1f}x ({r['cpu_epoch_s']:.1f} s / {r['gpu_epoch_s']:.1f} s)"
                      for k, r in result["configs"].items())
    return (f"\nGPU factor (one-thread CPU epoch / GPU epoch, fp32, same batches): "
            f"**{result['factor']:.1f}** (median; {parts}).\n")


def output_path(opts) -> Path:
    """Where the factor goes: the committed file, or beside ``--output`` in a dry run."""
    if opts.dry_run or opts.output:
        base = opts.output or Path("gpu_check.md")
        return base.with_name(base.stem + ".gpu-factor.json")
    return OUTPUT
