"""Issue 31 item 1: /v1/runs and the /runs page list a tune study, a --seeds sweep, a damaged run and a
running one exactly as `convtrain runs` does, and every server error is JSON.

Breaks tried: serve/app.py's list_runs sending a study to sweep_summary again (KeyError 'seeds': 500 in
plain text before, the API test fails); the catch-all exception handler removed (the forced bug answers
plain text and test_an_unexpected_error_is_json fails); runs.js without studyCard (the browser test finds
no study card) and without the res.ok check (the page shows "SyntaxError"/undefined instead of the error).
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from convtrain.artifacts import runlock
from convtrain.cli.app import app

from .test_server_api import LIMITS, TestClient, create_app, load_models, serve_process


def runs_of_every_kind(trained_run, root):
    """A runs folder with a finished run, a --seeds sweep, a tune study (a finished and a pruned trial),
    a damaged run and a running one (its lock held by the returned RunLock: release it)."""
    runs = root / "runs"
    copy = lambda dest: shutil.copytree(trained_run, dest, ignore=shutil.ignore_patterns("*.pt"))  # noqa: E731
    copy(runs / "digits")
    for seed in (0, 1):
        copy(runs / "sweep" / f"seed-{seed}")
    (runs / "sweep" / "summary.json").write_text(json.dumps({"test_set": {"same_for_all_seeds": True}}))
    study = runs / "study"
    copy(study / "trial-000")
    copy(study / "trial-001")
    results = json.loads((study / "trial-001" / "results.json").read_text())
    (study / "trial-001" / "results.json").write_text(json.dumps({**results, "status": "pruned"}))
    (study / "study.json").write_text(json.dumps({"kind": "convtrain-study", "study": "study", "metric": "val_acc",
                                                  "direction": "maximize", "trials": 2, "epochs": 1}))
    (runs / "broken").mkdir()
    (runs / "broken" / "config.yaml").write_text("- not: [a mapping\n")
    copy(runs / "live")
    (runs / "live" / "results.json").unlink()
    lock = runlock.RunLock(runs / "live")
    lock.acquire()
    return runs, lock


@pytest.fixture
def every_kind(trained_run, tmp_path):
    runs, lock = runs_of_every_kind(trained_run, tmp_path)
    try:
        yield runs
    finally:
        lock.release()


def test_the_api_lists_every_kind_as_the_runs_command_does(trained_run, every_kind):
    listed = json.loads(CliRunner().invoke(app, ["runs", str(every_kind), "--json"]).stdout)
    best = trained_run / "checkpoints" / "best.pt"
    with TestClient(create_app(load_models([str(best)]), every_kind, LIMITS)) as c:
        r = c.get("/v1/runs")
    assert r.status_code == 200, r.text
    page = r.json()["runs"]
    assert [(p["name"], p["kind"], p["status"]) for p in page] == [(x["name"], x["kind"], x["status"]) for x in listed]
    kinds = {p["name"]: p for p in page}
    assert {k: kinds[k]["status"] for k in ("digits", "broken", "live")} == \
        {"digits": "finished", "broken": "unreadable", "live": "running"}
    study = kinds["study"]
    assert study["kind"] == "study" and study["trials_count"] == {"done": 1, "pruned": 1, "failed": 0, "running": 0}
    assert [t["name"] for t in study["trials"]] == ["trial-000", "trial-001"]
    assert [t["status"] for t in study["trials"]] == ["finished", "pruned"]
    assert kinds["sweep"]["seeds"] == [0, 1] and "error" in kinds["broken"]


def test_an_unexpected_error_is_json(trained_run, every_kind, monkeypatch):
    """A bug behind an endpoint (here: the listing raising) answers 500 with {"error": ...}, not plain text."""
    from convtrain.serve import app as app_module

    def broken(_):
        raise KeyError("seeds")

    best = trained_run / "checkpoints" / "best.pt"
    monkeypatch.setattr(app_module, "list_runs", broken)
    with TestClient(create_app(load_models([str(best)]), every_kind, LIMITS), raise_server_exceptions=False) as c:
        r = c.get("/v1/runs")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "internal error (KeyError)" in r.json()["error"]


@pytest.mark.slow
def test_the_runs_page_shows_every_kind_in_a_browser(trained_run, every_kind):
    sync_api = pytest.importorskip("playwright.sync_api")
    from .test_draw_page_browser import _chromium

    best = trained_run / "checkpoints" / "best.pt"
    with serve_process("--checkpoint", str(best), "--runs-dir", str(every_kind)) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 3000})
            page.goto(url + "/runs")
            page.wait_for_selector("section[aria-label='study study']")
            text = page.text_content("#runs")
            assert "Cannot list" not in text
            study = page.text_content("section[aria-label='study study']")
            assert "study of 2 trials" in study and "1 done, 1 pruned, 0 failed" in study and "trial-001" in study
            assert "sweep: 2 seeds" in page.text_content("section[aria-label='sweep sweep']")
            assert "running" in page.text_content("section[aria-label='run live']")
            broken = page.text_content("section[aria-label='run broken']")
            assert "unreadable" in broken and "config.yaml" in broken
            assert "finished" in page.text_content("section[aria-label='run digits']")
        finally:
            browser.close()
