"""Issue 31 item 10: a model of your own without editing the installed package: ``--import my_models.py`` (its
``@register_model`` models; recorded as ``model.file``) or ``model.name: package.module:function``; checked as a
built-in model is (the head contract included), refused in one line when the import fails; eval, predict, export
and resume find it again from another folder.

Breaks tried (each failed here): from_dict without load_user_models (the name was "not one of" the built-ins);
checkpoint._build without _import_own_model (eval from another folder: "unknown model 'tiny_mine'"); _dry_build
without the head_problem check (a plain Sequential passed config show); Loaded.rebuild without the saved config
(an internal KeyError in eval).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

# each test runs convtrain in a new process or builds a model first (2-11 s each): the full suite
# (make test) runs them; make test-fast stays under 90 s
pytestmark = pytest.mark.slow

MODELS = '''
from torch import nn
from convtrain.models import Classifier, register_model

@register_model("tiny_mine", "a tiny model of my own")
def tiny_mine(num_classes, in_channels, input_size, width: int = 4):
    backbone = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                             nn.Flatten())
    return Classifier(backbone, width * 16, num_classes)


def plain(num_classes, in_channels, input_size):
    """a plain Sequential: no backbone/head"""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size[0] * input_size[1], num_classes))


def wrong_head(num_classes, in_channels, input_size):
    return Classifier(nn.Flatten(), in_channels * input_size[0] * input_size[1], num_classes + 1)


def no_data_args(width=3):
    return None
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    (root / "my_models.py").write_text(MODELS)
    (root / "broken.py").write_text("import not_a_module_anywhere\n")
    (root / "elsewhere").mkdir()
    return root


def cli(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_import_registers_the_files_models_and_records_its_absolute_path(home):
    out = cli("config", "show", "--import", "my_models.py", "--set", "model.name=tiny_mine", cwd=home)
    assert out.returncode == 0, out.stderr
    assert "  name: tiny_mine\n" in out.stdout and f"  file: {home / 'my_models.py'}\n" in out.stdout
    out = cli("config", "show", "--set", "model.name=my_models:tiny_mine", "--set", "model.kwargs.width=2", cwd=home)
    assert out.returncode == 0 and "  name: my_models:tiny_mine\n" in out.stdout, out.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "model.name=tiny_mine"], "'model.name' is 'tiny_mine', not one of: article_cnn"),
    (["--import", "nope.py", "--set", "model.name=tiny_mine"], "'model.file' {home}/nope.py: not found"),
    (["--import", "broken.py"], "cannot import 'model.file' {home}/broken.py: ModuleNotFoundError: No module "
                                "named 'not_a_module_anywhere'"),
    (["--set", "model.name=my_modelz:plain"], "cannot import my_modelz: ModuleNotFoundError"),
    (["--set", "model.name=my_models:nope"], "'model.name' my_models:nope: my_models has no function 'nope'"),
    (["--set", "model.name=my_models:plain"], "model 'my_models:plain' breaks the head contract: the factory "
                                              "returned Sequential, not a convtrain.models.Classifier"),
    (["--set", "model.name=my_models:wrong_head"], "its head must be one nn.Linear with num_classes=10 outputs, "
                                                   "got 11 outputs"),
    (["--set", "model.name=my_models:no_data_args"], "must accept num_classes, in_channels, input_size"),
    (["--import", "my_models.py", "--set", "model.name=tiny_mine", "--set", "model.kwargs.width=x"],
     "'model.kwargs.width' must be an int, got str 'x'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_model_that_cannot_be_imported_or_breaks_the_contract_is_one_line(home, args, message):
    out = cli("config", "show", *args, cwd=home)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert message.format(home=home) in out.stderr, out.stderr


@pytest.mark.slow
def test_eval_predict_export_and_resume_find_the_model_from_another_folder(home):
    """About 30 s on 2 busy cores: a 1-epoch run on 1,000 images, then each command from another folder."""
    small = ["--set", "data.train_subset=1000", "--set", "data.val_size=200", "--set", "data.test_subset=200",
             "--set", "log.plots=false"]
    out = cli("train", "--config", "smoke", "--import", "my_models.py", "--set", "model.name=tiny_mine", *small,
              "--run-dir", "runs/mine", cwd=home)
    assert out.returncode == 0, out.stderr
    there = home / "elsewhere"
    out = cli("eval", "--checkpoint", "../runs/mine", "--json", cwd=there)
    assert out.returncode == 0, out.stderr
    assert 0.0 <= json.loads(out.stdout)["accuracy"] <= 1.0  # (eval scores the whole test set, not test_subset)
    out = cli("export", "--checkpoint", "../runs/mine", "--format", "onnx", cwd=there)
    assert out.returncode == 0 and "same predictions: True" in out.stdout + out.stderr, out.stderr
    csv = there / "one.csv"
    csv.write_text("pixel" + ",pixel".join(str(i) for i in range(784)) + "\n" + ",".join(["0"] * 784) + "\n")
    out = cli("predict", "--checkpoint", "../runs/mine", str(csv), "--json", cwd=there)
    assert out.returncode == 0 and json.loads(out.stdout)[0]["label"] in [str(d) for d in range(10)], out.stderr
    out = cli("train", "--resume", "../runs/mine", "--epochs", "2", cwd=there)
    assert out.returncode == 0, out.stderr
    assert len((home / "runs" / "mine" / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
