"""Which launcher started a process: SLURM node lists, a detection table per launcher, and the
contradictory or bad environments each refused in one line (convtrain.training.launchers).

Breaks tried, each failing here: zero padding dropped (``str(n)`` for ``zfill``): the padding rows;
splitting the node list at every comma (brackets ignored): ``node[01-04,07]``; SLURM read before
torchrun: the ``srun torchrun`` row; the job step check removed (SLURM_PROCID alone taken for a rank):
the batch-script row; ``none`` keeping SLURM's ranks: the ``--launcher none`` row; the torch-variables
comparison removed: the contradictory rows; MASTER_PORT ignoring a set value: the "kept" row.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app
from convtrain.errors import ConfigError
from convtrain.training import launchers
from convtrain.training.launchers import detect, parse_nodelist, parse_tasks_per_node

# --------------------------------------------------------------------------------------------
# Node lists (the same answers as `scontrol show hostnames`, which tests/training/test_slurm.py
# checks against the real scontrol)

NODELISTS = [
    ("localhost", ["localhost"]),
    ("node07", ["node07"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("gpu-a[1-2],gpu-b3", ["gpu-a1", "gpu-a2", "gpu-b3"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("m[099-101]", ["m099", "m100", "m101"]),
    ("x[008-010],y1", ["x008", "x009", "x010", "y1"]),
    ("rack[1-2]-node[01-02]", ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("a[3],b[7-7]", ["a3", "b7"]),
    ("c1,c2, c3", ["c1", "c2", "c3"]),
]


@pytest.mark.parametrize("text,hosts", NODELISTS, ids=[t for t, _ in NODELISTS])
def test_node_lists_expand_like_scontrol(text, hosts):
    assert parse_nodelist(text) == hosts


BAD_NODELISTS = [
    ("", "empty"), ("node[01-04", "'[' without ']'"), ("node01]", "']' without '['"), ("n[[1-2]]", "nested"),
    ("n[a-b]", "not a number"), ("n[4-1]", "counts down"), ("n[1-2],,m1", "empty entry"), ("n[]", "not a number"),
    ("n[0-99999999]", "more than 100,000 hosts"),
]


@pytest.mark.parametrize("text,words", BAD_NODELISTS, ids=[t or "empty" for t, _ in BAD_NODELISTS])
def test_bad_node_lists_say_why(text, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        parse_nodelist(text)


def test_tasks_per_node():
    assert parse_tasks_per_node("2") == [2]
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="not N or N"):
        parse_tasks_per_node("2(x)")


# --------------------------------------------------------------------------------------------
# Detection, one row per launcher

TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "h0", "MASTER_PORT": "29500"}
# what srun gives each task of `srun --ntasks=2` on one node (job 4242), measured on Debian's slurm-wlm 22.05
STEP = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0",
        "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_TASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_STEP_NODELIST": "node01",
        "SLURM_NNODES": "1"}
# task 3 of `srun --nodes=2 --ntasks-per-node=2`: the second node
TWO_NODES = {**STEP, "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS": "4",
             "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_STEP_NODELIST": "gpu-a[1-2]",
             "SLURM_NNODES": "2"}
BATCH = {k: v for k, v in STEP.items() if not k.startswith("SLURM_STEP")}  # the batch script's own shell
BATCH["SLURM_PROCID"] = "0"
MPI = {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
       "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "MASTER_ADDR": "h0"}

DETECTED = [  # (environment, --launcher, launcher, torch's variables it stands for (None: none written))
    ({}, None, "none", {}),
    (TORCHRUN, None, "torchrun", {}),
    ({**TORCHRUN, **STEP, "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, None, "torchrun", {}),  # srun torchrun
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, None, "torchrun", {}),  # a job script's
    (STEP, None, "slurm", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                           "MASTER_ADDR": "node01", "MASTER_PORT": "19242"}),
    (TWO_NODES, None, "slurm", {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                                "MASTER_ADDR": "gpu-a1", "MASTER_PORT": "19242"}),
    ({**STEP, "MASTER_ADDR": "login1", "MASTER_PORT": "23456"}, None, "slurm",  # set: kept
     {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "login1",
      "MASTER_PORT": "23456"}),
    ({**STEP, "RANK": "1", "WORLD_SIZE": "2"}, None, "slurm",  # a job script (or an earlier apply) that agrees
     {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node01",
      "MASTER_PORT": "19242"}),
    (BATCH, None, "none", {}),
    ({**STEP, "SLURM_PTY_PORT": "4000"}, None, "none", {}),  # an interactive srun --pty shell
    ({**STEP, "SLURM_PTY_PORT": "4000"}, "slurm", "slurm", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                                                          "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node01",
                                                          "MASTER_PORT": "19242"}),
    (STEP, "none", "none", {}),  # the opt-out: SLURM's variables ignored
    ({**STEP, "WORLD_SIZE": "2", "RANK": "1"}, "none", "none", {}),
    (MPI, None, "mpi", {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "h0", "MASTER_PORT": "29500"}),
    ({**MPI, **STEP}, "mpi", "mpi", {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                                     "MASTER_ADDR": "h0", "MASTER_PORT": "29500"}),  # named: SLURM's ignored
    ({**STEP, "CONVTRAIN_LAUNCHER": "none"}, None, "none", {}),
    ({**TORCHRUN, "CONVTRAIN_LAUNCHER": "torchrun"}, None, "torchrun", {}),
]


@pytest.mark.parametrize("environ,choice,name,env", DETECTED,
                         ids=["nothing", "torchrun", "srun torchrun", "RANK by hand", "srun 2 tasks", "srun 2 nodes",
                              "MASTER_* kept", "agreeing RANK", "batch shell", "srun --pty", "srun --pty, slurm named",
                              "--launcher none", "none clears WORLD_SIZE", "mpirun", "mpi named in a SLURM step",
                              "CONVTRAIN_LAUNCHER=none", "CONVTRAIN_LAUNCHER=torchrun"])
def test_detection(environ, choice, name, env):
    launch = detect(dict(environ), choice)
    assert launch.name == name
    assert launch.env == env


def test_batch_shell_with_several_tasks_says_so():
    (note,) = detect(BATCH).notes
    assert "batch script's own shell" in note and "SLURM_NTASKS=2" in note and "srun" in note


def test_apply_writes_torch_variables_and_is_idempotent():
    environ = dict(STEP)
    first = launchers.apply(None, environ)
    assert environ["RANK"] == "1" and environ["MASTER_ADDR"] == "node01"
    assert launchers.apply(None, environ) == first  # its own variables agree with SLURM's
    environ = {**STEP, "WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "x"}
    launchers.apply("none", environ)
    assert not {"RANK", "WORLD_SIZE", "MASTER_ADDR"} & set(environ)


def test_header_line_names_the_launcher():
    launch = detect(dict(STEP))
    line = launchers.describe(launch, 1, 2, "node01", 19242)
    assert line == "launcher: slurm, rank 1 of 2 (job 4242, step 0, nodes node01), rendezvous node01:19242"
    assert launchers.describe(detect({}), 0, 1, None, None) == ""


# --------------------------------------------------------------------------------------------
# Bad and contradictory environments: one line naming the variable

REFUSED = [  # (environment, --launcher, words the one line must hold)
    ({**STEP, "WORLD_SIZE": "4"}, None, "contradictory environment: SLURM (SLURM_PROCID, SLURM_NTASKS...) says "
                                        "WORLD_SIZE=2, RANK/WORLD_SIZE (set without torchrun) says WORLD_SIZE=4"),
    ({**STEP, **MPI}, None, "contradictory environment: SLURM (SLURM_PROCID, SLURM_NTASKS...) says RANK=1 WORLD_SIZE=2 "
                            "LOCAL_RANK=1, OpenMPI (OMPI_COMM_WORLD_*) says RANK=2 WORLD_SIZE=4 LOCAL_RANK=0"),
    ({**TORCHRUN, **STEP}, "slurm", "SLURM (SLURM_PROCID, SLURM_NTASKS...) says WORLD_SIZE=2, torchrun says WORLD_SIZE=4"),
    (TORCHRUN, "none", "--launcher none runs one process, but torchrun started this one as RANK=1 of WORLD_SIZE=4"),
    (BATCH, "slurm", "--launcher slurm, but this process is not a task of an srun job step"),
    ({}, "mpi", "--launcher mpi, but OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE are not set"),
    ({}, "torchrun", "--launcher torchrun, but RANK and WORLD_SIZE are not set"),
    ({}, "slrum", "--launcher 'slrum' is not one of auto, none, torchrun, slurm, mpi (did you mean 'slurm'?)"),
    ({"CONVTRAIN_LAUNCHER": "pbs"}, None, "CONVTRAIN_LAUNCHER 'pbs' is not one of"),
    ({**STEP, "SLURM_PROCID": "x"}, None, "SLURM_PROCID='x' must be a whole number >= 0"),
    ({**STEP, "SLURM_PROCID": "2"}, None, "SLURM_PROCID=2 must be below SLURM_STEP_NUM_TASKS=2"),
    ({**STEP, "SLURM_LOCALID": "2"}, None, "SLURM_LOCALID=2 must be below the tasks on this node=2"),
    ({**STEP, "SLURM_STEP_NUM_TASKS": "0"}, None, "SLURM_STEP_NUM_TASKS='0' must be a whole number >= 1"),
    ({**STEP, "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}, None, "SLURM_STEP_TASKS_PER_NODE='2(x2)' adds up to 4 tasks"),
    ({**STEP, "SLURM_STEP_TASKS_PER_NODE": "two"}, None, "SLURM_STEP_TASKS_PER_NODE='two' is not a tasks-per-node"),
    ({**TWO_NODES, "SLURM_NODEID": "2"}, None, "SLURM_NODEID=2 must be below the 2 node(s)"),
    ({**STEP, "SLURM_STEP_NODELIST": "node[01-"}, None, "SLURM_STEP_NODELIST='node[01-' is not a SLURM node list"),
    ({k: v for k, v in STEP.items() if "NODELIST" not in k}, None, "SLURM_JOB_NODELIST is not set"),
    ({**{k: v for k, v in STEP.items() if k != "SLURM_JOB_ID"}}, None, "SLURM_JOB_ID is not set"),
    ({**STEP, "SLURM_JOB_ID": "12a"}, None, "SLURM_JOB_ID='12a' must be a whole number"),
    ({k: v for k, v in MPI.items() if k != "MASTER_ADDR"}, None, "set MASTER_ADDR to rank 0's host"),
    ({**MPI, "OMPI_COMM_WORLD_RANK": "4"}, None, "OMPI_COMM_WORLD_RANK=4 must be below OMPI_COMM_WORLD_SIZE=4"),
]


@pytest.mark.parametrize("environ,choice,words", REFUSED, ids=[w[:40] for _, _, w in REFUSED])
def test_bad_or_contradictory_environment_is_one_line(environ, choice, words):
    with pytest.raises(ConfigError) as info:
        detect(dict(environ), choice)
    message = str(info.value)
    assert words in message and "\n" not in message


@pytest.fixture
def environ(monkeypatch):
    """Set variables in this process for an in-process CLI call; everything the call adds (torch's
    variables, CONVTRAIN_LAUNCHER) is undone afterwards as well."""
    for name in (*launchers.TORCH_VARS, "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", launchers.ENV_CHOICE, *STEP):
        monkeypatch.setenv(name, "")  # recorded as unset, so the undo removes what the call wrote
        monkeypatch.delenv(name)

    def put(values: dict) -> None:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
    return put


def test_contradictory_environment_through_the_cli(environ, tmp_path):
    """A stray WORLD_SIZE=4 inside a 2-task srun step: one red line, exit 2, before torch starts or anything
    is written; `--launcher none` then runs it as one process (checked without training: the same
    environment passes the launcher check and reaches the config check)."""
    environ({**STEP, "WORLD_SIZE": "4"})
    result = CliRunner().invoke(app, ["train", "-c", "smoke", "--set", "dist_timeout=5", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: contradictory environment") and "--launcher" in line
    assert not (tmp_path / "r").exists()
    result = CliRunner().invoke(app, ["train", "-c", "smoke", "--launcher", "none", "--set", "train.nope=1",
                                      "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "train.nope" in result.stderr  # past the launcher, stopped by the config check


def test_nproc_per_node_inside_a_several_task_step_is_refused(environ, tmp_path):
    environ(STEP)
    result = CliRunner().invoke(app, ["train", "-c", "smoke", "--nproc-per-node", "2", "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "--nproc-per-node starts processes of its own, but slurm started this one as rank 1 of 2" in result.stderr
