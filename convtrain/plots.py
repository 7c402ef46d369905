"""Pictures of a run: learning curves and confusion matrix (matplotlib, optional), and the conv
layers' kernels and feature maps (plain PIL through torchvision, always available)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, data, ops, runfiles
from .errors import CheckpointError, ConfigError, ConvtrainError, DataError, RunFileError
from .metrics import MetricsRow

CURVES_SIZE = (1200, 450)  # pixels: figsize x dpi below
CONFUSION_SIZE = (700, 600)
MAX_COUNTS_SHOWN = 30  # classes up to which the confusion matrix prints its counts


class MissingExtra(ConvtrainError):
    """An optional package is needed for this command."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtra("plots need matplotlib: pip install 'convtrain[plot]'") from None
    return plt


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
    temps: dict[Path, Path] = {}
    try:
        for name, fig in figures.items():
            dest = run / name
            if dest.is_dir():
                raise RunFileError(f"cannot write {dest}: a directory is in the way; move it away")
            tmp = run / f".{name}.tmp-{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    temps[dest] = tmp
                    fig.savefig(f, format="png")
            except OSError as exc:
                raise RunFileError(f"cannot write {dest}: {exc.strerror or exc}") from None
        for dest, tmp in temps.items():
            try:
                os.replace(tmp, dest)
            except OSError as exc:
                raise RunFileError(f"cannot write {dest}: {exc.strerror or exc}") from None
        return list(temps)
    finally:
        for fig in figures.values():
            plt.close(fig)
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)  # only our own temporary files, left over by a failure


def _confusion_png(plt, matrix, classes, path: Path, title: str) -> Path:
    """Save the confusion matrix picture at ``path`` (for callers that want one file, not a run)."""
    fig = _confusion_figure(plt, matrix, classes, title)
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


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


CONV_TYPES = (nn.Conv2d, ops.Conv2d)


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


class OutputError(ConvtrainError):
    """An output file or folder cannot be written (read-only, disk full)."""


def default_visualize_dir(ckpt_path: Path) -> Path:
    """``RUN/visualize`` for a checkpoint inside a run (RUN/checkpoints/X.pt next to RUN/config.yaml);
    otherwise ``<stem>-visualize/`` next to the checkpoint, so nothing outside its folder is touched."""
    ckpt_path = Path(ckpt_path)
    run = ckpt_path.parent.parent
    if ckpt_path.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return run / "visualize"
    return ckpt_path.parent / f"{ckpt_path.stem}-visualize"


def prepare_output_dir(out: Path) -> Path:
    """Create ``out`` (not its parents): a missing parent or a file in the way is a ConfigError (exit 2)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output folder {out} is a file; give a folder with --output-dir")
    if not out.parent.is_dir():
        raise ConfigError(f"the output folder's parent {out.parent} does not exist; create it first")
    try:
        out.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"cannot write into the output folder {out}: permission denied")
    return out


def _feature_maps(model: nn.Module, convs: list[tuple[str, nn.Module]], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every conv layer's output for one normalized image ``[1, C, H, W]``."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, name=name: captured.__setitem__(name, o.detach()))
             for name, m in convs]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return captured


def visualize(ckpt_path: str | Path, image: str | Path | None = None, output_dir: str | Path | None = None,
              data_root: str | None = None, invert: str = "auto") -> list[Path]:
    """PNG grids of the first conv layer's kernels and of every conv layer's feature maps for one image.

    The image is a file, or by default the first image of the checkpoint's test set. Files go to
    ``output_dir`` (default: :func:`default_visualize_dir`). Everything is computed before the
    folder is created, so a failure writes nothing.
    """
    from .preprocess import check_invert, image_to_input

    check_invert(invert)
    ckpt = checkpoint.open_checkpoint(ckpt_path)
    model = ckpt.rebuild()
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    if not convs:
        raise ConvtrainError(f"model '{ckpt.model_name}' has no conv layers to visualize")
    if image is not None:
        x = image_to_input(Path(image), ckpt.in_channels, ckpt.input_size, invert)
    else:
        if ckpt.dataset not in data.DATASETS:
            raise DataError(f"dataset '{ckpt.dataset}' of {ckpt_path} is not registered here; pass an IMAGE file")
        try:
            test = data.load_split(ckpt.dataset, ckpt.data_root(data_root), train=False, download=False)
        except DataError as exc:
            raise DataError(f"{exc} (or pass an IMAGE file)") from None
        x = test.images[0]
        if tuple(x.shape) != ckpt.image_shape:
            raise CheckpointError(f"{ckpt_path} expects images of shape {list(ckpt.image_shape)}, "
                                  f"dataset '{ckpt.dataset}' has {list(x.shape)}; pass an IMAGE file")
    captured = _feature_maps(model, convs, ckpt.normalizer("cpu")(x.unsqueeze(0)))
    out = prepare_output_dir(Path(output_dir) if output_dir else default_visualize_dir(Path(ckpt_path)))
    kernels = convs[0][1].weight.detach().float()
    written = [_grid(kernels.mean(1) if kernels.shape[1] > 1 else kernels[:, 0], 8, out / "kernels.png")]
    for name, _ in convs:
        fmap = captured[name][0]
        scale = max(1, 28 // fmap.shape[-1])  # small maps are enlarged so they stay visible
        written.append(_grid(fmap, scale, out / f"featuremaps_{name.replace('.', '_')}.png"))
    return written
