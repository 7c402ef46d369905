"""Turn an image someone hands us (a file, uploaded bytes) into a model input shaped like the training data.

One function, :func:`image_to_input`, shared by ``convtrain predict``, ``convtrain visualize`` and
the web service, so an image gets exactly the same treatment everywhere. It decodes only within
limits: an image file is untrusted input, and a 2 KB PNG can declare 100,000 x 100,000 pixels.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

MAX_BYTES = 20 * 1024 * 1024  # 20 MB: far above any photo of a digit, far below a memory problem
MAX_PIXELS = 50_000_000  # 50 Mpx (about 7000 x 7000): decoded as RGB floats that is 600 MB already
INVERT_CHOICES = ("auto", "yes", "no")
# The one list of image file suffixes (any case): what folder training reads and what predict takes from a folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

Source = Union[str, Path, bytes, bytearray, memoryview, BinaryIO]


def _read_bytes(source: Source, name: str, max_bytes: int) -> bytes:
    """The encoded image, refusing more than ``max_bytes`` before reading them all."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        try:
            # O_NONBLOCK: opening a FIFO named x.png must not wait for a writer; the limit is on what is
            # read, not on st_size (0 for /dev/zero and FIFOs, which are refused before any read)
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISDIR(st.st_mode):
                    raise IsADirectoryError
                if not stat.S_ISREG(st.st_mode):
                    raise DataError(f"image {name} is not a regular file (a pipe, socket or device)")
                if st.st_size > max_bytes:
                    raise DataError(f"image {name} is {_mb(st.st_size)}, over the limit of {_mb(max_bytes)}")
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise DataError(f"image not found: {name}") from None
        except IsADirectoryError:
            raise DataError(f"image {name} is a directory") from None
        except OSError as exc:
            raise DataError(f"cannot read image {name}: {exc.strerror or exc}") from None
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise DataError(f"image {name} is over the limit of {_mb(max_bytes)}")
    return data


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def _decode(data: bytes, mode: str, name: str, max_pixels: int):
    """Decode with Pillow after checking the declared size; Pillow's bomb warning becomes an error."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size  # read from the header: nothing is decoded yet
                if w * h > max_pixels:
                    raise DataError(f"image {name} is {w}x{h} = {w * h / 1e6:.3g} Mpx, over the limit of "
                                    f"{max_pixels / 1e6:.3g} Mpx")
                im.load()
                return im.convert(mode)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checks its own limit (89 Mpx warns, 179 Mpx fails) inside open(), before we see the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if found and int(found.group(1)) > max_pixels:
            raise DataError(f"image {name} is {int(found.group(1)) / 1e6:.3g} Mpx, over the limit of "
                            f"{max_pixels / 1e6:.3g} Mpx") from None
        raise DataError(f"image {name} is too large to decode safely: {exc}") from None
    except Exception as exc:  # Pillow raises many types for broken files (OSError, ValueError, SyntaxError...)
        raise DataError(f"cannot decode image {name}: {str(exc) or type(exc).__name__}") from None


def check_invert(invert: str) -> None:
    """ConfigError unless ``invert`` is auto, yes or no (commands check it before loading anything)."""
    if invert not in INVERT_CHOICES:
        raise ConfigError(f"--invert must be auto, yes or no, got '{invert}'")


def image_to_input(source: Source, channels: int, size: tuple[int, int], invert: str = "auto", *,
                   name: str | None = None, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode ``source`` (a path, raw bytes or a binary file object) to uint8 ``[channels, H, W]``.

    The image is converted to grayscale (or RGB), padded to a square with its own background
    colour (so the digit keeps its aspect ratio and stays centred), and resized to ``size``.
    MNIST-style data is light ink on a dark background: with ``invert="auto"`` an image whose
    border is mostly light (dark ink on paper) is inverted; ``"yes"``/``"no"`` force it.
    ``name`` is how errors call the image (default: the path, or ``<image>`` for bytes).
    Every failure is a :class:`DataError` naming the image (a ConfigError for a bad ``invert``).
    """
    check_invert(invert)
    if channels not in (1, 3):
        raise DataError(f"image files can feed models with 1 (grayscale) or 3 (RGB) input channels, not {channels}")
    if name is None:
        name = str(source) if isinstance(source, (str, Path)) else str(getattr(source, "name", "<image>"))
    im = _decode(_read_bytes(source, name, max_bytes), "L" if channels == 1 else "RGB", name, max_pixels)
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, channels)
    x = x.permute(2, 0, 1).float()
    if invert == "yes" or (invert == "auto" and float(_border(x).mean()) > 127.5):
        x = 255.0 - x
    h, w = x.shape[1:]
    side = max(h, w)
    fill = float(_border(x).median())
    top, left = (side - h) // 2, (side - w) // 2
    x = F.pad(x, (left, side - w - left, top, side - h - top), value=fill)
    if (side, side) != tuple(size):
        x = F.interpolate(x.unsqueeze(0), size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def _border(x: torch.Tensor) -> torch.Tensor:
    """The outermost rows and columns of ``[C, H, W]``: the image's background colour."""
    return torch.cat([x[:, 0, :], x[:, -1, :], x[:, :, 0], x[:, :, -1]], dim=1)
