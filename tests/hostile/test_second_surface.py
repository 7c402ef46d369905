"""The second wave's surface (own data, the decode cache, --seeds, runs diff, MLflow, config copy,
resume) under hostile or unlucky input: one table of CLI cases, each with ONE expected exit code.

Every case keeps the error contract of tests/hostile/kit.py (one "error: " line, no traceback, no
backstop, bounded time, every file that was there unchanged) and, where it says so, leaves no new
file behind (``no_new``: a refused resume or --seeds writes nothing at all). The unit tests below the
table pin what the CLI cannot reach deterministically: an interrupt inside a decode, a cache write
or an import, and cache files with the right key but the wrong contents.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from convtrain.data import cache as datacache
from convtrain.data import csvdata, imagefolder, images
from convtrain.data.sources import build as build_data
from convtrain.errors import DataError, Interrupted

from ..conftest import REPO, wait_for_line
from .kit import QUICK_SETS, changed_files, contract_problems, invoke, snapshot
from .kit import write_file as _w
from ..data.test_own_data import data_cfg, sample, write_folder

NAMES2 = ["zero", "one"]


@dataclass
class Kit:
    run: Path  # a real finished run (never modified)
    mnist: tuple


@dataclass
class Case:
    family: str
    name: str
    build: Callable[[Path, Kit], list[str]]
    code: int
    text: str = ""
    no_new: str = ""  # a folder (relative to the case's tmp folder) that must not gain a file
    check: Callable[[Path, str], str | None] | None = None  # more to check: (tmp, stdout) -> problem or None
    subprocess: bool = False
    timeout: float = 60


CASES: list[Case] = []


def case(*args, **kw):
    CASES.append(Case(*args, **kw))


def _copy_run(t: Path, k: Kit, name: str = "a") -> Path:
    return Path(shutil.copytree(k.run, t / "runs" / name, symlinks=True))


# resume from a folder that is not a run directory ----------------------------------------------
def _proj(t: Path, k: Kit, config: str, ckpt_at: str) -> Path:
    proj = t / "proj"
    _w(t, "proj/config.yaml", config)
    _w(t, "proj/results.json", '{"mine": true}\n')
    if ckpt_at:
        (proj / ckpt_at).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(k.run / "checkpoints" / "last.pt", proj / ckpt_at)
    return proj


def _run_config(k: Kit) -> str:
    return (k.run / "config.yaml").read_text()


case("resume", "last.pt copied to proj/models, proj has its own config.yaml",
     lambda t, k: ["train", "--resume", str(_proj(t, k, "title: my paper\n", "models/last.pt") / "models/last.pt")],
     2, "checkpoints/", no_new="proj")
case("resume", "last.pt copied to proj/models, proj's config.yaml is a convtrain config",
     lambda t, k: ["train", "--resume", str(_proj(t, k, _run_config(k), "models/last.pt") / "models/last.pt")],
     2, "checkpoints/", no_new="proj")
case("resume", "proj/checkpoints/last.pt beside someone else's config.yaml",
     lambda t, k: ["train", "--resume", str(_proj(t, k, "title: my paper\n", "checkpoints/last.pt"))],
     2, "run directory", no_new="proj")
case("resume", "proj holding a recipe as config.yaml and no checkpoints/",
     lambda t, k: ["train", "--resume", str(_proj(t, k, (REPO / "configs" / "smoke.yaml").read_text(), ""))],
     2, "run directory", no_new="proj")
case("resume", "proj with an empty config.yaml and a checkpoints/ folder",
     lambda t, k: ["train", "--resume", str(_proj(t, k, "", "checkpoints/keep.txt"))],
     2, "run directory", no_new="proj")

# --seeds into folders that are not a sweep's ------------------------------------------------------
_SEEDS = ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--device", "cpu", "--seeds", "0"]
case("seeds", "--run-dir holds someone's summary.json",
     lambda t, k: [*_SEEDS, "--run-dir", str(_w(t, "d/summary.json", '{"mine": 1}\n').parent)], 2, "not empty",
     no_new="d")
case("seeds", "--run-dir holds notes and a seed-0 folder of their own",
     lambda t, k: [*_SEEDS, "--run-dir", str(_w(t, "d/seed-0/notes.txt", "mine").parent.parent)], 2, "not empty",
     no_new="d")
case("seeds", "a 5,000-digit seed", lambda t, k: ["train", "-c", "configs/smoke.yaml", "--seeds", "7" * 5000,
                                                  "--run-dir", str(t / "d")], 2, "2**63-1")


# runs diff: --plot never replaces what is not a regular file; --json is JSON ---------------------
def _fifo(t: Path) -> Path:
    os.mkfifo(t / "ab.png")
    return t / "ab.png"


def _still(kind: Callable[[int], bool], name: str) -> Callable[[Path, str], str | None]:
    return lambda t, out: None if kind(os.lstat(t / name).st_mode) else f"{name} was replaced"


def _nan_metrics(t: Path, k: Kit) -> list[str]:
    b = _copy_run(t, k, "b")
    text = (b / "metrics.csv").read_text().splitlines()
    head = text[0].split(",")
    row = text[1].split(",")
    row[head.index("val_loss")] = "nan"
    (b / "metrics.csv").write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n")
    return ["runs", "diff", str(_copy_run(t, k, "a")), str(b), "--json"]


def _strict_json(t: Path, out: str) -> str | None:
    def refuse(word):
        raise ValueError(f"not JSON: {word}")
    try:
        d = json.loads(out, parse_constant=refuse)
    except ValueError as exc:
        return str(exc)
    return None if d["epochs"][0]["val_loss"]["b"] is None else "NaN not null"


def _older_run(t: Path, k: Kit) -> list[str]:
    a = _copy_run(t, k, "a")
    lines = (a / "config.yaml").read_text().splitlines()
    (a / "config.yaml").write_text("\n".join(x for x in lines if not x.startswith("dist_timeout:")) + "\n")
    _w(t, "runs/b/x", "")
    shutil.rmtree(t / "runs" / "b")
    b = _copy_run(t, k, "b")
    (b / "config.yaml").write_text((b / "config.yaml").read_text().replace("dist_timeout: 300", "dist_timeout: 301"))
    return ["runs", "diff", str(a), str(b), "--json"]


case("diff", "--plot onto a FIFO",
     lambda t, k: ["runs", "diff", str(_copy_run(t, k, "a")), str(_copy_run(t, k, "b")), "--plot", str(_fifo(t))],
     2, "not a regular file", check=_still(stat.S_ISFIFO, "ab.png"))
case("diff", "--plot onto a symbolic link",
     lambda t, k: ["runs", "diff", str(_copy_run(t, k, "a")), str(_copy_run(t, k, "b")), "--plot",
                   str((os.symlink(_w(t, "target.png", "mine"), t / "ab.png"), t / "ab.png")[1])],
     2, "not a regular file", check=_still(stat.S_ISLNK, "ab.png"))
case("diff", "--json with a NaN loss prints strict JSON", _nan_metrics, 0, check=_strict_json)
case("diff", "an older run without a newer key", _older_run, 0,
     check=lambda t, out: None if {"dist_timeout"} <= {c["key"] for c in json.loads(out)["config"]} else out[:300])


# own data: files that are not files, names that are markup, CSVs off the beaten path --------------
def _folder(t: Path, k: Kit, n: int = 12) -> Path:
    write_folder(t / "f", [(x, y % 2) for x, y in sample(k.mnist, n)], names=NAMES2)
    return t / "f"


def _with(extra: Callable[[Path], None]) -> Callable[[Path, Kit], Path]:
    def build(t: Path, k: Kit) -> Path:
        root = _folder(t, k)
        extra(root / "train" / "zero")
        return root
    return build


_FIFO_PNG = _with(lambda d: os.mkfifo(d / "x.png"))
_ZERO_PNG = _with(lambda d: os.symlink("/dev/zero", d / "x.png"))
for _name, _build in (("a FIFO named x.png", _FIFO_PNG), ("a .png link to /dev/zero", _ZERO_PNG)):
    case("data", f"inspect: {_name}", lambda t, k, b=_build: ["data", "inspect", "--data", str(b(t, k))], 0,
         check=lambda t, out: None if "x.png" in out else "x.png not named", subprocess=True, timeout=60)
    case("data", f"train: {_name}", lambda t, k, b=_build: ["train", "--data", str(b(t, k)), *QUICK_SETS,
                                                             "--run-dir", str(t / "run")],
         1, "not a regular file", subprocess=True, timeout=90)


def _csv(t: Path, rows: list[str], header: str | None = None, prefix: bytes = b"") -> str:
    header = header or "label," + ",".join(f"pixel{i}" for i in range(4))
    return str(_w(t, "d/train.csv", prefix + ("\n".join([header, *rows]) + "\n").encode()))


_PIX = ",0,64,128,255"
case("csv", "labels '--5' and '3'", lambda t, k: ["data", "inspect", "--data", _csv(t, ["--5" + _PIX, "3" + _PIX] * 6)], 0)
case("csv", "labels '²' and '1'", lambda t, k: ["data", "inspect", "--data", _csv(t, ["²" + _PIX, "1" + _PIX] * 6)], 0)
case("csv", "a 20-digit pixel value",
     lambda t, k: ["data", "inspect", "--data", _csv(t, ["0,0,0,0," + "9" * 20] + ["0" + _PIX, "1" + _PIX] * 6)], 0,
     check=lambda t, out: None if "row 2" in out else "the bad row is not named")
case("csv", "one class only", lambda t, k: ["data", "inspect", "--data", _csv(t, ["4" + _PIX] * 12)], 1, "at least 2")
case("csv", "UTF-8 byte-order mark (Excel)",
     lambda t, k: ["data", "inspect", "--data", _csv(t, ["0" + _PIX, "1" + _PIX] * 6, prefix=b"\xef\xbb\xbf")], 0)
case("csv", "header only", lambda t, k: ["data", "inspect", "--data", _csv(t, [])], 1, "no rows")
case("csv", "train: header only", lambda t, k: ["train", "--data", _csv(t, []), *QUICK_SETS, "--run-dir",
                                                str(t / "run")], 1, "no rows")

# MLflow URIs, config copy --------------------------------------------------------------------------
_ML = ["train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--device", "cpu", "--set", "log.mlflow=true"]
case("mlflow", "URI is a file", lambda t, k: [*_ML, "--set", f"log.mlflow_uri={_w(t, 'afile', 'x')}",
                                              "--run-dir", str(t / "run")], 2, "mlflow_uri", no_new=".")
case("mlflow", "URI of an unknown scheme", lambda t, k: [*_ML, "--set", "log.mlflow_uri=foo://bar",
                                                         "--run-dir", str(t / "run")], 2, "mlflow_uri", no_new=".")
case("mlflow", "URI below /proc", lambda t, k: [*_ML, "--set", "log.mlflow_uri=/proc/convtrain-mlruns",
                                                "--run-dir", str(t / "run")], 2, "mlflow_uri", no_new=".")
case("config", "copy to a 255-character name", lambda t, k: ["config", "copy", "smoke", str(t / ("a" * 251 + ".yaml"))],
     2, "too long")
case("config", "copy to a 300-character name", lambda t, k: ["config", "copy", "smoke", str(t / ("a" * 300))],
     2, "too long")



def _mathtext_run(t: Path, k: Kit) -> list[str]:
    run = _copy_run(t, k, "$\\alpha$")
    for png in run.glob("*.png"):
        png.unlink()
    results = json.loads((run / "results.json").read_text())
    results["classes"] = ["$\\foo$", "$x^{", *results["classes"][2:]]
    (run / "results.json").write_text(json.dumps(results))
    return ["plot", str(run)]


case("plot", "class and run names with matplotlib mathtext", _mathtext_run, 0,
     check=lambda t, out: None if (t / "runs" / "$\\alpha$" / "confusion.png").is_file() else "no confusion.png")

IDS = [f"{c.family}: {c.name}" for c in CASES]
assert len(set(IDS)) == len(IDS)


@pytest.fixture(scope="module")
def kit(data_root, tiny_run_source, tmp_path_factory) -> Kit:
    from ..conftest import copy_of
    from ..data.test_own_data import _idx

    run = copy_of(tiny_run_source, tmp_path_factory, "wave2")  # 640 images, one epoch, trained once per suite
    raw = data_root / "MNIST" / "raw"
    return Kit(run, (_idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte")))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.is_dir() else set()


@pytest.mark.parametrize("c", [pytest.param(c, id=i, marks=[pytest.mark.slow] if c.subprocess else [])
                               for c, i in zip(CASES, IDS)])
def test_hostile_wave2(c: Case, kit: Kit, tmp_path: Path, monkeypatch):
    work = tmp_path / "t"
    work.mkdir()
    cache = tmp_path / "cache"
    argv = c.build(work, kit)
    before, tree = snapshot(work, kit.run), _tree(work / c.no_new) if c.no_new else set()
    out = invoke(argv, env={"CONVTRAIN_CACHE_DIR": str(cache)}, timeout=c.timeout, subprocess_=c.subprocess)
    problems = contract_problems(out, (c.code,), c.text, c.timeout)
    problems += [f"pre-existing file {p}" for p in changed_files(before)]
    if c.no_new:
        problems += [f"new file {p}" for p in sorted(_tree(work / c.no_new) - tree)]
    if c.check is not None and out.code is not None:
        problems += [p for p in [c.check(work, out.stdout)] if p]
    assert not problems, f"{c.name}: {'; '.join(problems)}\nargv: {[a[:80] for a in argv]}\nstderr: {out.stderr[-1500:]}"


def test_the_table_covers_the_new_surface():
    families = {c.family for c in CASES}
    assert {"resume", "seeds", "diff", "data", "csv", "mlflow", "config", "plot"} <= families
    assert all(len(c.name) and isinstance(c.code, int) for c in CASES)


# ------------------------------------------------------------------------------------------------
# interrupts are never decode errors, and nothing decided while interrupted is cached

def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(path)
    return path


def _interrupting(*args, **kwargs):
    raise Interrupted("interrupted (SIGINT)")


def test_an_interrupt_inside_a_decode_is_not_an_unreadable_image(tmp_path, monkeypatch):
    good = _png(tmp_path / "a.png")
    monkeypatch.setattr("PIL.Image.open", _interrupting)
    with pytest.raises(Interrupted):
        imagefolder.decode_all([good], 1, 28)
    with pytest.raises(Interrupted):
        images.image_to_input(good, 1, (28, 28))


def test_an_interrupt_while_mnist_loads_is_not_a_truncated_file(data_root, monkeypatch):
    from convtrain.data import mnist

    monkeypatch.setattr(mnist, "read_idx", _interrupting)
    with pytest.raises(Interrupted):
        mnist.load_split("mnist", data_root, True, False)


class _Exploding:
    """A file whose writes raise the interrupt after the first one, as a signal landing in torch.save."""

    def __init__(self, f):
        self.f, self.n = f, 0

    def write(self, b):
        self.n += 1
        if self.n > 1:
            raise Interrupted("interrupted (SIGTERM)")
        return self.f.write(b)

    def flush(self):
        self.f.flush()


def test_an_interrupt_during_the_cache_write_stops_and_leaves_no_temp_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    real = torch.save
    monkeypatch.setattr(datacache.torch, "save", lambda obj, f: real(obj, _Exploding(f)))
    with pytest.raises(Interrupted):
        datacache.save("k" * 64, {"x": torch.zeros(1000)})
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []


def test_a_killed_cache_writes_temp_file_is_removed_by_the_next_write(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "datasets"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = _w(folder, f".{'a' * 40}.pt.tmp-{int(dead.stdout)}", b"half")
    alive = _w(folder, f".{'b' * 40}.pt.tmp-{os.getppid()}", b"someone writing")
    assert datacache.save("c" * 64, {"x": torch.zeros(3)}) is None
    assert not stale.exists() and alive.exists()


def _cache_file(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    files = list((tmp_path / "cache" / "datasets").glob("*.pt"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["missing sizes", "missing ok", "images 14x14", "images float"])
def test_a_cache_file_with_the_right_key_but_wrong_contents_is_decoded_again(kit, tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "f", [(x, y % 2) for x, y in sample(kit.mnist, 20)], names=NAMES2)[0].parents[2]
    cfg = data_cfg(name="folder", root=str(root), val_size=4, test_size=4)
    first = build_data(cfg, 0)
    path = _cache_file(monkeypatch, tmp_path)
    payload = torch.load(path, weights_only=True)
    part = payload["splits"]["train"]
    if damage == "missing sizes":
        del payload["sizes"]
    elif damage == "missing ok":
        del part["ok"]
    elif damage == "images 14x14":
        part["images"] = part["images"][:, :, :14, :14].clone()
    else:
        part["images"] = part["images"].float()
    torch.save(payload, path)
    again = build_data(cfg, 0)
    assert any("ignored the cache file" in n for n in again.notes), again.notes
    assert torch.equal(again.train.images, first.train.images)


def test_the_cache_key_follows_the_loaders_image_size(kit, tmp_path, monkeypatch):
    """Built through the loader, a second image_size decodes again (a key without it would serve 28x28)."""
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "f", [(x, y % 2) for x, y in sample(kit.mnist, 12)], names=NAMES2)[0].parents[2]
    a = build_data(data_cfg(name="folder", root=str(root), val_size=2, test_size=2), 0)
    b = build_data(data_cfg(name="folder", root=str(root), val_size=2, test_size=2, image_size=20), 0)
    c = build_data(data_cfg(name="folder", root=str(root), val_size=2, test_size=2, image_size=20), 0)
    assert a.train.images.shape[-1] == 28 and b.train.images.shape[-1] == 20
    assert any("decoded" in n for n in b.notes) and any("from the cache" in n for n in c.notes)


def test_csv_labels_that_look_numeric_are_not_parsed_as_numbers():
    assert csvdata.class_names(["--5", "3"]) == ["--5", "3"]
    assert csvdata.class_names(["²", "1"]) == ["1", "²"]
    assert csvdata.class_names(["10", "9", "-1"]) == ["-1", "9", "10"]


def test_an_image_that_is_not_a_regular_file_is_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    os.symlink("/dev/zero", tmp_path / "z.png")
    for name in ("x.png", "z.png"):
        with pytest.raises(DataError, match="not a regular file"):
            images.image_to_input(tmp_path / name, 1, (28, 28))


# ------------------------------------------------------------------------------------------------
# SIGTERM while torch / numpy import: "interrupted", 130, never an ImportError or a lost signal

_HOOK = """
import importlib.abc, os, signal, sys
target = sys.argv[1]
class Hook(importlib.abc.MetaPathFinder):
    fired = False
    def find_spec(self, name, path, target_=None):
        if name == target and not Hook.fired:
            Hook.fired = True
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the import of `target`
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["convtrain"] + sys.argv[2:]
from convtrain.cli.app import main
main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("module", ["numpy", "numpy._core._exceptions", "torch.nn", "convtrain.training.runner"])
def test_sigterm_inside_a_start_up_import_is_interrupted(module, tmp_path, data_root):
    """numpy is imported by torch._C's C code, which drops a failed import (the signal was lost, the
    run went on); numpy._core._exceptions is imported by numpy's C init, which is left half done
    ("cannot load module more than once per process" next time: an internal error)."""
    p = subprocess.run([sys.executable, "-c", _HOOK, module, "train", "-c", "configs/smoke.yaml", *QUICK_SETS,
                        "--device", "cpu", "--run-dir", str(tmp_path / "run")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 130, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == ["error: interrupted (SIGTERM)"], p.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# serve: bad requests are JSON answers, gone clients are no traceback, both signals exit 130

def _ignore_sigint():
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background job of a script inherits


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT inherited as ignored"])
def test_serve_under_hostile_clients_and_signals(kit, how):
    import signal
    import socket

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "convtrain", "serve", "--checkpoint",
                             str(kit.run / "checkpoints" / "best.pt"), "--port", "0"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_ignore_sigint if "ignored" in how else None)
    try:
        line = wait_for_line(proc, "serving on", "the server to listen")
        url = line.split("serving on ")[1].split()[0].rstrip("/")
        deep = httpx.post(url + "/v1/predict", content=b"[" * 100_000 + b"]" * 100_000,
                          headers={"content-type": "application/json"}, timeout=30)
        assert deep.status_code == 400 and "nested" in deep.json()["error"], deep.text[:300]
        host, port = url.split("//")[1].rsplit(":", 1)
        for _ in range(5):  # each sends a part of its upload and hangs up
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          b"content-length: 100000\r\n\r\n{\"images\": [")
        assert httpx.get(url + "/healthz", timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "interrupted", err[-3000:]


def test_a_streamed_image_that_breaks_mid_run_is_one_line_not_a_worker_traceback(kit, tmp_path, monkeypatch):
    from convtrain.data.batches import make_batches

    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    files = write_folder(tmp_path / "f", [(x, y % 2) for x, y in sample(kit.mnist, 12)], names=NAMES2)
    bundle = build_data(data_cfg(name="folder", root=str(files[0].parents[2]), val_size=2, test_size=2,
                                 memory_budget_mb=0), 0)
    assert not bundle.tensor_resident
    for f in files:
        f.write_bytes(b"not a png any more")
    batches = make_batches(bundle.train, bundle, "dataloader", 4, torch.device("cpu"), shuffle=True, workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(batches))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "DataLoader worker" not in message, message
    assert "cannot decode image" in message and ".png" in message


_AVERAGE_KILLED = """
import os, signal, sys
import torch
from convtrain.artifacts import checkpoint

real = torch.save
class Killed:
    def __init__(self, f): self.f, self.n = f, 0
    def write(self, b):
        self.n += 1
        if self.n == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # lands inside the write of the output
        return self.f.write(b)
    def flush(self): self.f.flush()
checkpoint.torch.save = lambda obj, f: real(obj, Killed(f))
sys.argv = ["convtrain", "average", "--checkpoints", sys.argv[1], sys.argv[2], "--output", sys.argv[3]]
from convtrain.cli.app import main
main()
"""


@pytest.mark.slow
def test_sigterm_during_average_is_interrupted_and_leaves_no_temp_file(tmp_path):
    from ..training.test_loop_features import _tiny_checkpoint

    a, b = _tiny_checkpoint(tmp_path / "a.pt"), _tiny_checkpoint(tmp_path / "b.pt")
    out = tmp_path / "out" / "avg.pt"
    out.parent.mkdir()
    p = subprocess.run([sys.executable, "-c", _AVERAGE_KILLED, str(a), str(b), str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 130 and p.stderr.strip().startswith("error: interrupted"), (p.returncode, p.stderr[-2000:])
    assert list(out.parent.iterdir()) == []
