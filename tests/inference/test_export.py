"""convtrain export: each format is loaded back with its own runtime and checked here, independently."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.config.schema import RunConfig, to_dict
from convtrain.data.mnist import load_split
from convtrain.errors import ConvtrainError
from convtrain.inference.export import export_checkpoint
from convtrain.models import create_model

runner = CliRunner()


@pytest.fixture(scope="module")
def test_images(data_root):
    test = load_split("mnist", data_root, train=False, download=False)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(7))[:37]  # not the export's own batch
    return test.images[idx]


@pytest.fixture
def trained_copy(trained_run, tmp_path):
    """The trained best.pt copied into an empty folder (default outputs land next to it)."""
    return shutil.copy(trained_run / "checkpoints" / "best.pt", tmp_path / "best.pt")


@pytest.fixture
def ckpt_copy(data_root, tmp_path):
    """An untrained article_cnn checkpoint alone in a folder: enough for the refusals, no training needed."""
    torch.manual_seed(0)
    ckpt = checkpoint.build(create_model("article_cnn", num_classes=10), model_name="article_cnn", model_kwargs={},
                            classes=[str(i) for i in range(10)], in_channels=1, input_size=(28, 28), mean=[0.13],
                            std=[0.31], dataset="mnist", config=to_dict(RunConfig()), epoch=1, metrics={})
    checkpoint.save(ckpt, tmp_path / "best.pt")
    return tmp_path / "best.pt"


def _run_exported(fmt, path, x):
    if fmt == "torch-export":
        return torch.export.load(str(path)).module()(x)
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # the user chose torchscript
@pytest.mark.parametrize("fmt, suffix", [("torch-export", ".pt2"), ("torchscript", ".ts"), ("onnx", ".onnx")])
def test_export_round_trip_reproduces_the_checkpoint(trained_copy, test_images, fmt, suffix):
    ckpt_copy = trained_copy
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export is optional: pip install 'convtrain[onnx]'")
        pytest.importorskip("onnxscript", reason="ONNX export is optional: pip install 'convtrain[onnx]'")
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt_copy), "--format", fmt])
    assert result.exit_code == 0, result.output
    out = ckpt_copy.with_suffix(suffix)  # the default output: next to the checkpoint
    assert "same predictions: True" in result.stdout and str(out) in result.stdout
    assert sorted(p.name for p in ckpt_copy.parent.iterdir()) == sorted(["best.pt", out.name])  # no temp file
    ckpt = checkpoint.open_checkpoint(ckpt_copy)
    x = ckpt.normalizer("cpu")(test_images)
    with torch.inference_mode():
        expected = ckpt.rebuild()(x)
        for n in (37, 1):  # the batch dimension is dynamic, a single image included
            got = _run_exported(fmt, out, x[:n])
            assert float((got - expected[:n]).abs().max()) <= 1e-4  # measured: 0 (pt2, ts), ~1e-6 (onnx)
            assert torch.equal(got.argmax(1), expected[:n].argmax(1))


def test_export_refuses_to_overwrite_the_checkpoint_itself(ckpt_copy):
    named_ts = ckpt_copy.rename(ckpt_copy.with_suffix(".ts"))  # a checkpoint named like the default output
    before = named_ts.read_bytes()
    result = runner.invoke(app, ["export", "--checkpoint", str(named_ts), "--format", "torchscript"])
    assert result.exit_code == 2
    assert result.stderr == f"error: the output {named_ts} is the checkpoint itself; give another --output\n"
    assert named_ts.read_bytes() == before and [p.name for p in named_ts.parent.iterdir()] == ["best.ts"]


def test_export_refuses_to_overwrite_another_checkpoint(ckpt_copy):
    other = shutil.copy(ckpt_copy, ckpt_copy.parent / "last.pt")
    before = other.read_bytes()
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt_copy), "--output", str(other)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: the output {other} is a convtrain checkpoint; refusing to overwrite it")
    assert other.read_bytes() == before


@pytest.mark.parametrize("where, code, message", [
    ("missing/m.pt2", 2, "the output folder {d}/missing does not exist; create it first"),
    ("folder", 2, "the output {d}/folder is a directory; give a file name"),
])
def test_export_bad_output_paths(ckpt_copy, where, code, message):
    folder = ckpt_copy.parent
    (folder / "folder").mkdir()
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt_copy), "--output", str(folder / where)])
    assert result.exit_code == code
    assert result.stderr.startswith("error: " + message.format(d=folder)) and len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "folder"] and not any((folder / "folder").iterdir())


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_export_into_unwritable_folder_even_as_root(ckpt_copy):
    # /proc refuses new files for every user, root included
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt_copy), "--format", "torchscript",
                                 "--output", "/proc/convtrain-model.ts"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: could not write /proc/convtrain-model.ts: ")
    assert len(result.stderr.splitlines()) == 1 and [p.name for p in ckpt_copy.parent.iterdir()] == ["best.pt"]


def test_failed_numerical_check_keeps_nothing_and_leaves_old_export(ckpt_copy):
    out = ckpt_copy.with_suffix(".ts")
    out.write_bytes(b"an older export")
    # a negative tolerance fails every comparison: the check is what decides, not the exporter
    with pytest.raises(ConvtrainError, match=r"differs from the checkpoint by 0 on 16 mnist test images .*nothing written"):
        export_checkpoint(ckpt_copy, "torchscript", tolerance=-1.0)
    assert out.read_bytes() == b"an older export"
    assert sorted(p.name for p in ckpt_copy.parent.iterdir()) == ["best.pt", "best.ts"]  # temp file removed


def test_export_unknown_format(ckpt_copy):
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt_copy), "--format", "tflite"])
    assert result.exit_code == 2
    assert result.stderr == "error: --format must be one of torch-export, torchscript, onnx, got 'tflite'\n"
