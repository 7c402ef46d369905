"""``convtrain serve``: parse the options and hand them to :func:`convtrain.serve.server.run_server`."""

from __future__ import annotations

from pathlib import Path

import typer

from .edge import handle_errors


@handle_errors
def serve(
    checkpoints: list[str] = typer.Option(..., "--checkpoint", show_default=False,
                                          help="Checkpoint to serve (a .pt file, a run directory or 'latest'), "
                                               "or NAME=PATH; repeat for several (the first is the default model)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (localhost only by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder whose runs the /runs page shows."),
    max_bytes: int = typer.Option(10 * 1024 * 1024, "--max-bytes", min=1, help="Largest request body in bytes."),
    max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", min=1, help="Largest image, in pixels (width x height)."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most images in one JSON request."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch threads per request (requests run in parallel)."),
) -> None:
    """Serve a prediction API (/v1/predict, docs at /docs) and a page to draw a digit (/).

    Example: convtrain serve --checkpoint latest --port 8000
    """
    from ..serve.app import Limits
    from ..serve.server import run_server

    run_server(checkpoints, host=host, port=port, runs_dir=runs_dir,
               limits=Limits(max_bytes=max_bytes, max_pixels=max_pixels, max_batch=max_batch), threads=threads)
