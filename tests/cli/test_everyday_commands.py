"""predict, runs, plot, export, visualize, TensorBoard, --help examples."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.data import batches as data
from convtrain.data.mnist import load_split

from ..conftest import run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def digits(data_root, tmp_path_factory):
    """12 MNIST test images as PNG files, plus the images themselves."""
    folder = tmp_path_factory.mktemp("digits")
    test = load_split("mnist", data_root, train=False, download=False)
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:12]
    images = test.images[idx]
    for i, img in enumerate(images):
        Image.fromarray(img[0].numpy()).save(folder / f"digit{i:02d}.png")
    return folder, images


def _model_predictions(ckpt_path, images):
    ckpt = checkpoint.load(ckpt_path)
    model = checkpoint.rebuild_model(ckpt).eval()
    norm = data.Normalizer(ckpt["normalization"]["mean"], ckpt["normalization"]["std"], torch.device("cpu"))
    with torch.inference_mode():
        return model(norm(images)).argmax(1).tolist()


def test_predict_pngs_match_the_checkpoints_own_prediction(trained_run, digits):
    folder, images = digits
    best = trained_run / "checkpoints" / "best.pt"
    result = runner.invoke(app, ["predict", "--checkpoint", str(best), str(folder), "--top-k", "3", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)
    assert [p["path"] for p in preds] == [str(folder / f"digit{i:02d}.png") for i in range(12)]
    assert [p["index"] for p in preds] == _model_predictions(best, images)
    for p in preds:
        assert len(p["topk"]) == 3 and p["topk"][0]["index"] == p["index"]
        assert p["topk"][0]["label"] == p["label"] == str(p["index"])
        assert 0 <= p["topk"][1]["prob"] <= p["topk"][0]["prob"] <= 1


def test_predict_reads_a_folder_with_the_suffixes_training_reads(trained_run, digits, tmp_path):
    """One suffix list: a .tif and an upper-case .TIFF in a folder are predicted, as folder training reads them."""
    folder, images = digits
    for i, suffix in enumerate((".tif", ".TIFF", ".png")):
        Image.fromarray(images[i, 0].numpy()).save(tmp_path / f"d{i}{suffix}", format="TIFF" if i < 2 else "PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    best = trained_run / "checkpoints" / "best.pt"
    result = runner.invoke(app, ["predict", "--checkpoint", str(best), str(tmp_path), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)
    assert [Path(p["path"]).name for p in preds] == ["d0.tif", "d1.TIFF", "d2.png"]
    assert [p["index"] for p in preds] == _model_predictions(best, images[:3])


def test_predict_large_dark_on_light_image_is_inverted_and_resized(trained_run, digits, tmp_path):
    folder, images = digits
    best = trained_run / "checkpoints" / "best.pt"
    paper = Image.fromarray(255 - images[0, 0].numpy()).resize((112, 112), Image.NEAREST)
    paper.save(tmp_path / "paper.png")
    paper.convert("RGB").save(tmp_path / "paper.jpg", quality=95)
    result = runner.invoke(app, ["predict", "--checkpoint", str(best), str(tmp_path / "paper.png"),
                                 str(tmp_path / "paper.jpg"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    labels = [p["index"] for p in json.loads(result.stdout)]
    assert labels == [_model_predictions(best, images[:1])[0]] * 2
    table = runner.invoke(app, ["predict", "--checkpoint", str(best), str(tmp_path / "paper.png")])
    assert table.exit_code == 0 and "top class" in table.stdout


def test_predict_undecodable_image(trained_run, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = runner.invoke(app, ["predict", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"), str(bad)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot decode image") and len(result.stderr.strip().splitlines()) == 1


def test_runs_lists_finished_and_interrupted(trained_run, tmp_path):
    shutil.copytree(trained_run, tmp_path / "a-finished")
    shutil.copytree(trained_run, tmp_path / "b-interrupted")
    (tmp_path / "b-interrupted" / "results.json").write_text(json.dumps({"status": "interrupted", "epoch": 1}))
    shutil.copytree(trained_run, tmp_path / "c-killed")
    (tmp_path / "c-killed" / "results.json").unlink()  # kill -9: no results.json at all
    (tmp_path / "not-a-run").mkdir()
    result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"a-finished", "b-interrupted", "c-killed"}
    assert rows["a-finished"]["status"] == "finished" and rows["a-finished"]["test_acc"] >= 0.97
    assert rows["b-interrupted"]["status"] == "interrupted" and rows["c-killed"]["status"] == "interrupted"
    assert rows["a-finished"]["model"] == "article_cnn" and rows["a-finished"]["epochs"] == 1
    listing = json.loads(result.stdout)
    assert [r["created"] for r in listing] == sorted((r["created"] for r in listing), reverse=True)  # newest first
    table = runner.invoke(app, ["runs", str(tmp_path)])
    assert "finished" in table.stdout and "interrupted" in table.stdout


def test_training_wrote_plots_and_plot_command(trained_run, tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    assert Image.open(trained_run / "curves.png").size == (1200, 450)  # written at the end of training
    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "curves.png").unlink()
    (run / "confusion.png").unlink()
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert Image.open(run / "curves.png").size == (1200, 450)
    assert Image.open(run / "confusion.png").size == (700, 600)
    assert (run / "confusion.png").stat().st_size > 10_000


def test_visualize_kernels_and_feature_maps(trained_run, digits, tmp_path):
    folder, _ = digits
    result = runner.invoke(app, ["visualize", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"),
                                 str(folder / "digit00.png"), "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # 32 kernels of 3x3 enlarged 8x, 8 per row with 2-pixel gaps: 8*24+9*2 by 4*24+5*2
    assert Image.open(tmp_path / "kernels.png").size == (210, 106)
    assert Image.open(tmp_path / "featuremaps_backbone_conv1.png").size == (242, 122)  # 32 maps of 28x28
    assert Image.open(tmp_path / "featuremaps_backbone_conv2.png").size == (242, 242)  # 64 maps of 14x14, x2
    pixels = torch.tensor(np.asarray(Image.open(tmp_path / "kernels.png").convert("L")), dtype=torch.float)
    assert pixels.std() > 10  # not a blank picture
    default = runner.invoke(app, ["visualize", "--checkpoint", str(trained_run / "checkpoints" / "best.pt"),
                                  "--output-dir", str(tmp_path / "default")])
    assert default.exit_code == 0 and (tmp_path / "default" / "kernels.png").stat().st_size > 0


@pytest.mark.slow
def test_tensorboard_event_files(data_root, tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    result = run_cli("train", "-c", "configs/smoke.yaml", "--set", "data.train_subset=640", "--set", "data.val_size=200",
                     "--set", "data.test_subset=200", "--set", "train.epochs=2", "--set", "log.tensorboard=true",
                     "--set", "log.plots=false", "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss_step", "train/lr", "train/loss", "val/acc", "val/loss"} <= tags
    assert len(acc.Scalars("train/loss_step")) == 20  # 10 steps x 2 epochs, one point per step
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2]


@pytest.mark.parametrize("command", ["train", "eval", "finetune", "models", "conv", "predict", "runs", "plot",
                                     "export", "visualize", "config show", "config keys"])
def test_every_command_help_has_an_example(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Example: convtrain " in result.stdout


def _png_header(width, height):
    """A PNG that declares width x height pixels in a few dozen bytes (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_image_to_input_same_result_from_path_bytes_and_file(digits, tmp_path):
    from convtrain.data.images import image_to_input

    folder, images = digits
    path = folder / "digit03.png"
    from_path = image_to_input(path, 1, (28, 28))
    assert from_path.dtype == torch.uint8 and torch.equal(from_path, images[3])  # MNIST in, MNIST out
    with open(path, "rb") as f:
        assert torch.equal(image_to_input(f, 1, (28, 28)), from_path)
    assert torch.equal(image_to_input(path.read_bytes(), 1, (28, 28), "auto", name="upload.png"), from_path)
    rgb = image_to_input(path.read_bytes(), 3, (14, 14), "no")
    assert rgb.shape == (3, 14, 14) and torch.equal(rgb[0], rgb[2])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained article_cnn saved as RUN/checkpoints/best.pt next to RUN/config.yaml (no training needed)."""
    from convtrain.config.schema import RunConfig, to_dict, to_yaml
    from convtrain.models import create_model

    run = tmp_path_factory.mktemp("tiny") / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(RunConfig()))
    ckpt = checkpoint.build(create_model("article_cnn", num_classes=10), model_name="article_cnn", model_kwargs={},
                            classes=[str(i) for i in range(10)], in_channels=1, input_size=(28, 28), mean=[0.13],
                            std=[0.31], dataset="mnist", config=to_dict(RunConfig()), epoch=1, metrics={})
    checkpoint.save(ckpt, run / "checkpoints" / "best.pt")
    return run


def test_image_limits_are_one_data_error_naming_the_image(tiny_run, tmp_path):
    from convtrain.data.images import image_to_input
    from convtrain.errors import DataError

    bomb = tmp_path / "bomb.png"
    for (w, h), size in (((8000, 8000), "8000x8000 = 64 Mpx"), ((20000, 20000), "400 Mpx")):
        # under Pillow's own limit we read the size from the header; above it, from Pillow's refusal
        bomb.write_bytes(_png_header(w, h))
        result = runner.invoke(app, ["predict", "--checkpoint", str(tiny_run / "checkpoints" / "best.pt"), str(bomb)])
        assert result.exit_code == 1
        assert result.stderr == f"error: image {bomb} is {size}, over the limit of 50 Mpx\n"
    # above our own limit, Pillow's decompression-bomb guard (warning at 89 Mpx, error at 179) is also an error
    for side in (10000, 20000):
        with pytest.raises(DataError, match=r"^image upload.png is too large to decode safely"):
            image_to_input(_png_header(side, side), 1, (28, 28), name="upload.png", max_pixels=10**12)
    with pytest.raises(DataError, match=rf"^image {bomb} is 6.5e-05 MB, over the limit of 5e-05 MB$"):
        image_to_input(bomb, 1, (28, 28), max_bytes=50)
    with pytest.raises(DataError, match=r"^image upload.png is over the limit of 5e-05 MB$"):
        image_to_input(bomb.read_bytes(), 1, (28, 28), name="upload.png", max_bytes=50)
    with pytest.raises(DataError, match=r"^cannot decode image upload.png: "):
        image_to_input(b"GIF89a garbage", 1, (28, 28), name="upload.png")


def test_eval_class_count_branch(tmp_path):
    from convtrain.config.schema import RunConfig, to_dict
    from convtrain.models import create_model

    classes = ["a", "b", "c", "d"]
    four = checkpoint.build(create_model("article_cnn", num_classes=4), model_name="article_cnn", model_kwargs={},
                            classes=classes, in_channels=1, input_size=(28, 28), mean=[0.1], std=[0.3],
                            dataset="mnist", config=to_dict(RunConfig()), epoch=1, metrics={})
    path = tmp_path / "four.pt"
    checkpoint.save(four, path)
    for extra in ([], ["--dataset", "fashion_mnist"]):
        result = runner.invoke(app, ["eval", "--checkpoint", str(path), *extra])
        name = extra[1] if extra else "mnist"
        assert result.exit_code == 1
        assert result.stderr == (f"error: {path} predicts 4 classes but dataset '{name}' has 10; "
                                 "fine-tune it first (convtrain finetune)\n")


def test_visualize_default_folder_inside_and_outside_a_run(tiny_run, digits, tmp_path):
    folder, _ = digits
    trained_run = tiny_run
    run = shutil.copytree(tiny_run, tmp_path / "run")
    loose = tmp_path / "downloads" / "models"
    loose.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "best.pt", loose / "mnist.pt")
    no_run = tmp_path / "norun" / "checkpoints"
    no_run.mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "best.pt", no_run / "best.pt")  # a checkpoints/ folder, no config.yaml
    expected = {run / "checkpoints" / "best.pt": run / "visualize",
                loose / "mnist.pt": loose / "mnist-visualize",
                no_run / "best.pt": no_run / "best-visualize"}
    for ckpt, out in expected.items():
        result = runner.invoke(app, ["visualize", "--checkpoint", str(ckpt), str(folder / "digit00.png")])
        assert result.exit_code == 0, result.output
        assert f"wrote {out / 'kernels.png'}" in result.stdout
        assert sorted(p.name for p in out.iterdir()) == ["featuremaps_backbone_conv1.png",
                                                          "featuremaps_backbone_conv2.png", "kernels.png"]
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["models"]  # nothing two folders up
    assert sorted(p.name for p in (tmp_path / "norun").iterdir()) == ["checkpoints"]


def test_visualize_bad_output_folder(tiny_run, digits, tmp_path):
    folder, _ = digits
    (tmp_path / "afile").write_text("x")
    best = str(tiny_run / "checkpoints" / "best.pt")
    for out, message in ((tmp_path / "afile", f"the output folder {tmp_path / 'afile'} is a file"),
                         (tmp_path / "no" / "such" / "dir", f"the output folder's parent {tmp_path / 'no' / 'such'} does not exist")):
        result = runner.invoke(app, ["visualize", "--checkpoint", best, str(folder / "digit00.png"), "--output-dir", str(out)])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"error: {message}") and len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_visualize_unwritable_output_folder(tiny_run, digits):
    folder, _ = digits
    result = runner.invoke(app, ["visualize", "--checkpoint", str(tiny_run / "checkpoints" / "best.pt"),
                                 str(folder / "digit00.png"), "--output-dir", "/proc/convtrain-visualize"])
    assert result.exit_code == 1  # /proc refuses new folders for every user, root included
    assert result.stderr.startswith("error: cannot create the output folder /proc/convtrain-visualize: ")
    assert len(result.stderr.splitlines()) == 1


