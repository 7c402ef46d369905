"""Issue #22: datasets as people ship them (Kaggle's train.csv/test.csv, Roboflow's valid/), predictions
to a file (csv, json, a Kaggle submission), and one test set for a --seeds sweep. Real MNIST images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app
from convtrain.config.schema import from_dict, held_out_seed, saved_raw
from convtrain.config.yamlsafe import read_yaml

from ..conftest import REPO
from ..data.test_own_data import mnist, sample, write_folder  # noqa: F401 - mnist is a fixture

cli = CliRunner()


def invoke(*args: str):
    """In-process CLI (no interpreter start-up); exit codes and streams as the command produces them."""
    return cli.invoke(app, list(args))


TINY = ["--set", "model.name=lenet5", "--set", "train.epochs=1", "--set", "train.batch_size=32", "--device", "cpu",
        "--set", "log.plots=false"]


def write_kaggle(folder: Path, items, test_items) -> None:
    """Kaggle digit-recognizer layout: train.csv (label,pixel0..783) and an unlabelled test.csv (pixel0..783)."""
    folder.mkdir(parents=True)
    pixels = [f"pixel{i}" for i in range(784)]
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *pixels])
        w.writerows([[label, *img.ravel().tolist()] for img, label in items])
    with open(folder / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(pixels)
        w.writerows([img.ravel().tolist() for img, _ in test_items])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVTRAIN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.slow
def test_kaggle_folder_trains_and_predict_writes_a_submission_csv_and_json(mnist, tmp_path):  # noqa: F811
    items = sample(mnist, 900)
    write_kaggle(tmp_path / "kaggle", items[:800], items[800:])
    run = tmp_path / "run"
    r = invoke("train", "--data", str(tmp_path / "kaggle"), *TINY, "--run-dir", str(run))
    assert r.exit_code == 0, r.output
    log = (run / "train.log").read_text()
    assert "test.csv has no label column: not used as the test split" in log
    cfg = read_yaml(run / "config.yaml")
    assert (cfg["data"]["name"], Path(cfg["data"]["root"]).name) == ("csv", "train.csv")
    results = json.loads((run / "results.json").read_text())
    assert results["test_num_samples"] == 80  # held out of train.csv (0.1), not the unlabelled test.csv

    best, test_csv = run / "checkpoints" / "best.pt", tmp_path / "kaggle" / "test.csv"
    sub = tmp_path / "submission.csv"
    r = invoke("predict", "--checkpoint", str(best), str(test_csv), "--output", str(sub), "--format", "kaggle",
                "--batch-size", "32", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(sub.open()))
    assert rows[0] == ["ImageId", "Label"] and len(rows) == 101
    assert [int(x[0]) for x in rows[1:]] == list(range(1, 101))
    labels = np.array([int(x[1]) for x in rows[1:]])
    truth = np.array([label for _, label in items[800:]])
    assert (labels == truth).mean() > 0.5  # 800 images, one epoch: measured 0.72 (chance is 0.1)

    js = tmp_path / "preds.json"
    r = invoke("predict", "--checkpoint", str(best), str(test_csv), "--output", str(js), "--top-k", "2",
                "--batch-size", "7", "--device", "cpu")
    assert r.exit_code == 0, r.output
    found = json.loads(js.read_text())
    assert [x["row"] for x in found] == list(range(1, 101))
    assert [int(x["label"]) for x in found] == labels.tolist()  # batches of 7 give the same answers as of 32
    assert all(len(x["topk"]) == 2 and x["prob"] == x["topk"][0]["prob"] for x in found)


@pytest.mark.slow
def test_predict_writes_one_csv_row_per_image_of_a_nested_folder(mnist, tmp_path):  # noqa: F811
    data = tmp_path / "d"
    write_folder(data, sample(mnist, 120))
    run = tmp_path / "run"
    r = invoke("train", "--data", str(data), *TINY, "--set", "train.max_steps_per_epoch=2", "--run-dir", str(run))
    assert r.exit_code == 0, r.output
    photos = tmp_path / "photos"
    write_folder(photos / "deep" / "er", sample(mnist, 5, seed=1))  # photos/deep/er/train/<class>/img*.png
    (photos / "notes.txt").write_text("not an image")
    (photos / "b.TIF").write_bytes((next((photos / "deep").rglob("*.png"))).read_bytes())  # suffix case
    preds = tmp_path / "p.csv"
    r = invoke("predict", "--checkpoint", str(run / "checkpoints" / "best.pt"), str(photos), "--output", str(preds),
               "--device", "cpu")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 6 and list(rows[0]) == ["path", "row", "label", "index", "prob", "topk"]
    assert sum(r["path"].endswith(".png") for r in rows) == 5 and rows[0]["path"].endswith("b.TIF")
    names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert all(r["label"] in names and 0 < float(r["prob"]) <= 1 for r in rows)
    assert all(len(r["topk"].split(";")) == 3 for r in rows)
    # visualize without an IMAGE takes the first test image of the folder it was trained on ...
    r = invoke("visualize", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--output-dir", str(tmp_path / "v"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "v" / "kernels.png").is_file()
    # ... or says what it needs when that folder is gone
    data.rename(tmp_path / "gone")
    r = invoke("visualize", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--output-dir", str(tmp_path / "w"))
    assert r.exit_code == 1 and "first test image of the training data" in r.output and "pass an IMAGE file" in r.output
    # a bad input leaves no file behind, and an earlier file untouched
    before = preds.read_text()
    r = invoke("predict", "--checkpoint", str(run / "checkpoints" / "best.pt"), str(tmp_path / "missing.png"),
               "--output", str(preds))
    assert r.exit_code == 1 and "image not found" in r.output and preds.read_text() == before


def test_valid_folder_is_the_val_split_and_unknown_folders_are_named(mnist, tmp_path):  # noqa: F811
    data = tmp_path / "robo"
    items = sample(mnist, 160)
    write_folder(data, items[:120], "train")
    write_folder(data, items[120:150], "valid")
    write_folder(data, items[150:], "extra")
    r = invoke("data", "inspect", "--data", str(data), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["splits"]["val"] == {**out["splits"]["val"], "images": 30, "held_out": False}
    assert out["splits"]["train"]["images"] == 108  # 120 less the 0.1 held out as test; val is not taken from it
    assert out["folders"] == {"train": "train", "val": "valid"} and out["unknown_folders"] == ["extra"]
    assert any("val split is" in n and "valid/" in n for n in out["notes"])
    assert any("not used: folder(s) extra/" in n for n in out["notes"])
    text = invoke("data", "inspect", "--data", str(data))
    assert "not used" in text.stdout and "extra/" in text.stdout
    write_folder(data, items[150:], "validation")
    r = invoke("data", "inspect", "--data", str(data))
    assert r.exit_code == 1 and "2 validation folders (valid/, validation/)" in r.output


def test_a_labelled_test_csv_beside_train_csv_is_the_test_split(mnist, tmp_path):  # noqa: F811
    from convtrain.data.sources import build

    items = sample(mnist, 60)
    write_kaggle(tmp_path / "k", items[:50], [])
    with open(tmp_path / "k" / "test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["label", *[f"pixel{i}" for i in range(784)]],
                                 *[[label, *img.ravel().tolist()] for img, label in items[50:]]])
    b = build(from_dict({"data": {"name": "csv", "root": str(tmp_path / "k" / "train.csv")}}).data, 0)
    assert len(b.test) == 10 and not any("no label column" in n for n in b.notes)


@pytest.mark.slow
def test_seeds_share_one_test_set_and_runs_lists_the_sweep_as_one_row(mnist, tmp_path):  # noqa: F811
    data = tmp_path / "d"
    write_folder(data, sample(mnist, 200))
    sweep = tmp_path / "runs" / "sweep"
    steps = ["--set", "train.max_steps_per_epoch=2"]
    r = invoke("train", "--data", str(data), *TINY, *steps, "--seeds", "0,1", "--run-dir", str(sweep))
    assert r.exit_code == 0, r.output
    assert "test set: the same images for every seed" in r.stdout
    results = [json.loads((sweep / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [x["split_seed"] for x in results] == [0, 0]
    assert results[0]["test_fingerprint"] == results[1]["test_fingerprint"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["test_set"] == {"split_seeds": [0], "fingerprint": results[0]["test_fingerprint"],
                                   "same_for_all_seeds": True}
    # data.split_seed=null is the old behaviour: each seed holds out other images (and the summary says so)
    old = tmp_path / "runs" / "old"
    r = invoke("train", "--data", str(data), *TINY, *steps, "--set", "data.split_seed=null", "--seeds", "0,1",
                "--run-dir", str(old))
    assert r.exit_code == 0, r.output
    assert json.loads((old / "summary.json").read_text())["test_set"]["same_for_all_seeds"] is False
    assert "test set: differs between seeds" in r.stdout

    listed = json.loads(invoke("runs", str(tmp_path / "runs"), "--json").stdout)
    assert sorted((x["name"], x["kind"], x["seeds"]) for x in listed) == [("old", "sweep", [0, 1]),
                                                                          ("sweep", "sweep", [0, 1])]
    one = next(x for x in listed if x["name"] == "sweep")
    assert [s["name"] for s in one["runs"]] == ["seed-0", "seed-1"]
    assert one["test_acc"] == pytest.approx(summary["test_accuracy"]["mean"])
    assert one["summary"]["test_set"]["same_for_all_seeds"] is True
    table = invoke("runs", str(tmp_path / "runs")).stdout
    assert "sweep (2 seeds)" in table and "  seed-1" in table


def test_a_saved_config_without_split_seed_holds_out_with_its_seed():
    raw = read_yaml(REPO / "tests" / "fixtures" / "run-52beffa" / "config.yaml")
    assert "split_seed" not in raw["data"]
    assert held_out_seed(from_dict(saved_raw(raw))) == 3  # the old run's seed, as it held out its images
    assert held_out_seed(from_dict({"seed": 3})) == 0  # a new config: the fixed default
