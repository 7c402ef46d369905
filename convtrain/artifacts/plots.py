"""Pictures of a run: learning curves and confusion matrix (matplotlib, optional), and the conv
layers' kernels and feature maps (plain PIL through torchvision, always available).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from .. import atomic
from ..errors import OutputError, RunFileError
from ..extras import missing_extra
from . import runfiles
from .metrics import MetricsRow

CURVES_SIZE = (1200, 450)  # pixels: figsize x dpi below
CONFUSION_SIZE = (700, 600)
MAX_COUNTS_SHOWN = 30  # classes up to which the confusion matrix prints its counts




class _Figures:
    """pyplot's ``subplots`` and ``close`` without pyplot: figures that belong to no backend and are
    saved to files only. pyplot (or ``matplotlib.use("Agg")``) would change the process's backend,
    and a notebook that trained through the Python API would then show none of its own figures."""

    def __init__(self, figure_class) -> None:
        self._figure = figure_class

    def subplots(self, *args, figsize=None, dpi=None, **kwargs):
        fig = self._figure(figsize=figsize, dpi=dpi)
        return fig, fig.subplots(*args, **kwargs)

    def close(self, fig) -> None:
        pass  # nothing registered it: it is freed with its last reference


def _pyplot() -> _Figures:
    try:
        import matplotlib
        from matplotlib.figure import Figure

        # class, run and folder names are text: '$\\foo$' as mathtext failed to render after the run finished
        matplotlib.rcParams["text.parse_math"] = False
    except ImportError:
        raise missing_extra("plot", "drawing the plots", "matplotlib") from None
    return _Figures(Figure)


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ``curves.png`` (loss and accuracy per epoch) and ``confusion.png`` (test set) into the run.

    Reads the run through :mod:`runfiles` only: no lock, nothing deleted, safe while the run trains.
    Both pictures are rendered to temporary files first and renamed into place, so a failed write
    leaves the run as it was.
    """
    run = runfiles.require_run_dir(run_dir)
    info = runfiles.read_run_info(run)
    rows = runfiles.read_metrics(run)
    results = runfiles.read_results(run)
    if not rows:
        raise RunFileError(f"{run / 'metrics.csv'} has no epochs yet: nothing to plot")
    plt = _pyplot()
    figures = {"curves.png": _curves_figure(plt, rows, run.name + (f" ({info.model})" if info.model else ""))}
    if results is not None and results.confusion_matrix is not None:
        accuracy = "" if results.test_accuracy is None else f": test accuracy {results.test_accuracy:.4f}"
        figures["confusion.png"] = _confusion_figure(plt, results.confusion_matrix, results.classes,
                                                     f"{run.name}{accuracy}")
    return _save_figures(plt, figures, run)


def _curves_figure(plt, rows: list[MetricsRow], title: str):
    epochs = [r.epoch for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(CURVES_SIZE[0] / 100, CURVES_SIZE[1] / 100), dpi=100)
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "-^")):
        loss = [getattr(r, f"{split}_loss") for r in rows]
        acc = [getattr(r, f"{split}_acc") for r in rows]
        if any(v is not None for v in loss):
            ax_loss.plot(epochs, [math.nan if v is None else v for v in loss], style, label=split)
            ax_acc.plot(epochs, [math.nan if v is None else v for v in acc], style, label=split)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save_figures(plt, figures: dict, run: Path) -> list[Path]:
    """Save each figure as RUN/NAME: all to temporary files, then renamed; on any error none is replaced."""
    written: list[Path] = []
    dest = run
    try:
        with contextlib.ExitStack() as stack:  # the renames happen only once every figure is written
            for name, fig in figures.items():
                dest = run / name
                if dest.is_dir():
                    raise RunFileError(f"cannot write {dest}: a directory is in the way; move it away")
                with open(stack.enter_context(atomic.replacing(dest)), "wb") as f:
                    fig.savefig(f, format="png")
                written.append(dest)
    except OSError as exc:
        raise RunFileError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        for fig in figures.values():
            plt.close(fig)
    return written




def _confusion_figure(plt, matrix, classes, title: str):
    cm = torch.tensor(matrix, dtype=torch.float64)
    n = cm.shape[0]
    labels = classes or [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(CONFUSION_SIZE[0] / 100, CONFUSION_SIZE[1] / 100), dpi=100)
    # row-normalised colours (recall per class), raw counts as text
    shown = cm / cm.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(n if n <= MAX_COUNTS_SHOWN else 0):  # counts of 100+ classes would be unreadable (and slow)
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _grid(maps: torch.Tensor, scale: int, path: Path) -> Path:
    """Save ``[N, H, W]`` maps as one grid, each map min-max scaled on its own, 8 per row."""
    from torchvision.utils import save_image

    lo = maps.flatten(1).min(1).values.view(-1, 1, 1)
    hi = maps.flatten(1).max(1).values.view(-1, 1, 1)
    maps = (maps - lo) / (hi - lo).clamp(min=1e-12)
    maps = maps.repeat_interleave(scale, 1).repeat_interleave(scale, 2).unsqueeze(1)
    try:
        save_image(maps, path, nrow=8, padding=2, pad_value=1.0)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
