"""Bad input to `eval --report`, `calibrate` and the imbalanced-data keys: one table of CLI cases, each with
ONE expected exit code, keeping the error contract of tests/hostile/kit.py (one "error: " line, no
traceback, every file that was there unchanged) and writing nothing (``no_new``: the folder gains no
file: no report, no run directory).

Exit codes (docs/safety.md): 2 where the command can tell before it writes (a report DIR that is a
file or below one, a config value, a class the data lacks, data without a validation split), 1 where
the write itself fails (/proc takes no files).

Breaks tried (each failed here): the report folder checked only after the evaluation (the missing data
is then reported instead, exit 1); the class_weights names checked after the run directory was created
(a run directory is left behind); calibrate --data holding out a validation split of its training
images instead of refusing (exit 0, the checkpoint rewritten).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from .kit import QUICK_SETS, changed_files, contract_problems, invoke, snapshot


@dataclass
class Kit:
    run: Path  # a real finished run (never modified)


@dataclass
class Case:
    name: str
    build: Callable[[Path, Kit], list[str]]
    code: int
    text: str = ""
    no_new: str = "."  # a folder (relative to the case's tmp folder) that must not gain a file


CASES: list[Case] = []


def case(*args, **kw):
    CASES.append(Case(*args, **kw))


def _w(t: Path, name: str, content: str = "x") -> Path:
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content)
    return p


def _ckpt(t: Path, k: Kit) -> str:
    """A copy of the run's best.pt (its own folder: not inside a run directory)."""
    (t / "c").mkdir(exist_ok=True)
    return str(shutil.copy(k.run / "checkpoints" / "best.pt", t / "c" / "best.pt"))


_EVAL = ["eval", "--device", "cpu", "--set", "data.test_subset=100", "--checkpoint"]
case("report DIR is a file", lambda t, k: [*_EVAL, _ckpt(t, k), "--report", str(_w(t, "afile"))], 2, "is a file")
case("report DIR is a file, and the data is missing: the folder is refused first (before any work)",
     lambda t, k: [*_EVAL, _ckpt(t, k), "--data-root", str(t / "none"), "--set", "data.download=false",
                   "--report", str(_w(t, "afile"))], 2, "is a file")
case("report DIR below a file", lambda t, k: [*_EVAL, _ckpt(t, k), "--report", str(_w(t, "afile")) + "/r"], 2,
     "is a file")
case("report DIR in /proc (takes no files)", lambda t, k: [*_EVAL, _ckpt(t, k), "--report", "/proc/convtrain-report"],
     1, "cannot write the report")
case("--report alone for a checkpoint outside a run", lambda t, k: [*_EVAL, _ckpt(t, k), "--report", ""], 2,
     "not inside a run directory")
case("report of a checkpoint that is not one", lambda t, k: [*_EVAL, str(_w(t, "x.pt")), "--report", str(t / "r")], 1,
     "not a PyTorch checkpoint")

_TRAIN = ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--device", "cpu"]
case("class_weights names a class the data lacks", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"),
                                                                 "--set", "train.class_weights={5: 2, 99: 3}"],
     2, "no class '99'")
case("class_weights misspells a class", lambda t, k: [*_TRAIN, "--data", str(_letters(t)), "--run-dir", str(t / "r"),
                                                      "--set", "data.val_size=3", "--set", "data.test_size=3",
                                                      "--set", "train.class_weights={cta: 2}"], 2, "did you mean 'cat'")
case("class_weights zero", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "train.class_weights={3: 0}"],
     2, "weight > 0")
case("class_weights negative", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"),
                                             "--set", "train.class_weights={3: -2}"], 2, "weight > 0")
case("class_weights a word", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "train.class_weights=inverse"],
     2, "null, auto or a mapping")
case("focal_gamma below 0", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "train.loss=focal",
                                          "--set", "train.focal_gamma=-1"], 2, "focal_gamma' must be >= 0")
case("loss misspelled", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "train.loss=focla"], 2,
     "did you mean 'focal'")
case("sampler misspelled", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "data.sampler=balance"], 2,
     "did you mean 'balanced'")
case("best_metric misspelled", lambda t, k: [*_TRAIN, "--run-dir", str(t / "r"), "--set", "train.best_metric=macro_f1"],
     2, "did you mean 'val_macro_f1'")
case("calibrate on data without a validation split",
     lambda t, k: ["calibrate", "--device", "cpu", "--checkpoint", _ckpt(t, k), "--data", str(_digits(t))], 2,
     "no validation split")
case("calibrate on data with other classes",
     lambda t, k: ["calibrate", "--device", "cpu", "--checkpoint", _ckpt(t, k), "--data", str(_letters(t, val=True))],
     1, "predicts the classes")
case("calibrate a file that is no checkpoint", lambda t, k: ["calibrate", "--checkpoint", str(_w(t, "x.pt"))], 1,
     "not a PyTorch checkpoint")


def _folder(t: Path, name: str, classes: list[str], val: bool) -> Path:
    """A folder of tiny PNGs (train/, and val/ when asked), 12 per class per split."""
    from .kit import digit_png

    for split in ("train", "val") if val else ("train",):
        for c in classes:
            for i in range(12):
                p = t / name / split / c / f"{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(digit_png())
    return t / name


def _letters(t: Path, val: bool = False) -> Path:
    return _folder(t, "letters", ["ant", "bee", "cat"], val)


def _digits(t: Path) -> Path:
    return _folder(t, "digits", [str(i) for i in range(10)], val=False)


@pytest.fixture(scope="module")
def kit(data_root, tmp_path_factory) -> Kit:
    from ..conftest import run_cli

    run = tmp_path_factory.mktemp("wave28") / "run"  # a few seconds: 640 images, one epoch
    p = run_cli("train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--device", "cpu", "--run-dir", str(run))
    assert p.returncode == 0, p.stderr[-2000:]
    return Kit(run)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_its_exit_code_and_writes_nothing(c: Case, kit: Kit, tmp_path: Path):
    work = tmp_path / "t"
    work.mkdir()
    argv = c.build(work, kit)
    before = snapshot(work, kit.run)
    tree = {p for p in (work / c.no_new).rglob("*")}
    out = invoke(argv, env={"CONVTRAIN_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    problems = contract_problems(out, (c.code,), c.text, timeout=120)
    problems += [f"pre-existing file {p}" for p in changed_files(before)]
    problems += [f"new file {p}" for p in set((work / c.no_new).rglob("*")) - tree]
    assert not os.path.exists("/proc/convtrain-report")
    assert not problems, f"{c.name}: {problems}; stderr: {out.stderr.strip()[-300:]}"
