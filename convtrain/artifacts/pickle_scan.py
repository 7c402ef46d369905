"""What a checkpoint's pickle would run, found before ``torch.load`` opens it: any global outside a
short list of plain types means the file is not plain data, and it is refused by name.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

# Globals a checkpoint written by torch.save may name: tensor rebuilders and storage types
# (module torch.*), OrderedDict, and the few builtins protocol 2 uses for bytes and sets.
_PLAIN_GLOBALS = {"collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset",
                  "builtins.bytearray", "builtins.slice", "builtins.complex"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _pickle_stream(path: Path) -> io.BufferedIOBase:
    """The main pickle of a checkpoint: ``data.pkl`` inside torch's zip format, else the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return io.BytesIO(z.read(names[0]) if names else b"")
    return open(path, "rb")


def code_running_globals(path: Path) -> list[str]:
    """Callables other than tensor rebuilders that the file's pickle would import, read without running it.

    ``torch.load(weights_only=True)`` already refuses them; this scan only lets the refusal say why
    (a file that imports ``os.system`` is an attack, not a truncated download). It follows string
    pushes and the memo so that ``STACK_GLOBAL`` (protocol 4) is resolved as well as ``GLOBAL``.
    """
    found: list[str] = []
    try:
        stream = _pickle_stream(path)
    except Exception:  # a broken zip (BadZipFile, zlib.error, ...): nothing to scan, torch's error stands
        return found
    with stream:
        # a legacy torch file is several pickles in a row: scan each until the data ends
        for _ in range(8):
            pushed: list[Any] = []
            memo: dict[int, Any] = {}
            try:
                for op, arg, _pos in pickletools.genops(stream):
                    name = op.name
                    if name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                        pushed.append(None)
                    elif name == "STACK_GLOBAL":
                        module, attr = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                        found.append(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "?")
                        pushed.append(None)
                    elif name in _STRING_OPS:
                        pushed.append(arg)
                    elif name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif name in ("BINGET", "LONG_BINGET", "GET"):
                        pushed.append(memo.get(int(arg)))
                    elif name != "STOP":
                        pushed.append(None)
            except Exception:  # garbage or the end of the data: what was found so far is the answer
                break
    return [g for g in found if not (g.startswith("torch.") or g in _PLAIN_GLOBALS)]


def _refuse_code(path: Path, names: list[str]) -> CheckpointError:
    shown = ", ".join(dict.fromkeys(names[:3]))
    return CheckpointError(f"refusing to load {path}: it could run code (its pickle calls {shown}); "
                           "convtrain only loads checkpoints of plain data (torch.load weights_only=True)")
