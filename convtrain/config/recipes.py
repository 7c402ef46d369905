"""The packaged recipes: ``configs/*.yaml``, shipped inside the package as ``convtrain/configs``.

``configs/`` in the repository stays the source of truth; ``convtrain/configs`` is a symlink to it,
which setuptools follows when it builds the wheel (``package-data``), so a pip user has the same
files. ``--config mnist`` finds ``mnist.yaml`` here from any working directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import atomic
from ..errors import ConfigError, did_you_mean

FOLDER = Path(__file__).resolve().parent.parent / "configs"  # convtrain/configs


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def find(name: str) -> Path | None:
    path = FOLDER / f"{name}.yaml"
    return path if name in names() else None


def describe(path: Path) -> dict:
    """The recipe's command (line 1, by convention: runnable from any folder) and its description
    (the first paragraph of the comments below it, whole)."""
    comments = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("#").strip())
    command = comments[0] if comments else ""
    body = comments[1:]
    while body and not body[0]:
        body = body[1:]
    paragraph = body[:body.index("")] if "" in body else body
    return {"name": path.stem, "command": command, "description": " ".join(paragraph), "path": str(path)}


def listing() -> list[dict]:
    return [describe(FOLDER / f"{n}.yaml") for n in names()]


def copy(name: str, dest: str | Path) -> Path:
    """Write recipe ``name`` to ``dest`` (a file, or a folder to put NAME.yaml in); never overwrites."""
    src = find(name)
    if src is None:
        raise ConfigError(f"no recipe '{name}'{did_you_mean(name, names())}; recipes: {', '.join(names())}")
    dest = Path(dest)
    try:  # a name over 255 bytes fails already in stat(): "File name too long"
        if dest.is_dir():
            dest = dest / src.name
        if dest.exists() or dest.is_symlink():
            raise ConfigError(f"{dest} exists already; choose another destination (nothing was written)")
        if not dest.parent.is_dir():
            raise ConfigError(f"folder {dest.parent} does not exist; create it first (nothing was written)")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(dest)[:80]}: {exc.strerror or exc}") from None
    try:
        with atomic.creating(dest) as tmp:  # never replaces a file that appeared meanwhile
            tmp.write_text(copy_text(name, dest), encoding="utf-8")
    except FileExistsError:
        raise ConfigError(f"{dest} exists already; choose another destination (nothing was written)") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def copy_text(name: str, dest: str | Path) -> str:
    """Recipe ``name`` as ``config copy`` writes it: line 1 runs the copy, line 2 says where it came from."""
    from ..version import __version__

    src = find(name)
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    first = re.sub(rf"--config {re.escape(name)}\b", f"--config {_quoted(str(dest))}", lines[0]) if lines else ""
    origin = f"# (a copy of convtrain {__version__}'s recipe '{name}': edit it, then run the line above)\n"
    return first + origin + "".join(lines[1:])


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)
