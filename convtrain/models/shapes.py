"""Output shapes of the layers the registered models are built from, worked out from each layer's
settings instead of running it.

Why: checking a config builds its model on PyTorch's meta device (no memory, so a model with a
billion parameters is refused without allocating it). Running a forward there costs ~1.5 s the first
time, because meta ReLU, BatchNorm and other element-wise kernels are Python functions that import
torch._dynamo. A shape rule per layer type costs microseconds. For a layer not listed here the
callers fall back to a real (meta) forward, so a new layer type is slower to check, never wrong.
"""

from __future__ import annotations

import math

from torch import nn

from .. import ops

Shape = tuple[int, ...]  # one sample: (channels, height, width), or (features,) after a flatten

# layers that keep the shape of their input
_SAME = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout, nn.Dropout2d)


class Unknown(Exception):
    """A layer without a shape rule here: run it instead."""


def output_shape(module: nn.Module, shape: Shape) -> Shape:
    """The shape of ``module``'s output for one input of ``shape``.

    Raises ValueError where PyTorch's forward would fail (a feature map smaller than a kernel, a
    channel or feature count that does not match), :class:`Unknown` for a layer it has no rule for.
    """
    if isinstance(module, nn.Sequential):
        for layer in module:
            shape = output_shape(layer, shape)
        return shape
    if isinstance(module, _SAME):
        return shape
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _expect(shape, 0, module.num_features, "BatchNorm num_features")
    if isinstance(module, (nn.Conv2d, ops.Conv2d)):
        return _conv(module, shape)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool(module, shape)
    if isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1:
        return (math.prod(shape),)
    if isinstance(module, nn.Linear):
        return (*_expect(shape, -1, module.in_features, "Linear in_features")[:-1], module.out_features)
    raise Unknown(type(module).__name__)


def _expect(shape: Shape, dim: int, size: int, what: str) -> Shape:
    if shape[dim] != size:
        raise ValueError(f"{what} is {size}, but its input has {shape[dim]} there (input shape {shape})")
    return shape


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _spatial(shape: Shape, kernel, stride, padding, dilation, ceil_mode: bool = False) -> tuple[int, int]:
    out = []
    for size, k, s, p, d in zip(shape[1:], _pair(kernel), _pair(stride), _pair(padding), _pair(dilation)):
        span = size + 2 * p - d * (k - 1) - 1
        n = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (n - 1) * s >= size + p:  # PyTorch: the last window must start inside the input
            n -= 1
        if span < 0 or n < 1:
            raise ValueError(f"the feature map shrinks to nothing: {shape[1]}x{shape[2]} is smaller than the "
                             f"{_pair(kernel)[0]}x{_pair(kernel)[1]} window of a layer")
        out.append(n)
    return out[0], out[1]


def _conv(conv, shape: Shape) -> Shape:
    if len(shape) != 3 or isinstance(conv.padding, str):  # 'same' / 'valid': leave it to the layer itself
        raise Unknown("Conv2d with string padding")
    _expect(shape, 0, conv.in_channels, "Conv2d in_channels")
    return (conv.out_channels, *_spatial(shape, conv.kernel_size, conv.stride, conv.padding, conv.dilation))


def _pool(pool, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise Unknown("pool on a flat input")
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    dilation = getattr(pool, "dilation", 1)
    return (shape[0], *_spatial(shape, pool.kernel_size, stride, pool.padding, dilation, pool.ceil_mode))
