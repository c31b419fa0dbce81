"""Paper-style tables and figures from a study's tables (no Ray; the t-test is scipy's).

Contracts:
- Input: ``<exp>/seeds.csv`` (one row per run and seed: dataset, method, backbone, seed,
  test/<metric>) and, for figures, ``<exp>/trials.csv``.
- Table 3 layout (one backbone): rows dataset x metric, one column per method, cells
  ``mean ± std`` over seeds (sample std). Table 4 layout: the same with a column group per
  backbone. Within a group the best mean is bold, the second underlined; a cell of an
  explanation-guided method (``registry.GUIDED``) gets ``*`` (p < 0.05) or ``**`` (p < 0.01) when it beats
  the group's strongest baseline in a two-sided paired t-test over seeds (paired by seed).
- ``comparisons.{md,csv}``: every guided method against every baseline of its group (mean
  difference over common seeds, paired t, p).
- Each table is written as Markdown, LaTeX and tidy CSV; figures (mu_e, p, explainer
  sensitivity from the trial table) as PNG; the anytime curve from the epoch table
  (anytime.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..registry import GUIDED, LABELS, METHOD_NAMES as METHODS
from .anytime import write_anytime
from .results import METRICS, UNSEEN_METRICS, read_table
from .run_figures import pyplot


# ------------------------------------------------------------------ statistics
def t_pvalue(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with ``df`` degrees of freedom (scipy.stats.t)."""
    from scipy import stats          # heavy: imported when a test is computed
    return float(2.0 * stats.t.sf(abs(t), df))


def paired_ttest(x: list[float], y: list[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of x against y (scipy.stats.ttest_rel); p = nan with
    < 2 pairs. A constant non-zero difference (zero variance, where scipy gives nan) counts as
    t = +-inf, p = 0; no difference at all as t = 0, p = 1."""
    from scipy import stats          # heavy: imported when a test is computed
    d = [a - b for a, b in zip(x, y)]
    n = len(d)
    if n < 2:
        return float("nan"), float("nan")
    mean = sum(d) / n
    if all(v == d[0] for v in d):
        return (math.copysign(math.inf, mean), 0.0) if mean else (0.0, 1.0)
    res = stats.ttest_rel(x[:n], y[:n])
    return float(res.statistic), float(res.pvalue)


# ------------------------------------------------------------------ tables
def build_table(seeds: pd.DataFrame, backbones: list[str], ours=GUIDED,
                group_col: str = "backbone", metrics=METRICS) -> pd.DataFrame:
    """Tidy cells: dataset, metric, <group_col>, method, mean, std, n, rank (1 = best in its
    group), p_value (vs the group's best baseline; ours only), mark. A group is a backbone
    (a study's Table 3/4) or a setting (:func:`render_runs`); ``backbones`` lists the groups."""
    rows = []
    for dataset in sorted(seeds["dataset"].unique()):
        for metric in metrics:
            col = f"test/{metric}"
            if col not in seeds or seeds[col].dropna().empty:
                continue
            for backbone in backbones:
                group = seeds[(seeds["dataset"] == dataset) & (seeds[group_col] == backbone)]
                methods = [m for m in METHODS if m in set(group["method"])]
                per = {m: group[group["method"] == m].set_index("seed")[col].dropna() for m in methods}
                means = {m: float(s.mean()) for m, s in per.items() if len(s)}
                order = sorted(means, key=lambda m: -means[m])
                baselines = [m for m in order if m not in ours]
                for m in means:
                    s = per[m]
                    p, mark = float("nan"), ""
                    if m in ours and baselines and means.get(m, -1) > means[baselines[0]]:
                        ref = per[baselines[0]]
                        common = sorted(set(s.index) & set(ref.index))
                        _, p = paired_ttest([s[i] for i in common], [ref[i] for i in common])
                        mark = "**" if p < 0.01 else "*" if p < 0.05 else ""
                    rows.append({"dataset": dataset, "metric": metric, group_col: backbone,
                                 "method": m, "mean": means.get(m), "n": len(s),
                                 "std": float(s.std(ddof=1)) if len(s) > 1 else 0.0,
                                 "rank": order.index(m) + 1 if m in means else None,
                                 "p_value": p, "mark": mark})
    return pd.DataFrame(rows)


def comparisons(seeds: pd.DataFrame, groups: list[str], ours=GUIDED, group_col: str = "backbone",
                metrics=METRICS) -> pd.DataFrame:
    """Every explanation-guided method against every baseline of its group, paired by seed
    (the table marks only the best baseline; this says how each difference stands).
    Rows: dataset, <group_col>, metric, method, baseline, n (common seeds), seeds, mean_diff
    (method - baseline over the common seeds), t, p_value (two-sided paired t-test; nan with
    fewer than 2 common seeds)."""
    rows = []
    for dataset in sorted(seeds["dataset"].unique()):
        for group in groups:
            g = seeds[(seeds["dataset"] == dataset) & (seeds[group_col] == group)].dropna(subset=["seed"])
            methods = [m for m in METHODS if m in set(g["method"])]
            for metric in metrics:
                col = f"test/{metric}"
                if col not in g:
                    continue
                per = {m: g[g["method"] == m].set_index("seed")[col].dropna() for m in methods}
                for m in (m for m in methods if m in ours):
                    for base in (b for b in methods if b not in ours):
                        common = sorted(set(per[m].index) & set(per[base].index))
                        x, y = [per[m][i] for i in common], [per[base][i] for i in common]
                        t, p = paired_ttest(x, y)
                        rows.append({"dataset": dataset, group_col: group, "metric": metric,
                                     "method": m, "baseline": base, "n": len(common),
                                     "seeds": " ".join(str(int(i)) for i in common),
                                     "mean_diff": (sum(x) - sum(y)) / len(common) if common else float("nan"),
                                     "t": t, "p_value": p})
    return pd.DataFrame(rows)


def comparisons_markdown(table: pd.DataFrame, group_col: str = "backbone") -> str:
    lines = ["Each explanation-guided method against each baseline: the difference of test means "
             "over the seeds both were run with, and the two-sided paired t-test over those seeds "
             "(df = n - 1; no p with one seed).", "",
             f"| dataset | {group_col} | metric | method | baseline | seeds | mean diff | t | p |",
             "|" + "---|" * 9]
    for _, r in table.iterrows():
        p = "" if math.isnan(r["p_value"]) else f"{r['p_value']:.3f}"
        t = "" if math.isnan(r["t"]) else f"{r['t']:+.2f}"
        lines.append(f"| {r['dataset']} | {r[group_col]} | {r['metric'].upper()} | "
                     f"{LABELS.get(r['method'], r['method'])} | {LABELS.get(r['baseline'], r['baseline'])} | "
                     f"{r['n']} ({r['seeds']}) | {r['mean_diff']:+.4f} | {t} | {p} |")
    return "\n".join(lines) + "\n"


def _cell(row, fmt: str) -> str:
    """``mean ± std``; a cell of one run (or a published mean) shows the value alone."""
    if row["n"] <= 1:
        text = f"{row['mean']:.4f}"
    else:
        text = f"{row['mean']:.4f} ± {row['std']:.4f}" if fmt == "md" else \
            f"{row['mean']:.4f} $\\pm$ {row['std']:.4f}"
    if row["rank"] == 1:
        text = f"**{text}**" if fmt == "md" else f"\\textbf{{{text}}}"
    elif row["rank"] == 2:
        text = f"<u>{text}</u>" if fmt == "md" else f"\\underline{{{text}}}"
    if row["mark"]:
        text += row["mark"] if fmt == "md" else f"$^{{{row['mark']}}}$"
    return text


def render_table(cells: pd.DataFrame, fmt: str, group_col: str = "backbone") -> str:
    """Markdown (``md``) or LaTeX (``tex``) text of a table built by :func:`build_table`."""
    columns = list(dict.fromkeys(zip(cells[group_col], cells["method"])))
    multi = len({b for b, _ in columns}) > 1
    joiner = "+" if group_col == "backbone" else ": "
    heads = [(f"{LABELS.get(b, b)}{joiner}" if multi else "") + LABELS.get(m, m) for b, m in columns]
    body = []
    for (dataset, metric), group in cells.groupby(["dataset", "metric"], sort=False):
        by = {(r[group_col], r["method"]): r for _, r in group.iterrows()}
        body.append([dataset, metric.upper()] + [_cell(by[c], fmt) if c in by else "-" for c in columns])
    if fmt == "md":
        lines = ["| Dataset | Metric | " + " | ".join(heads) + " |",
                 "|" + "---|" * (len(heads) + 2)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    lines = ["\\begin{tabular}{ll" + "c" * len(heads) + "}", "\\toprule",
             "Dataset & Metric & " + " & ".join(heads) + " \\\\", "\\midrule"]
    lines += [" & ".join(r) + " \\\\" for r in body]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(cells: pd.DataFrame, out: Path, stem: str, group_col: str = "backbone") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(render_table(cells, "md", group_col))
    (out / f"{stem}.tex").write_text(render_table(cells, "tex", group_col))
    cells.to_csv(out / f"{stem}.csv", index=False)


def write_comparisons(table: pd.DataFrame, out: Path, group_col: str = "backbone",
                      stem: str = "comparisons") -> None:
    if table.empty:
        return
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(comparisons_markdown(table, group_col))


def has_unseen(df: pd.DataFrame) -> bool:
    """True when some test row carries the unseen-items protocol's metrics."""
    col = "test/ndcg@10_unseen"
    return col in df and df[col].notna().any()


# ------------------------------------------------------------------ figures
def sensitivity_figures(trials: pd.DataFrame, out: Path) -> list[Path]:
    """Best validation NDCG@10 of every trial against mu_e, p and the explainer, one colour per
    run: a dot per trial (hollow: stopped before the budget N by ASHA or patience, so its best is
    from fewer epochs; the legend names N, the epochs of a completed trial) and a line through
    the best trial at each value (a bar per value for the explainer, whose values have no
    order), which is what the search maximises; the title names the dataset. A mean over
    trials would mix full-budget and pruned trials."""
    plt = pyplot()
    made = []
    ok = trials[trials["state"] != "error"] if "state" in trials else trials
    for param, stem in (("method.mu_e", "mu_e"), ("method.updates", "p"),
                        ("method.explainer", "explainer")):
        if param not in ok or ok[param].dropna().empty:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        groups = list(ok.dropna(subset=[param]).groupby("run"))
        categories = sorted(ok[param].dropna().unique()) if param == "method.explainer" else None
        for i, (run, group) in enumerate(groups):
            color = f"C{i}"
            x = group[param]
            if categories is not None:       # categorical: side-by-side offsets per run
                shift = (i - (len(groups) - 1) / 2) * 0.8 / max(len(groups), 1)
                x = x.map({c: j for j, c in enumerate(categories)}) + shift
            full = (group["state"] == "completed") if "state" in group else pd.Series(True, group.index)
            y = group["valid/ndcg@10"]
            ax.scatter(x[full], y[full], color=color, s=18, zorder=3)
            ax.scatter(x[~full], y[~full], facecolors="none", edgecolors=color, s=18, zorder=3)
            best = pd.DataFrame({"x": x, "y": y}).groupby("x")["y"].max()
            label = (f"{group['method'].iloc[0]}/{group['backbone'].iloc[0]}"
                     if {"method", "backbone"} <= set(group) else run)   # dataset names hold "-"
            if categories is None:
                ax.plot(best.index, best.values, color=color, lw=1, label=label)
            else:                            # categories have no order: a bar per best, no line
                ax.scatter(best.index, best.values, color=color, marker="_", s=160, lw=1.5,
                           label=label, zorder=2)
        if categories is not None:
            ax.set_xticks(range(len(categories)), [str(c).replace("_", "\n") for c in categories],
                          fontsize=7)
        ax.set_xlabel({"method.mu_e": "mu_e", "method.updates": "p (importance updates)",
                       "method.explainer": "explainer"}[param])
        ax.set_ylabel("best valid NDCG@10 of a trial")
        datasets = sorted(ok["dataset"].dropna().unique()) if "dataset" in ok else []
        if datasets:
            ax.set_title(", ".join(map(str, datasets)), fontsize=8)
        full_epochs = ok.loc[ok["state"] == "completed", "epochs"] if {"state", "epochs"} <= set(ok) \
            else pd.Series(dtype=float)
        budget = f"N = {int(full_epochs.max())}" if len(full_epochs.dropna()) else "N"
        best_mark = "bar" if categories is not None else "line"
        ax.legend(fontsize=6, title=f"{best_mark}: best trial; hollow: stopped before {budget}",
                  title_fontsize=6)
        fig.tight_layout()
        path = out / f"sensitivity_{stem}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        made.append(path)
    return made


def render(exp: str | Path, out: str | Path | None = None, primary_backbone: str | None = None,
           ours=GUIDED) -> Path:
    """Write Table 3 (and Table 4 when there are several backbones) and figures; returns out."""
    exp = Path(exp)
    out = Path(out) if out else exp / "report"
    # the tables are read (and checked: results.TableError) before anything is written
    seeds = read_table(exp / "seeds.csv") if (exp / "seeds.csv").exists() else pd.DataFrame()
    trials = read_table(exp / "trials.csv") if (exp / "trials.csv").exists() else None
    epochs = read_table(exp / "epochs.csv") if (exp / "epochs.csv").exists() else None
    out.mkdir(parents=True, exist_ok=True)
    if len(seeds):
        backbones = sorted(seeds["backbone"].unique())
        primary = primary_backbone or ("sasrec" if "sasrec" in backbones else backbones[0])
        write_table(build_table(seeds, [primary], ours), out, "table3")
        write_comparisons(comparisons(seeds, backbones, ours), out)
        if len(backbones) > 1:
            write_table(build_table(seeds, backbones, ours), out, "table4")
        if has_unseen(seeds):        # the same tables under the unseen-items protocol
            write_table(build_table(seeds, [primary], ours, metrics=UNSEEN_METRICS), out,
                        "table3_unseen")
            write_comparisons(comparisons(seeds, backbones, ours, metrics=UNSEEN_METRICS), out,
                              stem="comparisons_unseen")
            if len(backbones) > 1:
                write_table(build_table(seeds, backbones, ours, metrics=UNSEEN_METRICS), out,
                            "table4_unseen")
    if trials is not None:
        sensitivity_figures(trials, out)
    if epochs is not None and len(epochs):
        write_anytime(epochs, out)
    return out
