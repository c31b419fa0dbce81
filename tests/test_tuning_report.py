"""Paper tables from a hand-made results table: mean ± std, bold/underline, t-test marks."""
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ec4srec.report.tables import build_table, paired_ttest, render, render_table, t_pvalue

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")


def test_paired_ttest_matches_hand_computed_values():
    # d = (1, 2, 3): mean 2, sd 1, t = 2 / (1 / sqrt 3) = sqrt 12; df = 2, where the t CDF is
    # closed-form: p = 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(12 / 14) = 0.0741799...
    t, p = paired_ttest([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert t == pytest.approx(math.sqrt(12))
    # scipy's p-value equals the hand-computed closed form
    assert p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-10)
    assert p == pytest.approx(0.0741799, abs=1e-7)
    # df = 1 (Cauchy): p = 1 - 2 / pi * atan(|t|); d = (1, 3) -> t = 2 -> p = 0.2951672...
    t, p = paired_ttest([1.0, 3.0], [0.0, 0.0])
    assert t == pytest.approx(2.0) and p == pytest.approx(1 - 2 / math.pi * math.atan(2), rel=1e-10)
    # a negative difference: same |t| and p, t negative (two-sided)
    t, p = paired_ttest([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert t == pytest.approx(-math.sqrt(12)) and p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-10)
    # large df approaches the normal: t = 1.959964, df = 10^6 -> p ~ 0.05
    assert t_pvalue(1.959964, 10**6) == pytest.approx(0.05, abs=1e-4)
    # a textbook value: t = 2.262, df = 9 is the two-sided 5 % critical value
    assert t_pvalue(2.262157, 9) == pytest.approx(0.05, abs=1e-6)
    # a constant non-zero difference is certain; no difference at all is p = 1
    assert paired_ttest([1.0, 2.0], [0.0, 1.0]) == (math.inf, 0.0)
    assert paired_ttest([1.0, 2.0], [1.0, 2.0]) == (0.0, 1.0)
    # fewer than two pairs: undefined
    assert math.isnan(paired_ttest([1.0], [0.0])[1])


def test_the_t_test_is_scipys():
    import inspect

    import ec4srec.report.tables as report
    # the hand-written incomplete beta is gone; the p-value comes from scipy.stats
    assert not hasattr(report, "betainc") and "scipy" in inspect.getsource(report.t_pvalue)


def hand_made_seeds() -> pd.DataFrame:
    """beauty/SASRec backbone: EC4SRec clearly best (p < 0.01) on every metric except hr@20,
    where it wins by a noisy margin (no mark); DuoRec second. Plus a gru4rec backbone."""
    base = {"sasrec": 0.030, "cl4srec": 0.035, "duorec": 0.040, "ec4srec": 0.050}
    noise = [0.0, 0.001, -0.001]
    rows = []
    for backbone, scale in (("sasrec", 1.0), ("gru4rec", 0.8)):
        for method, value in base.items():
            for i, seed in enumerate((1, 2, 3)):
                row = {"dataset": "beauty", "method": method, "backbone": backbone, "seed": seed}
                for m in METRICS:
                    v = (value + noise[i]) * scale
                    if m == "hr@20" and method == "ec4srec":
                        v = (0.040 + [0.004, -0.003, 0.0005][i]) * scale
                    row[f"test/{m}"] = v
                rows.append(row)
    return pd.DataFrame(rows)


def test_table3_marks_best_second_and_significance():
    cells = build_table(hand_made_seeds(), ["sasrec"])
    nd = cells[cells["metric"] == "ndcg@10"].set_index("method")
    assert nd.loc["ec4srec", "rank"] == 1 and nd.loc["duorec", "rank"] == 2
    assert nd.loc["ec4srec", "mean"] == pytest.approx(0.050)
    assert nd.loc["ec4srec", "std"] == pytest.approx(0.001)
    assert nd.loc["ec4srec", "mark"] == "**" and nd.loc["ec4srec", "p_value"] < 0.01
    assert nd.loc["duorec", "mark"] == ""                   # baselines are never marked
    hr20 = cells[cells["metric"] == "hr@20"].set_index("method")
    assert hr20.loc["ec4srec", "rank"] == 1 and hr20.loc["ec4srec", "mark"] == ""
    assert hr20.loc["ec4srec", "p_value"] > 0.05

    md = render_table(cells, "md")
    line = next(l for l in md.splitlines() if "NDCG@10" in l)
    cols = [c.strip() for c in line.strip("|").split("|")]
    assert cols[:2] == ["beauty", "NDCG@10"]
    assert cols[2:] == ["0.0300 ± 0.0010", "0.0350 ± 0.0010", "<u>0.0400 ± 0.0010</u>",
                        "**0.0500 ± 0.0010****"]
    assert md.splitlines()[0].split("|")[3:7] == [" SASRec ", " CL4SRec ", " DuoRec ", " EC4SRec "]
    tex = render_table(cells, "tex")
    assert "\\textbf{0.0500 $\\pm$ 0.0010}$^{**}$" in tex
    assert "\\underline{0.0400 $\\pm$ 0.0010}" in tex


def test_render_writes_table3_table4_and_figures(tmp_path):
    hand_made_seeds().to_csv(tmp_path / "seeds.csv", index=False)
    trials = pd.DataFrame({"run": ["beauty-ec4srec-sasrec"] * 4, "state": ["completed"] * 4,
                           "method.mu_e": [0.1, 0.3, 0.3, 0.5], "method.updates": [1, 2, 3, 3],
                           "method.explainer": ["occlusion", "saliency", "saliency", "attention"],
                           "valid/ndcg@10": [0.01, 0.02, 0.03, 0.02]})
    trials.to_csv(tmp_path / "trials.csv", index=False)
    out = subprocess.run([sys.executable, str(ROOT / "tune" / "report.py"), "--experiment", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = tmp_path / "report"
    for stem in ("table3", "table4"):
        for ext in ("md", "tex", "csv"):
            assert (report / f"{stem}.{ext}").stat().st_size > 0
    t4 = (report / "table4.md").read_text()
    assert "GRU4Rec+EC4SRec" in t4 and "SASRec+SASRec" in t4
    # ranks are per backbone group: both backbones have a bold EC4SRec on NDCG@10
    assert t4.splitlines()[2 + 4].count("**") >= 4
    csv = pd.read_csv(report / "table3.csv")
    assert set(csv.columns) >= {"dataset", "metric", "method", "mean", "std", "rank", "p_value", "mark"}
    # every guided method is compared with every baseline of each backbone, paired by seed
    comp = pd.read_csv(report / "comparisons.csv")
    assert set(comp["backbone"]) == set(hand_made_seeds()["backbone"])
    assert not set(comp["baseline"]) & {"ec4srec", "ec4srec_sl", "ec4srec_ssl"}
    for fig in ("mu_e", "p", "explainer"):
        assert (report / f"sensitivity_{fig}.png").stat().st_size > 1000
    assert "table3.md" in out.stdout


def test_report_script_rejects_an_empty_folder(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "tune" / "report.py"), "--experiment", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error:" in out.stderr
    assert render(tmp_path) == tmp_path / "report"


def test_export_copies_results_but_no_checkpoints(tmp_path):
    exp, dest = tmp_path / "exp", tmp_path / "results" / "study"
    exp.mkdir()
    hand_made_seeds().to_csv(exp / "seeds.csv", index=False)
    pd.DataFrame({"run": ["beauty-sasrec-sasrec"], "state": ["completed"],
                  "valid/ndcg@10": [0.01]}).to_csv(exp / "trials.csv", index=False)
    (exp / "best").mkdir()
    (exp / "best" / "beauty-sasrec-sasrec.yaml").write_text("train:\n  lr: 0.001\n")
    (exp / "study.json").write_text("{}")
    for heavy in ("warmup/abc/epoch_1.pt", "beauty-sasrec-sasrec/trial_1/checkpoint_000001/x.pt"):
        (exp / heavy).parent.mkdir(parents=True)
        (exp / heavy).write_bytes(b"\0" * 10)
    out = subprocess.run([sys.executable, str(ROOT / "tune" / "report.py"), "--experiment", str(exp),
                          "--export", str(dest)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    exported = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    # tables, options, best configs and the rendered report travel; checkpoints and caches do not
    assert {"seeds.csv", "trials.csv", "study.json", "best/beauty-sasrec-sasrec.yaml",
            "report/table3.md", "report/table3.tex"} <= exported
    assert not any(p.endswith((".pt", ".tmp")) for p in exported)
    assert (dest / "best" / "beauty-sasrec-sasrec.yaml").read_text() == "train:\n  lr: 0.001\n"


def test_export_again_mirrors_what_the_study_removed_and_touches_nothing_else(tmp_path):
    from ec4srec.report.results import export_study
    exp, dest = tmp_path / "exp", tmp_path / "results" / "study"
    for name in ("runs/a-b-c.json", "runs/d-e-f.json", "trials/a-b-c/t1.json"):
        (exp / name).parent.mkdir(parents=True, exist_ok=True)
        (exp / name).write_text("[]")
    (exp / "study.json").write_text("{}")
    export_study(exp, dest)
    (dest / "README.md").write_text("mine")                    # not the study's
    (dest / "a-b-c" / "trial_1").mkdir(parents=True)           # a Ray folder of a resume in place
    (exp / "runs" / "d-e-f.json").unlink()                     # the run reopened
    export_study(exp, dest)
    # the reopened run is no longer finished in the export either
    assert not (dest / "runs" / "d-e-f.json").exists() and (dest / "runs" / "a-b-c.json").exists()
    # what is not part of the study's portable state stays as it was
    assert (dest / "README.md").read_text() == "mine" and (dest / "a-b-c" / "trial_1").is_dir()
    assert (dest / "trials" / "a-b-c" / "t1.json").exists() and (dest / ".gitignore").exists()
    export_study(exp, exp)
    # an export onto the study itself removes nothing
    assert (exp / "runs" / "a-b-c.json").exists() and (exp / "trials" / "a-b-c" / "t1.json").exists()


def test_warm_start_savings_prices_skipped_epochs_at_the_runs_warmup_epoch_time():
    from ec4srec.report.results import warm_start_savings
    trials = pd.DataFrame({"run": ["a", "a", "b"], "trial_id": ["t1", "t2", "t3"],
                           "epochs": [5, 5, 4], "warm_start_epoch": [0, 2, 0],
                           "first_update": [3, 4, None]})
    # run a: t1 trained warm-up epochs 1, 2 (< first update 3) at 10 s and 12 s; t2 skipped
    # epochs 1-2 and trained epoch 3 (< 4) at 14 s -> median warm-up epoch 12 s; 2 skipped -> 24 s
    epochs = pd.DataFrame({"run": ["a"] * 8 + ["b"] * 4,
                           "trial_id": ["t1"] * 5 + ["t2"] * 3 + ["t3"] * 4,
                           "epoch": [1, 2, 3, 4, 5, 3, 4, 5, 1, 2, 3, 4],
                           "seconds": [10, 12, 30, 30, 30, 14, 30, 30, 5, 5, 5, 5]})
    saved = warm_start_savings(trials, epochs)
    # epochs: 2 skipped of 14 covered; seconds: 24 saved of 24 + 206 spent (112 + 74 + 20)
    assert (saved["skipped"], saved["epochs"]) == (2, 14)
    assert saved["seconds_saved"] == 24.0 and saved["train_seconds"] == 206.0
    assert saved["percent_seconds"] == pytest.approx(100 * 24 / 230)


def test_anytime_curve_is_the_running_best_in_report_order_and_says_when_it_flattened(tmp_path):
    import pandas as pd
    from ec4srec.report.anytime import anytime_summary, anytime_table, write_anytime
    epochs = pd.DataFrame({
        "run": ["r"] * 5, "trial_id": ["a", "a", "b", "b", "b"], "epoch": [1, 2, 1, 2, 3],
        # b's first epoch was reported between a's two epochs
        "timestamp": [10, 30, 20, 40, 50], "seconds": [1.0, 1.0, 2.0, 2.0, 2.0],
        "valid/ndcg@10": [0.10, 0.20, 0.15, 0.30, 0.301]})
    curve, order = anytime_table(epochs)
    # reported order a1, b1, a2, b2, b3: the running maximum of validation NDCG@10
    assert order == "timestamp"
    assert curve["best_valid"].tolist() == [0.10, 0.15, 0.20, 0.30, 0.301]
    assert curve["seconds"].tolist() == [1.0, 3.0, 4.0, 6.0, 8.0]
    summary = anytime_summary(curve).iloc[0]
    # 0.30 is within 1 % of the final 0.301: reached at trial-epoch 4 of 5
    assert (summary.within_1pct_at, summary.within_1pct_share) == (4, 0.8)
    # without timestamps the table's row order is used, and the output says so
    _, order = anytime_table(epochs.drop(columns="timestamp"))
    assert order == "row order"
    assert write_anytime(epochs, tmp_path).exists() and "| r | 0.3010 | 5 | 4 | 80% |" in \
        (tmp_path / "anytime.md").read_text()
