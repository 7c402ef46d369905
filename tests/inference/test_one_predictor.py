"""One Predictor: ``convtrain predict``, the Python API's ``predict`` and the server's ``/v2/predict`` classify
through :class:`convtrain.inference.predict.Predictor` and give identical probabilities for the same images.

Breaks tried (each failed here): the server classifying with its own copy of the forward pass (the spy saw
two calls, not three); the CLI's ``--top-k`` not passed on (its top-k lists cut to 3); the Predictor's invert
rule answering "no" for every model (the dark-on-light digit was not turned around).
"""

from __future__ import annotations

import base64
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import convtrain
from convtrain.cli.app import app
from convtrain.inference import predict as predict_mod

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from convtrain.serve.app import create_app, load_models  # noqa: E402

# MNIST's test files are sorted by label: indices spread over the file give varied digits
INDICES = [3, 2100, 4200, 6100, 9400]


@pytest.fixture(scope="module")
def images(data_root, tmp_path_factory) -> list:
    """Five MNIST test digits as PNGs, a 56x56 one, and one drawn dark on light (the ink rule inverts it)."""
    from convtrain.data.mnist import load_split

    test = load_split("mnist", str(data_root), train=False, download=False)
    folder = tmp_path_factory.mktemp("one-predictor")
    paths = []
    for i in INDICES:
        paths.append(folder / f"d{i}.png")
        Image.fromarray(test.images[i, 0].numpy()).save(paths[-1])
    paths.append(folder / "big.png")
    Image.fromarray(test.images[7, 0].numpy()).resize((56, 56)).save(paths[-1])
    paths.append(folder / "paper.png")
    Image.fromarray(255 - test.images[11, 0].numpy()).save(paths[-1])
    return paths


@pytest.fixture
def spy(monkeypatch) -> list:
    """Every call of Predictor.classify, with the number of images it classified."""
    calls = []
    original = predict_mod.Predictor.classify

    def classify(self, images, names, *args, **kwargs):
        calls.append(len(names))
        return original(self, images, names, *args, **kwargs)

    monkeypatch.setattr(predict_mod.Predictor, "classify", classify)
    return calls


def _probabilities(topk: list[dict]) -> list[tuple[int, str, float]]:
    return [(t["index"], t["label"], t["prob"]) for t in topk]


def test_cli_api_and_server_give_identical_probabilities(trained_run, images, spy):
    best = trained_run / "checkpoints" / "best.pt"
    cli = CliRunner().invoke(app, ["predict", "--checkpoint", str(best), *map(str, images), "--top-k", "10",
                                   "--json", "--device", "cpu"])
    assert cli.exit_code == 0, cli.output
    from_cli = json.loads(cli.stdout)
    assert spy == [len(images)]

    from_api = convtrain.predict(best, images, device="cpu")
    assert spy == [len(images)] * 2

    with TestClient(create_app(load_models([str(best)]))) as client:
        body = {"images": [base64.b64encode(p.read_bytes()).decode() for p in images], "top_k": 10}
        answer = client.post("/v2/predict", json=body)
    assert answer.status_code == 200, answer.text
    from_server = answer.json()["predictions"]
    assert spy == [len(images)] * 3

    for path, c, a, s in zip(images, from_cli, from_api, from_server):
        assert c["path"] == a.image == str(path) and s["image"].startswith("images[")
        assert _probabilities(c["topk"]) == list(a.ranked) == _probabilities(s["topk"])  # exactly equal
        assert c["index"] == a.index == s["index"] and c["label"] == a.label == s["label"]
        assert a.probabilities == {name: prob for _, name, prob in a.ranked} and len(a.ranked) == 10
    # invert=auto turned the dark-on-light digit around (an MNIST-style model), as invert=yes does
    alone = {i: convtrain.predict(best, images[-1], invert=i, device="cpu")[0].ranked for i in ("auto", "yes", "no")}
    assert alone["auto"] == alone["yes"] != alone["no"]  # one image each time: the same pixels give the same numbers


def test_api_images_in_memory_equal_their_files(trained_run, images):
    """bytes, PIL images and uint8 arrays take the file's path through the Predictor: the same probabilities."""
    best = trained_run / "checkpoints" / "best.pt"
    files = convtrain.predict(best, images[:3], device="cpu", top_k=3)
    arrays = convtrain.predict(best, [np.asarray(Image.open(p)) for p in images[:3]], device="cpu", top_k=3)
    raw = convtrain.predict(convtrain.load(best), [p.read_bytes() for p in images[:3]], device="cpu", top_k=3)
    for f, a, r in zip(files, arrays, raw):
        assert f.ranked == a.ranked == r.ranked and len(f.ranked) == 3
    assert [a.image for a in arrays] == ["<image 0>", "<image 1>", "<image 2>"]
