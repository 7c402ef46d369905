"""One 2-D convolution, computed window by window so every number can be shown.

This is the article's section 4 as working code. Like PyTorch, it computes a cross-correlation:
the kernel is laid on each window as it is, not flipped. The result is checked against
``torch.nn.functional.conv2d`` and against convtrain's own :func:`convtrain.ops.conv2d`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import conv2d as scratch_conv2d

# The article's section 4.3 setting: a 3x3 input, the 2x2 kernel K1 = [1 0; 1 1], bias 1.
ARTICLE_INPUT = "1 2 3; 4 5 6; 7 8 9"
ARTICLE_KERNEL = "1 0; 1 1"
ARTICLE_BIAS = 1.0

# Limits that keep `convtrain conv` an explanation: every window is printed, so a few thousand
# cells is already more than anyone reads, and larger inputs would only hang the terminal.
MAX_CELLS = 10_000  # of the zero-padded input, and of the kernel
MAX_PRODUCTS = 1_000_000  # output cells x kernel cells
MAX_STEP = 1_000  # stride, padding and dilation

ARTICLE_ERRATA = (
    "The article's worked example (section 4.3) differs from this in three ways: it uses a different kernel "
    "for each window (K1, then K2), but a convolution slides one kernel over every window; its windows "
    "[1 2; 3 4] and [5 6; 7 8] cannot both come from one 3x3 input; and its second sum is wrong: "
    "5x0 + 6x1 + 7x1 + 8x1 + 1 = 22, not 21. A 3x3 input and a 2x2 kernel at stride 1 give a 2x2 output "
    "(4 windows), not 1x2."
)


def parse_matrix(text: str, what: str) -> list[list[float]]:
    """Parse ``"1 2 3; 4 5 6"`` (rows split by ';', values by spaces or commas)."""
    rows = [r for r in (part.strip() for part in text.split(";")) if r]
    if not rows:
        raise ConfigError(f"--{what}: empty matrix; write rows separated by ';', e.g. \"1 2; 3 4\"")
    matrix = []
    for r in rows:
        try:
            matrix.append([float(v) for v in re.split(r"[\s,]+", r) if v])
        except ValueError:
            raise ConfigError(f"--{what}: '{r}' is not a row of numbers") from None
    if not matrix[0]:
        raise ConfigError(f"--{what}: empty matrix; write rows separated by ';', e.g. \"1 2; 3 4\"")
    if len({len(r) for r in matrix}) != 1:
        raise ConfigError(f"--{what}: rows have different lengths ({', '.join(str(len(r)) for r in matrix)})")
    if len(matrix) * len(matrix[0]) > MAX_CELLS:
        raise ConfigError(f"--{what}: {len(matrix)}x{len(matrix[0])} is more than the {MAX_CELLS:,} cells "
                          "this step-by-step explanation shows; use a smaller matrix")
    return matrix


def parse_pair(text: str, what: str, minimum: int) -> tuple[int, int]:
    """``"2"`` -> (2, 2); ``"1,2"`` -> (1, 2)."""
    parts = [p for p in re.split(r"[\s,x]+", str(text).strip()) if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < minimum or max(values) > MAX_STEP:
        raise ConfigError(f"--{what} must be an integer from {minimum} to {MAX_STEP:,} or a pair like 1,2; "
                          f"got '{_clip(text)}'")
    return values[0], values[1]


@dataclass
class Window:
    out_row: int
    out_col: int
    rows: list[int]  # rows of the padded input that this window reads
    cols: list[int]
    patch: list[list[float]]
    products: list[list[float]]
    total: float  # sum of products
    value: float  # total + bias


@dataclass
class Explanation:
    input: list[list[float]]
    padded: list[list[float]]
    kernel: list[list[float]]
    bias: float
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    windows: list[Window] = field(default_factory=list)
    output: list[list[float]] = field(default_factory=list)
    torch_output: list[list[float]] = field(default_factory=list)
    scratch_output: list[list[float]] = field(default_factory=list)
    max_abs_diff: float = 0.0
    formulas: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.max_abs_diff <= 1e-9


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b|, where NaN equals NaN and inf equals inf (same non-finite result = agreement).

    A NaN or inf on one side only is an infinite difference.
    """
    same = (a == b) | (a.isnan() & b.isnan())
    diff = (a - b).abs().nan_to_num(nan=math.inf)
    return float(diff.masked_fill(same, 0.0).max()) if diff.numel() else 0.0


def explain(input: list[list[float]], kernel: list[list[float]], bias: float = 0.0, stride=(1, 1), padding=(0, 0),
            dilation=(1, 1)) -> Explanation:
    """Compute ``Y = X (*) K + b`` one window at a time and check it against PyTorch."""
    h, w = len(input), len(input[0])
    kh, kw = len(kernel), len(kernel[0])
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    if (h + 2 * ph) * (w + 2 * pw) > MAX_CELLS:  # checked before the padded copy is made
        raise ConfigError(f"--padding: the padded input would be {h + 2 * ph}x{w + 2 * pw}, more than the "
                          f"{MAX_CELLS:,} cells this explanation shows; use less padding or a smaller input")
    padded = [[0.0] * (w + 2 * pw) for _ in range(ph)] + \
             [[0.0] * pw + list(row) + [0.0] * pw for row in input] + \
             [[0.0] * (w + 2 * pw) for _ in range(ph)]
    eff_h, eff_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eff_h > h + 2 * ph or eff_w > w + 2 * pw:
        raise ConfigError(f"the kernel spans {eff_h}x{eff_w} (with dilation) but the padded input is only "
                          f"{h + 2 * ph}x{w + 2 * pw}")
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if oh * ow * kh * kw > MAX_PRODUCTS:
        raise ConfigError(f"--input/--kernel: {oh}x{ow} outputs of {kh}x{kw} products each is more than "
                          f"{MAX_PRODUCTS:,} products to show; use a smaller input or kernel, or a larger --stride")
    ex = Explanation(input, padded, kernel, bias, (sh, sw), (ph, pw), (dh, dw))
    ex.formulas = [
        f"out_{axis} = floor((in + 2*pad - dilation*(k - 1) - 1) / stride) + 1 = "
        f"floor(({n} + 2*{p} - {d}*({k} - 1) - 1) / {s}) + 1 = {o}"
        for axis, n, p, d, k, s, o in (("h", h, ph, dh, kh, sh, oh), ("w", w, pw, dw, kw, sw, ow))
    ]
    for i in range(oh):
        row = []
        for j in range(ow):
            rows = [i * sh + p * dh for p in range(kh)]
            cols = [j * sw + q * dw for q in range(kw)]
            patch = [[padded[r][c] for c in cols] for r in rows]
            products = [[patch[p][q] * kernel[p][q] for q in range(kw)] for p in range(kh)]
            total = sum(sum(r) for r in products)
            ex.windows.append(Window(i, j, rows, cols, patch, products, total, total + bias))
            row.append(total + bias)
        ex.output.append(row)
    x = torch.tensor(input, dtype=torch.float64).view(1, 1, h, w)
    k = torch.tensor(kernel, dtype=torch.float64).view(1, 1, kh, kw)
    b = torch.tensor([bias], dtype=torch.float64)
    ref = F.conv2d(x, k, b, stride=stride, padding=padding, dilation=dilation)[0, 0]
    mine = scratch_conv2d(x, k, b, stride=stride, padding=padding, dilation=dilation)[0, 0]
    ex.torch_output, ex.scratch_output = ref.tolist(), mine.tolist()
    ours = torch.tensor(ex.output, dtype=torch.float64)
    ex.max_abs_diff = max(max_difference(ours, ref), max_difference(mine, ref))
    return ex
