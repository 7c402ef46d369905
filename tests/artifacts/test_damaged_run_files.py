"""Damaged run files: `runs` and `plot` report them (one line, naming the file) and change nothing.

The run directories are written by hand (no training): a config.yaml, metrics.csv and results.json
shaped like a real 2-epoch run's, then one file replaced by garbage per case.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app

runner = CliRunner()

CONFIG = """\
# resolved config; 1 process(es) x train.batch_size 64 = global batch 64
name: smoke
seed: 0
model: {name: article_cnn, kwargs: {}, init: default}
data: {name: mnist, root: data, val_size: 200}
train: {epochs: 2, batch_size: 64}
"""
METRICS = """\
epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,seconds,val_seconds,test_seconds
1,1.81046,0.425,0.921994,0.735,,,0.002,4.85761,0.651652,
2,0.61046,0.825,0.421994,0.875,,,0.002,4.5,0.6,
"""
CLASSES = [str(i) for i in range(10)]
MATRIX = [[18 if i == j else (1 if j == (i + 1) % 10 else 0) for j in range(10)] for i in range(10)]
RESULTS = {"status": "finished", "best_epoch": 2, "best_val_acc": 0.875, "test_accuracy": 0.9, "test_loss": 0.4,
           "test_confusion_matrix": MATRIX, "classes": CLASSES, "epochs": 2, "train_seconds": 9.35}

RANDOM = random.Random(0).randbytes(400)
LATIN1 = "epoch,train_loss\nÉté,1\n".encode("latin-1")  # valid text, but not UTF-8


def _results(**change) -> str:
    data = {**RESULTS, **change}
    return json.dumps({k: v for k, v in data.items() if v is not _DROP})


_DROP = object()
DIR = object()  # put a directory where the file should be

# (file, case name, content, runs shows it unreadable?, plot exit code)
CASES = [
    ("metrics.csv", "random bytes", RANDOM, True, 1),
    ("metrics.csv", "not utf-8", LATIN1, True, 1),
    ("metrics.csv", "random text", "lorem ipsum dolor\nsit amet\n", True, 1),
    ("metrics.csv", "garbage without newline", "}{][not a header", True, 1),
    ("metrics.csv", "json instead", json.dumps([1, 2, 3]) + "\n", True, 1),
    ("metrics.csv", "missing column", METRICS.replace(",val_acc", "", 1), True, 1),
    ("metrics.csv", "epoch not a number", METRICS.replace("\n2,", "\nII,"), True, 1),
    ("metrics.csv", "empty value", METRICS.replace("0.875", ""), True, 1),
    ("metrics.csv", "accuracy out of range", METRICS.replace("0.875", "87.5"), True, 1),
    ("metrics.csv", "nan accuracy", METRICS.replace("0.875", "nan"), True, 1),
    ("metrics.csv", "extra fields", METRICS.replace("4.5,0.6,", "4.5,0.6,,7,8"), True, 1),
    ("metrics.csv", "nul bytes", METRICS.replace("0.875", "0.8\x0075"), True, 1),
    ("metrics.csv", "negative epoch", METRICS.replace("\n2,", "\n-2,"), True, 1),
    ("metrics.csv", "empty file", "", False, 1),  # no epochs yet: listed fine, nothing to plot
    ("metrics.csv", "header only", METRICS.splitlines()[0] + "\n", False, 1),
    ("metrics.csv", "directory", DIR, True, 1),
    ("results.json", "random bytes", RANDOM, True, 1),
    ("results.json", "not utf-8", '{"status": "fini\xe9"}'.encode("latin-1"), True, 1),
    ("results.json", "invalid json", '{"status": "finished",', True, 1),
    ("results.json", "list", "[1, 2]", True, 1),
    ("results.json", "string", '"finished"', True, 1),
    ("results.json", "number", "0.99", True, 1),
    ("results.json", "null", "null", True, 1),
    ("results.json", "missing status", _results(status=_DROP), True, 1),
    ("results.json", "unknown status", _results(status="done"), True, 1),
    ("results.json", "status not a string", _results(status=1), True, 1),
    ("results.json", "finished without accuracy", _results(test_accuracy=_DROP), True, 1),
    ("results.json", "accuracy a string", _results(test_accuracy="0.9"), True, 1),
    ("results.json", "accuracy a bool", _results(test_accuracy=True), True, 1),
    ("results.json", "accuracy above 1", _results(test_accuracy=99.1), True, 1),
    ("results.json", "best_epoch a float", _results(best_epoch=1.5), True, 1),
    ("results.json", "matrix not square", _results(test_confusion_matrix=[[1, 2], [3]]), True, 1),
    ("results.json", "matrix of strings", _results(test_confusion_matrix=[["a"]], classes=["x"]), True, 1),
    ("results.json", "matrix a dict", _results(test_confusion_matrix={"a": 1}), True, 1),
    ("results.json", "classes not matching", _results(classes=["a", "b"]), True, 1),
    ("results.json", "classes of numbers", _results(classes=list(range(10))), True, 1),
    ("results.json", "huge number", '{"status": "finished", "test_accuracy": ' + "9" * 5000 + "}", True, 1),
    ("results.json", "deep nesting", "[" * 100_000 + "]" * 100_000, True, 1),
    ("results.json", "empty file", "", True, 1),
    ("results.json", "directory", DIR, True, 1),
    ("results.json", "interrupted run", json.dumps({"status": "interrupted", "epoch": 2}), False, 0),
    ("config.yaml", "random bytes", RANDOM, True, 1),
    ("config.yaml", "not utf-8", "name: \xe9t\xe9\n".encode("latin-1"), True, 1),
    ("config.yaml", "invalid yaml", "model: {name: [\n", True, 1),
    ("config.yaml", "list", "- 1\n- 2\n", True, 1),
    ("config.yaml", "string", "just words\n", True, 1),
    ("config.yaml", "number", "42\n", True, 1),
    ("config.yaml", "empty file", "", True, 1),
    ("config.yaml", "python tag", "model: !!python/object/apply:os.system ['touch pwned']\n", True, 1),
    ("config.yaml", "bad date", "created: 2020-02-30\n", True, 1),
    # the config loader's limits apply to a run's config.yaml too
    ("config.yaml", "alias bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)), True, 1),
    ("config.yaml", "duplicate key", CONFIG + "seed: 1\nseed: 2\n", True, 1),
    ("config.yaml", "model a list", CONFIG.replace("model: {name: article_cnn, kwargs: {}, init: default}",
                                                   "model: [article_cnn]"), True, 1),
    ("config.yaml", "model name a number", CONFIG.replace("name: article_cnn", "name: 5"), True, 1),
    ("config.yaml", "epochs a string", CONFIG.replace("epochs: 2", "epochs: many"), True, 1),
    ("config.yaml", "directory", DIR, True, 1),
]
IDS = [f"{f}-{name.replace(' ', '_')}" for f, name, *_ in CASES]


def make_run(path: Path, **files) -> Path:
    """A run directory as a 2-epoch training leaves it (no pictures); ``files`` replace or add files."""
    (path / "checkpoints").mkdir(parents=True)
    contents = {"config.yaml": CONFIG, "metrics.csv": METRICS, "results.json": json.dumps(RESULTS),
                "train.log": "epoch 1/2 ...\n", "checkpoints/last.pt": b"not read by runs or plot", **files}
    for name, content in contents.items():
        target = path / name
        if content is DIR:
            target.mkdir()
            (target / "inside").write_text("x")
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return path


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every path under ``root``: kind, mode, and for files content hash and mtime (a folder's mtime is left
    out: a temporary file created and removed again changes it)."""
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name in skip:
            continue
        st = p.lstat()
        is_file = stat.S_ISREG(st.st_mode)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if is_file else None
        snap[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), digest, st.st_mtime_ns if is_file else None)
    return snap


def _one_error_line(result, name: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert name in lines[0], lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize(("name", "case", "content", "unreadable", "plot_exit"), CASES, ids=IDS)
def test_runs_lists_a_damaged_run_as_unreadable(tmp_path, name, case, content, unreadable, plot_exit):
    make_run(tmp_path / "a-good")
    run = make_run(tmp_path / "b-damaged", **{name: content})
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"a-good", "b-damaged"}, rows  # the good run still listed, the damaged one not dropped
    assert rows["a-good"]["status"] == "finished" and rows["a-good"]["test_acc"] == 0.9
    damaged = rows["b-damaged"]
    if unreadable:
        assert damaged["status"] == "unreadable" and name in damaged["error"], damaged
    else:
        assert damaged["status"] != "unreadable" and "error" not in damaged, damaged
    table = runner.invoke(app, ["runs", str(tmp_path)])
    assert table.exit_code == 0 and "Traceback" not in table.output
    assert ("unreadable" in table.stdout) == unreadable
    assert snapshot(tmp_path) == before
    assert not (run.parent / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize(("name", "case", "content", "unreadable", "plot_exit"), CASES, ids=IDS)
def test_plot_refuses_a_damaged_run_with_one_line(tmp_path, name, case, content, unreadable, plot_exit):
    if plot_exit == 0:
        pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    run = make_run(tmp_path / "run", **{name: content})
    before = snapshot(tmp_path, skip=("curves.png", "confusion.png") if plot_exit == 0 else ())
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == plot_exit, result.output
    if plot_exit:
        _one_error_line(result, name)
        assert not (run / "curves.png").exists() and not (run / "confusion.png").exists()
    else:
        assert (run / "curves.png").stat().st_size > 10_000
    assert snapshot(tmp_path, skip=("curves.png", "confusion.png")) == before


def test_plot_writes_both_pictures_of_a_healthy_hand_made_run(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    from PIL import Image

    run = make_run(tmp_path / "run")
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert Image.open(run / "curves.png").size == (1200, 450)
    assert Image.open(run / "confusion.png").size == (700, 600)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "confusion.png", "curves.png",
                                                      "metrics.csv", "results.json", "train.log"]  # no temp left


@pytest.mark.parametrize("what", ["missing", "a file", "no config.yaml"])
def test_plot_of_something_that_is_not_a_run_is_a_usage_error(tmp_path, what):
    target = tmp_path / "target"
    if what == "a file":
        target.write_text("hello")
    elif what == "no config.yaml":
        make_run(target)
        (target / "config.yaml").unlink()
    result = runner.invoke(app, ["plot", str(target)])
    assert result.exit_code == 2, result.output
    _one_error_line(result, str(target))


@pytest.mark.parametrize("what", ["missing", "a file"])
def test_runs_of_a_folder_that_is_not_there_is_a_usage_error(tmp_path, what):
    target = tmp_path / "runs"
    if what == "a file":
        target.write_text("hello")
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["runs", str(target), *extra])
        assert result.exit_code == 2, result.output
        _one_error_line(result, str(target))
        assert result.stdout == ""


def test_runs_empty_folder_says_so(tmp_path):
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0 and "no runs under" in result.stdout
    assert json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout) == []


def test_runs_newest_first_by_the_time_config_yaml_was_written(tmp_path):
    # names sort the other way round on purpose, so a listing ordered by name would fail
    for i, name in enumerate(["c-oldest", "b-middle", "a-newest"]):
        run = make_run(tmp_path / name)
        os.utime(run / "config.yaml", (1_700_000_000 + i * 3600,) * 2)
    listing = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
    assert [r["name"] for r in listing] == ["a-newest", "b-middle", "c-oldest"]
    assert [r["created"] for r in listing] == [1_700_000_000 + 7200, 1_700_000_000 + 3600, 1_700_000_000]


@contextlib.contextmanager
def read_only(folder: Path):
    """No new files in ``folder``: chmod for a user; root ignores modes, so the immutable flag (chattr +i)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_plot_into_a_read_only_run_fails_cleanly(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    run = make_run(tmp_path / "run")
    with read_only(run):
        before = snapshot(tmp_path)
        result = runner.invoke(app, ["plot", str(run)])
        assert result.exit_code == 1, result.output
        _one_error_line(result, str(run / "curves.png"))
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("blocked", ["curves.png", "confusion.png"])
def test_plot_with_a_directory_in_the_way_fails_cleanly(tmp_path, blocked):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    run = make_run(tmp_path / "run")
    (run / blocked).mkdir()
    (run / blocked / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 1, result.output
    _one_error_line(result, str(run / blocked))
    assert snapshot(tmp_path) == before  # the other picture was not written either, no temp file left


@pytest.mark.parametrize(("name", "content", "says"), [
    ("config.yaml", "- 1\n- 2\n", "config.yaml must hold a mapping (key: value lines), not a list"),
    ("config.yaml", CONFIG.replace("epochs: 2", "epochs: many"),
     "config.yaml: 'train.epochs' is 'many', not an integer"),
    ("metrics.csv", METRICS.replace("\n2,", "\nII,"), "metrics.csv row 2: column 'epoch' is 'II', not a number"),
    ("metrics.csv", LATIN1, "metrics.csv is not UTF-8 text"),
    ("results.json", "[1, 2]", "results.json must hold a JSON object, not a list"),
    ("results.json", _results(test_accuracy="0.9"), "results.json: key 'test_accuracy' is \"0.9\", not a number"),
])
def test_the_error_names_the_file_and_the_key_or_row(tmp_path, name, content, says):
    run = make_run(tmp_path / "run", **{name: content})
    result = runner.invoke(app, ["plot", str(run)])
    assert result.exit_code == 1 and says in result.stderr, result.stderr
    listing = json.loads(runner.invoke(app, ["runs", str(tmp_path), "--json"]).stdout)
    assert says in listing[0]["error"]


@pytest.mark.slow
def test_plots_in_the_background_write_both_pictures_and_leave_the_rest_alone(tmp_path):
    """At a terminal the run leaves its plots to `convtrain plot` in another process and exits at once."""
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib")
    from PIL import Image

    from convtrain.artifacts.rundir import RunDir

    run = make_run(tmp_path / "run")
    before = snapshot(tmp_path, skip=("curves.png", "confusion.png", ".lock"))
    rundir, lines = RunDir.open(run), []
    try:
        proc = rundir.write_plots(lines.append, background=True)
    finally:
        rundir.close()
    assert proc is not None and "in the background" in lines[0]
    assert proc.wait(timeout=120) == 0
    assert Image.open(run / "curves.png").size == (1200, 450) and Image.open(run / "confusion.png").size == (700, 600)
    assert snapshot(tmp_path, skip=("curves.png", "confusion.png", ".lock")) == before  # results.json untouched
