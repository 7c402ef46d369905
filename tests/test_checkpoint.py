from __future__ import annotations

import errno
import pickle
import zipfile

import pytest
import torch

from convtrain import checkpoint
from convtrain.config import RunConfig, to_dict
from convtrain.errors import CheckpointError
from convtrain.models import create_model


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
    checkpoint.save(_ckpt(model, {"optimizer": opt.state_dict(), "rng": checkpoint.rng_state()}), path)
    raw = torch.load(path, weights_only=True)  # no allowlist needed
    assert raw["model"]["name"] == "article_cnn"
    assert raw["normalization"] == {"mean": [0.5], "std": [0.5]}
    assert raw["versions"]["torch"] == str(torch.__version__)
    rebuilt = checkpoint.rebuild_model(checkpoint.load(path))
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(rebuilt(x), model(x))
    checkpoint.set_rng_state(raw["training_state"]["rng"])


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    checkpoint.save(_ckpt(), path)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint.*intact"):
        checkpoint.save(_ckpt(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left behind


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
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": _Payload(str(marker))}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        checkpoint.load(path)
    assert not marker.exists()


def test_raw_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
    assert not marker.exists()


def test_load_pretrained_reinitialises_head_when_classes_differ():
    ckpt = _ckpt()
    target = create_model("article_cnn", num_classes=4)
    report = checkpoint.load_pretrained(target, ckpt, "auto")
    assert report["reinitialized"] == ["head.weight", "head.bias"]
    assert torch.equal(target.backbone.conv1.weight, ckpt["model"]["state_dict"]["backbone.conv1.weight"])
    with pytest.raises(CheckpointError, match="does not fit"):
        checkpoint.load_pretrained(create_model("lenet5", num_classes=10), ckpt, "auto")
