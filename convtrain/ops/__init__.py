"""From-scratch operators: the convolution the article explains, as working, verified code."""

from .conv import Conv2d, conv2d, output_size, resolve_padding

__all__ = ["Conv2d", "conv2d", "output_size", "resolve_padding"]
