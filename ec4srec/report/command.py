"""Paper-style tables (Table 3: methods; Table 4: backbones) and sensitivity figures of a study,
or the Table 3 layout and validation curves of converged single runs.

    python tune/report.py --experiment ~/ray_results/ec4srec-sports
    python tune/report.py --runs ours results/beauty-ours/ours-* \
        --runs paper results/beauty-paper-regime/paper-* --output results/beauty-ours/report

Reads <experiment>/seeds.csv and trials.csv; writes Markdown, LaTeX, CSV and PNG files to
<experiment>/report (or --output) and prints the Markdown tables. With --export DIR it then
copies the study's portable results and durable state (options, space, Optuna journal, budget
ledger, ended trials' records, trial/epoch/seed tables, best configs, tables, figures; no
checkpoints) to DIR, e.g. a folder under results/ to commit; a study under way (no tables yet)
is exported as it stands, and `tune/search.py --resume --storage-path PARENT --name DIR_NAME`
continues it from that copy on any machine.

With --runs LABEL DIR... (repeatable: one setting each) it reads finished `ec4srec train`
folders instead (metrics.json, config.yaml, history.csv), or a search study's folder (its seed
re-runs, e.g. `--runs tuned results/beauty-search/study --runs defaults results/beauty-ours/ours-*`) and writes table3.{md,tex,csv} with
one column group per setting and the paper's published numbers beside them (--no-paper to
leave them out; runs of several backbones give table4.{md,tex,csv}, a group per backbone and
setting), runs.md/runs.csv (one line per run: epochs, converged or cut, wall time) and
curves.png (validation NDCG@10 per epoch of every run) and curves_by_method.png (a panel
per method, zoomed on convergence).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import os_error_line
from ..registry import GUIDED
from .results import TableError, export_study
from .runs import render_runs
from .tables import render


def main(argv=None, prog: str | None = None) -> int:
    """``tune/report.py`` / ``ec4srec report``: 0 written, 2 bad input (one error line)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="the study folder (<storage_path>/<name>)")
    source.add_argument("--runs", nargs="+", action="append", metavar="LABEL DIR",
                        help="a setting's label, then its finished run folders (repeatable)")
    p.add_argument("--no-paper", action="store_true", help="--runs: leave the paper's numbers out")
    p.add_argument("--output", help="default: <experiment>/report (required with --runs)")
    p.add_argument("--backbone", help="Table 3's backbone (default: sasrec)")
    p.add_argument("--export", metavar="DIR", help="copy the portable results to DIR")
    p.add_argument("--ours", nargs="+", default=list(GUIDED), help="methods tested against the best baseline")
    args = p.parse_args(argv)
    if args.runs:
        return report_runs(args)
    exp = Path(args.experiment).expanduser()
    tables = (exp / "seeds.csv").exists() or (exp / "trials.csv").exists()
    if not tables and not (args.export and (exp / "study.json").exists()):
        print(f"error: {exp} has neither seeds.csv nor trials.csv", file=sys.stderr)
        return 2
    try:
        if tables:
            out = render(exp, args.output, args.backbone, tuple(args.ours))
            for table in ("table3.md", "table4.md"):
                if (out / table).exists():
                    print(f"## {table}\n\n{(out / table).read_text()}")
            print(f"tables and figures in {out}")
        else:
            print(f"{exp}: no tables yet (a study under way): exporting its durable state")
        if args.export:
            written = export_study(exp, Path(args.export))
            print(f"exported {len(written)} files to {args.export}")
    except TableError as exc:        # a malformed table: one line, exit 2, nothing half-written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:           # an --output/--export that is a file or not writable
        print(os_error_line(exc), file=sys.stderr)
        return 2
    return 0


def report_runs(args) -> int:
    if not args.output:
        print("error: --runs needs --output DIR", file=sys.stderr)
        return 2
    groups: dict[str, list[str]] = {}
    for label, *dirs in args.runs:
        if Path(label).is_dir() or not dirs:
            print(f"error: --runs {label} ...: give the setting's label first, then its run "
                  f"folders (e.g. --runs ours runs/ours-*)", file=sys.stderr)
            return 2
        groups.setdefault(label, []).extend(dirs)
    try:
        out = render_runs(groups, args.output, paper=not args.no_paper, ours=tuple(args.ours))
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:           # an --output that is a file or not writable
        print(os_error_line(exc), file=sys.stderr)
        return 2
    table = "table4.md" if (out / "table4.md").exists() else "table3.md"
    print(f"## {table}\n\n{(out / table).read_text()}\n## runs.md\n\n{(out / 'runs.md').read_text()}")
    print(f"tables and curves in {out}")
    return 0
