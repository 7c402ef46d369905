"""`convtrain serve`: the API in-process (FastAPI's TestClient), the command and a load test as real subprocesses."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..conftest import REPO, run_cli, wait_for_line

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():
    # starlette announces a successor to httpx for its TestClient; httpx is what is installed and works
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402

from convtrain.serve.app import Limits, create_app, load_models, parse_checkpoint_spec  # noqa: E402

# MNIST's test files are sorted by label: indices spread over the file give varied digits
DIGIT_INDICES = [3, 1100, 2100, 3300, 4200, 5100, 6100, 7300, 8200, 9400]
LIMITS = Limits(max_bytes=200_000, max_pixels=1_000_000, max_batch=4)


@pytest.fixture(scope="module")
def digit_pngs(data_root, tmp_path_factory) -> list[Path]:
    """Real MNIST test digits saved as 28x28 PNG files (name carries the label)."""
    from torchvision.datasets import MNIST

    test = MNIST(str(data_root), train=False, download=False)
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for i in DIGIT_INDICES:
        image, label = test[i]
        path = folder / f"digit_{i:05d}_label{label}.png"
        image.save(path)
        paths.append(path)
    assert len({p.name.split("label")[1] for p in paths}) >= 8, "pick indices that cover most labels"
    return paths


@pytest.fixture(scope="module")
def best(trained_run) -> Path:
    return trained_run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def runs_dir(trained_run, tmp_path_factory) -> Path:
    """A runs folder: a real run, a run of garbage files, and links that point outside it."""
    root = tmp_path_factory.mktemp("served-runs")
    runs = root / "runs"
    runs.mkdir()
    shutil.copytree(trained_run, runs / "good", ignore=shutil.ignore_patterns("*.pt"))
    garbage = runs / "garbage"
    garbage.mkdir()
    (garbage / "config.yaml").write_text("- not: [a mapping\n")
    (garbage / "metrics.csv").write_bytes(b"epoch,val_acc\n1,abc\n\xff\xfe,2,3,4\n")
    (garbage / "results.json").write_text('{"status": 3, "test_accuracy": "high"')
    outside = root / "outside"
    outside.mkdir()
    (outside / "curves.png").write_bytes(b"SECRET")
    (outside / "config.yaml").write_text("{}\n")
    (runs / "linked").symlink_to(outside, target_is_directory=True)
    (runs / "good" / "confusion.png").unlink()
    (runs / "good" / "confusion.png").symlink_to(outside / "curves.png")
    return runs


@pytest.fixture(scope="module")
def client(best, runs_dir):
    models = load_models([str(best), f"second={best}"])
    with TestClient(create_app(models, runs_dir, LIMITS)) as c:
        yield c


def cli_predictions(best: Path, paths: list[Path], top_k: int = 3) -> list[dict]:
    # the server computes on the CPU; so does this reference, on a machine with a GPU too
    result = run_cli("predict", "--checkpoint", str(best), "--json", "--top-k", str(top_k), "--device", "cpu",
                     *map(str, paths))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_same(api: dict, cli: dict) -> None:
    """/v2/predict and `predict --json` in the one vocabulary: label (the class name), index, prob, topk."""
    assert (api["label"], api["index"], api["prob"]) == (cli["label"], cli["index"], cli["prob"])
    assert [t["index"] for t in api["topk"]] == [t["index"] for t in cli["topk"]]
    assert [t["label"] for t in api["topk"]] == [t["label"] for t in cli["topk"]]
    for a, c in zip(api["topk"], cli["topk"]):
        assert a["prob"] == pytest.approx(c["prob"], abs=1e-6)


def png_bytes(width: int, height: int, value: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, "PNG")
    return buf.getvalue()


def noise_png(side: int = 280) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- predictions equal `convtrain predict --json`

@pytest.mark.slow
def test_upload_equals_cli_predict_json(client, best, digit_pngs):
    expected = cli_predictions(best, digit_pngs)
    for path, cli in zip(digit_pngs, expected):
        r = client.post("/v2/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "mnist-small"
        (api,) = body["predictions"]
        assert api["image"] == path.name
        assert_same(api, cli)
    # the trained model really reads these digits (so equality is not two copies of noise)
    right = sum(c["index"] == int(p.stem.split("label")[1]) for p, c in zip(digit_pngs, expected))
    assert right >= 9


@pytest.mark.slow
def test_json_batch_equals_cli_predict_json(client, best, digit_pngs):
    files = digit_pngs[:4]
    expected = cli_predictions(best, files, top_k=5)
    images = [base64.b64encode(p.read_bytes()).decode() for p in files]
    images[1] = "data:image/png;base64," + images[1]  # what a browser's canvas.toDataURL() gives
    r = client.post("/v2/predict", json={"images": images, "top_k": 5, "model": "second", "invert": "auto"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "second"
    assert [p["image"] for p in body["predictions"]] == [f"images[{i}]" for i in range(4)]
    for api, cli in zip(body["predictions"], expected):
        assert len(api["topk"]) == 5
        assert_same(api, cli)


def test_invert_field_is_applied(client, digit_pngs):
    """A digit forced through inversion (light background) must not keep its label with high confidence."""
    raw = digit_pngs[0].read_bytes()
    plain = client.post("/v1/predict", files={"file": ("d.png", raw)}, data={"invert": "no"}).json()
    inverted = client.post("/v1/predict", files={"file": ("d.png", raw)}, data={"invert": "yes"}).json()
    assert plain["predictions"][0]["topk"][0]["prob"] > 0.9
    assert inverted["predictions"][0]["topk"] != plain["predictions"][0]["topk"]


# ---------------------------------------------------------------- /v1/models, /healthz

def test_models_card(client, best, trained_run):
    from convtrain.artifacts import checkpoint

    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default"] == "mnist-small"
    first, second = body["models"]
    assert (first["name"], second["name"]) == ("mnist-small", "second")
    ckpt = checkpoint.load(best)
    params = sum(p.numel() for p in checkpoint.rebuild_model(ckpt).parameters())
    results = json.loads((trained_run / "results.json").read_text())
    assert first == {"name": "mnist-small", "checkpoint": "best.pt", "model": "article_cnn", "dataset": "mnist",
                     "classes": [str(i) for i in range(10)], "input_size": [28, 28], "channels": 1,
                     "parameters": params, "epoch": ckpt["epoch"], "test_accuracy": results["test_accuracy"],
                     "mnist_style": True, "calibrated": False, "temperature": 1.0}
    assert 0.9 < first["test_accuracy"] <= 1.0


def test_last_checkpoint_outside_a_run_has_no_accuracy(trained_run, tmp_path):
    loose = tmp_path / "digits.pt"
    shutil.copy(trained_run / "checkpoints" / "best.pt", loose)
    (m,) = load_models([str(loose)])
    assert m.name == "digits" and m.card["test_accuracy"] is None


def test_checkpoint_spec_names():
    assert parse_checkpoint_spec("runs/mnist-1/checkpoints/best.pt") == ("mnist-1", Path("runs/mnist-1/checkpoints/best.pt"))
    assert parse_checkpoint_spec("fashion=runs/f/checkpoints/last.pt") == ("fashion", Path("runs/f/checkpoints/last.pt"))
    assert parse_checkpoint_spec("model.pt") == ("model", Path("model.pt"))


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "models": ["mnist-small", "second"]}


# ---------------------------------------------------------------- bad requests: a 4xx JSON error, then still serving

def _bad_cases(digit: bytes) -> list[tuple[str, dict, int, str]]:
    b64 = base64.b64encode(digit).decode()
    noise = noise_png()
    return [
        ("not an image", {"files": {"file": ("notes.txt", b"hello, I am text")}}, 400,
         "notes.txt is not an image Pillow can read"),
        ("truncated image", {"files": {"file": ("cut.png", noise[: len(noise) // 2])}}, 400,
         "cannot decode image cut.png: image file is truncated"),
        ("too many bytes", {"files": {"file": ("big.png", b"\x89PNG" + bytes(250_000))}}, 413,
         "the limit is 200000 (--max-bytes)"),
        ("too many bytes, streamed without a length",
         {"content": (bytes(50_000) for _ in range(5)), "headers": {"content-type": "application/json"}}, 413,
         "the request is over 200000 bytes (--max-bytes)"),
        ("too many pixels", {"files": {"file": ("wide.png", png_bytes(1200, 1000))}}, 413,
         "wide.png is 1200x1000 = 1200000 pixels; the limit is 1000000 (--max-pixels)"),
        ("empty body", {"content": b"", "headers": {"content-type": "application/json"}}, 400,
         "the request body is empty"),
        ("empty file", {"files": {"file": ("zero.png", b"")}}, 400, "zero.png is empty (0 bytes)"),
        ("wrong multipart field", {"files": {"image": ("d.png", digit)}}, 400,
         "unknown multipart field 'image'; send the image as field 'file'"),
        ("no file in form", {"files": {"top_k": (None, "2")}}, 400, "multipart field 'file' is missing or is not a file"),
        ("url-encoded form", {"data": {"top_k": "2"}}, 400, "multipart field 'file' is missing"),
        ("wrong JSON field", {"json": {"imgs": [b64]}}, 400, "unknown field 'imgs' (did you mean 'images'?)"),
        ("JSON not an object", {"json": [b64]}, 400, "the JSON body must be an object"),
        ("invalid JSON", {"content": b"{images", "headers": {"content-type": "application/json"}}, 400,
         "the body is not valid JSON"),
        ("bad base64", {"json": {"images": [b64, "not base64!"]}}, 400, "images[1] is not valid base64"),
        ("base64 of a non-image", {"json": {"images": [base64.b64encode(b"plain words").decode()]}}, 400,
         "images[0] is not an image Pillow can read"),
        ("no images", {"json": {"images": []}}, 422, "images is empty"),
        ("unknown model", {"json": {"images": [b64], "model": "secnod"}}, 422,
         "unknown model 'secnod' (did you mean 'second'?)"),
        ("unknown model (upload)", {"files": {"file": ("d.png", digit)}, "data": {"model": "nope"}}, 422,
         "unknown model 'nope'"),
        ("top_k zero", {"json": {"images": [b64], "top_k": 0}}, 422,
         "top_k must be between 1 and 10 for model 'mnist-small', got 0"),
        ("top_k too big", {"files": {"file": ("d.png", digit)}, "data": {"top_k": "11"}}, 422,
         "top_k must be between 1 and 10 for model 'mnist-small', got 11"),
        ("top_k not a number", {"json": {"images": [b64], "top_k": "many"}}, 422, "top_k:"),
        ("bad invert", {"json": {"images": [b64], "invert": "maybe"}}, 422, "invert:"),
        ("too many images", {"json": {"images": [b64] * 5}}, 422, "5 images in one request; the limit is 4 (--max-batch)"),
        ("unsupported content type", {"content": digit, "headers": {"content-type": "image/png"}}, 415,
         "unsupported content type 'image/png'"),
    ]


def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(client, digit_pngs):
    digit = digit_pngs[0].read_bytes()
    for name, kwargs, status, message in _bad_cases(digit):
        r = client.post("/v1/predict", **kwargs)
        assert r.status_code == status, f"{name}: {r.status_code} {r.text}"
        assert set(r.json()) == {"error"}, name
        assert message in r.json()["error"], f"{name}: {r.json()['error']}"
        assert client.get("/healthz").status_code == 200, name
    good = client.post("/v1/predict", files={"file": ("d.png", digit)})
    assert good.status_code == 200


def test_unknown_route_and_wrong_method_are_json(client):
    r = client.get("/v9/predict")
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = client.get("/v1/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_openapi_documents_both_bodies(client):
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/v2/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert "images" in content["application/json"]["schema"]["properties"]
    assert {"/healthz", "/v1/models", "/v1/runs", "/v1/predict"} <= set(spec["paths"])
    assert spec["paths"]["/v1/predict"]["post"]["deprecated"] is True
    assert client.get("/docs").status_code == 200


# ---------------------------------------------------------------- pages and /runs

def test_pages_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="pad" width="280" height="280"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/runs").status_code == 200 and "runs.js" in client.get("/runs").text


def test_runs_lists_runs_and_survives_garbage_files(client, trained_run):
    r = client.get("/v1/runs")
    assert r.status_code == 200
    runs = {run["name"]: run for run in r.json()["runs"]}
    assert set(runs) == {"good", "garbage"}, "the symlink pointing outside the folder is not a run"
    results = json.loads((trained_run / "results.json").read_text())
    good = runs["good"]
    assert good["status"] == "finished" and good["test_accuracy"] == results["test_accuracy"]
    assert good["epochs"] == 1 and good["last_epoch"]["val_acc"] == pytest.approx(results["best_val_acc"], abs=1e-6)
    assert good["images"] == ["/runs/good/curves.png", "/runs/good/confusion.png"]
    garbage = runs["garbage"]
    # the status rule of `convtrain runs`: damaged files are "unreadable" (the page said "unfinished")
    assert garbage["status"] == "unreadable" and garbage["test_accuracy"] is None and garbage["images"] == []
    picture = client.get("/runs/good/curves.png")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == (trained_run / "curves.png").read_bytes()


def test_runs_page_and_runs_command_share_one_status_rule(best, trained_run, tmp_path):
    """finished, interrupted (killed: no results.json, no lock holder) and unreadable, as `convtrain runs` says."""
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "finished", ignore=shutil.ignore_patterns("*.pt"))
    shutil.copytree(trained_run, runs / "killed", ignore=shutil.ignore_patterns("*.pt"))
    (runs / "killed" / "results.json").unlink()
    (runs / "broken").mkdir()
    (runs / "broken" / "config.yaml").write_text("- not: [a mapping\n")
    listed = json.loads(run_cli("runs", str(runs), "--json").stdout)
    command = {r["name"]: r["status"] for r in listed}
    assert command == {"finished": "finished", "killed": "interrupted", "broken": "unreadable"}
    with TestClient(create_app(load_models([str(best)]), runs, LIMITS)) as c:
        page = c.get("/v1/runs").json()["runs"]
    assert {r["name"]: r["status"] for r in page} == command
    assert [r["name"] for r in page] == [r["name"] for r in listed]  # the same order too


@pytest.mark.parametrize("url", [
    "/runs/../outside/curves.png",
    "/runs/..%2Foutside/curves.png",
    "/runs/%2e%2e/curves.png",
    "/runs/linked/curves.png",  # a run folder that is a symlink to outside
    "/runs/good/confusion.png",  # a picture that is a symlink to outside
    "/runs/good/config.yaml",  # only the two pictures are served
    "/runs/good/..%2F..%2Foutside%2Fcurves.png",
    "/runs/%2Fetc/passwd",
    "/static/..%2F..%2Fserve.py",
])
def test_runs_pictures_refuse_path_traversal(client, url):
    r = client.get(url)
    assert r.status_code == 404, r.text
    assert b"SECRET" not in r.content and b"def create_app" not in r.content


# ---------------------------------------------------------------- the command, as a user runs it

def test_bad_checkpoint_is_one_line_before_binding(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli("serve", "--checkpoint", str(bad), "--port", "0", timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} is truncated or not a PyTorch checkpoint"), lines
    assert "serving on" not in result.stdout


@pytest.mark.slow
def test_port_in_use_is_one_line(best):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("serve", "--checkpoint", str(best), "--port", str(port), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "Traceback" not in result.stderr



# ---------------------------------------------------------------- a real server: start, serve, load

@contextmanager
def serve_process(*args: str, timeout: float = 300):
    """``convtrain serve ARGS --port 0`` in a subprocess; yields its base URL once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "convtrain", "serve", *args, "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no 'serving on' line after {timeout}s: {''.join(seen)}") from None
            seen.append(line)
            found = re.search(r"serving on (http://\S+?)/ ", line)
            if found:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"server did not start: {''.join(seen)}")
        yield found.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_load_500_requests_from_8_clients(best, digit_pngs):
    """A real server under 8 concurrent clients: no errors, every answer right, bounded time."""
    import httpx

    payloads = [(p.read_bytes(), int(p.stem.split("label")[1])) for p in digit_pngs]
    expected = {i: c["label"] for i, c in enumerate(cli_predictions(best, digit_pngs))}
    total, clients = 500, 8
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    with serve_process("--checkpoint", str(best)) as url:
        assert url.startswith("http://127.0.0.1:"), "without --host the server listens on localhost only"

        def worker(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for n in range(offset, total, clients):
                    raw, _ = payloads[n % len(payloads)]
                    t0 = time.perf_counter()
                    try:
                        r = http.post("/v2/predict", files={"file": ("d.png", raw, "image/png")})
                        ok = r.status_code == 200 and r.json()["predictions"][0]["label"] == expected[n % len(payloads)]
                        problem = None if ok else f"{r.status_code} {r.text[:200]}"
                    except httpx.HTTPError as exc:
                        problem = repr(exc)
                    with lock:
                        latencies.append(time.perf_counter() - t0)
                        if problem:
                            failures.append(problem)

        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(1.0, 240 - (time.perf_counter() - start)))  # the hard limit for the whole test
        elapsed = time.perf_counter() - start
        assert not any(t.is_alive() for t in threads), f"load test did not finish in 240 s ({len(latencies)} done)"
        assert httpx.get(url + "/healthz").status_code == 200
    assert failures == []
    assert len(latencies) == total
    latencies.sort()
    p50, p99 = latencies[total // 2], latencies[int(total * 0.99) - 1]
    print(f"\nload: {total} requests, {clients} clients: {total / elapsed:.0f} req/s, "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, {elapsed:.1f} s")


@pytest.mark.slow
def test_ctrl_c_stops_the_server_with_130(best):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "convtrain", "serve", "--checkpoint", str(best), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(proc, "serving on", "the server to listen")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "interrupted"
