"""tune/paper_study.py --dry-run: the plan of the whole paper study (studies, commands, trials,
GPU-hours bounded by the budgets) is printed and nothing is trained or written."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "tune" / "paper_study.py"), "--dry-run",
                           "--storage-path", str(tmp_path / "store"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_dry_run_prints_every_table_3_and_4_study(tmp_path):
    out = dry_run(tmp_path, "--budget-per-run", "2h", "--gpus", "8")
    assert out.returncode == 0, out.stderr
    studies = [l for l in out.stdout.splitlines() if l.startswith("[paper-")]
    # Table 3: four datasets on SASRec; Table 4: Beauty, Clothing, Sports on GRU4Rec and Caser
    assert len(studies) == 10
    assert any(l.startswith("[paper-ml-1m-sasrec]") for l in studies)
    assert not any("ml-1m-gru4rec" in l for l in studies)
    # each study: six runs x 2 h = 12 h of budget, at most 12 h x 8 GPUs = 96 GPU-hours
    assert all("budget 12:00:00, at most 96.0 GPU-hours" in l for l in studies)
    assert "total: at most 960.0 GPU-hours" in out.stdout
    # the commands are the budgeted, packed, concurrent searches and their reports
    assert out.stdout.count("--time-budget 43200s") == 10 and "--gpus-per-trial 0.25" in out.stdout
    assert out.stdout.count("python tune/report.py --experiment") == 10
    # a dry run trains and writes nothing
    assert not (tmp_path / "store").exists()


def test_dry_run_sizes_trials_from_a_measured_cost_model(tmp_path):
    ledger = tmp_path / "budget.json"
    ledger.write_text(json.dumps({"cost_model": {"runs": {
        "sports-duorec-sasrec": {"epoch_s": 20.0}}}}))
    out = dry_run(tmp_path, "--datasets", "sports", "--budget-per-run", "1h", "--gpus", "2",
                  "--cost-model", ledger, "--num-samples", "50", "--max-epochs", "100")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("[paper-sports-sasrec]"))
    # 3600 s x 8 slots (2 GPUs / 0.25) / (20 s x 100 epochs x 0.5 under ASHA) = 28 trials
    assert "duorec ~28" in line


def test_a_bad_budget_is_one_error_line(tmp_path):
    out = dry_run(tmp_path, "--budget-per-run", "soon")
    # exit 2, the option named, no traceback
    assert out.returncode == 2 and "--budget-per-run" in out.stderr and "Traceback" not in out.stderr


def costs_file(tmp_path, **extra):
    """Measured CPU costs of beauty/sasrec: a plain and a guided method, two explainers."""
    costs = {"format": 1, "date": "2026-12-06 00:00 UTC", "commit": "abc1234",
             "epoch": {"beauty/sasrec/sasrec": {"epoch_s": 2.0},
                       "beauty/sasrec/ec4srec": {"epoch_s": 4.0}},
             "eval_s": {"beauty/sasrec": 1.0},
             "update_s": {"beauty/sasrec/occlusion": 8.0, "beauty/sasrec/saliency": 4.0}, **extra}
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs))
    return path


def test_the_estimate_prices_trials_from_measured_costs_and_the_gpu_factor(tmp_path):
    from ec4srec.search import paper_estimate
    costs = paper_estimate.load_costs(costs_file(tmp_path))
    est = paper_estimate.estimate(costs, "beauty", "sasrec", epochs=10, per_run_s=30.0, slots=2,
                                  num_samples=20, seeds=3, gpus_per_trial=0.5, factor=5.0)
    plain, guided = est["methods"]["sasrec"], est["methods"]["ec4srec"]
    # plain: 5 of N = 10 epochs (the ASHA prior) x (2 s epoch + 1 s validation) / factor 5 = 3 s
    assert plain["trial_s"] == 3.0
    # guided: 5 x (4 + 1) s, plus the updates at epochs 1..5 (N = 10, p = 5: every epoch) at
    # the explainers' mean 6 s: (25 + 30) / 5 = 11 s
    assert guided["trial_s"] == 11.0
    # trials: what fits 30 s on 2 slots, at most --num-samples: 60 / 3 = 20, 60 / 11 -> 5
    assert plain["trials"] == 20 and guided["trials"] == 5
    # GPU-hours: (trials + 3 seeds) x trial seconds x 0.5 GPU per trial
    assert plain["gpu_hours"] == (20 + 3) * 3.0 * 0.5 / 3600
    assert est["gpu_hours"] == plain["gpu_hours"] + guided["gpu_hours"]
    # the methods without a measured epoch are named, not priced at zero
    assert est["missing"] == ["cl4srec", "duorec", "ec4srec_ssl", "ec4srec_sl"]
    assert est["methods"]["cl4srec"] is None


def test_dry_run_states_the_gpu_factor_and_whether_it_was_measured(tmp_path):
    costs = costs_file(tmp_path)
    out = dry_run(tmp_path, "--datasets", "beauty", "--costs", costs, "--gpu-factor", "4")
    # the estimate names its costs file, its factor and where the factor came from
    assert out.returncode == 0, out.stderr
    assert "divided by a GPU factor of 4, given by --gpu-factor" in out.stdout
    assert "costs.json (one thread, measured 2026-12-06 00:00 UTC at commit abc1234)" in out.stdout
    # a study with an unmeasured backbone says what to run, and is not priced
    gru = next(l for l in out.stdout.splitlines() if "[paper-beauty-gru4rec]" in l)
    nxt = out.stdout.splitlines()[out.stdout.splitlines().index(gru) + 1]
    assert "not measured: sasrec, cl4srec" in nxt and "benchmarks/paper_costs.py" in nxt
    from ec4srec.search import paper_estimate
    factor, source = paper_estimate.gpu_factor(None, tmp_path / "absent.json")
    # without a measured factor file the assumed factor is used and called an assumption
    assert factor == paper_estimate.ASSUMED_GPU_FACTOR and source.startswith("ASSUMED")
    measured = tmp_path / "gpu-factor.json"
    measured.write_text(json.dumps({"factor": 12.5, "gpu": "NVIDIA H100", "commit": "def5678"}))
    factor, source = paper_estimate.gpu_factor(None, measured)
    # a measured factor file wins over the assumption and is cited
    assert factor == 12.5 and "NVIDIA H100" in source and "def5678" in source


def test_a_bad_costs_file_or_factor_is_one_error_line(tmp_path):
    bad = tmp_path / "costs.json"
    bad.write_text('{"epoch": {}, "eval_s": {}\n')
    (tmp_path / "ok").mkdir()
    cases = [(["--costs", bad], f"error: {bad}: not JSON (line 2"),
             (["--costs", tmp_path / "none.json"], "none.json: cannot read"),
             (["--costs", costs_file(tmp_path / "ok"), "--gpu-factor", "0"],
              "error: --gpu-factor must be > 0")]
    for args, message in cases:
        out = dry_run(tmp_path, "--datasets", "beauty", *args)
        # exit 2, one line naming the file or option, no traceback
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    bad.write_text(json.dumps({"epoch": {}, "eval_s": {}}))
    out = dry_run(tmp_path, "--datasets", "beauty", "--costs", bad)
    # a file without one of the three tables names the missing table
    assert out.returncode == 2 and "no 'update_s' table" in out.stderr
