"""Issue #12's tools around runs: --seeds and its summary, `convtrain runs diff`, MLflow logging,
train.deterministic. Small real MNIST runs through the CLI in-process (typer's CliRunner)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from convtrain.cli.app import app

from .test_loop_features import TINY, rows

cli = CliRunner()
SEEDS = ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--set", "train.epochs=2",
         *[a for s in TINY for a in ("--set", s)], "--set", "train.max_steps_per_epoch=2", "--seeds", "0,1,2"]


@pytest.fixture(scope="module")
def seeds_run(data_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seeds") / "smoke-seeds"
    result = cli.invoke(app, [*SEEDS, "--run-dir", str(root)])
    assert result.exit_code == 0, result.output
    (root.parent / "stdout.txt").write_text(result.stdout)
    return root


@pytest.mark.slow
def test_seeds_summary_equals_the_per_seed_results(seeds_run):
    """The summary's numbers recomputed from each seed run's results.json and metrics.csv, read here
    with json/csv (not the code under test). The std is the sample one (ddof 1), documented.
    Breaks tried: population std (statistics.pstdev); one seed's config reused for all (the seed
    runs identical, std 0): both fail."""
    summary = json.loads((seeds_run / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    results = [json.loads((seeds_run / f"seed-{s}" / "results.json").read_text()) for s in (0, 1, 2)]
    test = [r["test_accuracy"] for r in results]
    assert len(set(test)) > 1, "the seeds gave the same test accuracy: the std check proves nothing"
    t = summary["test_accuracy"]
    assert t["mean"] == pytest.approx(statistics.fmean(test))
    assert t["std"] == pytest.approx(statistics.stdev(test))
    assert (t["min"], t["max"], t["n"]) == (min(test), max(test), 3)
    for e in summary["val_acc_per_epoch"]:
        val = [float(rows(seeds_run / f"seed-{s}")[e["epoch"] - 1]["val_acc"]) for s in (0, 1, 2)]
        assert e["mean"] == pytest.approx(statistics.fmean(val), rel=1e-5)
        assert e["std"] == pytest.approx(statistics.stdev(val), rel=1e-4)
    assert [e["epoch"] for e in summary["val_acc_per_epoch"]] == [1, 2]
    for s in (0, 1, 2):  # each seed run is an ordinary run with its own seed
        assert "seed: %d" % s in (seeds_run / f"seed-{s}" / "config.yaml").read_text()
    printed = (seeds_run.parent / "stdout.txt").read_text()
    assert "test accuracy" in printed and f"{t['mean']:.2%}" in printed


@pytest.mark.slow
def test_seeds_rerun_with_the_same_run_dir_continues_and_bad_uses_are_refused(seeds_run, tmp_path):
    """A seeds folder with one seed run missing: the same command with --run-dir redoes only that
    one (the others are resumed: their last.pt is unchanged) and rewrites the summary."""
    root = Path(shutil.copytree(seeds_run, tmp_path / "copy"))
    shutil.rmtree(root / "seed-2")
    kept = (root / "seed-0" / "checkpoints" / "last.pt").read_bytes()
    again = cli.invoke(app, [*SEEDS, "--run-dir", str(root)])
    assert again.exit_code == 0, again.output
    assert (root / "seed-0" / "checkpoints" / "last.pt").read_bytes() == kept
    assert json.loads((root / "summary.json").read_text())["test_accuracy"]["n"] == 3

    for extra, text in ((["--seeds", "0,,x"], "expected seeds separated by commas"),
                        (["--seeds", "1,1"], "repeated"),
                        (["--seeds", "0,1", "--resume", str(root / "seed-0")], "--run-dir RUN"),
                        (["--seeds", "0,1", "--seed", "3"], "either --seed or --seeds")):
        args = ["train", "--config", "configs/smoke.yaml", *extra]
        r = cli.invoke(app, args)
        assert r.exit_code == 2 and text in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


@pytest.mark.slow
def test_runs_diff_lists_the_changed_key_the_deltas_and_plots(seeds_run, tmp_path):
    """seed-0 vs seed-1 differ only in their seed. Break tried: configs compared only on keys of A
    that are dicts (a changed top-level key missed): fails."""
    a, b = seeds_run / "seed-0", seeds_run / "seed-1"
    picture = tmp_path / "ab.png"
    r = cli.invoke(app, ["runs", "diff", str(a), str(b), "--json", "--plot", str(picture)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["config"] == [{"key": "seed", "a": 0, "b": 1}]
    ra, rb = rows(a), rows(b)
    for e, x, y in zip(d["epochs"], ra, rb):
        assert e["val_acc"]["delta"] == pytest.approx(float(y["val_acc"]) - float(x["val_acc"]), abs=1e-9)
    res = [json.loads((p / "results.json").read_text())["test_accuracy"] for p in (a, b)]
    assert (d["test_accuracy"]["a"], d["test_accuracy"]["b"]) == tuple(res)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    human = cli.invoke(app, ["runs", "diff", str(a), str(b)])
    assert human.exit_code == 0 and "seed" in human.stdout and "final test accuracy" in human.stdout

    broken = Path(shutil.copytree(a, tmp_path / "broken"))
    (broken / "metrics.csv").write_text("epoch,train_loss\n1,oops\n")
    r = cli.invoke(app, ["runs", "diff", str(broken), str(b)])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "metrics.csv" in r.stderr, r.output
    r = cli.invoke(app, ["runs", "diff", str(a)])
    assert r.exit_code == 2 and "usage: convtrain runs diff" in r.stderr


@pytest.mark.slow
def test_mlflow_logs_params_metrics_results_and_best_pt(data_root, tmp_path):
    """A tiny run logged to a temporary file store, read back with MlflowClient."""
    pytest.importorskip("mlflow", reason="the mlflow extra (pip install 'convtrain[mlflow]')")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    r = cli.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                         *[a for s in TINY for a in ("--set", s)], "--set", "train.epochs=2",
                         "--set", "log.mlflow=true", "--set", f"log.mlflow_uri={store}"])
    assert r.exit_code == 0, r.output
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("convtrain")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.status == "FINISHED"
    assert found.data.tags["convtrain.run_dir"] == str(run.resolve())
    assert found.data.params["train.epochs"] == "2" and found.data.params["data.train_subset"] == "640"
    history = client.get_metric_history(found.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(int(x["epoch"]), pytest.approx(float(x["val_acc"]), rel=1e-5)) for x in rows(run)]
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert artifacts == {"results.json", "checkpoints"}
    assert [a.path for a in client.list_artifacts(found.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]


def test_mlflow_missing_is_one_line_saying_how_to_install_it(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    run = tmp_path / "run"
    r = cli.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                         *[a for s in TINY for a in ("--set", s)], "--set", "log.mlflow=true"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: log.mlflow needs MLflow: pip install 'convtrain[mlflow]'"
    assert not run.exists()  # refused before the run directory was made


def test_deterministic_says_what_it_costs_and_restores_the_setting(data_root, tmp_path):
    run = tmp_path / "det"
    r = cli.invoke(app, ["train", "--config", "configs/smoke.yaml", "--device", "cpu", "--run-dir", str(run),
                         *[a for s in TINY for a in ("--set", s)], "--set", "train.max_steps_per_epoch=2",
                         "--set", "train.deterministic=true"])
    assert r.exit_code == 0, r.output
    assert "deterministic: torch.use_deterministic_algorithms(True)" in r.stdout and "Cost:" in r.stdout
    assert not torch.are_deterministic_algorithms_enabled()  # the default stays fast for what runs next
