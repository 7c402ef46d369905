"""Issue 31 item 7: an `.onnx` export is a model predict, eval and serve take where a checkpoint goes
(onnxruntime; preprocessing and the ink rule from its metadata), with the checkpoint's numbers; the
docs/deploy.md client applies the ink rule; a file that is neither a checkpoint nor an export is refused naming
what it is. The model: the 52beffa fixture run (lenet5, 1 epoch), exported once per module.

Breaks tried (each failed here): LoadedModel.open without the .onnx branch (predict: "truncated or not a PyTorch
checkpoint"); OnnxModule feeding an export with preprocessing the normalized batch (its probabilities differ);
evaluate without _open (eval: the pickle error); the deploy.md client without its three ink lines (the dark-on-light
PNG read as another class); checkpoint._read without _what_it_is (a PNG: "unreadable pickle data").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from convtrain.data.mnist import load_split

from ..conftest import REPO
from ..serve.test_server_api import LIMITS, TestClient, create_app, load_models

# each test runs convtrain in a new process or builds a model first (2-11 s each): the full suite
# (make test) runs them; make test-fast stays under 90 s
pytestmark = pytest.mark.slow

pytest.importorskip("onnxruntime", reason="ONNX export is optional: pip install 'convtrain[onnx]'")
pytest.importorskip("onnxscript", reason="ONNX export is optional: pip install 'convtrain[onnx]'")


def cli(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def work(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("onnx")
    shutil.copytree(REPO / "tests" / "fixtures" / "run-52beffa", root / "run")
    for name, extra in (("plain.onnx", []), ("pre.onnx", ["--include-preprocessing"])):
        out = cli("export", "--checkpoint", "run", "--format", "onnx", "--output", name, *extra, cwd=root)
        assert out.returncode == 0, out.stderr
    test = load_split("mnist", data_root, train=False, download=False)
    for i in range(4):
        Image.fromarray(test.images[i, 0].numpy()).save(root / f"digit{i}.png")
        Image.fromarray(255 - test.images[i, 0].numpy()).save(root / f"paper{i}.png")  # dark ink on paper
    return root


def _predict(checkpoint: str, work) -> list[dict]:
    pngs = sorted(p.name for p in work.glob("*.png"))
    out = cli("predict", "--checkpoint", checkpoint, *pngs, "--json", "--top-k", "10", cwd=work)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_predict_and_eval_take_an_onnx_export_with_the_checkpoints_numbers(work):
    """About 40 s on 2 busy cores (six commands, each importing torch)."""
    ours = _predict("run", work)
    for export in ("plain.onnx", "pre.onnx"):
        theirs = _predict(export, work)
        assert [p["label"] for p in theirs] == [p["label"] for p in ours]  # paper*.png inverted as for best.pt
        for a, b in zip(theirs, ours):
            assert [t["label"] for t in a["topk"]] == [t["label"] for t in b["topk"]]
            assert np.allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]], atol=1e-4)  # export's
    evaluated = {}
    for checkpoint in ("run", "plain.onnx"):
        out = cli("eval", "--checkpoint", checkpoint, "--json", cwd=work)
        assert out.returncode == 0, out.stderr
        evaluated[checkpoint] = json.loads(out.stdout)
    assert evaluated["plain.onnx"]["num_samples"] == evaluated["run"]["num_samples"] == 10000
    assert abs(evaluated["plain.onnx"]["accuracy"] - evaluated["run"]["accuracy"]) <= 2 / 10000  # a tie may flip
    out = cli("eval", "--checkpoint", "plain.onnx", "--split", "val", cwd=work)
    assert out.returncode == 2 and "--split val needs the checkpoint it came from" in out.stderr, out.stderr


def test_serve_takes_an_onnx_export_and_applies_its_ink_rule(work):
    paper = (work / "paper0.png").read_bytes()
    with TestClient(create_app(load_models([f"pt={work / 'run'}", f"onnx={work / 'pre.onnx'}"]), work, LIMITS)) as c:
        cards = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert cards["onnx"]["mnist_style"] and cards["onnx"]["classes"] == cards["pt"]["classes"]
        answers = {}
        for model in ("pt", "onnx"):
            r = c.post("/v2/predict", files={"file": ("p.png", paper)}, data={"model": model, "top_k": "10"})
            assert r.status_code == 200, r.text
            answers[model] = r.json()["predictions"][0]
    assert answers["onnx"]["label"] == answers["pt"]["label"]
    assert answers["onnx"]["prob"] == pytest.approx(answers["pt"]["prob"], abs=1e-4)


def test_the_deploy_client_applies_the_ink_rule(work):
    block = re.search(r"```python\n(# classify\.py.*?)```", (REPO / "docs" / "deploy.md").read_text(), re.S).group(1)
    (work / "classify.py").write_text(block)
    ours = {p["path"]: p for p in _predict("run", work)}
    for png in ("digit0.png", "paper0.png", "paper1.png"):
        out = subprocess.run([sys.executable, "classify.py", "plain.onnx", png], capture_output=True, text=True,
                             cwd=work, timeout=120)
        assert out.returncode == 0, out.stderr
        label, prob = out.stdout.split()
        assert label == ours[png]["label"] and float(prob) == pytest.approx(ours[png]["prob"], abs=1e-3), png


@pytest.mark.parametrize("name, content, what", [
    ("digit.png", None, "is not a convtrain checkpoint: it is a PNG image"),
    ("config.yaml", b"model:\n  name: lenet5\n", "is not a convtrain checkpoint: it is a text file (YAML text)"),
    ("train.csv", b"label,pixel0\n1,0\n", "is not a convtrain checkpoint: it is a text file (CSV text)"),
    ("model.pt2", b"PK\x03\x04junk", "is not a convtrain checkpoint: it is a torch.export archive"),
    ("broken.onnx", b"\x08\x07junk", "is not a readable ONNX model"),
], ids=lambda v: v if isinstance(v, str) and "." in v and " " not in v else None)
def test_a_file_that_is_neither_checkpoint_nor_export_is_refused_naming_what_it_is(work, tmp_path, name, content,
                                                                                    what):
    path = tmp_path / name
    if content is None:
        shutil.copy(work / "digit0.png", path)
    else:
        path.write_bytes(content)
    out = cli("predict", "--checkpoint", str(path), str(work / "digit0.png"), cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and what in out.stderr, out.stderr
