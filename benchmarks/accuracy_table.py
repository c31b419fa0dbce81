"""Collect finished run directories into results/: metrics.json + config.yaml per run and a
Markdown table with each run's command, commit, hardware, budget and wall time.

    python benchmarks/accuracy_table.py --runs runs/beauty-sasrec-fullce runs/beauty-cl4srec ... \
        --out results/beauty --title "Beauty, SASRec backbone" --commands runs/commands.txt
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--commands", help="file: one 'RUN_DIR<TAB>command<TAB>commit' line per run")
    parser.add_argument("--paper", help="JSON {method: {metric: value}} of the paper's numbers")
    parser.add_argument("--notes", default="")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = {}
    if args.commands:
        for line in Path(args.commands).read_text().splitlines():
            if line.strip():
                run, command, commit = line.split("\t")
                commands[Path(run).name] = (command, commit)
    paper = json.loads(Path(args.paper).read_text()) if args.paper else {}
    rows, details = [], []
    for run in map(Path, args.runs):
        record = json.loads((run / "metrics.json").read_text())
        dest = out / run.name
        dest.mkdir(exist_ok=True)
        shutil.copy(run / "metrics.json", dest / "metrics.json")
        shutil.copy(run / "config.yaml", dest / "config.yaml")
        test = record["test"]
        method = record["method"]
        paper_cells = paper.get(method, {})
        rows.append(f"| {method} | " + " | ".join(
            f"{test[m]:.4f}" + (f" ({paper_cells[m]:.4f})" if m in paper_cells else "") for m in METRICS)
            + f" | {record['best_epoch']}/{record['epochs_run']} | {record['wall_time_s'] / 60:.0f} |")
        command, commit = commands.get(run.name, ("(see config.yaml)", "?"))
        hw = record["hardware"]
        details.append(f"- `{run.name}`: `{command}` — commit {commit}; {hw['processor']}, "
                       f"{hw['cpu_count']} cores, {hw['torch_threads']} torch thread(s), "
                       f"{record['device']}; {record['seconds_per_epoch']:.0f} s/epoch")
    text = [f"# {args.title}", "", args.notes, "",
            "Test metrics of the best-validation epoch (paper Table 3 in parentheses where it "
            "reports the method); the test split was read once per run, after training.", "",
            "| method | " + " | ".join(m.upper().replace("NDCG", "NDCG") for m in METRICS)
            + " | best/run epochs | train minutes |",
            "|---|" + "---|" * (len(METRICS) + 2), *rows, "", "Runs:", "", *details, ""]
    (out / "README.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
