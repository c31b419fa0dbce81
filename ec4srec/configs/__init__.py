"""Config files shipped with the package, loadable by name.

``paper/<dataset>-<method>.yaml`` are the paper's reported settings (Section 5.1.4 and the best
values of its Section 5.3 analyses) for beauty, clothing, sports, ml-1m x the six methods, as
partial configs: keys they do not set take the package defaults. Each file's header cites
where every value comes from; docs/paper-settings.md has the table.
``ec4srec train --config paper:beauty-ec4srec`` (and :func:`ec4srec.config.load_config`) read them.
"""
from __future__ import annotations

import difflib
from importlib import resources
from importlib.resources.abc import Traversable

from ..errors import ConfigError

PAPER_PREFIX = "paper:"


def _paper_dir() -> Traversable:
    return resources.files(__name__).joinpath("paper")


def list_paper_configs() -> list[str]:
    """Names of the shipped paper configs (``beauty-ec4srec``, ...), sorted."""
    return sorted(entry.name[:-len(".yaml")] for entry in _paper_dir().iterdir()
                  if entry.name.endswith(".yaml"))


def paper_config_path(name: str) -> Traversable:
    """The shipped file of paper config ``name``; ConfigError (listing the names) if none."""
    names = list_paper_configs()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"; did you mean {PAPER_PREFIX}{close[0]}?" if close else ""
        raise ConfigError(f"unknown paper config {PAPER_PREFIX}{name}{hint} "
                          f"(available: {', '.join(names)})")
    return _paper_dir().joinpath(f"{name}.yaml")
