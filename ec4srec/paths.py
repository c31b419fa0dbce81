"""How result files record local paths, so that nothing under results/ names one machine.

A metrics.json, a diagnose report, a benchmark record or an exported study is committed and
read on other machines; an absolute path such as ``/home/alice/data/beauty.txt.gz`` says
nothing there and leaks the author's layout. :func:`recorded_path` is the one rule every
writer applies to a path it records (the experiment folder's own paths are made relative to
it by ``report.results.export_study``).
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_VAR = "EC4SREC_DATA_DIR"


def recorded_path(path: str | os.PathLike | None, cwd: str | os.PathLike | None = None,
                  env: dict | None = None, expandable: bool = False) -> str | None:
    """``path`` as a result file records it, first rule that applies:

    - a relative path, a URL or ``None``: unchanged;
    - under the working directory (``cwd``, default ``os.getcwd()``): relative to it
      (``results/synthetic``);
    - under ``$EC4SREC_DATA_DIR``: ``$EC4SREC_DATA_DIR/<rest>``;
    - under the home directory: ``~/<rest>``;
    - elsewhere: ``<...>/<parent>/<name>``, the machine-specific prefix dropped and marked.

    ``expandable=True`` (a path the tools read back, e.g. a run's ``config.yaml``) applies only
    the two rules that :func:`expand_path` undoes and leaves any other path unchanged.
    """
    if path is None:
        return None
    text = os.fspath(path)
    if "://" in text or not os.path.isabs(text):
        return text
    p = Path(os.path.normpath(text))
    env = os.environ if env is None else env
    anchors = [] if expandable else [
        (Path(os.path.normpath(os.fspath(cwd if cwd is not None else os.getcwd()))), "")]
    if env.get(DATA_DIR_VAR):
        anchors.append((Path(os.path.normpath(env[DATA_DIR_VAR])), f"${DATA_DIR_VAR}/"))
    if env.get("HOME"):
        anchors.append((Path(os.path.normpath(env["HOME"])), "~/"))
    for base, prefix in anchors:
        if base.is_absolute() and base != Path(base.anchor):
            try:
                rest = p.relative_to(base).as_posix()
            except ValueError:
                continue
            return (prefix + rest) if rest != "." else (prefix.rstrip("/") or ".")
    return text if expandable else "<...>/" + "/".join(p.parts[1:][-2:])


def expand_path(text: str) -> str:
    """A path as the tools read it back: the two forms :func:`recorded_path` writes with
    ``expandable=True`` undone, a leading ``$EC4SREC_DATA_DIR`` and a leading ``~``; anything
    else (a ``$`` inside a folder name included) unchanged. Raises ValueError when the
    variable is not set."""
    head, sep, rest = text.partition("/")
    if head in (f"${DATA_DIR_VAR}", f"${{{DATA_DIR_VAR}}}"):
        value = os.environ.get(DATA_DIR_VAR)
        if not value:
            raise ValueError(f"{text}: environment variable ${DATA_DIR_VAR} is not set")
        return value + (sep + rest if rest else "")
    return os.path.expanduser(text) if text.startswith("~") else text
