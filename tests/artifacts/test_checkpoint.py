from __future__ import annotations

import errno
import pickle
import zipfile

import pytest
import torch

from convtrain.artifacts import checkpoint
from convtrain.config.schema import RunConfig, to_dict
from convtrain.errors import CheckpointError
from convtrain.models import create_model

from ..training.test_loop_features import core_state


def _ckpt(model=None, training_state=None):
    model = model or create_model("article_cnn", num_classes=10)
    return checkpoint.build(model, model_name="article_cnn", model_kwargs={}, classes=[str(i) for i in range(10)],
                            in_channels=1, input_size=(28, 28), mean=[0.5], std=[0.5], dataset="mnist",
                            config=to_dict(RunConfig()), epoch=1, metrics={"val_acc": 0.5},
                            training_state=training_state)


def test_round_trip_with_weights_only(tmp_path):
    model = create_model("article_cnn", num_classes=10)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    opt.step()
    path = tmp_path / "last.pt"
    checkpoint.save(_ckpt(model, core_state(optimizer=opt.state_dict(), rng=[checkpoint.rng_state()])), path)
    raw = torch.load(path, weights_only=True)  # no allowlist needed
    assert raw["model"]["name"] == "article_cnn"
    assert raw["normalization"] == {"mean": [0.5], "std": [0.5]}
    assert raw["versions"]["torch"] == str(torch.__version__)
    rebuilt = checkpoint.rebuild_model(checkpoint.load(path))
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), model(x))
    checkpoint.set_rng_state(raw["training_state"]["rng"][0])


class _FillingFile:
    """A real file whose ``write`` fails once ``limit`` bytes are written, as on a full disk."""

    def __init__(self, f, limit, exc):
        self.f, self.left, self.exc = f, limit, exc

    def write(self, data):
        if len(data) > self.left:
            raise self.exc
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _disk_fills_after(monkeypatch, limit, exc):
    import builtins

    monkeypatch.setattr(checkpoint, "open", lambda p, mode="r": _FillingFile(builtins.open(p, mode), limit, exc),
                        raising=False)


@pytest.mark.parametrize("limit", [0, 100, 200_000])  # before the header, inside it, inside the weights
def test_disk_full_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch, limit):
    path = tmp_path / "best.pt"
    checkpoint.save(_ckpt(), path)
    before = path.read_bytes()
    _disk_fills_after(monkeypatch, limit, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError) as info:
        checkpoint.save(_ckpt(), path)
    message = str(info.value)
    assert message.startswith(f"could not save checkpoint {path}: No space left on device;")
    assert message.endswith("previous checkpoint, if any, is intact") and "\n" not in message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


def test_interrupt_during_save_removes_temp_file_and_is_reraised(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(_ckpt(), path)
    before = path.read_bytes()
    # torch's zip writer wraps an exception raised in write() into its own RuntimeError
    _disk_fills_after(monkeypatch, 100_000, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(_ckpt(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("content, expected", [
    (None, "checkpoint not found"),
    (b"", "truncated or not a PyTorch checkpoint"),
    (b"hello, not a checkpoint", "truncated or not a PyTorch checkpoint"),
])
def test_bad_checkpoint_files(tmp_path, content, expected):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        checkpoint.load(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    checkpoint.save(_ckpt(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load(path)


def test_plain_torch_file_is_not_a_convtrain_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a convtrain checkpoint"):
        checkpoint.load(path)


class _Payload:
    """Unpickling this calls ``func(*args)``: each case below would create the marker file."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker):
    import builtins
    import os
    import posix
    import subprocess

    return {
        "os.system": _Payload(os.system, (f"touch {marker}",)),
        "posix.system": _Payload(posix.system, (f"touch {marker}",)),
        "builtins.eval": _Payload(builtins.eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.Popen": _Payload(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.open": _Payload(open, (str(marker), "w")),
    }


@pytest.mark.parametrize("payload", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen", "builtins.open"])
@pytest.mark.parametrize("container", ["torch.save zip", "pickle protocol 2", "pickle protocol 5"])
def test_code_running_checkpoint_is_refused_and_does_not_run(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    evil = {"format": checkpoint.FORMAT, "version": 1, "model": _payloads(marker)[payload]}
    if container == "torch.save zip":
        torch.save(evil, path)
        assert zipfile.is_zipfile(path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=int(container[-1])))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert str(info.value).startswith(f"refusing to load {path}: it could run code")
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # the payload is real: loading it unsafely would have created the marker
    if payload in ("builtins.open", "builtins.eval"):
        pickle.loads(pickle.dumps(evil))
        assert marker.exists()


def test_load_pretrained_reinitialises_head_when_classes_differ():
    ckpt = _ckpt()
    target = create_model("article_cnn", num_classes=4)
    report = checkpoint.load_pretrained(target, ckpt, "auto")
    assert report["reinitialized"] == ["head.weight", "head.bias"]
    assert torch.equal(target.backbone.conv1.weight, ckpt["model"]["state_dict"]["backbone.conv1.weight"])
    with pytest.raises(CheckpointError, match="does not fit"):
        checkpoint.load_pretrained(create_model("lenet5", num_classes=10), ckpt, "auto")


@pytest.mark.slow
def test_code_running_checkpoint_through_the_cli(tmp_path):
    import os

    from ..conftest import run_cli

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "model": _payloads(marker)["os.system"]}, path)
    for argv in (["eval", "--checkpoint", str(path)], ["export", "--checkpoint", str(path)]):
        result = run_cli(*argv)
        assert result.returncode == 1
        assert result.stderr == (f"error: refusing to load {path}: it could run code (its pickle calls {os.system.__module__}.system); "
                                 "convtrain only loads checkpoints of plain data (torch.load weights_only=True)\n")
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


def test_a_checkpoint_records_torchvision_without_importing_it(tmp_path):
    # importing torchvision only for its version cost ~0.2 s of every run's first save
    import importlib.metadata
    import subprocess
    import sys

    code = ("import sys; from tests.artifacts.test_checkpoint import _ckpt; from convtrain.artifacts import checkpoint\n"
            f"checkpoint.save(_ckpt(), {str(tmp_path / 'a.pt')!r}); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=__import__("pathlib").Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
    raw = torch.load(tmp_path / "a.pt", weights_only=True)
    assert raw["versions"]["torchvision"] == importlib.metadata.version("torchvision")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_checkpoint_that_is_a_pipe_or_a_device_is_refused_without_reading(tmp_path, kind):
    """Reading a FIFO waits for a writer forever (`--checkpoint` naming one hung until killed), /dev/zero
    never ends. Checked in a thread with a time limit, so a broken build fails instead of hanging; a
    writer then opens the FIFO so a blocked reader returns. Break tried: the regular-file check in
    checkpoint._read removed: neither read returned within 20 s (the FIFO's not even once a writer came)."""
    import os
    import threading

    path = tmp_path / "best.pt"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            checkpoint.open_checkpoint(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive() and kind == "fifo":
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked reader go (it reads nothing)
        reader.join(5)
    assert outcome, f"reading {path} did not return within 20 s"
    assert isinstance(outcome[0], CheckpointError) and "not a regular file" in str(outcome[0]), outcome
