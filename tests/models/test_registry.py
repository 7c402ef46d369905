from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from convtrain.config.schema import INIT_SCHEMES
from convtrain.errors import ConfigError
from convtrain.models import (
    Classifier,
    apply_init,
    check_model_kwargs,
    create_model,
    get_spec,
    list_models,
    register_model,
)

MODELS = list_models()


def test_registry_has_article_cnn_and_others():
    assert {"article_cnn", "article_cnn_scratch", "lenet5", "bn_cnn"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes, in_channels, size", [(10, 1, (28, 28)), (3, 3, (32, 32))])
def test_every_model_forward_backward(name, num_classes, in_channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_channels=in_channels, input_size=size)
    assert isinstance(model, Classifier)
    x = torch.randn(4, in_channels, *size)
    y = torch.randint(0, num_classes, (4,))
    logits = model(x)
    assert logits.shape == (4, num_classes)
    nn.functional.cross_entropy(logits, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert pname.startswith(("backbone.", "head."))  # the shared head contract
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_every_model_head_can_be_replaced(name):
    model = create_model(name, num_classes=10)
    model.reset_head(4)
    assert model.num_classes == 4
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_channels_last_matches(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(3, 1, 28, 28)
    ref = model(x)
    model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_article_cnn_is_the_articles_network():
    m = create_model("article_cnn", num_classes=10)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "backbone.conv1.weight": (32, 1, 3, 3), "backbone.conv1.bias": (32,),
        "backbone.conv2.weight": (64, 32, 3, 3), "backbone.conv2.bias": (64,),
        "backbone.fc1.weight": (128, 3136), "backbone.fc1.bias": (128,),
        "head.weight": (10, 128), "head.bias": (10,),
    }


def test_scratch_twin_has_same_parameters_and_outputs():
    a = create_model("article_cnn", num_classes=10)
    b = create_model("article_cnn_scratch", num_classes=10)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


def test_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_model("article_cnn", "again")(lambda num_classes, in_channels, input_size: None)


def test_unknown_model_and_kwarg():
    with pytest.raises(ConfigError, match="did you mean 'lenet5'"):
        create_model("lenet", num_classes=10)
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        create_model("article_cnn", num_classes=10, hiden=3)
    assert get_spec("bn_cnn").kwarg_defaults()["width"] == 32


def test_freeze_keeps_frozen_tensors_and_norm_stats():
    model = create_model("bn_cnn", num_classes=10)
    frozen = model.freeze(["backbone"])
    assert frozen and all(n.startswith("backbone.") for n in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
    opt.step()
    after = model.state_dict()
    for k in before:
        if k.startswith("backbone."):
            assert torch.equal(before[k], after[k]), k  # weights *and* BatchNorm running stats
    assert not torch.equal(before["head.weight"], after["head.weight"])
    with pytest.raises(ValueError, match="matches no parameter"):
        model.freeze(["backbon"])


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_schemes(scheme):
    torch.manual_seed(0)
    model = create_model("article_cnn", num_classes=10)
    before = model.backbone.conv1.weight.clone()
    apply_init(model, scheme)
    changed = not torch.equal(before, model.backbone.conv1.weight)
    assert changed == (scheme != "default")
    if scheme != "default":
        assert torch.count_nonzero(model.backbone.conv1.bias) == 0


def test_article_cnn_computes_the_articles_function_exactly():
    """The registry's article_cnn pools before its ReLUs (faster); outputs and gradients are bit-identical
    to the article's conv -> ReLU -> pool order."""
    torch.manual_seed(0)
    m = create_model("article_cnn", num_classes=10)
    b = m.backbone
    x = torch.randn(16, 1, 28, 28)

    def article_forward(x):
        x = nn.functional.max_pool2d(torch.relu(b.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(b.conv2(x)), 2)
        return m.head(torch.relu(b.fc1(x.view(-1, 64 * 7 * 7))))

    ours, ref = m(x), article_forward(x)
    assert torch.equal(ours, ref)
    g_ours = torch.autograd.grad(ours.square().sum(), list(m.parameters()))
    g_ref = torch.autograd.grad(ref.square().sum(), list(m.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(g_ours, g_ref))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_declares_its_kwargs_and_its_defaults_pass_the_dry_build(name):
    spec = get_spec(name)
    assert set(spec.args) == set(spec.kwarg_defaults())
    for key, default in spec.kwarg_defaults().items():
        assert spec.args[key].problem(default) is None, key
    check_model_kwargs(name, spec.kwarg_defaults(), num_classes=10, input_shape=(1, 28, 28))


@pytest.mark.parametrize("name, kwargs, expected", [
    ("article_cnn", {"hidden": 0}, r"'model.kwargs.hidden' must be in \[1, 16,384\], got 0"),
    ("article_cnn", {"hidden": True}, "'model.kwargs.hidden' must be an int, got bool True"),
    ("article_cnn", {"hidden": "big"}, "'model.kwargs.hidden' must be an int, got str 'big'"),
    ("bn_cnn", {"dropout": 1.0}, r"'model.kwargs.dropout' must be in \[0.0, 1.0\), got 1.0"),
    ("bn_cnn", {"dropout": float("nan")}, "'model.kwargs.dropout' must be a number, got nan"),
    ("lenet5", {"conv": "scrach"}, "must be one of torch, scratch, got 'scrach' \\(did you mean 'scratch'\\?\\)"),
    ("bn_cnn", {"width": 1024, "hidden": 16384}, "parameters, more than the 1,000,000,000 limit"),
])
def test_bad_model_kwargs_are_config_errors_naming_the_key(name, kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        check_model_kwargs(name, kwargs, num_classes=10, input_shape=(1, 28, 28))


@pytest.mark.parametrize("name", MODELS)
def test_a_feature_map_that_vanishes_is_refused_by_the_dry_build(name):
    # 3x3 images: every model pools twice, so its feature map cannot exist
    with pytest.raises(ConfigError, match=f"model '{name}' cannot be built for 1x3x3 images"):
        check_model_kwargs(name, {}, num_classes=10, input_shape=(1, 3, 3))
    check_model_kwargs(name, {}, num_classes=10)  # without a shape: types and ranges only


# --------------------------------------------------------------------------------------------
# Shapes worked out without running the layers (config checks build on the meta device)

from convtrain import ops  # noqa: E402
from convtrain.models import shapes  # noqa: E402

LAYER_CASES = [  # (layers, input shape of one sample)
    (nn.Conv2d(3, 8, 3), (3, 17, 13)),
    (nn.Conv2d(3, 8, (5, 3), stride=(2, 3), padding=(2, 1), dilation=(1, 2)), (3, 29, 31)),
    (ops.Conv2d(2, 4, 3, stride=2, padding=1), (2, 9, 10)),
    (nn.MaxPool2d(2), (4, 7, 9)),
    (nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (4, 10, 11)),
    (nn.MaxPool2d(2, ceil_mode=True), (4, 7, 5)),
    (nn.MaxPool2d(2, padding=1, ceil_mode=True), (4, 5, 6)),  # the last window would start in the padding
    (nn.AvgPool2d(3, stride=2, ceil_mode=True), (4, 9, 8)),
    (nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(0.2),
                   nn.Flatten(), nn.Linear(6 * 14 * 14, 7)), (1, 28, 28)),
]


@pytest.mark.parametrize("layers, shape", LAYER_CASES)
def test_worked_out_shapes_match_a_real_forward(layers, shape):
    real = layers.eval()(torch.zeros(2, *shape)).shape[1:]
    assert shapes.output_shape(layers, shape) == tuple(real)


@pytest.mark.parametrize("layers, shape", [(nn.Conv2d(3, 8, 5), (3, 4, 9)), (nn.MaxPool2d(4), (2, 3, 8)),
                                           (nn.Conv2d(3, 8, 3), (2, 9, 9)), (nn.Linear(10, 2), (11,)),
                                           (nn.BatchNorm2d(4), (3, 5, 5))])
def test_worked_out_shapes_refuse_what_a_real_forward_refuses(layers, shape):
    with pytest.raises(RuntimeError):
        layers.eval()(torch.zeros(2, *shape))
    with pytest.raises(ValueError):
        shapes.output_shape(layers, shape)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_channels, size", [(1, (28, 28)), (3, (32, 32)), (1, (13, 21)), (3, (64, 48))])
def test_meta_builds_agree_with_real_builds(name, in_channels, size):
    # the meta build (config check) gives every model the same layers as the real one
    real = create_model(name, num_classes=10, in_channels=in_channels, input_size=size)
    with torch.device("meta"):
        meta = get_spec(name).factory(num_classes=10, in_channels=in_channels, input_size=size)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert shapes.output_shape(meta.backbone, (in_channels, *size)) == (real.head.in_features,)


def test_checking_a_config_runs_no_meta_kernel(tmp_path):
    # meta ReLU / BatchNorm kernels import torch._dynamo: ~1.5 s on every `convtrain train` before this
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from convtrain.config import load_config\n"
            "for c in sorted(Path('configs').glob('*.yaml')): load_config(c, [])\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
