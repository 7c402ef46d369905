"""Ctrl-C and SIGTERM at every stage of a real run (a subprocess): exit 130, one line, no traceback,
and the files left behind are whole and resumable.

A step takes milliseconds, so "the signal landed while X was running" is made provable with the
runner's test hook: CONVTRAIN_TEST_PAUSE=<point>:<seconds> prints "test pause: <point>" on stderr
and sleeps there (convtrain.training.signals.pause_for_test); the test sends its signal after reading it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convtrain.artifacts import checkpoint
from convtrain.errors import Interrupted
from convtrain.training.signals import StopSignals

from ..conftest import REPO, run_cli

SMALL = ["train", "-c", "configs/smoke.yaml", "--set", "data.train_subset=640", "--set", "data.val_size=200",
         "--set", "data.test_subset=200", "--set", "train.epochs=1", "--set", "log.plots=false"]


class Run:
    """``python -m convtrain ARGS`` with stderr read line by line (stdout goes to a file)."""

    def __init__(self, args: list[str], tmp: Path, pause: str | None = None) -> None:
        env = {**os.environ, "CONVTRAIN_TEST_PAUSE": pause or ""}
        self.stdout_path = tmp / "stdout.txt"
        with open(self.stdout_path, "w") as stdout:
            self.proc = subprocess.Popen([sys.executable, "-m", "convtrain", *args], cwd=REPO, env=env,
                                         stdout=stdout, stderr=subprocess.PIPE, text=True)
        self.seen: list[str] = []

    def wait_for(self, text: str) -> None:
        for line in self.proc.stderr:
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(f"the run ended before {text!r}; stderr: {''.join(self.seen)}")

    def wait_for_stdout(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout_path.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, f"no {text!r} on stdout"
            time.sleep(0.02)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> tuple[int, list[str]]:
        _, rest = self.proc.communicate(timeout=120)
        lines = [x for x in "".join(self.seen).splitlines() + rest.splitlines() if x.strip()]
        return self.proc.returncode, lines


def _error_lines(lines: list[str]) -> list[str]:
    return [x for x in lines if x.startswith("error: ")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_start_up_writes_nothing(data_root, tmp_path, sig):
    run_dir = tmp_path / "r"
    r = Run([*SMALL, "--run-dir", str(run_dir)], tmp_path, pause="start-up:30")
    r.wait_for("test pause: start-up")  # before the data is loaded
    r.send(sig)
    code, lines = r.finish()
    assert code == 130, lines
    assert lines == ["test pause: start-up", f"error: interrupted during start-up ({sig.name}); nothing was written"]
    assert not run_dir.exists()


@pytest.mark.slow
def test_ctrl_c_twice_in_the_loop_stops_at_once(data_root, tmp_path):
    """The second Ctrl-C lands after the first was acknowledged, while the run is provably still in
    the loop (paused where it honours the first one): it stops at once, with its own message."""
    run_dir = tmp_path / "r"
    r = Run([*SMALL, "--set", "data.train_subset=3000", "--set", "train.log_every=1", "--run-dir", str(run_dir)],
            tmp_path, pause="stop:30")
    r.wait_for_stdout("step 3/")
    r.send(signal.SIGINT)
    r.wait_for("SIGINT: stopping after this step")  # the first one is acknowledged...
    r.wait_for("test pause: stop")  # ...and the loop is still running, about to save last.pt
    r.send(signal.SIGINT)
    code, lines = r.finish()
    assert code == 130, lines
    assert not any("Traceback" in x for x in lines)
    assert _error_lines(lines) == [
        f"error: interrupted twice (SIGINT): stopped at once; no checkpoint yet, so --resume starts the run again "
        f"from epoch 1; resume with: convtrain train --resume {run_dir}"]
    assert not (run_dir / "checkpoints" / "last.pt").exists()  # stopped before the save, as the message says
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_sigterm_twice_during_a_save_finishes_the_save(data_root, tmp_path):
    """Both SIGTERMs land inside epoch 1's checkpoint write: the write completes (never torn, no
    temporary file), then the run stops at once, exit 130; --resume then finishes it."""
    run_dir = tmp_path / "r"
    # signals inside a save wait for it, so this pause is the test's length: long enough to send both
    r = Run([*SMALL, "--run-dir", str(run_dir)], tmp_path, pause="save:8")
    r.wait_for("test pause: save")
    r.send(signal.SIGTERM)
    r.wait_for("SIGTERM: stopping after this step")
    r.send(signal.SIGTERM)
    code, lines = r.finish()
    assert code == 130, lines
    assert _error_lines(lines) == [
        f"error: interrupted twice (SIGTERM): stopped at once; checkpoints/last.pt is the last completed save; "
        f"resume with: convtrain train --resume {run_dir}"]
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")  # the save that was under way, complete
    assert last["epoch"] == 1 and last["training_state"]["epoch_complete"]
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    resumed = run_cli("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_sigterm_during_the_final_test_is_resumable(data_root, tmp_path):
    run_dir = tmp_path / "r"
    r = Run([*SMALL, "--run-dir", str(run_dir)], tmp_path, pause="final-test:30")
    r.wait_for("test pause: final-test")
    r.send(signal.SIGTERM)
    code, lines = r.finish()
    assert code == 130, lines  # never 143: SIGTERM is handled until the process exits
    assert lines[-1].startswith("error: interrupted during the final test (SIGTERM)") and len(_error_lines(lines)) == 1
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["training_state"]["epoch_complete"]
    resumed = run_cli("train", "--resume", str(run_dir))  # runs only the final test
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 1/1  train loss" not in resumed.stdout
    assert json.loads((run_dir / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_a_first_signal_during_the_last_save_still_stops(data_root, tmp_path):
    """A Ctrl-C that arrives after the last step (here: while the last epoch's checkpoint is being
    written) is not lost: the run stops there instead of going on to the final test."""
    run_dir = tmp_path / "r"
    r = Run([*SMALL, "--run-dir", str(run_dir)], tmp_path, pause="save:3")
    r.wait_for("test pause: save")
    r.send(signal.SIGINT)
    code, lines = r.finish()
    assert code == 130, lines
    assert _error_lines(lines) == [f"error: interrupted after the last epoch; last.pt saved. Resume with: convtrain "
                                   f"train --resume {run_dir} (it only runs the final test)"]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["training_state"]["epoch_complete"]


def test_stop_signals_in_process():
    """The handler's rules, signalling this very process: the first signal in the loop only sets the
    flag; inside a protected write a second one waits for the write's end, then stops."""
    acks: list[str] = []
    inherited = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # SIG_IGN in a background job
    with StopSignals(ack=acks.append) as stop:
        stop.graceful(lambda name: f"twice {name}")
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set() and acks == ["SIGINT: stopping after this step and saving last.pt "
                                          "(Ctrl-C again to stop at once)"]
        finished = False
        with pytest.raises(Interrupted, match="twice SIGTERM"):
            with stop.protected():
                os.kill(os.getpid(), signal.SIGTERM)
                finished = True  # still running: the signal waits for the end of the block
        assert finished
        stop.immediate(lambda name: f"now {name}")
        with pytest.raises(Interrupted, match="now SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in inherited} == inherited  # put back on exit, whatever they were


class _SignalsInFinalizer:
    """An object whose __del__ is where the signal lands: Python drops an exception raised there."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        time.sleep(0.05)  # the handler runs here, inside __del__


def test_a_signal_whose_interrupted_a_finalizer_dropped_stops_at_the_next_phase():
    """Issue 32: a Ctrl-C while the decode cache was written was swallowed once (the run trained to the end,
    exit 0): a handler that raises inside a finalizer (``__del__``, a weakref callback) has its exception
    dropped by Python. StopSignals records it through sys.unraisablehook and the next phase stops; an
    Interrupted that reached a caller (caught and handled) is not raised again. Breaks tried: the hook not
    installed (the graceful() below went on: no Interrupted); every raised signal counted as lost (as
    first written: test_stop_signals_in_process failed at its immediate(), "now SIGTERM")."""
    import gc

    with StopSignals(ack=lambda line: None) as stop:
        stop.immediate(lambda name: f"start-up {name}")
        _SignalsInFinalizer(signal.SIGINT)  # dropped at once: __del__ runs, the handler raises in it
        gc.collect()
        with pytest.raises(Interrupted, match="loop SIGINT"):
            stop.graceful(lambda name: f"loop {name}")  # the next phase: the lost signal stops it
        stop.graceful(lambda name: f"loop {name}")  # reported once, not again
        assert not stop.is_set()
    assert sys.unraisablehook is sys.__unraisablehook__ or sys.unraisablehook is not stop._unraisable
