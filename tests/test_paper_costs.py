"""benchmarks/paper_costs.py: the measured CPU costs the paper study's estimate reads (a dry run
on tiny generated data; the real run's file is results/costs/paper-costs.json)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(out, *args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_costs.py"), "--dry-run",
                           "--output", str(out), "--datasets", "beauty", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_costs_cover_the_asked_studies_and_a_second_run_adds_without_remeasuring(tmp_path):
    out = tmp_path / "costs.json"
    first = measure(out, "--backbones", "sasrec", "--methods", "sasrec", "ec4srec")
    assert first.returncode == 0, first.stderr[-2000:]
    costs = json.loads(out.read_text())
    # one epoch per asked method, one validation pass, one update per explainer SASRec can use
    assert set(costs["epoch"]) == {"beauty/sasrec/sasrec", "beauty/sasrec/ec4srec"}
    assert set(costs["eval_s"]) == {"beauty/sasrec"}
    assert set(costs["update_s"]) == {f"beauty/sasrec/{e}" for e in
                                      ("occlusion", "saliency", "integrated_gradients", "attention")}
    assert all(v["epoch_s"] > 0 for v in costs["epoch"].values())
    # the file says how it was made and on what
    assert costs["dry_run"] is True and costs["commit"] and "paper_costs.py" in costs["command"]
    second = measure(out, "--backbones", "sasrec", "gru4rec", "--methods", "sasrec", "ec4srec")
    assert second.returncode == 0, second.stderr[-2000:]
    again = json.loads(out.read_text())
    # what was measured stays as it was; the new backbone is added, with no attention update
    # (GRU4Rec has no attention)
    assert again["epoch"]["beauty/sasrec/ec4srec"] == costs["epoch"]["beauty/sasrec/ec4srec"]
    assert "beauty/gru4rec/sasrec" in again["epoch"] and "beauty/gru4rec" in again["eval_s"]
    assert "beauty/gru4rec/attention" not in again["update_s"]
    assert "beauty/gru4rec/saliency" in again["update_s"]


def test_a_corrupt_costs_file_is_one_error_line_and_stays_untouched(tmp_path):
    out = tmp_path / "costs.json"
    out.write_text('{"format": 1, "epoch": {')
    proc = measure(out, "--backbones", "sasrec", "--methods", "sasrec")
    # exit non-zero with the file named, no traceback, the file as it was
    assert proc.returncode != 0 and f"{out}: not JSON" in proc.stderr
    assert "Traceback" not in proc.stderr and out.read_text() == '{"format": 1, "epoch": {'
