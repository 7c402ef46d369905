"""`convtrain launch slurm|k8s|torchrun -- COMMAND` prints a job and submits nothing: the sbatch script
and the torchrun lines pass `bash -n`, the PyTorchJob manifest parses as YAML and names the image, the
command (torchrun -m convtrain ... --resume auto), the replicas and the env variables; bad counts, an
unknown kind and a command the template cannot run are refused in one line with exit 2, nothing printed
on stdout. (`sbatch --test-only` on a real one-node SLURM: tests/training/test_slurm.py.)

Breaks tried: the script's `exit "$code"` turned into `exit "$code` (bash -n fails: unexpected EOF
in every slurm case); Worker replicas = --nodes instead of --nodes - 1 (the replicas check fails);
`--resume auto` not added to a command without one (the k8s command check fails); the `--nodes`
lower bound lowered to 0 (exit 0 and a script with --nodes=0); the array's per-task seed left out
(the tune-array line check fails; tests/training/test_slurm.py shows why it matters).
"""

from __future__ import annotations

import shlex
import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from convtrain.cli.app import app


def _launch(*args: str):
    return CliRunner().invoke(app, ["launch", *args])


SHELL_CASES = [
    ("slurm", "--nodes", "2", "--gpus-per-node", "4", "--time", "04:00:00", "--partition", "gpu", "--account", "ml",
     "--", "train", "--config", "mnist", "--set", "train.epochs=3"),
    ("slurm", "--nodes", "2", "--gpus-per-node", "4", "--torchrun", "--", "finetune", "--checkpoint", "runs/a b"),
    ("slurm", "--gpus-per-node", "0", "--tasks-per-node", "2", "--cpus-per-task", "1", "--run-dir", "/shared/r",
     "--", "train", "-c", "smoke"),
    ("slurm", "--array", "4", "--", "tune", "-c", "speedrun", "--storage", "postgresql://u:p@db/study", "--trials", "40"),
    ("torchrun", "--nodes", "3", "--gpus-per-node", "2", "--master-addr", "node01", "--", "train", "-c", "mnist"),
]


@pytest.mark.parametrize("args", SHELL_CASES, ids=["slurm tasks", "slurm torchrun", "slurm cpu", "slurm tune array",
                                                    "torchrun"])
def test_shell_output_passes_bash_n_and_runs_resume_auto(args, tmp_path):
    result = _launch(*args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "job.sh"
    path.write_text(result.stdout)
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # the command as given (rebuilt from the parsed options, so it holds under any test runner; it read sys.argv,
    # which is pytest's own command line in-process and empty in an xdist worker)
    assert result.stdout.splitlines()[int(args[0] == "slurm")] == "# Written by: " + shlex.join(["convtrain", "launch", *args])
    if args[0] == "slurm":
        assert "#SBATCH --signal=USR1@90" in result.stdout and "#SBATCH --requeue" in result.stdout
        assert 'if [ "$code" -eq 75 ]' in result.stdout and 'scontrol requeue "$SLURM_JOB_ID"' in result.stdout
    if "tune" not in args:
        runs = [line for line in result.stdout.splitlines() if "-m convtrain" in line or "srun convtrain" in line]
        assert runs and all(line.rstrip().endswith("--resume auto") for line in runs), runs
    if "tune" in args:  # each array task its own sampler seed, as each --jobs worker
        assert result.stdout.rstrip().splitlines()[-6].endswith('--trials 40 --seed "$((0 + SLURM_ARRAY_TASK_ID))"')
    if args[0] == "torchrun":
        lines = [shlex.split(line) for line in result.stdout.splitlines() if line.startswith("torchrun ")]
        assert [cmd[cmd.index("--node-rank") + 1] for cmd in lines] == ["0", "1", "2"]
        assert all(cmd[cmd.index("--rdzv-endpoint") + 1] == "node01:29500" for cmd in lines)


def test_k8s_manifest_parses_and_names_image_command_replicas_and_env():
    result = _launch("k8s", "--nodes", "3", "--gpus-per-node", "2", "--image", "reg.example/convtrain:1",
                     "--claim", "team-pvc", "--", "train", "--config", "mnist")
    assert result.exit_code == 0, result.output
    job = yaml.safe_load(result.stdout)
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["spec"]["nprocPerNode"] == "2"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    for spec in replicas.values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == "reg.example/convtrain:1"
        assert container["command"] == ["torchrun", "-m", "convtrain", "train", "--config", "mnist",
                                        "--run-dir", "/shared/runs/convtrain", "--resume", "auto"]
        assert {e["name"]: e["value"] for e in container["env"]} == {"CONVTRAIN_DATA_ROOT": "/shared/data",
                                                                     "CONVTRAIN_LAUNCHER": "torchrun"}
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
        assert container["volumeMounts"] == [{"name": "shared", "mountPath": "/shared"}]
        assert spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "team-pvc"}


def test_k8s_one_node_has_no_workers_and_keeps_the_commands_own_run_dir():
    result = _launch("k8s", "--gpus-per-node", "0", "--", "finetune", "--checkpoint", "/shared/runs/a",
                     "--run-dir", "/shared/runs/ft", "--resume", "auto")
    assert result.exit_code == 0, result.output
    replicas = yaml.safe_load(result.stdout)["spec"]["pytorchReplicaSpecs"]
    assert list(replicas) == ["Master"]
    (container,) = replicas["Master"]["template"]["spec"]["containers"]
    assert container["command"][3:] == ["finetune", "--checkpoint", "/shared/runs/a", "--run-dir", "/shared/runs/ft",
                                        "--resume", "auto"]
    assert "resources" not in container


REFUSED = [
    (["slurm", "--nodes", "0", "--", "train"], "error: --nodes must be a whole number >= 1, got 0"),
    (["slurm", "--gpus-per-node", "-1", "--", "train"], "error: --gpus-per-node must be a whole number >= 0, got -1"),
    (["torchrun", "--tasks-per-node", "0", "--", "train"], "error: --tasks-per-node must be a whole number >= 1"),
    (["slurm", "--array", "0", "--", "tune"], "error: --array must be a whole number >= 1, got 0"),
    (["k8s", "--port", "70000", "--", "train"], "error: --port must be a TCP port from 1 to 65535"),
    (["slurmm", "--", "train"], "error: unknown kind 'slurmm': convtrain launch writes slurm, k8s or torchrun "
                                "(did you mean 'slurm'?)"),
    (["kubernetes", "--", "train"], "error: unknown kind 'kubernetes'"),
    (["k8s", "--array", "2", "--", "train"], "error: --array and --torchrun are options of launch slurm"),
    (["slurm", "--", "eval", "x"], "error: after '--' give the convtrain command to run"),
    (["slurm"], "error: after '--' give the convtrain command to run"),
    (["slurm", "--time", "soon", "--", "train"], "error: --time 'soon' is not a SLURM time limit"),
    (["slurm", "--", "train", "--nproc-per-node", "2"], "error: drop --nproc-per-node from the command"),
    (["slurm", "--", "train", "--resume", "runs/a"], "error: drop --resume runs/a from the command"),
    (["slurm", "--array", "4", "--", "tune", "-c", "speedrun"], "error: --array 4 starts 4 tune workers"),
    (["slurm", "--array", "2", "--", "train"], "error: --array runs several workers of one `convtrain tune` study"),
    (["slurm", "--array", "2", "--", "tune", "--storage", "postgresql://db/t", "--seed", "x"],
     "error: tune --seed 'x' must be a whole number"),
]


@pytest.mark.parametrize("args, start", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_counts_unknown_kinds_and_unrunnable_commands_are_one_line(args, start):
    result = _launch(*args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(start), line
    assert result.stdout == ""
