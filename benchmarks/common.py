"""Shared helpers of the benchmark scripts: machine description, timing, memory, BENCHMARKS.md.

Memory is the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``):
every measured configuration runs in its own fresh Python process, so the peak belongs to that
configuration alone. It includes the interpreter, torch and the loaded dataset; the scripts also
report the peak minus the RSS right after loading the data ("delta"), which is what the model,
its optimizer state and the training/evaluation temporaries add.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
from pathlib import Path

from machine import cpu_model, git_commit  # noqa: F401  (re-exported: the benchmarks import them from here)

import numpy as np
import torch

from ec4srec.data.batches import make_batch
from ec4srec.paths import recorded_path
from ec4srec.data.batches import eval_order

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
# the search benchmarks' trial model: the --smoke-test's sizes, one thread per trial
TINY_TRIAL = ["model.hidden_size=16", "model.num_layers=1", "model.inner_size=32",
              "train.batch_size=256", "train.threads=1"]


def data_dir(cli_value: str | None) -> str:
    return cli_value or os.environ.get("EC4SREC_DATA_DIR") or "/work/shared/data"


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # KiB on Linux




def machine_line(threads: int) -> str:
    return (f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{threads} intra-op threads, Python {platform.python_version()}")


def command_line() -> str:
    """This process's command as BENCHMARKS.md records it: paths as ``recorded_path`` writes
    them (no machine-specific prefix), everything else shell-quoted."""
    def shown(arg: str) -> str:
        return recorded_path(arg) if os.path.isabs(arg) else shlex.quote(arg)
    return " ".join(shown(a) for a in [recorded_path(Path(sys.argv[0]).as_posix()), *sys.argv[1:]])


def header(title: str, threads: int, note: str | None) -> str:
    lines = [f"### {title}", "",
             f"- command: `{command_line()}`",
             f"- commit: {git_commit()}",
             f"- machine: {machine_line(threads)}",
             f"- date: {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}"]
    if note:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def table(columns: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def append_markdown(text: str, path: Path = BENCHMARKS_MD) -> None:
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(existing.rstrip("\n") + "\n\n" + text)


def run_child(script: str, spec: dict) -> dict:
    """Run one configuration in a fresh interpreter (clean peak RSS); returns its JSON result."""
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(spec)], text=True,
                          capture_output=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(seconds: float) -> str:
    return f"{seconds:.2f}"


@torch.no_grad()
def before_compute_ranks(model, data, examples, batch_size: int = 1024) -> np.ndarray:
    """The evaluation as it was before the speed work (kept here as the 'before' row): the full
    ``[batch, N]`` score matrix per batch and two comparison passes (``>`` and ``==``)."""
    was_training = model.training
    model.eval()
    ranks = np.empty(len(examples), dtype=np.int64)
    for rows in eval_order(examples.length, batch_size):
        batch = make_batch(data.items, examples, rows)
        scores = model.scores(model(batch.items, batch.lengths))
        t = scores.gather(1, (batch.targets - 1).view(-1, 1))
        ranks[rows] = (1 + (scores > t).sum(1) + (scores == t).sum(1) - 1).numpy()
    model.train(was_training)
    return ranks
