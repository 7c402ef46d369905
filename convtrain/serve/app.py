"""``convtrain serve``: a JSON prediction API and a page to draw a digit, over one or more checkpoints.

The app is built by :func:`create_app` (tests build it in-process); :func:`run_server` loads the
checkpoints, binds the socket itself (so a bad checkpoint or a busy port is one clear line before
anything listens) and hands both to uvicorn. Predictions use exactly the preprocessing of
``convtrain predict``, so the API and the CLI agree on every file.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (``request: Request``)
# at runtime, and Request is imported lazily inside create_app, out of reach of string annotations.

import base64
import binascii
import io
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..artifacts import listing, runfiles
from ..data.images import INVERT_CHOICES
from ..errors import ConfigError, ConvtrainError, DataError, did_you_mean
from ..inference.predict import Predictor

STATIC = Path(__file__).parent / "static"
RUN_IMAGES = ("curves.png", "confusion.png")
REPORT_PAGE = "report/report.html"  # eval --report's self-contained page (images inline)
# the report page is our own file, but it lies in a folder anyone may write to: it may show pictures
# (inline data: URLs) and its own styles, and nothing else, whatever markup it holds
REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,")




@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; everything beyond is a 4xx answer, never a crash."""

    max_bytes: int = 10 * 1024 * 1024  # a whole request body (one upload, or a JSON batch in base64)
    max_pixels: int = 4096 * 4096  # one decoded image: checked from the header, before decoding (bombs)
    max_batch: int = 64  # images in one JSON request


@dataclass
class ServedModel:
    """One checkpoint's :class:`~convtrain.inference.predict.Predictor` (on the CPU), shared read-only by
    every request thread, and its card."""

    name: str
    predictor: Predictor
    card: dict = field(default_factory=dict)  # what GET /v1/models shows

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes


class ApiError(Exception):
    """A request the server refuses: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- loading checkpoints

def parse_checkpoint_spec(spec: str, runs_dir: str | Path = "runs") -> tuple[str, Path]:
    """``name=path`` or a plain path; a plain path is named after its run directory or its file stem.
    A path is a .pt file, a run directory (its best.pt) or ``latest`` (artifacts/checkpoint_args.py)."""
    from ..artifacts.checkpoint_args import check_given, resolve_checkpoint

    name, sep, rest = spec.partition("=")
    if sep and not Path(spec).exists() and "/" not in name:
        if not _NAME.match(name):  # `my model=runs/x` said "checkpoint not found: my model=runs/x"
            raise ConfigError(f"--checkpoint {spec!r}: a model name (NAME=PATH) holds letters, digits, '_', '.' "
                              f"and '-', starting with a letter or digit; got {name!r}")
        check_given(rest, f"--checkpoint {name}=")
        return name, resolve_checkpoint(rest, runs_dir=runs_dir)
    path = resolve_checkpoint(spec, runs_dir=runs_dir)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return path.parent.parent.name, path
    return path.stem or "model", path


def _results_accuracy(path: Path, epoch: int) -> Optional[float]:
    """Test accuracy from the run's results.json, when the checkpoint sits in a run and is the tested one."""
    if path.resolve().parent.name != "checkpoints":
        return None
    results = _results(path.resolve().parent.parent)
    # results.json tests best.pt; another checkpoint of the run (last.pt, a later epoch) was not tested
    return results.test_accuracy if results is not None and results.best_epoch == epoch else None


def load_model(name: str, path: Path) -> ServedModel:
    """The checkpoint at ``path`` as the predictor ``convtrain predict`` uses, on the CPU, with its card."""
    predictor = Predictor.open(path, "cpu")
    loaded = predictor.loaded
    card = {
        "name": name,
        "checkpoint": path.name,
        "model": loaded.model_name,
        "dataset": loaded.dataset,
        "classes": list(loaded.classes),
        "input_size": list(loaded.image_shape[1:]),
        "channels": loaded.image_shape[0],
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "epoch": loaded.epoch,
        "test_accuracy": _results_accuracy(path, loaded.epoch),
        # light ink on dark, like MNIST: only then does invert=auto turn dark-on-light pictures around
        "mnist_style": predictor.mnist_style,
        # convtrain calibrate: probabilities are softmax(logits / temperature); 1.0 when never calibrated
        "calibrated": loaded.temperature != 1.0,
        "temperature": loaded.temperature,
    }
    return ServedModel(name=name, predictor=predictor, card=card)


def load_models(specs: list[str], runs_dir: str | Path = "runs") -> list[ServedModel]:
    """Every ``--checkpoint`` loaded up front, so a bad one stops the server before it listens."""
    if not specs:
        raise ConfigError("give at least one --checkpoint (a .pt file, or NAME=PATH)")
    named = [parse_checkpoint_spec(s, runs_dir) for s in specs]
    seen: set[str] = set()
    for name, _ in named:
        if name in seen:
            raise ConfigError(f"two checkpoints are named '{name}'; name them with --checkpoint NAME=PATH")
        seen.add(name)
    return [load_model(name, path) for name, path in named]


# ---------------------------------------------------------------- predictions

def _check_image(raw: bytes, name: str, limits: Limits) -> None:
    """Refuse non-images and too many pixels from the header alone, before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not raw:
        raise ApiError(400, f"{name} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{name} has too many pixels; the limit is {limits.max_pixels} (--max-pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(400, f"{name} is not an image Pillow can read (send PNG, JPEG, BMP, GIF or WebP)") from None
    if w * h > limits.max_pixels:
        raise ApiError(413, f"{name} is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels} (--max-pixels)")


def predict_uploads(m: ServedModel, images: list[tuple[str, bytes]], top_k: int, invert: str,
                    limits: Limits, version: int = 2) -> list[dict]:
    """Top-k classes for each (name, encoded bytes) image, through the same
    :class:`~convtrain.inference.predict.Predictor` as ``convtrain predict``; each result names its image.
    ``version`` 2: the one vocabulary (``label`` the class name, ``index``, ``prob``, ``topk``), as
    ``predict --json``; 1: ``/v1/predict``'s answer (``label`` the class number, ``name``), kept for one release."""
    invert = m.predictor.invert_rule(invert)  # the rule convtrain predict follows
    tensors = []
    for name, raw in images:
        _check_image(raw, name, limits)
        try:
            tensors.append(m.predictor.prepare(raw, invert, name))
        except DataError as exc:  # truncated or corrupt pixel data behind a valid header
            raise ApiError(400, str(exc)) from None
    found = m.predictor.classify(tensors, [name for name, _ in images], top_k)
    if version == 1:
        return [p.as_v1_json() for p in found]
    return [{"image": p.image, **{k: v for k, v in p.as_json().items() if k not in ("path", "row")}} for p in found]


# ---------------------------------------------------------------- runs page

def _results(run: Path) -> Optional[runfiles.Results]:
    """The run's results.json through the one typed reader; a missing or damaged file is None."""
    try:
        return runfiles.read_results(run)
    except ConvtrainError:
        return None


def _metrics(run: Path) -> list:
    """The run's metrics.csv rows through the one typed reader; a damaged file gives none."""
    try:
        return runfiles.read_metrics(run)
    except ConvtrainError:
        return []


def sweep_summary(listed: dict) -> dict:
    """A ``--seeds`` folder as one card: the mean over its seeds and each seed's numbers."""
    return {"name": listed["name"], "kind": "sweep", "status": listed["status"], "seeds": listed["seeds"],
            "epochs": listed["epochs"], "epochs_total": listed["epochs_total"], "best_val_acc": listed["best_val_acc"],
            "test_accuracy": listed["test_acc"], "test_accuracy_std": listed["test_acc_std"],
            "train_seconds": listed["seconds"], "model": listed["model"], "dataset": listed["dataset"],
            "same_test_set": _same_test_set(listed.get("summary")),
            "runs": [{"name": r["name"], "status": r["status"], "test_accuracy": r["test_acc"],
                      "best_val_acc": r["best_val_acc"]} for r in listed["runs"]],
            "images": [], "modified": listed["created"]}


def _same_test_set(summary) -> Optional[bool]:
    """summary.json's test_set.same_for_all_seeds, or None when the file is missing or of another shape
    (a hand-edited summary.json whose test_set was a list answered /v1/runs with a 500)."""
    test_set = summary.get("test_set") if isinstance(summary, dict) else None
    same = test_set.get("same_for_all_seeds") if isinstance(test_set, dict) else None
    return same if isinstance(same, bool) else None


def study_summary(listed: dict) -> dict:
    """A ``convtrain tune`` folder as one card: its trials' counts (as ``convtrain runs`` counts them), the best
    value of its metric, and each trial's numbers."""
    return {"name": listed["name"], "kind": "study", "status": listed["status"], "metric": listed["metric"],
            "best_value": listed["best_value"], "best_val_acc": listed["best_val_acc"],
            "trials_count": listed["trials_count"], "epochs": listed["epochs"], "train_seconds": listed["seconds"],
            "model": listed["model"], "dataset": listed["dataset"],
            "trials": [{"name": t["name"], "status": t["status"], "epochs": t["epochs"],
                        "epochs_total": t["epochs_total"], "best_val_acc": t["best_val_acc"],
                        "test_accuracy": t["test_acc"], "train_seconds": t["seconds"],
                        **({"error": t["error"]} if t.get("error") else {})} for t in listed["trials"]],
            "images": [], "modified": listed["created"]}


_CARDS = {"sweep": sweep_summary, "study": study_summary}


def run_summary(run: Path, listed: dict) -> dict:
    """What the runs page shows for one run directory: ``listed`` is its row of
    :func:`convtrain.artifacts.listing.list_runs` (the one status rule), plus the page's own fields."""
    results, rows = _results(run), _metrics(run)
    return {
        "name": run.name,
        "kind": "run",
        "status": listed["status"],
        "model": listed["model"],
        "dataset": listed["dataset"],
        "epochs_total": listed["epochs_total"],
        "train_seconds": listed["seconds"],
        "epochs": len(rows) if (run / "metrics.csv").is_file() else None,
        "best_val_acc": results.best_val_acc if results is not None else None,
        "test_accuracy": results.test_accuracy if results is not None else None,
        "test_loss": results.test_loss if results is not None else None,
        "test_macro_f1": results.test_macro_f1 if results is not None else None,
        "test_balanced_accuracy": results.test_balanced_accuracy if results is not None else None,
        # `convtrain eval --report` wrote RUN/report/: the page links its report.html
        "report": f"/runs/{run.name}/{REPORT_PAGE}" if (run / REPORT_PAGE).is_file() else None,
        "last_epoch": {k: v for k, v in rows[-1].as_dict().items() if v is not None} if rows else {},
        "images": [f"/runs/{run.name}/{img}" for img in RUN_IMAGES if (run / img).is_file()],
        "modified": listed["created"],
        **({"error": listed["error"]} if listed.get("error") else {}),
    }


def list_runs(runs_dir: Path) -> list[dict]:
    """The runs ``convtrain runs`` lists under ``runs_dir``, newest first, that the page can link to."""
    if not runs_dir.is_dir():
        return []
    found = []
    root = runs_dir.resolve()
    for listed in listing.list_runs(runs_dir):
        run = Path(listed["path"])
        # a symlink out of the folder is not one of its runs (its pictures would be refused anyway)
        if run.resolve().parent != root or not _NAME.match(run.name):
            continue
        try:
            card = _CARDS.get(listed["kind"])
            found.append(card(listed) if card is not None else run_summary(run, listed))
        except OSError:
            continue  # removed while we looked
    return found


def run_image(runs_dir: Path, run: str, name: str) -> Path:
    """The file behind /runs/RUN/NAME: only curves.png, confusion.png or report/report.html inside a run under
    runs_dir."""
    root = runs_dir.resolve()
    missing = ApiError(404, f"no image {run}/{name} under the runs folder")
    if name not in (*RUN_IMAGES, REPORT_PAGE) or not _NAME.match(run):
        raise missing
    folder = (root / run).resolve()
    path = (folder / name).resolve()
    # resolve() follows symlinks: a link pointing outside the runs folder is refused like '..'
    if folder.parent != root or path.parent != (folder / name).parent or not path.is_file():
        raise missing
    return path


# ---------------------------------------------------------------- the app

def _request_models():
    """The JSON body of POST /v1/predict, as a pydantic model (FastAPI documents it at /docs)."""
    from pydantic import BaseModel, ConfigDict, Field

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        images: list[str] = Field(..., description="Images as base64 (PNG, JPEG, ...); data: URLs are accepted.")
        top_k: int = Field(3, description="How many classes to return per image (1 to the number of classes).")
        model: Optional[str] = Field(None, description="A name from GET /v1/models; default: the first checkpoint.")
        invert: Literal["auto", "yes", "no"] = Field(
            "auto", description="auto: for a model of MNIST-style data (light ink on dark), an image with a light "
            "border (dark ink on paper) is inverted first; a model of your own pictures takes them as they are. "
            "yes / no: always / never invert.")

    return PredictRequest


PREDICT_FIELDS = ("images", "top_k", "model", "invert")
FORM_FIELDS = ("file", "top_k", "model", "invert")
QUERY_FIELDS = ("top_k", "model", "invert")


def _validation_message(exc) -> str:
    """A pydantic ValidationError as one sentence naming the field."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    return f"{loc or 'body'}: {first.get('msg')}"


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (also for chunked uploads)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request is {int(declared)} bytes; the limit is {limit} (--max-bytes)")
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request is over {limit} bytes (--max-bytes)")
            chunks.append(chunk)
    except ClientDisconnect:  # gone mid-upload: nobody to answer, and not worth a traceback in the log
        raise ApiError(400, "the client disconnected before the request body was complete") from None
    return b"".join(chunks)


def _decode_base64(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(_DATA_URL.sub("", text.strip(), count=1), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"images[{index}] is not valid base64") from None


async def _parse_predict(request, body: bytes, limits: Limits, request_model):
    """(params, [(name, bytes)]) from a multipart upload (field 'file') or a JSON batch."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        raise ApiError(400, "the request body is empty: send an image as multipart field 'file', "
                            "or JSON {\"images\": [\"<base64>\", ...]}")
    if ctype == "application/json":
        return _parse_json(body, limits, request_model)
    if ctype == "multipart/form-data":
        request._body = body  # already read (and size-checked); Request.form() parses the cached body
        return await _parse_form(request, request_model)
    if ctype == "application/x-www-form-urlencoded":  # an HTML form without enctype: the file was left out
        raise ApiError(400, "multipart field 'file' is missing: send the image as multipart/form-data field 'file'")
    raise ApiError(415, f"unsupported content type '{ctype or 'none'}': send multipart/form-data "
                        "(field 'file') or application/json")


def _validated(request_model, fields: dict):
    from pydantic import ValidationError

    try:
        return request_model.model_validate(fields)
    except ValidationError as exc:
        raise ApiError(422, _validation_message(exc)) from None


def _parse_json(body: bytes, limits: Limits, request_model):
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    except RecursionError:  # [[[[...]]]] 100,000 deep: a plain-text 500 and a traceback before
        raise ApiError(400, "the JSON body is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the JSON body must be an object: {\"images\": [\"<base64>\", ...]}")
    unknown = [k for k in raw if k not in PREDICT_FIELDS]
    if unknown:  # before pydantic, which would first complain that 'images' is missing
        raise ApiError(400, f"unknown field '{unknown[0]}'{did_you_mean(unknown[0], PREDICT_FIELDS)}; "
                            f"the fields are {', '.join(PREDICT_FIELDS)}")
    params = _validated(request_model, raw)
    if not params.images:
        raise ApiError(422, "images is empty: give at least one base64 image")
    if len(params.images) > limits.max_batch:
        raise ApiError(422, f"{len(params.images)} images in one request; the limit is {limits.max_batch} (--max-batch)")
    return params, [(f"images[{i}]", _decode_base64(s, i)) for i, s in enumerate(params.images)]


async def _parse_form(request, request_model):
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    unknown = [k for k in form.keys() if k not in FORM_FIELDS]
    if unknown:
        raise ApiError(400, f"unknown multipart field '{unknown[0]}'{did_you_mean(unknown[0], FORM_FIELDS)}; "
                            "send the image as field 'file'")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "multipart field 'file' is missing or is not a file; send the image as field 'file'")
    params = _validated(request_model, {"images": [], **{k: form[k] for k in ("top_k", "model", "invert") if k in form}})
    return params, [(upload.filename or "file", await upload.read())]


def _with_query(params, request, request_model):
    """``?model=NAME`` (and ``?top_k=``, ``?invert=``) in the URL, for what the body did not set; a query
    parameter the API does not know is refused, like an unknown field."""
    query = dict(request.query_params)
    unknown = [k for k in query if k not in QUERY_FIELDS]
    if unknown:
        raise ApiError(400, f"unknown query parameter '{unknown[0]}'{did_you_mean(unknown[0], QUERY_FIELDS)}; "
                            f"the URL takes {', '.join(QUERY_FIELDS)}")
    given = params.model_fields_set
    extra = {k: v for k, v in query.items() if k not in given}
    return _validated(request_model, {**params.model_dump(), **extra}) if extra else params


def _openapi_body(request_model) -> dict:
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "One image file (PNG, JPEG, ...)."},
            "top_k": {"type": "integer", "default": 3}, "model": {"type": "string"},
            "invert": {"type": "string", "enum": list(INVERT_CHOICES), "default": "auto"}}}},
        "application/json": {"schema": request_model.model_json_schema()},
    }}}


def create_app(models: list[ServedModel], runs_dir: str | Path = "runs", limits: Limits = Limits(),
               max_concurrent: Optional[int] = None):
    """The FastAPI app: /v1/predict, /v1/models, /v1/runs, /healthz, the drawing page / and /runs."""
    from fastapi import FastAPI, Request
    from starlette.concurrency import run_in_threadpool

    if not models:
        raise ConfigError("create_app needs at least one model")
    by_name = {m.name: m for m in models}
    default = models[0].name
    runs_dir = Path(runs_dir)
    request_model = _request_models()
    # requests beyond this wait in the threadpool instead of fighting over the cores
    gate = threading.BoundedSemaphore(max_concurrent or max(1, os.cpu_count() or 1))

    app = FastAPI(title="convtrain serve", version="1", docs_url=None, redoc_url=None,  # /docs: _add_docs, offline
                  description="Classify images with convtrain checkpoints. Errors are JSON: {\"error\": \"...\"}.")
    _add_error_handlers(app)

    @app.get("/healthz", summary="Liveness: 200 and the model names while the server answers")
    def healthz() -> dict:
        return {"status": "ok", "models": list(by_name)}

    @app.get("/v1/models", summary="The loaded checkpoints: dataset, classes, input, parameters, accuracy")
    def list_models() -> dict:
        return {"default": default, "models": [m.card for m in models]}

    def infer(m: ServedModel, images, top_k: int, invert: str, version: int) -> list[dict]:
        with gate:
            return predict_uploads(m, images, top_k, invert, limits, version)

    @app.post("/v2/predict", summary="Top-k classes for one uploaded image or a JSON batch of base64 images",
              openapi_extra=_openapi_body(request_model))
    async def predict(request: Request) -> dict:
        return await answer(request, 2)

    @app.post("/v1/predict", deprecated=True, openapi_extra=_openapi_body(request_model),
              summary="As /v2/predict, in the answer's old words (label: the class number, name: the class "
                      "name); kept for one release")
    async def predict_v1(request: Request) -> dict:
        return await answer(request, 1)

    async def answer(request, version: int) -> dict:
        body = await _read_body(request, limits.max_bytes)
        params, images = await _parse_predict(request, body, limits, request_model)
        params = _with_query(params, request, request_model)
        name = params.model or default
        if name not in by_name:
            raise ApiError(422, f"unknown model '{name}'{did_you_mean(name, by_name)}; "
                                f"the models are {', '.join(by_name)} (GET /v1/models)")
        m = by_name[name]
        if not 1 <= params.top_k <= len(m.classes):
            raise ApiError(422, f"top_k must be between 1 and {len(m.classes)} for model '{name}', got {params.top_k}")
        # decoding and the forward pass run in a worker thread: the event loop keeps answering
        predictions = await run_in_threadpool(infer, m, images, params.top_k, params.invert, version)
        return {"model": name, "predictions": predictions}

    _add_pages(app, runs_dir)
    _add_docs(app)
    return app


def _add_docs(app) -> None:
    """/docs: Swagger UI 5 (it reads FastAPI's OpenAPI 3.1) from the swagger-ui-py package's own files,
    served here (no CDN: it works offline and behind firewalls); without that package, a page that says
    how to get it."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    try:
        import swagger_ui

        swagger_ui_path = Path(swagger_ui.__file__).parent / "static"
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is None:
        @app.get("/docs", include_in_schema=False)
        def docs_missing():
            return HTMLResponse("<!doctype html><title>convtrain serve: API</title><p>The interactive API page needs "
                                "the swagger-ui-py package: <code>pip install 'convtrain[serve]'</code>. The API "
                                "description is at <a href='/openapi.json'>/openapi.json</a>.</p>")
        return
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="convtrain serve: API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def _add_error_handlers(app) -> None:
    """Every refusal, ours or FastAPI's (404, 405, validation), answered as {"error": "..."}."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # a bug: still JSON, as the API promises (the server's log keeps the traceback)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server's log has the details"},
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)


def _add_pages(app, runs_dir: Path) -> None:
    """The drawing page, the runs page and what they read: /v1/runs, run pictures, /static."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    @app.get("/v1/runs", summary="The runs under the runs folder with their final numbers and pictures")
    def runs() -> dict:
        return {"runs_dir": runs_dir.name, "runs": list_runs(runs_dir)}

    @app.get("/runs/{run}/{name}", include_in_schema=False)
    def run_picture(run: str, name: str):
        return FileResponse(run_image(runs_dir, run, name), media_type="image/png")

    @app.get("/runs/{run}/report/report.html", include_in_schema=False)
    def run_report(run: str):
        return FileResponse(run_image(runs_dir, run, REPORT_PAGE), media_type="text/html",
                            headers={"Content-Security-Policy": REPORT_POLICY})

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/runs", include_in_schema=False)
    def runs_page():
        return FileResponse(STATIC / "runs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
