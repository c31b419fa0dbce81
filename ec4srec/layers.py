"""The package's layers, bottom first: what each module may import (docs/architecture.md).

A module may import modules of its own layer and of the layers below it, never of a layer
above; and the package's imports (top-level and inside functions alike) form no circle.
tests/test_layers.py enforces both by walking every ``ec4srec/**/*.py`` with ``ast``, and
checks that Ray and Optuna are imported only under ``ec4srec/search/``.

Each entry names top-level modules or packages of ``ec4srec`` (a package stands for every
module in it).
"""
from __future__ import annotations

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("errors", "registry", "layers", "schedule", "typed", "configs", "config",
              "checkpoint", "paths", "precision", "warmup")),
    ("data", ("data",)),
    ("models", ("models",)),
    ("analysis", ("evaluate", "explain")),
    ("methods", ("methods",)),
    ("training", ("device", "interrupt", "loop_state", "trainer", "diagnostics")),
    ("report", ("report",)),
    ("search", ("search",)),
    ("cli", ("cli", "explain_cli")),
)
# third-party packages allowed only in one package of ec4srec
CONFINED = {"ray": "search", "optuna": "search"}


def layer_of(module: str) -> int:
    """The layer index (0 = bottom) of ``ec4srec.<name>[.<sub>...]``; KeyError if unlisted."""
    top = module.split(".")[1] if module.startswith("ec4srec.") else module
    for index, (_, names) in enumerate(LAYERS):
        if top in names:
            return index
    raise KeyError(f"{module} is in no layer of ec4srec/layers.py")
