"""Hostile inputs through the CLI (issue #14): every one is one "error: " line, the right exit code,
no traceback, no run directory, and no hang.

Each case builds its command line from a scratch folder (``tmp``) and a small MNIST-style dataset
written there (600 training and 100 test images taken from the real files, optionally corrupted).
Config mistakes exit 2 before any data is read; broken dataset files exit 1.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
MNIST_CONFIG = str(REPO / "configs" / "mnist.yaml")
BIG = "99999999999999999999"  # > 2**64

# ------------------------------------------------------------------------------------------------
# A small MNIST folder, written in IDX format (the same format torchvision reads)


@functools.lru_cache(maxsize=8)
def _read_idx(path: Path) -> tuple[list[int], bytes]:
    raw = path.read_bytes()
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim]))
    return dims, raw[4 + 4 * ndim:]


def _idx(dims: list[int], body: bytes, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + body


def write_small_mnist(root: Path, source: Path, corrupt: str | None = None) -> Path:
    """Every 100th training image (600) and every 100th test image (100), as MNIST/raw/*."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # "label11" corrupts the training files, "test-label11" the test files
    target, kind = ("t10k", corrupt[5:]) if corrupt and corrupt.startswith("test-") else ("train", corrupt)
    for prefix, step in (("train", 100), ("t10k", 100)):
        (_, h, w), pix = _read_idx(source / f"{prefix}-images-idx3-ubyte")
        _, lab = _read_idx(source / f"{prefix}-labels-idx1-ubyte")
        keep = range(0, len(lab), step)
        images = b"".join(pix[i * h * w:(i + 1) * h * w] for i in keep)
        labels = bytes(lab[i] for i in keep)
        n = len(labels)
        img_file, lab_file = _idx([n, h, w], images), _idx([n], labels)
        if prefix == target:
            if kind == "label11":
                lab_file = _idx([n], bytes([11]) + labels[1:])
            elif kind == "truncated":
                img_file = img_file[: len(img_file) // 2]
            elif kind == "32x32":  # a consistent file of 32x32 images (zero-padded digits)
                big = b"".join(b"\0" * 64 + b"".join(b"\0\0" + images[k * 784 + r * 28:k * 784 + (r + 1) * 28] + b"\0\0"
                                                     for r in range(28)) + b"\0" * 64 for k in range(n))
                img_file = _idx([n, 32, 32], big)
            elif kind == "float":  # IDX type 0x0D: float32 pixels
                m = n // 4  # 4 bytes per pixel
                img_file, lab_file = _idx([m, h, w], images[: m * h * w * 4], 0x0D), _idx([m], labels[:m])
            elif kind == "count":
                img_file = _idx([n - 1, h, w], images[: (n - 1) * h * w])
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(img_file)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(lab_file)
    return root


# ------------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    id: str
    args: Callable[[Path, Path], list[str]]  # (tmp, data_root) -> argv after "convtrain"
    code: int
    needle: str  # must appear in the one stderr line (or in stdout when code == 0)
    seconds: float = 10.0
    corrupt: str | None = None  # which small dataset to write
    proc: bool = False  # run in a subprocess (a broken build could block forever in-process)


def train(*extra: str, config: str | None = None):
    """A ``train`` command on the small dataset, into tmp/run, that would take one step per epoch."""

    def make(tmp: Path, root: Path) -> list[str]:
        cfg = config(tmp) if callable(config) else MNIST_CONFIG
        return ["train", "--config", str(cfg), "--data-root", str(root), "--run-dir", str(tmp / "run"),
                "--set", f"out_dir={tmp / 'runs'}", "--set", "data.download=false", "--set", "data.val_size=100",
                "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "log.plots=false",
                *[a.replace("@TMP@", str(tmp)) for a in extra]]

    return make


def yaml_file(name: str, content: bytes | str):
    def write(tmp: Path) -> Path:
        p = tmp / name
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        return p

    return write


def fifo(tmp: Path) -> Path:
    p = tmp / "pipe.yaml"
    os.mkfifo(p)
    return p


def _bomb(levels: int = 9) -> str:
    rows = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "[" + ", ".join(rows) + "]"


def _big_yaml(lines: int) -> bytes:
    """Valid YAML of 25 bytes a line: 2,000,000 lines = 50 MB."""
    return b"optim:\n  lr: 0.001\n" + b"".join(b"k%07d: [1, 2, 3, {a: b}]\n" % i for i in range(lines))


def conv(*args: str):
    return lambda tmp, root: ["conv", *args]


def matrix(n: int) -> str:
    return "; ".join(" ".join("1" for _ in range(n)) for _ in range(n))


CASES = [
    # --- YAML files
    Case("yaml-50mb", train(config=yaml_file("big.yaml", _big_yaml(2_000_000))), 2, "1,000,000-byte limit",
         seconds=2.0),
    Case("yaml-just-over-1mb", train(config=yaml_file("big.yaml", _big_yaml(40_000))), 2, "1,000,000-byte limit"),
    Case("yaml-alias-bomb", train(config=yaml_file("bomb.yaml", f"name: {_bomb()}\n")), 2, "alias"),
    Case("yaml-deep-nesting", train(config=yaml_file("deep.yaml", "name: " + "[" * 1000 + "]" * 1000 + "\n")), 2,
         "nested more than 50 levels"),
    Case("yaml-duplicate-key", train(config=yaml_file("dup.yaml", "optim:\n  lr: 0.01\n  name: sgd\n  lr: 0.1\n")), 2,
         "duplicate key 'lr'"),
    Case("yaml-latin1", train(config=yaml_file("latin1.yaml", "name: caf\xe9\n".encode("latin-1"))), 2, "UTF-8"),
    Case("yaml-binary", train(config=yaml_file("junk.yaml", bytes(range(256)) * 4)), 2, "junk.yaml"),
    Case("yaml-nul-string", train(config=yaml_file("nul.yaml", 'name: "a\\0b"\n')), 2, "'name'"),
    Case("yaml-fifo", train(config=fifo), 2, "pipe.yaml", proc=True),
    Case("yaml-device", train(config=lambda tmp: "/dev/null"), 2, "/dev/null", proc=True),
    Case("set-alias-bomb", train("--set", f"name={_bomb()}"), 2, "alias"),
    Case("set-deep-nesting", train("--set", "name=" + "[" * 1000 + "]" * 1000), 2, "nested more than 50 levels"),
    # --- values
    Case("seed-huge", train("--seed", BIG), 2, "'seed'"),
    Case("seed-2**63", train("--seed", str(2**63)), 2, "'seed'"),
    Case("seed-negative", train("--seed", "-1"), 2, "'seed'"),
    Case("devices-negative", train("--set", "devices=[-1]"), 2, "'devices'"),
    Case("val-size-too-big", train("--set", "data.val_size=600"), 2, "data.val_size"),
    Case("mean-3-values-1-channel", train("--set", "data.mean=[0.5,0.5,0.5]", "--set", "data.std=[0.5,0.5,0.5]"), 2,
         "'data.mean' and 'data.std' have 3 values but dataset 'mnist' has 1 channel(s)"),
    Case("bool-as-int", train("--set", "train.test_every_epoch=1"), 2, "'train.test_every_epoch'"),
    Case("int-as-bool", train("--set", "train.epochs=true"), 2, "'train.epochs'"),
    Case("batch-size-huge", train("--set", "train.batch_size=10000000"), 2, "'train.batch_size' must be at most"),
    Case("eval-batch-size-huge", train("--set", f"train.eval_batch_size={BIG}"), 2, "'train.eval_batch_size'"),
    Case("epochs-huge", train("--set", "train.epochs=10000000"), 2, "'train.epochs' must be at most"),
    Case("epochs-beyond-64-bit", train("--set", "train.epochs=" + "1" + "0" * 30), 2, "'train.epochs'"),
    Case("train-subset-huge", train("--set", f"data.train_subset={BIG}"), 2, "'data.train_subset'"),
    Case("max-steps-huge", train("--set", f"train.max_steps_per_epoch={BIG}"), 2, "'train.max_steps_per_epoch'"),
    Case("workers-huge", train("--set", "data.workers=100000"), 2, "'data.workers'"),
    Case("lr-inf", train("--set", "optim.lr=inf"), 2, "'optim.lr'"),
    Case("lr-nan", train("--set", "optim.lr=.nan"), 2, "'optim.lr'"),
    # --- model kwargs: refused before a run directory exists
    Case("kwargs-unknown", train("--set", "model.kwargs.hiden=3"), 2, "'model.kwargs.hiden'"),
    Case("kwargs-wrong-type", train("--set", "model.kwargs.hidden=big"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-bool-for-int", train("--set", "model.kwargs.hidden=true"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-float-for-int", train("--set", "model.kwargs.hidden=1.5"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-zero-width", train("--set", "model.kwargs.hidden=0"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-negative-width", train("--set", "model.kwargs.hidden=-5"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-huge-width", train("--set", "model.kwargs.hidden=1000000000000"), 2, "'model.kwargs.hidden'"),
    Case("kwargs-dropout-range", train("--set", "model.name=bn_cnn", "--set", "model.kwargs.dropout=1.5"), 2,
         "'model.kwargs.dropout'"),
    Case("kwargs-bad-choice", train("--set", "model.kwargs.conv=foo"), 2, "'model.kwargs.conv'"),
    # --- dataset files: exit 1, naming the file
    Case("data-label-11", train(), 1, "train-labels-idx1-ubyte): label 11 of image 0 is outside 0..9", corrupt="label11"),
    Case("data-truncated", train(), 1, "train-images-idx3-ubyte is truncated", corrupt="truncated"),
    Case("data-32x32", train(), 1, "holds 32x32 images", corrupt="32x32"),
    Case("data-float-pixels", train(), 1, "stores float32 values", corrupt="float"),
    Case("data-count-mismatch", train(), 1, "holds 599 images but", corrupt="count"),
    # --- convtrain conv
    Case("conv-stride-huge", conv("--stride", BIG), 2, "--stride"),
    Case("conv-padding-huge", conv("--padding", "10000"), 2, "--padding"),
    Case("conv-padding-too-wide", conv("--padding", "60"), 2, "--padding"),
    Case("conv-dilation-huge", conv("--dilation", BIG), 2, "--dilation"),
    Case("conv-matrix-huge", conv("--input", matrix(150)), 2, "--input"),
    Case("conv-empty-input", conv("--input", ""), 2, "--input"),
    Case("conv-non-numeric", conv("--input", "1 x; 2 3"), 2, "--input"),
    Case("conv-ragged", conv("--kernel", "1 2; 3"), 2, "--kernel"),
    Case("conv-nan-agrees", conv("--input", "nan 1; 2 3", "--kernel", "1"), 0, "agree"),
    Case("conv-inf-agrees", conv("--input", "inf 1 2; 2 3 4; 5 6 7", "--kernel", "1 1; 1 1"), 0, "agree"),
    Case("conv-nan-bias-agrees", conv("--bias", "nan"), 0, "agree"),
]


@pytest.fixture(scope="module")
def mnist_source(data_root) -> Path:
    # import what the commands import, so the time bounds measure the command and not `import torch`
    import torchvision.datasets  # noqa: F401

    import convtrain.cli  # noqa: F401
    import convtrain.ops.explain  # noqa: F401
    import convtrain.training.runner  # noqa: F401

    return data_root / "MNIST" / "raw"


def _invoke(args: list[str]) -> tuple[int, str, str, BaseException | None]:
    from convtrain.cli.app import app

    result = CliRunner().invoke(app, args)
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.stdout, result.stderr, exc


def _run_proc(args: list[str]) -> tuple[int, str, str, BaseException | None]:
    from ..conftest import run_cli

    r = run_cli(*args, timeout=60)
    return r.returncode, r.stdout, r.stderr, None


# the subprocess cases start a fresh Python that imports torch: seconds each
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.proc else c for c in CASES],
                         ids=lambda c: c.id)
def test_hostile_input_is_one_line_and_the_right_exit_code(case, tmp_path, mnist_source):
    root = write_small_mnist(tmp_path / "data", mnist_source, case.corrupt)
    args = case.args(tmp_path, root)
    start = time.perf_counter()
    code, stdout, stderr, exc = (_run_proc if case.proc else _invoke)(args)
    seconds = time.perf_counter() - start
    assert exc is None, f"uncaught {type(exc).__name__}: {exc}"
    assert "Traceback" not in stderr + stdout
    assert code == case.code, stderr + stdout[-2000:]
    if code:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert case.needle in lines[0], lines[0]
    else:
        assert case.needle in stdout and "DISAGREE" not in stdout
    if not case.proc:
        assert seconds < case.seconds, f"took {seconds:.1f}s"
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_eval_split_with_a_bad_label_is_a_data_error(tmp_path, mnist_source):
    """`convtrain eval` reads its split through load_eval_split: a corrupt test file is named."""
    from convtrain.data.mnist import load_eval_split
    from convtrain.errors import DataError

    root = write_small_mnist(tmp_path / "data", mnist_source, "test-label11")
    assert len(load_eval_split("mnist", root, "val", 100, 0, False)) == 100  # the training files are fine
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*label 11 of image 0 is outside 0\.\.9"):
        load_eval_split("mnist", root, "test", 100, 0, False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
