"""The drawing page in a real headless Chromium (Playwright): draw a 1 and a 0, read the bars."""

from __future__ import annotations

import math
import os
import shutil

import pytest

from ..conftest import REPO
from .test_server_api import serve_process

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api")

SCREENSHOT = REPO / "docs" / "img" / "serve.png"
# Chromium's start and each page wait, as long as a busy 2-core machine needs (Playwright's default is 30 s);
# a wait that runs out names the selector or function it waited for
BROWSER_WAIT_MS = 180_000


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _stroke(page, box, points) -> None:
    """Press, move through ``points`` (canvas pixels, 280x280) and release, like a hand with a mouse."""
    sx, sy = box["width"] / 280, box["height"] / 280
    xy = [(box["x"] + x * sx, box["y"] + y * sy) for x, y in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y)
    page.mouse.up()


def _answer(page) -> tuple[str, list[tuple[str, float]]]:
    page.wait_for_function("document.body.dataset.state === 'idle' && document.querySelectorAll('#bars li').length > 0",
                           timeout=BROWSER_WAIT_MS)
    bars = page.eval_on_selector_all("#bars li", "els => els.map(e => [e.dataset.name, Number(e.dataset.prob)])")
    return page.text_content("#top"), [(n, p) for n, p in bars]


def test_draw_a_one_and_a_zero(trained_run, data_root, tmp_path):
    best = trained_run / "checkpoints" / "best.pt"
    with serve_process("--checkpoint", str(best), "--runs-dir", str(trained_run.parent)) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"], timeout=BROWSER_WAIT_MS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 620})
            page.set_default_timeout(BROWSER_WAIT_MS)
            page.goto(url + "/")
            page.wait_for_selector("#model option", state="attached")
            assert page.input_value("#model") == trained_run.name
            assert "mnist" in page.text_content("#card")
            box = page.locator("#pad").bounding_box()

            # a "1": one vertical stroke through the middle, MNIST-thick
            _stroke(page, box, [(140, 50 + 6 * i) for i in range(31)])
            top, bars = _answer(page)
            page.screenshot(path=str(tmp_path / "one.png"))
            assert top == "1", bars
            assert bars[0][0] == "1" and bars[0][1] > 0.5, bars

            page.click("#clear")
            assert page.text_content("#top") == "-"
            # a "0": an upright ellipse, closed
            ellipse = [(140 + 60 * math.sin(t), 140 - 85 * math.cos(t))
                       for t in (2 * math.pi * i / 48 for i in range(50))]
            _stroke(page, box, ellipse)
            top, bars = _answer(page)
            page.screenshot(path=str(tmp_path / "zero.png"))
            assert top == "0", bars
            assert bars[0][0] == "0" and bars[0][1] > 0.5, bars
            if os.environ.get("CONVTRAIN_UPDATE_SCREENSHOT"):  # refresh docs/img/serve.png (README, docs/serving.md) on request only
                shutil.copy(tmp_path / "zero.png", SCREENSHOT)

            # an uploaded file is sent as it is: a real MNIST test "4", predicted as by `convtrain predict`
            from torchvision.datasets import MNIST

            image, label = MNIST(str(data_root), train=False, download=False)[5100]
            image.save(tmp_path / "four.png")
            page.set_input_files("#upload", str(tmp_path / "four.png"))
            top, bars = _answer(page)
            assert (top, label) == ("4", 4), bars

            # a phone: the page fits 375 px without sideways scrolling and the canvas shrinks with it
            phone = browser.new_page(viewport={"width": 375, "height": 740})
            phone.set_default_timeout(BROWSER_WAIT_MS)
            phone.goto(url + "/")
            phone.wait_for_selector("#model option", state="attached")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 375
            assert phone.locator("#pad").bounding_box()["width"] <= 375

            # the runs page shows the run with its pictures loaded
            page.set_viewport_size({"width": 900, "height": 3000})  # the pictures load lazily: show them all
            page.goto(url + "/runs")
            page.wait_for_selector(f"section[aria-label='run {trained_run.name}'] img")
            page.wait_for_function("[...document.querySelectorAll('section.run img')]"
                                   ".every(e => e.complete && e.naturalWidth > 0)", timeout=BROWSER_WAIT_MS)
            assert page.eval_on_selector_all("section.run img", "els => els.length") == 2
        finally:
            browser.close()


MARKUP_CLASSES = ["<img src=x onerror=alert(1)>", "<b>bold"]  # folder names: valid, and HTML if parsed as such
MARKUP_RUN = "<svg onload=alert(2)>"
MARKUP_RUNS_DIR = "<i>runs"


def test_markup_in_class_and_run_names_is_shown_as_text(data_root, tmp_path):
    """A folder-data run whose class names and run folder name are markup, served with a --runs-dir whose
    name is markup: the draw page and /runs show them as literal text, no element is made from them and
    no script of theirs runs. (/runs lists only runs with plain names, so the runs folder's name is the
    user text it shows: "No runs under '...'".)"""
    from ..conftest import run_cli
    from ..data.test_own_data import _idx, sample, write_folder

    raw = data_root / "MNIST" / "raw"
    mnist = _idx(raw / "train-images-idx3-ubyte"), _idx(raw / "train-labels-idx1-ubyte")
    write_folder(tmp_path / "f", [(x, y % 2) for x, y in sample(mnist, 60)], names=MARKUP_CLASSES)
    run = tmp_path / "runs" / MARKUP_RUN
    r = run_cli("train", "--data", str(tmp_path / "f"), "--set", "train.epochs=1", "--set", "data.val_size=10",
                "--set", "data.test_size=10", "--device", "cpu", "--run-dir", str(run),
                env={"CONVTRAIN_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr + r.stdout
    runs_dir = tmp_path / MARKUP_RUNS_DIR
    runs_dir.mkdir()
    with serve_process("--checkpoint", str(run / "checkpoints" / "best.pt"), "--runs-dir", str(runs_dir)) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"], timeout=BROWSER_WAIT_MS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1200})
            page.set_default_timeout(BROWSER_WAIT_MS)
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url + "/")
            page.wait_for_selector("#model option", state="attached")
            image, _ = sample(mnist, 1, seed=3)[0]
            from PIL import Image
            Image.fromarray(image).save(tmp_path / "digit.png")
            page.set_input_files("#upload", str(tmp_path / "digit.png"))
            top, bars = _answer(page)
            assert top in MARKUP_CLASSES and sorted(n for n, _ in bars) == sorted(MARKUP_CLASSES), (top, bars)
            shown = page.text_content("#bars")
            assert all(name in shown for name in MARKUP_CLASSES), shown
            made = page.evaluate("document.querySelectorAll('#bars b, #bars img, #top b, #top img, #card b, "
                                 "#card img, #model b, #model img').length")
            assert made == 0

            page.goto(url + "/runs")
            page.wait_for_function("!document.querySelector('#runs').textContent.includes('Loading')")
            assert f"{MARKUP_RUNS_DIR}'" in page.text_content("#runs")
            assert page.evaluate("document.querySelectorAll('#runs i, #runs svg, #runs img').length") == 0
            page.wait_for_timeout(200)  # an onerror/onload handler, had one been made, fires within this
            assert dialogs == []
        finally:
            browser.close()
