"""SLURM, simulated and real: two tasks of an srun step train one run over gloo exactly as
``--nproc-per-node 2`` does; a preemption notice (SIGUSR1) to one rank stops both, last.pt is
written once, the exit code is 75, and ``--resume auto`` finishes the run with the same metrics.csv;
on a real one-node cluster (slurmkit.py) an sbatch job from ``convtrain launch slurm`` does the same
(one task per process, and ``--torchrun``: srun starts torchrun), a notice to a running job makes its
script requeue it, ending in one finished run directory, and every script passes ``sbatch --test-only``.

Every comparison is against one ``--nproc-per-node 2`` run of the same config and seed: the ranks
read the same shards in the same order, so every number in metrics.csv but the timings is equal
(measured 2026-12-06: equal to all printed digits, interrupted and resumed or not).

Breaks tried: the preempted flag not agreed between ranks (``_stop_kind`` reading only its own rank):
the rank that got no signal exits 130, not 75; SIGUSR1 left out of StopSignals: the signalled rank dies
(-10) and its partner reports a lost peer; ``--resume auto`` treating an interrupted run as "start":
refused as a non-empty folder (exit 2); the job step check dropped from detection (a batch script's
SLURM_PROCID taken for a rank): no change here, caught by test_launchers.py's batch-shell row; the
script's requeue line removed: the job ends FAILED with exit 75 and no second start (re-tried
2026-12-06: ('FAILED', '0', '75:0')); torchrun's variables not checked first under ``srun torchrun``
(auto picks SLURM's one-task step): each process refuses the contradictory environment (exit 2) and
the --torchrun job fails; Preempted swapped for Interrupted in ``_stop_kind``: exit 130, not 75;
the --nproc-per-node launcher ending a SIGUSR1 stop as a Ctrl-C one: exit 130, not 75; the
--torchrun script's results.json check dropped: torchrun exits 1, the job ends ('FAILED', '0', '1:0').
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convtrain.artifacts import checkpoint
from convtrain.training.launchers import parse_nodelist

from ..conftest import REPO, run_cli
from ..tune import test_tune
from .slurmkit import start_or_explain
from .test_launchers import NODELISTS

COMMON = ["--config", str(REPO / "configs" / "smoke.yaml"), "--device", "cpu", "--set", "data.train_subset=2048",
          "--set", "data.val_size=256", "--set", "data.test_subset=256", "--set", "train.epochs=2",
          "--set", "train.batch_size=32", "--set", "train.log_every=1", "--set", "optim.name=sgd",
          "--set", "optim.lr=0.02", "--set", "optim.momentum=0", "--set", "speed.threads=1",
          "--set", "log.plots=false", "--set", "dist_timeout=120"]
TIMINGS = ("seconds", "val_seconds", "test_seconds")
postgres = test_tune.postgres  # a fixture: a throwaway PostgreSQL server on 127.0.0.1
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID", "CONVTRAIN_LAUNCHER")


def _rows(run: Path) -> list[dict]:
    """metrics.csv without the timing columns (the only numbers two equal runs may differ in)."""
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS and not k.startswith(("SLURM_", "OMPI_"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory) -> Path:
    """The same config as 2 processes through `--nproc-per-node 2`, never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    result = run_cli("train", *COMMON, "--nproc-per-node", "2", "--run-dir", str(run), env=_clean_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return run


# --------------------------------------------------------------------------------------------
# Simulated: two processes with the variables srun sets for the tasks of `srun --ntasks=2`


def _job_id() -> str:
    """A job id whose MASTER_PORT (15000 + id % 10000) is free on this machine right now."""
    for _ in range(100):
        port = random.randrange(15000, 25000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(10000 * random.randrange(1, 90) + port - 15000)
    raise AssertionError("no free port between 15000 and 24999")


def _step_env(rank: int, job: str) -> dict:
    """What srun sets for task ``rank`` of a 2-task step on one node (measured on slurm-wlm 22.05)."""
    return _clean_env(SLURM_JOB_ID=job, SLURM_JOBID=job, SLURM_STEP_ID="0", SLURM_STEPID="0", SLURM_PROCID=str(rank),
                      SLURM_LOCALID=str(rank), SLURM_NODEID="0", SLURM_NTASKS="2", SLURM_NPROCS="2",
                      SLURM_STEP_NUM_TASKS="2", SLURM_STEP_TASKS_PER_NODE="2", SLURM_TASKS_PER_NODE="2",
                      SLURM_JOB_NODELIST="localhost", SLURM_STEP_NODELIST="localhost", SLURM_NNODES="1",
                      SLURM_STEP_NUM_NODES="1")


def _start_step(run: Path, job: str, tmp: Path) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "convtrain", "train", *COMMON, "--run-dir", str(run), "--resume", "auto"]
    procs = []
    for rank in (0, 1):
        out = open(tmp / f"rank{rank}-{len(list(tmp.glob('rank*')))}.out", "w")
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=_step_env(rank, job), stdout=out, stderr=subprocess.STDOUT))
        procs[-1].out_path = Path(out.name)
    return procs


def _wait_for(path: Path, text: str, procs, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert all(p.poll() is None for p in procs), f"a rank ended before {text!r}: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_preemption_notice_to_one_rank_of_an_srun_step_then_resume_auto(reference, tmp_path):
    run, job = tmp_path / "run", _job_id()
    procs = _start_step(run, job, tmp_path)
    _wait_for(procs[0].out_path, "epoch 1/2 step 3/", procs)
    procs[1].send_signal(signal.SIGUSR1)  # rank 1 only: rank 0 hears of it at the next step boundary
    codes = [p.wait(timeout=120) for p in procs]
    outs = [p.out_path.read_text() for p in procs]
    assert codes == [75, 75], outs
    assert "SIGUSR1 (preemption notice): stopping after this step" in outs[1]
    errors = [line for out in outs for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: preempted (SIGUSR1, exit 75) at epoch 1, step ")
    assert f"convtrain train --resume {run} in an srun step of 2 tasks" in errors[0]
    assert "launcher: slurm, rank 0 of 2 (job " in outs[0] and f"rendezvous localhost:{15000 + int(job) % 10000}" in outs[0]
    assert "launcher: slurm, rank 0 of 2" in (run / "train.log").read_text()
    results = json.loads((run / "results.json").read_text())
    last = checkpoint.load(run / "checkpoints" / "last.pt")["training_state"]
    steps = [s["step"] for s in last["epoch_state"]]
    assert results["status"] == "interrupted" and results["step"] == steps[0] == steps[1] and 3 <= steps[0] < 32
    assert not last["epoch_complete"] and last["world_size"] == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]  # once, no temporary file left
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "config.yaml", "results.json", "train.log"]

    again = _start_step(run, job, tmp_path)  # the same command: now it resumes
    codes = [p.wait(timeout=300) for p in again]
    outs = [p.out_path.read_text() for p in again]
    assert codes == [0, 0], outs
    assert f"resuming: {run}" in outs[0]
    assert json.loads((run / "results.json").read_text())["status"] == "finished"
    assert _rows(run) == _rows(reference)


@pytest.mark.slow
def test_preemption_notice_to_the_nproc_per_node_launcher_then_resume_auto(reference, tmp_path):
    """`--nproc-per-node 2 --resume auto` (one machine, no scheduler): SIGUSR1 to the launcher reaches
    both processes, the launcher keeps exit 75, and the same command continues, then says finished."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "convtrain", "train", *COMMON, "--nproc-per-node", "2", "--run-dir", str(run),
           "--resume", "auto"]
    out_path = tmp_path / "first.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_clean_env(), stdout=out, stderr=subprocess.STDOUT)
    _wait_for(out_path, "epoch 1/2 step 3/", [proc])
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=120) == 75, out_path.read_text()[-3000:]
    assert json.loads((run / "results.json").read_text())["status"] == "interrupted"

    again = run_cli(*cmd[3:], env=_clean_env())
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming: {run}" in again.stdout
    assert _rows(run) == _rows(reference)
    done = run_cli(*cmd[3:], env=_clean_env())
    assert done.returncode == 0 and done.stdout.count(f"note: {run} has finished") == 1, done.stdout + done.stderr


# --------------------------------------------------------------------------------------------
# Real: sbatch and srun on a one-node cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_or_explain(tmp_path_factory.mktemp("slurm"))
    try:
        yield c
    finally:
        c.stop()


def _job_env(cluster, tmp: Path) -> dict:
    """The submitting environment: `convtrain` and `torchrun` on PATH running this interpreter (and this checkout)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, module in (("convtrain", "convtrain"), ("torchrun", "torch.distributed.run")):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m {module} "$@"\n')
        wrapper.chmod(0o755)
    env = {k: v for k, v in cluster.env.items() if k not in DIST_VARS}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}", "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}


def _script(tmp: Path, *launch_args: str) -> Path:
    result = run_cli("launch", "slurm", *launch_args)
    assert result.returncode == 0, result.stderr
    path = tmp / "job.sbatch"
    path.write_text(result.stdout)
    return path


@pytest.mark.slow
def test_node_lists_match_scontrol(cluster):
    for text, hosts in NODELISTS:
        shown = cluster.run("scontrol", "show", "hostnames", text.replace(" ", "")).stdout.split()
        assert parse_nodelist(text) == shown == hosts, text


@pytest.mark.slow
def test_sbatch_two_tasks_train_like_nproc_per_node(cluster, reference, tmp_path):
    """`launch slurm` (CPU tasks) submitted for real: srun starts 2 tasks, convtrain reads SLURM's
    variables, the 2 ranks train over gloo, and metrics.csv equals `--nproc-per-node 2`'s."""
    run = tmp_path / "run"
    script = _script(tmp_path, "--gpus-per-node", "0", "--tasks-per-node", "2", "--name", "two", "--run-dir", str(run),
                     "--", "train", *COMMON)
    result = cluster.run("sbatch", "--wait", "--parsable", str(script), cwd=tmp_path, env=_job_env(cluster, tmp_path),
                         timeout=400, check=False)
    job = result.stdout.strip().split(";")[0]
    out = (tmp_path / f"two-{job}.out").read_text() if job else ""
    assert result.returncode == 0, f"{result.stderr}\n{out[-3000:]}\n{cluster.logs()}"
    assert f"launcher: slurm, rank 0 of 2 (job {job}, step 0, nodes localhost)" in out
    assert _rows(run) == _rows(reference)
    assert json.loads((run / "results.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_sbatch_srun_torchrun_job_trains_like_nproc_per_node(cluster, reference, tmp_path):
    """`launch slurm --torchrun`: srun starts one torchrun on the node, torchrun its 2 processes; they
    read torchrun's variables (SLURM's describe torchrun's own task and are ignored), and metrics.csv
    equals `--nproc-per-node 2`'s."""
    run, port = tmp_path / "run", _job_id()  # any free port
    script = _script(tmp_path, "--gpus-per-node", "0", "--tasks-per-node", "2", "--torchrun", "--name", "tr",
                     "--port", str(15000 + int(port) % 10000), "--run-dir", str(run), "--", "train", *COMMON)
    result = cluster.run("sbatch", "--wait", "--parsable", str(script), cwd=tmp_path, env=_job_env(cluster, tmp_path),
                         timeout=400, check=False)
    job = result.stdout.strip().split(";")[0]
    out = (tmp_path / f"tr-{job}.out").read_text() if job else ""
    assert result.returncode == 0, f"{result.stderr}\n{out[-3000:]}\n{cluster.logs()}"
    assert "launcher: torchrun, rank 0 of 2" in out, out[-3000:]
    assert _rows(run) == _rows(reference)


def _wait_job(cluster, job: str, timeout: float = 360) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = cluster.job(job)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        assert time.monotonic() < deadline, f"job {job} still {info.get('JobState')} after {timeout} s\n{cluster.logs()}"
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tasks", "torchrun"])
def test_preempted_job_requeues_itself_and_ends_in_one_finished_run(cluster, reference, tmp_path, how):
    """What `#SBATCH --signal=USR1@90` does near the time limit, sent now (scancel --signal=USR1 signals
    every process of the job's steps, as the time-limit notice does): both processes save and exit 75,
    the script requeues the job (under --torchrun, which reports 75 as 1, because results.json says
    interrupted), the second start resumes with the same command and finishes."""
    runs = tmp_path / "runs"
    extra = ["--torchrun", "--port", str(15000 + int(_job_id()) % 10000)] if how == "torchrun" else []
    script = _script(tmp_path, "--gpus-per-node", "0", "--tasks-per-node", "2", "--name", "rq", *extra,
                     "--run-dir", str(runs / "rq"), "--", "train", *COMMON)
    job = cluster.run("sbatch", "--parsable", str(script), cwd=tmp_path, env=_job_env(cluster, tmp_path)).stdout.strip()
    out_file = tmp_path / f"rq-{job}.out"
    deadline = time.monotonic() + 300
    while not (out_file.is_file() and "epoch 1/2 step 3/" in out_file.read_text()):
        assert time.monotonic() < deadline and cluster.job(job).get("JobState") in ("PENDING", "RUNNING"), \
            f"no step 3 of job {job}: {cluster.job(job)}\n{out_file.read_text() if out_file.is_file() else ''}"
        time.sleep(0.2)
    cluster.run("scancel", "--signal=USR1", job)
    info = _wait_job(cluster, job)
    out = out_file.read_text()
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), f"{info}\n{out[-3000:]}"
    assert out.count("error: preempted (SIGUSR1, exit 75) at epoch 1") == 1, out[-3000:]
    assert f"resuming: {runs / 'rq'}" in out and out.count("run summary") == 1
    assert [p.name for p in runs.iterdir()] == ["rq"]  # one run directory
    assert json.loads((runs / "rq" / "results.json").read_text())["status"] == "finished"
    assert _rows(runs / "rq") == _rows(reference)


@pytest.mark.slow
def test_tune_job_array_workers_share_one_study(cluster, postgres, data_root, tmp_path):
    """`launch slurm --array 2 -- tune ... --storage postgresql://...`: two array tasks run at once on
    the cluster, both workers of one study in a real PostgreSQL server; the study ends with its trials
    complete, numbered once each, at distinct points, each with its run directory in the shared study
    folder. Break tried: the per-task seed left out of the script: the lr assertion fails (pairs)."""
    optuna = pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: {float: [1.0e-3, 1.0e-2], log: true}\n")
    study_dir = tmp_path / "study"
    script = _script(tmp_path, "--gpus-per-node", "0", "--array", "2", "--cpus-per-task", "1", "--name", "tn", "--",
                     "tune", "--config", "smoke", "--device", "cpu", "--set", "model.name=lenet5",
                     "--set", "data.train_subset=600", "--set", "data.val_size=200", "--set", "data.test_subset=200",
                     "--set", "train.epochs=1", "--set", "log.plots=false", "--set", "speed.threads=1",
                     "--space", str(space), "--trials", "4", "--study-dir", str(study_dir), "--storage", postgres,
                     "--study", "array", "--pruner", "none")
    result = cluster.run("sbatch", "--wait", "--parsable", str(script), cwd=tmp_path, env=_job_env(cluster, tmp_path),
                         timeout=500, check=False)
    job = result.stdout.strip().split(";")[0]
    outs = {p.name: p.read_text() for p in sorted(tmp_path.glob(f"tn-{job}_*.out"))}
    assert result.returncode == 0, f"{result.stderr}\n{outs}\n{cluster.logs()}"
    assert sorted(outs) == [f"tn-{job}_0.out", f"tn-{job}_1.out"], outs
    trials = optuna.load_study(study_name="array", storage=postgres).get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 4 and not [t for t in trials if t.state.name == "RUNNING"], [t.state for t in trials]
    # each task seeds its sampler with --seed + its index: with one seed the 2 tasks proposed the same
    # learning rates in pairs (measured 2026-12-06, trials 0/1 and 2/3)
    assert len({t.params["optim.lr"] for t in complete}) == len(complete), [t.params for t in complete]
    for t in complete:
        assert json.loads((study_dir / f"trial-{t.number:03d}" / "results.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--gpus-per-node", "0", "--tasks-per-node", "2", "--time", "10", "--partition", "debug", "--", "train", "-c", "smoke"],
    ["--gpus-per-node", "0", "--tasks-per-node", "2", "--torchrun", "--", "finetune", "--checkpoint", "latest"],
    ["--gpus-per-node", "0", "--array", "3", "--cpus-per-task", "1", "--", "tune", "-c", "speedrun",
     "--storage", "postgresql://u:p@db/tune", "--trials", "30"],
], ids=["tasks", "torchrun", "tune array"])
def test_launch_slurm_scripts_pass_sbatch_test_only(cluster, tmp_path, args):
    script = _script(tmp_path, *args)
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = cluster.run("sbatch", "--test-only", str(script), cwd=tmp_path, check=False)
    assert result.returncode == 0 and "to start at" in result.stderr, result.stderr
