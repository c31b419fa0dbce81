"""Paper-style tables (Table 3: methods; Table 4: backbones) and sensitivity figures of a study.

    python tune/report.py --experiment ~/ray_results/ec4srec-sports

Reads <experiment>/seeds.csv and trials.csv; writes Markdown, LaTeX, CSV and PNG files to
<experiment>/report (or --output) and prints the Markdown tables. With --export DIR it then
copies the study's portable results (options, summary, trial/epoch/seed tables, best configs,
tables, figures; no checkpoints) to DIR, e.g. a folder under results/ to commit.
"""
import argparse
import sys
from pathlib import Path

from ec4srec.tuning.report import OURS, render


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="the study folder (<storage_path>/<name>)")
    p.add_argument("--output", help="default: <experiment>/report")
    p.add_argument("--backbone", help="Table 3's backbone (default: sasrec)")
    p.add_argument("--export", metavar="DIR", help="copy the portable results to DIR")
    p.add_argument("--ours", nargs="+", default=list(OURS), help="methods tested against the best baseline")
    args = p.parse_args(argv)
    exp = Path(args.experiment).expanduser()
    if not (exp / "seeds.csv").exists() and not (exp / "trials.csv").exists():
        print(f"error: {exp} has neither seeds.csv nor trials.csv", file=sys.stderr)
        return 2
    from ec4srec.tuning.results import TableError, export_study
    try:
        out = render(exp, args.output, args.backbone, tuple(args.ours))
        for table in ("table3.md", "table4.md"):
            if (out / table).exists():
                print(f"## {table}\n\n{(out / table).read_text()}")
        print(f"tables and figures in {out}")
        if args.export:
            written = export_study(exp, Path(args.export))
            print(f"exported {len(written)} files to {args.export}")
    except TableError as exc:        # a malformed table: one line, exit 2, nothing half-written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
