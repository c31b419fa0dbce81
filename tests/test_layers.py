"""The package's structure: the layer table of ec4srec/layers.py holds (no upward import, no
import circle, Ray and Optuna only under search/), no module is over 400 lines, and the
commands that do not search never import Ray."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ec4srec.layers import CONFINED, LAYERS, layer_of

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ec4srec"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import in ``path``, top-level or inside a function;
    relative imports resolved, ``from pkg import mod`` counted as an import of ``pkg.mod``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return found


def package_edges() -> dict[str, set[str]]:
    edges = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _ in imports(name, path):
            if target in MODULES and target != name:
                edges[name].add(target)
    return edges


def test_every_module_has_a_layer():
    # layers.py places every module of the package (a new module must be given a layer)
    unplaced = []
    for name in MODULES:
        if name == "ec4srec":
            continue
        try:
            layer_of(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, unplaced


def test_no_import_runs_up_a_layer():
    upward = []
    for name, path in MODULES.items():
        if name == "ec4srec":
            continue
        for target, line in imports(name, path):
            if target.startswith("ec4srec.") and target in MODULES and layer_of(target) > layer_of(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} "
                              f"({LAYERS[layer_of(target)][0]} is above {LAYERS[layer_of(name)][0]})")
    # a module imports only its own layer and the layers below it
    assert not upward, "\n".join(upward)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    # no two modules import each other, directly or through others
    assert not circles(package_edges()), circles(package_edges())


def test_the_checks_see_circles_and_imports_inside_functions():
    # a circle through a third module is found; a chain is not a circle
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    found = {t for t, _ in imports("ec4srec.cli", MODULES["ec4srec.cli"])}
    # relative imports resolve, and an import inside a function (cli's trainer) counts
    assert {"ec4srec.config", "ec4srec.trainer"} <= found


def test_ray_and_optuna_are_imported_only_where_allowed():
    outside = []
    for name, path in MODULES.items():
        for target, line in imports(name, path):
            home = CONFINED.get(target.split(".")[0])
            if home is not None and not name.startswith(f"ec4srec.{home}"):
                outside.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    # Ray and Optuna stay under ec4srec/search/
    assert not outside, outside


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    # every file of the package stays readable in one sitting
    assert not long, long


def test_train_and_report_never_import_ray(tiny_file, tmp_path):
    code = (
        "import sys\n"
        "from ec4srec import cli\n"
        f"rc = cli.main(['train', '--dataset', {str(tiny_file)!r}, '--output', {str(tmp_path / 'run')!r},"
        " '--set', 'train.epochs=1', '--set', 'model.hidden_size=8', '--set', 'model.num_layers=1',"
        " '--set', 'model.num_heads=1', '--set', 'model.inner_size=8', '--set', 'data.max_len=10',"
        " '--set', 'train.device=cpu', '--set', 'train.threads=1', '--set', 'train.progress=off',"
        " '--set', 'train.tensorboard=false'])\n"
        "import ec4srec.report.command, ec4srec.search.command\n"
        "print(rc, sorted(m for m in ('ray', 'optuna') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    # train ran, and neither it nor importing the report and search commands loaded Ray or Optuna
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout[-2000:] + out.stderr[-2000:]
