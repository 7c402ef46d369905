"""`convtrain tune`: the space checked against the schema, trials as run directories, pruning,
kill -9 and rerun, bad storages, the report and best.yaml, `runs` listing a study.

Real trainings on tiny MNIST subsets (lenet5, a few hundred images); the space checks run in-process.
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
from typer.testing import CliRunner

from convtrain.cli.app import app

from ..conftest import REPO, results_json, run_cli

optuna = pytest.importorskip("optuna")

TINY = ["--config", "smoke", "--device", "cpu", "--set", "model.name=lenet5", "--set", "data.train_subset=600",
        "--set", "data.val_size=200", "--set", "data.test_subset=200", "--set", "train.epochs=2",
        "--set", "log.plots=false", "--set", "train.batch_size=64"]
runner = CliRunner()


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _study(folder: Path, name: str | None = None):
    storage = f"sqlite:///{folder / 'study.db'}"
    return optuna.load_study(study_name=name or folder.name, storage=storage)


# ------------------------------------------------------------------------------------------------
# The space and the storage are checked before anything runs: one line, exit 2, nothing written


@pytest.mark.parametrize("space, message", [
    ("optim.lrr: {float: [1.0e-4, 1.0e-2]}", "unknown key 'optim.lrr' (did you mean 'lr'?)"),
    ("optm.lr: {float: [1.0e-4, 1.0e-2]}", "unknown key 'optm' (did you mean 'optim'?)"),
    ("train.batch_size: {float: [16, 64]}", "'train.batch_size' must be an integer"),
    ("train.batch_size: {int: [0, 64]}", "'train.batch_size' must be > 0, got 0"),
    ("optim.momentum: {float: [0.5, 1.5]}", "'optim.momentum' must be in [0, 1)"),
    ("optim.lr: {float: [0, 1.0e-2], log: true}", "a log range must stay above 0"),
    ("train.batch_size: {choice: []}", "choice needs a non-empty list"),
    ("optim.lr: {flaot: [1.0e-4, 1.0e-2]}", "(did you mean 'float'?)"),
    ("optim.lr: {float: [1.0e-2, 1.0e-4]}", "low must be below high"),
    ("model.kwargs.width1: {int: [8, 32]}", "width1"),  # lenet5 has no width1: the model refuses it
    ("optim: {float: [1, 2]}", "'optim' is a section"),
], ids=["unknown-key", "unknown-section", "wrong-type", "bound-refused", "bound-above", "log-zero",
        "empty-choice", "unknown-kind", "low-above-high", "model-kwarg", "section"])
def test_a_bad_space_is_one_line_exit_2_and_nothing_written(tmp_path, data_root, space, message):
    folder = tmp_path / "study"
    r = runner.invoke(app, ["tune", *TINY, "--space", str(_space(tmp_path, space)), "--trials", "2",
                            "--study-dir", str(folder)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not folder.exists()


@pytest.mark.slow
def test_bad_storages_and_a_study_of_another_direction_are_refused_before_anything_is_written(tmp_path, data_root):
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}")
    folder = tmp_path / "study"
    common = ["tune", *TINY, "--space", str(space), "--trials", "2", "--study-dir", str(folder)]
    for storage, message in (("postgresql://nobody@127.0.0.1:1/none", "cannot open the study database"),
                             (f"sqlite:///{tmp_path}/no/such/dir/x.db", "cannot open the study database"),
                             ("nosuchdb://x", "cannot open the study database")):
        r = runner.invoke(app, [*common, "--storage", storage])
        assert r.exit_code == 2, r.output
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
        assert not folder.exists()
    # a study of that name exists and minimizes: --metric val_acc (maximize) is refused
    db = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(storage=db, study_name="shared", direction="minimize")
    r = runner.invoke(app, [*common, "--storage", db, "--study", "shared"])
    assert r.exit_code == 2 and "exists and minimizes its objective" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and not folder.exists()


def test_without_optuna_the_command_names_the_extra(tmp_path, data_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}")
    r = runner.invoke(app, ["tune", *TINY, "--space", str(space), "--trials", "2", "--study-dir", str(tmp_path / "s")])
    assert r.exit_code == 2 and r.stderr.strip() == "error: convtrain tune needs Optuna: pip install 'convtrain[tune]'"
    assert not (tmp_path / "s").exists()


def test_timeout_starts_no_new_trial_and_says_how_to_continue(tmp_path, data_root):
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}")
    folder = tmp_path / "study"
    r = runner.invoke(app, ["tune", *TINY, "--space", str(space), "--trials", "3", "--study-dir", str(folder),
                            "--timeout", "0"])
    assert r.exit_code == 0, r.output
    assert "--timeout 0s reached: no new trial started; 0 of 3 trials finished; continue with: convtrain tune" \
        in r.stdout
    assert f"--trials 3 --study-dir {folder}" in r.stdout and "--timeout 0" in r.stdout
    assert _study(folder).get_trials() == [] and not list(folder.glob("trial-*"))
    assert json.loads((folder / "study.json").read_text())["trials"] == 3


def test_the_winner_beats_the_base_only_by_more_than_the_seeds_spread():
    from convtrain.tune.confirm import verdict

    base = {"name": "base", "mean": 0.900, "std": 0.010}
    assert not verdict(base, {"name": "trial-003", "mean": 0.905, "std": 0.004})["beats_base"]  # within the spread
    assert not verdict(base, {"name": "trial-003", "mean": 0.880, "std": 0.004})["beats_base"]
    won = verdict(base, {"name": "trial-003", "mean": 0.915, "std": 0.004})
    assert won["beats_base"] and won["spread"] == 0.010 and won["difference"] == pytest.approx(0.015)
    assert won["verdict"].startswith("trial-003 beats the base config")
    assert verdict({**base, "std": None}, {"name": "t", "mean": 0.901, "std": None})["beats_base"]  # one seed: no spread


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test asks a trial by hand, not in optimize
def test_a_trial_whose_heartbeat_stopped_on_another_machine_is_failed_and_its_run_directory_says_so(
        tmp_path, monkeypatch):
    from convtrain.tune import study as study_mod
    from convtrain.tune.worker import _stale_trial_failed

    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(study_mod, "GRACE_S", 1)
    storage = study_mod.open_storage(f"sqlite:///{tmp_path / 'study.db'}", on_stale=_stale_trial_failed)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    run = tmp_path / "trial-000"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    trial = study.ask()
    trial.set_user_attr("run_dir", str(run))
    trial.set_user_attr("host", "another-machine")
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # more than the grace period without a beat
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials()[0].state.name == "FAIL"
    assert results_json(run)["status"] == "failed" and "stopped beating" in results_json(run)["reason"]


def test_marking_a_trial_goes_through_its_run_directory_lock(tmp_path):
    """A trial's run directory still held by a live writer (its heartbeat only stalled) is left to it; once
    the lock is free the mark is written through RunDir (and a finished run is never marked failed).
    Break tried: _mark_run writing results.json beside the lock (as it did): the first check fails."""
    from convtrain.artifacts.runlock import RunLock
    from convtrain.tune.worker import _mark_run

    run = tmp_path / "trial-000"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    with RunLock(run):  # a live process (this one) writes the run
        _mark_run(run, "failed", "its worker stopped beating")
        assert not (run / "results.json").exists()
    _mark_run(run, "failed", "its worker stopped beating")
    assert results_json(run) == {"status": "failed", "reason": "its worker stopped beating"}
    assert not (run / ".lock").exists()  # let go again
    (run / "results.json").write_text('{"status": "finished", "test_accuracy": 0.9}\n')
    _mark_run(run, "failed", "late")
    assert results_json(run)["status"] == "finished"


# ------------------------------------------------------------------------------------------------
# Real studies


@pytest.mark.slow
def test_a_study_completes_with_run_directories_a_report_and_a_best_yaml_that_trains(tmp_path, data_root):
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}\n"
                             "train.batch_size: {choice: [32, 64]}\n")
    folder = tmp_path / "studies" / "lenet"
    r = run_cli("tune", *TINY, "--set", "train.epochs=1", "--space", str(space), "--trials", "4",
                "--study-dir", str(folder), "--jobs", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    study = _study(folder)
    # two workers that ask for the last trial at the same moment: the later one's trial is failed as
    # "surplus" before it trains (never more than N finished trials); none of those has a run directory
    surplus = [t for t in study.get_trials() if t.user_attrs.get("surplus")]
    assert all(t.state.name == "FAIL" and "run_dir" not in t.user_attrs for t in surplus)
    trials = [t for t in study.get_trials() if t not in surplus]
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:  # every trial is an ordinary run directory
        run = Path(t.user_attrs["run_dir"])
        assert run == folder / f"trial-{t.number:03d}"
        assert {"config.yaml", "metrics.csv", "results.json"} <= {p.name for p in run.iterdir()}
        assert (run / "checkpoints" / "last.pt").is_file()
        assert results_json(run)["status"] == ("finished" if t.state.name == "COMPLETE" else "pruned")
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["finished"] == 4 and summary["best"]["number"] == study.best_trial.number
    assert (folder / "history.png").is_file()
    assert "best val_acc" in r.stdout and f"best: trial {study.best_trial.number}" in r.stdout
    # best.yaml: the best trial's full config, runnable as it is
    run = tmp_path / "from-best"
    t = run_cli("train", "--config", str(folder / "best.yaml"), "--set", "train.epochs=1", "--run-dir", str(run))
    assert t.returncode == 0, t.stderr
    best = study.best_trial
    saved = json.loads(json.dumps(best.user_attrs["config"]))
    assert saved["optim"]["lr"] == best.params["optim.lr"]
    assert results_json(run)["status"] == "finished"
    # --report DIR redraws the table; `convtrain runs` shows the study as one row with its trials under it
    rep = run_cli("tune", "--report", str(folder))
    assert rep.returncode == 0 and "4 of 4 trials finished" in rep.stdout, rep.stderr
    listing = run_cli("runs", str(folder.parent), "--json")
    rows = json.loads(listing.stdout)
    assert [r["kind"] for r in rows] == ["study"]
    done = sum(1 for t in trials if t.state.name == "COMPLETE")
    assert rows[0]["trials_count"] == {"done": done, "pruned": 4 - done, "failed": 0, "running": 0}
    assert [t["name"] for t in rows[0]["trials"]] == [f"trial-{t.number:03d}" for t in trials]
    # --confirm: the base config and the winner, each with two seeds; the verdict compares their spreads
    c = run_cli("tune", "--report", str(folder), "--confirm", "1", "--seeds", "0,1")
    assert c.returncode == 0, c.stderr + c.stdout
    confirm = json.loads((folder / "confirm.json").read_text())
    names = [e["name"] for e in confirm["entries"]]
    assert names == ["base", f"trial-{best.number:03d}"]
    for e in confirm["entries"]:
        accs = [results_json(Path(p))["test_accuracy"] for p in e["runs"]]
        assert len(accs) == 2 and e["mean"] == pytest.approx(sum(accs) / 2)
    base, won = confirm["entries"]
    assert confirm["beats_base"] == (won["mean"] - base["mean"] > max(base["std"], won["std"]))
    assert confirm["verdict"] in c.stdout


@pytest.mark.slow
def test_a_hopeless_learning_rate_is_pruned_and_the_run_directory_says_so(tmp_path, data_root):
    # lr 2e-3 learns; lr 30 (Adam) stays at chance: the median pruner (from the 3rd trial on) stops those
    # after epoch 1 of 2. Random sampler seed 6 draws 0.002, 0.002, 30, 0.002, 30 (Optuna's RandomSampler)
    space = _space(tmp_path, "optim.lr: {choice: [0.002, 30.0]}")
    folder = tmp_path / "study"
    r = run_cli("tune", *TINY, "--space", str(space), "--trials", "5", "--study-dir", str(folder),
                "--sampler", "random", "--seed", "6")
    assert r.returncode == 0, r.stderr + r.stdout
    trials = _study(folder).get_trials()
    assert [t.params["optim.lr"] for t in trials] == [0.002, 0.002, 30.0, 0.002, 30.0]
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    for t in trials[2::2]:
        run = Path(t.user_attrs["run_dir"])
        assert results_json(run)["status"] == "pruned"
        assert len(list(open(run / "metrics.csv"))) - 1 == 1  # stopped after epoch 1 of 2
    assert "trial 2 pruned" in r.stdout and "2 trial(s) pruned, 2 of 10 epochs not trained" in r.stdout
    listing = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    (row,) = [r for r in json.loads(listing.stdout) if r.get("kind") == "study"]
    assert row["trials_count"] == {"done": 3, "pruned": 2, "failed": 0, "running": 0}
    assert [t["status"] for t in row["trials"]] == ["finished", "finished", "pruned", "finished", "pruned"]


def _start_until(argv: list[str], marker: str) -> tuple[subprocess.Popen, list[str]]:
    """Start ``convtrain tune``; return once a line of its output contains ``marker``."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return proc, seen
    raise AssertionError("".join(seen))


@pytest.mark.slow
def test_ctrl_c_then_kill_9_then_rerun_finishes_exactly_n_trials_and_the_stopped_ones_failed(tmp_path, data_root):
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}")
    folder = tmp_path / "study"
    args = ["tune", *TINY, "--set", "train.epochs=1", "--space", str(space), "--trials", "3",
            "--study-dir", str(folder), "--pruner", "none"]
    argv = [sys.executable, "-m", "convtrain", *args]
    # Ctrl-C in trial 1: it stops after the current step, exit 130, the command that finishes the study
    proc, seen = _start_until(argv, "run: " + str(folder / "trial-001"))
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "interrupted in trial 1" in rest and "1 of 3 trials finished; finish the study with: convtrain tune" in rest
    assert results_json(folder / "trial-001")["status"] == "interrupted"
    # kill -9 in trial 2 (the rerun's first): the study is left with a trial "running" for ever
    proc, seen = _start_until(argv, "run: " + str(folder / "trial-002"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _study(folder).get_trials()[2].state.name == "RUNNING", "".join(seen)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr + r.stdout
    states = {t.number: t.state.name for t in _study(folder).get_trials()}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}
    assert results_json(folder / "trial-002")["status"] == "failed"
    assert "its process" in results_json(folder / "trial-002")["reason"]
    assert "3 of 3 trials finished" in r.stdout


# ------------------------------------------------------------------------------------------------
# Many machines: two workers share one study through a real PostgreSQL server


def _postgres_bindir() -> Path | None:
    import glob
    import shutil

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(found) / "initdb").is_file() and (Path(found) / "pg_ctl").is_file():
            return Path(found)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


PG_READY_S = 300


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (a free port), its data in a temporary folder; stopped after."""
    import pwd
    import shutil
    import socket
    import tempfile

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server binaries are absent (apt-get install postgresql; .ci/run installs it)")
    pytest.importorskip("psycopg")
    base = Path(tempfile.mkdtemp(prefix="convtrain-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's postgres user
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N"],
                   check=True, capture_output=True)
    # -w -t: wait until it accepts connections, as long as a busy machine needs (pg_ctl's default is 60 s)
    started = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w",
                              "-t", str(PG_READY_S), "-o",
                              f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                             capture_output=True, text=True)
    if started.returncode != 0:
        log = (base / "log").read_text()[-1500:] if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"waited up to {PG_READY_S} s for PostgreSQL to accept connections on port {port} (load average "
                    f"{os.getloadavg()[0]:.1f}): {started.stderr.strip()[-500:]} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_real_postgresql_server(tmp_path, data_root, postgres):
    space = _space(tmp_path, "optim.lr: {float: [1.0e-3, 1.0e-2], log: true}")
    workers = []
    for name in ("a", "b"):  # each worker writes its trials' run directories under its own folder
        argv = [sys.executable, "-m", "convtrain", "tune", *TINY, "--set", "train.epochs=1", "--space", str(space),
                "--trials", "4", "--study-dir", str(tmp_path / name), "--storage", postgres, "--study", "shared",
                "--pruner", "none", "--set", "speed.threads=1"]
        workers.append(subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert all("trial " in o for o in outputs), outputs  # both took trials
    study = optuna.load_study(study_name="shared", storage=postgres)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and not [t for t in trials if t.state.name == "RUNNING"]
    # no trial lost: every trial that trained has its run directory in one of the two folders
    dirs = {p.name: p for name in ("a", "b") for p in (tmp_path / name).glob("trial-*")}
    assert sorted(dirs) == sorted(f"trial-{t.number:03d}" for t in trials if "run_dir" in t.user_attrs)
    for t in complete:
        assert results_json(dirs[f"trial-{t.number:03d}"])["status"] == "finished"
    hosts = {Path(t.user_attrs["run_dir"]).parent.name for t in complete}
    assert hosts == {"a", "b"}, "both workers should have finished trials"
