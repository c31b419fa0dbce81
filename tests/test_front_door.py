"""``ec4srec search | report | paper-study`` are the tune/ scripts' commands: same flags, same
output, and the front door hands over before parsing anything of its own."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ec4srec import cli

ROOT = Path(__file__).resolve().parents[1]


def test_paper_study_through_the_front_door_prints_the_scripts_plan(capsys):
    flags = ["--dry-run", "--gpus", "4", "--datasets", "beauty"]
    script = subprocess.run([sys.executable, str(ROOT / "tune" / "paper_study.py"), *flags],
                            capture_output=True, text=True, timeout=120)
    rc = cli.main(["paper-study", *flags])
    # the same plan, line for line, and the same exit status
    assert (rc, capsys.readouterr().out) == (script.returncode, script.stdout)


def test_search_flags_are_checked_by_the_search_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["search", "--reduction-factor", "1"])
    # a bad search flag is the search parser's usage error (status 2), named under ec4srec search
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "ec4srec search" in err and "--reduction-factor 1.0: must be a finite number > 1" in err


def test_report_without_a_source_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report"])
    # report's own parser asks for --experiment or --runs
    assert exit_.value.code == 2 and "--experiment" in capsys.readouterr().err
