"""One rule for a missing optional package (convtrain/extras.py): one line naming the extra, exit 2,
nothing written, for every extra the package names; and every extra it names exists in pyproject.

The commands run as real subprocesses with a stand-in package earlier on PYTHONPATH whose import
fails, as on an install without the extra. Breaks tried (each failed here): MissingExtra's exit code
back to 1; export checking onnx only after the checkpoint was read (the stand-in then never matters:
the test still passes, so the order is pinned by the torch-free refusal below); plots raising a
plain ImportError; a require_extra call naming an extra that pyproject lacks ('onnxx').
"""

from __future__ import annotations

import ast
import os
import re
import tomllib

import pytest

from ..artifacts.test_damaged_run_files import make_run, snapshot
from ..conftest import REPO, run_cli
from ..training.test_loop_features import _tiny_checkpoint

PACKAGE = REPO / "convtrain"


def _pyproject_extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _extras_named_in_calls() -> list[tuple[str, str]]:
    """(file:line, extra) for every require_extra / missing_extra call in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "extras.py":
            continue  # the rule itself passes its argument on
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "require_extra", "missing_extra") and node.args:
                first = node.args[0]
                extra = first.value if isinstance(first, ast.Constant) else "<not a literal>"
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", extra))
    return found


def test_every_extra_the_code_names_exists_in_pyproject():
    calls = _extras_named_in_calls()
    extras = _pyproject_extras()
    assert len(calls) >= 8, calls  # tensorboard, mlflow, wandb, tune, tune-postgres, serve, onnx, plot
    assert {e for _, e in calls} >= {"tensorboard", "mlflow", "wandb", "tune", "tune-postgres", "serve", "onnx", "plot"}
    unknown = [f"{where} names '{e}'" for where, e in calls if e not in extras]
    assert not unknown, f"extras missing from pyproject.toml: {unknown}"


def test_every_install_hint_in_the_package_names_a_real_extra():
    """Help texts and notes (``pip install 'convtrain[X]'``) outside require_extra too."""
    extras = _pyproject_extras()
    named = {(str(p.relative_to(REPO)), m) for p in PACKAGE.rglob("*.py")
             for m in re.findall(r"convtrain\[([a-z0-9-]+)\]", p.read_text(encoding="utf-8"))}
    assert named and all(extra in extras for _, extra in named), sorted(e for e in named if e[1] not in extras)


def _without(tmp_path, *modules: str) -> dict:
    """An environment where importing any of ``modules`` fails, as without the extra."""
    fake = tmp_path / "missing-extras"
    for name in modules:
        (fake / name).mkdir(parents=True, exist_ok=True)
        (fake / name / "__init__.py").write_text("raise ImportError('not installed (a test stand-in)')\n")
    return {"PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}


@pytest.mark.parametrize("case", ["serve", "onnx", "plot"])
def test_a_command_without_its_extra_is_one_line_and_exit_2(case, tmp_path):
    (tmp_path / "ckpt").mkdir()
    ckpt = _tiny_checkpoint(tmp_path / "ckpt" / "best.pt") if case != "plot" else None
    if case == "serve":
        env, args = _without(tmp_path, "fastapi"), ["serve", "--checkpoint", str(ckpt), "--port", "0"]
        line = "error: convtrain serve needs FastAPI, uvicorn and python-multipart: pip install 'convtrain[serve]'"
    elif case == "onnx":
        env = _without(tmp_path, "onnxscript")
        args = ["export", "--checkpoint", str(ckpt), "--format", "onnx"]
        line = "error: export --format onnx needs onnx, onnxscript and onnxruntime: pip install 'convtrain[onnx]'"
    else:
        run = make_run(tmp_path / "run")
        env, args = _without(tmp_path, "matplotlib"), ["plot", str(run)]
        line = "error: drawing the plots needs matplotlib: pip install 'convtrain[plot]'"
    watched = tmp_path / ("ckpt" if case != "plot" else "run")
    before = snapshot(watched)
    r = run_cli(*args, env=env, timeout=120)
    assert (r.returncode, r.stderr.strip()) == (2, line), r.stderr
    assert snapshot(watched) == before  # nothing written beside the checkpoint or into the run


def test_onnx_is_refused_before_the_checkpoint_is_read(tmp_path):
    """A file that is not a checkpoint: without the extra the answer is still the extra (checked first)."""
    bogus = tmp_path / "best.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = run_cli("export", "--checkpoint", str(bogus), "--format", "onnx", env=_without(tmp_path, "onnx"), timeout=120)
    assert r.returncode == 2 and "pip install 'convtrain[onnx]'" in r.stderr, r.stderr
