"""Every command in README.md's code blocks is a valid command of this package: the set-up
commands are what CI runs (.ci/run), the others parse with the parser that would run them, and
a config file they name (shipped or committed) loads. (The ``--smoke-test`` study itself runs in
tests/test_tuning_driver.py, through tests/slow_search.py.)"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ec4srec.cli import build_parser
from ec4srec.config import load_config
from ec4srec.search.command import parse as parse_search

ROOT = Path(__file__).resolve().parents[1]
SETUP = {"pip install -e \".[dev]\"", "python -m pytest"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                commands.append(line)
    return commands


def test_readme_has_the_setup_commands_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    # The two set-up commands are in the README and CI runs them verbatim.
    assert SETUP <= set(readme_commands())
    assert all(command in ci for command in SETUP)


@pytest.mark.parametrize("command", [c for c in readme_commands() if c not in SETUP])
def test_readme_command_is_valid(command):
    argv = shlex.split(command)
    if argv[:2] == ["python", "tune/search.py"]:
        # The search's own parser accepts the flags (it exits 2 on a bad one).
        parse_search(argv[2:])
        return
    # Every other command is an ec4srec subcommand its parser accepts.
    assert argv[0] == "ec4srec", command
    args = build_parser().parse_args(argv[1:])
    config = getattr(args, "config", None)
    if config and not config.startswith("~"):
        # A shipped (paper:) or committed config file it names loads as a valid config.
        load_config(config if config.startswith("paper:") else ROOT / config)
