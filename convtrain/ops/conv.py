"""2-D convolution from scratch: im2col + matrix multiply, with a hand-written backward.

PyTorch's "convolution" is a cross-correlation: the kernel is *not* flipped. For one output
position ``(n, o, i, j)`` with ``groups == 1``::

    y[n, o, i, j] = b[o] + sum_{c, p, q} w[o, c, p, q] * x_pad[n, c, i*sh + p*dh, j*sw + q*dw]

``im2col`` copies every receptive field into a column, so the sum above becomes one matrix
product per group; ``col2im`` is its adjoint (it scatters columns back and adds overlaps), which
is exactly what the input gradient needs. docs/convolution.md derives each formula and points to the
line that implements it.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

IntOrPair = Union[int, tuple[int, int], list[int]]


def _pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def output_size(size: int, kernel: int, stride: int = 1, pad_before: int = 0, pad_after: int = 0, dilation: int = 1) -> int:
    """Output length along one axis: floor((size + pads - dilation*(kernel-1) - 1) / stride) + 1."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def resolve_padding(padding: IntOrPair | str, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right). ``"same"`` puts the odd pixel at the bottom/right, as PyTorch does."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is only supported with stride 1")
            total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def im2col(x_pad: Tensor, kernel: tuple[int, int], out_hw: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int]) -> Tensor:
    """Every receptive field as a column: ``[N, C*kH*kW, oH*oW]``, the layout ``F.unfold`` returns.

    It is built as a strided *view* whose element ``[n, c, p, q, i, j]`` is
    ``x_pad[n, c, i*sh + p*dh, j*sw + q*dw]`` (the convolution's index formula, verbatim), then
    copied once into a matrix. No Python loop touches the pixels.
    """
    x_pad = x_pad.contiguous()
    n, c = x_pad.shape[:2]
    s_n, s_c, s_h, s_w = x_pad.stride()
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    windows = x_pad.as_strided((n, c, kh, kw, oh, ow), (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw))
    return windows.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: Tensor, channels: int, padded_hw: tuple[int, int], kernel: tuple[int, int],
           out_hw: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """The adjoint of :func:`im2col`: add every column entry back onto the pixel it was copied from.

    One strided slice-add per kernel offset ``(p, q)``: pixels that several windows share receive
    the sum of their gradients, which is exactly what the chain rule asks for.
    """
    n = cols.shape[0]
    (kh, kw), (oh, ow), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    per_offset = cols.view(n, channels, kh, kw, oh, ow)
    out = cols.new_zeros(n, channels, *padded_hw)
    for p in range(kh):
        for q in range(kw):
            out[:, :, p * dh: p * dh + sh * (oh - 1) + 1: sh, q * dw: q * dw + sw * (ow - 1) + 1: sw] += per_offset[:, :, p, q]
    return out


class _Conv2dFunction(torch.autograd.Function):
    """Forward by im2col + matmul; backward written out by hand (no autograd inside)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                pads: tuple[int, int, int, int], dilation: tuple[int, int], groups: int) -> Tensor:
        top, bottom, left, right = pads
        x_pad = F.pad(x, (left, right, top, bottom)) if any(pads) else x
        n, c, h, w = x_pad.shape
        out_c, c_per_group, kh, kw = weight.shape
        oh = output_size(h, kh, stride[0], dilation=dilation[0])
        ow = output_size(w, kw, stride[1], dilation=dilation[1])
        g, k = groups, c_per_group * kh * kw
        # cols[n, g, k, l]: receptive field l (of oh*ow) flattened to k = c_per_group*kh*kw values.
        cols = im2col(x_pad, (kh, kw), (oh, ow), stride, dilation).view(n, g, k, oh * ow)
        w_mat = weight.reshape(g, out_c // g, k)
        # y[n, g, o, l] = sum_k W[g, o, k] * cols[n, g, k, l]                       (forward)
        out = torch.matmul(w_mat.unsqueeze(0), cols).view(n, out_c, oh, ow)
        if bias is not None:
            out = out + bias.view(1, out_c, 1, 1)
        ctx.save_for_backward(cols, weight)
        ctx.has_bias = bias is not None
        ctx.geometry = (c, (h, w), (oh, ow), stride, pads, dilation, groups)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        cols, weight = ctx.saved_tensors
        channels, padded_hw, out_hw, stride, pads, dilation, groups = ctx.geometry
        n = grad_out.shape[0]
        out_c, c_per_group, kh, kw = weight.shape
        g, k = groups, c_per_group * kh * kw
        go = grad_out.reshape(n, g, out_c // g, -1)  # [n, g, o, l]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            w_mat = weight.reshape(g, out_c // g, k)
            # dL/dcols[n, g, k, l] = sum_o W[g, o, k] * dL/dy[n, g, o, l]            (input grad, 1/2)
            grad_cols = torch.matmul(w_mat.transpose(1, 2).unsqueeze(0), go).reshape(n, g * k, -1)
            # each column entry flows back to the pixel it was copied from             (input grad, 2/2)
            grad_pad = col2im(grad_cols, channels, padded_hw, (kh, kw), out_hw, stride, dilation)
            top, bottom, left, right = pads
            grad_x = grad_pad[:, :, top:padded_hw[0] - bottom, left:padded_hw[1] - right]
        if ctx.needs_input_grad[1]:
            # dL/dW[g, o, k] = sum_{n, l} dL/dy[n, g, o, l] * cols[n, g, k, l]        (weight grad)
            grad_w = torch.matmul(go, cols.transpose(-1, -2)).sum(0).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # dL/db[o] = sum_{n, i, j} dL/dy[n, o, i, j]                               (bias grad)
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: IntOrPair = 1,
           padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1) -> Tensor:
    """Drop-in for :func:`torch.nn.functional.conv2d`, computed from scratch.

    ``input`` is ``(N, C, H, W)`` or unbatched ``(C, H, W)``; ``weight`` is
    ``(out_channels, C // groups, kH, kW)``. Raises ``ValueError`` for inconsistent shapes.
    """
    stride_p = _pair(stride, "stride", 1)
    dilation_p = _pair(dilation, "dilation", 1)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kH, kW), got shape {tuple(weight.shape)}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if input.dim() != 4:
        raise ValueError(f"input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    out_c, c_per_group, kh, kw = weight.shape
    in_c = input.shape[1]
    if in_c % groups or out_c % groups:
        raise ValueError(f"in_channels ({in_c}) and out_channels ({out_c}) must both be divisible by groups ({groups})")
    if in_c // groups != c_per_group:
        raise ValueError(f"weight expects {c_per_group * groups} input channels ({c_per_group} per group x {groups} groups), "
                         f"input has {in_c}")
    if bias is not None and tuple(bias.shape) != (out_c,):
        raise ValueError(f"bias must have shape ({out_c},), got {tuple(bias.shape)}")
    pads = resolve_padding(padding, (kh, kw), stride_p, dilation_p)
    padded_h, padded_w = input.shape[2] + pads[0] + pads[1], input.shape[3] + pads[2] + pads[3]
    eff_h, eff_w = dilation_p[0] * (kh - 1) + 1, dilation_p[1] * (kw - 1) + 1
    if eff_h > padded_h or eff_w > padded_w:
        raise ValueError(f"kernel ({eff_h}x{eff_w} with dilation) is larger than the padded input ({padded_h}x{padded_w})")
    out = _Conv2dFunction.apply(input, weight, bias, stride_p, pads, dilation_p, groups)
    return out.squeeze(0) if unbatched else out


class Conv2d(nn.Module):
    """Same constructor, parameters and default initialization as :class:`torch.nn.Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair | str = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", 0)
        self.padding_mode = padding_mode
        # Validates 'same' against the stride now rather than at the first forward.
        self._pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's default: kaiming_uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
        # the weight, and the same bound for the bias. docs/convolution.md explains the choice.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            top, bottom, left, right = self._pads
            x = F.pad(x, (left, right, top, bottom), mode=self.padding_mode)
            return conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s
