"""benchmarks/gpu_check.sh: the dry run (CPU, tiny data) and the helpers it reports with."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from ec4srec.config import BACKBONES, EXPLAINERS, METHODS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import sync_count  # noqa: E402


def test_dry_run_writes_a_row_for_every_backbone_method_and_explainer(tmp_path):
    out = tmp_path / "section.md"
    before = (ROOT / "BENCHMARKS.md").read_text()
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--output", str(out)],
                          cwd=ROOT, text=True, capture_output=True, timeout=120)
    # The dry run exits 0 (every measurement ran) and writes its section to --output.
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    lines = text.splitlines()
    # The section is marked as a CPU dry run and BENCHMARKS.md is left alone.
    assert "DRY RUN" in lines[0] and (ROOT / "BENCHMARKS.md").read_text() == before
    # One training row per backbone (method sasrec) and per method (SASRec backbone), timed.
    for backbone in BACKBONES:
        assert any(line.startswith(f"| {backbone} | sasrec | ") for line in lines), backbone
    for method in METHODS:
        row = next(line for line in lines if line.startswith(f"| sasrec | {method} | "))
        assert "failed" not in row and "not run" not in row, row
    # One row per explainer with its update time.
    for explainer in EXPLAINERS:
        row = next(line for line in lines if line.startswith(f"| {explainer} | "))
        assert row.split("|")[2].strip().replace(".", "").isdigit(), row
    factor = json.loads((tmp_path / "section.gpu-factor.json").read_text())
    # The GPU factor: CPU (one thread) over "GPU" epoch per config, their median, written
    # beside --output in a dry run (never to results/costs/) and reported in the section.
    assert set(factor["configs"]) == {"sasrec/sasrec", "sasrec/cl4srec", "gru4rec/sasrec", "caser/sasrec"}
    for row in factor["configs"].values():
        assert row["factor"] == row["cpu_epoch_s"] / row["gpu_epoch_s"]
    assert factor["factor"] == statistics.median(r["factor"] for r in factor["configs"].values())
    assert "GPU factor (one-thread CPU epoch / GPU epoch" in text and factor["gpu"] == "none: CPU dry run"


def test_max_concurrent_trials_from_report_timestamps():
    records = [{"history": [{"timestamp": 110, "time_total_s": 10.0},
                            {"timestamp": 120, "time_total_s": 20.0}]},     # runs 100..120
               {"history": [{"timestamp": 118, "time_total_s": 15.0}]},    # 103..118
               {"history": [{"timestamp": 130, "time_total_s": 10.0}]},    # 120..130
               {"history": []}]
    intervals = gpu_check.trial_intervals(records)
    # Each trial that reported is one interval: last timestamp minus its total time.
    assert intervals == [(100.0, 120.0), (103.0, 118.0), (120.0, 130.0)]
    # Overlapping trials are counted; one that starts when another ends is not concurrent.
    assert gpu_check.max_concurrent(intervals) == 2
    assert gpu_check.max_concurrent([(0, 5)] * 4) == 4 and gpu_check.max_concurrent([]) == 0


def test_count_syncs_counts_torch_sync_warnings_per_line(monkeypatch):
    # Without CUDA there is nothing to count.
    assert torch.cuda.is_available() or sync_count.count_syncs(lambda: None) is None
    modes = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def step():
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation")     # what torch issues
        warnings.warn("something else")

    report = sync_count.count_syncs(step)
    # Only torch's sync warnings are counted, each time, per call site; the mode is reset.
    assert report.count == 3 and len(report.sites) == 1 and modes == ["warn", "default"]
    site = next(iter(report.sites))
    assert site.startswith("tests/test_gpu_check.py:") and report.describe() == f"{site} (3)"


def test_run_study_reads_the_trials_of_the_smoke_study(monkeypatch):
    seen = {}

    def fake_run(cmd, **kwargs):                 # what search.py leaves: runs/<run>.json
        seen["cmd"] = cmd
        runs = Path(cmd[cmd.index("--storage-path") + 1]) / "gpu-check" / "runs"
        runs.mkdir(parents=True)
        trials = [{"history": [{"timestamp": 50 + i, "time_total_s": 40.0}], "error": None}
                  for i in range(4)]
        (runs / "synthetic-cl4srec-sasrec.json").write_text(json.dumps(trials))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    study = gpu_check.run_study(None, 60.0)
    # The study packs trials on one GPU with four trials of one searched method.
    cmd = seen["cmd"]
    assert cmd[cmd.index("--gpus-per-trial") + 1] == "0.25" and cmd[cmd.index("--num-samples") + 1] == "4"
    # Its trials are read back and the four overlapping ones count as running at once.
    assert study["trials"] == 4 and study["errored"] == 0 and study["max_running"] == 4
