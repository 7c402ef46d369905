"""The Python API, and the use cases every front end calls: train, finetune, resume, seeds, evaluate,
calibrate, predict, predict_to_file, load.

Each function does what its command does, through the same library code; the commands in
:mod:`convtrain.cli` parse their options, call one of these and render what it returns. :func:`train`,
:func:`finetune`, :func:`resume` and :func:`seeds` write the same run directories (``config.yaml``,
``metrics.csv``, checkpoints, ``results.json``, ``train.log``) and print the same progress and closing
lines as ``convtrain train``; they return typed results (:class:`TrainResult`, :class:`SeedsResult`,
:class:`Evaluation`, :class:`Prediction`, :class:`LoadedModel`, defined in the library rooms that make
them). Errors are :class:`convtrain.ConvtrainError` subclasses with the message the command would print.

A checkpoint argument takes a ``.pt`` file, a run directory (its ``checkpoints/best.pt``), ``latest`` or a
:class:`TrainResult`. Importing this module imports no torch; each function imports what it needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .inference.results import Calibration, Evaluation, LoadedModel, Prediction, PredictionFile, Report
from .training.results import SeedsResult, TrainResult

if TYPE_CHECKING:  # for type checkers only: importing torch here would cost ~1.5 s on `import convtrain`
    from rich.console import Console

    from .config.schema import RunConfig
    from .training.reporter import Reporter
    from .training.signals import StopSignals

__all__ = ["train", "finetune", "resume", "seeds", "evaluate", "report_folder", "calibrate", "predict",
           "predict_to_file", "load", "checkpoint_path", "TrainResult", "SeedsResult", "Evaluation", "Report",
           "Calibration", "Prediction", "PredictionFile", "LoadedModel"]

PathLike = Union[str, Path]
Overrides = Union[Mapping[str, Any], Iterable[str]]
ConfigLike = Union[PathLike, Mapping, "RunConfig", None]


# --------------------------------------------------------------------------------------------
# Training


def train(config: ConfigLike = None, *, data: PathLike | None = None, overrides: Overrides = (),
          run_dir: PathLike | None = None, progress: bool = True, data_root: str | None = None,
          verbose: bool = False, console: Console | None = None, signals: StopSignals | None = None) -> TrainResult:
    """Train a model, as ``convtrain train`` does, and return its numbers.

    ``config``: a YAML file, a packaged recipe's name (``"smoke"``, ``"mnist"``...), a mapping of
    config keys, a :class:`~convtrain.config.schema.RunConfig`, or None for the schema defaults (the
    article's setup). ``data``: your own labelled images, a folder (``DIR/train/<class>/*``) or a
    ``train.csv`` (``--data``). ``overrides``: ``["train.epochs=2", ...]`` or
    ``{"train.epochs": 2}`` (``--set``). ``run_dir``: a new or empty folder (default
    ``runs/<name>-<time>``). ``progress``: print the progress bar (a terminal, or Jupyter with
    ipywidgets) or plain lines, the epoch lines and the closing summary; ``train.log`` is written either
    way. ``data_root``: the dataset folder (``--data-root``). ``verbose``: also print internals (``--verbose``).
    ``console``: the rich Console to print on (default: stdout). ``signals``: a
    :class:`~convtrain.training.signals.StopSignals` the caller installed (the command line installs one
    before torch is imported); without one the run installs its own.

    Example: ``convtrain.train("smoke", overrides={"train.epochs": 1}).test_accuracy``
    """
    _import_training(signals)
    from .training.start import Start

    cfg = _resolve_config(config, data, overrides, data_root)
    start = Start(cfg, Path(run_dir) if run_dir is not None else None)
    return _run(start, progress, verbose, console, signals)


def finetune(checkpoint: PathLike | TrainResult, config: ConfigLike = None, *, data: PathLike | None = None,
             overrides: Overrides = (), run_dir: PathLike | None = None, progress: bool = True,
             data_root: str | None = None, verbose: bool = False, console: Console | None = None,
             signals: StopSignals | None = None) -> TrainResult:
    """A new run from ``checkpoint``'s weights, as ``convtrain finetune`` does (the architecture
    comes from the checkpoint; the head is re-initialised when the classes differ). The other
    arguments are :func:`train`'s."""
    _import_training(signals)
    from .training.start import prepare_finetune

    cfg = _resolve_config(config, data, overrides, data_root)
    return _run(prepare_finetune(checkpoint_path(checkpoint), cfg, run_dir), progress, verbose, console, signals)


def resume(run: PathLike | TrainResult = "latest", config: ConfigLike = None, *, overrides: Overrides = (),
           data_root: str | None = None, progress: bool = True, verbose: bool = False, console: Console | None = None,
           signals: StopSignals | None = None) -> TrainResult:
    """Continue a run in its own directory, as ``convtrain train --resume`` does, from its full state.

    ``run``: a run directory, its ``checkpoints/last.pt``, ``"latest"`` (the newest run under ``runs/``
    that is not running) or a :class:`TrainResult`. A run that stopped before its first save starts again
    from epoch 1 with its saved config. The run's saved config is used; ``config`` or ``overrides`` may
    only change what may change on resume (``train.epochs``, ``device``, ``train.max_time``, the logging
    and kept-checkpoint keys...: :data:`convtrain.training.start.RESUMABLE_CHANGES`); anything else is a
    :class:`~convtrain.ConfigError`. The other arguments are :func:`train`'s.

    Example: ``convtrain.resume(result, overrides={"train.epochs": 4})``
    """
    _import_training(signals)
    from .training.start import prepare_resume

    path = _last_checkpoint(run)
    sets = _override_strings(overrides)
    cfg = _resolve_config(config, None, sets, data_root) if config is not None else None
    return _run(prepare_resume(path, cfg, sets, data_root), progress, verbose, console, signals)


def seeds(config: ConfigLike = None, seeds: str | Iterable[int] = (0, 1, 2), *, data: PathLike | None = None,
          overrides: Overrides = (), run_dir: PathLike | None = None, progress: bool = True,
          data_root: str | None = None, console: Console | None = None,
          signals: StopSignals | None = None) -> SeedsResult:
    """The same config once per seed, as ``convtrain train --seeds 0,1,2`` does: each seed's run goes to
    ``RUN/seed-N``, ``RUN/summary.json`` gets the mean, sample std, min and max over the seeds, and the
    summary comes back as a :class:`SeedsResult`.

    ``seeds``: ``[0, 1, 2]`` or ``"0,1,2"``. ``run_dir``: a new or empty folder (default
    ``runs/<name>-seeds-<time>``), or the folder of an earlier call to continue it (its seed runs are
    resumed, the missing ones started). The seeds' test set is the same (``data.split_seed``). The
    other arguments are :func:`train`'s; ``progress`` also prints the summary table.
    """
    from .training.seeds import parse_seeds

    chosen = parse_seeds(seeds if isinstance(seeds, str) else ",".join(str(s) for s in seeds))
    _import_training(signals)
    from .training.seeds import run_seeds, seed_root

    base = _resolve_config(config, data, [*_override_strings(overrides), f"seed={chosen[0]}"], data_root)
    root = seed_root(Path(run_dir) if run_dir is not None else None, base)
    out = _console(progress, console)
    result = SeedsResult.from_summary(root, run_seeds(base, chosen, root, console=out, signals=signals))
    if progress:
        _show_seeds(result, out)
    return result


def _import_training(signals: StopSignals | None) -> None:
    """Import the training modules (torch, numpy, torchvision) with Ctrl-C / SIGTERM held until they are
    loaded, when the caller installed :class:`StopSignals` (the signal then stops the command: one line,
    exit 130). A signal handler's exception raised inside an import is caught by C code that imports
    modules of its own (torch._C imports numpy and ignores a failure) or leaves a half-initialised
    extension behind (numpy then fails with "cannot load module more than once per process" next time)."""
    with signals.protected() if signals is not None else contextlib.nullcontext():
        from .training import runner, seeds, start  # noqa: F401


def _resolve_config(config: ConfigLike, data: PathLike | None, overrides: Overrides,
                    data_root: str | None = None) -> RunConfig:
    """defaults < config (file, recipe, mapping or RunConfig) < ``data`` < ``overrides`` (< ``data_root``)."""
    from .config.load import load_config
    from .config.schema import RunConfig, to_dict
    from .data.detect import data_overrides

    sets = _override_strings(overrides)
    named = config is not None
    if data is not None:
        sets = data_overrides(str(data), sets, named)
    if isinstance(config, RunConfig):
        return load_config(None, sets, base=to_dict(config), where="config", data_root=data_root)
    if isinstance(config, Mapping):
        return load_config(None, sets, base=dict(config), where="config", data_root=data_root)
    return load_config(config, sets, data_root=data_root)


def _override_strings(overrides: Overrides) -> list[str]:
    """``{"train.epochs": 2}`` -> ``["train.epochs=2"]``; values as JSON, which the YAML parser reads back as given."""
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def _run(start, progress: bool, verbose: bool, console: Console | None, signals: StopSignals | None) -> TrainResult:
    from .training.runner import run

    reporter = _reporter(progress, verbose, console)
    result = TrainResult.from_run(run(start, reporter=reporter, signals=signals))
    if progress:
        _show_run(result, reporter.console)
    return result


def _console(progress: bool, console: Console | None) -> Console:
    """Where a run prints: ``console``, else stdout; nowhere with ``progress=False``."""
    from rich.console import Console

    if not progress:
        return Console(quiet=True, force_terminal=False, force_jupyter=False)
    return console or Console(highlight=False, soft_wrap=True)  # as the command's: a long path is not wrapped


def _reporter(progress: bool, verbose: bool, console: Console | None) -> Reporter:
    """The reporter on :func:`_console` (the run directory's train.log is attached to it either way)."""
    from .training.reporter import Reporter

    reporter = Reporter(_console(progress, console), verbose=verbose)
    if progress and reporter.console.is_jupyter and _has_ipywidgets():
        reporter.live = True  # rich draws its live bar in a notebook through an ipywidgets Output
    return reporter


def _has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


# --------------------------------------------------------------------------------------------
# What a finished run says: the command's closing lines and the API's, in the same words


def _show_run(result: TrainResult, console: Console) -> None:
    """The per-epoch table, the best epoch and the test accuracy of best.pt, and the run directory."""
    from rich.markup import escape
    from rich.table import Table

    if result.run_dir is None:  # the processes other than rank 0 share its terminal and say nothing
        return
    table = Table(title="run summary", show_header=True, header_style="bold")
    tested = any(r.test_acc is not None for r in result.epochs)  # a column of dashes says nothing: left out
    for col in ("epoch", "train loss", "train acc", "val loss", "val acc", *(["test acc"] if tested else []),
                "seconds"):
        table.add_column(col, justify="right")
    for r in result.epochs:
        test = ["-" if r.test_acc is None else f"{r.test_acc:.4f}"] if tested else []
        table.add_row(str(r.epoch), f"{r.train_loss:.4f}", f"{r.train_acc:.4f}", f"{r.val_loss:.4f}",
                      f"{r.val_acc:.4f}", *test, f"{r.seconds:.1f}")
    console.print(table)
    console.print(f"best epoch {result.best_epoch} (val acc {result.best_val_acc:.4f}); "
                  f"training {result.train_seconds:.1f}s")
    console.print(f"test accuracy of best.pt: [bold]{result.test_accuracy:.4f}[/] (loss {result.test_loss:.4f}, "
                  f"{result.test_num_samples} images)")
    console.print(f"run directory: {escape(str(result.run_dir))}")


def _show_seeds(result: SeedsResult, console: Console) -> None:
    """The seeds' table (mean, sample std, min, max and each seed), the test set, and the summary file."""
    from rich.markup import escape
    from rich.table import Table

    seeds = result.seeds
    table = Table(title=f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean, sample std, min, max")
    for col in ("metric", "mean", "std", "min", "max", *[f"seed {s}" for s in seeds]):
        table.add_column(col, justify="left" if col == "metric" else "right")
    per_seed = {r.seed: r for r in result.runs}

    def row(name, st, values, fmt):
        std = "-" if st.std is None else fmt(st.std)
        table.add_row(name, fmt(st.mean), std, fmt(st.min), fmt(st.max),
                      *["-" if v is None else fmt(v) for v in values])

    pct = lambda v: f"{v:.2%}"  # noqa: E731
    row("test accuracy", result.test_accuracy, [per_seed[s].test_accuracy for s in seeds], pct)
    for epoch, st in result.val_acc_per_epoch.items():
        i = epoch - 1
        row(f"val acc epoch {epoch}", st,
            [per_seed[s].val_acc[i] if i < len(per_seed[s].val_acc) else None for s in seeds], pct)
    row("training seconds", result.train_seconds, [per_seed[s].train_seconds for s in seeds], lambda v: f"{v:.1f}")
    console.print(table)
    console.print(f"test set: the same images for every seed (data.split_seed {result.split_seeds[0]}, fingerprint "
                  f"{result.test_fingerprint})" if result.same_test_set else
                  "[yellow]test set: differs between seeds[/] (data.split_seed null follows each seed): the spread "
                  "mixes model and split noise")
    console.print(f"summary: {escape(str(result.summary_file))}")


# --------------------------------------------------------------------------------------------
# Using a trained checkpoint


def checkpoint_path(checkpoint: PathLike | TrainResult) -> Path:
    """A checkpoint file: ``checkpoint`` itself, a run directory's ``checkpoints/best.pt``, ``"latest"``
    (the newest finished run under ``runs/``), or a result's; the same rule as every command."""
    if isinstance(checkpoint, TrainResult):
        return checkpoint.checkpoint
    from .artifacts.checkpoint_args import resolve_checkpoint

    return resolve_checkpoint(checkpoint)


def _last_checkpoint(run: PathLike | TrainResult) -> Path:
    """What ``--resume`` continues: the run's ``checkpoints/last.pt`` (or the run directory, when it has none yet)."""
    from .artifacts.checkpoint_args import resolve_checkpoint

    if isinstance(run, TrainResult):
        run = run.checkpoint.parent.parent  # refuses a result without a run directory (ranks other than 0)
    return resolve_checkpoint(run, last=True)


def evaluate(checkpoint: PathLike | TrainResult, data: PathLike | None = None, *, split: str = "test",
             device: str = "auto", dataset: str | None = None, data_root: str | None = None,
             batch_size: int | None = None, overrides: Overrides = (), report: bool | PathLike = False,
             mistakes: int = 25) -> Evaluation:
    """Evaluate a checkpoint, as ``convtrain eval`` does: on its own dataset's ``split`` (``test`` or
    ``val``), on another registered ``dataset``, or on ``data``, another labelled folder or CSV file with
    the same classes. ``overrides``: the data keys ``eval --set`` takes (e.g. ``{"data.test_size": 0.2}``
    with ``data``). ``Evaluation.as_json()`` is ``eval --json``'s object.

    ``report``: True keeps every image's scores, so ``evaluation.report()`` gives the full
    :class:`Report` (per-class precision/recall/F1, the most confident mistakes, calibration); a folder
    (``eval --report DIR``; :func:`report_folder` is RUN/report) also writes it there, with ``mistakes``
    images in each gallery: report.json, report.md, report.html... The folder is checked before
    anything is evaluated."""
    from .inference.evaluate import evaluate_checkpoint

    folder = None if isinstance(report, bool) else Path(report)
    if folder is not None:
        from .inference.report_files import check_folder

        check_folder(folder)
    ev = evaluate_checkpoint(checkpoint_path(checkpoint), split=split, data_root=data_root, device=device,
                             batch_size=batch_size, dataset=dataset, data_path=str(data) if data is not None else None,
                             overrides=_override_strings(overrides), report=report is not False)
    if folder is None:
        return ev
    ev.report(mistakes).write(folder)
    return dataclasses.replace(ev, report_folder=folder)


def report_folder(checkpoint: PathLike | TrainResult) -> Path:
    """Where ``eval --report`` writes by default: RUN/report for a checkpoint inside a run directory."""
    from .inference.report_files import default_folder

    path = checkpoint_path(checkpoint)
    found = default_folder(path)
    if found is None:
        from .errors import ConfigError

        raise ConfigError(f"--report: {path} is not inside a run directory; name a folder: --report DIR")
    return found


def calibrate(checkpoint: PathLike | TrainResult, data: PathLike | None = None, *, device: str = "auto",
              data_root: str | None = None, batch_size: int | None = None) -> Calibration:
    """Fit the checkpoint's temperature on a validation split and save it in the checkpoint, as
    ``convtrain calibrate`` does: the run's own validation split, or ``data``'s (other labelled images
    with the same classes and a validation split of their own). From then on every reader of the
    checkpoint (predict, this API, serve, export) gives softmax(logits / temperature); the predicted
    classes, so accuracy, are unchanged. Returns the temperature and ECE / NLL on the test split before
    and after."""
    from .inference.calibrate import calibrate_checkpoint

    return calibrate_checkpoint(checkpoint_path(checkpoint), str(data) if data is not None else None,
                                device=device, data_root=data_root, batch_size=batch_size)


def predict(checkpoint: PathLike | TrainResult | LoadedModel, images: Any, *, invert: str = "auto",
            device: str = "auto", top_k: int | None = None, batch_size: int = 256) -> list[Prediction]:
    """Classify images, as ``convtrain predict`` does (the same :class:`~convtrain.inference.predict.Predictor`,
    the same probabilities).

    ``images``: one image or a list of them; each a file path, a folder (its images, by name), a file of
    many images (an unlabelled CSV, an ``.npz``: one prediction per image), PNG/JPEG bytes, a PIL image,
    or a uint8 array/tensor ``[H, W]``, ``[H, W, C]`` (numpy) or ``[C, H, W]`` (torch). ``invert``:
    ``auto`` (MNIST-style: dark ink on a light border is inverted), ``yes``, ``no``. ``top_k``: the classes each
    :class:`Prediction` lists (default: all). A :class:`LoadedModel` is left as it is (its model is copied).
    """
    from .inference.predict import predict_images

    source = checkpoint if isinstance(checkpoint, LoadedModel) else checkpoint_path(checkpoint)
    return predict_images(source, images, top_k, invert, device, batch_size)


def predict_to_file(checkpoint: PathLike | TrainResult, images: Iterable[PathLike], output: PathLike,
                    format: str = "auto", *, top_k: int = 3, invert: str = "auto", device: str = "auto",
                    batch_size: int = 256, on_batch: Callable[[int, int], None] | None = None) -> PredictionFile:
    """``convtrain predict --output``: one row per image in ``output``, written in batches (any number
    of images): ``format`` csv, json, kaggle (``ImageId,Label`` for one unlabelled CSV) or auto (from
    the suffix). ``on_batch(done, total)`` is called after each batch."""
    from .inference.predict import predict_to_file as write

    return write(checkpoint_path(checkpoint), list(images), output, format, top_k=top_k, invert=invert,
                 device=device, batch_size=batch_size, on_batch=on_batch)


def load(checkpoint: PathLike | TrainResult) -> LoadedModel:
    """The model a checkpoint holds (CPU, eval mode) with its classes, normalization and config.

    The checkpoint is loaded with ``weights_only=True`` and checked, like every command does.
    """
    return LoadedModel.open(checkpoint_path(checkpoint))
