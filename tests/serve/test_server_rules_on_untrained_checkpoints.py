"""The server's rules that a broken feature would break, on untrained checkpoints and copied run folders
(fast: no training, no process). Issue 32's audit planted each break below unnoticed by the server tests.

Breaks tried (each failed here, then restored):
- ``predict_uploads`` skipping the model's invert rule (``invert`` passed on as given): the CSV model's
  ``auto`` inverted the paper-like digit (test_invert_auto_follows_each_models_data);
- ``list_runs`` without its URL-safe name check: ``/v1/runs`` listed ``<b>x</b>`` and ``a b``
  (test_v1_runs_lists_only_url_safe_names);
- ``sweep_summary`` reading summary.json's test_set without checking its shape: a hand-edited summary.json
  answered ``/v1/runs`` with a 500 (test_a_summary_json_of_another_shape_is_no_500; it failed before issue 32).
"""

from __future__ import annotations

import base64
import json
import shutil
import warnings
from pathlib import Path

import pytest

from ..conftest import REPO
from ..inference.test_rules_on_untrained_checkpoints import LETTERS, dark_on_light, untrained

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from convtrain.serve.app import create_app, load_models  # noqa: E402

OLD_RUN = REPO / "tests" / "fixtures" / "run-52beffa"  # a real (old) run directory: config, metrics, results


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("served")
    digits = untrained(root / "digits.pt", dataset="mnist", classes=[str(i) for i in range(10)], mean=(0.1307,),
                       std=(0.3081,))
    letters = untrained(root / "letters.pt", dataset="csv", classes=LETTERS)
    return [f"digits={digits}", f"letters={letters}"]


def _client(models: list[str], runs: Path) -> TestClient:
    return TestClient(create_app(load_models(models), runs))


def test_invert_auto_follows_each_models_data(models, tmp_path):
    image = base64.b64encode(dark_on_light(tmp_path / "paper.png").read_bytes()).decode()
    with _client(models, tmp_path / "runs") as client:
        for model, auto_is in (("digits", "yes"), ("letters", "no")):
            topk = {}
            for how in ("auto", "yes", "no"):
                r = client.post("/v1/predict", json={"images": [image], "model": model, "invert": how, "top_k": 3})
                assert r.status_code == 200, r.text
                topk[how] = r.json()["predictions"][0]["topk"]
            assert topk["yes"] != topk["no"], model  # inverting changes the answer: the test means something
            assert topk["auto"] == topk[auto_is], model


def test_v1_runs_lists_only_url_safe_names(models, tmp_path):
    runs = tmp_path / "runs"
    for name in ("good", "<b>x</b>", "a b", "ünï"):
        shutil.copytree(OLD_RUN, runs / name, ignore=shutil.ignore_patterns("*.pt"))
    with _client(models, runs) as client:
        listed = client.get("/v1/runs").json()["runs"]
    assert [r["name"] for r in listed] == ["good"]


def test_a_summary_json_of_another_shape_is_no_500(models, tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        shutil.copytree(OLD_RUN, runs / "sweep" / f"seed-{seed}", ignore=shutil.ignore_patterns("*.pt"))
    with _client(models, runs) as client:
        for summary in ({"test_set": [1, 2]}, {"test_set": {"same_for_all_seeds": "yes"}}, [1, 2], "text"):
            (runs / "sweep" / "summary.json").write_text(json.dumps(summary))
            r = client.get("/v1/runs")
            assert r.status_code == 200, r.text
            card = next(c for c in r.json()["runs"] if c["name"] == "sweep")
            assert card["same_test_set"] is None and card["seeds"] == [0, 1]
        (runs / "sweep" / "summary.json").write_text(json.dumps({"test_set": {"same_for_all_seeds": True}}))
        card = next(c for c in client.get("/v1/runs").json()["runs"] if c["name"] == "sweep")
        assert card["same_test_set"] is True
