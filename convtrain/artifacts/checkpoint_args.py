"""What a checkpoint argument names: the one rule for every command that takes a checkpoint.

``eval``, ``predict``, ``finetune``, ``export``, ``visualize``, ``serve``, ``average`` and
``train --resume`` all pass what the user typed through :func:`resolve_checkpoint`:

- a ``.pt`` file is itself;
- a run directory means its ``checkpoints/best.pt`` (``checkpoints/last.pt`` for ``--resume``), and
  a run's ``checkpoints/`` folder the same file in it;
- ``latest`` means the newest finished run under the runs folder (``runs``, the config's
  ``out_dir`` default), as ``convtrain runs`` lists them; for ``--resume``, the newest run that is
  not running (an interrupted one, or a finished one to train longer);
- a run's name alone (``mnist-20261204-101500``) is looked up in the runs folder when no such path exists;
- an empty argument (an unset shell variable) is refused (:func:`check_given`), never the current folder.

Several paths where one is expected (a shell glob that matched two runs) is refused by
:func:`one_checkpoint` with one line naming them. Nothing here imports torch or reads a checkpoint.
"""

from __future__ import annotations

import glob
from pathlib import Path

from ..errors import ConfigError, RunDirError
from .listing import list_runs

LATEST = "latest"
DEFAULT_RUNS_DIR = "runs"  # the config's out_dir default: where `convtrain train` puts runs
MAX_NAMED = 4  # paths named in the "pick one" line


def resolve_checkpoint(spec: str | Path, *, last: bool = False, runs_dir: str | Path = DEFAULT_RUNS_DIR) -> Path:
    """The checkpoint file ``spec`` names (see the module docstring).

    ``last=True`` (``--resume``) picks ``last.pt``; a run directory that has no ``last.pt`` yet is
    returned as the directory, which ``--resume`` restarts from epoch 1. A path that does not exist
    is returned as given, so the reader's own "not found" error names it.
    """
    name = "last.pt" if last else "best.pt"
    if isinstance(spec, str):
        check_given(spec, "--resume" if last else "--checkpoint")
    text = str(spec)
    if text == LATEST:
        run = latest_run(runs_dir, resumable=last)
    else:
        run = Path(spec)
        if not run.exists() and glob.has_magic(text):  # a quoted glob (or --checkpoint=runs/x-*): expand it here
            matches = sorted(glob.glob(text))
            run = Path(one_checkpoint(matches)) if matches else run
        if not run.exists() and not run.is_absolute() and len(run.parts) == 1 and (Path(runs_dir) / run).is_dir():
            run = Path(runs_dir) / run  # a run's name, as `convtrain runs` shows it
        if not run.is_dir():
            return run
    if run.name == "checkpoints" and (run.parent / "config.yaml").exists():
        run = run.parent
    found = run / "checkpoints" / name
    if found.exists():
        return found
    if last and (run / "config.yaml").is_file():
        return run  # died before its first save: --resume restarts it with its saved config
    if not (run / "config.yaml").exists():
        raise RunDirError(f"{run} is a folder, not a run directory (no config.yaml) or a checkpoint; give a .pt "
                          f"file, a run directory (its checkpoints/{name}) or 'latest'")
    raise RunDirError(f"{run} has no checkpoints/{name} yet (the run stopped before saving one); "
                      + ("give a .pt file of it" if last else
                         f"resume it with: convtrain train --resume {run}"))


def check_given(spec: str, option: str = "--checkpoint") -> None:
    """An empty checkpoint argument is a usage error, never the current folder: ``--checkpoint "$RUN"``
    with RUN unset used the folder it ran in (inside a run directory, that run: ``--resume ''`` resumed
    it and rewrote its results.json and train.log)."""
    if not spec.strip():
        raise ConfigError(f"{option} is empty (an unset shell variable?); give a .pt file, a run directory "
                          "or 'latest'")


def latest_run(runs_dir: str | Path = DEFAULT_RUNS_DIR, *, resumable: bool = False) -> Path:
    """The newest finished run under ``runs_dir`` (``resumable``: the newest one not running)."""
    folder = Path(runs_dir)
    if not folder.is_dir():
        raise RunDirError(f"'latest' is the newest run under {folder}/, and there is no {folder}/ here; "
                          "give the run directory or a .pt file")
    wanted = ("finished", "interrupted", "failed") if resumable else ("finished",)
    for r in list_runs(folder):  # newest first
        if r["status"] in wanted:
            return Path(r["path"])
    what = "run that is not running" if resumable else "finished run"
    raise RunDirError(f"'latest': no {what} under {folder}/ (convtrain runs {folder} lists them); "
                      "give the run directory or a .pt file")


def one_checkpoint(specs: list[str | Path], option: str = "--checkpoint", *, several: bool = False) -> str | Path:
    """The one checkpoint of ``specs``; several (a glob that matched two runs) is one line asking to
    pick one (``several``: a command that takes one path per ``--checkpoint``, like serve)."""
    if len(specs) == 1:
        return specs[0]
    named = ", ".join(str(s) for s in specs[:MAX_NAMED]) + (f" and {len(specs) - MAX_NAMED} more"
                                                             if len(specs) > MAX_NAMED else "")
    how = f"; give each its own {option}" if several else ""
    raise ConfigError(f"{option} takes one checkpoint, got {len(specs)}: {named}; pick one "
                      f"(a run directory, a .pt file, or 'latest' for the newest finished run){how}")


def looks_like_checkpoint(arg: str) -> bool:
    """An argument that names a checkpoint rather than an image or a value: a ``.pt`` file or a run directory."""
    p = Path(arg)
    try:
        if p.suffix == ".pt":
            return True
        return p.is_dir() and (p / "config.yaml").is_file() and (p / "checkpoints").is_dir()
    except OSError:
        return False
