"""``convtrain conv``: one convolution explained step by step, checked against PyTorch."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .edge import handle_errors, out


@handle_errors
def conv(
    input: Optional[str] = typer.Option(None, "--input", help="Input rows separated by ';' (default: the article's 3x3).",
                                        show_default=False),
    kernel: Optional[str] = typer.Option(None, "--kernel", help="Kernel rows separated by ';' (default: 1 0; 1 1).",
                                         show_default=False),
    bias: Optional[float] = typer.Option(None, "--bias", help="Bias added to every output (default: 1).",
                                         show_default=False),
    stride: str = typer.Option("1", "--stride", help="Stride: N or H,W."),
    padding: str = typer.Option("0", "--padding", help="Zero padding: N or H,W."),
    dilation: str = typer.Option("1", "--dilation", help="Dilation: N or H,W."),
    as_json: bool = typer.Option(False, "--json", help="Print the computation as JSON."),
) -> None:
    """Explain one convolution step by step (the article's section-4 example by default).

    Example: convtrain conv --input "1 2 3; 4 5 6; 7 8 9" --kernel "1 0; 1 1" --stride 2 --padding 1
    """
    import dataclasses

    from ..ops.explain import ARTICLE_BIAS, ARTICLE_INPUT, ARTICLE_KERNEL, explain, parse_matrix, parse_pair

    article = input is None and kernel is None and bias is None and (stride, padding, dilation) == ("1", "0", "1")
    ex = explain(parse_matrix(ARTICLE_INPUT if input is None else input, "input"),
                 parse_matrix(ARTICLE_KERNEL if kernel is None else kernel, "kernel"),
                 ARTICLE_BIAS if bias is None else bias, parse_pair(stride, "stride", 1),
                 parse_pair(padding, "padding", 0), parse_pair(dilation, "dilation", 1))
    if as_json:
        print(json.dumps({**dataclasses.asdict(ex), "agrees": ex.agrees}))
        return
    _render(ex, article)
    if not ex.agrees:
        raise typer.Exit(1)


def _render(ex, article: bool) -> None:
    """The computation as a person reads it: formula, matrices, each window's products and sum."""
    from ..ops.explain import ARTICLE_ERRATA

    num = _num
    out.print("[bold]2-D convolution, step by step[/]")
    out.print("PyTorch's convolution is a cross-correlation: the kernel is laid on each window as it is, "
              "[bold]not flipped[/]. " + escape("Y[i, j] = b + sum_p sum_q X_pad[i*stride_h + p*dilation_h, "
                                                 "j*stride_w + q*dilation_w] * K[p, q]"))
    out.print(_matrix_table("input X" + (f" (zero-padded by {ex.padding[0]},{ex.padding[1]})" if any(ex.padding) else ""),
                            ex.padded))
    out.print(_matrix_table("kernel K", ex.kernel))
    out.print(f"bias b = {num(ex.bias)}; stride {ex.stride[0]},{ex.stride[1]}; dilation {ex.dilation[0]},{ex.dilation[1]}")
    out.print("[bold]output size[/]")
    for f in ex.formulas:
        out.print("  " + f)
    for wdw in ex.windows:
        terms = " + ".join(f"{num(x)}x{num(k)}" for prow, krow in zip(wdw.patch, ex.kernel) for x, k in zip(prow, krow))
        out.print(f"[bold]Y\\[{wdw.out_row}, {wdw.out_col}][/]: window rows {','.join(map(str, wdw.rows))}, "
                  f"cols {','.join(map(str, wdw.cols))} = {escape(_inline(wdw.patch))}")
        out.print(f"    products {escape(_inline(wdw.products))}")
        out.print(f"    {terms} = {num(wdw.total)};  + b {num(ex.bias)} = [bold]{num(wdw.value)}[/]")
    out.print(_matrix_table("output Y (step by step)", ex.output))
    out.print(_matrix_table("torch.nn.functional.conv2d", ex.torch_output))
    check = "[green]agree[/]" if ex.agrees else "[red]DISAGREE[/]"
    out.print(f"step-by-step, F.conv2d and convtrain.ops.conv2d {check} (max |difference| {ex.max_abs_diff:.3g})")
    if article:
        out.print(f"[dim]{escape(ARTICLE_ERRATA)}[/]")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _inline(m) -> str:
    return "[" + "; ".join(" ".join(_num(v) for v in row) for row in m) + "]"


def _matrix_table(title: str, m) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    for _ in m[0]:
        t.add_column(justify="right")
    for row in m:
        t.add_row(*(_num(v) for v in row))
    return t
