"""The override and naming rules of the command line (issue 32), held by fast in-process tests: which of
the shortcuts and ``--set`` wins, the ``=`` split, did-you-mean across sections, an empty checkpoint
argument. Issue 32's audit planted a one-line bug in each rule and the tests a developer would run for
it all passed; each test below says the break tried on it (each failed here, then restored).

Nothing trains: ``train`` runs up to the resolved config, which ``api._run`` hands over (captured,
then stopped with one line), so the rows check what a run would have been given.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from convtrain import api
from convtrain.cli.app import app
from convtrain.cli.argv import rewrite
from convtrain.config.load import load_config, parse_override
from convtrain.errors import ConfigError

from ..conftest import REPO

runner = CliRunner()
FIXTURE_RUN = REPO / "tests" / "fixtures" / "run-52beffa"


class _Captured(ConfigError):
    """Raised by the stand-in for the run: the resolved config was captured, nothing more to do."""


def resolved(args: list[str], monkeypatch, tmp_path: Path):
    """``convtrain train ARGS`` as the console script parses it (bare keys rewritten): the config the run
    would get and what it printed on stderr."""
    seen = {}

    def capture(start, *a, **k):
        seen["cfg"], seen["notes"] = start.cfg, list(start.notes)
        raise _Captured("captured")

    monkeypatch.setattr(api, "_run", capture)
    argv = rewrite(typer.main.get_command(app), ["train", "-c", "smoke", "--run-dir", str(tmp_path / "r"), *args])
    r = runner.invoke(app, argv)
    assert "cfg" in seen, r.stderr + r.stdout
    return seen["cfg"], seen["notes"]


@pytest.mark.parametrize("args, epochs", [
    (["--epochs", "1", "--set", "train.epochs=3"], 1),
    (["--set", "train.epochs=3", "--epochs", "1"], 1),  # the shortcut wins wherever it stands
    (["train.epochs=3", "--epochs", "1"], 1),  # a bare key is a --set
    (["--set", "train.epochs=2", "train.epochs=3"], 3),  # --set and bare keys: in the order given
    (["train.epochs=3", "--set", "train.epochs=2"], 2),
])
def test_shortcuts_beat_set_and_set_applies_in_the_order_given(args, epochs, monkeypatch, tmp_path):
    """The documented precedence (config/load.py PRECEDENCE): --set and bare keys in the order given, then
    the shortcuts; the conflict is a note naming the winner. Breaks tried: with_shortcuts putting the
    shortcuts before --set (the first row got 3); apply_overrides applying the overrides in reverse (the
    first row got 3); override_notes naming the first value as the winner (the note said 3)."""
    cfg, notes = resolved(args, monkeypatch, tmp_path)
    assert cfg.train.epochs == epochs
    (note,) = [n for n in notes if n.startswith("note: train.epochs")]
    assert f"the last one wins: train.epochs={epochs} " in note


def test_every_shortcut_beats_its_set_key(monkeypatch, tmp_path):
    """--lr, --batch-size, --device and --seed against the --set of their own key. Break tried: the
    options' overrides() putting --device/--seed before --set: device and seed came from --set."""
    cfg, _ = resolved(["--set", "optim.lr=0.5", "--lr", "0.25", "--set", "train.batch_size=8", "--batch-size", "16",
                       "--device", "cpu", "--set", "device=auto", "--seed", "4", "--set", "seed=9"], monkeypatch,
                      tmp_path)
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.device, cfg.seed) == (0.25, 16, "cpu", 4)


@pytest.mark.parametrize("text, key, value", [
    ("name=a=b", ["name"], "a=b"),
    ("data.root=/data/x=1", ["data", "root"], "/data/x=1"),
    ("name==", ["name"], "="),
])
def test_an_override_is_split_at_the_first_equals_sign(text, key, value):
    """Break tried: parse_override splitting at the last '=' (rpartition): 'name=a=b' became the unknown
    key 'name=a'."""
    assert parse_override(text) == (key, value)
    assert ".".join(key) != "name" or load_config(None, [text]).name == value


def test_the_cli_keeps_the_value_after_the_first_equals_sign(monkeypatch, tmp_path):
    cfg, _ = resolved(["--set", "name=tag=v2", "data.root=/tmp/a=b"], monkeypatch, tmp_path)
    assert cfg.name == "tag=v2" and cfg.data.root == "/tmp/a=b"


@pytest.mark.parametrize("key, suggestion", [
    ("train.lr", "optim.lr"),  # the right leaf in another section
    ("optim.epochs", "train.epochs"),
    ("data.batch_size", "train.batch_size"),
    ("optim.epoch", "train.epochs"),  # a typo of a leaf that only another section has
    ("model.seed", "seed"),  # a top-level key under a section
])
def test_did_you_mean_searches_every_section(key, suggestion):
    """Break tried: suggest_key searching only the key's own section's leaves (as did_you_mean over
    the dataclass's own fields does): 'train.lr' suggested nothing, 'optim.epochs' nothing."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=1"])
    assert f"unknown key '{key}' (did you mean '{suggestion}'?)" in str(info.value)


@pytest.mark.parametrize("argv", [
    ["train", "--resume", ""], ["train", "--resume="], ["predict", "--checkpoint", "", "x.png"],
    ["eval", "--checkpoint", " "], ["export", "--checkpoint="], ["serve", "--checkpoint", ""],
])
def test_an_empty_checkpoint_argument_is_a_usage_error(argv):
    """Typer reads '' as Path('.'), the current folder: inside a run directory that is the run, which
    `train --resume ''` resumed and rewrote. Break tried: the console script's argument check
    (cli/argv.py _refuse_empty) skipped: no error, the rewritten argv went on to Typer."""
    with pytest.raises(ConfigError, match="is empty"):
        rewrite(typer.main.get_command(app), argv)


def test_resume_with_an_unset_variable_inside_a_run_directory_leaves_the_run_alone(tmp_path):
    """The whole console script, run from inside a finished run directory: one line, exit 2, no file of
    the run changed. Break tried: _refuse_empty skipped: the run was resumed from '.' (exit 0, its
    results.json and train.log rewritten) or refused for another reason after loading torch."""
    run = Path(shutil.copytree(FIXTURE_RUN, tmp_path / "run"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "convtrain", "train", "--resume", ""], cwd=run, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --resume is empty"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
