"""Hostile and unlucky input through the CLI, one table: every case must keep the error contract.

Each case writes its own files into a fresh folder, runs one command and expects: the exit code
(2 usage/config, 1 runtime, 0 where the input is odd but legal), exactly one stderr line starting
"error: " when it fails, no traceback, no backstop "internal error", an end within the case's time
limit, and every file that existed before unchanged. Messages are only checked where the issue
names them. ``CONVTRAIN_HOSTILE_REPO=/work/main pytest tests/hostile/test_first_surface.py`` runs the same table
against another checkout (every case as a subprocess) to measure it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from ..conftest import REPO, copy_of
from .kit import (
    QUICK_SETS,
    changed_files,
    contract_problems,
    digit_png,
    invoke,
    mutated,
    noise_png,
    png,
    snapshot,
    valid_checkpoint,
)


@dataclass
class Kit:
    """What cases start from: a valid checkpoint file and one real finished run (never modified)."""

    ckpt: dict
    ckpt_path: Path
    run: Path
    image: Path


@dataclass
class Case:
    family: str
    name: str
    build: Callable[[Path, Kit], list[str]]  # writes the case's files under the folder, returns argv
    codes: tuple[int, ...]
    text: str = ""  # only where the issue names the message
    env: dict = field(default_factory=dict)
    subprocess: bool = False  # a real process: env vars, time limits on possible hangs
    # seconds, start-up included (importing torch takes 5-15 s on a busy machine): a bound that
    # catches hangs and explosions (a FIFO, a 200000 x 200000 matrix), not slowness
    timeout: float = 60


# ----------------------------------------------------------------------------------------------
# little writers

def _w(t: Path, name: str, content: str | bytes) -> str:
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


def _cfg(t: Path, text: str | bytes, name: str = "c.yaml") -> list[str]:
    return ["config", "show", "-c", _w(t, name, text)]


def _train(t: Path, text: str | bytes, *sets: str) -> list[str]:
    """train with a config that would finish in seconds if it were (wrongly) accepted; ``sets`` come
    after the quick settings, so they win over them."""
    return ["train", "-c", _w(t, "c.yaml", text), *QUICK_SETS, *[a for s in sets for a in ("--set", s)],
            "--run-dir", str(t / "run")]


def _set(*sets: str) -> Callable[[Path, Kit], list[str]]:
    return lambda t, k: ["config", "show", *[a for s in sets for a in ("--set", s)]]


def _save(t: Path, obj, name: str = "c.pt") -> str:
    torch.save(obj, t / name)
    return str(t / name)


class _RunsCode:
    """A pickle whose loading would run ``touch PATH`` (the classic malicious checkpoint)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _copy_last(folder: Path, k: Kit) -> str:
    folder.mkdir(parents=True)
    return shutil.copy(k.run / "checkpoints" / "last.pt", folder / "last.pt")


def _copy_run(t: Path, k: Kit) -> Path:
    return Path(shutil.copytree(k.run, t / "runs" / "r1", symlinks=True))


# ----------------------------------------------------------------------------------------------
# the table

CASES: list[Case] = []


def case(family, name, build, codes, text="", **kw):
    CASES.append(Case(family, name, build, codes if isinstance(codes, tuple) else (codes,), text, **kw))


# configs ---------------------------------------------------------------------------------------
case("config", "malformed YAML", lambda t, k: _cfg(t, "train:\n  epochs: 1\n bad: [\n"), 2)
case("config", "tab indentation", lambda t, k: _cfg(t, "train:\n\tepochs: 1\n"), 2)
case("config", "unknown top-level key", lambda t, k: _cfg(t, "trian:\n  epochs: 1\n"), 2, "did you mean")
case("config", "unknown nested key", lambda t, k: _cfg(t, "optim:\n  lrr: 0.1\n"), 2, "did you mean")
case("config", "section is a number", lambda t, k: _cfg(t, "optim: 5\n"), 2)
case("config", "section is a list", lambda t, k: _cfg(t, "train: [1, 2]\n"), 2)
case("config", "top level is a list", lambda t, k: _cfg(t, "- 1\n- 2\n"), 2)
case("config", "top level is a number", lambda t, k: _cfg(t, "42\n"), 2)
case("config", "integer given a word", lambda t, k: _cfg(t, "train:\n  batch_size: big\n"), 2)
case("config", "integer given true", lambda t, k: _cfg(t, "train:\n  epochs: true\n"), 2)
case("config", "number given a list", lambda t, k: _cfg(t, "optim:\n  lr: [1, 2]\n"), 2)
case("config", "epochs 0", lambda t, k: _cfg(t, "train:\n  epochs: 0\n"), 2)
case("config", "negative lr", lambda t, k: _cfg(t, "optim:\n  lr: -1\n"), 2)
case("config", "lr .nan", lambda t, k: _cfg(t, "optim:\n  lr: .nan\n"), 2)
case("config", "lr .inf", lambda t, k: _cfg(t, "optim:\n  lr: .inf\n"), 2)
case("config", "fractional epochs", lambda t, k: _cfg(t, "train:\n  epochs: 1.5\n"), 2)
case("config", "huge file (24 MB)",
     lambda t, k: _cfg(t, "train:\n  epochs: 1\n" + "# " + "x" * 1000 + "\n" + "junk:\n" + "  - 1\n" * 4_000_000),
     2, subprocess=True, timeout=45)
case("config", "alias bomb",
     lambda t, k: _cfg(t, "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
         f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))
         + "train: *j\n"), 2, subprocess=True, timeout=45)
case("config", "deep nesting (flow lists)", lambda t, k: _cfg(t, "train: " + "[" * 20000 + "]" * 20000 + "\n"),
     2, subprocess=True, timeout=45)
case("config", "deep nesting under model.kwargs",
     lambda t, k: _cfg(t, "model:\n  kwargs:\n    hidden: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"),
     2, subprocess=True, timeout=45)
case("config", "duplicate keys", lambda t, k: _cfg(t, "train:\n  epochs: 1\n  epochs: 2\n"), 2)
case("config", "duplicate sections", lambda t, k: _cfg(t, "train:\n  epochs: 1\ntrain:\n  batch_size: 8\n"), 2)
case("config", "integer key", lambda t, k: _cfg(t, "1: 2\n"), 2)
case("config", "list as a key", lambda t, k: _cfg(t, "? [a, b]\n: 1\n"), 2)
case("config", "not UTF-8", lambda t, k: _cfg(t, b"train:\n  epochs: \xff\xfe1\n"), 2)
case("config", "NUL byte", lambda t, k: _cfg(t, b"train:\n  epochs: 1\x00\n"), 2)
case("config", "a FIFO instead of a file",
     lambda t, k: (os.mkfifo(t / "fifo.yaml"), ["config", "show", "-c", str(t / "fifo.yaml")])[1],
     2, subprocess=True, timeout=45)
case("config", "huge seed", lambda t, k: _train(t, "seed: 123456789012345678901234567890\n"), 2,
     subprocess=True, timeout=90)
case("config", "devices [-1]", lambda t, k: _train(t, "devices: [-1]\n"), 2, subprocess=True, timeout=90)
case("config", "val_size larger than the dataset", lambda t, k: _train(t, "", "data.val_size=100000"), 2,
     subprocess=True, timeout=90)
case("config", "3-value data.mean on 1-channel MNIST", lambda t, k: _train(t, "data:\n  mean: [0.1, 0.2, 0.3]\n"),
     2, subprocess=True, timeout=90)
case("config", "data.std of zero", lambda t, k: _cfg(t, "data:\n  std: [0]\n"), 2)
case("config", "unknown model", lambda t, k: _cfg(t, "model:\n  name: resnet9000\n"), 2)
case("config", "negative model kwarg", lambda t, k: _train(t, "model:\n  name: article_cnn\n  kwargs: {hidden: -5}\n"),
     2, subprocess=True, timeout=90)
case("config", "model kwarg of the wrong type",
     lambda t, k: _train(t, "model:\n  name: article_cnn\n  kwargs: {hidden: abc}\n"), 2, subprocess=True, timeout=90)

# --set strings ---------------------------------------------------------------------------------
case("set", "no '='", _set("optim.lr"), 2)
case("set", "only '='", _set("="), 2)
case("set", "garbage '==='", _set("==="), 2)
case("set", "empty key part", _set("train..epochs=1"), 2)
case("set", "dot only", _set(".=1"), 2)
case("set", "path below a number", _set("train.epochs.x.y.z=1"), 2)
case("set", "500-level path", _set(".".join(["a"] * 500) + "=1"), 2)
case("set", "unknown key with a near miss", _set("optim.lrr=0.1"), 2, "did you mean")
case("set", "lr=.inf", _set("optim.lr=.inf"), 2)
case("set", "lr=1.0e400 (overflows to inf)", _set("optim.lr=1.0e400"), 2)
case("set", "lr=.nan", _set("optim.lr=.nan"), 2)
case("set", "lr=nan (a word)", _set("optim.lr=nan"), 2)
case("set", "epochs=inf", _set("train.epochs=.inf"), 2)
case("set", "section replaced by a mapping with a typo", _set("train={epochs: 1, bogus: 2}"), 2)
case("set", "section replaced by a scalar", _set("train=3"), 2)
case("set", "malformed YAML value", _set("train.batch_size=[1"), 2)
case("set", "emoji value", _set("optim.lr=\U0001f4a5"), 2)
# a 30-digit batch size is refused (over the schema's limit)
case("set", "huge batch size", lambda t, k: ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--set",
                                             "train.batch_size=" + "9" * 30, "--run-dir", str(t / "run")],
     2, subprocess=True, timeout=90)
case("set", "huge seed", lambda t, k: ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--set",
                                       "seed=" + "9" * 40, "--run-dir", str(t / "run")], 2, subprocess=True, timeout=90)

# checkpoints: valid pickles of the wrong shape, through every command that reads one -----------
CKPT_MUTATIONS: dict[str, Callable[[dict], object]] = {
    "missing 'model'": lambda c: mutated(c, ("model",), delete=True),
    "missing 'classes'": lambda c: mutated(c, ("classes",), delete=True),
    "missing 'normalization'": lambda c: mutated(c, ("normalization",), delete=True),
    "version a string": lambda c: mutated(c, ("version",), "1"),
    "state_dict a list": lambda c: mutated(c, ("model", "state_dict"), [1, 2, 3]),
    "classes shorter than the head": lambda c: mutated(c, ("classes",), ["a", "b"]),
    "input size 0": lambda c: mutated(c, ("input_size",), [0, 0]),
    "negative kwargs": lambda c: mutated(c, ("model", "kwargs"), {"hidden": -3}),
    "kwargs a list": lambda c: mutated(c, ("model", "kwargs"), [1]),
    "num_classes a string": lambda c: mutated(c, ("num_classes",), "ten"),
    "normalization mean a string": lambda c: mutated(c, ("normalization", "mean"), "x"),
    "config missing": lambda c: mutated(c, ("config",), delete=True),
    "in_channels 0": lambda c: mutated(c, ("in_channels",), 0),
    "a list, not a dict": lambda c: [1, 2, 3],
}
ALL_COMMANDS = ("eval", "predict")
SOME_COMMANDS = ("export", "visualize", "finetune")
SOME_MUTATIONS = ("missing 'model'", "version a string", "state_dict a list", "classes shorter than the head",
                  "input size 0", "negative kwargs", "config missing")


def _ckpt_argv(command: str, path: str, t: Path, k: Kit) -> list[str]:
    return {
        "eval": ["eval", "--checkpoint", path, "--device", "cpu"],
        "predict": ["predict", "--checkpoint", path, "--device", "cpu", str(k.image)],
        "export": ["export", "--checkpoint", path, "--output", str(t / "exported.pt")],
        "visualize": ["visualize", "--checkpoint", path, str(k.image), "--output-dir", str(t / "vis")],
        "finetune": ["finetune", "--checkpoint", path, "-c", "configs/smoke.yaml", *QUICK_SETS,
                     "--run-dir", str(t / "run")],
    }[command]


for _name, _mutate in CKPT_MUTATIONS.items():
    for _cmd in ALL_COMMANDS + (SOME_COMMANDS if _name in SOME_MUTATIONS else ()):
        case("checkpoint", f"{_cmd}: {_name}",
             lambda t, k, m=_mutate, c=_cmd: _ckpt_argv(c, _save(t, m(k.ckpt)), t, k), 1)
for _cmd in ALL_COMMANDS + SOME_COMMANDS:
    case("checkpoint", f"{_cmd}: a pickle that would run code",
         lambda t, k, c=_cmd: _ckpt_argv(c, _save(t, {"format": "convtrain-checkpoint", "x": _RunsCode(t / "pwned")}),
                                         t, k), 1, "could run code")

# run directories -------------------------------------------------------------------------------


def _damaged(file: str, content: str | bytes, command: str, extra: tuple = ()) -> Callable[[Path, Kit], list[str]]:
    def build(t: Path, k: Kit) -> list[str]:
        run = _copy_run(t, k)
        target = run / file
        if content == "DIR":
            target.unlink(missing_ok=True)
            target.mkdir()
        else:
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        return {"runs": ["runs", str(run.parent)], "runs --json": ["runs", "--json", str(run.parent)],
                "plot": ["plot", str(run)], "resume": ["train", "--resume", str(run)]}[command] + list(extra)
    return build


# `runs` lists a damaged run as unreadable and goes on (exit 0); `plot` and `--resume` refuse it.
for _file, _content, _what in (("results.json", "[1, 2]", "a JSON list"), ("results.json", "\"finished\"", "a JSON string"),
                               ("results.json", b"\xff\xfe{", "not UTF-8"), ("results.json", "{\"test_accuracy\": \"high\"}",
                                                                           "accuracy a string"),
                               ("config.yaml", "- 1\n- 2\n", "a YAML list"), ("config.yaml", "train: 5\n", "section a number"),
                               ("config.yaml", "model: [\n", "malformed"),
                               ("metrics.csv", bytes(range(256)) * 4, "binary garbage"),
                               ("metrics.csv", b"epoch,val_acc\n1,\xff\n", "not UTF-8"),
                               ("metrics.csv", "epoch,train_loss,val_acc,seconds\n1,abc,zzz,forever\n", "words for numbers")):
    case("rundir", f"runs: {_file} {_what}", _damaged(_file, _content, "runs"), 0)
    case("rundir", f"runs --json: {_file} {_what}", _damaged(_file, _content, "runs --json"), 0)
for _file, _content, _what in (("metrics.csv", bytes(range(256)) * 4, "binary garbage"),
                               ("metrics.csv", b"epoch,val_acc\n1,\xff\n", "not UTF-8"),
                               ("metrics.csv", "epoch,train_loss,train_acc,val_loss,val_acc\n1,abc,x,y,z\n", "words for numbers"),
                               ("metrics.csv", "epoch\nnot-a-number\n", "epoch a word"),
                               ("results.json", "[1, 2]", "a JSON list"),
                               ("results.json", "{\"confusion_matrix\": \"lots\"}", "confusion matrix a string"),
                               ("results.json", b"\xff\xfe", "not UTF-8"),
                               ("curves.png", "DIR", "occupied by a directory")):
    case("rundir", f"plot: {_file} {_what}", _damaged(_file, _content, "plot"), 1)
for _file, _content, _what in (("checkpoints/last.pt", b"\x80\x02garbage", "garbage bytes"),
                               ("metrics.csv", bytes(range(256)) * 4, "metrics.csv binary garbage"),
                               ("metrics.csv", b"epoch,val_acc\n1,\xff\n", "metrics.csv not UTF-8")):
    case("rundir", f"--resume: {_file} {_what}", _damaged(_file, _content, "resume"), 1)
case("rundir", "--resume: last.pt a list", lambda t, k: ["train", "--resume", _save(_copy_run(t, k) / "checkpoints", [1], "last.pt")], 1)
case("rundir", "--resume: last.pt without training state",
     lambda t, k: ["train", "--resume", _save(_copy_run(t, k) / "checkpoints",
                                              mutated(torch.load(k.run / "checkpoints" / "last.pt", weights_only=True),
                                                      ("training_state",), delete=True), "last.pt")], 1)
case("rundir", "--resume: training state a string",
     lambda t, k: ["train", "--resume", _save(_copy_run(t, k) / "checkpoints",
                                              mutated(torch.load(k.run / "checkpoints" / "last.pt", weights_only=True),
                                                      ("training_state",), "later"), "last.pt")], 1)
case("rundir", "--resume: a last.pt outside a run directory",
     lambda t, k: ["train", "--resume", _copy_last(t / "elsewhere" / "x", k)], 2)
case("rundir", "runs NO_SUCH_DIR", lambda t, k: ["runs", str(t / "NO_SUCH_DIR")], 2)
case("rundir", "runs on a file", lambda t, k: ["runs", _w(t, "afile", "x")], 2)
case("rundir", "plot NO_SUCH_DIR", lambda t, k: ["plot", str(t / "NO_SUCH_DIR")], 2)
case("rundir", "plot a folder that is not a run", lambda t, k: ["plot", str(Path(_w(t, "x/afile", "x")).parent)], 2)

# images ----------------------------------------------------------------------------------------
for _cmd in ("predict", "visualize"):
    def _img_argv(t, k, path, c=_cmd):
        return (["predict", "--checkpoint", str(k.ckpt_path), "--device", "cpu", path] if c == "predict"
                else ["visualize", "--checkpoint", str(k.ckpt_path), path, "--output-dir", str(t / "vis")])
    case("image", f"{_cmd}: not an image", lambda t, k, a=_img_argv: a(t, k, _w(t, "x.png", "definitely text")), 1)
    case("image", f"{_cmd}: empty file", lambda t, k, a=_img_argv: a(t, k, _w(t, "x.png", b"")), 1)
    case("image", f"{_cmd}: truncated PNG", lambda t, k, a=_img_argv: a(t, k, _w(t, "x.png", noise_png()[:440])), 1)
    case("image", f"{_cmd}: 100000x100000 declared (decompression bomb)",
         lambda t, k, a=_img_argv: a(t, k, _w(t, "bomb.png", png(100_000, 100_000))), 1, timeout=30)
    case("image", f"{_cmd}: 12000x12000 declared (over Pillow's limit)",
         lambda t, k, a=_img_argv: a(t, k, _w(t, "bomb.png", png(12_000, 12_000))), 1, subprocess=True, timeout=60)
    case("image", f"{_cmd}: missing file", lambda t, k, a=_img_argv: a(t, k, str(t / "none.png")), 1)
    case("image", f"{_cmd}: 1x1 image (odd but legal)", lambda t, k, a=_img_argv: a(t, k, _w(t, "x.png", png(1, 1, b"\x00\xff"))), 0)
    case("image", f"{_cmd}: 1x3000 strip (odd but legal)",
         lambda t, k, a=_img_argv: a(t, k, _w(t, "x.png", png(3000, 1, b"\x00" + b"\x80" * 3000))), 0)
case("image", "predict: a folder without images", lambda t, k: ["predict", "--checkpoint", str(k.ckpt_path),
                                                               str(Path(_w(t, "d/readme.txt", "x")).parent)], 1)
case("image", "predict: 16-bit PNG (legal)",
     lambda t, k: ["predict", "--checkpoint", str(k.ckpt_path), _w(t, "x.png", png(2, 2, b"\x00" + b"\xff\xff" * 2 + b"\x00" + b"\x00\x00" * 2, 16))], 0)

# outputs ---------------------------------------------------------------------------------------
# (the tests run as root here, so chmod cannot make a folder read-only: /proc takes no new files)
# Each row pins its exit code: 2 where the command can tell before writing (a missing folder, a file
# where a folder should be, the input itself), 1 where the write itself fails (/proc takes no files).
case("output", "export into a missing folder (created, or refused cleanly)",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--output", str(t / "no" / "such" / "m.pt")], 2)
case("output", "export into /proc (unwritable)",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--output", "/proc/convtrain-hostile.pt"], 1)
case("output", "export below a file",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--output", _w(t, "afile", "x") + "/m.pt"], 2)
case("output", "export onto an existing folder",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--output", str(Path(_w(t, "d/x", "x")).parent)], 2)
case("output", "export onto its own checkpoint",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--output", str(k.ckpt_path)], 2)
case("output", "onnx export below a file",
     lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--format", "onnx", "--output",
                   _w(t, "afile", "x") + "/m.onnx"], 2)
case("output", "export --format garbage", lambda t, k: ["export", "--checkpoint", str(k.ckpt_path), "--format", "zip"], 2)
case("output", "visualize into a file",
     lambda t, k: ["visualize", "--checkpoint", str(k.ckpt_path), str(k.image), "--output-dir", _w(t, "afile", "x")], 2)
case("output", "visualize below a file",
     lambda t, k: ["visualize", "--checkpoint", str(k.ckpt_path), str(k.image), "--output-dir", _w(t, "afile", "x") + "/v"], 2)
case("output", "visualize into /proc",
     lambda t, k: ["visualize", "--checkpoint", str(k.ckpt_path), str(k.image), "--output-dir", "/proc/convtrain-vis"], 1)
case("output", "plot where confusion.png is a folder", _damaged("confusion.png", "DIR", "plot"), 1)

# conv ------------------------------------------------------------------------------------------
for _args, _name, _code in (
        (["--padding", "100000"], "huge padding", 2), (["--padding", "1000000000000"], "astronomic padding", 2),
        (["--dilation", "100000"], "huge dilation", 2), (["--stride", "1000000000000"], "astronomic stride", 2),
        (["--stride", "0"], "stride 0", 2), (["--stride", "-1"], "negative stride", 2),
        (["--dilation", "0"], "dilation 0", 2), (["--padding", "-1"], "negative padding", 2),
        (["--stride", "1,2,3"], "stride with 3 values", 2), (["--stride", "abc"], "stride a word", 2),
        (["--input", "nan 1; 1 1"], "NaN input", 0), (["--input", "inf 1; 1 1"], "inf input", 0),
        (["--input", "1e999 1; 1 1"], "input overflowing to inf", 0), (["--kernel", "nan 1; 1 1"], "NaN kernel", 0),
        (["--bias", "nan"], "NaN bias", 0), (["--input", "1 2; 3"], "ragged rows", 2), (["--input", ";"], "no numbers", 2),
        (["--input", "1 x; 3 4"], "a word in the matrix", 2),
        (["--kernel", "1 1 1 1; 1 1 1 1; 1 1 1 1; 1 1 1 1"], "kernel larger than the input", 2)):
    # NaN/inf is computed (it propagates, and is shown: exit 0), a huge stride refused (2):
    # no traceback either way. The big ones run as a real process: a 200000 x 200000 matrix must be stopped
    case("conv", _name, lambda t, k, a=_args: ["conv", *a], _code,
         subprocess=any(w in _name for w in ("huge", "astronomic")), timeout=45)

# torch.distributed environment variables -------------------------------------------------------
for _env, _name in (({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK=abc"), ({"WORLD_SIZE": "abc"}, "WORLD_SIZE=abc"),
                    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"), ({"WORLD_SIZE": "-2", "RANK": "0"}, "WORLD_SIZE=-2"),
                    ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0"}, "RANK beyond WORLD_SIZE"),
                    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x"}, "LOCAL_RANK=x"),
                    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                      "MASTER_PORT": "abc"}, "MASTER_PORT=abc")):
    case("distributed", _name, lambda t, k: ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--device", "cpu",
                                             "--run-dir", str(t / "run")], 2, env=_env, subprocess=True, timeout=60)

# usage -----------------------------------------------------------------------------------------
case("usage", "eval --split garbage", lambda t, k: ["eval", "--checkpoint", str(k.ckpt_path), "--split", "train"], 2)
case("usage", "eval --device garbage", lambda t, k: ["eval", "--checkpoint", str(k.ckpt_path), "--device", "gpu9"], 2)
case("usage", "predict --invert garbage",
     lambda t, k: ["predict", "--checkpoint", str(k.ckpt_path), "--invert", "maybe", str(k.image)], 2)
case("usage", "predict --top-k 0", lambda t, k: ["predict", "--checkpoint", str(k.ckpt_path), "--top-k", "0", str(k.image)], 2,
     subprocess=True)
case("usage", "train --resume with --run-dir",
     lambda t, k: ["train", "--resume", str(k.run), "--run-dir", str(t / "r")], 2)
case("usage", "train into a non-empty run dir",
     lambda t, k: ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--run-dir", str(Path(_w(t, "r/x", "keep me")).parent)], 2,
     "not empty")
# click's own usage errors become one line in main(), so these run as the console script does
case("usage", "unknown command", lambda t, k: ["trian"], 2, "did you mean", subprocess=True)
case("usage", "unknown option", lambda t, k: ["models", "--jsno"], 2, subprocess=True)
case("usage", "missing required option", lambda t, k: ["eval"], 2, subprocess=True)

IDS = [f"{c.family}: {c.name}" for c in CASES]
assert len(set(IDS)) == len(IDS), "case names must be unique"


# ----------------------------------------------------------------------------------------------
# fixtures and the one test

@pytest.fixture(scope="module")
def kit(tiny_run_source, tmp_path_factory) -> Kit:
    root = tmp_path_factory.mktemp("hostile-kit")
    ckpt = valid_checkpoint()
    ckpt_path = root / "ckpt" / "best.pt"
    ckpt_path.parent.mkdir()
    torch.save(ckpt, ckpt_path)
    image = root / "digit.png"
    image.write_bytes(digit_png())
    run = copy_of(tiny_run_source, tmp_path_factory, "hostile-runs")  # trained once per suite (tests/conftest.py)
    return Kit(ckpt, ckpt_path, run, image)


@pytest.mark.parametrize("c", [pytest.param(c, id=i, marks=[pytest.mark.slow] if c.subprocess else [])
                               for c, i in zip(CASES, IDS)])
def test_hostile(c: Case, kit: Kit, tmp_path: Path):
    argv = c.build(tmp_path, kit)
    before = snapshot(tmp_path, kit.ckpt_path.parent, kit.run, kit.image)
    out = invoke(argv, env=c.env, timeout=c.timeout, subprocess_=c.subprocess)
    problems = contract_problems(out, c.codes, c.text, c.timeout)
    problems += [f"pre-existing file {p}" for p in changed_files(before)]
    if (tmp_path / "pwned").exists():
        problems.append("loading the checkpoint ran code")
    assert not problems, f"{c.family}: {c.name}: {'; '.join(problems)}\nargv: {argv}\nstderr: {out.stderr[-2000:]}"


def test_table_covers_every_family():
    """The families the issue asks for are all in the table (a deleted block fails here)."""
    counts = {f: sum(c.family == f for c in CASES) for f in
              ("config", "set", "checkpoint", "rundir", "image", "output", "conv", "distributed")}
    assert all(n >= 5 for n in counts.values()), counts
    assert REPO.is_dir()
