"""NumPy .npz datasets (convtrain/data/npzdata.py): Keras' mnist.npz layout made here from the MNIST IDX
files, a single x/y pair held out like a CSV, data inspect, predict, resume, and a table of hostile files.

Breaks tried (each failed a test here): npz's build_eval scoring the training images instead of x_test
(the 10,000 count); the single-pair hold-out seeded with `seed` instead of data.split_seed (the
CSV-equality test); the `classes` array ignored (the class-name tests); the header's object-dtype
check removed (the pickled cases no longer said so); allow_pickle=True in _read (the canary file was
written); the budget check after reading the arrays (the 10**9-image header was read: the message no
longer named the budget); Pillow's luma weights swapped for a plain mean (the RGB test); predict's
stream not reading past the .npy header (the predicted images were shifted).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from convtrain.data import sources
from convtrain.data.sources import build as build_data
from convtrain.errors import DataError

from ..hostile.kit import contract_problems, invoke
from .test_own_data import NAMES, _idx, data_cfg, mnist, sample  # noqa: F401 - mnist is a fixture

SHORT = ["--device", "cpu", "--set", "train.epochs=1", "--set", "data.train_subset=2000", "--set", "data.val_size=1000",
         "--set", "train.max_steps_per_epoch=30", "--set", "log.plots=false"]


@pytest.fixture(scope="module")
def keras_mnist(data_root, tmp_path_factory) -> Path:
    """Keras' mnist.npz layout: all 60,000 training and 10,000 test images of the MNIST files."""
    raw = data_root / "MNIST" / "raw"
    path = tmp_path_factory.mktemp("keras") / "mnist.npz"
    np.savez(path, x_train=_idx(raw / "train-images-idx3-ubyte"), y_train=_idx(raw / "train-labels-idx1-ubyte"),
             x_test=_idx(raw / "t10k-images-idx3-ubyte"), y_test=_idx(raw / "t10k-labels-idx1-ubyte"))
    return path


def _json(out) -> dict:
    assert out.code == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


@pytest.mark.slow
def test_train_eval_predict_and_resume_a_keras_mnist_npz(keras_mnist, tmp_path):
    run = tmp_path / "run"
    r = invoke(["train", "--data", str(keras_mnist), *SHORT, "--run-dir", str(run)])
    assert r.code == 0, r.stderr + r.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["classes"] == [str(i) for i in range(10)] and results["test_num_samples"] == 10000
    assert results["test_accuracy"] > 0.6  # 30 steps of 64 images: measured 0.83 (2026-12-06)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["name"], config["data"]["name"], config["data"]["root"]) == ("mnist", "npz", str(keras_mnist))
    # eval --data scores the file's own test split, x_test: the same 10,000 images as the run's final test
    ev = _json(invoke(["eval", "--checkpoint", str(run), "--data", str(keras_mnist), "--json", "--device", "cpu"]))
    assert ev["num_samples"] == 10000 and ev["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)
    # predict: one row per image of x_test, named by its index; the labels agree with eval's accuracy
    out = tmp_path / "preds.csv"
    r = invoke(["predict", "--checkpoint", str(run), str(keras_mnist), "--output", str(out), "--device", "cpu"])
    assert r.code == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert [int(row["row"]) for row in rows] == list(range(10000)) and {row["path"] for row in rows} == {str(keras_mnist)}
    y_test = np.load(keras_mnist)["y_test"]
    agree = np.mean([int(row["label"]) == y for row, y in zip(rows, y_test)])
    assert agree == pytest.approx(ev["accuracy"], abs=3e-4)  # the same images and model; 3 images of float slack
    # resume: more epochs of the same run; the file is the data, so data.root may not change
    moved = tmp_path / "moved.npz"
    moved.write_bytes(keras_mnist.read_bytes())
    refused = invoke(["train", "--resume", str(run), "--set", f"data.root={moved}"])
    assert not contract_problems(refused, (2,), "data.root")
    r = invoke(["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert r.code == 0, r.stderr + r.stdout
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def _arrays(items) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([img for img, _ in items]), np.array([lab for _, lab in items], dtype=np.uint8)


def test_a_single_x_y_pair_is_held_out_exactly_as_the_same_rows_of_a_csv(mnist, tmp_path):  # noqa: F811
    x, y = _arrays(sample(mnist, 200))
    np.savez(tmp_path / "digits.npz", x=x, y=y)
    with (tmp_path / "train.csv").open("w") as f:
        f.write("label," + ",".join(f"pixel{i}" for i in range(784)) + "\n")
        f.writelines(f"{lab}," + ",".join(map(str, img.ravel())) + "\n" for img, lab in zip(x, y))
    for keys in ({}, {"split_seed": 3, "val_size": 30}):
        npz = build_data(data_cfg(name="npz", root=str(tmp_path / "digits.npz"), **keys), seed=0)
        csv_ = build_data(data_cfg(name="csv", root=str(tmp_path / "train.csv"), cache=False, **keys), seed=0)
        for split in ("train", "val", "test"):
            assert torch.equal(getattr(npz, split).images, getattr(csv_, split).images)
            assert torch.equal(getattr(npz, split).labels, getattr(csv_, split).labels)
        assert npz.classes == csv_.classes and npz.mean == csv_.mean and npz.std == csv_.std
    assert [len(npz.train), len(npz.val), len(npz.test)] == [150, 30, 20]
    assert npz.info["held_out"] == ["val", "test"]


def test_class_names_come_from_the_classes_array_and_labels_index_it(mnist, tmp_path):  # noqa: F811
    x, y = _arrays(sample(mnist, 60))
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x[:10], y_test=y[:10], classes=np.array(NAMES))
    b = build_data(data_cfg(name="npz", root=str(tmp_path / "f.npz")), seed=0)
    assert b.classes == NAMES and len(b.test) == 10
    assert [b.classes[i] for i in b.test.labels.tolist()] == [NAMES[v] for v in y[:10]]


def test_rgb_images_become_grayscale_as_pillow_converts_them_or_stay_rgb(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 10, 10, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(12) % 2)
    gray = build_data(data_cfg(name="npz", root=str(tmp_path / "rgb.npz"), image_size=10, val_size=2, test_size=2), 0)
    every = torch.cat([gray.train.images, gray.val.images, gray.test.images])[:, 0]
    pillow = {Image.fromarray(img).convert("L").tobytes() for img in x}
    assert {img.numpy().tobytes() for img in every} == pillow
    rgb = build_data(data_cfg(name="npz", root=str(tmp_path / "rgb.npz"), channels=3, image_size=20, val_size=2,
                              test_size=2), 0)
    assert rgb.train.image_shape == (3, 20, 20) and rgb.info["image_sizes"] == {"10x10 RGB": 12}


def test_inspect_shows_the_splits_an_unused_x_test_and_ignored_arrays(mnist, tmp_path):  # noqa: F811
    x, y = _arrays(sample(mnist, 100))
    np.savez(tmp_path / "f.npz", x_train=x, y_train=y, x_test=x[:5], extra=np.zeros(3))
    info = _json(invoke(["data", "inspect", "--data", str(tmp_path / "f.npz"), "--json"]))
    assert info["source"] == "npz" and info["root"] == str(tmp_path / "f.npz") and info["decoded_as"] == [1, 28, 28]
    assert [info["splits"][s]["images"] for s in ("train", "val", "test")] == [80, 10, 10]
    assert info["ignored"] == ["extra", "x_test"] and info["image_sizes_found"] == {"28x28 L": 100}
    assert any("x_test has no y_test: not used as the test split" in n for n in info["notes"])
    text = invoke(["data", "inspect", "--data", str(tmp_path / "f.npz")])
    assert text.code == 0 and f"npz {tmp_path / 'f.npz'}: 10 classes" in text.stdout


@pytest.mark.parametrize("save", ["plain", "compressed", "fortran"])
def test_predict_streams_the_images_of_x_in_file_order(tmp_path, save):
    x = np.random.default_rng(1).integers(0, 256, (23, 12, 12), dtype=np.uint8)
    path = tmp_path / "x.npz"
    (np.savez_compressed if save == "compressed" else np.savez)(path, x=np.asfortranarray(x) if save == "fortran" else x)
    rows = sources.image_rows(path)
    assert rows.count == 23
    got = list(rows.read(10, (1, 12, 12)))
    assert [ids for ids, _ in got] == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    assert torch.equal(torch.cat([b for _, b in got])[:, 0], torch.from_numpy(x))


class _Canary:
    """Unpickling this writes a file: the proof that a pickled array was never loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "unpickled"))


def test_an_array_of_objects_is_never_unpickled_even_past_the_checks(tmp_path):
    from convtrain.data import npzdata

    np.savez(tmp_path / "f.npz", y=np.array([_Canary(str(tmp_path / "pwned"))], dtype=object))
    with zipfile.ZipFile(tmp_path / "f.npz") as z:
        member = npzdata.Member("y.npy", (1,), np.dtype(object), False)  # as if the header check had let it through
        with pytest.raises(DataError, match="y cannot be read"):
            npzdata._read(z, member, tmp_path / "f.npz")
    assert not (tmp_path / "pwned").exists()


def _save(t: Path, **arrays) -> Path:
    np.savez(t / "f.npz", **arrays)
    return t / "f.npz"


def _huge_header(t: Path) -> Path:
    """Two members of about 200 bytes whose headers declare 10**9 images (784 GB) and their labels."""
    with zipfile.ZipFile(t / "f.npz", "w") as z:
        for key, shape in (("x", (10**9, 28, 28)), ("y", (10**9,))):
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": shape})
            z.writestr(f"{key}.npy", head.getvalue() + bytes(100))
    return t / "f.npz"


def _npy(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def _truncated(t: Path) -> Path:
    full = _npy(np.zeros((50, 8, 8), dtype=np.uint8))
    with zipfile.ZipFile(t / "f.npz", "w") as z:
        z.writestr("x.npy", full[:len(full) - 1000])
        z.writestr("y.npy", _npy(np.arange(50) % 2))
    return t / "f.npz"


X, Y = np.zeros((20, 8, 8), dtype=np.uint8), np.arange(20) % 2
HOSTILE = {
    "images as float32": (lambda t: _save(t, x=X.astype(np.float32), y=Y), "holds float32 values; images must be uint8"),
    "images flattened to 64 columns": (lambda t: _save(t, x=X.reshape(20, 64), y=Y), "has shape 20x64"),
    "images 8x6": (lambda t: _save(t, x=X[:, :, :6], y=Y), "holds 8x6 images"),
    "images with 2 channels": (lambda t: _save(t, x=np.zeros((20, 8, 8, 2), np.uint8), y=Y), "C 1 or 3"),
    "no images": (lambda t: _save(t, x=X[:0], y=Y[:0]), "x holds no images"),
    "labels as floats": (lambda t: _save(t, x=X, y=Y.astype(np.float64)), "labels must be integers"),
    "one-hot labels": (lambda t: _save(t, x=X, y=np.eye(2)[Y].astype(np.int64)), "one-hot"),
    "19 labels for 20 images": (lambda t: _save(t, x=X, y=Y[:19]), "x holds 20 images but y has shape 19"),
    "a label outside classes": (lambda t: _save(t, x=X, y=np.where(Y == 1, 5, 0), classes=np.array(["a", "b"])),
                                "label 5 of image 1 of the train split is outside 0..1"),
    "a test label train never has": (lambda t: _save(t, x_train=X, y_train=Y, x_test=X, y_test=Y + 1),
                                     "label 2 of image 1 of the test split is outside the labels"),
    "a label beyond int64": (lambda t: _save(t, x=X, y=np.full(20, 2**64 - 1, np.uint64)), "too large"),
    "one class only": (lambda t: _save(t, x=X, y=np.zeros(20, np.int64)), "a classifier needs at least 2"),
    "class names twice": (lambda t: _save(t, x=X, y=Y, classes=np.array(["a", "a"])), "'a' more than once"),
    "pickled labels": (lambda t: _save(t, x=X, y=np.array([_Canary(str(t / "pwned"))] * 20, dtype=object)),
                       "pickled"),
    "pickled class names": (lambda t: _save(t, x=X, y=Y, classes=np.array(["a", _Canary(str(t / "pwned"))],
                                                                         dtype=object)), "allow_pickle=False"),
    "Keras keys capitalised": (lambda t: _save(t, X_train=X, Y_train=Y), "it holds X_train, Y_train (rename X_train to x_train?)"),
    "x_train without y_train": (lambda t: _save(t, x_train=X, y_trian=Y), "has x_train but no y_train (rename y_trian to y_train?)"),
    "y_test without x_test": (lambda t: _save(t, x=X, y=Y, y_test=Y), "has y_test but no x_test"),
    "both x and x_train": (lambda t: _save(t, x=X, y=Y, x_train=X, y_train=Y), "both x and x_train"),
    "a header of 10**9 images": (_huge_header, "over data.memory_budget_mb=2048"),
    "a truncated array": (_truncated, "truncated or damaged"),
    "not a zip file": (lambda t: (t / "f.npz").write_text("x,y\n1,2\n") and t / "f.npz", "not an .npz archive"),
    "a single .npy named .npz": (lambda t: (t / "f.npz").write_bytes(_npy(X)) and t / "f.npz", "np.savez"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_npz_file_is_one_line_and_changes_nothing(name, tmp_path):
    make, text = HOSTILE[name]
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["data", "inspect", "--data", str(path)],
                 ["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]):
        out = invoke(argv, timeout=30)
        assert not contract_problems(out, (1,), text, timeout=30), (argv[0], out.stderr, out.stdout[-300:])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory, nothing unpickled


def test_images_over_the_memory_budget_are_refused_before_they_are_read(mnist, tmp_path):  # noqa: F811
    x, y = _arrays(sample(mnist, 2000))
    np.savez(tmp_path / "f.npz", x=x, y=y)
    out = invoke(["data", "inspect", "--data", str(tmp_path / "f.npz"), "--set", "data.memory_budget_mb=3"])
    assert not contract_problems(out, (1,), "take 3 MB (as stored and decoded to 1x28x28), over data.memory_budget_mb=3")
    assert invoke(["data", "inspect", "--data", str(tmp_path / "f.npz"), "--set", "data.memory_budget_mb=4"]).code == 0


def test_predict_names_what_an_npz_without_x_holds(tmp_path):
    np.savez(tmp_path / "f.npz", x_train=X, y_train=Y)
    with pytest.raises(DataError, match=r"predict reads the images of x \(or x_test\); it holds x_train, y_train$"):
        sources.image_rows(tmp_path / "f.npz")
