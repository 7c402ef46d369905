"""The Python API, and the use cases every front end calls: train, finetune, resume, seeds, evaluate,
calibrate, predict, predict_to_file, load, job_script.

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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .errors import ConfigError
from .inference.results import Calibration, Evaluation, LoadedModel, Prediction, PredictionFile, Predictions, Report
from .training.events import Hook
from .training.results import SeedsResult, TrainResult

if TYPE_CHECKING:  # for type checkers only: importing torch here would cost ~1.5 s on `import convtrain`
    from rich.console import Console

    from .config.schema import RunConfig
    from .training.reporter import Reporter
    from .training.signals import StopSignals

__all__ = ["train", "finetune", "resume", "seeds", "evaluate", "report_folder", "calibrate", "predict",
           "predict_to_file", "load", "checkpoint_path", "job_script", "TrainResult", "SeedsResult", "Evaluation",
           "Report", "Calibration", "Prediction", "Predictions", "PredictionFile", "LoadedModel", "Hook",
           "register_hook"]

PathLike = Union[str, Path]
Overrides = Union[Mapping[str, Any], Iterable[str]]
ConfigLike = Union[PathLike, Mapping, "RunConfig", None]


# --------------------------------------------------------------------------------------------
# Training


def train(config: ConfigLike = None, *, data: PathLike | None = None, overrides: Overrides = (),
          run_dir: PathLike | None = None, progress: bool = True, data_root: str | None = None,
          verbose: bool = False, console: Console | None = None, signals: StopSignals | None = None,
          hooks: Iterable[Hook] = ()) -> TrainResult:
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
    before torch is imported); without one the run installs its own. ``hooks``: your own
    :class:`~convtrain.Hook` objects (trackers, loop features: docs/extending.md), run after the built-in
    ones and saved in last.pt under their ``state_key``.

    Example: ``convtrain.train("smoke", overrides={"train.epochs": 1}).test_accuracy``
    """
    sets = _override_strings(overrides)
    cfg = _import_training(signals, lambda: _resolve_config(config, data, sets, data_root))
    from .training.start import Start

    start = Start(cfg, Path(run_dir) if run_dir is not None else None)
    return _run(_noted(start, sets), progress, verbose, console, signals, hooks)


def finetune(checkpoint: PathLike | TrainResult, config: ConfigLike = None, *, data: PathLike | None = None,
             overrides: Overrides = (), run_dir: PathLike | None = None, progress: bool = True,
             data_root: str | None = None, verbose: bool = False, console: Console | None = None,
             signals: StopSignals | None = None, hooks: Iterable[Hook] = ()) -> TrainResult:
    """A new run from ``checkpoint``'s weights, as ``convtrain finetune`` does (the architecture
    comes from the checkpoint; the head is re-initialised when the classes differ). The other
    arguments are :func:`train`'s."""
    sets = _override_strings(overrides)
    cfg, path = _import_training(signals, lambda: (_resolve_config(config, data, sets, data_root),
                                                   checkpoint_path(checkpoint)))
    from .training.start import prepare_finetune

    return _run(_noted(prepare_finetune(path, cfg, run_dir), sets), progress, verbose, console, signals, hooks)


def resume(run: PathLike | TrainResult = "latest", config: ConfigLike = None, *, overrides: Overrides = (),
           data_root: str | None = None, progress: bool = True, verbose: bool = False, console: Console | None = None,
           signals: StopSignals | None = None, hooks: Iterable[Hook] = (), run_dir: PathLike | None = None,
           data: PathLike | None = None, pretrained: PathLike | TrainResult | None = None) -> TrainResult:
    """Continue a run in its own directory, as ``convtrain train --resume`` does, from its full state.

    ``run``: a run directory, its ``checkpoints/last.pt``, ``"latest"`` (the newest run under ``runs/``
    that is not running) or a :class:`TrainResult`. A run that stopped before its first save starts again
    from epoch 1 with its saved config. The run's saved config is used; ``config`` or ``overrides`` may
    only change what may change on resume (``train.epochs``, ``device``, ``train.max_time``, the logging
    and kept-checkpoint keys...: :data:`convtrain.training.start.RESUMABLE_CHANGES`); anything else is a
    :class:`~convtrain.ConfigError`. The other arguments are :func:`train`'s.

    ``run="auto"`` with ``run_dir`` (``--resume auto --run-dir RUN``): one call for a job's first start and
    every restart after a preemption or a requeue. ``run_dir`` missing or empty: a new run there, as
    :func:`train` (``config``, ``data``, ``overrides``) or, given ``pretrained``, :func:`finetune` does;
    a run that has not finished: resumed, ``config``/``data``/``overrides`` checked against its saved config
    as above; a finished run: nothing runs, a note says so and its result is returned; anything else (a
    folder that is not a run directory): :class:`~convtrain.errors.RunDirError`, nothing written.

    Example: ``convtrain.resume(result, overrides={"train.epochs": 4})``
    """
    if isinstance(run, (str, Path)) and str(run) == "auto":
        return _resume_auto(run_dir, config, data, overrides, pretrained, data_root,
                            dict(progress=progress, verbose=verbose, console=console, signals=signals, hooks=hooks))
    path = _last_checkpoint(run)
    sets = _override_strings(overrides)

    def checked():
        cfg = _resolve_config(config, None, sets, data_root) if config is not None else None
        _refuse_complete(path, cfg, sets)
        return cfg

    cfg = _import_training(signals, checked)
    from .training.start import prepare_resume

    return _run(_noted(prepare_resume(path, cfg, sets, data_root), sets), progress, verbose, console, signals, hooks)


def _resume_auto(run_dir: PathLike | None, config: ConfigLike, data: PathLike | None, overrides: Overrides,
                 pretrained: PathLike | TrainResult | None, data_root: str | None, how: dict) -> TrainResult:
    """``resume("auto", run_dir=RUN)``: start RUN, resume it, or say it has finished (see :func:`resume`)."""
    from .errors import ConfigError

    if run_dir is None:
        raise ConfigError("--resume auto needs --run-dir RUN: the run directory to start, or to continue when it "
                          "holds an unfinished run")
    _import_training(how["signals"])
    from .training.start import auto_plan, prepare_finetune, prepare_resume

    plan = auto_plan(run_dir)
    if plan == "start" and pretrained is not None:
        return finetune(pretrained, config, data=data, overrides=overrides, run_dir=run_dir, data_root=data_root, **how)
    if plan == "start":
        return train(config, data=data, overrides=overrides, run_dir=run_dir, data_root=data_root, **how)
    if plan == "finished":
        return _finished(Path(run_dir), how["progress"], how["console"])
    sets = _override_strings(overrides)
    cfg = _resolve_config(config, data, sets, data_root) if config is not None or data is not None else None
    if pretrained is not None:  # the config a fine-tuning run saved: the architecture and the checkpoint it came from
        cfg = prepare_finetune(checkpoint_path(pretrained), cfg or _resolve_config(None, None, sets, data_root)).cfg
    start = _noted(prepare_resume(run_dir, cfg, sets, data_root), sets)
    return _run(start, how["progress"], how["verbose"], how["console"], how["signals"], how["hooks"])


def _finished(run: Path, progress: bool, console: Console | None) -> TrainResult:
    """--resume auto on a run that has finished: its result, and one note (from rank 0 only)."""
    import os

    from rich.markup import escape

    from .training import launchers

    result = TrainResult.from_run_dir(run)
    launchers.apply()  # which rank this is, when a launcher started several
    if progress and os.environ.get("RANK", "0") in ("", "0"):
        _console(progress, console).print(f"note: {escape(str(run))} has finished (test accuracy of best.pt "
                                          f"{result.test_accuracy:.4f}); nothing to resume")
    return result


def _refuse_complete(path: Path, cfg: RunConfig | None, sets: list[str]) -> None:
    """A finished run that has trained every epoch asked for: nothing to resume (it re-tested and re-plotted
    for half a minute before). One line with the command that trains it longer; read from its files, no torch."""
    from .artifacts import runfiles
    from .config.load import apply_overrides
    from .config.yamlsafe import read_yaml
    from .errors import ConvtrainError

    run = path.parent.parent if path.is_file() else path
    last = path if path.is_file() else run / "checkpoints" / "last.pt"
    if any(key not in ("train.epochs", "device") for key in _override_keys(sets)):
        return  # another key changes: the resume's own checks say whether it may (optim.lr, data.root...)
    try:
        if last.stat().st_mtime_ns > (run / "results.json").stat().st_mtime_ns:
            return  # last.pt replaced after the run finished: the resume reads and checks it
        results, rows = runfiles.read_results(run), runfiles.read_metrics(run)
        saved = read_yaml(run / "config.yaml")
        epochs = cfg.train.epochs if cfg is not None else apply_overrides(saved, sets)["train"]["epochs"]
    except (ConvtrainError, OSError, KeyError, TypeError):
        return  # anything unusual: the resume itself reports it, as before
    if results is None or results.status != "finished" or len(rows) < epochs:
        return
    shown = f"; test accuracy {results.test_accuracy:.4f}" if results.test_accuracy is not None else ""
    raise ConfigError(f"run {run} is complete: {len(rows)} of {epochs} epochs trained{shown}; to train it "
                      f"longer: convtrain train --resume {run} --epochs {len(rows) + max(1, epochs)}")


def _override_keys(sets: list[str]) -> list[str]:
    from .config.load import parse_override

    return [".".join(parse_override(text)[0]) for text in sets]


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
    def checked():
        _resolve_config(config, data, overrides, data_root)  # its mistakes first: before the seeds import torch
        from .training.seeds import parse_seeds

        chosen = parse_seeds(seeds if isinstance(seeds, str) else ",".join(str(s) for s in seeds))
        return chosen, _resolve_config(config, data, [*_override_strings(overrides), f"seed={chosen[0]}"], data_root)

    chosen, base = _import_training(signals, checked)
    from .training.seeds import run_seeds, seed_root

    root = seed_root(Path(run_dir) if run_dir is not None else None, base)
    out = _console(progress, console)
    result = SeedsResult.from_summary(root, run_seeds(base, chosen, root, console=out, signals=signals))
    if progress:
        _show_seeds(result, out)
    return result


def register_hook(build: Callable[[RunConfig, bool], Hook | None]) -> Callable[[RunConfig, bool], Hook | None]:
    """Add ``build(cfg, is_main) -> Hook | None`` to every run of this process, after the built-in hooks:
    the way a tracker or loop feature of your own project joins runs it did not start itself (a
    ``--seeds`` sweep, ``convtrain tune`` in this process). Returns ``build``, so it works as a decorator;
    :func:`train`'s ``hooks=`` is the way for one run. See docs/extending.md."""
    from .training.events import register

    return register(build)


def _import_training(signals: StopSignals | None, prepare: Callable[[], Any] | None = None) -> Any:
    """``prepare()`` (resolving the config: its key and value mistakes are refused before it imports torch,
    for the model's check), then the training modules (torch, numpy, torchvision), with Ctrl-C / SIGTERM held
    until they are loaded, when the caller installed :class:`StopSignals` (the signal then stops the command:
    one line, exit 130); returns what ``prepare`` returned. A signal handler's exception raised inside an
    import is caught by C code that imports modules of its own (torch._C imports numpy and ignores a failure)
    or leaves a half-initialised extension behind (numpy then fails with "cannot load module more than once
    per process" next time)."""
    with signals.protected() if signals is not None else contextlib.nullcontext():
        prepared = prepare() if prepare is not None else None
        from .training import runner, seeds, start  # noqa: F401
    return prepared


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
        from .config.load import override_text

        return [override_text(key, value) for key, value in overrides.items()]
    if not isinstance(overrides, Iterable) or isinstance(overrides, (bytes, bytearray)):
        raise TypeError(f"overrides: give a mapping {{'train.epochs': 2}} or a list of 'key=value' strings, "
                        f"got {type(overrides).__name__} {overrides!r}")
    found = list(overrides)
    wrong = [o for o in found if not isinstance(o, str)]
    if wrong:
        raise TypeError(f"overrides: each item is a 'key=value' string, got {type(wrong[0]).__name__} {wrong[0]!r}")
    return found


def _noted(start, sets: list[str]):
    """``start`` with a note for each key the overrides give twice (printed and logged when the run starts)."""
    from .config.load import override_notes

    start.notes[:0] = override_notes(sets)
    return start


def _run(start, progress: bool, verbose: bool, console: Console | None, signals: StopSignals | None,
         hooks: Iterable[Hook] = ()) -> TrainResult:
    from .training.runner import run

    reporter = _reporter(progress, verbose, console)
    result = TrainResult.from_run(run(start, reporter=reporter, signals=signals, hooks=hooks))
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
# Clusters


def job_script(kind: str, command: Iterable[str], *, invocation: str = "convtrain launch", **options: Any) -> str:
    """The text ``convtrain launch KIND [OPTIONS] -- COMMAND`` prints: ``kind`` ``"slurm"`` (an sbatch
    script), ``"k8s"`` (a Kubeflow PyTorchJob manifest) or ``"torchrun"`` (one command per machine), for
    ``command`` (``["train", "--config", "mnist"]``; ``tune`` too under SLURM). ``options``: the fields of
    :class:`convtrain.training.jobscripts.JobSpec` (``nodes``, ``gpus_per_node``, ``time``, ``array``...).
    Nothing is submitted. ``invocation``: the command line quoted on the first line of the text."""
    from .errors import ConfigError
    from .training.jobscripts import JobSpec, render

    try:
        spec = JobSpec(**options)
    except TypeError as exc:
        raise ConfigError(f"job_script: {exc}") from None
    return render(kind, spec, list(command), invocation)


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
    from .inference.eval_keys import check_eval_overrides

    sets = _override_strings(overrides)
    check_eval_overrides(sets, str(data) if data is not None else None)  # before torch loads
    from .inference.evaluate import evaluate_checkpoint

    folder = None if isinstance(report, bool) else Path(report)
    if folder is not None:
        from .inference.report_files import check_folder

        check_folder(folder)
    ev = evaluate_checkpoint(checkpoint_path(checkpoint), split=split, data_root=data_root, device=device,
                             batch_size=batch_size, dataset=dataset, data_path=str(data) if data is not None else None,
                             overrides=sets, report=report is not False)
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
            device: str = "auto", top_k: int | None = None, batch_size: int = 256,
            probabilities: bool = False) -> Predictions:
    """Classify images, as ``convtrain predict`` does (the same :class:`~convtrain.inference.predict.Predictor`,
    the same probabilities).

    ``checkpoint``: a ``.pt`` checkpoint, a run (directory, name, ``latest``), an ``.onnx`` export, a
    :class:`TrainResult` or a :class:`LoadedModel` (left as it is: its model is copied).
    ``images``: one image or a list of them; each a file path, a folder (its images, by name), a file of
    many images (an unlabelled CSV, an ``.npz``: one prediction per image), PNG/JPEG bytes, a PIL image,
    or a NumPy array / torch tensor: one image ``(H, W)``, ``(H, W, C)``, ``(C, H, W)`` or a batch ``(N, H, W)``,
    ``(N, H, W, C)``, ``(N, C, H, W)`` (C = 1, 3 or 4), uint8 (0..255) or float (0..1), e.g. ``x_test[:100]``.
    An empty list gives an empty answer. ``invert``: ``auto`` (MNIST-style: dark ink on a light border is
    inverted), ``yes``, ``no``. ``top_k``: the classes each :class:`Prediction` lists (default: all).
    ``probabilities``: also return every class's probability as one array (``result.probabilities``,
    ``[N, classes]``, columns in ``result.classes`` order).

    Returns a list of :class:`Prediction` (``label`` the class name, ``index`` its number, ``prob``, ``topk()``).
    """
    _check_choice("invert", invert, ("auto", "yes", "no"))  # before torch loads
    from .inference.predict import predict_images

    source = checkpoint if isinstance(checkpoint, LoadedModel) else checkpoint_path(checkpoint)
    return predict_images(source, images, top_k, invert, device, batch_size, probabilities=probabilities)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    """The command's own words (``--invert must be auto, yes or no, got 'x'``), without importing torch."""
    if value not in choices:
        raise ConfigError(f"--{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got '{value}'")


def predict_to_file(checkpoint: PathLike | TrainResult, images: Iterable[PathLike], output: PathLike,
                    format: str = "auto", *, top_k: int = 3, invert: str = "auto", device: str = "auto",
                    batch_size: int = 256, on_batch: Callable[[int, int], None] | None = None,
                    overwrite: bool = False) -> PredictionFile:
    """``convtrain predict --output``: one row per image in ``output``, written in batches (any number
    of images): ``format`` csv, json, kaggle (``ImageId,Label`` for one unlabelled CSV) or auto (from
    the suffix). ``on_batch(done, total)`` is called after each batch. ``output`` is never an input, a
    checkpoint, a folder or anything but a regular file; an existing file that is not an earlier
    predictions file is replaced only with ``overwrite=True`` (``--overwrite``)."""
    from .inference.predict import predict_to_file as write

    return write(checkpoint_path(checkpoint), list(images), output, format, top_k=top_k, invert=invert,
                 device=device, batch_size=batch_size, on_batch=on_batch, overwrite=overwrite)


def load(checkpoint: PathLike | TrainResult) -> LoadedModel:
    """The model a checkpoint holds (CPU, eval mode) with its classes, normalization and config.

    The checkpoint is loaded with ``weights_only=True`` and checked, like every command does.
    """
    return LoadedModel.open(checkpoint_path(checkpoint))
