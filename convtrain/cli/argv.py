"""The command line as people type it, before Typer parses it.

- ``convtrain train train.epochs=2``: a bare ``key.path=value`` after ``train``, ``finetune``,
  ``config show`` or ``eval`` means ``--set key.path=value`` (the habit of yolo, torchtune, Hydra).
- ``--train.epochs 2``, ``--momentum 0.9`` or a bare ``train.epochs`` after those commands: one line
  saying how config keys are set, instead of "no such option".
- ``--checkpoint ''`` or ``--resume ''`` (an unset shell variable): one line, instead of the current
  folder (Typer reads an empty path as ``.``, which inside a run directory is that run).
- ``--checkpoint runs/a runs/b`` (a shell glob that matched two runs) after a command that takes one
  checkpoint: one line naming them and asking to pick one, instead of an image decoded from a .pt file
  or "unexpected extra argument".

Errors are :class:`~convtrain.errors.ConfigError` (one line, exit 2); everything else is left as typed.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

KEY_COMMANDS = ("train", "finetune", "config show", "eval")  # where bare key=value means --set
# the option that takes the one checkpoint, per command (serve repeats it: one path per --checkpoint)
CHECKPOINT_OPTIONS = {"eval": "--checkpoint", "predict": "--checkpoint", "finetune": "--checkpoint",
                      "export": "--checkpoint", "visualize": "--checkpoint", "serve": "--checkpoint",
                      "train": "--resume"}
KEY_VALUE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*=")
# options whose value may be left out (`eval --report` alone: its default folder), per command: the
# value they then get ("" means "the default")
OPTIONAL_VALUE = {"eval": {"--report": ""}}
NUMBER = re.compile(r"^-\d|^-\.\d")


def rewrite(group, args: list[str]) -> list[str]:
    """``args`` (without the program name) as Typer should see them; see the module docstring."""
    args = list(args)
    i = 0
    while i < len(args) and args[i].startswith("-"):  # options before the command: --debug, --version
        i += 1
    cmd, path = group, []
    while i < len(args) and hasattr(cmd, "commands") and args[i] in cmd.commands:
        cmd = cmd.commands[args[i]]
        path.append(args[i])
        i += 1
    if not path or hasattr(cmd, "commands"):
        return args
    return args[:i] + _rewrite_command(" ".join(path), _value_options(cmd), args[i:])


def _value_options(cmd) -> dict[str, bool]:
    """Each option name of a click command -> whether it takes a value."""
    found = {"--help": False}
    for p in cmd.params:
        if getattr(p, "param_type_name", None) == "option":
            for name in (*p.opts, *p.secondary_opts):
                found[name] = not (p.is_flag or p.count)
    return found


def _rewrite_command(name: str, options: dict[str, bool], args: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + args[i:]
        if tok.startswith("-") and len(tok) > 1 and not NUMBER.match(tok):
            flag = tok.split("=", 1)[0]
            if flag not in options:
                if name in KEY_COMMANDS:
                    _refuse_key_flag(tok, args[i + 1] if i + 1 < len(args) else None)
                out.append(tok)
                i += 1
                continue
            out.append(tok)
            i += 1
            if flag == CHECKPOINT_OPTIONS.get(name) and ("=" in tok or i < len(args)):
                _refuse_empty(flag, tok.partition("=")[2] if "=" in tok else args[i])
            if flag in OPTIONAL_VALUE.get(name, {}) and "=" not in tok and _no_value(args[i:]):
                out.append(OPTIONAL_VALUE[name][flag])
                continue
            if options[flag] and "=" not in tok and i < len(args):
                out.append(args[i])
                i += 1
                if flag == CHECKPOINT_OPTIONS.get(name):
                    _refuse_several(name, flag, args[i - 1], args[i:])
            continue
        if name in KEY_COMMANDS and KEY_VALUE.match(tok):
            out += ["--set", tok]
        else:
            if name in KEY_COMMANDS:
                _refuse_bare_key(tok, args[i + 1] if i + 1 < len(args) else None)
            out.append(tok)
        i += 1
    return out


def _refuse_empty(flag: str, value: str) -> None:
    """``--checkpoint ''`` (an unset shell variable): Typer makes it Path(''), which is the current folder."""
    from ..artifacts.checkpoint_args import check_given

    check_given(value, flag)


def _no_value(rest: list[str]) -> bool:
    """An optional-value option is given alone: last, or followed by an option or a key=value."""
    return not rest or (rest[0].startswith("-") and len(rest[0]) > 1) or bool(KEY_VALUE.match(rest[0]))


def _refuse_several(command: str, flag: str, first: str, rest: list[str]) -> None:
    """``--checkpoint A B ...``: the paths after A that name checkpoints (a glob's other matches)."""
    from ..artifacts.checkpoint_args import looks_like_checkpoint, one_checkpoint

    more = []
    for tok in rest:
        if tok.startswith("-") or not looks_like_checkpoint(tok):
            break
        more.append(tok)
    if more:
        one_checkpoint([first, *more], flag, several=command == "serve")


def _config_key(word: str) -> str | None:
    """The config key a flag name or bare word stands for: ``train.epochs``, ``train-epochs``, ``momentum``."""
    from ..config.schema import key_paths

    known = key_paths()
    word = word.strip()
    if not word:
        return None
    candidates = [word, word.replace("-", "_"), word.replace("-", ".", 1).replace("-", "_")]
    for c in candidates:
        if c in known and "." in c:
            return c
    leaf = word.replace("-", "_")
    same = [k for k in known if k.rpartition(".")[2] == leaf and "." in k]
    return same[0] if len(same) == 1 else None


def _hint(key: str, value: str | None) -> str:
    example = f"{key}={value if value is not None and not value.startswith('-') else '...'}"
    return f"use `{example}` or `--set {example}`"


def _refuse_key_flag(tok: str, following: str | None) -> None:
    name, eq, value = tok.lstrip("-").partition("=")
    key = _config_key(name)
    if key is not None:
        raise ConfigError(f"no option {tok.split('=', 1)[0]}: '{key}' is a config key; "
                          + _hint(key, value if eq else following))


def _refuse_bare_key(tok: str, following: str | None) -> None:
    key = _config_key(tok) if re.fullmatch(r"[A-Za-z_][\w.-]*", tok) else None
    if key is not None:
        raise ConfigError(f"unexpected argument '{tok}': '{key}' is a config key; " + _hint(key, following))
