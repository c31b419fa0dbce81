"""``tune/search.py --plan-only`` (ec4srec/search/plan.py): the plan of a new or resumed study
printed without Ray, trials or writes; its flags checked like the study's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ec4srec.search.budget import Budget
from ec4srec.search.command import parse
from ec4srec.search.options import StudyOptions, run_name, write_manifest
from ec4srec.search.options import input_error
from ec4srec.search.plan import local_slots, main as plan_main, make_budget

ROOT = Path(__file__).resolve().parents[1]
RUNS = ["synthetic-sasrec-sasrec", "synthetic-cl4srec-sasrec"]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: (mtime in ns, bytes)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_studys_plan_is_probed_here_and_nothing_is_started_or_written(tmp_path):
    storage = tmp_path / "studies"
    code = ("import sys; from ec4srec.search.command import main; rc = main(sys.argv[1:]); "
            "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "--smoke-test", "--methods", "sasrec",
                           "cl4srec", "--plan-only", "--slots", "3", "--time-budget", "10m",
                           "--storage-path", str(storage), "--name", "s"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = done.stdout
    # the plan is printed and the command succeeds
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # it plans on the slots asked for, names both runs and prices them from a probe run here
    assert "3 trial slot(s) (--slots)" in out and "2 run(s) to search" in out
    assert "3 at a time" in out and "probed here" in out and "--time-budget 0:10:00" in out
    # Ray is never imported, and the study's folder is never created
    assert "ray imported: False" in out
    assert not storage.exists()


def write_study(tmp_path: Path, used_s: float, epoch_s: float) -> StudyOptions:
    """A smoke study's options and a budget ledger with measured epochs of its first run, as a
    driver leaves them (no Ray needed)."""
    opts = StudyOptions(smoke_test=True, methods=["sasrec", "cl4srec"], time_budget=600.0,
                        storage_path=str(tmp_path), name="s").finalize()
    opts.exp_dir.mkdir(parents=True)
    write_manifest(opts)
    budget = Budget(opts.exp_dir, 600.0, RUNS, {r: 0 for r in RUNS}, opts.max_epochs,
                    opts.num_samples, 2, opts.seeds, clock=lambda: used_s, started=0.0)
    budget.cost.epoch[RUNS[0]] = [epoch_s] * 4
    budget.cost.startup[RUNS[0]] = [epoch_s + 3.0]
    budget.write()
    return opts


def test_a_resumed_studys_plan_uses_its_measured_costs_and_changes_no_file(tmp_path, capsys):
    opts = write_study(tmp_path, used_s=100.0, epoch_s=2.0)
    before = snapshot(opts.exp_dir)
    argv = ["--resume", "--plan-only", "--storage-path", str(tmp_path), "--name", "s",
            "--slots", "2", "--time-budget", "20m"]
    parsed, resume = parse(argv)
    rc = plan_main(parsed, resume=resume)
    out = capsys.readouterr().out
    # the plan is printed for the saved study, with the new total budget and the time used
    assert rc == 0 and "[search] resuming" in out
    assert "[budget] 0:20:00 for the study (0:01:40 used before), 2 trial slots" in out
    # its cost comes from the ledger's measured epochs: no probe runs
    assert "probed here" not in out and "a full trial ~" in out
    # no file of the study is written or touched
    assert snapshot(opts.exp_dir) == before


@pytest.mark.parametrize("argv, message", [
    (["--slots", "4"], "--slots: only with --plan-only"),
    (["--plan-only", "--slots", "0"], "--slots 0: must be an integer >= 1"),
])
def test_bad_plan_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    # argparse's exit status for a usage error, with the flag named
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_resumed_plan_refuses_a_new_search_space_and_a_missing_study(tmp_path, capsys):
    opts = write_study(tmp_path, used_s=10.0, epoch_s=1.0)
    before = snapshot(opts.exp_dir)
    where = ["--storage-path", str(tmp_path), "--plan-only"]
    parsed, resume = parse(["--resume", "--name", "s", "--search-space", "paper", *where])
    # narrowing the space would write the study's active space: one error line, exit 2
    assert plan_main(parsed, resume=resume) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--search-space would change the study" in err
    assert snapshot(opts.exp_dir) == before
    parsed, resume = parse(["--resume", "--name", "absent", *where])
    # a study that is not there is named
    assert plan_main(parsed, resume=resume) == 2
    assert "--resume: no study at" in capsys.readouterr().err
    parsed, resume = parse(["--name", "s", *where])
    # a new study's plan over an existing one is refused like the study itself
    assert plan_main(parsed, resume=resume) == 2
    assert "already holds a study" in capsys.readouterr().err


def test_local_slots_count_cpus_per_trial_capped_by_max_concurrent(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    # 16 CPUs at 4 per trial: 4 slots; --max-concurrent 3 caps them; never fewer than 1
    assert local_slots(StudyOptions(cpus_per_trial=4.0)) == 4
    assert local_slots(StudyOptions(cpus_per_trial=4.0, max_concurrent=3)) == 3
    assert local_slots(StudyOptions(cpus_per_trial=32.0)) == 1
    assert run_name(("synthetic", "sasrec", "sasrec")) == RUNS[0]


@pytest.mark.parametrize("clock, cpus, grace, budget_rung", [
    ("seconds", 1.0, 300, 300.0),
    ("cpu-seconds", 1.0, 300, 300.0),
    ("cpu-seconds", 2.0, 600, 300.0),      # 2 threads: 600 CPU seconds are 300 s of work
])
def test_the_budget_prices_a_seconds_rung_in_seconds_of_work(tmp_path, clock, cpus, grace,
                                                            budget_rung):
    opts = StudyOptions(dataset="synthetic", methods=["cl4srec"], asha_clock=clock,
                        cpus_per_trial=cpus, storage_path=str(tmp_path), name="s").finalize()
    budget = make_budget(opts, 0.0, slots=2)
    kind, rung, _ = budget.asha["synthetic-cl4srec-sasrec"]
    # both seconds clocks are priced as seconds rungs (never as epochs), in seconds of work
    assert (kind, rung) == ("seconds", pytest.approx(budget_rung))
    from ec4srec.search.options import asha_grace
    # the rung itself counts the clock's unit: CPU seconds of every thread of a trial
    assert asha_grace(opts, clock, 100) == grace


def test_the_cpu_clock_is_refused_for_gpu_trials(tmp_path):
    opts = StudyOptions(dataset="synthetic", methods=["sasrec"], asha_clock="cpu-seconds",
                        gpus_per_trial=0.5, storage_path=str(tmp_path), name="s").finalize()
    # a GPU trial's CPU time is not its cost: one error naming the flags
    assert "--asha-clock cpu-seconds: for CPU trials" in input_error(opts)


def test_a_resumed_plan_with_more_methods_prices_them_and_adds_nothing(tmp_path, capsys):
    opts = write_study(tmp_path, used_s=100.0, epoch_s=2.0)
    before = snapshot(opts.exp_dir)
    parsed, resume = parse(["--resume", "--plan-only", "--storage-path", str(tmp_path),
                            "--name", "s", "--methods", "duorec"])
    assert plan_main(parsed, resume=resume) == 0
    out = capsys.readouterr().out
    # the plan covers the method the resume would add, and says it is not added
    assert "--plan-only: would add duorec" in out and "synthetic-duorec-sasrec" in out
    assert snapshot(opts.exp_dir) == before
