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
