"""The ``convtrain`` command line. Each command parses, calls one function, renders the result.

Domain errors (:class:`~convtrain.errors.ConvtrainError`) become one red line on stderr and the
error's exit code: 2 for usage and config mistakes, 1 for failures at run time.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import backstop
from .errors import ConvtrainError

app = typer.Typer(help="Train, evaluate and fine-tune convolutional networks on MNIST-style data.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect configs without running them.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Look at a dataset without training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:
    out.width = max(out.width, 120)  # logs and pipes: rich would otherwise assume 80 columns and truncate tables
err = Console(stderr=True, highlight=False, soft_wrap=True)
# click's exceptions, from wherever this typer takes click (recent versions vendor it as typer._click)
_click_exceptions = sys.modules[typer.BadParameter.__module__]


def one_line(message: str) -> str:
    """An error is one line even when it quotes user input with line breaks or control characters
    (a `--set` value, a file name): those are shown escaped, as Python writes them."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def handle_errors(fn):
    """Turn domain errors into one red line on stderr and the right exit code, without a traceback.

    Anything else is a bug and goes on to :func:`main`'s backstop (one line and a crash file).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConvtrainError as exc:
            from .errors import Interrupted

            if backstop.debug_enabled():
                err.print(escape("".join(traceback.format_exception(exc))), end="")
            # every rank stops on the same signal; rank 0 alone says so (with the resume command)
            if not (isinstance(exc, Interrupted) and os.environ.get("RANK", "0") not in ("", "0")):
                err.print(f"[bold red]error:[/] {escape(one_line(str(exc)))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except RuntimeError as exc:  # a collective whose partner process died or hung: one line, not DDP's traceback
            from .distributed import peer_failure

            failure = peer_failure(exc)
            if failure is None:
                raise
            err.print(f"[bold red]error:[/] {escape(one_line(str(failure)))}")
            raise typer.Exit(failure.exit_code) from None

    return wrapper


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an unexpected internal error "
                               "here instead of saving it to a crash file (or set CONVTRAIN_DEBUG=1)."),
) -> None:
    """Options that go before the command: convtrain --debug train ..."""
    backstop.set_debug(debug)


ConfigOpt = typer.Option(..., "--config", "-c", help="YAML config file.", show_default=False)
SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set optim.lr=3e-3 (repeatable).",
                      show_default=False)
DataRootOpt = typer.Option(None, "--data-root", help="Dataset folder (default: CONVTRAIN_DATA_ROOT, then the config).",
                           show_default=False)
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default runs/<name>-<time>); must be new or empty.",
                         show_default=False)
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps.", show_default=False)
SeedOpt = typer.Option(None, "--seed", help="Random seed (recorded in config.yaml).", show_default=False)
DataOpt = typer.Option(None, "--data", show_default=False,
                       help="Your own labelled images: a folder (DIR/train/<class>/*, optional val/ and test/) "
                            "or a train.csv file (label,pixel0,...); sets data.name (folder or csv) and data.root.")


def _with_data(data: Optional[str], sets: Optional[list[str]], config: Optional[Path]) -> list[str]:
    """``--data PATH`` as the --set overrides it stands for (before the user's own --set, which win)."""
    if data is None:
        return list(sets or [])
    from .sources import detect

    p = Path(data)
    name = detect(p)
    extra = [f"data.name={name}", f"data.root={p}"]
    if config is None and not any(s.partition("=")[0].strip() == "name" for s in sets or []):
        # runs/<data folder>-<time>: a train.csv is named after its folder
        stem = p.resolve().name if name == "folder" else (p.stem if p.stem != "train" else p.resolve().parent.name)
        extra.append(f"name={stem or 'run'}")
    return extra + list(sets or [])


NprocOpt = typer.Option(None, "--nproc-per-node", min=1, show_default=False,
                        help="Start N processes on this machine (DDP through torch.distributed.run; "
                             "gloo on CPU, nccl on GPUs).")


def _launch(nproc: int, config, sets, device, seed, data_root, run_hint: Optional[Path] = None,
            resuming: bool = False) -> None:
    """Re-run this very command in ``nproc`` processes, minus --nproc-per-node. ``run_hint`` (the
    --resume or --run-dir given) goes into the launcher's resume advice after Ctrl-C. The config is
    checked here first, so a mistake in it is one line, not one per process."""
    import sys

    from .distributed import launch

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            argv.append(arg)
    # a resumed run without --config takes its config from the run: the workers load that one
    cfg = _load(config, sets, device, seed, data_root) if config is not None or not resuming else None
    launch(nproc, argv, cfg.device if cfg else (device or "auto"), cfg.devices if cfg else None,
           run_hint=str(run_hint) if run_hint is not None else "RUN_DIR")


def _overrides(sets: Optional[list[str]], device: Optional[str], seed: Optional[int]) -> list[str]:
    extra = list(sets or [])
    if device is not None:
        extra.append(f"device={device}")
    if seed is not None:
        extra.append(f"seed={seed}")
    return extra


def _load(config: Optional[Path], sets, device, seed, data_root):
    from .config import load_config

    return load_config(config, _overrides(sets, device, seed), data_root=data_root)


@app.command()
@handle_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="YAML config file, or a packaged recipe's name (convtrain config "
                                               "list); default: the article's setup (the schema defaults)."),
    set_: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    data_root: Optional[str] = DataRootOpt,
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run: its directory or its last.pt.",
                                          show_default=False),
    nproc_per_node: Optional[int] = NprocOpt,
    data: Optional[str] = DataOpt,
    seeds: Optional[str] = typer.Option(None, "--seeds", show_default=False,
                                        help="Run the config once per seed (e.g. 0,1,2) into RUN/seed-N and write "
                                             "RUN/summary.json (mean, std, min/max); the same command with "
                                             "--run-dir RUN continues an interrupted one."),
) -> None:
    """Train a model from a YAML config (or the defaults).

    Example: convtrain train --config mnist --set train.epochs=2
    Example: convtrain train --data ./my_digits --set train.epochs=3
    """
    from .errors import ConfigError
    from .signals import StopSignals

    if resume is None:
        set_ = _with_data(data, set_, config)
    elif data is not None:
        raise ConfigError("--resume continues a run on its own data; drop --data")
    if seeds is not None:
        return _train_seeds(seeds, config, set_, run_dir, device, seed, data_root, resume, nproc_per_node)
    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, resume or run_dir,
                       resuming=resume is not None)
    if resume is not None and run_dir is not None:
        raise ConfigError("--resume continues a run in its own directory; drop --run-dir")
    # installed before torch is even imported: Ctrl-C / SIGTERM anywhere in the run is one line and exit 130
    with StopSignals() as signals:
        from .runner import Start, prepare_resume, run

        if resume is not None:
            cfg = _load(config, set_, device, seed, data_root) if config is not None else None
            start = prepare_resume(resume, cfg, _overrides(set_, device, seed), data_root)
        else:  # no --config: the schema defaults are the article's setup
            start = Start(_load(config, set_, device, seed, data_root), run_dir)
        _show_result(run(start, reporter=_reporter(), signals=signals))


@app.command()
@handle_errors
def finetune(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Pretrained checkpoint (.pt).", show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="YAML config file or recipe name; default: the schema defaults."),
    set_: Optional[list[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt,
    device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt,
    data_root: Optional[str] = DataRootOpt,
    nproc_per_node: Optional[int] = NprocOpt,
    data: Optional[str] = DataOpt,
) -> None:
    """Start a new run from pretrained weights (head re-initialised when the class count differs).

    Example: convtrain finetune --checkpoint runs/mnist/checkpoints/best.pt --config configs/fashion_finetune.yaml
    Example: convtrain finetune --checkpoint runs/mnist/checkpoints/best.pt --data ./my_letters
    """
    from .signals import StopSignals

    set_ = _with_data(data, set_, config)

    if nproc_per_node is not None:
        return _launch(nproc_per_node, config, set_, device, seed, data_root, run_dir)
    with StopSignals() as signals:
        from .runner import prepare_finetune, run

        cfg = _load(config, set_, device, seed, data_root)
        _show_result(run(prepare_finetune(checkpoint, cfg, run_dir), reporter=_reporter(), signals=signals))


def _train_seeds(seeds_text, config, sets, run_dir, device, seed, data_root, resume, nproc) -> None:
    """--seeds: one run per seed under one folder, then the summary table."""
    from .errors import ConfigError
    from .seeds import parse_seeds, run_seeds, seed_root
    from .signals import StopSignals

    if resume is not None:
        raise ConfigError("--seeds does not take --resume; continue a --seeds run with the same command "
                          "and --run-dir RUN (its seed runs are resumed)")
    if seed is not None:
        raise ConfigError("give either --seed or --seeds, not both")
    if nproc is not None:
        raise ConfigError("--seeds runs one process per seed run; --nproc-per-node is not supported with it")
    chosen = parse_seeds(seeds_text)
    with StopSignals() as signals:
        from .runner import run

        root = seed_root(run_dir, _load(config, sets, device, chosen[0], data_root))

        def run_one(start):
            out.print(f"[bold]seed {start.cfg.seed}[/]: {escape(str(start.run_dir))}")
            result = run(start, reporter=_reporter(), signals=signals)
            if result.is_main:
                out.print(f"seed {start.cfg.seed}: test accuracy {result.test['accuracy']:.4f}, "
                          f"best epoch {result.best_epoch}, training {result.train_seconds:.1f}s")
            return result

        summary = run_seeds(lambda s: _load(config, sets, device, s, data_root), chosen, root, run_one)
    _show_seeds(summary, root)


def _show_seeds(summary: dict, root: Path) -> None:
    seeds = summary["seeds"]
    table = Table(title=f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): mean, sample std, min, max")
    for col in ("metric", "mean", "std", "min", "max", *[f"seed {s}" for s in seeds]):
        table.add_column(col, justify="left" if col == "metric" else "right")
    per_seed = {r["seed"]: r for r in summary["runs"]}

    def row(name, st, values, fmt):
        std = "-" if st["std"] is None else fmt(st["std"])
        table.add_row(name, fmt(st["mean"]), std, fmt(st["min"]), fmt(st["max"]),
                      *["-" if v is None else fmt(v) for v in values])

    pct = lambda v: f"{v:.2%}"  # noqa: E731
    row("test accuracy", summary["test_accuracy"], [per_seed[s]["test_accuracy"] for s in seeds], pct)
    for e in summary["val_acc_per_epoch"]:
        i = e["epoch"] - 1
        row(f"val acc epoch {e['epoch']}", e,
            [per_seed[s]["val_acc"][i] if i < len(per_seed[s]["val_acc"]) else None for s in seeds], pct)
    row("training seconds", summary["train_seconds"], [per_seed[s]["train_seconds"] for s in seeds],
        lambda v: f"{v:.1f}")
    out.print(table)
    out.print(f"summary: {escape(str(root / 'summary.json'))}")


def _reporter():
    from .progress import Reporter

    return Reporter(out)


def _show_result(result) -> None:
    if not result.is_main:
        return
    table = Table(title="run summary", show_header=True, header_style="bold")
    for col in ("epoch", "train loss", "train acc", "val loss", "val acc", "test acc", "seconds"):
        table.add_column(col, justify="right")
    for r in result.epochs:
        table.add_row(str(r.epoch), f"{r.train_loss:.4f}", f"{r.train_acc:.4f}", f"{r.val_loss:.4f}",
                      f"{r.val_acc:.4f}", "-" if r.test_acc is None else f"{r.test_acc:.4f}", f"{r.seconds:.1f}")
    out.print(table)
    t = result.test
    out.print(f"best epoch {result.best_epoch} (val acc {result.best_val_acc:.4f}); "
              f"test accuracy of best.pt: [bold]{t['accuracy']:.4f}[/] (loss {t['loss']:.4f}, {t['num_samples']} images); "
              f"training {result.train_seconds:.1f}s")
    if result.run_dir is not None:
        out.print(f"run directory: {escape(str(result.run_dir))}")


@app.command("eval")
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
    from .evaluate import evaluate_checkpoint

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


@app.command()
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
    from .predict import predict_images

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


@app.command()
@handle_errors
def runs(
    args: Optional[list[str]] = typer.Argument(None, help="FOLDER (default runs), or: diff RUN_A RUN_B.",
                                               show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    plot_to: Optional[Path] = typer.Option(None, "--plot", help="diff: both runs' validation curves in one PNG "
                                           "(needs matplotlib).", show_default=False),
) -> None:
    """List runs, newest first: model, data, epochs, accuracies, time, status; or compare two runs.

    Status is finished, interrupted, failed, running (its lock is held) or unreadable (a damaged file;
    --json gives the reason as "error"). Reads only: safe while runs are training.

    `convtrain runs diff RUN_A RUN_B` lists the resolved-config keys that differ, the metrics per epoch
    (B - A) and each run's final test accuracy (a folder named diff is listed with ./diff).

    Example: convtrain runs runs/ ; convtrain runs diff runs/a runs/b --plot ab.png
    """
    from .errors import ConfigError

    args = list(args or [])
    if args[:1] == ["diff"]:
        if len(args) != 3:
            raise ConfigError("usage: convtrain runs diff RUN_A RUN_B [--plot OUT.png] [--json]")
        return _runs_diff(Path(args[1]), Path(args[2]), as_json, plot_to)
    if len(args) > 1:
        raise ConfigError(f"runs takes one folder, got {len(args)}; to compare two runs: convtrain runs diff A B")
    if plot_to is not None:
        raise ConfigError("--plot goes with convtrain runs diff RUN_A RUN_B")
    from .runs import list_runs

    folder = Path(args[0]) if args else Path("runs")
    found = list_runs(folder)
    if as_json:
        print(json.dumps(found))
        return
    if not found:
        out.print(f"no runs under {escape(str(folder))}")
        return
    table = Table(title=f"runs in {escape(str(folder))}")
    for col in ("run", "model", "data", "epochs", "best val acc", "test acc", "time", "status"):
        table.add_column(col, justify="right" if col in ("epochs", "best val acc", "test acc", "time") else "left")
    colors = {"finished": "green", "interrupted": "yellow", "failed": "red", "running": "cyan", "unreadable": "magenta"}
    for r in found:
        pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
        total = "?" if r["epochs_total"] is None else r["epochs_total"]
        table.add_row(escape(r["name"]), escape(r["model"] or "?"), escape(r["dataset"] or "?"),
                      f"{r['epochs']}/{total}", pct(r["best_val_acc"]), pct(r["test_acc"]), f"{r['seconds']:.0f}s",
                      f"[{colors.get(r['status'], 'white')}]{r['status']}[/]")
    out.print(table)
    for r in found:
        if r.get("error"):
            out.print(f"[magenta]unreadable:[/] {escape(r['error'])}")


def _runs_diff(a: Path, b: Path, as_json: bool, plot_to: Optional[Path]) -> None:
    from .rundiff import diff_runs, plot_diff

    d = diff_runs(a, b)
    if plot_to is not None:
        plot_diff(d, plot_to)
    if as_json:
        print(json.dumps(d))
        return
    out.print(f"A: {escape(d['a'])} ({d['status']['a'] or 'no results'})")
    out.print(f"B: {escape(d['b'])} ({d['status']['b'] or 'no results'})")
    cfg = Table(title="config differences" if d["config"] else "config: no differences")
    for col in ("key", "A", "B"):
        cfg.add_column(col)
    for c in d["config"]:
        cfg.add_row(escape(c["key"]), escape(repr(c["a"])), escape(repr(c["b"])))
    out.print(cfg)
    table = Table(title="per epoch (delta = B - A)")
    for col in ("epoch", "val acc A", "val acc B", "delta", "val loss A", "val loss B", "delta", "train loss delta"):
        table.add_column(col, justify="right")
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for e in d["epochs"]:
        va, vl, tl = e["val_acc"], e["val_loss"], e["train_loss"]
        table.add_row(str(e["epoch"]), f(va["a"], ".4f"), f(va["b"], ".4f"), f(va["delta"], "+.4f"),
                      f(vl["a"], ".4f"), f(vl["b"], ".4f"), f(vl["delta"], "+.4f"), f(tl["delta"], "+.4f"))
    out.print(table)
    t = d["test_accuracy"]
    out.print(f"final test accuracy: A {f(t['a'], '.4f')}, B {f(t['b'], '.4f')} (delta {f(t['delta'], '+.4f')})")
    if plot_to is not None:
        out.print(f"wrote {escape(str(plot_to))}")


@app.command()
@handle_errors
def plot(run_dir: Path = typer.Argument(..., help="A run directory.", show_default=False)) -> None:
    """Write curves.png (loss and accuracy per epoch) and confusion.png (test set) into a run.

    Reads the run's files only (safe while it trains); replaces nothing but those two pictures.

    Example: convtrain plot runs/mnist-20261128-152128
    """
    from .plots import plot_run

    for path in plot_run(run_dir):
        out.print(f"wrote {escape(str(path))}")


@app.command()
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
    from .export import export_checkpoint

    r = export_checkpoint(checkpoint, fmt, output, data_root)
    out.print(f"wrote {escape(r['path'])} ({r['format']}); max |difference| vs the checkpoint "
              f"{r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g}) on {escape(r['checked_on'])}, "
              f"same predictions: {r['same_predictions']}")


@app.command()
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
    from .keep import average_checkpoints

    r = average_checkpoints(list(checkpoints), output)
    out.print(f"wrote {escape(r['output'])}: the mean of {len(r['averaged'])} checkpoints ({r['tensors']} tensors)")


@app.command()
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
    from .plots import visualize as make_pictures

    for path in make_pictures(checkpoint, image, output_dir, data_root, invert):
        out.print(f"wrote {escape(str(path))}")


@app.command()
@handle_errors
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered models.

    Example: convtrain models
    """
    from .catalog import MODELS as rows  # the registry's models as plain data: no torch to import

    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="registered models (10 classes, 1x28x28 input)")
    table.add_column("name", style="bold")
    table.add_column("parameters", justify="right")
    table.add_column("kwargs")
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], f"{r['parameters']:,}", escape(", ".join(f"{k}={v}" for k, v in r["kwargs"].items())),
                      escape(r["description"]))
    out.print(table)


@config_app.command("show")
@handle_errors
def config_show(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file (default: schema defaults).",
                                          show_default=False),
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    data: Optional[str] = DataOpt,
) -> None:
    """Print the fully resolved config as YAML, without running anything.

    Example: convtrain config show --config configs/mnist.yaml --set optim.lr=3e-3
    """
    from .config import to_yaml

    print(to_yaml(_load(config, _with_data(data, set_, config), None, None, data_root)), end="")


@config_app.command("keys")
@handle_errors
def config_keys(as_markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (for the README).")) -> None:
    """List every config key with its type, default and meaning.

    Example: convtrain config keys --markdown
    """
    from .config import schema_rows

    rows = schema_rows()
    if as_markdown:
        print(markdown_reference(rows), end="")
        return
    table = Table(title="config keys")
    for col in ("key", "type", "default", "meaning"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    out.print(table)


@config_app.command("list")
@handle_errors
def config_list(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the packaged recipes (usable as --config NAME from any folder).

    Example: convtrain config list
    """
    from .recipes import listing

    rows = listing()
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="packaged recipes (--config NAME; convtrain config copy NAME DEST to edit one)")
    for col in ("name", "description", "command"):
        table.add_column(col, style="bold" if col == "name" else None)
    for r in rows:
        table.add_row(escape(r["name"]), escape(r["description"]), escape(r["command"]))
    out.print(table)


@config_app.command("copy")
@handle_errors
def config_copy(
    name: str = typer.Argument(..., help="Recipe name (convtrain config list).", show_default=False),
    dest: Path = typer.Argument(..., help="File to write, or a folder to write NAME.yaml in.", show_default=False),
) -> None:
    """Write a packaged recipe out to edit it (never overwrites a file).

    Example: convtrain config copy mnist my_mnist.yaml
    """
    from .recipes import copy

    out.print(f"wrote {escape(str(copy(name, dest)))}")


@data_app.command("inspect")
@handle_errors
def data_inspect(
    data: Optional[str] = typer.Option(None, "--data", show_default=False,
                                       help="A folder (DIR/train/<class>/*) or a train.csv file."),
    dataset: Optional[str] = typer.Option(None, "--dataset", show_default=False,
                                          help="A registered dataset instead (mnist, fashion_mnist)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", show_default=False,
                                          help="Take the data settings from this config or recipe."),
    set_: Optional[list[str]] = SetOpt,
    data_root: Optional[str] = DataRootOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
) -> None:
    """Splits, class counts, image sizes and channels, mean/std, unreadable and ignored files.

    Example: convtrain data inspect --data ./my_digits
    """
    from .datainfo import inspect_data, render

    sets = ([f"data.name={dataset}"] if dataset else []) + _with_data(data, set_, config)
    r = inspect_data(_load(config, sets, None, None, data_root))
    if as_json:
        print(json.dumps(r))
        return
    render(r, out)


@app.command()
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

    from .explain import (ARTICLE_BIAS, ARTICLE_ERRATA, ARTICLE_INPUT, ARTICLE_KERNEL, explain, parse_matrix,
                          parse_pair)

    article = input is None and kernel is None and bias is None and (stride, padding, dilation) == ("1", "0", "1")
    ex = explain(parse_matrix(ARTICLE_INPUT if input is None else input, "input"),
                 parse_matrix(ARTICLE_KERNEL if kernel is None else kernel, "kernel"),
                 ARTICLE_BIAS if bias is None else bias, parse_pair(stride, "stride", 1),
                 parse_pair(padding, "padding", 0), parse_pair(dilation, "dilation", 1))
    if as_json:
        print(json.dumps({**dataclasses.asdict(ex), "agrees": ex.agrees}))
        return
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
    if not ex.agrees:
        raise typer.Exit(1)


@app.command()
@handle_errors
def serve(
    checkpoints: list[str] = typer.Option(..., "--checkpoint", show_default=False,
                                          help="Checkpoint (.pt) to serve, or NAME=PATH; repeat for several "
                                               "(the first is the default model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (localhost only by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder whose runs the /runs page shows."),
    max_bytes: int = typer.Option(10 * 1024 * 1024, "--max-bytes", min=1, help="Largest request body in bytes."),
    max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", min=1, help="Largest image, in pixels (width x height)."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most images in one JSON request."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads per request (requests run in parallel)."),
) -> None:
    """Serve a prediction API (/v1/predict, docs at /docs) and a page to draw a digit (/).

    Example: convtrain serve --checkpoint runs/mnist/checkpoints/best.pt --port 8000
    """
    from .serve import Limits, run_server

    run_server(checkpoints, host=host, port=port, runs_dir=runs_dir,
               limits=Limits(max_bytes=max_bytes, max_pixels=max_pixels, max_batch=max_batch), threads=threads)


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


def markdown_reference(rows) -> str:
    """The config reference table that README.md embeds (a test keeps them in sync)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {t} | `{d}` | {h.replace('|', '/')} |" for k, t, d, h in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    """The console script. Typer exits 2 for its own usage errors, like our config errors; the
    backstop turns any other exception into one line, exit 1 and a crash file."""
    try:
        _main()
    except SystemExit as exc:
        if _distributed_worker():
            _exit_now(exc.code)
        # (not under a profiler or debugger: cProfile writes its numbers after main() returns)
        if "torch" in sys.modules and sys.getprofile() is None and sys.gettrace() is None:
            _exit_after_atexit(exc.code)
        raise


def _distributed_worker() -> bool:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _exit_now(code) -> None:
    """End a distributed worker without the interpreter's shutdown: a rank that finished (its files
    written, its process group destroyed) sometimes aborted in a C++ destructor at exit ("terminate
    called without an active exception", SIGABRT), which the launcher reports as a failed run."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _exit_after_atexit(code) -> None:
    """End a command that imported torch without the interpreter's teardown of its modules, which
    took 0.5-1.0 s after every such command on our 2-core machine (measured: `import torch`, then
    exit). Everything the command wrote is closed by then (files are written atomically and closed
    where they are made); the exit handlers registered with atexit (MLflow's, logging's,
    multiprocessing's) still run, then the streams are flushed."""
    import atexit

    run_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython's own: what a normal exit calls
    if run_handlers is not None:
        run_handlers()
    if code is not None and not isinstance(code, int):  # sys.exit("message"): Python prints it, exit 1
        print(code, file=sys.stderr)
    _exit_now(code)


def _main() -> None:
    sys.stdout = watched = _WatchedStdout(sys.stdout)
    try:
        # standalone_mode=False: click's usage errors come here, to be shown as one line like ours
        code = app(prog_name=os.environ.get("CONVTRAIN_PROG", "convtrain"), standalone_mode=False)
    except _click_exceptions.NoArgsIsHelpError as exc:
        _show_click_error(exc)  # plain `convtrain`: the help, as typer shows it
    except _click_exceptions.ClickException as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) is not None else ""
        err.print(f"[bold red]error:[/] {escape(one_line(exc.format_message().rstrip('.')))}{escape(hint)}")
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C or end of input outside a command's own handler
        err.print("[bold red]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        _flush_stdout()  # a buffered write to a closed pipe fails only now, not inside the command
        raise
    except OSError as exc:
        if exc is watched.failed or isinstance(exc, BrokenPipeError):
            _output_failed(exc)
        _backstop(exc)
    except Exception as exc:  # noqa: BLE001 - the backstop: everything that is not a domain error
        _backstop(exc)
    _flush_stdout()  # a buffered write to a closed pipe fails only now, not inside the command
    sys.exit(code if isinstance(code, int) else 0)  # an int: typer.Exit's code; else what the command returned


def _show_click_error(exc) -> None:
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
    except ImportError:
        exc.show()
    sys.exit(exc.exit_code)


def _backstop(exc: Exception) -> None:
    """One line and exit 1 for an exception that is not a domain error: a bug, or an unforeseen failure."""
    if backstop.debug_enabled():
        traceback.print_exception(exc)
        err.print(f"[bold red]error:[/] internal error ({escape(one_line(backstop.summary(exc)))})")
    else:
        err.print(f"[bold red]error:[/] {escape(one_line(backstop.crash_message(exc)))}")
    sys.exit(1)


class _WatchedStdout:
    """sys.stdout that remembers a failed write, so ``> /dev/full`` is told apart from a crash."""

    def __init__(self, stream) -> None:
        self._stream, self.failed = stream, None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self.failed = exc
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self.failed = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        _output_failed(exc)


def _output_failed(exc: OSError) -> None:
    """stdout cannot be written: a reader that went away (``| head``) ends the command quietly, a
    full disk (``> /dev/full``) with one line; exit 1 either way, as the output is incomplete."""
    _quiet_stdout()
    if not isinstance(exc, BrokenPipeError):
        err.print(f"[bold red]error:[/] cannot write the output: {escape(exc.strerror or str(exc))}")
    sys.exit(1)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's own flush at exit has nothing left to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
