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


@pytest.mark.parametrize("spec, message", [
    ("my model={best}", "a model name (NAME=PATH)"),  # it said "checkpoint not found: my model=..."
    ("-x={best}", "a model name (NAME=PATH)"),
    ("<b>={best}", "a model name (NAME=PATH)"),
    ("digits=", "is empty"),  # digits=$CKPT with CKPT unset: not the current folder
])
def test_serve_name_path_refuses_a_bad_name_or_an_empty_path(spec, message, models, tmp_path):
    """Breaks tried: parse_checkpoint_spec's name check skipped (the model was served as 'my model', a name
    its URLs cannot carry); both empty checks (parse_checkpoint_spec's and resolve_checkpoint's) skipped
    (``digits=`` resolved to the current folder: "'.' is a folder, not a run directory"); one of them
    alone is held by the other."""
    from convtrain.errors import ConfigError
    from convtrain.serve.app import parse_checkpoint_spec

    best = models[0].partition("=")[2]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_checkpoint_spec(spec.format(best=best), runs_dir=tmp_path)
    assert parse_checkpoint_spec(f"my-model.v2={best}", runs_dir=tmp_path) == ("my-model.v2", Path(best))


@pytest.mark.parametrize("threads", [0, -1, "cores+1", 10**9])
def test_serve_threads_beyond_the_cpu_cores_is_refused_before_loading(threads, monkeypatch):
    """A huge --threads started that many threads and ran the machine out of process ids. Refused before any
    checkpoint is read (the checkpoint named does not exist). Break tried: the bound check removed: the
    server went on to load the missing checkpoint ("checkpoint not found")."""
    import os

    from convtrain.errors import ConfigError
    from convtrain.serve.server import run_server

    n = (os.cpu_count() or 1) + 1 if threads == "cores+1" else threads
    with pytest.raises(ConfigError, match="--threads"):
        run_server(["/nonexistent/best.pt"], port=0, threads=n)
