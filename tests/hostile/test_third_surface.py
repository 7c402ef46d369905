"""The third wave's surface (issue 32) under hostile or unlucky input: predict --output, checkpoint
arguments, overrides, tune, W&B, serve, CSV inputs, names on screen. One table of CLI cases, each
with ONE expected exit code, and every row but one failed before the issue's fix (2026-12-06, every row as a
subprocess against main d3ab50f with ``CONVTRAIN_HOSTILE_REPO=/work/main``: 50 of 51 failed; "output: a
folder that does not exist" passed, a guard; "output: a full disk" patches os.fsync in-process, so that
measurement does not reach it). ``CONVTRAIN_HOSTILE_REPO=/path/to/old/checkout`` (PYTHONPATH unset) runs
every row as a subprocess of that checkout.

Every case keeps the error contract of tests/hostile/kit.py (one "error: " line, no traceback, no
backstop, bounded time, every file that was there unchanged except those the case names in
``changes``) and, where it says so, leaves no new file behind (``no_new``). No row trains: the
checkpoints are untrained ones (seconds), and a case that a broken build would start training on is
stopped by ``QUICK_SETS``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from .kit import QUICK_SETS, changed_files, contract_problems, digit_png, invoke, snapshot, valid_checkpoint
from .kit import write_file as _w


@dataclass
class Kit:
    run: Path  # a run directory of an untrained checkpoint: checkpoints/best.pt, epoch-001.pt, config.yaml
    image: Path
    ckpt: dict


@dataclass
class Case:
    family: str
    name: str
    build: Callable[[Path, Kit], list[str]]
    code: int
    text: str = ""
    no_new: str = ""  # a folder (relative to the case's folder) that must not gain a file
    changes: tuple[str, ...] = ()  # files (relative to the case's folder) the command may rewrite
    check: Callable[[Path, str, str], str | None] | None = None  # (folder, stdout, stderr) -> problem or None
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None  # in-process only: the machine's state
    subprocess: bool = False
    timeout: float = 60
    needs: str = ""  # an optional package the case runs through ("optuna", "wandb")


CASES: list[Case] = []


def case(*args, **kw):
    CASES.append(Case(*args, **kw))


def _best(k: Kit) -> str:
    return str(k.run / "checkpoints" / "best.pt")


def _img(t: Path) -> Path:
    return _w(t, "d.png", digit_png())


def _unlabelled(t: Path, rows: list[str], prefix: bytes = b"", name: str = "test.csv") -> Path:
    return _w(t, name, prefix + ("\n".join(["pixel0,pixel1,pixel2,pixel3", *rows]) + "\n").encode())


def _predict(t: Path, k: Kit, *args: str) -> list[str]:
    return ["predict", "--checkpoint", _best(k), *args]


def _is(kind: Callable[[int], bool], name: str) -> Callable[[Path, str, str], str | None]:
    return lambda t, out, err: None if kind(os.lstat(t / name).st_mode) else f"{name} was replaced"


def _predictions_in(name: str, header: str = "path,row,label,index,prob,topk"):
    def check(t: Path, out: str, err: str) -> str | None:
        first = (t / name).read_text().splitlines()[0]
        return None if first == header else f"{name} starts with {first!r}"
    return check


# predict --output: never an input, a checkpoint, a folder or a non-regular file; a user's file only
# with --overwrite -----------------------------------------------------------------------------------
case("output", "the input image", lambda t, k: _predict(t, k, str(_img(t)), "--output", str(t / "d.png"),
                                                        "--format", "csv"), 2, "input")
case("output", "the input CSV being predicted",
     lambda t, k: _predict(t, k, str(_unlabelled(t, ["0,0,0,0"])), "--output", str(t / "test.csv")), 2, "input")
case("output", "an image inside the input folder",
     lambda t, k: _predict(t, k, str(_img(t / "f").parent), "--output", str(t / "f" / "d.png"), "--format", "json"),
     2, "input")
case("output", "the checkpoint in use",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", _best(k), "--format", "csv"), 2, "checkpoint")
case("output", "another checkpoint of the run",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", str(k.run / "checkpoints" / "epoch-001.pt"), "--format",
                           "csv"), 2, "checkpoint")
case("output", "a checkpoint without the .pt suffix, even with --overwrite",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", str(_ckpt_copy(t, k, "model.csv")), "--overwrite"),
     2, "checkpoint")
case("output", "a file of the user's", lambda t, k: _predict(t, k, str(_img(t)), "--output",
                                                           str(_w(t, "mine.csv", "my,notes\n1,2\n"))),
     2, "--overwrite", no_new=".")
case("output", "a file of the user's with --overwrite",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", str(_w(t, "mine.csv", "my,notes\n")), "--overwrite"), 0,
     changes=("mine.csv",), check=_predictions_in("mine.csv"))
case("output", "an earlier predictions file is replaced without --overwrite",
     lambda t, k: _predict(t, k, str(_img(t)), "--output",
                           str(_w(t, "p.csv", "path,row,label,class,prob,topk\r\nold,,1,1,0.5,1:0.5\r\n"))), 0,
     changes=("p.csv",), check=lambda t, out, err: None if "old" not in (t / "p.csv").read_text() else "not replaced")
case("output", "a folder", lambda t, k: _predict(t, k, str(_img(t)), "--output", str(t), "--format", "csv"), 2,
     "folder", no_new=".")
case("output", "the current folder (an unset variable: --output \"$OUT\")",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", "", "--format", "csv"), 2, "folder")
case("output", "/dev/full", lambda t, k: _predict(t, k, str(_img(t)), "--output", "/dev/full", "--format", "csv"), 2,
     "not a regular file")
case("output", "a FIFO", lambda t, k: _predict(t, k, str(_img(t)), "--output", str(_fifo(t, "p.csv"))), 2,
     "not a regular file", check=_is(stat.S_ISFIFO, "p.csv"), subprocess=True, timeout=90)
case("output", "a symbolic link to the user's file, even with --overwrite",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", str(_link(t, "p.csv", _w(t, "mine.csv", "mine\n"))),
                           "--overwrite"), 2, "not a regular file", check=_is(stat.S_ISLNK, "p.csv"))
case("output", "an unwritable folder (/proc)",
     lambda t, k: _predict(t, k, str(_img(t)), "--output", "/proc/convtrain-predictions.csv"), 1, "cannot write")
case("output", "a full disk", lambda t, k: _predict(t, k, str(_img(t)), "--output", str(t / "p.csv")), 1,
     "no space left", no_new=".",
     patch=lambda mp, t: mp.setattr("os.fsync", _raising(OSError(errno.ENOSPC, "No space left on device"))))
case("output", "a folder that does not exist", lambda t, k: _predict(t, k, str(_img(t)), "--output",
                                                                  str(t / "nope" / "p.csv")), 2, "does not exist")


def _ckpt_copy(t: Path, k: Kit, name: str) -> Path:
    return Path(shutil.copy(k.run / "checkpoints" / "best.pt", t / name))


def _fifo(t: Path, name: str) -> Path:
    os.mkfifo(t / name)
    return t / name


def _link(t: Path, name: str, target: Path) -> Path:
    os.symlink(target, t / name)
    return t / name


def _raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


# checkpoint arguments: empty, a FIFO, a name that is no name ---------------------------------------------
# Typer reads '' as Path('.'): the console script's argument check (cli/argv.py) refuses it, so these run as
# the console script does (tests/cli/test_override_and_naming_rules.py checks the rule in-process, and
# `train --resume ''` from inside a run directory)
case("checkpoint", "predict --checkpoint ''", lambda t, k: ["predict", "--checkpoint", "", str(_img(t))], 2, "empty",
     subprocess=True)
case("checkpoint", "eval --checkpoint= (an unset variable)", lambda t, k: ["eval", "--checkpoint="], 2, "empty",
     subprocess=True)
case("checkpoint", "finetune --checkpoint ' '", lambda t, k: ["finetune", "--checkpoint", " ", *QUICK_SETS], 2,
     "empty", subprocess=True)

case("checkpoint", "predict --checkpoint naming a FIFO",
     lambda t, k: ["predict", "--checkpoint", str(_fifo(t, "best.pt")), str(_img(t))], 1, "not a regular file",
     subprocess=True, timeout=90)
case("checkpoint", "serve NAME=PATH with a space in NAME",
     lambda t, k: ["serve", "--checkpoint", f"my model={_best(k)}", "--port", "0"], 2, "model name",
     subprocess=True, timeout=90)
case("checkpoint", "serve --threads beyond the CPU cores",
     lambda t, k: ["serve", "--checkpoint", _best(k), "--port", "0", "--threads", str((os.cpu_count() or 1) + 1)],
     2, "--threads", subprocess=True, timeout=90)

# overrides: YAML 1.2, integers Python cannot convert, the 64-bit rule before any file is read -----------
_SHOW = ["config", "show", "-c", "smoke"]
case("overrides", "train.epochs=010 is ten, not octal eight", lambda t, k: [*_SHOW, "--set", "train.epochs=010"], 0,
     check=lambda t, out, err: None if "  epochs: 10\n" in out else "epochs is not 10")
case("overrides", "train.epochs=1:30 is a string, not base-60 ninety", lambda t, k: [*_SHOW, "--set", "train.epochs=1:30"], 2,
     "must be an integer")
case("overrides", "a boolean key given yes (YAML 1.1's true)",
     lambda t, k: [*_SHOW, "--set", "train.test_every_epoch=yes"], 2, "must be a boolean")
case("overrides", "name=2024-01-01 is a name, not a date", lambda t, k: [*_SHOW, "--set", "name=2024-01-01"], 0,
     check=lambda t, out, err: None if "name: '2024-01-01'" in out else "not the name")
case("overrides", "the same key twice is noted, the last one wins",
     lambda t, k: [*_SHOW, "--set", "train.epochs=2", "--set", "train.epochs=3"], 0,
     check=lambda t, out, err: None if "  epochs: 3\n" in out and "given 2 times" in err else "no note / not 3")
case("overrides", "a bare 5,000-digit integer", lambda t, k: [*_SHOW, "seed=" + "7" * 5000], 2, "digits",
     subprocess=True)  # bare key=value is rewritten to --set by the console script
case("overrides", "bare train.epochs=2 then train.epochs=3", lambda t, k: [*_SHOW, "train.epochs=2", "train.epochs=3"],
     0, check=lambda t, out, err: None if "  epochs: 3\n" in out and "given 2 times" in err else "no note / not 3",
     subprocess=True)
case("overrides", "--set with a 5,000-digit integer", lambda t, k: [*_SHOW, "--set", "train.epochs=" + "9" * 5000], 2,
     "digits")
case("overrides", "a config file with a 5,000-digit integer",
     lambda t, k: ["config", "show", "-c", str(_w(t, "c.yaml", "seed: " + "1" * 5000 + "\n"))], 2, "digits")
case("overrides", "config show --set data.val_size beyond 64 bits",
     lambda t, k: [*_SHOW, "--set", "data.val_size=99999999999999999999999"], 2, "64-bit")
case("overrides", "train --set data.val_size beyond 64 bits",
     lambda t, k: ["train", "-c", "smoke", *QUICK_SETS, "--set", "data.val_size=99999999999999999999999",
                   "--run-dir", str(t / "run")], 2, "64-bit", no_new=".")

# internal errors that are a user's mistake -----------------------------------------------------------
case("internal", "data make-folder --seed beyond 64 bits",
     lambda t, k: ["data", "make-folder", str(t / "out"), "--seed", "99999999999999999999", "--train", "10"], 2,
     "--seed", no_new=".")
case("internal", "predict on a CSV with a 20-digit pixel",
     lambda t, k: ["predict", "--checkpoint", _best(k), str(_unlabelled(t, ["0,0,0," + "9" * 20]))], 1, "row 2")
case("internal", "predict on a CSV with bytes that are not UTF-8",
     lambda t, k: ["predict", "--checkpoint", _best(k),
                   str(_w(t, "test.csv", b"pixel0,pixel1,pixel2,pixel3\n0,0,0,\xff\xfe\n"))], 1, "UTF-8")
case("internal", "Kaggle's test.csv saved by Excel (a UTF-8 byte-order mark)",
     lambda t, k: ["predict", "--checkpoint", _best(k), str(_unlabelled(t, ["0,0,0,0", "9,9,9,9"], b"\xef\xbb\xbf")),
                   "--output", str(t / "sub.csv"), "--format", "kaggle"], 0,
     check=lambda t, out, err: None if (t / "sub.csv").read_text().splitlines()[1:] != [] else "no rows")

# W&B: a project name W&B refuses is one line before any data is read --------------------------------------
_WB = ["train", "-c", "smoke", *QUICK_SETS, "--device", "cpu", "--set", "log.wandb=true", "--set", "log.wandb_mode=offline"]
for _project, _why in (("team/digits", "a slash"), ("a:b", "a colon"), ("x" * 129, "129 characters"), ("", "empty")):
    case("wandb", f"log.wandb_project {_why}",
         lambda t, k, p=_project: [*_WB, "--set", f"log.wandb_project={p}", "--run-dir", str(t / "run")], 2,
         "wandb_project", no_new=".", needs="wandb")

# tune: the study folder is the study's, --report only reads, checks finish in seconds ------------------------
_SPACE = "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}\n"
_TUNE = ["tune", "-c", "smoke", *QUICK_SETS, "--device", "cpu", "--trials", "1"]


def _marker(t: Path, drop: str = "", raw: str | None = None) -> Path:
    data = {"kind": "convtrain-study", "study": "s", "storage": f"sqlite:///{t / 's' / 'study.db'}",
            "default_storage": True, "metric": "val_acc", "direction": "maximize", "trials": 2, "epochs": 1}
    data.pop(drop, None)
    _w(t, "s/study.json", raw if raw is not None else json.dumps(data))
    return t / "s"


def _users_folder(t: Path) -> Path:
    _w(t, "mine/tune.json", '{"mine": 1}\n')
    return _w(t, "mine/best.yaml", "mine: 1\n").parent


case("tune", "--study-dir holding the user's own best.yaml and tune.json",
     lambda t, k: [*_TUNE, "--space", str(_w(t, "space.yaml", _SPACE)), "--study-dir", str(_users_folder(t))],
     2, "not a study folder", no_new="mine", needs="optuna")
case("tune", "--report on a study folder without its database",
     lambda t, k: ["tune", "--report", str(_marker(t))], 2, "no study database", no_new=".", needs="optuna")
case("tune", "--report on a study.json without 'trials'",
     lambda t, k: ["tune", "--report", str(_marker(t, drop="trials"))], 2, "trials", no_new=".", needs="optuna")
case("tune", "--report on a study.json nested 100,000 deep",
     lambda t, k: ["tune", "--report", str(_marker(t, raw="[" * 100_000 + "]" * 100_000))], 2, "study.json",
     no_new=".", needs="optuna")
case("tune", "--sampler grid over 10**12 integers",
     lambda t, k: [*_TUNE, "--sampler", "grid", "--space", str(_w(t, "space.yaml", "seed: {int: [0, 1000000000000]}\n")),
                   "--study-dir", str(t / "s")], 2, "combinations", no_new=".", needs="optuna")
case("tune", "a choice of 100,000 values",
     lambda t, k: [*_TUNE, "--space", str(_w(t, "space.yaml", "seed: {choice: [%s]}\n"
                                              % ", ".join(map(str, range(100_000))))), "--study-dir", str(t / "s")],
     2, "choices", no_new=".", needs="optuna", subprocess=True, timeout=120)
case("tune", "a study folder that cannot be written (/proc)",
     lambda t, k: [*_TUNE, "--space", str(_w(t, "space.yaml", _SPACE)), "--study-dir", "/proc/convtrain-study"], 1,
     "cannot write", needs="optuna")

# the runs listing and `latest` read a deeply nested study.json --------------------------------------------
case("listing", "runs with a study.json nested 100,000 deep",
     lambda t, k: ["runs", str(_marker(t, raw="[" * 100_000 + "]" * 100_000).parent)], 0)


# names on screen: a trailing backslash is one backslash ------------------------------------------------
def _backslash_folder(t: Path, k: Kit) -> list[str]:
    for name in ("x\\", "y"):
        for i in range(3):
            _w(t, f"f/train/{name}/{i}.png", digit_png())
    return ["data", "inspect", "--data", str(t / "f")]


case("display", "a class folder named x\\ in data inspect", _backslash_folder, 0,
     check=lambda t, out, err: None if "x\\ " in out and "x\\\\" not in out else "x\\ shown as x\\\\")

IDS = [f"{c.family}: {c.name}" for c in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Kit:
    from convtrain.config.schema import RunConfig, to_yaml

    root = tmp_path_factory.mktemp("wave3")
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(RunConfig()))
    ckpt = valid_checkpoint()
    for name in ("best.pt", "epoch-001.pt"):
        torch.save(ckpt, run / "checkpoints" / name)
    image = root / "digit.png"
    image.write_bytes(digit_png())
    return Kit(run, image, ckpt)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


@pytest.mark.parametrize("c", [pytest.param(c, id=i, marks=[pytest.mark.slow] if c.subprocess else [])
                               for c, i in zip(CASES, IDS)])
def test_hostile_wave3(c: Case, kit: Kit, tmp_path: Path, monkeypatch):
    if c.needs:
        pytest.importorskip(c.needs)
    work = tmp_path / "t"
    work.mkdir()
    argv = c.build(work, kit)
    if c.patch is not None:
        assert not c.subprocess, "a patch reaches the in-process command only"
        c.patch(monkeypatch, work)
    before, tree = snapshot(work, kit.run), _tree(work / c.no_new) if c.no_new else set()
    for name in c.changes:
        before.pop(work / name, None)
    env = {"CONVTRAIN_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = invoke(argv, env=env, timeout=c.timeout, subprocess_=c.subprocess)
    monkeypatch.undo()  # os.fsync and the folder back before the checks read files
    problems = contract_problems(out, (c.code,), c.text, c.timeout)
    problems += [f"pre-existing file {p}" for p in changed_files(before)]
    if c.no_new:
        problems += [f"new file {p}" for p in sorted(_tree(work / c.no_new) - tree)]
    if c.check is not None and out.code == c.code:
        problems += [p for p in [c.check(work, out.stdout, out.stderr)] if p]
    assert not problems, f"{c.name}: {'; '.join(problems)}\nargv: {[a[:80] for a in argv]}\nstderr: {out.stderr[-1500:]}"


def test_the_table_covers_the_third_surface():
    families = {c.family: sum(x.family == c.family for x in CASES) for c in CASES}
    for family in ("output", "checkpoint", "overrides", "internal", "wandb", "tune", "listing", "display"):
        assert families.get(family, 0) >= 1, family
    assert families["output"] >= 10 and families["overrides"] >= 8, families
