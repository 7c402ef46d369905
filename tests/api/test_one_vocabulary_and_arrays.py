"""Issue 31 items 5 and 6 (and issue 32's Python-API list): one vocabulary for predictions and one shape for
per-class numbers everywhere, and the API takes what Python users hold.

The vocabulary: ``label`` is the class name, ``index`` its number in the checkpoint's class list, ``prob`` its
probability, ``topk`` the top classes as ``{"label", "index", "prob"}``; per-class numbers are a mapping class
name -> value. A model with non-digit classes (cat, dog, owl) is where mixing the old words broke silently.

Breaks tried: Prediction.as_json with "label": self.index again (the CLI JSON and CSV disagree with the API);
the CSV writer's old columns (label = the number, class = the name); /v2/predict answering as_v1_json; the
server's _with_query skipped (?model=second answered by the default model); Evaluation.as_json's per-class
list; split_array without its 4-D branch (a (N, 1, H, W) tensor: "2 dimensions"... then Pillow's TypeError);
_as_uint8 without the float scaling (floats 0..1 all read as black); _override_strings without its type check
("'int' object is not iterable"); _override_strings calling json.dumps bare (a 5,000-digit integer: Python's
ValueError about its int-string limit).
"""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import convtrain
from convtrain.cli.app import app
from convtrain.serve.app import Limits, create_app, load_models

from ..serve.test_docs_page_own_models_runs_page import own_checkpoint

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

runner = CliRunner()
CLASSES = ("cat", "dog", "owl")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Nine 28x28 grayscale pictures in a labelled folder (train/<class>/), their pixels, and a model of them."""
    root = tmp_path_factory.mktemp("owls")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    paths = []
    for i, x in enumerate(pixels):
        folder = root / "data" / "train" / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / f"p{i}.png")
        paths.append(folder / f"p{i}.png")
    model = own_checkpoint(root / "own.pt", CLASSES)
    return model, paths, pixels, root


def test_cli_json_csv_server_and_api_speak_one_vocabulary(pictures, tmp_path):
    model, paths, _, _ = pictures
    args = ["predict", "--checkpoint", str(model), *map(str, paths), "--top-k", "2", "--device", "cpu"]
    as_json = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    runner.invoke(app, [*args, "--output", str(tmp_path / "p.csv")])
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    runner.invoke(app, [*args, "--output", str(tmp_path / "p.json")])
    from_file = json.loads((tmp_path / "p.json").read_text())
    api = convtrain.predict(model, paths, top_k=2, device="cpu")
    second = own_checkpoint(tmp_path / "second.pt", CLASSES)  # the same weights, under another name
    with TestClient(create_app(load_models([str(model), f"second={second}"]), tmp_path, Limits())) as c:
        v2 = [c.post("/v2/predict", files={"file": (p.name, p.read_bytes())}, data={"top_k": "2"}).json()
              for p in paths]
        v1 = c.post("/v1/predict", files={"file": (paths[0].name, paths[0].read_bytes())}).json()["predictions"][0]
        by_query = c.post("/v2/predict?model=second", files={"file": ("p.png", paths[0].read_bytes())}).json()
        wrong = c.post("/v2/predict?modle=second", files={"file": ("p.png", paths[0].read_bytes())})
    assert by_query["model"] == "second"  # ?model=NAME is honoured (it answered with the default model)
    assert wrong.status_code == 400 and "unknown query parameter 'modle' (did you mean 'model'?)" in wrong.json()["error"]
    for j, row, f, a, s in zip(as_json, rows, from_file, api, v2):
        (s,) = s["predictions"]
        assert j["label"] == row["label"] == f["label"] == a.label == s["label"] and a.label in CLASSES
        assert j["index"] == int(row["index"]) == f["index"] == a.index == s["index"] == CLASSES.index(a.label)
        assert j["prob"] == f["prob"] == a.prob and float(row["prob"]) == pytest.approx(a.prob, abs=1e-6)
        assert j["topk"] == f["topk"] == a.topk()
        # the server classifies one upload at a time: the same numbers up to float rounding across batch sizes
        assert s["prob"] == pytest.approx(a.prob, abs=1e-6)
        assert [(t["label"], t["index"]) for t in s["topk"]] == [(t["label"], t["index"]) for t in a.topk()]
        assert [t["label"] for t in a.topk()] == [name for _, name, _ in a.ranked] and set(a.topk()[0]) == {
            "label", "index", "prob"}
    # /v1/predict keeps its old words for one release: label the class number, name the class name
    assert v1["label"] == api[0].index and v1["name"] == api[0].label
    assert set(v1) == {"image", "label", "name", "topk"} and set(v1["topk"][0]) == {"index", "name", "prob"}
    assert (v1["topk"][0]["index"], v1["topk"][0]["name"]) == (api[0].index, api[0].label)


def test_per_class_numbers_have_one_shape(pictures):
    model, _, _, root = pictures
    r = runner.invoke(app, ["eval", "--checkpoint", str(model), "--data", str(root / "data"), "--json",
                            "--device", "cpu"], env={"CONVTRAIN_CACHE_DIR": str(root / "cache")})
    assert r.exit_code == 0, r.output
    cli = json.loads(r.stdout)["per_class_accuracy"]
    api = convtrain.evaluate(model, root / "data", device="cpu").per_class_accuracy
    assert cli == api and list(cli) == list(CLASSES)


def test_arrays_and_tensors_of_every_layout_give_the_files_answers(pictures):
    model, paths, pixels, _ = pictures
    want = [(p.label, p.scores) for p in convtrain.predict(model, paths, device="cpu")]
    layouts = {
        "(N,H,W) uint8": pixels, "(N,H,W,1)": pixels[..., None], "(N,1,H,W)": pixels[:, None],
        "(N,H,W) float 0..1": pixels.astype(np.float32) / 255, "tensor (N,H,W)": torch.from_numpy(pixels),
        "tensor (N,1,H,W) float": torch.from_numpy(pixels)[:, None].float() / 255,
        "list of (H,W)": list(pixels), "list of tensors (1,H,W)": [torch.from_numpy(x)[None] for x in pixels],
        "iterator of PIL": iter([Image.fromarray(x) for x in pixels]),
    }
    for name, images in layouts.items():
        got = convtrain.predict(model, images, device="cpu", probabilities=True)
        assert [(p.label, p.scores) for p in got] == want, name
        assert [p.image for p in got] == [f"<image {i}>" for i in range(9)], name
        assert got.probabilities.shape == (9, 3) and got.classes == list(CLASSES), name
        assert np.allclose(got.probabilities, [s for _, s in want]) and np.allclose(got.probabilities.sum(1), 1)
    one = convtrain.predict(model, pixels[0], device="cpu")  # (H, W): one image
    assert [p.label for p in one] == [want[0][0]] and one[0].scores == pytest.approx(want[0][1], abs=1e-6)  # batch of 1
    rgb = np.repeat(pixels[..., None], 3, axis=3)  # (N, H, W, 3) for a grayscale model: converted as files are
    assert len(convtrain.predict(model, rgb, device="cpu")) == 9


def test_empty_inputs_give_an_empty_answer(pictures):
    model = pictures[0]
    for empty in ([], iter([]), (x for x in ())):
        got = convtrain.predict(model, empty, device="cpu", probabilities=True)
        assert got == [] and got.probabilities.shape == (0, 3)


@pytest.mark.parametrize("images, error, words", [
    (np.zeros((2, 28, 28, 5), np.uint8), ValueError, "got a batch of shape (2, 28, 28, 5)"),
    (np.full((2, 28, 28), 200.0, np.float32), ValueError, "values from 200 to 200 (pixels 0..255 as floats?"),
    (np.full((2, 28, 28), -0.4, np.float32), ValueError, "(normalized? give pixels / 255"),
    (np.zeros((1, 1, 2, 28, 28), np.uint8), ValueError, "got 5 dimensions"),
    (np.array([["a"]]), TypeError, "got dtype <U1"),
    ([{"not": "an image"}], TypeError, "images[0]: give a path, bytes, a PIL image, a NumPy array or a torch tensor"),
])
def test_what_the_api_cannot_read_is_refused_naming_the_argument(pictures, images, error, words):
    with pytest.raises(error) as caught:
        convtrain.predict(pictures[0], images, device="cpu")
    assert str(caught.value).startswith("images") and words in str(caught.value)


def test_overrides_of_the_wrong_type_are_refused_naming_the_argument():
    with pytest.raises(TypeError, match=r"^overrides: give a mapping .* got int 3"):
        convtrain.train("smoke", overrides=3)
    with pytest.raises(TypeError, match=r"^overrides: each item is a 'key=value' string, got int 5"):
        convtrain.train("smoke", overrides=["train.epochs=1", 5])
    with pytest.raises(convtrain.ConfigError, match=r"^overrides: 'train.epochs' is an integer of more than 100 digits"):
        convtrain.train("smoke", overrides={"train.epochs": 10 ** 5000})  # Python's int-string limit, before
    with pytest.raises(convtrain.ConfigError, match=r"^overrides: 'optim.lr' is of type object, not a config value"):
        convtrain.train("smoke", overrides={"optim.lr": object()})
    with pytest.raises(convtrain.ConfigError, match="--invert must be auto, yes or no, got 'maybe'"):
        convtrain.predict("x.pt", [], invert="maybe")


def test_a_csv_of_predictions_reads_back_with_the_class_names(pictures, tmp_path):
    """The CSV's label column is the class name (non-digit here): what a spreadsheet user reads."""
    model, paths, _, _ = pictures
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", "--checkpoint", str(model), *map(str, paths[:2]), "-o", str(out),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    header, *rows = list(csv.reader(io.StringIO(out.read_text())))
    assert header == ["path", "row", "label", "index", "prob", "topk"]
    assert all(row[2] in CLASSES and row[3] == str(CLASSES.index(row[2])) for row in rows)
