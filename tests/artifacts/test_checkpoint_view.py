"""checkpoint.Loaded: the one validated view, and checkpoints that are valid pickles of the wrong shape."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.config.schema import RunConfig, to_dict
from convtrain.errors import CheckpointError
from convtrain.models import create_model

from ..conftest import run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def good():
    torch.manual_seed(0)
    model = create_model("article_cnn", num_classes=10, hidden=32)
    return checkpoint.build(model, model_name="article_cnn", model_kwargs={"hidden": 32},
                            classes=[str(i) for i in range(10)], in_channels=1, input_size=(28, 28), mean=[0.13],
                            std=[0.31], dataset="mnist", config=to_dict(RunConfig()), epoch=3,
                            metrics={"val_acc": 0.5})


def _set(*keys, value):
    def mutate(c):
        node = c
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return mutate


def _delete(*keys):
    def mutate(c):
        node = c
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return mutate


def _drop_class(c):
    c["classes"] = c["classes"][:9]


def _nine_classes_ten_outputs(c):
    c["classes"], c["num_classes"] = c["classes"][:9], 9


# (id, mutation, a part of the message; a tuple: any of these wordings)
HOSTILE = [
    ("not-a-dict", lambda c: c.clear(), "is not a convtrain checkpoint"),
    ("missing-classes", _delete("classes"), "'classes' is missing"),
    ("missing-state-dict", _delete("model", "state_dict"), "'model.state_dict' is missing"),
    ("version-string", _set("version", value="1"), "'version' must be an integer, got str"),
    ("version-newer", _set("version", value=99), "written by a newer convtrain"),
    ("model-not-mapping", _set("model", value=["article_cnn"]), "'model' must be a mapping, got list"),
    ("model-name-int", _set("model", "name", value=3), "'model.name' must be a string, got int"),
    ("model-unknown", _set("model", "name", value="resnet9000"), "unknown model 'resnet9000'"),
    ("state-dict-list", _set("model", "state_dict", value=[1, 2]), "'model.state_dict' must be a mapping of tensors, got list"),
    ("state-dict-numbers", _set("model", "state_dict", value={"head.weight": 1.0}), "'model.state_dict' must be a mapping of tensors"),
    ("classes-shorter", _drop_class, "'num_classes' is 10 but 'classes' names 9"),
    ("classes-fewer-than-head", _nine_classes_ten_outputs, "'model.state_dict.head.weight' has 10 outputs but the checkpoint names 9 classes"),
    ("classes-not-strings", _set("classes", value=list(range(10))), "'classes[0]' must be a string, got int"),
    ("classes-string", _set("classes", value="0123456789"), "'classes' must be a non-empty list of class names, got str"),
    ("num-classes-float", _set("num_classes", value=10.0), "'num_classes' must be an integer, got float"),
    ("input-size-zero", _set("input_size", value=[0, 28]), "'input_size' must be [height, width], integers from 1 to 4096, got [0, 28]"),
    ("input-size-negative", _set("input_size", value=[-28, 28]), "'input_size' must be [height, width]"),
    ("input-size-huge", _set("input_size", value=[100000, 100000]), "'input_size' must be [height, width]"),
    ("input-size-one-number", _set("input_size", value=28), "'input_size' must be [height, width]"),
    ("in-channels-zero", _set("in_channels", value=0), "'in_channels' must be an integer from 1 to 64, got 0"),
    ("in-channels-string", _set("in_channels", value="1"), "'in_channels' must be an integer from 1 to 64, got str"),
    ("in-channels-3", _set("in_channels", value=3), "'backbone.conv1.weight' is (32, 1, 3, 3), the model needs (32, 3, 3, 3)"),
    ("kwargs-negative", _set("model", "kwargs", "hidden", value=-5), ("'model.kwargs' {'hidden': -5} cannot build model 'article_cnn'", "'model.kwargs.hidden'")),
    ("kwargs-string", _set("model", "kwargs", "hidden", value="big"), ("'model.kwargs' {'hidden': 'big'} cannot build model 'article_cnn'", "'model.kwargs.hidden'")),
    ("kwargs-wrong-size", _set("model", "kwargs", "hidden", value=64), "'model.state_dict': weights do not fit model 'article_cnn' with kwargs {'hidden': 64}"),
    ("kwargs-huge", _set("model", "kwargs", "hidden", value=10**12), ("'model.state_dict': weights do not fit model 'article_cnn'", "'model.kwargs.hidden'")),
    ("kwargs-unknown", _set("model", "kwargs", "depth", value=3), "'model.kwargs.depth' is not an argument of model 'article_cnn'"),
    ("kwargs-list", _set("model", "kwargs", "hidden", value=[32]), "'model.kwargs.hidden' must be a string, number or boolean, got list"),
    ("kwargs-not-mapping", _set("model", "kwargs", value=[("hidden", 32)]), "'model.kwargs' must be a mapping of names to values, got list"),
    ("conv-garbage", _set("model", "kwargs", "conv", value="fft"), ("conv must be one of torch, scratch", "'model.kwargs.conv'")),
    ("mean-too-long", _set("normalization", "mean", value=[0.1, 0.2, 0.3]), "'normalization.mean' must be a list of 1 finite numbers"),
    ("mean-nan", _set("normalization", "mean", value=[math.nan]), "'normalization.mean' must be a list of 1 finite numbers"),
    ("std-zero", _set("normalization", "std", value=[0.0]), "'normalization.std' must be positive, got [0.0]"),
    ("std-string", _set("normalization", "std", value="0.3"), "'normalization.std' must be a list of 1 finite numbers"),
    ("normalization-list", _set("normalization", value=[0.1, 0.3]), "'normalization' must be a mapping with mean and std, got list"),
    ("dataset-none", _set("dataset", value=None), "'dataset' must be a string, got NoneType"),
    ("config-list", _set("config", value=["a"]), "'config' must be a mapping, got list"),
    ("config-no-data", _delete("config", "data"), "'config' must be a mapping with 'data'"),
    ("config-root-int", _set("config", "data", "root", value=5), "'config.data.root' must be str, got int"),
    ("config-seed-string", _set("config", "seed", value="0"), "'config.seed' must be int, got str"),
    ("epoch-negative", _set("epoch", value=-1), "'epoch' must be a non-negative integer, got -1"),
    ("metrics-list", _set("metrics", value=[0.5]), "'metrics' must be a mapping, got list"),
    ("training-state-list", _set("training_state", value=[1]), "'training_state' must be a mapping, got list"),
]


def _mentions(text, message):
    return any(m in text for m in (message if isinstance(message, tuple) else (message,)))


def _hostile(good, tmp_path, mutate):
    bad = copy.deepcopy(good)
    mutate(bad)
    path = tmp_path / "x.pt"
    torch.save(bad, path)
    return path


@pytest.mark.parametrize("mutate, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_wrong_shape_checkpoint_is_one_checkpoint_error_naming_file_and_key(good, tmp_path, mutate, message):
    path = _hostile(good, tmp_path, mutate)
    with pytest.raises(CheckpointError) as info:
        checkpoint.open_checkpoint(path)
    text = str(info.value)
    assert text.startswith(str(path)) and _mentions(text, message), text
    assert "\n" not in text


@pytest.mark.parametrize("mutate, message", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("command", ["eval", "predict", "export", "visualize"])
def test_every_reader_reports_a_hostile_checkpoint_in_one_line(good, tmp_path, mutate, message, command):
    path = _hostile(good, tmp_path, mutate)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    args = {"eval": ["eval", "--checkpoint", str(path)],
            "predict": ["predict", "--checkpoint", str(path), str(image)],
            "export": ["export", "--checkpoint", str(path), "--output", str(tmp_path / "m.pt2")],
            "visualize": ["visualize", "--checkpoint", str(path), str(image), "--output-dir", str(tmp_path / "v")]}[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith("error: ") and _mentions(result.stderr, message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png", "x.pt"]  # nothing written


def test_hostile_checkpoint_through_a_real_process(good, tmp_path):
    path = _hostile(good, tmp_path, _set("model", "state_dict", value=[1, 2]))
    result = run_cli("eval", "--checkpoint", str(path))
    assert result.returncode == 1
    assert result.stderr == f"error: {path}: 'model.state_dict' must be a mapping of tensors, got list\n"


def test_loaded_view_fields_and_rebuild(good, tmp_path):
    path = tmp_path / "best.pt"
    checkpoint.save(good, path)
    ckpt = checkpoint.open_checkpoint(path)
    assert (ckpt.path, ckpt.model_name, dict(ckpt.model_kwargs)) == (path, "article_cnn", {"hidden": 32})
    assert ckpt.classes == tuple(str(i) for i in range(10)) and ckpt.num_classes == 10
    assert (ckpt.in_channels, ckpt.input_size, ckpt.image_shape) == (1, (28, 28), (1, 28, 28))
    assert (ckpt.mean, ckpt.std, ckpt.dataset, ckpt.epoch) == ((0.13,), (0.31,), "mnist", 3)
    assert ckpt.training_state is None and ckpt.versions["torch"] == str(torch.__version__)
    assert ckpt.config_dict() == to_dict(RunConfig())
    with pytest.raises(TypeError):
        ckpt.config["seed"] = 1  # read-only
    with pytest.raises(AttributeError):
        ckpt.epoch = 4  # frozen
    model = ckpt.rebuild()
    assert not model.training
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    expected = (x.float() / 255 - 0.13) / 0.31
    torch.testing.assert_close(ckpt.normalizer("cpu")(x), expected)
    reference = create_model("article_cnn", num_classes=10, hidden=32)
    reference.load_state_dict(good["model"]["state_dict"])
    with torch.inference_mode():
        torch.testing.assert_close(model(expected), reference.eval()(expected))
    assert checkpoint.load(path)["model"]["kwargs"] == {"hidden": 32}  # the dict runner uses, validated too
