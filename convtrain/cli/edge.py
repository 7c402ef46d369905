"""The command line's edge with the process: consoles, errors, exit codes, broken pipes, crash file.

Domain errors (:class:`~convtrain.errors.ConvtrainError`) become one red line on stderr and the
error's exit code: 2 for usage and config mistakes, 1 for failures at run time. Anything else is
a bug: one line, exit 1 and a crash file (:mod:`convtrain.backstop`). The commands themselves
live in the other modules of this package; :func:`run` takes the Typer app as an argument, so
this module imports none of them.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

import typer
from rich.console import Console
from rich.markup import escape

from .. import backstop
from ..errors import ConvtrainError, Interrupted

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal and not os.environ.get("COLUMNS"):
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


def escape_end(text: str) -> str:
    """``text`` escaped for rich markup where no tag follows it (a table cell, the end of a line).

    rich's ``escape`` doubles a trailing backslash, which is right only before a tag (``x\\[/]`` would
    otherwise escape the tag) and elsewhere shows as two: a class folder named ``x\\`` was listed as
    ``x\\\\`` by ``data inspect`` and in eval's confusion matrix.
    """
    escaped = escape(text)
    return escaped[:-1] if text.endswith("\\") and not text.endswith("\\\\") else escaped


def handle_errors(fn):
    """Turn domain errors into one red line on stderr and the right exit code, without a traceback.

    Anything else is a bug and goes on to :func:`main`'s backstop (one line and a crash file).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConvtrainError, Interrupted) as exc:
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
            from ..training.distributed import peer_failure

            failure = peer_failure(exc)
            if failure is None:
                raise
            err.print(f"[bold red]error:[/] {escape(one_line(str(failure)))}")
            raise typer.Exit(failure.exit_code) from None

    return wrapper


def run(app) -> None:
    """The console script's body. Typer exits 2 for its own usage errors, like our config errors; the
    backstop turns any other exception into one line, exit 1 and a crash file."""
    try:
        _main(app)
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


def _main(app) -> None:
    sys.stdout = watched = _WatchedStdout(sys.stdout)
    args = _rewritten_args(app)
    try:
        # standalone_mode=False: click's usage errors come here, to be shown as one line like ours
        code = app(args=args, prog_name=os.environ.get("CONVTRAIN_PROG", "convtrain"), standalone_mode=False)
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


def _rewritten_args(app) -> list[str]:
    """sys.argv as Typer should parse it (cli/argv.py: bare key=value, several checkpoints, keys typed as flags)."""
    from .argv import rewrite

    try:
        return rewrite(typer.main.get_command(app), sys.argv[1:])
    except ConvtrainError as exc:
        err.print(f"[bold red]error:[/] {escape(one_line(str(exc)))}")
        sys.exit(exc.exit_code)


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
