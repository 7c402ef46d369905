"""``train`` installs its StopSignals before torch is imported, and the use-case layer imports torch with those
signals held: Ctrl-C during the imports waits for them to finish, then stops the command in one line, exit 130.

Each case runs in a fresh interpreter (torch not imported yet) whose StopSignals records when it is installed
and when it holds signals, and sends itself SIGINT the moment it first holds them (inside the imports).

Breaks tried (each failed here): the API importing torch outside ``signals.protected()`` (no hold recorded,
the command went on to its data error, exit 1: a valid config whose data is missing stops it after the imports,
as a config mistake is refused before them); the CLI importing the API's training modules at its own
import time (torch already imported when the signals were installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

PATCH = r"""
import contextlib, json, os, signal, sys
from convtrain.training import signals as sig

events = []
enter, protected = sig.StopSignals.__enter__, sig.StopSignals.protected

def recorded_enter(self):
    events.append(["installed", "torch" in sys.modules])
    return enter(self)

@contextlib.contextmanager
def recorded_protected(self):
    events.append(["held", "torch" in sys.modules])
    try:
        with protected(self):
            if os.environ.get("SEND_SIGINT") and len(events) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the imports
            yield
    finally:  # a signal held inside is raised as the hold ends
        events.append(["released", "torch" in sys.modules])

sig.StopSignals.__enter__, sig.StopSignals.protected = recorded_enter, recorded_protected
import atexit
atexit.register(lambda: open(os.environ["EVENTS"], "w").write(json.dumps(events)))
"""

CLI = PATCH + """
from convtrain.cli import main
sys.argv = ["convtrain", "train", "--set", "data.root=/nonexistent-dir", "--set", "data.download=false",
            "--run-dir", os.environ["RUN"]]
main()
"""

API = PATCH + """
import convtrain
from convtrain.training.signals import StopSignals
with StopSignals() as signals:
    try:
        convtrain.train(overrides={"data.root": "/nonexistent-dir", "data.download": False}, run_dir=os.environ["RUN"],
                        progress=False, signals=signals)
    except convtrain.ConvtrainError as exc:
        print(exc)
"""


def _run(code: str, tmp_path, send: bool) -> tuple[subprocess.CompletedProcess, list]:
    env = {**os.environ, "EVENTS": str(tmp_path / "events.json"), "RUN": str(tmp_path / "run"),
           "SEND_SIGINT": "1" if send else ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    return out, json.loads((tmp_path / "events.json").read_text())


@pytest.mark.slow
def test_ctrl_c_during_the_imports_of_train_is_one_line_and_130(tmp_path):
    out, events = _run(CLI, tmp_path, send=True)
    assert events[:2] == [["installed", False], ["held", False]]  # installed, then torch imported while held
    assert events[2] == ["released", True]
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip().splitlines() == ["error: interrupted (SIGINT)"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_api_imports_torch_with_the_callers_signals_held(tmp_path):
    out, events = _run(API, tmp_path, send=False)
    assert events == [["installed", False], ["held", False], ["released", True]]
    assert "cannot load dataset 'mnist' from '/nonexistent-dir'" in out.stdout and out.returncode == 0, out.stderr
