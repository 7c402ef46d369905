"""`convtrain eval --report`: its numbers against scikit-learn on the same predictions (a folder dataset
and MNIST), its galleries (every mistake is one the model really makes, in order of confidence, with
the file / CSV row / .npz index / MNIST index it came from), and a report.html that loads nothing and
shows markup in class names as text.

The predictions scikit-learn scores are made here, independently of the report: the checkpoint's model
run on the split's images (MNIST: read from its IDX files by hand).

Breaks tried (each failed here): the mistakes sorted by the probability of the true class instead of
the predicted one; the least confident correct images sorted highest first; an origin that forgot the
hold-out permutation (Split.take without the origin: the gallery then names the wrong file); CSV rows
counted from the first data row instead of the file's line; class names put into report.html
unescaped; report.html with a stylesheet <link>; the report's macro average over the classes with
images only.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convtrain

from ..conftest import run_cli
from ..data.test_own_data import _idx, sample, write_folder

pytestmark = pytest.mark.slow
sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn checks the numbers: pip install 'convtrain[test]'")

# class folders: digit names, two of them markup (valid folder names, HTML if parsed as such)
NAMES = ["<img src=x onerror=alert(1)>", "<b>one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def mnist(data_root):
    raw = data_root / "MNIST" / "raw"
    return _idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def folder_run(mnist, tmp_path_factory):
    """A checkpoint of 10 markup-named classes trained for one epoch on 1200 MNIST images in folders (test/:
    400 others), and its default report (eval --report alone: RUN/report)."""
    base = tmp_path_factory.mktemp("report")
    env = {"CONVTRAIN_CACHE_DIR": str(base / "cache")}
    write_folder(base / "digits", sample(mnist, 1200, seed=0), names=NAMES)
    write_folder(base / "digits", sample(mnist, 400, seed=1)[:400], "test", names=NAMES)
    run = base / "run"
    r = run_cli("train", "--data", str(base / "digits"), "--device", "cpu", "--set", "train.epochs=1",
                "--set", "log.plots=false", "--run-dir", str(run), env=env)
    assert r.returncode == 0, r.stderr + r.stdout
    r = run_cli("eval", "--checkpoint", str(run), "--report", "--mistakes", "12", "--device", "cpu", env=env)
    assert r.returncode == 0, r.stderr
    assert f"report: {run / 'report' / 'report.html'}" in r.stdout
    return run, base


def _model_predictions(ckpt: Path, images: torch.Tensor) -> torch.Tensor:
    """The checkpoint's predicted class of uint8 [N, 1, 28, 28] images, outside the report's code path."""
    loaded = convtrain.load(ckpt)
    mean, std = torch.tensor(loaded.mean).view(1, -1, 1, 1), torch.tensor(loaded.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return loaded.model((images.float() / 255 - mean) / std).argmax(1)


def _check_against_sklearn(report: dict, y: list[int], p: list[int]) -> None:
    classes = list(range(len(report["classes"])))
    theirs = sklearn_metrics.classification_report(y, p, labels=classes, output_dict=True, zero_division=0)
    for row in report["per_class"]:
        sk = theirs[str(row["index"])]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(
            (sk["precision"], sk["recall"], sk["f1-score"]), abs=1e-12)
        assert row["support"] == sk["support"]
    for avg in ("macro", "weighted"):
        sk = theirs[f"{avg} avg"]
        assert (report[avg]["precision"], report[avg]["recall"], report[avg]["f1"]) == pytest.approx(
            (sk["precision"], sk["recall"], sk["f1-score"]), abs=1e-12)
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-12)
    assert report["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, p), abs=1e-12)
    assert report["confusion_matrix"] == sklearn_metrics.confusion_matrix(y, p, labels=classes).tolist()


def test_a_folder_reports_numbers_equal_to_scikit_learns(folder_run):
    run, base = folder_run
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["classes"] == sorted(NAMES) and report["num_samples"] == 400
    files = sorted((base / "digits" / "test").rglob("*.png"))
    by_path = {str(f): f for f in files}
    # the test split in file order: class folders sorted, files by name; the label is the folder
    ordered = sorted(files, key=lambda f: (report["classes"].index(f.parent.name), f.name))
    images = torch.stack([torch.from_numpy(np.array(Image.open(f)))[None] for f in ordered])
    y = [report["classes"].index(f.parent.name) for f in ordered]
    p = _model_predictions(run / "checkpoints" / "best.pt", images).tolist()
    _check_against_sklearn(report, y, p)
    assert {m["source"]["path"] for m in report["mistakes"]} <= set(by_path)


def test_every_gallery_image_is_predicted_again_as_the_report_says_in_order_of_confidence(folder_run):
    run, _ = folder_run
    report = json.loads((run / "report" / "report.json").read_text())
    ckpt = run / "checkpoints" / "best.pt"
    assert len(report["mistakes"]) == 12 and len(report["least_confident_correct"]) == 12
    for gallery, wrong in (("mistakes", True), ("least_confident_correct", False)):
        entries = report[gallery]
        again = convtrain.predict(ckpt, [e["source"]["path"] for e in entries], device="cpu")
        for e, p in zip(entries, again):
            assert Path(e["source"]["path"]).parent.name == e["true"]["label"]  # the file really is of that class
            assert (p.label != e["true"]["label"]) is wrong and p.label == e["predicted"]["label"]
            assert p.probability == pytest.approx(e["predicted"]["prob"], abs=1e-5)
            assert (run / "report" / e["image"]).is_file()
        confidence = [e["predicted"]["prob"] for e in entries]
        assert confidence == sorted(confidence, reverse=wrong)
    worst = report["mistakes"][0]["predicted"]["prob"]
    assert worst > max(e["predicted"]["prob"] for e in report["least_confident_correct"])


class _Resources(HTMLParser):
    """Every tag and every attribute that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags, self.loads = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.loads += [(tag, k, v) for k, v in attrs if k in ("src", "href", "srcset", "data", "action", "poster")]


def test_report_html_is_self_contained_and_shows_markup_in_class_names_as_text(folder_run):
    run, _ = folder_run
    page = (run / "report" / "report.html").read_text()
    found = _Resources()
    found.feed(page)
    assert [v for _, _, v in found.loads if not v.startswith("data:image/png;base64,")] == []
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(found.tags)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|url\(|@import|//", text)
    assert "default-src 'none'" in page  # and a browser would refuse anything else anyway
    for name in NAMES[:2]:
        assert name not in page and html.escape(name) in page
    assert found.tags.count("img") == 2 + 1 + 24  # two confusion matrices, the reliability diagram, the galleries
    md = (run / "report" / "report.md").read_text()
    assert re.search(r"\| ECE / MCE / NLL / Brier \| [0-9.]+ / [0-9.]+ / [0-9.]+ / [0-9.]+ \|", md)
    for name in ("confusion.csv", "confusion_normalized.csv", "confusion.png", "confusion_normalized.png",
                 "reliability.png"):
        assert (run / "report" / name).stat().st_size > 100, name


def test_csv_rows_and_npz_indices_name_the_images_they_came_from(folder_run, mnist, tmp_path):
    """eval --data on a CSV and on an .npz with the checkpoint's classes: each mistake's source row/index
    holds exactly the gallery's image, and the report's numbers are scikit-learn's on them too."""
    run, _ = folder_run
    items = sample(mnist, 300, seed=2)
    x, labels = np.stack([img for img, _ in items]), [NAMES[lab] for _, lab in items]
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))]
    lines += [f"{lab}," + ",".join(map(str, img.reshape(-1))) for img, lab in zip(x, labels)]
    lines.insert(5, "")  # a blank line: a row number counts the file's lines
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    classes = sorted(NAMES)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([classes.index(lab) for lab in labels]), classes=np.array(classes))
    ckpt = run / "checkpoints" / "best.pt"
    text = (tmp_path / "d.csv").read_text().splitlines()
    for data in ("d.csv", "d.npz"):
        ev = convtrain.evaluate(ckpt, tmp_path / data, device="cpu", report=True)
        report = ev.report(10)
        assert report.num_samples == 300 and report.mistakes
        for e in report.mistakes:
            if data == "d.csv":
                assert e.source["file"].endswith("d.csv")
                row = text[e.source["row"] - 1].split(",")  # "row": the line of the file (the header is line 1)
                assert row[0] == e.label and np.array(row[1:], dtype=np.uint8).tobytes() == e.image.numpy().tobytes()
            else:
                assert e.source["file"].endswith("d.npz") and e.source["array"] == "x"
                assert x[e.source["index"]].tobytes() == e.image.numpy().tobytes()
        y = [classes.index(lab) for lab in labels]
        p = _model_predictions(ckpt, torch.from_numpy(x)[:, None]).tolist()
        _check_against_sklearn(report.as_json(), y, p)


def test_mnist_reports_numbers_equal_to_scikit_learns_and_names_each_mistake_by_its_index(trained_run, data_root, tmp_path):
    """The MNIST test split through the Python API (evaluate(report=True).report()), written to a folder
    of our choosing; mistakes re-read from the IDX file by their index."""
    ckpt = trained_run / "checkpoints" / "best.pt"
    ev = convtrain.evaluate(ckpt, device="cpu", report=tmp_path / "mnist-report", mistakes=10)
    assert ev.report_folder == tmp_path / "mnist-report"
    report = json.loads((tmp_path / "mnist-report" / "report.json").read_text())
    assert report == json.loads(json.dumps(ev.report(10).as_json(
        {e["position"]: e["image"] for e in report["mistakes"] + report["least_confident_correct"]})))
    raw = data_root / "MNIST" / "raw"
    images, labels = _idx(raw / "t10k-images-idx3-ubyte"), _idx(raw / "t10k-labels-idx1-ubyte")
    p = _model_predictions(ckpt, torch.from_numpy(images.copy())[:, None]).tolist()
    _check_against_sklearn(report, labels.tolist(), p)
    assert report["top_k"]["k"] == 5 and report["top_k"]["accuracy"] >= report["accuracy"]
    for e in report["mistakes"]:
        i = e["source"]["index"]
        assert e["source"]["dataset"] == "mnist" and e["source"]["split"] == "test" and e["position"] == i
        assert int(labels[i]) == e["true"]["index"] and p[i] == e["predicted"]["index"] != e["true"]["index"]
        again = convtrain.predict(ckpt, images[i], invert="no", device="cpu")[0]
        assert again.index == e["predicted"]["index"] and again.probability == pytest.approx(e["predicted"]["prob"], abs=1e-5)
