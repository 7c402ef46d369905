"""Rules of the checkpoint's users that a broken feature would break, held by fast tests on untrained
checkpoints (no training: each checkpoint takes a fraction of a second). Issue 32's audit planted each
break below and the tests a developer would run for that feature all passed; these fail on it.

Breaks tried (each failed here, then restored):
- ``predict --format kaggle`` writing the class index (``p.index``) instead of the class name: the labels
  were 0/1/2, not zeta/alpha/mid (test_kaggle_labels_are_the_class_names);
- export metadata with mean and std swapped, with the class names sorted, and the CLI dropping
  ``--include-preprocessing`` (test_export_metadata_says_what_the_checkpoint_says,
  test_the_cli_passes_include_preprocessing_to_the_exporter); the preprocessing wrapper normalizing with
  std and mean swapped (test_the_preprocessing_wrapper_equals_the_checkpoints_normalization);
- the API's predict ignoring the invert rule (``invert_rule`` returning its argument): an MNIST-style model's
  ``auto`` no longer equalled ``yes``; ``effective_invert`` inverting for every model: a CSV model's ``auto``
  no longer equalled ``no`` (test_the_apis_invert_rule_follows_the_models_data).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import convtrain
from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.config.schema import RunConfig, to_dict
from convtrain.models import create_model

runner = CliRunner()
LETTERS = ["zeta", "alpha", "mid"]  # not sorted, and not the indices: an index or a sorted list shows


def untrained(path: Path, dataset: str = "csv", classes: list[str] = LETTERS, mean=(0.25,), std=(0.5,)) -> Path:
    """An untrained article_cnn checkpoint of ``dataset`` with ``classes`` (distinct mean and std)."""
    torch.manual_seed(0)
    cfg = RunConfig()
    cfg.data.name = dataset
    model = create_model("article_cnn", num_classes=len(classes))
    ckpt = checkpoint.build(model, model_name="article_cnn", model_kwargs={}, classes=list(classes), in_channels=1,
                            input_size=(28, 28), mean=list(mean), std=list(std), dataset=dataset,
                            config=to_dict(cfg), epoch=1, metrics={"val_acc": 0.5})
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(ckpt, path)
    return path


def dark_on_light(path: Path) -> Path:
    """A digit drawn as on paper: dark ink, light border (invert=auto turns it around for MNIST models)."""
    pixels = torch.full((28, 28), 235, dtype=torch.uint8)
    pixels[6:22, 12:16] = 20
    Image.fromarray(pixels.numpy()).save(path)
    return path


def test_kaggle_labels_are_the_class_names(tmp_path):
    ckpt = untrained(tmp_path / "csv.pt")
    rows = ["pixel" + ",pixel".join(str(i) for i in range(784))]
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        rows.append(",".join(map(str, torch.randint(0, 256, (784,), generator=g).tolist())))
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["predict", "--checkpoint", str(ckpt), str(test_csv), "--output", str(tmp_path / "sub.csv"),
                            "--format", "kaggle", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "sub.csv", newline="") as f:
        submission = list(csv.reader(f))
    assert submission[0] == ["ImageId", "Label"]
    expected = [p.label for p in convtrain.predict(ckpt, test_csv, device="cpu")]
    assert [row[1] for row in submission[1:]] == expected and set(expected) <= set(LETTERS)
    assert [row[0] for row in submission[1:]] == [str(i) for i in range(1, 7)]


def test_export_metadata_says_what_the_checkpoint_says(tmp_path):
    from convtrain.inference.export import metadata

    loaded = checkpoint.open_checkpoint(untrained(tmp_path / "a.pt", mean=(0.25,), std=(0.5,)))
    for preprocessing in (False, True):
        meta = metadata(loaded, preprocessing)
        assert json.loads(meta["classes"]) == LETTERS  # the model's order: output i is class i
        assert json.loads(meta["mean"]) == [0.25] and json.loads(meta["std"]) == [0.5]
        assert json.loads(meta["input_size"]) == [28, 28] and meta["channels"] == "1"
        assert json.loads(meta["includes_preprocessing"]) is preprocessing
        assert meta["dataset"] == "csv" and "as in the training images" in meta["ink"]


def test_the_preprocessing_wrapper_equals_the_checkpoints_normalization(tmp_path):
    from convtrain.inference.export import WithPreprocessing

    loaded = checkpoint.open_checkpoint(untrained(tmp_path / "a.pt", mean=(0.25,), std=(0.5,)))
    model = loaded.rebuild().eval()
    pixels = torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(loaded.normalizer("cpu")(pixels))
        got = WithPreprocessing(model, loaded.mean, loaded.std).eval()(pixels.float() / 255)
    assert torch.allclose(got, expected, atol=1e-5)


def test_the_cli_passes_include_preprocessing_to_the_exporter(tmp_path, monkeypatch):
    from convtrain.inference import export

    seen = []

    def fake(path, fmt, output, data_root, include_preprocessing=False):
        seen.append(include_preprocessing)
        return {"path": "x.pt2", "format": fmt, "max_abs_diff": 0.0, "tolerance": 1e-4, "checked_on": "-",
                "same_predictions": True}

    monkeypatch.setattr(export, "export_checkpoint", fake)
    ckpt = untrained(tmp_path / "a.pt")
    for flags, expected in (([], False), (["--include-preprocessing"], True)):
        r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), *flags])
        assert r.exit_code == 0, r.output
        assert seen.pop() is expected


@pytest.mark.parametrize("dataset, auto_is", [("mnist", "yes"), ("csv", "no"), ("folder", "no")])
def test_the_apis_invert_rule_follows_the_models_data(tmp_path, dataset, auto_is):
    classes = [str(i) for i in range(10)] if dataset == "mnist" else LETTERS
    ckpt = untrained(tmp_path / f"{dataset}.pt", dataset=dataset, classes=classes, mean=(0.1307,), std=(0.3081,))
    image = dark_on_light(tmp_path / "paper.png")
    probs = {how: convtrain.predict(ckpt, image, invert=how, device="cpu")[0].probabilities for how in ("auto", "yes", "no")}
    assert probs["yes"] != probs["no"]  # the test means something: inverting changes the answer
    assert probs["auto"] == probs[auto_is]


def test_eval_split_val_scores_the_images_held_out_with_split_seed(tmp_path, data_root):
    """`eval --split val` scores the very images the run held out: drawn with data.split_seed, not the
    run's seed. Compared by class counts (the confusion matrix's rows) with the val split training draws.
    Break tried (issue 32's audit planted it and no test noticed): evaluate_checkpoint's registered-dataset
    path drawing with ``parsed.seed``: the last check failed (seed 5's split was scored)."""
    from convtrain.config.load import load_config
    from convtrain.config.schema import held_out_seed
    from convtrain.data.sources import build as build_data

    cfg = load_config(None, ["seed=5", "data.split_seed=11", "data.val_size=300", f"data.root={data_root}"])
    torch.manual_seed(0)
    model = create_model("article_cnn", num_classes=10)
    ckpt = checkpoint.build(model, model_name="article_cnn", model_kwargs={}, classes=[str(i) for i in range(10)],
                            in_channels=1, input_size=(28, 28), mean=[0.1307], std=[0.3081], dataset="mnist",
                            config=to_dict(cfg), epoch=1, metrics={"val_acc": 0.1})
    checkpoint.save(ckpt, tmp_path / "best.pt")
    r = runner.invoke(app, ["eval", "--checkpoint", str(tmp_path / "best.pt"), "--split", "val", "--json",
                            "--device", "cpu", "--data-root", str(data_root)])
    assert r.exit_code == 0, r.output
    rows = [sum(row) for row in json.loads(r.stdout)["confusion_matrix"]]
    counts = lambda seed: torch.bincount(build_data(cfg.data, seed).val.labels, minlength=10).tolist()  # noqa: E731
    assert held_out_seed(cfg) == 11 and counts(11) != counts(5)  # the two draws differ: the check can tell
    assert rows == counts(11)
