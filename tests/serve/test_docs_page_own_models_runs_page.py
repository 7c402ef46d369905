"""Issue #22, serve finished: /docs offline (Swagger UI from a package, no CDN), no auto-inversion for a
model of the user's own pictures, the draw page's wording follows the model, and the runs page shows
human labels, full-size pictures and a --seeds sweep as one card (the browser test runs with every
request off the server blocked)."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import torch

from convtrain.artifacts import checkpoint
from convtrain.config.schema import RunConfig, to_dict
from convtrain.models import create_model

from .test_server_api import LIMITS, TestClient, create_app, load_models, serve_process
from .test_draw_page_browser import BROWSER_WAIT_MS, _chromium


def own_checkpoint(path, classes=("cat", "dog", "owl"), dataset="folder"):
    """An untrained lenet5 (grayscale 28x28) of ``dataset``: enough to see what the server does to images."""
    torch.manual_seed(0)
    ckpt = checkpoint.build(create_model("lenet5", num_classes=len(classes)), model_name="lenet5", model_kwargs={},
                            classes=list(classes), in_channels=1, input_size=(28, 28), mean=[0.5], std=[0.25],
                            dataset=dataset, config=to_dict(RunConfig()), epoch=1, metrics={})
    checkpoint.save(ckpt, path)
    return path


def paper_png() -> bytes:
    """Dark ink on light paper: what invert=auto turns around for an MNIST model."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (56, 56), 235)
    ImageDraw.Draw(im).ellipse((14, 8, 42, 48), outline=20, width=5)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_no_auto_inversion_for_a_model_of_own_pictures_and_docs_assets_are_local(tmp_path):
    own = own_checkpoint(tmp_path / "own.pt")
    digits = own_checkpoint(tmp_path / "digits.pt", [str(i) for i in range(10)], "mnist")
    with TestClient(create_app(load_models([f"own={own}", f"digits={digits}"]), tmp_path, LIMITS)) as c:
        cards = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert (cards["own"]["mnist_style"], cards["digits"]["mnist_style"]) == (False, True)
        probs = {}
        for model in ("own", "digits"):
            for invert in ("auto", "no", "yes"):
                r = c.post("/v1/predict", files={"file": ("p.png", paper_png())},
                           data={"invert": invert, "model": model, "top_k": "3"})
                assert r.status_code == 200, r.text
                probs[model, invert] = r.json()["predictions"][0]["topk"]
        assert probs["own", "auto"] == probs["own", "no"] != probs["own", "yes"]  # taken as it is
        assert probs["digits", "auto"] == probs["digits", "yes"] != probs["digits", "no"]  # MNIST-style: inverted
        page = c.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page and "https://" not in page
        js = c.get("/docs-assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000


def _runs_folder(trained_run, root):
    runs = root / "runs"
    shutil.copytree(trained_run, runs / "digits", ignore=shutil.ignore_patterns("*.pt"))
    for seed in (0, 1):  # a --seeds folder: no config.yaml of its own
        shutil.copytree(trained_run, runs / "sweep" / f"seed-{seed}", ignore=shutil.ignore_patterns("*.pt"))
    (runs / "sweep" / "summary.json").write_text(json.dumps({"test_set": {"same_for_all_seeds": True}}))
    return runs


@pytest.mark.slow
def test_docs_offline_wording_and_runs_page_in_a_browser_with_the_network_blocked(trained_run, tmp_path):
    best = trained_run / "checkpoints" / "best.pt"
    sync_api = pytest.importorskip("playwright.sync_api")
    runs = _runs_folder(trained_run, tmp_path)
    own = own_checkpoint(tmp_path / "own.pt")
    with serve_process("--checkpoint", f"own={own}", "--checkpoint", f"digits={best}", "--runs-dir", str(runs)) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"], timeout=BROWSER_WAIT_MS)
        blocked = []
        try:
            context = browser.new_context(viewport={"width": 900, "height": 3000})
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                          else (blocked.append(route.request.url), route.abort()))
            page = context.new_page()
            page.set_default_timeout(BROWSER_WAIT_MS)
            page.goto(url + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=BROWSER_WAIT_MS)
            paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
            assert {"/v2/predict", "/v1/models", "/v1/runs", "/healthz"} <= {x.replace("\u200b", "") for x in paths}

            page.goto(url + "/")
            page.wait_for_selector("#model option", state="attached")
            assert page.text_content("#draw-title") == "Draw one of: cat, dog, owl"
            assert "taken as it is" in page.text_content("#hint")
            page.select_option("#model", "digits")
            assert page.text_content("#draw-title") == "Draw a digit" and "like MNIST" in page.text_content("#hint")

            page.goto(url + "/runs")
            page.wait_for_selector("section[aria-label='sweep sweep']")
            sweep = page.text_content("section[aria-label='sweep sweep']")
            assert "sweep: 2 seeds" in sweep and "mean test accuracy" in sweep and "seed-1" in sweep
            card = page.text_content("section[aria-label='run digits']")
            for label in ("best validation accuracy", "test accuracy", "epochs", "1 of 1", "training time", "finished"):
                assert label in card
            assert "val_seconds" not in page.content()
            links = page.eval_on_selector_all("section[aria-label='run digits'] a:has(img)", "els => els.map(e => e.href)")
            assert sorted(x.rsplit("/", 1)[1] for x in links) == ["confusion.png", "curves.png"]
            assert page.evaluate("document.querySelector('section.run img').getBoundingClientRect().width") >= 300
        finally:
            browser.close()
    assert blocked == []  # nothing was fetched from outside the server
