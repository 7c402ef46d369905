"""The commands that take a checkpoint: ``eval``, ``calibrate``, ``predict``, ``export``, ``average``, ``visualize``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api
from ..data.sources import data_help, either, rows_help
from .edge import err, escape_end, handle_errors, out
from .options import DataRootOpt

CHECKPOINT_HELP = "Checkpoint: a .pt file, a run directory (its best.pt) or 'latest' (the newest finished run)."


@handle_errors
def eval_(
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False,
                                    help=CHECKPOINT_HELP),
    split: str = typer.Option("test", "--split", help="test, or val (the run's own held-out images)."),
    data_root: Optional[str] = DataRootOpt,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another registered dataset.",
                                          show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size.",
                                             show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
    data: Optional[str] = typer.Option(None, "--data", show_default=False,
                                       help=f"Evaluate on other labelled data with the same classes, {data_help()}: "
                                            "its test split, else all its images."),
    set_: Optional[list[str]] = typer.Option(None, "--set", show_default=False,
                                             help="A data key for this evaluation, e.g. data.test_size=0.2 "
                                                  "(with --data: hold out that much as the test split)."),
    report: Optional[str] = typer.Option(None, "--report", show_default=False, metavar="[DIR]",
                                         help="Also write a report into DIR (default, --report alone: RUN/report): "
                                              "report.json, report.md, a self-contained report.html, per-class "
                                              "precision/recall/F1, confusion matrix, the most confident mistakes, "
                                              "calibration."),
    mistakes: int = typer.Option(25, "--mistakes", min=0,
                                 help="With --report: the most confident mistakes (and least confident correct "
                                      "images) shown."),
) -> None:
    """Evaluate a checkpoint: loss, accuracy, per-class accuracy and confusion matrix.

    Also macro-F1 and balanced accuracy; --report writes the full report (per-class precision,
    recall and F1, the most confident mistakes with their files, calibration).

    Example: convtrain eval --checkpoint latest --json
    Example: convtrain eval --checkpoint runs/my_digits-<time> --data ./more_digits
    Example: convtrain eval --checkpoint latest --report
    """
    folder = None if report is None else (api.report_folder(checkpoint) if report == "" else Path(report))
    r = api.evaluate(checkpoint, data, split=split, device=device, dataset=dataset, data_root=data_root,
                     batch_size=batch_size, overrides=set_ or (), report=folder if folder is not None else False,
                     mistakes=mistakes)
    if as_json:
        extra = {} if folder is None else {"report": {"folder": str(folder), **_report_json(r, mistakes)}}
        print(json.dumps({**r.as_json(), **extra}))
        return
    _show_evaluation(r, folder)


def _show_evaluation(r: api.Evaluation, folder: Optional[Path]) -> None:
    out.print(f"{escape(str(r.checkpoint))}: model {r.model}, {r.dataset} {r.split} split, {r.num_samples} images")
    temperature = f"  (temperature {r.temperature:.4f})" if r.temperature != 1.0 else ""
    out.print(f"accuracy [bold]{r.accuracy:.4f}[/]  loss {r.loss:.4f}{temperature}")
    out.print(f"balanced accuracy {r.balanced_accuracy:.4f}  macro-F1 {r.macro_f1:.4f}")
    per = Table(title="per-class accuracy")
    per.add_column("class")
    per.add_column("accuracy", justify="right")
    per.add_column("images", justify="right")
    for name, row in zip(r.classes, r.confusion_matrix):
        per.add_row(escape_end(name), f"{r.per_class_accuracy[name]:.4f}", str(sum(row)))
    out.print(per)
    cm = Table(title="confusion matrix (rows: true class, columns: predicted)")
    cm.add_column("")
    for i in range(len(r.classes)):
        cm.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(r.classes, r.confusion_matrix)):
        label = str(i) if name == str(i) else f"{i} {escape_end(name)}"
        cm.add_row(label, *[f"[bold]{v}[/]" if i == j else (str(v) if v else "[dim]0[/]") for j, v in enumerate(row)])
    out.print(cm)
    if folder is not None:
        out.print(f"report: {escape(str(folder / 'report.html'))} (and report.md, report.json)")


def _report_json(r, mistakes: int) -> dict:
    from ..inference.report_files import report_json

    return report_json(r.report(mistakes))


@handle_errors
def calibrate(
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False, help=CHECKPOINT_HELP),
    data: Optional[str] = typer.Option(None, "--data", show_default=False,
                                       help=f"Fit on other labelled data with the same classes, {data_help()}: "
                                            "its own validation split (val/, val.csv, x_val), measured on its test "
                                            "split."),
    data_root: Optional[str] = DataRootOpt,
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size.",
                                             show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
) -> None:
    """Fit a temperature on the validation split and save it in the checkpoint (calibrated probabilities).

    The weights stay as they are and the predicted classes do not change; predict, serve, the
    Python API and export then give softmax(logits / temperature). Prints ECE and NLL on the test
    split before and after.

    Example: convtrain calibrate --checkpoint latest
    """
    r = api.calibrate(checkpoint, data, device=device, data_root=data_root, batch_size=batch_size)
    if as_json:
        print(json.dumps(r.as_json()))
        return
    out.print(f"{escape(str(r.checkpoint))}: temperature [bold]{r.temperature:.4f}[/] (fitted on {r.val_images} "
              f"validation images of {escape(r.data)}: NLL {r.val_nll_before:.4f} -> {r.val_nll_after:.4f})")
    if r.test_images is None:
        out.print("no test split of its own to measure it on")
        return
    out.print(f"test split, {r.test_images} images: ECE {r.test_ece_before:.4f} -> [bold]{r.test_ece_after:.4f}[/], "
              f"NLL {r.test_nll_before:.4f} -> {r.test_nll_after:.4f}; accuracy {r.test_accuracy:.4f} (unchanged)")


@handle_errors
def predict(
    images: list[Path] = typer.Argument(..., help=either(["Image files (PNG, JPEG, ...)", "folders of them "
                                                          "(searched recursively)", *rows_help()]) + ".",
                                        show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False,
                                    help=CHECKPOINT_HELP),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many classes to show per image."),
    invert: str = typer.Option("auto", "--invert", help="auto (dark ink on light paper is inverted), yes or no."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per image."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", show_default=False,
                                          help="Write one row per image to this .csv or .json file (streamed in "
                                               "batches, any number of images) instead of printing them."),
    fmt: str = typer.Option("auto", "--format", help="With --output: auto (from the suffix), csv, json, or kaggle "
                            "(ImageId,Label for Kaggle's test.csv, ids from 1)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images classified at a time."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --output: replace an existing file that is not "
                                   "an earlier predictions file (never an input, a checkpoint, a folder or a link)."),
) -> None:
    """Classify image files of any size, or the rows of an unlabelled CSV, with a checkpoint.

    Example: convtrain predict --checkpoint latest digit.png photos/
    Example: convtrain predict --checkpoint runs/kaggle kaggle/test.csv --output submission.csv --format kaggle
    """
    if output is None and fmt != "auto":  # it was ignored: the table or --json printed instead
        from ..errors import ConfigError

        raise ConfigError(f"--format {fmt} writes a file: give --output FILE (e.g. --output predictions.csv)")
    checkpoint = api.checkpoint_path(checkpoint)
    if output is not None:
        _predict_to_file(list(images), checkpoint, output, fmt, top_k, invert, device, batch_size, overwrite)
        return
    results = api.predict(checkpoint, list(images), top_k=top_k, invert=invert, device=device)
    if as_json:
        print(json.dumps([p.as_json() for p in results]))
        return
    table = Table(title=f"predictions of {escape(str(checkpoint))}")
    table.add_column("image")
    table.add_column("top class", style="bold")
    table.add_column(f"top {top_k}")
    for p in results:
        where = p.image + (f" row {p.row}" if p.row is not None else "")
        table.add_row(escape_end(where), f"{escape(p.label)} ({p.probability:.1%})",
                      escape(", ".join(f"{name} {prob:.1%}" for _, name, prob in p.ranked)))
    out.print(table)


def _predict_to_file(images, checkpoint, output, fmt, top_k, invert, device, batch_size, overwrite) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("predict", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("predict", total=None)
        r = api.predict_to_file(checkpoint, images, output, fmt, top_k=top_k, invert=invert, device=device,
                                batch_size=batch_size, overwrite=overwrite,
                                on_batch=lambda done, total: bar.update(task, completed=done, total=total))
    out.print(f"wrote {escape(str(r.path))} ({r.format}): {r.images} images")


@handle_errors
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False,
                                    help=CHECKPOINT_HELP),
    fmt: str = typer.Option("torch-export", "--format",
                            help="torch-export (.pt2, recommended), torchscript (.ts; deprecated upstream, for "
                                 "libtorch/C++) or onnx (.onnx; needs the onnx extra)."),
    output: Optional[Path] = typer.Option(None, "--output", show_default=False,
                                          help="Output file (default: next to the checkpoint, with the format's "
                                               "suffix). Never the checkpoint itself or another checkpoint."),
    data_root: Optional[str] = DataRootOpt,
    include_preprocessing: bool = typer.Option(False, "--include-preprocessing",
                                               help="Fold the normalization into the graph: the file takes "
                                                    "pixels / 255 (0..1) instead of normalized input."),
    int8: bool = typer.Option(False, "--int8", help="With --format onnx: quantize to INT8 (onnxruntime, static, "
                              "calibrated on the run's validation images), score it on the test split next to "
                              "FP32 and keep it (default NAME.int8.onnx) only within --max-drop."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", show_default=False,
                                             help="With --int8: the most test-accuracy points the INT8 file may "
                                                  "lose against FP32 (default 0.2); beyond it nothing is written "
                                                  "and the exit code is 1."),
) -> None:
    """Export a checkpoint's model; kept only if its outputs match the checkpoint's on a test batch.

    Load the result with torch.export.load(PATH).module(), torch.jit.load(PATH) or onnxruntime. The
    file carries class names, mean/std, input size, channels and layout as metadata (convtrain docs deploy).

    Example: convtrain export --checkpoint latest --format torch-export
    """
    from ..artifacts.checkpoint_args import resolve_checkpoint
    from ..inference.export import export_checkpoint

    if int8 or max_drop is not None:
        return _export_int8(resolve_checkpoint, checkpoint, fmt, output, data_root, include_preprocessing, int8,
                            max_drop)
    r = export_checkpoint(resolve_checkpoint(checkpoint), fmt, output, data_root,
                          include_preprocessing=include_preprocessing)
    out.print(f"wrote {escape(r['path'])} ({r['format']}); max |difference| vs the checkpoint "
              f"{r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g}) on {escape(r['checked_on'])}, "
              f"same predictions: {r['same_predictions']}")


def _export_int8(resolve_checkpoint, checkpoint, fmt, output, data_root, include_preprocessing, int8,
                 max_drop) -> None:
    """export --int8: the kept file, then FP32 and INT8 side by side (size, test accuracy, latency)."""
    from ..errors import ConfigError
    from ..inference.quantize import MAX_DROP, export_int8

    if not int8:
        raise ConfigError("--max-drop goes with --int8 (the bound on an INT8 file's accuracy drop)")
    if fmt != "onnx":
        raise ConfigError(f"--int8 needs --format onnx (onnxruntime quantizes it), got --format {fmt}")
    r = export_int8(resolve_checkpoint(checkpoint), output, data_root, MAX_DROP if max_drop is None else max_drop,
                    include_preprocessing)
    c = r["calibration"]
    how = (f"static QDQ, calibrated on {c['images']} {c['dataset']} validation images ({c['method']})"
           if r["mode"] == "static" else f"dynamic ({c['why']})")
    out.print(f"wrote {escape(r['path'])} (onnx, INT8 {escape(how)})")
    table = Table(title=f"FP32 vs INT8 on {r['test_images']} test images (onnxruntime, CPU; median latency)")
    for name in ("", "size", "test accuracy", "1 image", "batch of 64"):
        table.add_column(name, justify="right" if name else "left")
    for name in ("fp32", "int8"):
        v = r[name]
        table.add_row(name.upper(), f"{v['bytes'] / 1024:,.1f} KiB", f"{v['accuracy']:.2f}%",
                      f"{v['latency_1_ms']:.3f} ms", f"{v['latency_64_ms']:.2f} ms")
    out.print(table)
    out.print(f"accuracy drop {r['drop']:.2f} points (--max-drop {r['max_drop']:g}); "
              f"{r['fp32']['bytes'] / r['int8']['bytes']:.1f}x smaller")


@handle_errors
def average(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoints to average (two or more).", show_default=False),
    _flag: bool = typer.Option(False, "--checkpoints", help="Optional marker before the inputs, as in "
                               "timm's avg_checkpoints: --checkpoints A B C."),
    output: Path = typer.Option(..., "--output", help="New checkpoint file (never an input; not overwritten).",
                                show_default=False),
) -> None:
    """Average the weights of compatible checkpoints (same model, classes, input, normalization).

    The result is an ordinary checkpoint: eval, predict, export and serve read it like any other.

    Example: convtrain average --checkpoints RUN/checkpoints/epoch-008.pt RUN/checkpoints/epoch-009.pt --output avg.pt
    """
    from ..artifacts.average import average_checkpoints
    from ..artifacts.checkpoint_args import resolve_checkpoint
    from ..training.signals import StopSignals

    with StopSignals():  # SIGTERM while writing: "interrupted", 130, and the temporary file removed
        r = average_checkpoints([resolve_checkpoint(c) for c in checkpoints], output)
    out.print(f"wrote {escape(r['output'])}: the mean of {len(r['averaged'])} checkpoints ({r['tensors']} tensors)")


@handle_errors
def visualize(
    image: Optional[Path] = typer.Argument(None, help="Image file (default: the first test image).",
                                           show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", show_default=False,
                                    help=CHECKPOINT_HELP),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", show_default=False,
                                              help="Folder for the PNGs (default: RUN/visualize for RUN/checkpoints/X.pt, "
                                                   "else X-visualize/ next to the checkpoint)."),
    data_root: Optional[str] = DataRootOpt,
    invert: str = typer.Option("auto", "--invert", help="auto (dark ink on light paper is inverted), yes or no."),
) -> None:
    """Write PNG grids of the first conv layer's kernels and of every conv layer's feature maps.

    Example: convtrain visualize --checkpoint latest digit.png
    """
    from ..artifacts.checkpoint_args import resolve_checkpoint
    from ..inference.visualize import visualize as make_pictures

    for path in make_pictures(resolve_checkpoint(checkpoint), image, output_dir, data_root, invert):
        out.print(f"wrote {escape(str(path))}")
