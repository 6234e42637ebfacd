"""`cnnlab explore`: the explorer's web page and JSON API, on `cnnlab serve`'s server stack.

The same rules as `cnnlab serve` (serve/app.py): loopback unless an API key is given
(`check_bind`), the key guards everything that reveals the model, uploads are bounded and decoded
by serve's code within its budgets (`receive_images`), refusals are one-line JSON, and the page
loads nothing from outside (plain HTML, CSS and JS in explore/static). The model is loaded once;
one thread runs it, so that hooks of two requests never meet.

API (all GET but uploads; images are PNG, the rest JSON):
    /api/model, /api/architecture, /api/inputs (POST: upload), /api/inputs/{key}/image.png,
    /api/inputs/{key}/activations, /api/inputs/{key}/maps.png?layer=&channel=,
    /api/inputs/{key}/conv-step?layer=&channel=&row=&col=, /api/inputs/{key}/layer-input.png?layer=&channel=,
    /api/inputs/{key}/gradcam.png?class_index=&layer=, /api/filters.png,
    /api/inputs/{key}/relu?layer=&channel= (before/after ReLU), /api/inputs/{key}/pool?layer=&channel= (the
    windows of max pooling and where each maximum sits), /api/output-size?size=&kernel=&stride=&padding=,
    /api/inputs/{key}/variant?shift_x=&shift_y=&rotate= (POST: a shifted or rotated copy as a new input),
    /api/kernels?layer=&channel= and /api/kernels.png?layer=&channel= (one filter as heat maps per input channel)
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from cnnlab.conv_arithmetic import size_case
from cnnlab.errors import CnnlabError, first_line
from cnnlab.explore.explorer import Explorer, ExploreError
from cnnlab.serve.app import (
    BODY_BUDGET, BUDGET_WAIT_S, DECODE_BUDGET, MAX_BYTES, MAX_FILES, MAX_PIXELS, ImageDecoder, add_error_handlers,
    api_key_dependency, build_server, receive_images, serve_forever,
)
from cnnlab.serve.budget import Budget
from cnnlab.versions import __version__

__all__ = ["create_explore_app", "load_explorer", "run_explorer", "rank_test_images", "add_ranked",
           "SAMPLES_PER_CLASS", "MAX_SAMPLE_CLASSES"]

STATIC = resources.files("cnnlab.explore") / "static"
SAMPLES_PER_CLASS = 4    # test images offered per class: enough to compare, few enough to load at once
MAX_SAMPLE_CLASSES = 20  # an ImageNet-sized head offers its first 20 classes
MAX_RANKED_SCAN = 2_000  # test images searched for mistakes and low confidence (the digits run's test split: 81 ms)
RANKED_SHOWN = 12        # of each; with 4 per class of 10 classes that is 64 test images kept
T = TypeVar("T")


def load_explorer(source: str | Path) -> Explorer:
    """The model of a run directory or model file, ready to explore, with its run's test images when it has them.

    >>> load_explorer("no-such-run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: ...no-such-run...
    """
    from cnnlab.inference import load_inference

    path = Path(source)
    if path.suffix.lower() == ".onnx" or (path.is_dir() and (path / "model.onnx").is_file()
                                          and not (path / "model.safetensors").is_file()):
        raise CnnlabError(f"explore needs the torch model, not an ONNX file ({path}); give the run directory or "
                          f".safetensors model file it was exported from")
    inference = load_inference(path, "torch")
    name = inference.path.parent.name if inference.path.stem in ("model", "best") else inference.path.stem
    explorer = Explorer(inference.model, inference.card, name)
    explorer.notes = _add_samples(explorer, path)
    return explorer


def _add_samples(explorer: Explorer, source: Path) -> list[str]:
    """The run's own test images, SAMPLES_PER_CLASS per class, read offline; a note when there are none. The
    search for mistakes among them is left for the app to run beside the server (`rank_test_images`)."""
    if not (source / "config.json").is_file():
        return ["a model file, not a run directory: upload an image to explore (a run offers its test images)"]
    from cnnlab.evaluate_jobs import run_data

    try:
        data, dataset = run_data(source, explorer.card, download=False)
    except (CnnlabError, OSError) as exc:
        return [f"the run's test images cannot be read offline ({first_line(exc, 200)}); upload an image instead"]
    explorer.test_data = (data, dataset)
    chosen: dict[int, list[int]] = {}
    for index, label in enumerate(data.labels.tolist()):
        if label < MAX_SAMPLE_CLASSES and len(chosen.setdefault(label, [])) < SAMPLES_PER_CLASS:
            chosen[label].append(index)
    indices = sorted(i for found in chosen.values() for i in found)
    classes = explorer.card.class_names
    offset = 0
    for images, labels in data.subset(indices).batches(64):
        for image, label in zip(images, labels.tolist(), strict=True):
            number = indices[offset]
            explorer.add_input(image.contiguous(), f"{dataset} test image {number} ({classes[label]})", int(label),
                               key=f"t{number}")
            offset += 1
    return []


def rank_test_images(explorer: Explorer) -> list[dict[str, Any]]:
    """Every one of the run's first MAX_RANKED_SCAN test images with its true class, the class the model gives
    it and that class's probability (fp32, as the page's forward pass computes it).

    On a copy of the model, prepared as `cnnlab evaluate` scores (BatchNorm folded), so it can run on a
    thread of its own beside the page's requests: 500 photos of a 224 px Lite0 run took 26 s when they
    were scanned on the model itself before the server started (2-core CPU, 2026-12-07).
    """
    from cnnlab.training.devices import Runtime
    from cnnlab.training.scoring import Scorer

    if explorer.test_data is None:
        return []
    data, _ = explorer.test_data
    scanned = min(len(data.labels), MAX_RANKED_SCAN)
    scorer = Scorer(copy.deepcopy(explorer.model), Runtime(torch.device("cpu"), "fp32", False))
    rows: list[dict[str, Any]] = []
    for images, labels in data.subset(list(range(scanned))).batches(128):
        top, predicted = scorer.probabilities(images).max(1)
        for image, label, p, c in zip(images, labels.tolist(), top.tolist(), predicted.tolist(), strict=True):
            rows.append({"number": len(rows), "true_class": int(label), "predicted": int(c), "probability": p,
                         "image": image})
    return rows


def add_ranked(explorer: Explorer, rows: list[dict[str, Any]]) -> None:
    """The run's "mistakes" (wrong, most confident first) and "least confident" (lowest top probability first)
    among `rows` (`rank_test_images`), RANKED_SHOWN of each: kept as inputs, listed in `explorer.ranked`."""
    mistakes = sorted((r for r in rows if r["predicted"] != r["true_class"]), key=lambda r: -r["probability"])
    unsure = sorted(rows, key=lambda r: r["probability"])
    classes = explorer.card.class_names
    dataset = explorer.test_data[1] if explorer.test_data is not None else "test"
    for group, chosen in (("mistakes", mistakes[:RANKED_SHOWN]), ("least_confident", unsure[:RANKED_SHOWN])):
        for row in chosen:
            key = f"t{row['number']}"
            if key not in explorer.inputs:
                explorer.add_input(row["image"].contiguous(), f"{dataset} test image {row['number']} "
                                   f"({classes[row['true_class']]})", row["true_class"], key=key)
                explorer.ranked_only.add(key)
            explorer.ranked[group].append({k: v for k, v in row.items() if k != "image"} | {"key": key})
    explorer.ranking = "done"


def create_explore_app(source: str | Path | Explorer, *, api_key: str | None = None, max_files: int = MAX_FILES,
                       max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, decode_budget: int = DECODE_BUDGET,
                       body_budget: int = BODY_BUDGET, budget_wait_s: float = BUDGET_WAIT_S) -> FastAPI:
    """The explorer app for a run directory, a model file, or an `Explorer` already made.

    >>> import tempfile; from fastapi.testclient import TestClient; from cnnlab.models import build_model, save_model
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = save_model(build_model("seed-mnist"), d / "model.safetensors", list("0123456789"), (28, 28, 1))
    >>> TestClient(create_explore_app(d)).get("/api/architecture").json()["layers"][0]["output_shape"]
    [26, 26, 32]
    """
    explorer = source if isinstance(source, Explorer) else load_explorer(source)
    runner = ThreadPoolExecutor(1, thread_name_prefix="cnnlab-explore")  # one forward pass at a time
    decoder = ImageDecoder(explorer.card.input_shape, max_pixels, Budget(decode_budget, "pixels being decoded",
                                                                          budget_wait_s))
    bodies = Budget(body_budget, "bytes of request bodies held", budget_wait_s)

    async def run(call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(runner, call, *args)

    def rank() -> None:  # beside the server: the page lists the mistakes when they are found
        try:
            rows = rank_test_images(explorer)
            runner.submit(add_ranked, explorer, rows).result()  # inputs change on the model's own thread
        except Exception as exc:  # noqa: BLE001  (the page says why; exploring goes on without the lists)
            explorer.ranking = f"failed: {first_line(exc, 200)}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if explorer.test_data is not None and explorer.ranking == "pending":
            explorer.ranking = "running"
            app.state.ranker = threading.Thread(target=rank, name="cnnlab-explore-rank", daemon=True)
            app.state.ranker.start()
        elif explorer.ranking == "pending":
            explorer.ranking = "none"  # no test images to search
        yield
        runner.shutdown(wait=False, cancel_futures=True)
        decoder.close()

    app = FastAPI(title="cnnlab model explorer", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.explorer = explorer
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    add_error_handlers(app)

    @app.exception_handler(ExploreError)
    async def refused(request: Request, exc: ExploreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    key = Depends(api_key_dependency(api_key))

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": explorer.name, "api_key_required": api_key is not None}

    @app.get("/api/model", dependencies=[key])
    async def model() -> dict[str, Any]:
        h, w, c = explorer.card.input_shape
        return {"name": explorer.name, "classes": explorer.card.class_names, "outputs": explorer.card.outputs,
                "input_size": {"height": h, "width": w, "channels": c}, "metrics": explorer.card.metrics,
                "preprocessing": explorer.card.preprocessing, "notes": explorer.notes,
                "limits": {"max_files": max_files, "max_bytes": max_bytes, "max_pixels": max_pixels}}

    @app.get("/api/architecture", dependencies=[key])
    async def layers() -> dict[str, Any]:
        return {"input_shape": list(explorer.card.input_shape), "layers": [x.to_dict() for x in explorer.layers]}

    @app.get("/api/inputs", dependencies=[key])
    async def inputs() -> dict[str, Any]:
        def item(k: str, **extra: Any) -> dict[str, Any]:
            return {"key": k, "label": explorer.inputs[k].label, "true_class": explorer.inputs[k].true_class,
                    "image": f"/api/inputs/{k}/image.png", **extra}

        return {"inputs": [item(k) for k in list(explorer.inputs) if k not in explorer.ranked_only],
                "ranking": explorer.ranking,
                **{group: [item(r["key"], predicted=r["predicted"], probability=r["probability"]) for r in rows
                           if r["key"] in explorer.inputs] for group, rows in explorer.ranked.items()}}

    @app.post("/api/inputs", dependencies=[key])
    async def upload(request: Request) -> dict[str, Any]:
        uploads, images = await receive_images(request, bodies, decoder, max_bytes, max_files)
        keys = [explorer.add_input(image, item.filename) for item, image in zip(uploads, images, strict=True)]
        return {"inputs": [{"key": k, "label": explorer.inputs[k].label, "image": f"/api/inputs/{k}/image.png"}
                           for k in keys]}

    @app.post("/api/inputs/{input_key}/variant", dependencies=[key])
    async def variant(input_key: str, shift_x: int = Query(0, ge=-10_000, le=10_000),
                      shift_y: int = Query(0, ge=-10_000, le=10_000),
                      rotate: float = Query(0.0, ge=-360, le=360)) -> dict[str, Any]:
        made = await run(explorer.add_variant, input_key, shift_x, shift_y, rotate)
        item = explorer.inputs[made]
        return {"key": made, "label": item.label, "true_class": item.true_class,
                "image": f"/api/inputs/{made}/image.png"}

    @app.get("/api/inputs/{input_key}/image.png", dependencies=[key])
    async def image(input_key: str) -> Response:
        return png(explorer.input_png(input_key))

    @app.get("/api/inputs/{input_key}/activations", dependencies=[key])
    async def activations(input_key: str) -> dict[str, Any]:
        return await run(explorer.activations, input_key)

    @app.get("/api/inputs/{input_key}/maps.png", dependencies=[key])
    async def maps(input_key: str, layer: str, channel: int | None = Query(None, ge=0),
                   order: str = "index") -> Response:
        return png(await run(explorer.activation_png, input_key, layer, channel, order))

    @app.get("/api/inputs/{input_key}/relu", dependencies=[key])
    async def relu(input_key: str, layer: str, channel: int = Query(0, ge=0)) -> dict[str, Any]:
        return await run(explorer.relu_before_after, input_key, layer, channel)

    @app.get("/api/inputs/{input_key}/pool", dependencies=[key])
    async def pool(input_key: str, layer: str, channel: int = Query(0, ge=0)) -> dict[str, Any]:
        return await run(explorer.pool_windows, input_key, layer, channel)

    @app.get("/api/output-size")
    async def output_size(size: int = Query(..., ge=1, le=100_000), kernel: int = Query(..., ge=1, le=1_000),
                          stride: int = Query(1, ge=1, le=1_000), padding: str = "valid") -> dict[str, Any]:
        try:
            return size_case("conv", size, kernel, stride, padding)
        except CnnlabError as exc:
            raise ExploreError(422, str(exc)) from exc

    @app.get("/api/inputs/{input_key}/conv-step", dependencies=[key])
    async def conv_step(input_key: str, layer: str, channel: int = Query(0, ge=0), row: int = Query(0, ge=0),
                        col: int = Query(0, ge=0)) -> dict[str, Any]:
        return await run(explorer.conv_step, input_key, layer, channel, row, col)

    @app.get("/api/inputs/{input_key}/layer-input.png", dependencies=[key])
    async def layer_input(input_key: str, layer: str, channel: int = Query(0, ge=0)) -> Response:
        return png(await run(explorer.layer_input_png, input_key, layer, channel))

    @app.get("/api/inputs/{input_key}/gradcam.png", dependencies=[key])
    async def gradcam(input_key: str, class_index: int, layer: str) -> Response:
        return png(await run(explorer.grad_cam_png, input_key, class_index, layer))

    @app.get("/api/kernels", dependencies=[key])
    async def kernels(layer: str, channel: int = Query(0, ge=0)) -> dict[str, Any]:
        return await run(explorer.kernels, layer, channel)

    @app.get("/api/kernels.png", dependencies=[key])
    async def kernels_png(layer: str, channel: int = Query(0, ge=0)) -> Response:
        return png(await run(explorer.kernels_png, layer, channel))

    @app.get("/api/filters.png", dependencies=[key])
    async def filters() -> Response:
        return png(await run(explorer.filters_png))

    return app


def run_explorer(source: str | Path, host: str = "127.0.0.1", port: int = 8010, api_key: str | None = None,
                 ready: Callable[[str], None] | None = None) -> None:
    """Check the address and key, bind, load the model, then serve the explorer until interrupted.

    Everything that can fail at start-up fails before uvicorn starts, as one CnnlabError.

    >>> run_explorer("no-such-run", host="0.0.0.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --host 0.0.0.0 is reachable from other machines, and no API key was given; ...
    """
    server, sock = build_server(source, host, port, api_key, app_factory=create_explore_app)
    serve_forever(server, sock, ready)
