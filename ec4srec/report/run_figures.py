"""Figures of converged single runs (ec4srec/report/runs.py): validation curves, all runs in
one axes (``curves.png``) and a panel per method zoomed on convergence
(``curves_by_method.png``), and the paper's Figure 5 bars (``ablation.png``). matplotlib only,
with the Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..registry import LABELS, METHOD_NAMES as METHODS

LINE_STYLES = ["-", "--", ":", "-."]


def pyplot():
    """matplotlib's pyplot on the Agg backend (heavy: imported when a figure is drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_curve(ax, hist: pd.DataFrame, style: str, color: str, label: str,
                above_reference: bool = False, best_epoch=None, unseen: bool = False) -> None:
    """A run's validation NDCG@10 (all items) per epoch and a dot at its best epoch (the model
    tested: ``best_epoch`` when known, else the curve's maximum); ``unseen`` adds the
    unseen-items curve, thin, dotted, same colour, when the history has it. ``above_reference``
    draws them above grey reference curves (zorder 1)."""
    line, dot = ({"zorder": 2}, {"zorder": 3}) if above_reference else ({}, {})
    ax.plot(hist["epoch"], hist["valid/ndcg@10"], style, color=color, lw=1, label=label, **line)
    if unseen and "valid/ndcg@10_unseen" in hist and hist["valid/ndcg@10_unseen"].notna().any():
        ax.plot(hist["epoch"], hist["valid/ndcg@10_unseen"], ":", color=color, lw=0.8, **line)
    at = hist[hist["epoch"] == best_epoch] if best_epoch is not None and pd.notna(best_epoch) else None
    best = at.iloc[0] if at is not None and len(at) else hist.loc[hist["valid/ndcg@10"].idxmax()]
    ax.plot([best["epoch"]], [best["valid/ndcg@10"]], "o", color=color, ms=3, **dot)


def curves_figure(df: pd.DataFrame, histories: dict, path: Path) -> Path | None:
    """Validation NDCG@10 per epoch of every run in one figure: a colour per method, a line
    style per setting (runs of one method only: a colour per setting, solid), the unseen-items
    curve dotted when a history has it, a dot at each run's best epoch, a dotted line at the
    guided runs' first importance update (``histories``: :func:`run_histories`). None when no
    run has a history."""
    if not histories:
        return None
    plt = pyplot()
    settings = list(dict.fromkeys(df["setting"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    by_setting = df["method"].nunique() == 1 and len(settings) > 1   # one method: a colour per setting
    for i, hist in histories.items():
        r = df.loc[i]
        if by_setting:
            color, style = f"C{settings.index(r['setting']) % 10}", "-"
        else:
            color = f"C{METHODS.index(r['method'])}" if r["method"] in METHODS else "k"
            style = LINE_STYLES[settings.index(r["setting"]) % len(LINE_STYLES)]
        name = LABELS.get(r["method"], r["method"]) + (f" [{r['terms']}]" if r.get("ablation") else "")
        _plot_curve(ax, hist, style, color, f"{r['setting']}: {name} (seed {r['seed']})",
                    best_epoch=r.get("best_epoch"), unseen=True)
    firsts = sorted({int(e) for e in df.get("first_update", pd.Series(dtype=float)).dropna()})
    for i, epoch in enumerate(firsts):       # where the guided runs switched to guided training
        ax.axvline(epoch, color="grey", ls=":", lw=0.8,
                   label="first importance update" if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    any_unseen = any("valid/ndcg@10_unseen" in h for h in histories.values())
    title = "dot: best epoch (the model tested)" + ("; dotted: unseen items" if any_unseen else "")
    ax.legend(fontsize=6, ncol=2, title=title, title_fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curve_panels(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The panels of :func:`curves_panels_figure`: one per method that has runs (in
    ``METHODS`` order, every setting and seed of it together), then one for the Figure 5
    ablation runs if any; each title maps to its rows of ``df``."""
    panels = {}
    plain = df[~df["ablation"]]
    for method in sorted(plain["method"].unique(), key=lambda m: (METHODS.index(m) if m in METHODS
                                                                  else len(METHODS), m)):
        panels[LABELS.get(method, method)] = plain[plain["method"] == method]
    if df["ablation"].any():
        panels["Figure 5 ablation runs"] = df[df["ablation"]]
    return panels


def plateau_ylim(histories: list[pd.DataFrame], from_epoch: int = 10) -> tuple[float, float]:
    """A shared y range that shows where the curves converge: from just below the lowest
    validation NDCG@10 any run has at or after ``from_epoch`` (every value of a run shorter than
    that) to just above the highest value of any run."""
    lows = [h.loc[h["epoch"] >= from_epoch, "valid/ndcg@10"].min() if (h["epoch"] >= from_epoch).any()
            else h["valid/ndcg@10"].min() for h in histories]
    low, high = min(lows), max(h["valid/ndcg@10"].max() for h in histories)
    pad = 0.05 * (high - low) or 0.001
    return low - pad, high + pad


def curves_panels_figure(df: pd.DataFrame, histories: dict, path: Path,
                         reference: str = "sasrec") -> Path | None:
    """Validation NDCG@10 per epoch with a panel per method (:func:`curve_panels`) on one
    shared y range zoomed on convergence (:func:`plateau_ylim`: the first epochs of the slow
    runs are above or below it; curves.png has them whole): a colour per setting, a line style
    per seed, a dot at each run's best epoch (the model tested), a dotted line at the first
    importance update, and the ``reference`` method's runs of the first setting in grey in every
    other panel; the ablation panel has a colour per combination of terms (``histories``:
    :func:`run_histories`). None when no run has a history."""
    if not histories:
        return None
    plt = pyplot()
    panels = {t: g[g.index.isin(histories)] for t, g in curve_panels(df).items()}
    panels = {t: g for t, g in panels.items() if len(g)}
    settings = list(dict.fromkeys(df["setting"]))
    seeds = sorted({str(s) for s in df["seed"]})
    ablation_terms = sorted(set(df.loc[df["ablation"], "terms"]))
    first_setting = settings[0]
    ref = df[(df["method"] == reference) & ~df["ablation"] & (df["setting"] == first_setting)
             & df.index.isin(histories)]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    for ax, (title, g) in zip(axes.flat, panels.items()):
        if title != LABELS.get(reference, reference):
            for j, (i, _) in enumerate(ref.iterrows()):
                h = histories[i]
                ax.plot(h["epoch"], h["valid/ndcg@10"], color="0.7", lw=0.8, zorder=1,
                        label=f"{first_setting}: {LABELS.get(reference, reference)}" if j == 0 else None)
        for i, r in g.iterrows():
            color = (f"C{2 + ablation_terms.index(r['terms'])}" if r.get("ablation")   # a colour per combination
                     else f"C{settings.index(r['setting'])}")
            style = LINE_STYLES[seeds.index(str(r["seed"])) % len(LINE_STYLES)]
            label = f"{r['setting']}" + (f" [{r['terms']}]" if r.get("ablation") else "") + f", seed {r['seed']}"
            _plot_curve(ax, histories[i], style, color, label, above_reference=True)
        for epoch in sorted({int(e) for e in g.get("first_update", pd.Series(dtype=float)).dropna()}):
            ax.axvline(epoch, color="grey", ls=":", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=True)     # also above a hidden panel
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5.5, loc="lower right")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation NDCG@10", fontsize=8)
    axes[0, 0].set_ylim(*plateau_ylim(list(histories.values())))
    fig.suptitle("validation NDCG@10 per epoch (dot: best epoch, the model tested; "
                 "dotted: first importance update)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ablation_figure(table: pd.DataFrame, path: Path) -> Path:
    """Bars of test NDCG@5 (the paper's Figure 5 metric) per loss combination, one panel per
    (setting, dataset, backbone); error bars = std over seeds; the full EC4SRec bar in yellow."""
    plt = pyplot()
    panels = list(table.groupby(["setting", "dataset", "backbone"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, ((setting, dataset, backbone), g) in zip(axes[0], panels):
        colors = ["C0", "C2"] + ["C7"] * (len(g) - 3) + ["gold"]
        ax.bar(range(len(g)), g["ndcg@5_mean"].fillna(0), yerr=g["ndcg@5_std"].fillna(0),
               color=colors, capsize=2)
        ax.set_xticks(range(len(g)))
        ax.set_xticklabels([b.replace("L_rec + ", "") for b in g["bar"]], rotation=45,
                           ha="right", fontsize=7)
        used = sorted({x for seeds in g["seeds"] for x in seeds.split()}, key=str)
        pairing = "seed " + ", ".join(used) if g["paired"].all() else "unpaired seeds"
        ax.set_title(f"{setting}: {dataset}, {backbone} (each with L_rec; {pairing})", fontsize=8)
        ax.set_ylabel("test NDCG@5")
        known = g["ndcg@5_mean"].dropna()
        if len(known):
            ax.set_ylim(known.min() * 0.9, known.max() * 1.05)
        for i, n in enumerate(g["n"]):
            if n == 0:
                ax.text(i, ax.get_ylim()[0], "not run", rotation=90, ha="center", va="bottom",
                        fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
