"""The backstop: an unexpected internal error is one line, exit 1 and a saved traceback; a closed
stdout ends quietly; usage errors keep exit 2. Real subprocesses, as a user runs them.

The internal error is a real one from the environment, not a mock of convtrain: a broken install
of matplotlib (an optional dependency, imported only when plots are drawn) whose import raises
AttributeError, as an old matplotlib does under a new numpy. convtrain handles a *missing*
matplotlib (ImportError, a domain error with an install hint); a broken one is unforeseen, and
no code path of its own turns it into a message, which is exactly the backstop's job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrain import backstop
from convtrain.cli.app import app

from ..conftest import REPO, run_cli
from ..hostile.kit import QUICK_SETS

BROKEN = "AttributeError: module 'numpy' has no attribute 'float'"


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory) -> dict:
    """PYTHONPATH with a matplotlib whose import fails the way a mismatched install does."""
    site = tmp_path_factory.mktemp("broken-site")
    (site / "matplotlib").mkdir()
    (site / "matplotlib" / "__init__.py").write_text(
        "raise AttributeError(\"module 'numpy' has no attribute 'float'.\\n`np.float` was a deprecated alias\")\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


@pytest.fixture(scope="module")
def crashed_run(data_root, broken_env, tmp_path_factory):
    """A small real run whose end-of-run plots hit the broken matplotlib."""
    tmp = tmp_path_factory.mktemp("crashed")
    run_dir = tmp / "run"
    env = {**broken_env, "XDG_CACHE_HOME": str(tmp / "cache")}
    result = run_cli("train", "-c", "configs/smoke.yaml", *QUICK_SETS, "--run-dir", str(run_dir), env=env)
    return run_dir, result, tmp / "cache"


def _crash_file(stderr: str) -> Path:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: internal error (AttributeError"), stderr
    found = re.search(r"the traceback is in (\S+\.txt);", lines[0])
    assert found, lines[0]
    return Path(found.group(1))


def _assert_saved_traceback(path: Path) -> None:
    text = path.read_text()
    assert "Traceback (most recent call last)" in text and BROKEN in text
    assert "command: " in text  # what was run, for the bug report


@pytest.mark.slow
def test_crash_during_a_run_saves_the_traceback_in_the_run(crashed_run):
    run_dir, result, cache = crashed_run
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    crash = _crash_file(result.stderr)
    assert crash.parent == run_dir  # set by the runner through backstop.set_run_dir
    _assert_saved_traceback(crash)
    assert (run_dir / "checkpoints" / "best.pt").is_file()  # the finished training is not lost
    assert not cache.exists()


@pytest.mark.slow
def test_crash_outside_a_run_goes_to_the_cache_and_debug_shows_it(crashed_run, broken_env, tmp_path):
    run_dir, _, _ = crashed_run
    env = {**broken_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    before = sorted(p.name for p in run_dir.iterdir())
    result = run_cli("plot", str(run_dir), env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    crash = _crash_file(result.stderr)
    assert crash.parent == tmp_path / "cache" / "convtrain"
    assert re.fullmatch(r"crash-\d{8}-\d{6}-\d+\.txt", crash.name)
    _assert_saved_traceback(crash)
    assert sorted(p.name for p in run_dir.iterdir()) == before

    for how in (["--debug", "plot", str(run_dir)], ["plot", str(run_dir)]):
        debug_env = env if how[0] == "--debug" else {**env, "CONVTRAIN_DEBUG": "1"}
        result = run_cli(*how, env=debug_env)
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr and BROKEN in result.stderr, how
        assert "╭" not in result.stderr  # never typer's rich traceback
        assert result.stderr.strip().splitlines()[-1].startswith("error: internal error (AttributeError")
        assert len(list((tmp_path / "cache" / "convtrain").iterdir())) == 1  # nothing saved in debug mode


@pytest.mark.slow
def test_crash_file_falls_back_to_the_temp_dir(crashed_run, broken_env, tmp_path):
    run_dir, _, _ = crashed_run
    (tmp_path / "cache-is-a-file").write_text("x")
    (tmp_path / "tmp").mkdir()
    env = {**broken_env, "XDG_CACHE_HOME": str(tmp_path / "cache-is-a-file"), "TMPDIR": str(tmp_path / "tmp")}
    result = run_cli("plot", str(run_dir), env=env)
    crash = _crash_file(result.stderr)
    assert crash.parent == tmp_path / "tmp"
    _assert_saved_traceback(crash)


def test_no_folder_takes_the_crash_file(tmp_path, monkeypatch):
    """Every folder unwritable: the line still comes, and says where to look instead."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr("tempfile.tempdir", str(blocker))  # what gettempdir() returns from now on
    backstop.set_run_dir(blocker / "run")
    try:
        try:
            raise RecursionError("maximum recursion depth exceeded\nwhile calling a Python object")
        except RecursionError as exc:
            message = backstop.crash_message(exc)
    finally:
        backstop.set_run_dir(None)
    assert message.startswith("internal error (RecursionError: maximum recursion depth exceeded)")
    assert "could not be saved" in message and "--debug" in message and "\n" not in message


def _env(buffered: bool) -> dict:
    """A user's environment has a buffered stdout (this one may set PYTHONUNBUFFERED)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return env if buffered else {**env, "PYTHONUNBUFFERED": "1"}


def _closed_pipe(*args: str, buffered: bool = True) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reading end is already closed (``convtrain ... | head -0``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        p = subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=REPO, stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120, env=_env(buffered))
    finally:
        os.close(write)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("args, buffered", [(["models", "--json"], True), (["models", "--json"], False),
                                            (["models"], True), (["runs", "--json", "RUNS"], True),
                                            (["runs", "--json", "RUNS"], False), (["conv"], True)])
def test_closed_stdout_ends_quietly(args, buffered, tmp_path):
    (tmp_path / "runs").mkdir()
    p = _closed_pipe(*[str(tmp_path / "runs") if a == "RUNS" else a for a in args], buffered=buffered)
    assert p.returncode == 1, p.stderr
    assert p.stderr == ""  # no traceback, no "Exception ignored ... BrokenPipeError"


@pytest.mark.slow
@pytest.mark.parametrize("args, buffered", [(["runs", "--json", "TMP"], True),  # fails at the final flush
                                            (["models", "--json"], False)])  # fails inside the command
def test_full_disk_on_stdout_is_one_line(args, buffered, tmp_path):
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "convtrain", *[str(tmp_path) if a == "TMP" else a for a in args]],
                           cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env=_env(buffered))
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == ["error: cannot write the output: No space left on device"]


@pytest.mark.slow
def test_usage_errors_keep_exit_2_in_one_line():
    for args, text in ((["--debug", "trian"], "No such command 'trian'. Did you mean 'train'? (see 'convtrain --help')"),
                       (["models", "--jsno"], "No such option: --jsno"),
                       (["eval"], "Missing option '--checkpoint' (see 'convtrain eval --help')")):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]  # one line, no box
        assert text in result.stderr
    bare = run_cli()  # plain `convtrain` still shows the help
    assert bare.returncode == 2 and "Commands" in bare.stdout + bare.stderr


def test_debug_shows_where_a_domain_error_came_from(tmp_path):
    runner = CliRunner()
    plain = runner.invoke(app, ["config", "show", "-c", str(tmp_path / "none.yaml")])
    debug = runner.invoke(app, ["--debug", "config", "show", "-c", str(tmp_path / "none.yaml")])
    assert plain.exit_code == debug.exit_code == 2
    assert plain.stderr.strip().splitlines() == [f"error: config file not found: {tmp_path / 'none.yaml'}"]
    assert "Traceback (most recent call last)" in debug.stderr and "ConfigError" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
