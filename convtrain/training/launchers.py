"""Which launcher started this process, read from that launcher's own variables, and torch's view of it.

``convtrain train`` joins a process group through PyTorch's ``env://`` variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), which
:func:`convtrain.training.distributed.read_env` checks. torchrun sets them; other launchers set their
own, which :func:`apply` translates, in this order (``--launcher auto``, the default):

1. **torchrun** (torch elastic: ``TORCHELASTIC_RUN_ID``), or ``RANK``/``WORLD_SIZE`` a job script set:
   used as they are. Under torchrun, SLURM's variables describe torchrun's own task (``srun torchrun``)
   and are ignored.
2. **SLURM**: a task of an ``srun`` job step (``SLURM_STEP_ID`` and ``SLURM_PROCID``):
   ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_STEP_NUM_TASKS``/``SLURM_NTASKS``, the tasks per node
   (``SLURM_STEP_TASKS_PER_NODE``, ``SLURM_TASKS_PER_NODE``, ``SLURM_NTASKS_PER_NODE``), ``MASTER_ADDR``
   the first host of the node list (parsed here, without ``scontrol``) and ``MASTER_PORT`` from the
   job id, each unless already set. A batch script's own shell (no job step) and an interactive
   ``srun --pty`` shell are one process: SLURM sets ``SLURM_PROCID`` there too, and taking it for a
   rank made a lone process wait for partners that never come (Lightning's most-complained bug).
3. **OpenMPI** (``mpirun``): ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK``/``_LOCAL_SIZE``;
   ``MASTER_ADDR`` must be passed on (``mpirun -x MASTER_ADDR``), ``MASTER_PORT`` defaults to 29500.

``--launcher none|torchrun|slurm|mpi`` (or ``CONVTRAIN_LAUNCHER``) picks one instead; ``none`` is the
opt-out: one process, whatever the environment says. Every bad or contradictory variable is one
:class:`~convtrain.errors.ConfigError` line naming it. Torch-free (the command line checks the
environment before importing torch); the node-list parser is our own: python-hostlist does the same
(and much more) under the GPL, which this MIT package does not take on for 40 lines.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field

from ..errors import ConfigError, did_you_mean

CHOICES = ("auto", "none", "torchrun", "slurm", "mpi")
ENV_CHOICE = "CONVTRAIN_LAUNCHER"  # the environment's spelling of --launcher
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM_PORT_BASE, SLURM_PORT_SPAN = 15000, 10000  # MASTER_PORT = 15000 + job id % 10000: below the ephemeral ports
MPI_DEFAULT_PORT = 29500  # torchrun's default
MAX_HOSTS = 100_000  # a node list that expands to more is refused rather than expanded
CHOOSE = f"choose one with --launcher {'|'.join(CHOICES[1:])} (or {ENV_CHOICE})"


@dataclass(frozen=True)
class Launch:
    """What :func:`detect` found: the launcher's name, torch's variables it stands for, and a line for the header."""

    name: str  # none | torchrun | slurm | mpi
    env: dict[str, str] = field(default_factory=dict)  # torch's env:// variables to set (empty: already set)
    detail: str = ""  # "job 12, step 0, nodes node[01-02]": what the header says besides the ranks
    clear: bool = False  # none: drop torch's variables (a stray WORLD_SIZE is ignored, not waited on)
    notes: tuple[str, ...] = ()  # said once at start-up (a batch script with several tasks but no srun...)


# --------------------------------------------------------------------------------------------
# SLURM node lists: node[01-04,07], gpu-a[1-2],gpu-b3, rack[1-2]-n[01-02]

_GROUP = re.compile(r"\[([^\[\]]*)\]")


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
            if depth > 1:
                raise ValueError("nested brackets")
        elif c == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("']' without '['")
        elif c == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError("'[' without ']'")
    return [*items, text[start:]]


def _range_values(spec: str) -> list[str]:
    """``01-04,07`` -> ``['01', '02', '03', '04', '07']``: zero padding kept (the width of the lower bound)."""
    out: list[str] = []
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"'[{spec}]' holds {part.strip()!r}, not a number or a range like 01-04")
        hi = hi if dash else lo
        if int(hi) < int(lo):
            raise ValueError(f"'[{spec}]' counts down ({lo}-{hi})")
        if len(out) + int(hi) - int(lo) >= MAX_HOSTS:
            raise ValueError(f"it names more than {MAX_HOSTS:,} hosts")
        width = len(lo) if lo.startswith("0") else 0
        out += [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    return out


def _expand(item: str) -> Iterator[str]:
    """One comma-free item, ``rack[1-2]-n[01-02]``: every bracket group's values, in SLURM's order."""
    literals = _GROUP.split(item)  # text, group, text, group, ..., text
    groups = [_range_values(g) for g in literals[1::2]]
    for combo in itertools.product(*groups):
        yield "".join(t + v for t, v in zip(literals[0::2], [*combo, ""]))


def parse_nodelist(text: str) -> list[str]:
    """SLURM's compressed host list, expanded as ``scontrol show hostnames`` does; ValueError saying why not."""
    text = text.strip()
    if not text:
        raise ValueError("it is empty")
    hosts: list[str] = []
    for item in _split_top(text):
        if not item.strip():
            raise ValueError("it has an empty entry (two commas in a row, or a comma at an end)")
        for host in _expand(item.strip()):
            if not host or any(c in host for c in "[] "):
                raise ValueError(f"{item!r} is not a host name")
            hosts.append(host)
            if len(hosts) > MAX_HOSTS:
                raise ValueError(f"it names more than {MAX_HOSTS:,} hosts")
    return hosts


def parse_tasks_per_node(text: str) -> list[int]:
    """SLURM's tasks per node, ``2(x3),1`` -> ``[2, 2, 2, 1]``; ValueError when it is not that shape."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m is None:
            raise ValueError(f"{part!r} is not N or N(xM)")
        count = int(m.group(2) or 1)
        if count > MAX_HOSTS or len(out) + count > MAX_HOSTS:
            raise ValueError(f"it names more than {MAX_HOSTS:,} nodes")
        out += [int(m.group(1))] * count
    return out


# --------------------------------------------------------------------------------------------
# Reading one launcher's variables


def _int(environ: Mapping[str, str], name: str, minimum: int, who: str, default: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set, but {who}'s other variables are; "
                          f"{name} must be a whole number >= {minimum}; {CHOOSE}")
    if not raw.strip().isdigit() or int(raw) < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be a whole number >= {minimum} ({who} sets it "
                          f"for each process); {CHOOSE}")
    return int(raw)


def _port(environ: Mapping[str, str], default: int | None) -> str | None:
    """MASTER_PORT as set (read_env checks it), else ``default``."""
    raw = environ.get("MASTER_PORT")
    return raw if raw else (str(default) if default is not None else None)


def _below(name_a: str, a: int, name_b: str, b: int, who: str) -> None:
    if a >= b:
        raise ConfigError(f"environment variable {name_a}={a} must be below {name_b}={b} ({who}'s numbering starts "
                          f"at 0); {CHOOSE}")


@dataclass(frozen=True)
class _Ranks:
    rank: int
    world: int
    local_rank: int
    local_world: int | None  # None: SLURM did not say how many tasks run on this node
    addr: str | None
    port: str | None

    def env(self) -> dict[str, str]:
        out = {"RANK": str(self.rank), "WORLD_SIZE": str(self.world), "LOCAL_RANK": str(self.local_rank)}
        return {**out, **({"LOCAL_WORLD_SIZE": str(self.local_world)} if self.local_world is not None else {}),
                **({"MASTER_ADDR": self.addr} if self.addr else {}),
                **({"MASTER_PORT": self.port} if self.port else {})}


def _slurm_present(environ: Mapping[str, str]) -> bool:
    """A task of an srun job step (a batch script's own shell has SLURM_PROCID too, but no step id)."""
    return bool(environ.get("SLURM_STEP_ID") or environ.get("SLURM_STEPID")) and "SLURM_PROCID" in environ


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    return next((n for n in names if environ.get(n, "").strip()), None)


def _slurm_local_world(environ: Mapping[str, str], world: int) -> int | None:
    """Tasks on this node, from the step's tasks per node (``2(x3),1``) at SLURM_NODEID; None when not said."""
    name = _first(environ, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    if name is None:
        single = environ.get("SLURM_STEP_NUM_NODES", environ.get("SLURM_NNODES", "")).strip() == "1"
        per_node = _first(environ, "SLURM_NTASKS_PER_NODE")
        return world if single else (_int(environ, per_node, 1, "SLURM") if per_node else None)
    try:
        counts = parse_tasks_per_node(environ[name])
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={environ[name]!r} is not a tasks-per-node list like "
                          f"2(x3),1 ({exc}); {CHOOSE}") from None
    if name == "SLURM_STEP_TASKS_PER_NODE" and sum(counts) != world:
        raise ConfigError(f"environment variable {name}={environ[name]!r} adds up to {sum(counts)} tasks, but "
                          f"SLURM_STEP_NUM_TASKS={world}; {CHOOSE}")
    node = _int(environ, "SLURM_NODEID", 0, "SLURM", default=0)
    if node >= len(counts):
        raise ConfigError(f"environment variable SLURM_NODEID={node} must be below the {len(counts)} node(s) of "
                          f"{name}={environ[name]!r}; {CHOOSE}")
    return counts[node]


def _slurm_host(environ: Mapping[str, str], world: int) -> tuple[str | None, str]:
    """MASTER_ADDR (as set, else the node list's first host) and the node list for the header."""
    name = _first(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    hosts: list[str] = []
    if name is not None:
        try:
            hosts = parse_nodelist(environ[name])
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}={environ[name]!r} is not a SLURM node list like "
                              f"node[01-04,07] ({exc}); set MASTER_ADDR to rank 0's host, or {CHOOSE}") from None
    addr = environ.get("MASTER_ADDR") or (hosts[0] if hosts else None)
    if world > 1 and addr is None:
        raise ConfigError("SLURM_JOB_NODELIST is not set, so rank 0's host is unknown; set MASTER_ADDR to it, "
                          f"or {CHOOSE}")
    return addr, environ[name] if name else "?"


def _slurm(environ: Mapping[str, str]) -> tuple[_Ranks, str]:
    who = "SLURM"
    rank = _int(environ, "SLURM_PROCID", 0, who)
    world_name = _first(environ, "SLURM_STEP_NUM_TASKS") or "SLURM_NTASKS"
    world = _int(environ, world_name, 1, who)
    _below("SLURM_PROCID", rank, world_name, world, who)
    local_rank = _int(environ, "SLURM_LOCALID", 0, who)
    local_world = _slurm_local_world(environ, world)
    if local_world is not None:
        _below("SLURM_LOCALID", local_rank, "the tasks on this node", local_world, who)
    addr, nodes = _slurm_host(environ, world)
    job_name = _first(environ, "SLURM_JOB_ID", "SLURM_JOBID")
    job = environ[job_name].strip() if job_name else None
    if job is not None and not job.isdigit():
        raise ConfigError(f"environment variable {job_name}={job!r} must be a whole number (the job id); {CHOOSE}")
    if world > 1 and job is None and not environ.get("MASTER_PORT"):
        raise ConfigError(f"SLURM_JOB_ID is not set, so there is no job id to pick MASTER_PORT from; set MASTER_PORT, "
                          f"or {CHOOSE}")
    port = _port(environ, SLURM_PORT_BASE + int(job) % SLURM_PORT_SPAN if job is not None else None)
    step = environ.get("SLURM_STEP_ID") or environ.get("SLURM_STEPID")
    ranks = _Ranks(rank, world, local_rank, local_world, addr, port)
    return ranks, f"job {job or '?'}, step {step}, nodes {nodes}"


def _mpi_present(environ: Mapping[str, str]) -> bool:
    return "OMPI_COMM_WORLD_SIZE" in environ or "OMPI_COMM_WORLD_RANK" in environ


def _mpi(environ: Mapping[str, str]) -> tuple[_Ranks, str]:
    who = "OpenMPI"
    rank = _int(environ, "OMPI_COMM_WORLD_RANK", 0, who)
    world = _int(environ, "OMPI_COMM_WORLD_SIZE", 1, who)
    _below("OMPI_COMM_WORLD_RANK", rank, "OMPI_COMM_WORLD_SIZE", world, who)
    local_rank = _int(environ, "OMPI_COMM_WORLD_LOCAL_RANK", 0, who)
    local_world = _int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, who)
    _below("OMPI_COMM_WORLD_LOCAL_RANK", local_rank, "OMPI_COMM_WORLD_LOCAL_SIZE", local_world, who)
    addr = environ.get("MASTER_ADDR") or None
    if world > 1 and addr is None:
        raise ConfigError(f"OMPI_COMM_WORLD_SIZE={world}, but mpirun names no host for rank 0's rendezvous: set "
                          f"MASTER_ADDR to rank 0's host and pass it on (mpirun -x MASTER_ADDR=HOST), or {CHOOSE}")
    return _Ranks(rank, world, local_rank, local_world, addr, _port(environ, MPI_DEFAULT_PORT)), "mpirun"


_READERS = {"slurm": (_slurm_present, _slurm), "mpi": (_mpi_present, _mpi)}
_ABSENT = {  # an explicit --launcher whose variables are not there
    "slurm": "this process is not a task of an srun job step (SLURM_STEP_ID or SLURM_PROCID is unset; a batch "
             "script's own shell is not one): start the command with srun",
    "mpi": "OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE are not set: start the command with mpirun",
    "torchrun": "RANK and WORLD_SIZE are not set: start the command with torchrun (or convtrain ... "
                "--nproc-per-node N)",
}


# --------------------------------------------------------------------------------------------
# Detection: which launcher, checked against every other launcher's variables that are there


def _choice(choice: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The launcher asked for and how it was asked (for messages): ``--launcher``, else CONVTRAIN_LAUNCHER, else auto."""
    source = "--launcher"
    if choice is None:
        choice, source = environ.get(ENV_CHOICE, "").strip() or "auto", ENV_CHOICE
    value = choice.strip().lower()
    if value not in CHOICES:
        raise ConfigError(f"{source} {choice!r} is not one of {', '.join(CHOICES)}{did_you_mean(value, CHOICES)}")
    return value, f"{source} {value}" if source == "--launcher" else f"{ENV_CHOICE}={value}"


def _torch_vars_set(environ: Mapping[str, str]) -> dict[str, str]:
    """torch's rank variables that someone set (torchrun, a job script, or an earlier :func:`apply`)."""
    return {k: environ[k].strip() for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
            if environ.get(k, "").strip()}


def _several(environ: Mapping[str, str]) -> bool:
    """torch's variables describe more than one process (WORLD_SIZE=1 alone, say, is no launch)."""
    tv = _torch_vars_set(environ)
    return tv.get("WORLD_SIZE", "1") != "1" or tv.get("RANK", "0") != "0"


def _contradiction(a_name: str, a: Mapping[str, str], b_name: str, b: Mapping[str, str]) -> ConfigError | None:
    """One line when two launchers' variables give this process different ranks or counts."""
    differ = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE") if k in a and k in b and a[k] != b[k]]
    if not differ:
        return None
    shown_a = " ".join(f"{k}={a[k]}" for k in differ)
    shown_b = " ".join(f"{k}={b[k]}" for k in differ)
    return ConfigError(f"contradictory environment: {a_name} says {shown_a}, {b_name} says {shown_b}; unset the "
                       f"variables that do not belong to this job, or {CHOOSE}")


_SOURCES = {"slurm": "SLURM (SLURM_PROCID, SLURM_NTASKS...)", "mpi": "OpenMPI (OMPI_COMM_WORLD_*)"}


def _from_launcher(name: str, environ: Mapping[str, str], others: list[str]) -> Launch:
    """``name``'s ranks, checked against torch's variables when set and every other launcher's present."""
    ranks, detail = _READERS[name][1](environ)
    mine = ranks.env()
    torch_set = _torch_vars_set(environ)
    who = "torchrun" if "TORCHELASTIC_RUN_ID" in environ else "RANK/WORLD_SIZE (set without torchrun)"
    problem = _contradiction(_SOURCES[name], mine, who, torch_set) if torch_set else None
    for other in others:
        problem = problem or _contradiction(_SOURCES[name], mine, _SOURCES[other], _READERS[other][1](environ)[0].env())
    if problem is not None:
        raise problem
    return Launch(name, env=mine, detail=detail)


def _none(environ: Mapping[str, str], asked: str) -> Launch:
    if "TORCHELASTIC_RUN_ID" in environ and _several(environ):
        tv = _torch_vars_set(environ)
        raise ConfigError(f"{asked} runs one process, but torchrun started this one as RANK={tv.get('RANK', '0')} of "
                          f"WORLD_SIZE={tv.get('WORLD_SIZE', '1')}: drop {asked.split('=')[0].split(' ')[0]} (torchrun's "
                          "processes form one run), or start a single process without torchrun")
    return Launch("none", clear=True)


def _alone(environ: Mapping[str, str]) -> Launch:
    """auto, and no launcher found: torch's variables a job script set, or one process (with a note in a
    batch script's own shell or an ``srun --pty`` shell of a several-task step)."""
    if _several(environ):
        return Launch("torchrun", detail="RANK and WORLD_SIZE set without torchrun")
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    if environ.get("SLURM_JOB_ID") and tasks.strip() not in ("", "1"):
        where = "an interactive srun --pty shell" if environ.get("SLURM_PTY_PORT") else \
            "a SLURM batch script's own shell (no srun job step)"
        return Launch("none", notes=(f"note: {where} with SLURM_NTASKS={tasks}: training as one process; start the "
                                     "command with srun (or --launcher slurm) to train on every task",))
    return Launch("none")


def detect(environ: Mapping[str, str] | None = None, choice: str | None = None) -> Launch:
    """The launcher of this process (see the module docstring); ConfigError, one line, for a bad or
    contradictory environment. ``choice``: ``--launcher``'s value (None: CONVTRAIN_LAUNCHER, else auto)."""
    environ = os.environ if environ is None else environ
    choice, asked = _choice(choice, environ)
    if choice == "none":
        return _none(environ, asked)
    if choice == "torchrun" or (choice == "auto" and "TORCHELASTIC_RUN_ID" in environ):
        if choice == "torchrun" and "WORLD_SIZE" not in environ and "RANK" not in environ:
            raise ConfigError(f"{asked}, but {_ABSENT['torchrun']}")
        return Launch("torchrun", detail="torch elastic" if "TORCHELASTIC_RUN_ID" in environ else
                      "RANK and WORLD_SIZE set without torchrun")
    interactive = choice == "auto" and bool(environ.get("SLURM_PTY_PORT"))
    present = [n for n, (here, _) in _READERS.items() if here(environ) and not (interactive and n == "slurm")]
    if choice != "auto":
        if choice not in present:
            raise ConfigError(f"{asked}, but {_ABSENT[choice]}")
        return _from_launcher(choice, environ, [])  # the others' variables are ignored when one is named
    if not present:
        return _alone(environ)
    return _from_launcher(present[0], environ, present[1:])


def apply(choice: str | None = None, environ: MutableMapping[str, str] | None = None) -> Launch:
    """:func:`detect`, then write torch's variables it stands for into ``environ`` (default: this
    process's), where :func:`~convtrain.training.distributed.read_env`, the error edge and any child
    process read them. Idempotent: a second call finds its own variables in agreement."""
    environ = os.environ if environ is None else environ
    launch = detect(environ, choice)
    if launch.clear:
        for name in TORCH_VARS:
            environ.pop(name, None)
    environ.update(launch.env)
    return launch


def describe(launch: Launch, rank: int, world: int, addr: str | None, port: int | None) -> str:
    """The header's line, e.g. ``launcher: slurm, rank 0 of 2 (job 12, step 0, nodes node[01-02]),
    rendezvous node01:15012``; empty for one process that no launcher started."""
    if launch.name == "none":
        return ""
    where = f", rendezvous {addr}:{port}" if world > 1 and addr else ""
    return f"launcher: {launch.name}, rank {rank} of {world}{f' ({launch.detail})' if launch.detail else ''}{where}"
