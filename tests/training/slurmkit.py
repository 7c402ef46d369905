"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd on localhost.

Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them), started in the foreground as this
test's own child processes, on free ports, with a throwaway state folder:
``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no cgroups), 2 CPUs, no
accounting. ``cred_expire=5`` (SLURM's default is 120 s) lets a requeued job start again after ~5 s
instead of two minutes. Clients (sbatch, srun, squeue, scontrol) find it through ``SLURM_CONF``.

Root is needed (slurmd starts job steps as their user). When the packages are missing or the
daemons do not come up, :func:`start_or_explain` fails the test in CI (with the daemons' logs in the
message) and skips it elsewhere, saying why; it never passes silently.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.is_file()), None)


CONF = """\
ClusterName=convtrain-test
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket,cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
KillWait=30
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """The three daemons, their folder, and the environment a client needs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        for name in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))] + ["SLURM_CONF"]:
            self.env.pop(name, None)  # a test run inside a SLURM job must not hand its job's variables on
        self.env["SLURM_CONF"] = str(folder / "slurm.conf")

    def start(self) -> None:
        f = self.folder
        for sub in ("state", "spool"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        f.chmod(0o755)  # munged refuses a socket folder that others cannot traverse... and one they can write
        key = f / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        (f / "slurm.conf").write_text(CONF.format(folder=f, ctld_port=_free_port(), slurmd_port=_free_port()))
        log = lambda name: open(f / f"{name}.out", "w")  # noqa: E731 - the daemons' own stderr
        self.procs["munged"] = subprocess.Popen(
            [_which("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={f}/munge.socket",
             f"--pid-file={f}/munged.pid", f"--log-file={f}/munged.log", f"--seed-file={f}/munged.seed"],
            stdout=log("munged"), stderr=subprocess.STDOUT)
        self._wait(lambda: (f / "munge.socket").exists(), 20, "munged's socket")
        self.procs["slurmctld"] = subprocess.Popen([_which("slurmctld"), "-D", "-i", "-f", str(f / "slurm.conf")],
                                                   stdout=log("slurmctld"), stderr=subprocess.STDOUT, env=self.env)
        self.procs["slurmd"] = subprocess.Popen([_which("slurmd"), "-D", "-N", "localhost", "-f", str(f / "slurm.conf")],
                                                stdout=log("slurmd"), stderr=subprocess.STDOUT, env=self.env)
        self._wait(self._idle, 60, "the node to be idle in sinfo")

    def _idle(self) -> bool:
        out = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
        return out in ("idle", "mix", "alloc")

    def _wait(self, ready, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} after {seconds} s")
            time.sleep(0.3)

    def run(self, *args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), capture_output=True, text=True, env={**self.env, **kw.pop("env", {})},
                                timeout=timeout, **kw)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}"
                                 f"\n{self.logs()}")
        return result

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, ExitCode...), or {} once it is forgotten."""
        out = self.run("scontrol", "-o", "show", "job", job_id, check=False).stdout
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def logs(self, tail: int = 25) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
            path = self.folder / name
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", check=False, timeout=20)  # our own controller's jobs only
            time.sleep(1)
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def start_or_explain(folder: Path) -> Cluster:
    """A running cluster, or a failure (CI) / a skip (elsewhere) that says exactly why not."""
    missing = [n for n in (*DAEMONS, *CLIENTS) if _which(n) is None]
    reason = None
    if missing:
        reason = (f"SLURM is not installed here ({', '.join(missing)} missing): "
                  "apt-get install slurm-wlm munge (.ci/run does)")
    elif os.geteuid() != 0:
        reason = "a one-node SLURM cluster needs root (slurmd starts job steps as their user)"
    if reason is None:
        cluster = Cluster(folder)
        try:
            cluster.start()
            return cluster
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            cluster.stop()
            reason = f"the one-node SLURM cluster did not start: {exc}\n{cluster.logs()}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
