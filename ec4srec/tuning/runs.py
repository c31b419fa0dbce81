"""Converged single runs (``ec4srec train --output DIR``) as report tables (no Ray, no torch
unless a run lacks history.csv).

Contracts:
- A run folder holds ``metrics.json`` (written at the end of a run: method, backbone, dataset,
  test metrics, best/run epochs) and ``config.yaml`` (its seed); a folder without metrics.json
  is a run that has not finished and is an error, never a silent row.
- Its validation curve comes from ``history.csv`` or, for runs of older code that did not write
  one, from the loop history inside ``checkpoint.pt``; a run with neither has no curve.
- :func:`runs_table` gives one row per run in the layout of a study's ``seeds.csv`` plus
  ``setting`` (the label the runs were given), ``best_epoch``, ``epochs_run``, ``converged``
  (stopped early, or ran its whole epoch budget) and ``wall_time_s``, so the study's Table 3
  code (:func:`ec4srec.tuning.report.build_table`) renders it grouped by setting.
- :func:`paper_rows` gives the paper's published numbers (``paper_results.json``: Tables 3
  and 4) in the same layout, as one row per method (setting "published", ``seed`` = "paper").
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from .results import METRICS, TableError

PAPER_RESULTS = Path(__file__).with_name("paper_results.json")
PUBLISHED = "published"                  # the setting label of the paper's own numbers


def read_run(path: str | Path, setting: str) -> dict:
    """One finished run folder as a flat row; raises TableError naming the file."""
    path = Path(path)
    metrics_file, config_file = path / "metrics.json", path / "config.yaml"
    if not metrics_file.exists():
        raise TableError(f"{path}: no metrics.json (the run has not finished; resume it with "
                         f"`ec4srec train --output {path} --resume`)")
    try:
        record = json.loads(metrics_file.read_text())
        config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: unreadable metrics.json/config.yaml: {exc}") from None
    test = record.get("test")
    if not isinstance(test, dict) or any(m not in test for m in METRICS):
        raise TableError(f"{metrics_file}: no test metrics (the run was fit without a test read)")
    try:
        seed = int(config["train"]["seed"])
    except (KeyError, TypeError, ValueError):
        raise TableError(f"{config_file}: no train.seed") from None
    budget, run_epochs = record.get("epoch_budget"), record.get("epochs_run")
    row = {"setting": setting, "dataset": record["dataset"], "method": record["method"],
           "backbone": record["backbone"], "seed": seed, "run": path.name,
           "best_epoch": record.get("best_epoch"), "epochs_run": run_epochs,
           "epoch_budget": budget, "stopped_early": bool(record.get("stopped_early")),
           "converged": bool(record.get("stopped_early")) or (run_epochs is not None and run_epochs == budget),
           "wall_time_s": record.get("wall_time_s"), "path": str(path),
           "first_update": (record.get("update_epochs") or [None])[0]}
    row.update({f"test/{m}": float(test[m]) for m in METRICS})
    row.update({f"valid/{m}": v for m, v in (record.get("valid") or {}).items()})
    return row


def runs_table(groups: dict[str, list[str | Path]]) -> pd.DataFrame:
    """Rows of all runs, ``groups`` mapping a setting label to its run folders."""
    if PUBLISHED in groups:
        raise TableError(f"the setting label {PUBLISHED!r} is reserved for the paper's numbers")
    rows = [read_run(p, label) for label, paths in groups.items() for p in paths]
    if not rows:
        raise TableError("no run folders given")
    df = pd.DataFrame(rows)
    dup = df[df.duplicated(["setting", "dataset", "method", "backbone", "seed"], keep=False)]
    if len(dup):
        raise TableError(f"two runs of the same setting, method and seed: {sorted(dup['path'])}")
    return df


def read_history(path: str | Path) -> pd.DataFrame | None:
    """Per-epoch rows (``epoch``, ``valid/ndcg@10``, ...) of a run folder, or None."""
    path = Path(path)
    if (path / "history.csv").exists():
        return pd.read_csv(path / "history.csv")
    if (path / "checkpoint.pt").exists():
        from ..checkpoint import load_torch
        history = load_torch(path / "checkpoint.pt").get("loop", {}).get("history")
        return pd.DataFrame(history) if history else None
    return None


def paper_rows(dataset: str, backbone: str = "sasrec") -> pd.DataFrame:
    """The paper's numbers for ``dataset`` in the runs_table layout (setting "published")."""
    paper = json.loads(PAPER_RESULTS.read_text())
    table = paper["table3"] if backbone == "sasrec" else paper["table4"].get(backbone, {})
    methods = table.get(dataset, {})
    if backbone == "sasrec":                 # Table 3's contrastive methods and its SASRec
        methods = {m: v for m, v in methods.items()
                   if m in ("sasrec", "cl4srec", "duorec", "ec4srec_ssl", "ec4srec_sl", "ec4srec")}
    elif backbone in paper["table3"].get(dataset, {}):   # Table 4's base model is Table 3's column
        methods = {backbone: paper["table3"][dataset][backbone], **methods}
    rows = []
    for method, values in methods.items():
        row = {"setting": PUBLISHED, "dataset": dataset, "backbone": backbone,
               "method": "sasrec" if method == backbone else method, "seed": "paper"}
        row.update({f"test/{m}": values.get(m, float("nan")) for m in METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ rendering
PAPER_METRICS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")     # the paper's tables' columns


def _int(value) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def runs_markdown(df: pd.DataFrame) -> str:
    """One line per run: setting, method, seed, epochs, converged, validation and test NDCG@10."""
    lines = ["| setting | method | backbone | seed | best / run epochs (budget) | converged | "
             "valid NDCG@10 | test NDCG@10 | test HR@10 | wall time (h) |", "|" + "---|" * 10]
    for _, r in df.sort_values(["setting", "backbone", "method", "seed"]).iterrows():
        conv = ("yes, early stop" if r["stopped_early"] else "yes, full budget") if r["converged"] \
            else "**no: cut**"
        wall = f"{r['wall_time_s'] / 3600:.2f}" if pd.notna(r["wall_time_s"]) else "-"
        valid = f"{r['valid/ndcg@10']:.4f}" if pd.notna(r.get("valid/ndcg@10")) else "-"
        epochs = " / ".join(_int(r[k]) for k in ("best_epoch", "epochs_run"))
        lines.append(f"| {r['setting']} | {r['method']} | {r['backbone']} | {r['seed']} | "
                     f"{epochs} ({_int(r['epoch_budget'])}) | {conv} | "
                     f"{valid} | {r['test/ndcg@10']:.4f} | {r['test/hr@10']:.4f} | {wall} |")
    return "\n".join(lines) + "\n"


def curves_figure(df: pd.DataFrame, path: Path) -> Path | None:
    """Validation NDCG@10 per epoch of every run in one figure: a colour per method, a line
    style per setting, a dot at each run's best epoch, a dotted line at the guided runs' first
    importance update. None when no run has a history."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..config import METHODS
    from .report import LABELS
    styles = ["-", "--", ":", "-."]
    settings = list(dict.fromkeys(df["setting"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = 0
    for _, r in df.iterrows():
        hist = read_history(r["path"])
        if hist is None or "valid/ndcg@10" not in hist:
            continue
        color = f"C{METHODS.index(r['method'])}" if r["method"] in METHODS else "k"
        style = styles[settings.index(r["setting"]) % len(styles)]
        label = f"{r['setting']}: {LABELS.get(r['method'], r['method'])} (seed {r['seed']})"
        ax.plot(hist["epoch"], hist["valid/ndcg@10"], style, color=color, lw=1, label=label)
        best = hist.loc[hist["valid/ndcg@10"].idxmax()]
        ax.plot([best["epoch"]], [best["valid/ndcg@10"]], "o", color=color, ms=3)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    firsts = sorted({int(e) for e in df.get("first_update", pd.Series(dtype=float)).dropna()})
    for i, epoch in enumerate(firsts):       # where the guided runs switched to guided training
        ax.axvline(epoch, color="grey", ls=":", lw=0.8,
                   label="first importance update" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.legend(fontsize=6, ncol=2, title="dot: best epoch (the model tested)", title_fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_runs(groups: dict[str, list[str | Path]], out: str | Path, paper: bool = True,
                ours=None) -> Path:
    """Write the Table 3 layout of converged runs (one column group per setting, the paper's
    numbers beside them when ``paper``), runs.md/runs.csv and curves.png to ``out``. Every run
    folder is read (and checked) before anything is written."""
    from .report import OURS, build_table, write_table
    df = runs_table(groups)
    out = Path(out)
    table = df
    if paper:
        extra = [paper_rows(d, b) for d, b in df[["dataset", "backbone"]].drop_duplicates().values]
        table = pd.concat([df, *extra], ignore_index=True)
    multi_backbone = df["backbone"].nunique() > 1
    table = table.assign(group=table["setting"] + (("/" + table["backbone"]) if multi_backbone else ""))
    out.mkdir(parents=True, exist_ok=True)
    groups_order = list(dict.fromkeys(table["group"]))
    cells = build_table(table, groups_order, tuple(ours or OURS), group_col="group",
                        metrics=PAPER_METRICS)
    write_table(cells, out, "table3", group_col="group")
    (out / "runs.md").write_text(runs_markdown(df))
    df.drop(columns=["path"]).to_csv(out / "runs.csv", index=False)
    curves_figure(df, out / "curves.png")
    return out
