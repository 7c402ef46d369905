"""The ``convtrain`` Typer app: every command registered in one place, in the order ``--help`` lists them.

Each command lives in the module of its group (train.py, checkpoints.py, runs.py, config.py,
conv.py, serve.py, models.py, data.py, tune.py, launch.py, docs.py): it parses, calls one function of the library, and renders the result.
"""

from __future__ import annotations

import typer

from .. import backstop
from . import checkpoints, config, conv, data, docs, edge, launch, models, runs, serve, train, tune

app = typer.Typer(help="Train, evaluate and fine-tune convolutional networks on MNIST-style data.",
                  no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect configs without running them.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Look at a dataset without training on it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _show_version(value: bool) -> None:
    if value:
        from ..version import __version__

        print(f"convtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an unexpected internal error "
                               "here instead of saving it to a crash file (or set CONVTRAIN_DEBUG=1)."),
    _version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                  help="Print the version and exit."),
) -> None:
    """Options that go before the command: convtrain --debug train ..."""
    backstop.set_debug(debug)


for command in (train.train, train.finetune):
    app.command()(command)
app.command("eval")(checkpoints.eval_)
app.command()(checkpoints.calibrate)
app.command()(checkpoints.predict)
app.command()(tune.tune)
app.command()(launch.launch)
app.command()(runs.runs)
app.command()(runs.plot)
for command in (checkpoints.export, checkpoints.average, checkpoints.visualize, models.models, conv.conv,
                serve.serve, docs.docs):
    app.command()(command)
config_app.command("show")(config.config_show)
config_app.command("keys")(config.config_keys)
config_app.command("list")(config.config_list)
config_app.command("copy")(config.config_copy)
data_app.command("inspect")(data.data_inspect)
data_app.command("make-folder")(data.data_make_folder)


def main() -> None:
    """The ``convtrain`` console script (and ``python -m convtrain``)."""
    edge.run(app)
