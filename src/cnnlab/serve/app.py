"""The prediction server: a FastAPI app around one model, loaded once, fed in micro-batches.

`create_app` builds the app (the web page at /, the JSON API, OpenAPI schema at /openapi.json
and a self-hosted reference at /docs); `check_bind` refuses to expose an unprotected server;
`run_server` runs it with uvicorn. Limits are per request and explained where they are defined.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from cnnlab.errors import CnnlabError
from cnnlab.serve.batching import MicroBatcher
from cnnlab.serve.predictor import LoadedModel, load_predictor
from cnnlab.serve.uploads import Upload, UploadError, decode_upload, parse_uploads, read_body
from cnnlab.versions import __version__

__all__ = ["create_app", "check_bind", "run_server", "API_KEY_ENV"]

API_KEY_ENV = "CNNLAB_API_KEY"
STATIC = resources.files("cnnlab.serve") / "static"

# Limits per request. 16 files: a page's multi-select or a client's batch; more is a bulk job
# for `cnnlab predict`. 20 MB: 16 phone JPEGs of ~1.2 MB. 40 megapixels: a 48 MP phone's default
# 12 MP photos with room to spare, while one decoded image stays under 120 MB of RGB.
MAX_FILES = 16
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
TOP_K = 5

_PREDICT_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "JPEG, PNG, WebP, BMP or GIF images"}}}}},
}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}}}}}


def create_app(source: str | Path | LoadedModel, *, api_key: str | None = None, top_k: int = TOP_K,
               max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
               max_batch: int = 32, max_wait_ms: float = 5.0) -> FastAPI:
    """The server for one model (a run directory, a model file, a .onnx file, or a loaded model).

    >>> import tempfile; from fastapi.testclient import TestClient; from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = save_model(build_model("seed-mnist"), d / "model.safetensors", list("0123456789"), (28, 28, 1))
    >>> TestClient(create_app(d)).get("/health").json()["status"]
    'ok'
    """
    for name, value in (("top_k", top_k), ("max_files", max_files), ("max_bytes", max_bytes),
                        ("max_pixels", max_pixels), ("max_batch", max_batch)):
        if not isinstance(value, int) or value <= 0:
            raise CnnlabError(f"create_app: {name} must be a positive integer, got {value!r}")
    loaded = source if isinstance(source, LoadedModel) else load_predictor(source)
    batcher = MicroBatcher(loaded.predict_proba, max_images=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="cnnlab prediction server", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=f"Serving {loaded.name}: {len(loaded.card.class_names)} classes, "
                                              f"input {'x'.join(map(str, loaded.card.input_shape))} (H x W x C).")
    app.state.model, app.state.batcher = loaded, batcher
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    _add_error_handlers(app)
    _add_pages(app, loaded)
    limits = {"max_files": max_files, "max_bytes": max_bytes, "max_pixels": max_pixels, "top_k": top_k}

    @app.get("/health", summary="Liveness: the model is loaded and the server answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": loaded.name, "api_key_required": api_key is not None,
                "batches": batcher.stats.calls}

    @app.get("/model", summary="The model card: classes, input size, preprocessing, metrics, versions, limits")
    async def model_card() -> dict[str, Any]:
        return {**loaded.describe(), "limits": limits}

    @app.post("/predict", summary="Top-k classes and probabilities for one or several images",
              openapi_extra={"requestBody": _PREDICT_BODY},
              responses={code: {"description": why, **_ERROR} for code, why in (
                  (400, "undecodable, truncated or empty image, malformed body"), (401, "missing or wrong API key"),
                  (413, "too many files, bytes or pixels"), (415, "not multipart, or not an image format served"),
                  (422, "invalid query parameter"))})
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, le=1000, description=(
            f"how many classes per image (default {top_k}, at most the number of classes)"))) -> dict[str, Any]:
        _check_api_key(request, api_key)
        body = await read_body(request.stream(), request.headers.get("content-length"), max_bytes)
        uploads = await parse_uploads(request.headers.get("content-type"), body, max_files)
        images = await run_in_threadpool(_decode_all, uploads, loaded, max_pixels)  # (N, C, H, W) uint8
        probs = await batcher.predict(images)
        return {"model": loaded.name, "predictions": _top_k(uploads, probs, loaded.card.class_names,
                                                              top_k or limits["top_k"])}

    return app


def _decode_all(uploads: list[Upload], loaded: LoadedModel, max_pixels: int) -> torch.Tensor:
    h, w, c = loaded.card.input_shape
    return torch.stack([decode_upload(u, c, (h, w), max_pixels) for u in uploads])


def _top_k(uploads: list[Upload], probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k), most likely first
    return [{"filename": u.filename, "top": [{"class": classes[i], "probability": float(p[i])} for i in idx]}
            for u, p, idx in zip(uploads, probs, order, strict=True)]


def _check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given is None:
        raise UploadError(401, "this server requires an API key; send it as header 'X-API-Key: KEY' or "
                               "'Authorization: Bearer KEY'")
    if not hmac.compare_digest(given.encode(), api_key.encode()):  # constant time: no guessing by timing
        raise UploadError(401, "wrong API key; use the key the server was started with (--api-key or "
                               f"${API_KEY_ENV})")


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(_one_line(exc).split())}, status_code=422)


def _add_pages(app: FastAPI, loaded: LoadedModel) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:  # FastAPI's Swagger page loads from a CDN; this one works offline
        return HTMLResponse((STATIC / "docs.html").read_text(encoding="utf-8"))

    @app.get("/model/curves.png", summary="The run's training curves (404 when the model has no run directory)",
             response_class=FileResponse, responses={404: {"description": "no curves.png beside the model",
                                                             **_ERROR}})
    async def curves() -> Any:
        if loaded.curves is None:
            return JSONResponse({"detail": f"no curves.png beside {loaded.path.name}; serve the run directory "
                                           f"to see its training curves"}, status_code=404)
        return FileResponse(loaded.curves, media_type="image/png")


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key.

    >>> check_bind("127.0.0.1", None); check_bind("0.0.0.0", "s3cret")
    >>> try:
    ...     check_bind("0.0.0.0", None)
    ... except CnnlabError as e:
    ...     print(str(e).split(';')[0])
    --host 0.0.0.0 is reachable from other machines, and no API key was given
    """
    if api_key is not None and not api_key.strip():
        raise CnnlabError(f"the API key is empty; give a non-empty --api-key or ${API_KEY_ENV}")
    if api_key is None and not _is_loopback(host):
        raise CnnlabError(f"--host {host} is reachable from other machines, and no API key was given; pass "
                          f"--api-key KEY (or set ${API_KEY_ENV}), or bind to 127.0.0.1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(source: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               **options: Any) -> None:  # pragma: no cover - blocks; tested through a subprocess
    """Load the model and serve it with uvicorn until interrupted."""
    import uvicorn

    check_bind(host, api_key)
    uvicorn.run(create_app(source, api_key=api_key, **options), host=host, port=port, log_level="warning")
