"""The Table 3 layout of converged single runs (tune/report.py --runs): rows from run folders,
the paper's numbers beside them, significance over seeds, curves, and errors on bad folders."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ec4srec.report.results import METRICS, TableError
from ec4srec.report.run_figures import curve_panels, plateau_ylim
from ec4srec.report.runs import paper_rows, read_history, render_runs, runs_markdown, runs_table

ROOT = Path(__file__).resolve().parents[1]


def fake_run(folder: Path, method: str, seed: int, ndcg10: float, *, epochs=(1, 2, 3),
             stopped=True, history=True, backbone="sasrec") -> Path:
    """A finished run folder as `ec4srec train` writes it (metrics.json, config.yaml,
    history.csv), every test metric equal to ``ndcg10``."""
    folder.mkdir(parents=True)
    record = {"method": method, "backbone": backbone, "dataset": "beauty", "best_epoch": epochs[-2],
              "epochs_run": epochs[-1], "stopped_early": stopped, "epoch_budget": 150,
              "valid": {m: ndcg10 + 0.01 for m in METRICS}, "test": {m: ndcg10 for m in METRICS},
              "wall_time_s": 3600.0, "update_epochs": [2] if method.startswith("ec4srec") else []}
    (folder / "metrics.json").write_text(json.dumps(record))
    (folder / "config.yaml").write_text(yaml.safe_dump({"train": {"seed": seed}}))
    if history:
        pd.DataFrame({"epoch": list(epochs), "valid/ndcg@10": [0.01 * e for e in epochs]}).to_csv(
            folder / "history.csv", index=False)
    return folder


def three_seed_runs(tmp_path: Path) -> list[Path]:
    """ours: EC4SRec 0.050 +- noise beats DuoRec 0.040 +- the same noise (p << 0.01)."""
    noise = {1: 0.0, 2: 0.001, 3: -0.001}
    runs = []
    for method, base in (("sasrec", 0.030), ("duorec", 0.040), ("ec4srec", 0.050)):
        for seed, eps in noise.items():
            runs.append(fake_run(tmp_path / f"{method}-{seed}", method, seed, base + eps))
    return runs


def test_runs_table_reads_every_field(tmp_path):
    run = fake_run(tmp_path / "r", "duorec", 7, 0.0439, epochs=(1, 2, 3, 4), stopped=False)
    df = runs_table({"ours": [run]})
    row = df.iloc[0]
    # one row per run with its setting, seed (from config.yaml) and test metrics
    assert (row["setting"], row["method"], row["seed"], row["test/ndcg@10"]) == ("ours", "duorec", 7, 0.0439)
    # not stopped early and 4 of 150 epochs run: a cut run, never reported as converged
    assert not row["converged"] and row["epochs_run"] == 4


@pytest.mark.parametrize("epochs_run, done, cell", [
    (4, [2, 4], "| 2, 4 |"),        # an update at epoch e runs at the start of epoch e
    (3, [2], "| 2 |"),              # stopped before the update at 4
    (1, [], "| - |"),               # stopped before the first update
])
def test_runs_list_the_importance_updates_they_ran(tmp_path, epochs_run, done, cell):
    run = fake_run(tmp_path / "r", "ec4srec", 1, 0.04)
    record = json.loads((run / "metrics.json").read_text())
    record.update(update_epochs=[2, 4, 6], epochs_run=epochs_run)
    (run / "metrics.json").write_text(json.dumps(record))
    df = runs_table({"ours": [run]})
    assert df.iloc[0]["updates_done"] == done
    # runs.md shows them in their own column
    assert cell in runs_markdown(df).splitlines()[2]


def test_table_groups_settings_with_paper_numbers_and_marks(tmp_path):
    out = render_runs({"ours": three_seed_runs(tmp_path)}, tmp_path / "report")
    cells = pd.read_csv(out / "table3.csv")
    nd = cells[cells["metric"] == "ndcg@10"].set_index(["group", "method"])
    # mean and sample std over the three seeds
    assert nd.loc[("ours", "ec4srec"), "mean"] == pytest.approx(0.050)
    assert nd.loc[("ours", "ec4srec"), "std"] == pytest.approx(0.001)
    # EC4SRec beats the group's best baseline (DuoRec) in the paired t-test: marked **
    assert nd.loc[("ours", "ec4srec"), "mark"] == "**"
    # the paper's published Table 3 sits beside, one value per cell, ranked within its own group
    assert nd.loc[("published", "ec4srec"), "mean"] == pytest.approx(0.0458)
    assert nd.loc[("published", "ec4srec"), "rank"] == 1
    assert nd.loc[("published", "sasrec"), "mean"] == pytest.approx(0.0281)
    # the table has the paper's four metrics only
    assert sorted(cells["metric"].unique()) == ["hr@10", "hr@5", "ndcg@10", "ndcg@5"]
    md = (out / "table3.md").read_text()
    assert "ours: EC4SRec" in md and "published: EC4SRec" in md and "0.0500 ± 0.0010**" in md
    # the guided runs' first importance update is known (the curves mark it)
    assert set(runs_table({"ours": three_seed_runs(tmp_path / "again")})["first_update"].dropna()) == {2}
    # one line per run in runs.md, and a curves figure from the runs' histories
    assert (out / "runs.md").read_text().count("| ours |") == 9
    assert (out / "curves.png").stat().st_size > 0


def test_runs_of_several_backbones_make_table4_with_each_backbones_paper_numbers(tmp_path):
    # the SASRec study and a GRU4Rec study (issue 23), each with its seed re-runs
    studies = {b: tmp_path / f"study-{b}" for b in ("gru4rec", "sasrec")}
    for b, base in (("gru4rec", 0.02), ("sasrec", 0.04)):
        for m in ("sasrec", "cl4srec"):
            fake_study(studies[b], m, {1: base + 0.001, 2: base + 0.002}, backbone=b)
    out = render_runs({"tuned": list(studies.values())}, tmp_path / "report")
    # several backbones: the Table 4 layout, not Table 3's
    assert (out / "table4.md").exists() and not (out / "table3.md").exists()
    cells = pd.read_csv(out / "table4.csv")
    nd = cells[cells["metric"] == "ndcg@10"]
    # column groups: backbones in their registry order (SASRec first), ours before the paper's
    assert list(dict.fromkeys(nd["group"])) == ["tuned/sasrec", "published/sasrec",
                                                "tuned/gru4rec", "published/gru4rec"]
    by = nd.set_index(["group", "method"])
    # each backbone's group has its own runs (mean of seeds 1 and 2) and the paper's Table 4
    assert by.loc[("tuned/gru4rec", "cl4srec"), "mean"] == pytest.approx(0.0215)
    assert by.loc[("published/gru4rec", "cl4srec"), "mean"] == pytest.approx(0.0341)
    assert by.loc[("published/gru4rec", "sasrec"), "mean"] == pytest.approx(0.0142)
    md = (out / "table4.md").read_text()
    assert "tuned/gru4rec: CL4SRec" in md and "published/sasrec: EC4SRec" in md
    # a later report of one backbone into the same folder leaves no stale Table 4 behind
    render_runs({"tuned": [studies["sasrec"]]}, out)
    assert (out / "table3.md").exists() and not list(out.glob("table4*"))


def test_paper_rows_of_table4_include_the_base_model():
    rows = paper_rows("beauty", "gru4rec").set_index("method")
    # Table 4's GRU4Rec rows plus GRU4Rec alone from Table 3, named as our base method
    assert rows.loc["ec4srec", "test/ndcg@10"] == pytest.approx(0.0412)
    assert rows.loc["sasrec", "test/ndcg@10"] == pytest.approx(0.0142)


def test_history_falls_back_to_the_checkpoint(tmp_path):
    import torch
    run = fake_run(tmp_path / "old", "cl4srec", 1, 0.04, history=False)
    torch.save({"loop": {"history": [{"epoch": 1, "valid/ndcg@10": 0.02}]}}, run / "checkpoint.pt")
    # runs of older code (no history.csv) read the loop history inside checkpoint.pt
    assert read_history(run)["valid/ndcg@10"].tolist() == [0.02]


def test_unfinished_duplicate_and_reserved_runs_are_errors(tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    # a run without metrics.json has not finished: an error naming the folder, not a row
    with pytest.raises(TableError, match="unfinished.*resume"):
        runs_table({"ours": [unfinished]})
    a = fake_run(tmp_path / "a", "duorec", 1, 0.04)
    b = fake_run(tmp_path / "b", "duorec", 1, 0.05)
    # two runs of one (setting, method, seed) would be averaged silently: an error
    with pytest.raises(TableError, match="same setting"):
        runs_table({"ours": [a, b]})
    # "published" is the paper's own group
    with pytest.raises(TableError, match="reserved"):
        runs_table({"published": [a]})


def report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tune" / "report.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_renders_runs_and_rejects_bad_arguments(tmp_path):
    runs = three_seed_runs(tmp_path)
    done = report("--runs", "ours", *runs, "--output", tmp_path / "out")
    # the tables are printed and written
    assert done.returncode == 0, done.stderr
    assert "ours: EC4SRec" in done.stdout and (tmp_path / "out" / "table3.tex").exists()
    # a label that is a folder: the label was forgotten; exit 2, one line, no traceback
    bad = report("--runs", runs[0], runs[1], "--output", tmp_path / "out2")
    assert bad.returncode == 2 and "label first" in bad.stderr and "Traceback" not in bad.stderr
    # an unfinished run: exit 2 naming it, nothing written
    (tmp_path / "empty").mkdir()
    bad = report("--runs", "ours", tmp_path / "empty", "--output", tmp_path / "out3")
    assert bad.returncode == 2 and "empty" in bad.stderr and not (tmp_path / "out3").exists()


def ablation_runs(tmp_path: Path) -> list[Path]:
    """Figure 5's runs on two seeds: CL4SRec, DuoRec, EC4SRec(SSL) (= L_cl+ + L_cl-), and
    EC4SRec with L_sl+ zeroed (the same terms) and with only L_cl+."""
    runs = []
    for seed in (1, 2):
        eps = 0.001 * seed
        runs += [fake_run(tmp_path / f"cl4srec-{seed}", "cl4srec", seed, 0.030 + eps),
                 fake_run(tmp_path / f"duorec-{seed}", "duorec", seed, 0.040 + eps),
                 fake_run(tmp_path / f"ssl-{seed}", "ec4srec_ssl", seed, 0.044 + eps)]
        for name, zero, base in (("no-slp", ("lambda_sl_pos",), 0.046),
                                 ("clp", ("lambda_sl_pos", "lambda_cl_neg"), 0.042)):
            run = fake_run(tmp_path / f"{name}-{seed}", "ec4srec", seed, base + eps)
            (run / "config.yaml").write_text(yaml.safe_dump(
                {"train": {"seed": seed}, "method": {"name": "ec4srec", **{k: 0.0 for k in zero}}}))
            runs.append(run)
    return runs


def test_ablation_bars_are_paired_on_the_seeds_every_bar_has(tmp_path):
    runs = ablation_runs(tmp_path)
    cln = fake_run(tmp_path / "cln-1", "ec4srec", 1, 0.047)        # L_cl- alone, seed 1 only
    (cln / "config.yaml").write_text(yaml.safe_dump(
        {"train": {"seed": 1}, "method": {"name": "ec4srec", "lambda_cl_pos": 0.0,
                                           "lambda_sl_pos": 0.0}}))
    out = render_runs({"ours": [*runs, cln]}, tmp_path / "report")
    fig5 = pd.read_csv(out / "ablation.csv", keep_default_na=False).set_index("bar")
    # a bar run on seed 1 only: every bar of the panel uses seed 1 only (same batch order)
    ran = fig5[fig5["n"] > 0]
    assert (ran["n"] == 1).all() and (ran["seeds"].astype(str) == "1").all() and ran["paired"].all()
    # so CL4SRec's bar is its seed-1 run, not the mean of both seeds
    assert float(fig5.loc["CL4SRec", "ndcg@5_mean"]) == pytest.approx(0.031)
    assert float(fig5.loc["L_rec + L_cl-", "ndcg@5_mean"]) == pytest.approx(0.047)


def test_ablation_runs_make_figure5_and_stay_out_of_table3(tmp_path):
    runs = ablation_runs(tmp_path)
    df = runs_table({"ours": runs}).set_index("run")
    # A run's guided terms come from its method and lambdas; zeroed lambdas make an ablation run.
    assert (df.loc["ssl-1", "terms"], df.loc["ssl-1", "ablation"]) == ("cl+ cl-", False)
    assert (df.loc["clp-1", "terms"], df.loc["clp-1", "ablation"]) == ("cl+", True)
    out = render_runs({"ours": runs}, tmp_path / "report")
    cells = pd.read_csv(out / "table3.csv")
    cells = cells[cells["group"] == "ours"]
    # Table 3 has no ablation run (the paper's numbers beside it or not): our group has no
    # EC4SRec column, and EC4SRec(SSL)'s is its own.
    assert "ec4srec" not in set(cells["method"])
    ssl = cells[(cells["metric"] == "ndcg@5") & (cells["method"] == "ec4srec_ssl")].iloc[0]
    assert ssl["mean"] == pytest.approx(0.0455) and ssl["n"] == 2
    fig5 = pd.read_csv(out / "ablation.csv", keep_default_na=False).set_index("bar")
    # Figure 5's bars in its order: the two baselines, then the seven combinations.
    assert list(fig5.index) == ["CL4SRec", "DuoRec", "L_rec + L_cl+", "L_rec + L_cl-", "L_rec + L_sl+",
                                "L_rec + L_cl+ + L_cl-", "L_rec + L_cl+ + L_sl+",
                                "L_rec + L_cl- + L_sl+", "L_rec + L_cl+ + L_cl- + L_sl+"]
    # EC4SRec(SSL) and EC4SRec with L_sl+ zeroed are the same experiment: one run per seed,
    # EC4SRec(SSL)'s (n counts seeds, never a run twice)
    both = fig5.loc["L_rec + L_cl+ + L_cl-"]
    assert both["n"] == 2 and float(both["ndcg@5_mean"]) == pytest.approx(0.0455)
    # A combination nobody ran is shown as not run, never as 0.
    assert fig5.loc["L_rec + L_cl-", "n"] == 0
    assert "| L_rec + L_cl- | 0 | not run | not run |" in (out / "ablation.md").read_text()
    # every bar has both seeds: the bars are paired on them
    assert "| L_rec + L_cl+ + L_cl- | 2 (1 2) |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").stat().st_size > 0
    # the ablation runs are listed with their terms
    assert "ec4srec [cl+] | sasrec | 1 |" in (out / "runs.md").read_text()
    # two runs of one method and seed are fine when their terms differ; equal terms are not
    with pytest.raises(TableError, match="same setting"):
        runs_table({"ours": [tmp_path / "clp-1", tmp_path / "clp-1"]})


def test_curve_panels_group_runs_by_method_with_the_ablation_runs_apart(tmp_path):
    runs = ablation_runs(tmp_path)
    df = runs_table({"ours": runs, "paper": [fake_run(tmp_path / "p-cl", "cl4srec", 1, 0.03)]})
    panels = curve_panels(df)
    # one panel per method in the package's order, then the ablation runs, nothing twice
    assert list(panels) == ["CL4SRec", "DuoRec", "EC4SRec(SSL)", "Figure 5 ablation runs"]
    assert sum(len(g) for g in panels.values()) == len(df)
    # a method's panel holds every setting and seed of it
    assert sorted(zip(panels["CL4SRec"]["setting"], panels["CL4SRec"]["seed"])) == [
        ("ours", 1), ("ours", 2), ("paper", 1)]
    # the ablation panel holds only runs with a zeroed guided lambda
    assert panels["Figure 5 ablation runs"]["ablation"].all()
    out = render_runs({"ours": runs}, tmp_path / "report")
    # the report draws the panels
    assert (out / "curves_by_method.png").stat().st_size > 0


def test_plateau_ylim_starts_below_the_lowest_converging_value():
    slow = pd.DataFrame({"epoch": range(1, 13), "valid/ndcg@10": [0.001] * 9 + [0.040, 0.045, 0.050]})
    fast = pd.DataFrame({"epoch": range(1, 13), "valid/ndcg@10": [0.030] * 9 + [0.048, 0.052, 0.051]})
    short = pd.DataFrame({"epoch": [1, 2], "valid/ndcg@10": [0.044, 0.046]})
    low, high = plateau_ylim([slow, fast, short], from_epoch=10)
    # from epoch 10 on the lowest value is 0.040 (the slow run's first epochs are left out), the
    # highest 0.052 overall; 5 % of that range (0.0006) pads both ends
    assert (low, high) == (pytest.approx(0.0394), pytest.approx(0.0526))
    # a run shorter than from_epoch counts with all its epochs
    assert plateau_ylim([short], from_epoch=10) == (pytest.approx(0.0439), pytest.approx(0.0461))


def test_comparisons_pair_every_guided_method_with_every_baseline_on_common_seeds(tmp_path):
    runs = [fake_run(tmp_path / f"ec4srec-{s}", "ec4srec", s, v) for s, v in ((1, 0.050), (2, 0.052), (3, 0.051))]
    runs += [fake_run(tmp_path / f"cl4srec-{s}", "cl4srec", s, v) for s, v in ((1, 0.049), (2, 0.050))]
    runs += [fake_run(tmp_path / "sasrec-3", "sasrec", 3, 0.040)]
    out = render_runs({"ours": runs}, tmp_path / "report")
    table = pd.read_csv(out / "comparisons.csv", keep_default_na=False)
    nd = table[table["metric"] == "ndcg@10"].set_index("baseline")
    # only the published rows are left out: one row per (guided method, baseline) of our setting
    assert sorted(nd.index) == ["cl4srec", "sasrec"] and set(nd["method"]) == {"ec4srec"}
    # vs CL4SRec: the two common seeds only; differences 0.001, 0.002 -> mean 0.0015,
    # t = 0.0015 / (0.000707 / sqrt 2) = 3.0; df 1 is Cauchy: p = 1 - 2 atan(3) / pi = 0.2048
    row = nd.loc["cl4srec"]
    assert (row["n"], str(row["seeds"])) == (2, "1 2")
    assert float(row["mean_diff"]) == pytest.approx(0.0015)
    assert float(row["t"]) == pytest.approx(3.0)
    assert float(row["p_value"]) == pytest.approx(0.2048, abs=1e-4)
    # vs SASRec: one common seed gives a difference and no test
    assert int(nd.loc["sasrec", "n"]) == 1 and float(nd.loc["sasrec", "mean_diff"]) == pytest.approx(0.011)
    assert nd.loc["sasrec", "p_value"] == ""
    assert "| EC4SRec | CL4SRec | 2 (1 2) | +0.0015 | +3.00 | 0.205 |" in (out / "comparisons.md").read_text()


def test_unseen_protocol_reported_only_when_runs_have_it(tmp_path):
    old = three_seed_runs(tmp_path / "old")
    out_old = render_runs({"ours": old}, tmp_path / "report-old", paper=False)
    # Runs written before the unseen protocol existed: the report is as before (no new files).
    assert not (out_old / "table3_unseen.md").exists()
    assert "unseen" not in (out_old / "runs.md").read_text()
    new = three_seed_runs(tmp_path / "new")
    for i, run in enumerate(new):
        record = json.loads((run / "metrics.json").read_text())
        record["test"].update({f"{m}_unseen": record["test"][m] + 0.01 for m in METRICS})
        record["test"]["last_item_top1"] = 0.25 if i == 0 else 0.0
        (run / "metrics.json").write_text(json.dumps(record))
    out = render_runs({"ours": new}, tmp_path / "report-new", paper=False)
    runs_md = (out / "runs.md").read_text()
    # runs.md carries both protocols and the share of users whose top-1 is their last item.
    assert "test NDCG@10 unseen" in runs_md and "| 0.0400 | 0.2500 |" in runs_md
    # Table 3 and the paired comparisons exist under the unseen protocol too, with its numbers.
    table = pd.read_csv(out / "table3_unseen.csv")
    ec4 = table[(table["method"] == "ec4srec") & (table["metric"] == "ndcg@10_unseen")]
    assert ec4["mean"].iloc[0] == pytest.approx(0.060)
    assert (out / "comparisons_unseen.md").exists()


def fake_study(folder: Path, method: str, seeds: dict[int, float], backbone: str = "sasrec") -> Path:
    """A search study folder: study.json, the run's best config and its seed re-run records."""
    run = f"beauty-{method}-{backbone}"
    (folder / "best").mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text("{}")
    (folder / "best" / f"{run}.yaml").write_text(yaml.safe_dump({"train": {"seed": 2020},
                                                                "method": {"name": method}}))
    for seed, ndcg10 in seeds.items():
        record = {"method": method, "backbone": backbone, "dataset": "beauty", "best_epoch": 5,
                  "epochs_run": 20, "stopped_early": True, "epoch_budget": 200, "seed": seed,
                  "test": {m: ndcg10 for m in METRICS}, "wall_time_s": 60.0, "update_epochs": []}
        path = folder / "seeds" / run / f"seed_{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    return folder


def test_a_study_folder_gives_its_seed_reruns_as_a_setting_beside_single_runs(tmp_path):
    study = fake_study(tmp_path / "search", "sasrec", {2020: 0.05, 2021: 0.06})
    df = runs_table({"tuned": [study], "defaults": [fake_run(tmp_path / "d", "sasrec", 2020, 0.04)]})
    tuned = df[df["setting"] == "tuned"].sort_values("seed")
    # each seed re-run of the study is one row, its seed from the record, its metrics as tested
    assert tuned["seed"].tolist() == [2020, 2021]
    assert tuned["test/ndcg@10"].tolist() == [0.05, 0.06]
    assert (tuned["converged"]).all() and set(df["setting"]) == {"tuned", "defaults"}
    (study / "best" / "beauty-sasrec-sasrec.yaml").unlink()
    # a seed record without its best config is one error naming the missing file
    with pytest.raises(TableError, match="beauty-sasrec-sasrec.yaml: missing"):
        runs_table({"tuned": [study]})
