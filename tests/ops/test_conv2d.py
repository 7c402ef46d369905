"""The from-scratch conv2d against PyTorch: forward values and hand-written gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convtrain.ops import Conv2d, conv2d

# (batch, in_ch, out_ch, H, W, kernel, stride, padding, dilation, groups)
GRID = [
    (1, 1, 1, 5, 5, 3, 1, 0, 1, 1),
    (2, 3, 4, 7, 6, (3, 2), 1, 1, 1, 1),  # non-square kernel, non-square input
    (3, 4, 6, 9, 9, 3, 2, (1, 2), 1, 2),  # grouped, stride 2, asymmetric padding pair
    (2, 4, 4, 8, 8, 3, 1, 1, 1, 4),  # depthwise
    (2, 2, 3, 10, 9, (2, 3), (2, 1), 0, (2, 1), 1),  # dilation and stride pairs
    (1, 6, 3, 7, 7, 1, 1, 0, 1, 3),  # 1x1 grouped
    (2, 2, 2, 6, 6, 4, 1, "same", 1, 1),  # even kernel: asymmetric 'same' padding
    (2, 2, 2, 6, 7, 3, 1, "same", 2, 2),
    (2, 3, 2, 5, 5, 2, 3, "valid", 1, 1),  # stride that does not divide evenly
    (4, 1, 32, 28, 28, 3, 1, 1, 1, 1),  # the article's first layer
]


def _make(b, cin, cout, h, w, k, groups, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(b, cin, h, w, generator=g, dtype=dtype)
    wt = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    return x, wt, bias


@pytest.mark.parametrize("case", GRID, ids=str)
def test_forward_matches_torch_float32(case):
    b, cin, cout, h, w, k, s, p, d, g = case
    x, wt, bias = _make(b, cin, cout, h, w, k, g, torch.float32, 0)
    ours = conv2d(x, wt, bias, s, p, d, g)
    ref = F.conv2d(x, wt, bias, s, p, d, g)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("case", GRID[:-1], ids=str)
def test_gradcheck_float64(case):
    b, cin, cout, h, w, k, s, p, d, g = case
    x, wt, bias = _make(b, cin, cout, h, w, k, g, torch.float64, 1)
    for t in (x, wt, bias):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, wt, bias: conv2d(x, wt, bias, s, p, d, g), (x, wt, bias))


@pytest.mark.parametrize("case", GRID, ids=str)
def test_gradients_match_torch(case):
    b, cin, cout, h, w, k, s, p, d, g = case
    x, wt, bias = _make(b, cin, cout, h, w, k, g, torch.float64, 2)
    grads = []
    for fn in (conv2d, F.conv2d):
        ins = [t.clone().requires_grad_(True) for t in (x, wt, bias)]
        out = fn(ins[0], ins[1], ins[2], s, p, d, g)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out))
        grads.append([t.grad for t in ins])
    for mine, ref in zip(*grads):
        torch.testing.assert_close(mine, ref)


def test_random_sweep_against_torch():
    """A seeded sweep over many more shapes than the explicit grid."""
    gen = torch.Generator().manual_seed(123)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=gen))]  # noqa: E731
    checked = 0
    for _ in range(60):
        groups = pick([1, 1, 2, 3])
        cin, cout = groups * pick([1, 2]), groups * pick([1, 2, 3])
        kh, kw = pick([1, 2, 3, 5]), pick([1, 2, 3])
        s, d = (pick([1, 2, 3]), pick([1, 2])), (pick([1, 2]), pick([1, 2]))
        p = (pick([0, 1, 2]), pick([0, 1]))
        h, w = pick([5, 8, 11]), pick([4, 7, 9])
        if d[0] * (kh - 1) + 1 > h + 2 * p[0] or d[1] * (kw - 1) + 1 > w + 2 * p[1]:
            continue
        x, wt, bias = _make(pick([1, 2, 3]), cin, cout, h, w, (kh, kw), groups, torch.float64, checked)
        x.requires_grad_(True)
        wt.requires_grad_(True)
        ours, ref = conv2d(x, wt, bias, s, p, d, groups), F.conv2d(x, wt, bias, s, p, d, groups)
        torch.testing.assert_close(ours, ref)
        gx, gw = torch.autograd.grad(ours.sum(), (x, wt))
        rx, rw = torch.autograd.grad(ref.sum(), (x, wt))
        torch.testing.assert_close(gx, rx)
        torch.testing.assert_close(gw, rw)
        checked += 1
    assert checked >= 40


def test_no_bias_unbatched_and_channels_last():
    x = torch.randn(3, 9, 9)
    wt = torch.randn(5, 3, 3, 3)
    torch.testing.assert_close(conv2d(x, wt), F.conv2d(x, wt), rtol=1e-5, atol=1e-5)
    xb = torch.randn(2, 3, 9, 9).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv2d(xb, wt, padding=1), F.conv2d(xb, wt, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (dict(x=(2, 3, 8, 8), w=(4, 2, 3, 3), groups=2), "divisible by groups"),
    (dict(x=(2, 4, 8, 8), w=(4, 3, 3, 3), groups=1), "weight expects 3 input channels"),
    (dict(x=(2, 1, 2, 2), w=(1, 1, 3, 3), groups=1), "larger than the padded input"),
    (dict(x=(8, 8), w=(1, 1, 3, 3), groups=1), "must be 3-D"),
    (dict(x=(1, 1, 8, 8), w=(1, 3, 3), groups=1), "weight must be 4-D"),
    (dict(x=(1, 1, 8, 8), w=(1, 1, 3, 3), groups=0), "groups must be a positive int"),
])
def test_clear_errors_for_inconsistent_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        conv2d(torch.randn(args["x"]), torch.randn(args["w"]), groups=args["groups"])


def test_same_padding_needs_stride_one():
    with pytest.raises(ValueError, match="stride 1"):
        conv2d(torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3), stride=2, padding="same")


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1, groups=2, bias=False),
    dict(in_channels=2, out_channels=2, kernel_size=3, padding="same", dilation=2),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=2, padding_mode="circular"),
])
def test_module_matches_nn_conv2d(kwargs):
    torch.manual_seed(0)
    ref = nn.Conv2d(**kwargs)
    torch.manual_seed(0)
    mine = Conv2d(**kwargs)
    # same default initialization: identical draws from the same seed
    assert torch.equal(mine.weight, ref.weight)
    assert (mine.bias is None) == (ref.bias is None)
    if mine.bias is not None:
        assert torch.equal(mine.bias, ref.bias)
    x = torch.randn(2, kwargs["in_channels"], 9, 8)
    torch.testing.assert_close(mine(x), ref(x), rtol=1e-5, atol=1e-5)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()]


def test_default_init_bounds():
    """PyTorch's default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    m = Conv2d(16, 32, 3)
    bound = 1 / (16 * 9) ** 0.5
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
    assert m.bias.abs().max() <= bound
    assert abs(float(m.weight.std()) - bound / 3 ** 0.5) < 0.1 * bound  # the std of U(-a, a) is a/sqrt(3)


def test_backward_is_hand_written():
    """The graph node is our autograd.Function, not a chain of autograd ops."""
    x = torch.randn(1, 1, 5, 5, requires_grad=True)
    out = conv2d(x, torch.randn(2, 1, 3, 3, requires_grad=True))
    assert type(out.grad_fn).__name__ == "_Conv2dFunctionBackward"
