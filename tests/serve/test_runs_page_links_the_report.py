"""The runs page and /v1/runs: each run's test macro-F1 and balanced accuracy, and a link to its
`eval --report` page, served with a policy that lets it show pictures and nothing else; `convtrain runs`
shows the same numbers.

Breaks tried (each failed here): the report route without the Content-Security-Policy header; a
report folder that is a symlink out of the runs folder served; the listing's numbers read from
metrics.csv instead of results.json (a run's best epoch is not its last).
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from convtrain.cli.app import app

pytest.importorskip("fastapi", reason="serve is optional: pip install 'convtrain[serve]'")


@pytest.fixture()
def runs(trained_run, tmp_path):
    folder = tmp_path / "runs"
    run = shutil.copytree(trained_run, folder / "digits")
    (run / "report").mkdir()
    (run / "report" / "report.html").write_text("<!doctype html><title>r</title><p>a report</p>")
    outside = tmp_path / "elsewhere" / "report"
    outside.mkdir(parents=True)
    (outside / "report.html").write_text("secret")
    other = shutil.copytree(trained_run, folder / "linked", ignore=shutil.ignore_patterns("checkpoints"))
    (other / "report").symlink_to(outside)
    return folder, run


def test_the_runs_page_shows_the_new_numbers_and_links_the_report(runs):
    from fastapi.testclient import TestClient

    from convtrain.serve.app import create_app, load_models

    folder, run = runs
    client = TestClient(create_app(load_models([str(run / "checkpoints" / "best.pt")]), runs_dir=folder))
    listed = {r["name"]: r for r in client.get("/v1/runs").json()["runs"]}
    results = json.loads((run / "results.json").read_text())
    assert listed["digits"]["test_macro_f1"] == results["test_macro_f1"]
    assert listed["digits"]["test_balanced_accuracy"] == results["test_balanced_accuracy"]
    assert listed["digits"]["report"] == "/runs/digits/report/report.html"
    assert listed["linked"]["report"] == "/runs/linked/report/report.html"  # listed, but never served:
    page = client.get("/runs/digits/report/report.html")
    assert page.status_code == 200 and page.text.endswith("a report</p>")
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert client.get("/runs/linked/report/report.html").status_code == 404  # the symlink leads out of the runs
    assert client.get("/runs/digits/report/report.json").status_code == 404
    assert client.get("/runs/digits/report.html").status_code == 404


def test_runs_lists_macro_f1_and_balanced_accuracy_and_diff_compares_them(runs):
    folder, run = runs
    results = json.loads((run / "results.json").read_text())
    out = CliRunner().invoke(app, ["runs", str(folder), "--json"])
    listed = {r["name"]: r for r in json.loads(out.stdout)}
    assert listed["digits"]["test_macro_f1"] == results["test_macro_f1"]
    assert listed["digits"]["test_balanced_acc"] == results["test_balanced_accuracy"]
    assert listed["digits"]["report"] == str(run / "report" / "report.html")
    table = CliRunner().invoke(app, ["runs", str(folder)]).stdout
    assert "macro-F1" in table and f"{results['test_macro_f1']:.4f}" in table
    d = json.loads(CliRunner().invoke(app, ["runs", "diff", str(run), str(folder / "linked"), "--json"]).stdout)
    assert d["test_macro_f1"] == {"a": results["test_macro_f1"], "b": results["test_macro_f1"], "delta": 0.0}
    assert d["epochs"][0]["val_macro_f1"]["a"] is not None
