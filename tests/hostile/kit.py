"""Shared by the hostile table and the fuzz tests: a tiny valid checkpoint, one real small run,
and one way to run a command and judge it against the error contract.

The contract (docs/safety.md, "Exit codes" and "Safety"): a failing command prints exactly ONE line on
stderr, starting with ``error: ``, exits 2 (usage/config) or 1 (runtime), shows no traceback, does
not end in the backstop's "internal error" line, finishes in bounded time, and leaves every file
that existed before byte-for-byte unchanged.

``CONVTRAIN_HOSTILE_REPO=/path/to/checkout`` runs every CLI case as a subprocess of that
checkout's ``python -m convtrain`` instead (used to measure the original code).
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import struct
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.config.load import load_config
from convtrain.config.schema import to_dict
from convtrain.models import create_model

from ..conftest import REPO

OTHER_REPO = os.environ.get("CONVTRAIN_HOSTILE_REPO")
runner = CliRunner()

# Enough for a run that finishes in seconds when a hostile case is (wrongly) accepted.
QUICK = {"data": {"train_subset": 640, "val_size": 200, "test_subset": 200}, "train": {"epochs": 1}}
QUICK_SETS = ["--set", "data.train_subset=640", "--set", "data.val_size=200", "--set", "data.test_subset=200",
              "--set", "train.epochs=1"]


@dataclass
class Outcome:
    code: int | None  # None: timed out
    stdout: str
    stderr: str
    seconds: float
    crashed: str = ""  # in-process: the exception that escaped the command (a traceback for a user)


def invoke(argv: list[str], *, env: dict | None = None, timeout: float = 60, subprocess_: bool = False) -> Outcome:
    """Run ``convtrain ARGV`` in-process (fast) or as a real subprocess (env vars, time limits)."""
    start = time.monotonic()
    if OTHER_REPO or subprocess_:
        repo = Path(OTHER_REPO) if OTHER_REPO else REPO
        python = str(repo / ".venv" / "bin" / "python") if OTHER_REPO else sys.executable
        try:
            p = subprocess.run([python, "-m", "convtrain", *argv], cwd=repo, env={**os.environ, **(env or {})},
                               capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return Outcome(None, _text(exc.stdout), _text(exc.stderr), time.monotonic() - start)
        return Outcome(p.returncode, _text(p.stdout), _text(p.stderr), time.monotonic() - start)
    r = runner.invoke(app, argv, env=env)
    crashed = ""
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        crashed = "".join(traceback.format_exception(r.exception))
    return Outcome(r.exit_code, r.stdout, r.stderr, time.monotonic() - start, crashed)


def _text(b) -> str:
    return (b or b"").decode("utf-8", "replace") if isinstance(b, (bytes, type(None))) else b


def contract_problems(out: Outcome, codes: tuple[int, ...], text: str = "", timeout: float = 60) -> list[str]:
    """Every way ``out`` breaks the error contract (empty when it keeps it)."""
    if out.code is None:
        return [f"did not finish within {timeout:.0f} s"]
    problems = []
    if out.crashed:
        problems.append("uncaught exception: " + out.crashed.strip().splitlines()[-1])
    if out.code not in codes:
        problems.append(f"exit code {out.code}, expected {' or '.join(map(str, codes))}")
    if "Traceback" in out.stdout + out.stderr:
        problems.append("a traceback was printed")
    lines = stderr_lines(out.stderr)
    if out.code != 0:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr is not one 'error: ' line: {out.stderr.strip()[-300:]!r}")
        elif "internal error" in lines[0]:
            problems.append(f"reached the backstop: {lines[0]}")
        elif text and text.lower() not in lines[0].lower():
            problems.append(f"message lacks {text!r}: {lines[0]}")
    if out.seconds > timeout:
        problems.append(f"took {out.seconds:.0f} s (limit {timeout:.0f} s)")
    return problems


def stderr_lines(text: str) -> list[str]:
    """Lines as a terminal shows them (str.splitlines would also split at \\x1c-\\x1e and \\x85)."""
    text = text.strip()
    return re.split(r"\r\n|\r|\n", text) if text else []


def snapshot(*roots: Path) -> dict[Path, str]:
    files = {}
    for root in roots:
        for p in [root] if root.is_file() else sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                files[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def changed_files(before: dict[Path, str]) -> list[str]:
    """Pre-existing files that were removed or whose bytes changed."""
    gone = [f"{p} (removed)" for p in before if not p.is_file()]
    return gone + [f"{p} (changed)" for p, h in before.items()
                   if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() != h]


def write_file(t: Path, name: str, content: str | bytes) -> Path:
    """``t/name`` holding ``content`` (text as UTF-8), its folders made: a case's input file."""
    p = t / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


def valid_checkpoint() -> dict:
    """A complete, valid checkpoint of a freshly initialised article_cnn (seconds, no training)."""
    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    model = create_model("article_cnn", num_classes=10)
    return checkpoint.build(model, model_name="article_cnn", model_kwargs={}, classes=[str(i) for i in range(10)],
                            in_channels=1, input_size=(28, 28), mean=[0.1307], std=[0.3081], dataset="mnist",
                            config=to_dict(cfg), epoch=1, metrics={"val_acc": 0.1})


def mutated(ckpt: dict, path: tuple, value=..., delete: bool = False) -> dict:
    """A deep copy of ``ckpt`` with the key at ``path`` replaced (or deleted)."""
    c = copy.deepcopy(ckpt)
    node = c
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return c


def png(width: int, height: int, pixels: bytes | None = None, bit_depth: int = 8) -> bytes:
    """A grayscale PNG; with ``pixels=None`` only the header chunks (a huge declared size costs nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))
    if pixels is None:
        return head + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return head + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def digit_png() -> bytes:
    rows = b"".join(b"\x00" + bytes(255 if 8 < x < 20 and 6 < y < 22 else 0 for x in range(28)) for y in range(28))
    return png(28, 28, rows)


def noise_png(seed: int = 0) -> bytes:
    """A 28x28 PNG of random pixels: it barely compresses, so cutting it really truncates the pixel data."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (28, 28), generator=g, dtype=torch.uint8)
    return png(28, 28, b"".join(b"\x00" + bytes(row.tolist()) for row in pixels))
