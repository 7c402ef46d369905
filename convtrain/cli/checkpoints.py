"""The commands that take a checkpoint: ``eval``, ``predict``, ``export``, ``average``, ``visualize``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .edge import handle_errors, out
from .options import DataRootOpt


@handle_errors
def eval_(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint to evaluate (.pt).", show_default=False),
    split: str = typer.Option("test", "--split", help="test, or val (the run's own held-out images)."),
    data_root: Optional[str] = DataRootOpt,
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Evaluate on another registered dataset.",
                                          show_default=False),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size.",
                                             show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
    data: Optional[str] = typer.Option(None, "--data", show_default=False,
                                       help="Evaluate on another labelled folder or .csv with the same classes."),
) -> None:
    """Evaluate a checkpoint: loss, accuracy, per-class accuracy and confusion matrix.

    Example: convtrain eval --checkpoint runs/mnist/checkpoints/best.pt --json
    Example: convtrain eval --checkpoint runs/my_digits-<time>/checkpoints/best.pt --data ./more_digits
    """
    from ..inference.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(checkpoint, split=split, data_root=data_root, device=device, batch_size=batch_size,
                            dataset=dataset, data_path=data)
    if as_json:
        print(json.dumps(r))
        return
    out.print(f"{escape(r['checkpoint'])}: model {r['model']}, {r['dataset']} {r['split']} split, "
              f"{r['num_samples']} images")
    out.print(f"accuracy [bold]{r['accuracy']:.4f}[/]  loss {r['loss']:.4f}")
    classes = r["classes"]
    per = Table(title="per-class accuracy")
    per.add_column("class")
    per.add_column("accuracy", justify="right")
    per.add_column("images", justify="right")
    for i, name in enumerate(classes):
        per.add_row(escape(name), f"{r['per_class_accuracy'][i]:.4f}", str(sum(r["confusion_matrix"][i])))
    out.print(per)
    cm = Table(title="confusion matrix (rows: true class, columns: predicted)")
    cm.add_column("")
    for i in range(len(classes)):
        cm.add_column(str(i), justify="right")
    for i, row in enumerate(r["confusion_matrix"]):
        label = str(i) if classes[i] == str(i) else f"{i} {escape(classes[i])}"
        cm.add_row(label, *[f"[bold]{v}[/]" if i == j else (str(v) if v else "[dim]0[/]")
                                                 for j, v in enumerate(row)])
    out.print(cm)


@handle_errors
def predict(
    images: list[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...) or directories of them.",
                                        show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint (.pt).", show_default=False),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many classes to show per image."),
    invert: str = typer.Option("auto", "--invert", help="auto (dark ink on light paper is inverted), yes or no."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per image."),
) -> None:
    """Classify image files of any size with a checkpoint.

    Example: convtrain predict --checkpoint runs/mnist/checkpoints/best.pt digit.png photos/
    """
    from ..inference.predict import predict_images

    results = predict_images(checkpoint, list(images), top_k=top_k, invert=invert, device=device)
    if as_json:
        print(json.dumps(results))
        return
    table = Table(title=f"predictions of {escape(str(checkpoint))}")
    table.add_column("image")
    table.add_column("top class", style="bold")
    table.add_column(f"top {top_k}")
    for r in results:
        best = r["topk"][0]
        table.add_row(escape(r["path"]), f"{escape(best['name'])} ({best['prob']:.1%})",
                      escape(", ".join(f"{t['name']} {t['prob']:.1%}" for t in r["topk"])))
    out.print(table)


@handle_errors
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint (.pt).", show_default=False),
    fmt: str = typer.Option("torch-export", "--format",
                            help="torch-export (.pt2, recommended), torchscript (.ts; deprecated upstream, for "
                                 "libtorch/C++) or onnx (.onnx; needs the onnx extra)."),
    output: Optional[Path] = typer.Option(None, "--output", show_default=False,
                                          help="Output file (default: next to the checkpoint, with the format's "
                                               "suffix). Never the checkpoint itself or another checkpoint."),
    data_root: Optional[str] = DataRootOpt,
) -> None:
    """Export a checkpoint's model; kept only if its outputs match the checkpoint's on a test batch.

    Load the result with torch.export.load(PATH).module(), torch.jit.load(PATH) or onnxruntime.

    Example: convtrain export --checkpoint runs/mnist/checkpoints/best.pt --format torch-export
    """
    from ..inference.export import export_checkpoint

    r = export_checkpoint(checkpoint, fmt, output, data_root)
    out.print(f"wrote {escape(r['path'])} ({r['format']}); max |difference| vs the checkpoint "
              f"{r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g}) on {escape(r['checked_on'])}, "
              f"same predictions: {r['same_predictions']}")


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
    from ..train.signals import StopSignals

    with StopSignals():  # SIGTERM while writing: "interrupted", 130, and the temporary file removed
        r = average_checkpoints(list(checkpoints), output)
    out.print(f"wrote {escape(r['output'])}: the mean of {len(r['averaged'])} checkpoints ({r['tensors']} tensors)")


@handle_errors
def visualize(
    image: Optional[Path] = typer.Argument(None, help="Image file (default: the first test image).",
                                           show_default=False),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint (.pt).", show_default=False),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", show_default=False,
                                              help="Folder for the PNGs (default: RUN/visualize for RUN/checkpoints/X.pt, "
                                                   "else X-visualize/ next to the checkpoint)."),
    data_root: Optional[str] = DataRootOpt,
    invert: str = typer.Option("auto", "--invert", help="auto (dark ink on light paper is inverted), yes or no."),
) -> None:
    """Write PNG grids of the first conv layer's kernels and of every conv layer's feature maps.

    Example: convtrain visualize --checkpoint runs/mnist/checkpoints/best.pt digit.png
    """
    from ..inference.visualize import visualize as make_pictures

    for path in make_pictures(checkpoint, image, output_dir, data_root, invert):
        out.print(f"wrote {escape(str(path))}")
