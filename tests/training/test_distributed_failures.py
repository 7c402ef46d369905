"""Distributed runs that go wrong: a stray or garbage torch.distributed environment, Ctrl-C and
SIGTERM under the launcher, a worker killed with SIGKILL. Each ends in one line and the right
exit code, never a hang or a traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from convtrain.artifacts import checkpoint
from convtrain.cli.app import app
from convtrain.errors import ConfigError
from convtrain.training import distributed

from ..conftest import REPO, run_cli

TINY = ["-c", "configs/smoke.yaml", "--device", "cpu", "--set", "data.train_subset=2048", "--set", "data.val_size=256",
        "--set", "data.test_subset=256", "--set", "train.log_every=1"]
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict:
    """This process's environment without torch.distributed variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, **extra}


# --------------------------------------------------------------------------------------------
# The environment is checked before any process waits on another

GARBAGE = [  # (environment, variable the message must name, words it must contain)
    ({"RANK": "abc"}, "RANK='abc'", "whole number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'", ">= 1"),
    ({"WORLD_SIZE": "-3"}, "WORLD_SIZE='-3'", ">= 1"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'", "whole number"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK=2", "below WORLD_SIZE=2"),
    ({"RANK": "1"}, "RANK=1", "below WORLD_SIZE=1"),  # a lone rank 1 would silently write nothing
    ({"RANK": "-1"}, "RANK='-1'", ">= 0"),
    ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x'", "whole number"),
    ({"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=3", "below LOCAL_WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"}, "MASTER_PORT='99999'", "1 to 65535"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "abc"}, "MASTER_PORT='abc'", "1 to 65535"),
    ({"WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT are not set", "unset WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not set", "torchrun"),
]


@pytest.mark.parametrize("environ,names,words", GARBAGE,
                         ids=[" ".join(f"{k}={v}" for k, v in e.items()) for e, _, _ in GARBAGE])
def test_garbage_environment_is_refused(environ, names, words):
    with pytest.raises(ConfigError) as info:
        distributed.read_env(environ)
    assert names in str(info.value) and words in str(info.value)


def test_valid_environments_pass():
    assert distributed.read_env({}).world_size == 1
    env = distributed.read_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "x"})
    assert (env.rank, env.world_size, env.local_rank, env.master_port, env.under_torchrun) == (1, 2, 1, 29500, True)
    assert distributed.read_env({"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "junk"}).world_size == 1  # unused port


@pytest.mark.parametrize("environ,names,words", [GARBAGE[0], GARBAGE[4], GARBAGE[9], GARBAGE[11]],
                         ids=["RANK=abc", "RANK>=WORLD_SIZE", "MASTER_PORT=99999", "no MASTER_ADDR"])
def test_garbage_environment_through_the_cli(environ, names, words, monkeypatch, tmp_path):
    """The same checks as a user meets them: one red line, exit 2, no run directory."""
    for k in DIST_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["train", *TINY, "--set", "dist_timeout=2", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0] and words in lines[0]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------
# A stray WORLD_SIZE: a bounded wait and a line naming who is missing, not a 30-minute hang


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_stray_world_size_times_out_naming_the_missing_rank(rank, data_root, tmp_path):
    port = _free_port()
    env = _clean_env(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    start = time.monotonic()
    result = run_cli("train", *TINY, "--set", "dist_timeout=3", "--run-dir", str(tmp_path / "r"), env=env, timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert elapsed < 20
    assert "Traceback" not in result.stderr and "frame #" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    line = errors[0]
    expected = "missing: rank 1" if rank == 0 else f"could not reach rank 0 at 127.0.0.1:{port}"
    assert expected in line and ("within 3 s" in line or "waited 3 s" in line)
    for part in ("WORLD_SIZE=2", f"RANK={rank}", "LOCAL_RANK=unset", "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={port}",
                 "unset WORLD_SIZE", "torchrun"):
        assert part in line, part
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_env_rendezvous_by_hand_with_rank_1_first(data_root, tmp_path):
    """Two processes started by hand (a job script's way: RANK, WORLD_SIZE, MASTER_* set, no
    torchrun), rank 1 a few seconds before rank 0: rank 1 waits for rank 0's port, both train."""
    port = _free_port()
    run_dir = tmp_path / "r"
    cmd = [sys.executable, "-m", "convtrain", "train", *TINY, "--set", "data.train_subset=1024", "--set", "speed.threads=1",
           "--set", "log.plots=false", "--set", "dist_timeout=120", "--run-dir", str(run_dir)]
    procs = {}
    for rank in (1, 0):
        env = _clean_env(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs[rank] = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
    outputs = {rank: p.communicate(timeout=300) for rank, p in procs.items()}
    assert [procs[r].returncode for r in (0, 1)] == [0, 0], {r: err[-2000:] for r, (_, err) in outputs.items()}
    assert "run summary" in outputs[0][0] and outputs[1][0] == ""  # rank 1 prints nothing on stdout
    assert checkpoint.load(run_dir / "checkpoints" / "last.pt")["training_state"]["world_size"] == 2


# --------------------------------------------------------------------------------------------
# Under the launcher: Ctrl-C / SIGTERM -> 130 and a resumable last.pt; a killed worker -> one line


def _start_launcher(run_dir, *extra):
    cmd = [sys.executable, "-m", "convtrain", "train", *TINY, "--run-dir", str(run_dir), "--nproc-per-node", "2", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_clean_env())


def _wait_for_step(proc, step: int = 3) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f" step {step}/" in line:
            return seen
    raise AssertionError("no step line; stderr:\n" + proc.stderr.read()[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_the_launcher_exits_130_and_resumes(sig, data_root, tmp_path):
    run_dir = tmp_path / "r"
    proc = _start_launcher(run_dir)
    _wait_for_step(proc)
    proc.send_signal(sig)  # what Ctrl-C does: the workers run in their own sessions, only the launcher gets it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    launcher_line = err.strip().splitlines()[-1]
    assert launcher_line.startswith("error: interrupted") and sig.name in launcher_line
    assert f"convtrain train --resume {run_dir} --nproc-per-node 2" in launcher_line
    worker_lines = [line for line in err.splitlines() if line.startswith("error: interrupted at")]
    assert len(worker_lines) == 1 and str(run_dir) in worker_lines[0]  # rank 0 speaks, rank 1 does not
    last = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert last["training_state"]["world_size"] == 2 and not last["training_state"]["epoch_complete"]
    if sig == signal.SIGTERM:
        return  # one resume is enough to show the checkpoint is usable
    resumed = run_cli("train", "--resume", str(run_dir), "--nproc-per-node", "2", env=_clean_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "metrics.csv").read_text().count("\n") == 2  # header + epoch 1


@pytest.mark.slow
def test_killed_worker_is_one_line_naming_its_rank(data_root, tmp_path):
    proc = _start_launcher(tmp_path / "r")
    _wait_for_step(proc)
    with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    assert len(workers) == 2
    ranks = {}
    for pid in workers:  # each worker's RANK, from its environment
        environ = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
        ranks[int(environ["RANK"])] = pid
    os.kill(ranks[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert f"error: rank 1 (pid {ranks[1]}) was killed by SIGKILL" in err
    # the survivor says what happened to it in one line as well
    assert [line for line in err.splitlines() if line.startswith("error: rank 0 of 2 lost contact")]


def test_worker_failure_names_the_cause():
    """The launcher's line names the rank that failed first, not the ones the agent then stopped."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    def failure(rank, code):
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file="/nonexistent")

    killed = distributed._worker_failure({0: failure(0, -15), 1: failure(1, -9)}, 2)
    assert str(killed).startswith("rank 1 (pid 101) was killed by SIGKILL") and killed.exit_code == 1
    config_error = distributed._worker_failure({0: failure(0, -15), 1: failure(1, 2)}, 2)
    assert str(config_error).startswith("rank 1 exited with code 2") and config_error.exit_code == 2
    odd = distributed._worker_failure({0: failure(0, 7)}, 2)
    assert odd.exit_code == 1
