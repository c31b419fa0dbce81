"""Converged single runs (``ec4srec train --output DIR``) as report tables (no Ray, no torch
unless a run lacks history.csv).

Contracts:
- A run folder holds ``metrics.json`` (written at the end of a run: method, backbone, dataset,
  test metrics, best/run epochs) and ``config.yaml`` (its seed); a folder without metrics.json
  is a run that has not finished and is an error, never a silent row.
- Its validation curve comes from ``history.csv`` or, for runs of older code that did not write
  one, from the loop history inside ``checkpoint.pt``; a run with neither has no curve.
- A folder holding ``study.json`` is a search study (``tune/search.py``): its seed re-runs,
  each with its run's best config, are its runs (:func:`read_study`).
- :func:`runs_table` gives one row per run in the layout of a study's ``seeds.csv`` plus
  ``setting`` (the label the runs were given), ``best_epoch``, ``epochs_run``, ``converged``
  (stopped early, or ran its whole epoch budget) and ``wall_time_s``, so the study's Table 3
  code (:func:`ec4srec.report.tables.build_table`) renders it grouped by setting.
- ``terms`` is the guided terms a run trained with after its first update (``cl+ cl- sl+``,
  from its method and lambdas: ``MethodConfig.guided_terms``); a guided run with fewer terms
  than its method has (a zeroed lambda) is an ``ablation`` run: it is left out of the Table 3
  layout and goes to :func:`ablation_table` (the paper's Figure 5: L_rec with each combination
  of L_cl+, L_cl- and L_sl+, beside CL4SRec and DuoRec).
- :func:`paper_rows` gives the paper's published numbers (``paper_results.json``: Tables 3
  and 4) in the same layout, as one row per method (setting "published", ``seed`` = "paper").
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from ..checkpoint import CheckpointError, atomic_write_text, load_torch
from ..config import BACKBONES, MethodConfig
from ..registry import GUIDED, METHOD_NAMES
from ..typed import load_yaml
from .results import EXTRA_METRICS, METRICS, TableError
from .run_figures import ablation_figure, curves_figure, curves_panels_figure
from .tables import build_table, comparisons, has_unseen, write_comparisons, write_table

PAPER_RESULTS = Path(__file__).with_name("paper_results.json")
PUBLISHED = "published"                  # the setting label of the paper's own numbers


TERM_KEYS = ("lambda_cl_pos", "lambda_cl_neg", "lambda_sl_pos", "ssl_weighting")
# Figure 5's combinations, in its order (each with L_rec)
COMBINATIONS = (("cl+",), ("cl-",), ("sl+",), ("cl+", "cl-"), ("cl+", "sl+"), ("cl-", "sl+"),
                ("cl+", "cl-", "sl+"))
TERM_LABELS = {"cl+": "L_cl+", "cl-": "L_cl-", "sl+": "L_sl+"}


def run_terms(method: str, method_config: dict | None) -> tuple[tuple[str, ...], bool]:
    """(the guided terms a run trained with, whether that is fewer than its method has)."""
    given = {k: v for k, v in (method_config or {}).items() if k in TERM_KEYS}
    try:
        terms = MethodConfig(name=method, **given).guided_terms()
    except TypeError:                       # a lambda that is not a number
        raise TableError(f"method config {given} of a {method} run is malformed") from None
    return terms, terms != MethodConfig(name=method).guided_terms()


def combination_label(terms: tuple[str, ...]) -> str:
    return "L_rec + " + " + ".join(TERM_LABELS[t] for t in terms)


def _parse(file: Path, parse):
    """``parse(file's text)``; an unreadable or malformed file is one TableError naming it."""
    try:
        return parse(file.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise TableError(f"{file}: unreadable: {' '.join(str(exc).split())[:160]}") from None


def read_run(path: str | Path, setting: str) -> dict:
    """One finished run folder as a flat row; raises TableError naming the file."""
    path = Path(path)
    metrics_file, config_file = path / "metrics.json", path / "config.yaml"
    if not path.is_dir():
        raise TableError(f"{path}: no such run folder")
    if not metrics_file.exists():
        raise TableError(f"{path}: no metrics.json (the run has not finished; resume it with "
                         f"`ec4srec train --output {path} --resume`)")
    record = _parse(metrics_file, json.loads)
    config = _parse(config_file, load_yaml) if config_file.exists() else {}
    return run_row(record, config, setting, path, metrics_file, config_file)


def read_study(path: Path, setting: str) -> list[dict]:
    """A search study's seed re-runs (``seeds/<run>/seed_<s>.json``, each with its run's
    ``best/<run>.yaml``) as rows like :func:`read_run`'s; raises TableError naming the file."""
    files = sorted(path.glob("seeds/*/seed_*.json"))
    if not files:
        raise TableError(f"{path}: a study without seed re-runs (seeds/<run>/seed_<s>.json)")
    rows = []
    for file in files:
        best = path / "best" / f"{file.parent.name}.yaml"
        if not best.exists():
            raise TableError(f"{best}: missing (the best config of the seed re-run {file})")
        record = _parse(file, json.loads)
        config = _parse(best, load_yaml)
        if isinstance(record, dict) and isinstance(config, dict) and isinstance(config.get("train"), dict):
            config = {**config, "train": {**config["train"], "seed": record.get("seed")}}
        row = run_row(record, config, setting, file.parent, file, best)
        rows.append({**row, "run": f"{file.parent.name}/{file.stem}", "path": str(file)})
    return rows


def run_row(record, config, setting: str, path: Path, metrics_file: Path, config_file: Path) -> dict:
    """One run's metrics record and config as a flat row; raises TableError naming the file."""
    if not isinstance(record, dict):
        raise TableError(f"{metrics_file}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("method", "dataset", "backbone") if not isinstance(record.get(k), str)]
    if missing:
        raise TableError(f"{metrics_file}: no {', '.join(missing)}")
    test = record.get("test")
    if not isinstance(test, dict) or any(m not in test for m in METRICS):
        raise TableError(f"{metrics_file}: no test metrics (the run was fit without a test read)")
    bad = [m for m in METRICS if isinstance(test[m], bool) or not isinstance(test[m], (int, float))]
    if bad:
        raise TableError(f"{metrics_file}: test {bad[0]} is {test[bad[0]]!r}, not a number")
    try:
        seed = int(config["train"]["seed"])
    except (KeyError, TypeError, ValueError):
        raise TableError(f"{config_file}: no train.seed") from None
    method_config = config.get("method") if isinstance(config, dict) else None
    try:
        terms, ablation = run_terms(record["method"], method_config if isinstance(method_config, dict) else None)
    except TableError as exc:
        raise TableError(f"{config_file}: {exc}") from None
    budget, run_epochs = record.get("epoch_budget"), record.get("epochs_run")
    row = {"setting": setting, "dataset": record["dataset"], "method": record["method"],
           "backbone": record["backbone"], "seed": seed, "run": path.name,
           "best_epoch": record.get("best_epoch"), "epochs_run": run_epochs,
           "epoch_budget": budget, "stopped_early": bool(record.get("stopped_early")),
           "converged": bool(record.get("stopped_early")) or (run_epochs is not None and run_epochs == budget),
           "wall_time_s": record.get("wall_time_s"), "path": str(path),
           "first_update": (record.get("update_epochs") or [None])[0],
           # an update at epoch e runs at the start of epoch e: done when e <= epochs run
           "updates_done": [int(e) for e in record.get("update_epochs") or []
                            if run_epochs is not None and e <= run_epochs],
           "terms": " ".join(terms), "ablation": ablation}
    row.update({f"test/{m}": float(test[m]) for m in METRICS})
    row.update({f"test/{m}": float(test[m]) for m in EXTRA_METRICS      # newer runs only
                if isinstance(test.get(m), (int, float)) and not isinstance(test[m], bool)})
    row.update({f"valid/{m}": v for m, v in (record.get("valid") or {}).items()})
    return row


def runs_table(groups: dict[str, list[str | Path]]) -> pd.DataFrame:
    """Rows of all runs, ``groups`` mapping a setting label to its run folders."""
    if PUBLISHED in groups:
        raise TableError(f"the setting label {PUBLISHED!r} is reserved for the paper's numbers")
    rows = []
    for label, paths in groups.items():
        for p in map(Path, paths):      # a search study's folder: its seed re-runs
            rows += read_study(p, label) if (p / "study.json").exists() else [read_run(p, label)]
    if not rows:
        raise TableError("no run folders given")
    df = pd.DataFrame(rows)
    dup = df[df.duplicated(["setting", "dataset", "method", "backbone", "terms", "seed"], keep=False)]
    if len(dup):
        raise TableError(f"two runs of the same setting, method, terms and seed: {sorted(dup['path'])}")
    return df


def read_history(path: str | Path) -> pd.DataFrame | None:
    """Per-epoch rows (``epoch``, ``valid/ndcg@10``, ...) of a run folder, or None."""
    path = Path(path)
    file = path / "history.csv"
    if file.exists():
        try:
            hist = pd.read_csv(file)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise TableError(f"{file}: unreadable: {' '.join(str(exc).split())[:160]}") from None
    elif (path / "checkpoint.pt").exists():
        try:
            ckpt = load_torch(path / "checkpoint.pt")
        except CheckpointError as exc:
            raise TableError(str(exc)) from None
        loop = ckpt.get("loop") if isinstance(ckpt, dict) else None
        history = loop.get("history") if isinstance(loop, dict) else None
        hist = pd.DataFrame(history) if history else None
        file = path / "checkpoint.pt"
    else:
        return None
    if hist is not None and "valid/ndcg@10" in hist:
        for col in ("epoch", "valid/ndcg@10"):
            if col not in hist or not pd.api.types.is_numeric_dtype(hist[col]):
                raise TableError(f"{file}: column {col!r} missing or not numeric")
    return hist


def run_histories(df: pd.DataFrame) -> dict:
    """Each run's per-epoch history (read once for every figure), keyed by its ``df`` index;
    runs without a validation NDCG@10 curve are left out."""
    histories = {i: read_history(r["path"]) for i, r in df.iterrows()}
    return {i: h for i, h in histories.items() if h is not None and "valid/ndcg@10" in h}


def paper_rows(dataset: str, backbone: str = "sasrec") -> pd.DataFrame:
    """The paper's numbers for ``dataset`` in the runs_table layout (setting "published")."""
    paper = json.loads(PAPER_RESULTS.read_text())
    table = paper["table3"] if backbone == "sasrec" else paper["table4"].get(backbone, {})
    methods = table.get(dataset, {})
    if backbone == "sasrec":                 # Table 3's contrastive methods and its SASRec
        methods = {m: v for m, v in methods.items()
                   if m in METHOD_NAMES}
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
    """One line per run: setting, method, seed, epochs, the importance updates it ran (epochs),
    converged, validation and test NDCG@10; when some run has them, test NDCG@10 with the
    history removed (unseen items) and the share of test users whose top-1 is their own last
    item."""
    unseen = has_unseen(df)
    extra_heads = " test NDCG@10 unseen | top-1 = last item |" if unseen else ""
    lines = ["| setting | method | backbone | seed | best / run epochs (budget) | importance updates | "
             "converged | valid NDCG@10 | test NDCG@10 | test HR@10 |" + extra_heads
             + " wall time (h) |", "|" + "---|" * (13 if unseen else 11)]
    for _, r in df.sort_values(["setting", "backbone", "method", "seed"]).iterrows():
        conv = ("yes, early stop" if r["stopped_early"] else "yes, full budget") if r["converged"] \
            else "**no: cut**"
        wall = f"{r['wall_time_s'] / 3600:.2f}" if pd.notna(r["wall_time_s"]) else "-"
        valid = f"{r['valid/ndcg@10']:.4f}" if pd.notna(r.get("valid/ndcg@10")) else "-"
        epochs = " / ".join(_int(r[k]) for k in ("best_epoch", "epochs_run"))
        method = f"{r['method']} [{r['terms']}]" if r.get("ablation") else r["method"]
        updates = r.get("updates_done")
        updates = ", ".join(map(str, updates)) if isinstance(updates, list) and updates else "-"
        extra = ""
        if unseen:
            extra = " " + " | ".join(f"{r[k]:.4f}" if pd.notna(r.get(k)) else "-" for k in
                                     ("test/ndcg@10_unseen", "test/last_item_top1")) + " |"
        lines.append(f"| {r['setting']} | {method} | {r['backbone']} | {r['seed']} | "
                     f"{epochs} ({_int(r['epoch_budget'])}) | {updates} | {conv} | "
                     f"{valid} | {r['test/ndcg@10']:.4f} | {r['test/hr@10']:.4f} |{extra} {wall} |")
    return "\n".join(lines) + "\n"


def render_runs(groups: dict[str, list[str | Path]], out: str | Path, paper: bool = True,
                ours=None) -> Path:
    """Write the Table 3 layout of converged runs (one column group per setting, the paper's
    numbers beside them when ``paper``), runs.md/runs.csv, curves.png and curves_by_method.png to
    ``out``. Runs of several backbones (e.g. the SASRec study beside a GRU4Rec/Caser one) give
    the Table 4 layout instead, ``table4*`` (a group per backbone and setting: backbones in
    ``config.BACKBONES`` order, each one's settings as given, the paper's last). Every run
    folder is read (and checked) before anything is written."""
    df = runs_table(groups)
    histories = run_histories(df)               # read (and checked) before anything is written
    out = Path(out)
    table = df[~df["ablation"]]
    if table.empty:
        raise TableError("every run given is an ablation run (a zeroed guided lambda); "
                         "Table 3 needs at least one run of a method as specified")
    multi_backbone = table["backbone"].nunique() > 1     # the runs of Table 3/4 (no ablation)
    if paper:
        extra = [paper_rows(d, b) for d, b in table[["dataset", "backbone"]].drop_duplicates().values]
        table = pd.concat([table, *extra], ignore_index=True)
    table = table.assign(group=table["setting"] + (("/" + table["backbone"]) if multi_backbone else ""))
    out.mkdir(parents=True, exist_ok=True)
    groups_order = list(dict.fromkeys(table["group"]))
    stem = "table3"
    if multi_backbone:     # Table 4's layout: each backbone's settings side by side, the paper's last
        stem = "table4"
        settings = [*groups, PUBLISHED]
        pairs = dict.fromkeys(zip(table["backbone"], table["setting"], table["group"]))
        groups_order = [g for _, _, g in sorted(pairs, key=lambda k: (
            BACKBONES.index(k[0]) if k[0] in BACKBONES else len(BACKBONES), k[0],
            settings.index(k[1])))]
    cells = build_table(table, groups_order, tuple(ours or GUIDED), group_col="group",
                        metrics=PAPER_METRICS)
    other = "table3" if multi_backbone else "table4"    # an earlier report's other layout
    for name in (other, f"{other}_unseen"):
        for suffix in (".md", ".tex", ".csv"):
            (out / f"{name}{suffix}").unlink(missing_ok=True)
    write_table(cells, out, stem, group_col="group")
    runs_only = table[table["setting"].isin(groups)]          # the published rows have no seeds
    run_groups = [g for g in groups_order if g in set(runs_only["group"])]
    write_comparisons(comparisons(runs_only, run_groups, tuple(ours or GUIDED), group_col="group",
                                  metrics=PAPER_METRICS), out, group_col="group")
    if has_unseen(runs_only):         # the same under the unseen-items protocol (no paper rows)
        unseen = tuple(f"{m}_unseen" for m in PAPER_METRICS)
        write_table(build_table(runs_only, run_groups, tuple(ours or GUIDED), group_col="group",
                                metrics=unseen), out, f"{stem}_unseen", group_col="group")
        write_comparisons(comparisons(runs_only, run_groups, tuple(ours or GUIDED),
                                      group_col="group", metrics=unseen),
                          out, group_col="group", stem="comparisons_unseen")
    if df["ablation"].any():
        ablation = ablation_table(df)
        ablation.to_csv(out / "ablation.csv", index=False)
        atomic_write_text(out / "ablation.md", ablation_markdown(ablation))
        ablation_figure(ablation, out / "ablation.png")
    atomic_write_text(out / "runs.md", runs_markdown(df))
    df.drop(columns=["path"]).to_csv(out / "runs.csv", index=False)
    curves_figure(df, histories, out / "curves.png")
    curves_panels_figure(df, histories, out / "curves_by_method.png")
    return out


# ------------------------------------------------------------------ Figure 5: the loss ablation
def ablation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 5's layout per (setting, dataset, backbone): CL4SRec, DuoRec, then L_rec with each
    combination of the guided terms (a guided run of any variant counts for the terms it trained
    with: EC4SRec(SSL) = L_cl+ + L_cl-, EC4SRec(SL) = L_sl+; one run per seed, the variant's
    when an ablation run repeats it). The bars of a panel are paired: each uses only the seeds
    that every bar run at all was run with (the ablation runs are often one seed where the
    variants have three; a seed fixes the batch order, so bars on one seed differ only by their
    losses); without such a seed each bar uses all of its own, and ``paired`` says so.
    Rows: setting, dataset, backbone, bar, terms, n (seeds), seeds, paired, test NDCG@5 and
    NDCG@10 mean and sample std; n = 0 where not run."""
    rows = []
    for (setting, dataset, backbone), g in df.groupby(["setting", "dataset", "backbone"], sort=False):
        bars = [("CL4SRec", g[g["method"] == "cl4srec"], ""), ("DuoRec", g[g["method"] == "duorec"], "")]
        guided = g[g["terms"] != ""]
        bars += [(combination_label(c), guided[guided["terms"] == " ".join(c)], " ".join(c))
                 for c in COMBINATIONS]
        # one run per seed: a variant and an EC4SRec run zeroed to its terms train the
        # same experiment (EC4SRec(SSL) = EC4SRec with lambda_sl+ = 0); the variant counts
        bars = [(bar, runs.sort_values("ablation", kind="stable").drop_duplicates("seed"), terms)
                for bar, runs, terms in bars]
        seed_sets = [set(runs["seed"]) for _, runs, _ in bars if len(runs)]
        common = set.intersection(*seed_sets) if seed_sets else set()
        for bar, runs, terms in bars:
            if common:
                runs = runs[runs["seed"].isin(common)]
            row = {"setting": setting, "dataset": dataset, "backbone": backbone, "bar": bar,
                   "terms": terms, "n": len(runs),
                   "seeds": " ".join(str(x) for x in sorted(runs["seed"])), "paired": bool(common)}
            for m in ("ndcg@5", "ndcg@10"):
                v = runs[f"test/{m}"]
                row[f"{m}_mean"] = float(v.mean()) if len(v) else float("nan")
                row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else float("nan"))
            rows.append(row)
    return pd.DataFrame(rows)


def ablation_markdown(table: pd.DataFrame) -> str:
    lines = ["Each panel's bars use the seeds every bar of it was run with (paired: one batch order "
             "per seed), unless no seed is common to all (unpaired, each bar its own seeds).", "",
             "| setting | dataset | backbone | loss | seeds | test NDCG@5 | test NDCG@10 |",
             "|" + "---|" * 7]
    for _, r in table.iterrows():
        cells = []
        for m in ("ndcg@5", "ndcg@10"):
            mean, std = r[f"{m}_mean"], r[f"{m}_std"]
            cells.append("not run" if r["n"] == 0 else f"{mean:.4f}" if r["n"] == 1
                         else f"{mean:.4f} ± {std:.4f}")
        seeds = "0" if r["n"] == 0 else f"{r['n']} ({r['seeds']}{'' if r['paired'] else ', unpaired'})"
        lines.append(f"| {r['setting']} | {r['dataset']} | {r['backbone']} | {r['bar']} | {seeds} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
