"""Issue #22: exported files carry their meaning. The onnxruntime client printed in docs/deploy.md is
run here on an exported file and real MNIST PNGs, and must agree with convtrain's own predict."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from convtrain.data.mnist import load_split
from convtrain.inference.export import export_checkpoint
from convtrain.inference.predict import predict_images

from ..conftest import REPO


def client_code() -> str:
    text = (REPO / "docs" / "deploy.md").read_text()
    block = re.search(r"```python\n(# classify\.py.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 20  # the page promises a short client (the ink rule: 3 lines)
    return block


@pytest.fixture
def pngs(data_root, tmp_path):
    test = load_split("mnist", data_root, train=False, download=False)
    paths = []
    for i in (0, 1, 2, 3, 4):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(test.images[i, 0].numpy()).save(p)
        paths.append(p)
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("preprocessing", [False, True])
def test_the_documented_onnx_client_classifies_pngs_from_the_files_metadata_alone(trained_run, pngs, tmp_path,
                                                                                  preprocessing):
    pytest.importorskip("onnxruntime", reason="ONNX export is optional: pip install 'convtrain[onnx]'")
    pytest.importorskip("onnxscript", reason="ONNX export is optional: pip install 'convtrain[onnx]'")
    best = trained_run / "checkpoints" / "best.pt"
    model = tmp_path / "digits.onnx"
    r = export_checkpoint(best, "onnx", model, include_preprocessing=preprocessing)
    assert r["metadata"]["includes_preprocessing"] == json.dumps(preprocessing)
    (tmp_path / "classify.py").write_text(client_code())
    ours = predict_images(best, pngs, top_k=1, invert="no", device="cpu")
    for png, expected in zip(pngs, ours):
        out = subprocess.run([sys.executable, str(tmp_path / "classify.py"), str(model), str(png)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        name, prob = out.stdout.split()
        assert name == expected.label
        assert float(prob) == pytest.approx(expected.probability, abs=1e-3)  # printed with 4 decimals


@pytest.mark.slow
def test_torch_export_and_torchscript_carry_the_same_metadata(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.pt"
    r = export_checkpoint(best, "torch-export", tmp_path / "m.pt2")
    extra = {"convtrain.json": ""}
    torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra)
    meta = json.loads(extra["convtrain.json"])
    assert meta == r["metadata"]
    assert json.loads(meta["classes"]) == [str(i) for i in range(10)] and meta["layout"] == "NCHW"
    assert json.loads(meta["input_size"]) == [28, 28] and meta["channels"] == "1"
    from convtrain.version import __version__

    assert meta["convtrain_version"] == __version__
    export_checkpoint(best, "torchscript", tmp_path / "m.ts")
    extra = {"convtrain.json": ""}
    with pytest.warns(FutureWarning):  # torch.jit.load is deprecated upstream
        torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    assert json.loads(extra["convtrain.json"]) == meta
