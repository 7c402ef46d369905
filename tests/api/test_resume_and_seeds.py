"""``convtrain.resume`` and ``convtrain.seeds``: the command's ``train --resume`` and ``train --seeds``, end to
end on tiny real runs, with the same files, numbers and closing lines as the command.

Breaks tried (each failed here): resume not passing its ``overrides`` on (the run stays at one epoch);
seeds running only the first seed; SeedsResult.as_dict dropping the per-epoch statistics (not summary.json
any more); the API printing no closing lines with ``progress=True``.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

import convtrain
from convtrain.cli.app import app

from .test_python_api import SMALL

runner = CliRunner()
# two seeds of lenet5 on 600 images for two epochs: about 1 s of training each on 2 cores
SEEDS = {"model.name": "lenet5", "data.train_subset": 600, "data.val_size": 200, "data.test_subset": 200,
         "train.epochs": 2, "device": "cpu", "log.plots": False}


def _sets(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def _closing(printed: str) -> list[str]:
    """The lines a finished run ends with, without what differs between two runs (seconds, the folder)."""
    lines = [line for line in printed.splitlines()
             if line.startswith(("best epoch ", "test accuracy of best.pt", "run directory: ", "summary: ", "test set: "))]
    return [re.sub(r"\d+\.\ds\b", "Ns", re.sub(r"(directory|summary): .*", r"\1: X", line)) for line in lines]


def _rows(run) -> list[list[str]]:
    """metrics.csv without its times (seconds, val_seconds, ...)."""
    lines = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(lines[0]) if "seconds" not in name]
    return [[row[i] for i in keep] for row in lines]


@pytest.mark.slow
def test_resume_equals_the_cli_resume(data_root, tmp_path, monkeypatch, capsys):
    """A one-epoch run and its copy, each given a second epoch: one by ``convtrain.resume(result, ...)``, the
    other by ``convtrain train --resume latest --set train.epochs=2``."""
    first = convtrain.train(overrides=SMALL, run_dir=tmp_path / "api", progress=False)
    shutil.copytree(tmp_path / "api", tmp_path / "runs" / "cli")
    monkeypatch.chdir(tmp_path)  # 'latest' is the newest run under ./runs
    cli = runner.invoke(app, ["train", "--resume", "latest", "--set", "train.epochs=2"])
    assert cli.exit_code == 0, cli.output
    capsys.readouterr()
    resumed = convtrain.resume(first, overrides={"train.epochs": 2})
    printed = capsys.readouterr().out
    api, cmd = tmp_path / "api", tmp_path / "runs" / "cli"
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (api, cmd))
    assert resumed.run_dir == api and [r.epoch for r in resumed.epochs] == [1, 2]
    assert resumed.test_accuracy == ours["test_accuracy"] == theirs["test_accuracy"]
    assert resumed.best_epoch == ours["best_epoch"] == theirs["best_epoch"]
    assert resumed.test_num_samples == ours["test_num_samples"] == 200
    assert _rows(api) == _rows(cmd) and len(_rows(api)) == 3
    assert (api / "config.yaml").read_text() == (cmd / "config.yaml").read_text()
    assert f"resuming: {api}" in (api / "train.log").read_text()
    assert _closing(printed) == _closing(cli.stdout) and len(_closing(printed)) == 3
    # only what may change on resume: anything else is the command's error
    with pytest.raises(convtrain.ConfigError, match="cannot resume .* with a different config"):
        convtrain.resume(api, overrides={"optim.lr": 0.5}, progress=False)


@pytest.mark.slow
def test_seeds_summary_equals_the_cli_summary_json(data_root, tmp_path, capsys):
    result = convtrain.seeds(overrides=SEEDS, seeds=[0, 1], run_dir=tmp_path / "api")
    printed = capsys.readouterr().out
    ours = json.loads((tmp_path / "api" / "summary.json").read_text())
    assert result.as_dict() == ours  # the typed summary is the file, key for key
    assert result.summary_file == tmp_path / "api" / "summary.json" and result.seeds == [0, 1]
    assert [r.run_dir for r in result.runs] == [tmp_path / "api" / "seed-0", tmp_path / "api" / "seed-1"]
    assert result.test_accuracy.n == 2 and list(result.val_acc_per_epoch) == [1, 2] and result.same_test_set
    assert result.runs[0].test_accuracy != result.runs[1].test_accuracy  # two seeds, two models

    cli = runner.invoke(app, ["train", "--seeds", "0,1", *_sets(SEEDS), "--run-dir", str(tmp_path / "cli")])
    assert cli.exit_code == 0, cli.output
    theirs = json.loads((tmp_path / "cli" / "summary.json").read_text())

    def same_numbers(summary: dict) -> dict:  # the folders and the seconds differ between the two
        runs = [{k: v for k, v in r.items() if k not in ("run_dir", "train_seconds")} for r in summary["runs"]]
        return {**{k: v for k, v in summary.items() if k != "train_seconds"}, "runs": runs}

    assert same_numbers(ours) == same_numbers(theirs)
    assert _closing(printed) == _closing(cli.stdout) and len(_closing(printed)) == 2
    assert "2 seeds (0, 1): mean, sample std, min, max" in printed

    # the same call again continues the folder: the finished seed runs only repeat their final test
    again = convtrain.seeds(overrides=SEEDS, seeds="0,1", run_dir=tmp_path / "api", progress=False)
    assert again.test_accuracy == result.test_accuracy and capsys.readouterr().out == ""
