"""The prediction server: a FastAPI app around one model, loaded once, fed in micro-batches.

`create_app` builds the app (the web page at /, the JSON API, OpenAPI schema at /openapi.json
and a self-hosted reference at /docs); `check_bind` refuses to expose an unprotected server;
`run_server` runs it with uvicorn. Limits per request are explained where they are defined;
limits across requests (pixels being decoded, body bytes held) in `budget.py`; timeouts and the
connection cap in `connections.py`.

With an API key, everything that reveals the model needs it (/predict, /model, its curves,
/openapi.json); /health and the page shells (/, /docs, /static) carry no model data and stay
open, so a browser can load the page and ask for the key.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from cnnlab.data.images import MAX_IMAGE_PIXELS
from cnnlab.errors import CnnlabError
from cnnlab.serve.batching import MicroBatcher
from cnnlab.serve.budget import Budget, return_large_blocks, trim_memory
from cnnlab.serve.connections import LOG, ConnectionLimits, RepeatFilter, connection_cap, guarded_protocol, open_socket
from cnnlab.serve.predictor import LoadedModel, load_predictor
from cnnlab.serve.uploads import Upload, UploadError, decode_pixels, parse_uploads, probe_upload, read_body
from cnnlab.versions import __version__

__all__ = ["create_app", "check_bind", "run_server", "build_server", "API_KEY_ENV", "ConnectionLimits", "is_loopback",
           "ImageDecoder", "receive_images", "add_error_handlers", "api_key_dependency", "serve_forever"]

API_KEY_ENV = "CNNLAB_API_KEY"
STATIC = resources.files("cnnlab.serve") / "static"

# Limits per request. 16 files: a page's multi-select or a client's batch; more is a bulk job
# for `cnnlab predict`. 20 MB: 16 phone JPEGs of ~1.2 MB. Pixels: the same budget as every other
# reader (cnnlab.data.images.MAX_IMAGE_PIXELS, 40 megapixels).
MAX_FILES = 16
MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = MAX_IMAGE_PIXELS
TOP_K = 5
# Limits across all requests at once (budget.py). Decoding costs ~5 bytes per pixel at its peak (a
# palette PNG: 1 byte per pixel decoded, 3 as RGB, plus the resize), so 80 megapixels, two images
# at the per-image limit, bound decoding to ~0.4 GB. With 2 cores or fewer, 40 megapixels: one core
# stays for the event loop and the model (with two large decodes at once on 2 cores, a decode flood
# beside 1,100 slow clients starved the good clients: 16 requests in 52 s, 2026-12-07). Bodies:
# 128 MB is six requests at the 20 MB limit, hundreds of ordinary ones; each is held about three
# times while parsed. 5 s: long enough to ride out a burst, short enough that a client retries.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DECODE_BUDGET = (1 if CORES <= 2 else 2) * MAX_PIXELS
BODY_BUDGET = 128 * 1024 * 1024
BUDGET_WAIT_S = 5.0
# Decoding threads: two for images at the pixel limit (DECODE_BUDGET allows at most two at once) and
# two more so that small images are not queued behind them.
DECODE_THREADS = 4
TRIM_AFTER_PIXELS = 10_000_000  # return freed heap to the system after this much decoding, once idle

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
               max_batch: int = 32, max_wait_ms: float = 5.0, decode_budget: int = DECODE_BUDGET,
               body_budget: int = BODY_BUDGET, budget_wait_s: float = BUDGET_WAIT_S, runtime: str = "torch") -> FastAPI:
    """The server for one model (a run directory, a model file, a .onnx file, or a loaded model).

    `runtime` runs a model file on torch, through its ONNX twin (onnxruntime), or either (auto: the
    twin when onnxruntime is installed and the model exports); see `load_predictor`.

    >>> import tempfile; from fastapi.testclient import TestClient; from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = save_model(build_model("seed-mnist"), d / "model.safetensors", list("0123456789"), (28, 28, 1))
    >>> TestClient(create_app(d)).get("/health").json()["status"]
    'ok'
    """
    for name, value in (("top_k", top_k), ("max_files", max_files), ("max_bytes", max_bytes),
                        ("max_pixels", max_pixels), ("max_batch", max_batch), ("decode_budget", decode_budget),
                        ("body_budget", body_budget)):
        if not isinstance(value, int) or value <= 0:
            raise CnnlabError(f"create_app: {name} must be a positive integer, got {value!r}")
    loaded = source if isinstance(source, LoadedModel) else load_predictor(source, runtime)
    batcher = MicroBatcher(loaded.predict_proba, max_images=max_batch, max_wait_ms=max_wait_ms)
    decoder = ImageDecoder(loaded.card.input_shape, max_pixels, Budget(decode_budget, "pixels being decoded",
                                                                      budget_wait_s))
    bodies = Budget(body_budget, "bytes of request bodies held", budget_wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()
        decoder.close()

    app = FastAPI(title="cnnlab prediction server", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None,
                  description=f"Serving {loaded.name}: {len(loaded.card.class_names)} classes, "
                              f"input {'x'.join(map(str, loaded.card.input_shape))} (H x W x C).")
    app.state.model, app.state.batcher, app.state.decoder, app.state.bodies = loaded, batcher, decoder, bodies
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    add_error_handlers(app)
    key = Depends(api_key_dependency(api_key))
    _add_pages(app, loaded, key)
    limits = {"max_files": max_files, "max_bytes": max_bytes, "max_pixels": max_pixels, "top_k": top_k}

    @app.get("/health", summary="Liveness: the model is loaded and the server answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": loaded.name, "api_key_required": api_key is not None,
                "batches": batcher.stats.calls}

    @app.get("/model", summary="The model card: classes, input size, preprocessing, metrics, versions, limits",
             dependencies=[key])
    async def model_card() -> dict[str, Any]:
        return {**loaded.describe(), "limits": limits}

    @app.post("/predict", summary="Top-k classes and probabilities for one or several images",
              openapi_extra={"requestBody": _PREDICT_BODY}, dependencies=[key],
              responses={code: {"description": why, **_ERROR} for code, why in (
                  (400, "undecodable, truncated or empty image, malformed body"), (401, "missing or wrong API key"),
                  (413, "too many files, bytes or pixels"), (415, "not multipart, or not an image format served"),
                  (422, "invalid query parameter"), (503, "busy: retry after the Retry-After seconds"))})
    async def predict(request: Request, top_k: int | None = Query(None, ge=1, le=1000, description=(
            f"how many classes per image (default {top_k}, at most the number of classes)"))) -> dict[str, Any]:
        uploads, images = await receive_images(request, bodies, decoder, max_bytes, max_files)
        probs = await batcher.predict(images)
        return {"model": loaded.name, "predictions": _top_k(uploads, probs, loaded.card.class_names,
                                                              top_k or limits["top_k"])}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[key])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


async def receive_images(request: Request, bodies: Budget, decoder: ImageDecoder, max_bytes: int,
                         max_files: int) -> tuple[list[Upload], torch.Tensor]:
    """The uploads of a multipart request and their pixels, uint8 (N, C, H, W) at the decoder's size.

    Every refusal is an `UploadError` (4xx or 503, one line): the body is bounded by `max_bytes` and
    counted against `bodies` as it arrives, the files by `max_files`, the pixels by the decoder's budget.
    `cnnlab serve`'s /predict and `cnnlab explore`'s uploads both read images this way.
    """
    held = [0]  # body bytes taken from the budget as they arrive (not as declared: slow clients declare much)
    try:
        body = await read_body(_counted(request.stream(), bodies, held), request.headers.get("content-length"),
                               max_bytes)
        uploads = await parse_uploads(request.headers.get("content-type"), body, max_files)
        del body
        images = await decoder.decode_all(uploads)  # (N, C, H, W) uint8
    finally:
        bodies.release(held[0])
    return uploads, images


async def _counted(stream: AsyncIterator[bytes], budget: Budget, held: list[int]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        held[0] += await budget.acquire(len(chunk))
        yield chunk


class ImageDecoder:
    """Decodes uploads to `input_shape` (H, W, C) in a few threads of its own, within the shared budget of
    pixels being decoded; `close()` when the app stops."""

    def __init__(self, input_shape: Any, max_pixels: int, budget: Budget) -> None:
        self.shape, self.max_pixels, self.budget = tuple(input_shape), max_pixels, budget
        self.pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="cnnlab-decode")
        self.since_trim = 0  # pixels decoded since memory was last handed back

    async def decode_all(self, uploads: list[Upload]) -> torch.Tensor:
        # One image at a time per request: a request of 16 large images cannot take the whole budget.
        h, w, c = self.shape
        loop = asyncio.get_running_loop()
        images = []
        for upload in uploads:
            pixels = await loop.run_in_executor(self.pool, probe_upload, upload, self.max_pixels)  # header only
            held = await self.budget.acquire(pixels)
            decoding = loop.run_in_executor(self.pool, decode_pixels, upload, c, (h, w))
            # Released when the decode ends, even if this request is cancelled while it runs.
            decoding.add_done_callback(functools.partial(self._done, held))
            images.append(await decoding)
        return torch.stack(images)

    def _done(self, held: int, _: object) -> None:
        self.budget.release(held)
        self.since_trim += held
        if self.budget.in_use == 0 and self.since_trim >= TRIM_AFTER_PIXELS:
            self.since_trim = 0
            self.pool.submit(trim_memory)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _top_k(uploads: list[Upload], probs: np.ndarray, classes: list[str], k: int) -> list[dict[str, Any]]:
    k = min(k, len(classes))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k), most likely first
    return [{"filename": u.filename, "top": [{"class": classes[i], "probability": float(p[i])} for i in idx]}
            for u, p, idx in zip(uploads, probs, order, strict=True)]


def api_key_dependency(api_key: str | None) -> Any:
    """The dependency that guards every route revealing the model (FastAPI calls it before the route):
    `Depends(api_key_dependency(key))`; None lets every request through."""
    async def check(request: Request) -> None:
        _check_api_key(request, api_key)
    return check


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


def add_error_handlers(app: FastAPI) -> None:
    """Refusals (`UploadError`), vanished clients and invalid parameters answered as one-line JSON {"detail"}."""
    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # A closed page or a timed-out client: its business, one line at info level, not a traceback.
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        LOG.info("%s went away before its request to %s arrived in full", client, request.url.path)
        return JSONResponse({"detail": "client disconnected"}, status_code=400)  # nobody is left to read it

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(_one_line(exc).split())}, status_code=422)


def _add_pages(app: FastAPI, loaded: LoadedModel, key: Any) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:  # FastAPI's Swagger page loads from a CDN; this one works offline
        return HTMLResponse((STATIC / "docs.html").read_text(encoding="utf-8"))

    @app.get("/model/curves.png", summary="The run's training curves (404 when the model has no run directory)",
             response_class=FileResponse, dependencies=[key],
             responses={404: {"description": "no curves.png beside the model", **_ERROR}})
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
    if api_key is None and not is_loopback(host):
        raise CnnlabError(f"--host {host} is reachable from other machines, and no API key was given; pass "
                          f"--api-key KEY (or set ${API_KEY_ENV}), or bind to 127.0.0.1")


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only.

    >>> is_loopback("localhost"), is_loopback("[::1]"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(source: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
               connections: ConnectionLimits | None = None, ready: Callable[[str], None] | None = None,
               **options: Any) -> None:
    """Bind the address, load the model and serve it with uvicorn until interrupted.

    Everything that can fail at start-up (the key, the address, the port, the model) fails
    before uvicorn starts, as one CnnlabError; then `ready` gets the server's URL. `options` go
    to `create_app` (or to `app_factory`, see `build_server`).

    >>> run_server("no-such-run", port=70000)
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --port 70000 is not a TCP port; give a number from 1 to 65535 (the default is 8000)
    """
    server, sock = build_server(source, host, port, api_key, connections, **options)
    serve_forever(server, sock, ready)


def serve_forever(server: Any, sock: socket.socket, ready: Callable[[str], None] | None = None) -> None:
    """Run `server` on its bound socket until interrupted (`ready` gets its URL first), then close the socket.

    `cnnlab serve`, `explore` and `studio` all end this way, after `build_server`.
    """
    try:
        if ready is not None:
            bound_host, bound_port = sock.getsockname()[:2]
            ready(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/")
        server.run(sockets=[sock])
    finally:
        sock.close()


def build_server(source: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 connections: ConnectionLimits | None = None, app_factory: Callable[..., FastAPI] | None = None,
                 **options: Any) -> tuple[Any, socket.socket]:
    """The uvicorn server for `source` and its bound socket (`server.run(sockets=[sock])` serves).

    `app_factory(source, api_key=..., **options)` makes the app (default `create_app`; `cnnlab explore`
    passes its own), so every app gets the same checks, socket, connection limits and logging.

    >>> build_server("no-such-run", "0.0.0.0")
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --host 0.0.0.0 is reachable from other machines, and no API key was given; \
pass --api-key KEY (or set $CNNLAB_API_KEY), or bind to 127.0.0.1
    """
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    check_bind(host, api_key)
    limits = connections or ConnectionLimits()
    limits = replace(limits, max_connections=connection_cap(limits.max_connections, limits.backlog))
    sock = open_socket(host, port, limits.backlog)  # before the model loads: a busy port fails at once
    return_large_blocks()  # decoded images go back to the system when freed (budget.py has the numbers)
    try:
        app = (app_factory or create_app)(source, api_key=api_key, **options)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", backlog=limits.backlog,
                            http=guarded_protocol(AutoHTTPProtocol, limits))
    quiet = RepeatFilter()  # after Config: it sets up uvicorn's loggers
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RepeatFilter)]:  # one per process, not per server
            logger.removeFilter(old)
        logger.addFilter(quiet)
    return uvicorn.Server(config), sock
