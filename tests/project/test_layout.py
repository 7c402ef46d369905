"""The house keeps its shape: rooms whose imports point down, no import circle, short functions and
files, one atomic writer, and a README map that names every room.

Everything here is computed from the source with ``ast``; nothing is imported. Imports made inside
functions count like the others: hiding a circle in a function is still a circle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

PACKAGE = REPO / "convtrain"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 650
MAX_TOP_LEVEL_MODULES = 12

# Each room may import from rooms of a lower rank (and from itself), never from a higher one:
# __init__ -> cli (parse, call, render) -> serve (HTTP) -> api (the use cases every front end calls: train,
# resume, seeds, evaluate, predict...) -> inference, tune -> training -> artifacts -> config -> data -> models
# -> ops -> the ground floor. (Breaks tried: inference importing api, api importing serve, serve importing cli:
# each failed test_imports_point_down_the_rooms.)
RANKS = {
    "errors": 0, "atomic": 0, "catalog": 0, "backstop": 0, "version": 0, "extras": 0, "process": 0,
    "ops": 1, "models": 2, "data": 3, "config": 4, "artifacts": 5, "training": 6, "tune": 6.5, "inference": 7, "api": 8,
    "serve": 9, "cli": 10, "__init__": 11, "__main__": 11,
}


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(package.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path], root: Path = REPO) -> set[str]:
    """The convtrain modules ``path`` imports anywhere (top level or inside functions)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "convtrain"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "convtrain":
                continue
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
            found |= subs or {target}
            if len(subs) < len(node.names):
                found.add(target)
    return {m for m in found if m in modules and m != name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle_even_through_imports_inside_functions():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_sees_a_circle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "convtrain"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from . import y\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from .x import g\n")
    modules = {"convtrain.a.x": pkg / "a" / "x.py", "convtrain.a.y": pkg / "a" / "y.py"}
    graph = {m: imports_of(p, modules, tmp_path) for m, p in modules.items()}
    assert find_circle(graph) in (["convtrain.a.x", "convtrain.a.y", "convtrain.a.x"],
                                  ["convtrain.a.y", "convtrain.a.x", "convtrain.a.y"])


def test_imports_point_down_the_rooms():
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            if RANKS[room(target)] > RANKS[room(module)]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that point up (see RANKS): " + "; ".join(sorted(wrong))


# The runner is named phases over ONE list of hooks (convtrain/training/events.py): it names no tracker
# and no loop feature. Every tracker and loop feature is a module of convtrain/training/hooks/ (found
# there at run time by events.discover), and the runner, the run's state and the protocol import none.
HOOK_PACKAGE = "convtrain.training.hooks"
HOOK_BLIND = ("convtrain.training.runner", "convtrain.training.state", "convtrain.training.events")


def hook_imports(graph: dict[str, set[str]]) -> list[str]:
    """The imports of a hook module (a tracker, a loop feature) by the runner, its state or the protocol."""
    return sorted(f"{m} imports {t}" for m in HOOK_BLIND for t in graph.get(m, ())
                  if t == HOOK_PACKAGE or t.startswith(HOOK_PACKAGE + "."))


def test_the_runner_imports_no_tracker_and_no_loop_feature():
    """Break tried: `from .hooks import ema` in runner.py (and `from .hooks.stopping import Stops` in
    state.py): each fails here."""
    wrong = hook_imports(import_graph())
    assert not wrong, "the runner fires events on its hook list; it does not name a hook: " + "; ".join(wrong)


def test_the_hook_rule_sees_a_feature_imported_by_the_runner(tmp_path):
    pkg = tmp_path / "convtrain" / "training"
    (pkg / "hooks").mkdir(parents=True)
    for init in (tmp_path / "convtrain", pkg, pkg / "hooks"):
        (init / "__init__.py").write_text("")
    (pkg / "hooks" / "ema.py").write_text("")
    (pkg / "runner.py").write_text("def f():\n    from .hooks import ema\n")
    (pkg / "state.py").write_text("from .hooks.ema import x\n")
    modules = {_module_name(p, tmp_path): p for p in (tmp_path / "convtrain").rglob("*.py")}
    graph = {m: imports_of(p, modules, tmp_path) for m, p in modules.items()}
    assert hook_imports(graph) == ["convtrain.training.runner imports convtrain.training.hooks.ema",
                                   "convtrain.training.state imports convtrain.training.hooks.ema"]


def test_every_hook_module_defines_build():
    """events.discover imports every module of training/hooks/ (a name starting with _ is a helper)
    and calls its build(cfg, is_main): a module without one would fail every run."""
    folder = PACKAGE / "training" / "hooks"
    missing = [p.name for p in sorted(folder.glob("*.py")) if not p.name.startswith("_") and "build" not in
               {n.name for n in ast.parse(p.read_text(encoding="utf-8")).body if isinstance(n, ast.FunctionDef)}]
    assert not missing, f"these hook modules need a build(cfg, is_main) function: {missing}"


def test_every_room_has_a_rank():
    rooms = {room(m) for m in _modules()}
    assert rooms <= set(RANKS), f"give these rooms a rank in RANKS: {sorted(rooms - set(RANKS))}"


def test_few_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at convtrain/'s top level: {top}"


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno - start + 1 > limit:
                out.append(f"{_shown(path)}:{node.lineno} {node.name} ({node.end_lineno - start + 1} lines)")
    return out


def test_no_function_is_longer_than_60_lines():
    long = [f for p in sorted(PACKAGE.rglob("*.py")) for f in long_functions(p)]
    assert not long, "split these functions: " + "; ".join(long)


def test_the_function_check_counts_a_61_line_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(58))
    (tmp_path / "m.py").write_text(f"@decorated\ndef f():\n{body}    return 0\n")  # 61 lines with def and decorator
    assert long_functions(tmp_path / "m.py") == ["m.py:2 f (61 lines)"]
    (tmp_path / "m.py").write_text(f"def f():\n{body}    return 0\n")
    assert long_functions(tmp_path / "m.py") == []


def test_no_file_is_longer_than_650_lines():
    long = [f"{p.relative_to(REPO)} ({n})" for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES]
    assert not long, "split these files: " + ", ".join(long)


# Renames that publish a file. Every write of a file that must never be torn (checkpoints, run files,
# plots, exports, the cache, recipes) goes through convtrain/atomic.py; a second temp-then-rename
# site is a second writer that may forget the fsync or the clean-up.
_RENAMES = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("os", "link"), ("shutil", "move")}


def rename_sites(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            # Path.rename / Path.replace with one argument (str.replace takes two)
            if (owner, node.func.attr) in _RENAMES or (node.func.attr in ("rename", "replace") and owner != "os"
                                                       and len(node.args) == 1 and not node.keywords):
                out.append(f"{_shown(path)}:{node.lineno}")
    return out


def test_one_atomic_writer():
    sites = [s for p in sorted(PACKAGE.rglob("*.py")) if p.name != "atomic.py" for s in rename_sites(p)]
    assert not sites, "write through convtrain.atomic instead of renaming here: " + ", ".join(sites)
    assert rename_sites(PACKAGE / "atomic.py"), "atomic.py is the one place that renames"


def test_the_writer_check_sees_a_second_temp_then_rename(tmp_path):
    fake = tmp_path / "w.py"
    fake.write_text("import os\nfrom pathlib import Path\n\ndef w(p):\n    tmp = Path(str(p) + '.tmp')\n"
                    "    tmp.write_text('x')\n    os.replace(tmp, p)\n\ndef v(p, q):\n    Path(p).rename(q)\n"
                    "    return 'a.b'.replace('.', '/')\n")
    assert rename_sites(fake) == ["w.py:7", "w.py:10"]


def test_package_inits_import_nothing_heavy():
    """`import convtrain.<room>` alone imports no torch: the heavy modules load when a function needs them."""
    rooms = sorted({p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"models", "ops"})
    code = ("import importlib, sys\n"
            f"for r in {rooms!r}:\n"
            "    importlib.import_module('convtrain.' + r)\n"
            "    assert 'torch' not in sys.modules, r\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr


def test_readme_layout_names_every_room():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    listed = set(re.findall(r"^  (\S+?)/?\s", layout, flags=re.M))
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top = {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert rooms - listed == set(), "add these packages to the README's Layout section"
    assert top - listed == set(), "add these top-level modules to the README's Layout section"
    assert listed - rooms - top - {"configs"} == set(), "the README lists modules or packages that do not exist"


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.count(".") == 1 and _modules()[m].name == "__init__.py"))
def test_every_room_says_what_it_holds(module):
    doc = ast.get_docstring(ast.parse(_modules()[module].read_text(encoding="utf-8")))
    assert doc and "TODO" not in doc, f"{module}: the package docstring says what the room holds"


def test_every_module_has_a_docstring():
    missing = [m for m, p in _modules().items() if not (d := ast.get_docstring(ast.parse(p.read_text()))) or "TODO" in d]
    assert not missing, f"these modules need a docstring: {missing}"


# Data sources are named in the data room only. Elsewhere a rule that depends on the source (registered
# dataset or the user's files, MNIST-style ink, how --data PATH is read, which split eval scores) asks the
# source's record in convtrain/data/sources.py, so a new source is one module and one record, and no other
# room changes. The names come from that table (plain data, no torch: the one import in this file).
SOURCE_TABLES = {"DATASETS", "FILE_SOURCES", "SOURCES"}


def _names_a_source(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_source(e, names) for e in node.elts)
    return False


def _is_source_table(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and not node.args:  # DATASETS.keys()
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return (isinstance(node, ast.Name) and node.id in SOURCE_TABLES) or \
        (isinstance(node, ast.Attribute) and node.attr in SOURCE_TABLES)


def source_name_comparisons(path: Path, names: set[str]) -> list[str]:
    """``x == "csv"``, ``x in ("folder", "csv")``, ``x in DATASETS``, ``case "mnist":`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            table = any(isinstance(op, (ast.In, ast.NotIn)) and _is_source_table(right)
                        for op, right in zip(node.ops, node.comparators))
            if table or any(_names_a_source(o, names) for o in operands):
                out.append(f"{_shown(path)}:{node.lineno}")
        elif isinstance(node, ast.MatchValue) and _names_a_source(node.value, names):
            out.append(f"{_shown(path)}:{node.lineno}")
    return sorted(out, key=lambda s: int(s.rpartition(":")[2]))


def _source_names() -> set[str]:
    from convtrain.data.sources import SOURCES

    return set(SOURCES)


def test_no_room_but_data_compares_source_names():
    data_room = PACKAGE / "data"
    found = [s for p in sorted(PACKAGE.rglob("*.py")) if not p.is_relative_to(data_room)
             for s in source_name_comparisons(p, _source_names())]
    assert not found, ("ask the source's record (convtrain.data.sources: registered, mnist_style, claims, "
                       "build_eval...) instead of comparing source names: " + ", ".join(found))


def test_the_source_name_check_sees_comparisons_and_table_lookups(tmp_path):
    """Breaks tried: `ckpt.dataset in DATASETS` put back in inference/export.py, `name == "folder"` in
    training/start.py; each failed the test above."""
    fake = tmp_path / "r.py"
    fake.write_text("def f(ckpt, cfg, fmt, name):\n"
                    "    a = ckpt.dataset in DATASETS\n"
                    "    b = cfg.data.name not in catalog.FILE_SOURCES\n"
                    "    c = name == 'csv' or 'folder' != name\n"
                    "    d = name in ('folder', 'csv')\n"
                    "    e = fmt == 'json' or fmt in ('auto', 'kaggle') or name in MODELS\n"
                    "    match name:\n"
                    "        case 'mnist':\n"
                    "            pass\n")
    assert source_name_comparisons(fake, {"mnist", "folder", "csv"}) == \
        ["r.py:2", "r.py:3", "r.py:4", "r.py:4", "r.py:5", "r.py:8"]
