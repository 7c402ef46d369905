"""The server process: bind the port (refusing a taken one in one line), print "serving on" once
uvicorn listens, and stop on Ctrl-C / SIGTERM.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (``request: Request``)
# at runtime, and Request is imported lazily inside create_app, out of reach of string annotations.

import contextlib
import os
import signal
import socket
from pathlib import Path

import torch

from ..errors import ConfigError, ServeError
from ..extras import require_extra
from .app import Limits, create_app, load_models

# ---------------------------------------------------------------- the server

def _bind(host: str, port: int) -> socket.socket:
    """Listen on host:port ourselves, so a busy port is one clear error instead of uvicorn's log."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        hint = "; choose another with --port (0 picks a free one)" if exc.errno in (98, 48, 10048) else ""
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def echo(line: str) -> None:
    print(line, flush=True)  # flushed: a script or test waits for the 'serving on' line


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(checkpoints: list[str], host: str = "127.0.0.1", port: int = 8000, runs_dir: str | Path = "runs",
               limits: Limits = Limits(), threads: int = 1) -> None:
    """Load every checkpoint, bind, then serve until Ctrl-C."""
    # python-multipart (module multipart) is FastAPI's form parser
    uvicorn = require_extra("serve", "convtrain serve", "FastAPI, uvicorn and python-multipart",
                            "uvicorn", "fastapi", "multipart")
    most = os.cpu_count() or 1
    if not 1 <= threads <= most:  # a huge value started that many threads and ran the machine out of process ids
        raise ConfigError(f"--threads {threads}: give 1 to {most} (this machine's CPU cores); requests already "
                          "run in parallel, one thread each by default")
    # one intra-op thread per request: concurrent requests then use the cores without oversubscribing them
    torch.set_num_threads(threads)
    models = load_models(checkpoints, runs_dir)
    app = create_app(models, runs_dir, limits)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    for m in models:
        echo(f"model {m.name}: {m.card['model']} on {m.card['dataset']}, {len(m.classes)} classes")
    if not is_loopback(host):
        echo(f"warning: listening on {host}: anyone who can reach this machine can use the API (no authentication)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    with _interrupt_on_signals():
        _ready_server(config, f"serving on http://{shown}:{bound}/ (API docs at /docs); Ctrl-C stops").run(sockets=[sock])


@contextlib.contextmanager
def _interrupt_on_signals():
    """Ctrl-C and SIGTERM end the server with "interrupted" and exit 130, as ``train`` does.

    uvicorn catches both for its graceful shutdown, puts back the handlers it found and then raises
    the signal again: with Python's own handlers a SIGTERM then killed the process (exit 143, no
    message), and a SIGINT inherited as ignored (a background job, ``nohup``) made it exit 0. Like
    ``train`` (see :mod:`convtrain.training.signals`), ``serve`` stops on either signal whatever the
    parent left in place: a signal sent to a convtrain process is a request to stop.
    """
    def stop(signum, frame):
        raise KeyboardInterrupt  # the CLI's one line: "interrupted", exit 130

    saved = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _ready_server(config, ready_line: str):
    """A uvicorn server that prints ``ready_line`` once it is serving: its event loop running and its
    Ctrl-C handling installed. Printed before that, a Ctrl-C right after the line could land before
    uvicorn had started (a traceback-free exit still, but with asyncio's 'never awaited' warning)."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                echo(ready_line)

    return Server(config)
