"""`cnnlab studio`: train your own image classifier from the browser, on `cnnlab serve`'s server stack.

The same rules as `cnnlab serve` (serve/app.py): loopback unless an API key is given (`check_bind`),
the key guards every /api route, uploads are bounded, probed and decoded by serve's code within its
budgets (`receive_images`: types, sizes, pixel limits, bombs refused before decoding), refusals are
one-line JSON {"detail"}, and the page loads nothing from outside (studio/static). Projects are
folders the CLI reads (projects.py); training runs as `cnnlab train` processes in a queue (jobs.py);
evaluation, prediction and export use cnnlab's own code (results.py).

API (JSON unless said): /api/settings; /api/projects (GET, POST {name}); /api/projects/{p} (GET, PATCH
{name}, DELETE); .../classes (POST {name}); .../classes/{c} (PATCH {name}, DELETE); .../classes/{c}/merge
{into}; .../classes/{c}/images (GET ?offset&limit, POST multipart); .../classes/{c}/images/{name} and
.../thumbs/{name} (the image, its JPEG thumbnail); .../classes/{c}/move {images, to}; .../classes/{c}/delete
{images}; .../import {path} (a folder or archive on the server's disk; a background job), .../imports and
.../imports/{id} (its progress); .../check (cnnlab check-data); .../train (POST settings); /api/jobs,
/api/jobs/stream (server-sent events), /api/jobs/{p}/{run}/stop and /resume; .../runs/{run}/evaluation,
/predict (multipart), /export (POST, {quantize: int8} for model-int8.onnx),
/files/{model.safetensors|model.onnx|model-int8.onnx|studio-export.zip}, /curves.png.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from cnnlab.errors import CnnlabError
from cnnlab.serve.app import (
    BODY_BUDGET, BUDGET_WAIT_S, DECODE_BUDGET, MAX_BYTES, MAX_FILES, MAX_PIXELS, ImageDecoder, add_error_handlers,
    api_key_dependency, build_server, receive_images, serve_forever,
)
from cnnlab.serve.budget import Budget
from cnnlab.studio.imports import Importer
from cnnlab.studio.jobs import (
    RECIPES_OFFERED, JobQueue, TrainSettings, default_settings, read_history, read_json_dict,
)
from cnnlab.studio.projects import PAGE_LIMIT, ProjectStore, StudioError, check_name, lock_projects_folder
from cnnlab.studio.results import INT8_NAME, ZIP_NAME, RunModels, evaluate_run, export_bundle, export_int8, top_classes
from cnnlab.versions import __version__

__all__ = ["create_studio_app", "run_studio", "DEFAULT_PORT"]

STATIC = resources.files("cnnlab.studio") / "static"
DEFAULT_PORT = 8020
CHECK_SIZE = (32, 32, 3)  # uploads are decoded in full (a truncated file is refused) at this small size
STREAM_EVERY_S = 1.0      # how often the job stream looks for news
DOWNLOADS = {"model.safetensors": "application/octet-stream", "model.onnx": "application/octet-stream",
             INT8_NAME: "application/octet-stream", ZIP_NAME: "application/zip"}


class Name(BaseModel):
    name: str


class Into(BaseModel):
    into: str


class Images(BaseModel):
    images: list[str]
    to: str | None = None


class ImportPath(BaseModel):
    path: str


class Export(BaseModel):
    quantize: str | None = None


class Train(BaseModel):
    recipe: str | None = None
    epochs: int | None = None
    image_size: int | None = None
    augment: str | None = None
    model: str | None = None


def create_studio_app(source: str | Path, *, api_key: str | None = None, max_files: int = MAX_FILES,
                      max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, decode_budget: int = DECODE_BUDGET,
                      body_budget: int = BODY_BUDGET, budget_wait_s: float = BUDGET_WAIT_S,
                      command: list[str] | None = None, lock: bool = False) -> FastAPI:
    """The studio for the projects under folder `source` (made when missing); `command` starts cnnlab
    for training (default: this interpreter with `-m cnnlab`); `lock` holds the folder for this process
    (`cnnlab studio` does: a second studio on the same folder is refused before it touches anything).

    >>> import tempfile; from fastapi.testclient import TestClient
    >>> client = TestClient(create_studio_app(tempfile.mkdtemp()))
    >>> client.post("/api/projects", json={"name": "a/b"}).json()["detail"][:28]
    "project name 'a/b' is not al"
    """
    root = Path(source).expanduser()
    if root.exists() and not root.is_dir():
        raise CnnlabError(f"--dir {root} is a file; give a folder for the studio's projects (made when missing)")
    held = lock_projects_folder(root) if lock else None
    store, queue, models = ProjectStore(root), JobQueue(root, command), RunModels()
    store.sweep_partial_writes()  # a studio killed while storing a photo left its temporary file
    importer = Importer(store, max_bytes, max_pixels)
    budget = Budget(decode_budget, "pixels being decoded", budget_wait_s)
    checker = ImageDecoder(CHECK_SIZE, max_pixels, budget)
    bodies = Budget(body_budget, "bytes of request bodies held", budget_wait_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue.start()
        importer.start()
        yield
        await run_in_threadpool(queue.close)
        await run_in_threadpool(importer.close)
        checker.close()

    app = FastAPI(title="cnnlab studio", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.store, app.state.queue, app.state.models, app.state.importer = store, queue, models, importer
    app.state.lock = held  # the folder stays this process's while the app lives
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    add_error_handlers(app)

    @app.exception_handler(StudioError)
    async def refused(request: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(CnnlabError)
    async def user_error(request: Request, exc: CnnlabError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "api_key_required": api_key is not None}

    api = APIRouter(prefix="/api", dependencies=[Depends(api_key_dependency(api_key))])
    _project_routes(api, store, queue)
    _image_routes(api, store, bodies, checker, max_bytes, max_files)
    _import_routes(api, importer)
    _job_routes(api, store, queue, {"max_files": max_files, "max_bytes": max_bytes, "max_pixels": max_pixels})
    _run_routes(api, store, queue, models, bodies, budget, max_pixels, max_bytes)
    app.include_router(api)
    return app


def _project_routes(api: APIRouter, store: ProjectStore, queue: JobQueue) -> None:
    @api.get("/projects")
    def projects() -> dict[str, Any]:
        return {"projects": store.list_projects()}

    @api.post("/projects", status_code=201)
    def create(body: Name) -> dict[str, Any]:
        store.create_project(body.name)
        return {"name": body.name}

    @api.get("/projects/{project}")
    def project(project: str) -> dict[str, Any]:
        return {"name": project, "classes": store.classes(project), "runs": _runs(store, queue, project)}

    @api.patch("/projects/{project}")
    def rename(project: str, body: Name) -> dict[str, Any]:
        _idle(queue, project)
        store.rename_project(project, body.name)
        queue.rename_project(project, body.name)
        return {"name": body.name}

    @api.delete("/projects/{project}")
    def delete(project: str) -> dict[str, Any]:
        _idle(queue, project)
        trash = store.delete_project(project)
        return {"deleted": project, "trash": str(trash)}

    @api.post("/projects/{project}/classes", status_code=201)
    def create_class(project: str, body: Name) -> dict[str, Any]:
        store.create_class(project, body.name)
        return {"name": body.name}

    @api.patch("/projects/{project}/classes/{name}")
    def rename_class(project: str, name: str, body: Name) -> dict[str, Any]:
        store.rename_class(project, name, body.name)
        return {"name": body.name}

    @api.post("/projects/{project}/classes/{name}/merge")
    def merge(project: str, name: str, body: Into) -> dict[str, Any]:
        return {"moved": store.merge_class(project, name, body.into), "into": body.into}

    @api.delete("/projects/{project}/classes/{name}")
    def delete_class(project: str, name: str) -> dict[str, Any]:
        store.delete_class(project, name)
        return {"deleted": name}

    @api.get("/projects/{project}/check")
    def check(project: str) -> dict[str, Any]:
        from cnnlab.data import check_dataset

        report = check_dataset(store.project(project) / "data")
        found = report.to_dict()
        found["root"] = project  # not the server's path
        return found


def _image_routes(api: APIRouter, store: ProjectStore, bodies: Budget, checker: ImageDecoder, max_bytes: int,
                  max_files: int) -> None:
    @api.get("/projects/{project}/classes/{name}/images")
    def images(project: str, name: str, offset: int = Query(0, ge=0),
               limit: int = Query(100, ge=1, le=PAGE_LIMIT)) -> dict[str, Any]:
        return store.images(project, name, offset, limit)

    @api.post("/projects/{project}/classes/{name}/images")
    async def upload(project: str, name: str, request: Request) -> dict[str, Any]:
        store.class_folder(project, name)  # a wrong class is refused before the body is read
        uploads, _ = await receive_images(request, bodies, checker, max_bytes, max_files)
        stored = await run_in_threadpool(store.add_images, project, name, [(u.filename, u.data) for u in uploads])
        return {"stored": [{"filename": s.filename, "name": s.name, "duplicate_of": s.duplicate_of} for s in stored],
                "added": sum(s.duplicate_of is None for s in stored)}

    @api.get("/projects/{project}/classes/{name}/images/{image}")
    def original(project: str, name: str, image: str) -> FileResponse:
        return FileResponse(store.image_path(project, name, image), headers={"Cache-Control": "private, max-age=60"})

    @api.get("/projects/{project}/classes/{name}/thumbs/{image}")
    def thumbnail(project: str, name: str, image: str) -> FileResponse:
        return FileResponse(store.thumbnail(project, name, image), media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=3600"})

    @api.post("/projects/{project}/classes/{name}/move")
    def move(project: str, name: str, body: Images) -> dict[str, Any]:
        if body.to is None:
            raise StudioError(422, "move: give the class to move the images to as 'to'")
        return {"moved": store.move_images(project, name, body.images, body.to), "to": body.to}

    @api.post("/projects/{project}/classes/{name}/delete")
    def delete(project: str, name: str, body: Images) -> dict[str, Any]:
        return {"deleted": store.delete_images(project, name, body.images)}


def _import_routes(api: APIRouter, importer: Importer) -> None:
    @api.post("/projects/{project}/import", status_code=202)
    def start_import(project: str, body: ImportPath) -> dict[str, Any]:
        return importer.submit(project, body.path).view()

    @api.get("/projects/{project}/imports")
    def imports(project: str) -> dict[str, Any]:
        return {"imports": [j.view() for j in list(importer.jobs.values()) if j.project == project]}

    @api.get("/projects/{project}/imports/{name}")
    def one_import(project: str, name: str) -> dict[str, Any]:
        return importer.find(f"{project}/{name}").view()


def _job_routes(api: APIRouter, store: ProjectStore, queue: JobQueue, limits: dict[str, int]) -> None:
    @api.get("/settings")
    def settings() -> dict[str, Any]:
        from cnnlab.models.zoo import model_names

        return {"defaults": vars(default_settings()), "recipes": list(RECIPES_OFFERED), "models": model_names(),
                "limits": limits,
                "page_limit": PAGE_LIMIT}

    @api.post("/projects/{project}/train", status_code=202)
    def train(project: str, body: Train) -> dict[str, Any]:
        classes = [c for c in store.classes(project) if c["images"] > 0]
        if len(classes) < 2:
            raise StudioError(409, f"project {project!r} has {len(classes)} class(es) with images; add at least 2 "
                                   f"classes with a few images each (10 or more) before training")
        defaults = default_settings()
        settings = TrainSettings(body.recipe or defaults.recipe, body.epochs or defaults.epochs,
                                 body.image_size or defaults.image_size, body.augment or None, body.model or None)
        return queue.view(queue.submit(project, settings))

    @api.get("/jobs")
    def jobs() -> dict[str, Any]:
        return {"jobs": [queue.view(j) for j in list(queue.jobs)]}

    @api.get("/jobs/stream")
    async def stream(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            last = None
            while not await request.is_disconnected():
                views = await run_in_threadpool(lambda: [queue.view(j) for j in list(queue.jobs)])
                text = json.dumps({"jobs": views})
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if not any(v["state"] in ("queued", "running") for v in views):
                    return  # nothing will change until a job is submitted: the page opens a new stream then
                await asyncio.sleep(STREAM_EVERY_S)
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.post("/jobs/{project}/{run}/stop")
    def stop(project: str, run: str) -> dict[str, Any]:
        return queue.view(queue.stop(f"{project}/{run}"))

    @api.post("/jobs/{project}/{run}/resume")
    def resume(project: str, run: str) -> dict[str, Any]:
        return queue.view(queue.resume(f"{project}/{run}"))


def _run_routes(api: APIRouter, store: ProjectStore, queue: JobQueue, models: RunModels, bodies: Budget,
                budget: Budget, max_pixels: int, max_bytes: int) -> None:
    def run_dir(project: str, run: str) -> Path:
        folder = store.project(project) / "runs" / check_name(run, "run")
        if not (folder / "config.json").is_file():
            raise StudioError(404, f"project {project!r} has no run {run!r}; pick one from the list of runs")
        return folder

    @api.get("/projects/{project}/runs/{run}/evaluation")
    def evaluation(project: str, run: str) -> dict[str, Any]:
        folder = run_dir(project, run)
        files = store.project(project) / ".studio" / "files" / f"{run}.json"
        return evaluate_run(models.get(folder), store.project(project) / "data", files, folder)

    @api.post("/projects/{project}/runs/{run}/predict")
    async def predict(project: str, run: str, request: Request) -> dict[str, Any]:
        inference = await run_in_threadpool(models.get, run_dir(project, run))
        decoder = ImageDecoder(inference.card.input_shape, max_pixels, budget)
        try:
            uploads, pixels = await receive_images(request, bodies, decoder, max_bytes, 1)
        finally:
            decoder.close()
        top = await run_in_threadpool(top_classes, inference, pixels)
        return {"run": run, "filename": uploads[0].filename, "top": top[0]}

    @api.post("/projects/{project}/runs/{run}/export")
    def export(project: str, run: str, body: Export | None = None) -> dict[str, Any]:
        folder = run_dir(project, run)
        if not (folder / "model.safetensors").is_file():
            raise StudioError(409, f"run {run!r} has not finished; export it when it has a model")
        quantize = body.quantize if body is not None else None
        if quantize not in (None, "int8"):
            raise StudioError(422, f"quantize must be int8 (or left out, for fp32); got {quantize!r}")
        return export_int8(folder) if quantize == "int8" else export_bundle(folder)

    @api.get("/projects/{project}/runs/{run}/files/{name}")
    def download(project: str, run: str, name: str) -> FileResponse:
        path = run_dir(project, run) / name
        if name not in DOWNLOADS or not path.is_file():
            raise StudioError(404, f"run {run!r} has no file {name[:60]!r} to download; export it first "
                                   f"(downloads: {', '.join(DOWNLOADS)})")
        return FileResponse(path, media_type=DOWNLOADS[name], filename=f"{project}-{run}-{name}")

    @api.get("/projects/{project}/runs/{run}/curves.png")
    def curves(project: str, run: str) -> FileResponse:
        path = run_dir(project, run) / "curves.png"
        if not path.is_file():
            raise StudioError(404, f"run {run!r} has no curves yet (they are drawn when it finishes)")
        return FileResponse(path, media_type="image/png")


def _idle(queue: JobQueue, project: str) -> None:
    if queue.busy(project):
        raise StudioError(409, f"project {project!r} has a training queued or running; stop it first, or wait")


def _runs(store: ProjectStore, queue: JobQueue, project: str) -> list[dict[str, Any]]:
    """The project's runs, newest first, as the runs table compares them: every run directory, with its job's
    state when the studio ran it, its settings (model, epochs, image size, augmentation), its test accuracy
    and loss, its training time in seconds and its history (loss and accuracy per epoch)."""
    folder = store.project(project) / "runs"
    jobs = {j.run: j for j in list(queue.jobs) if j.project == project}
    found = []
    for run in sorted((r for r in folder.iterdir() if r.is_dir()), key=lambda r: r.name, reverse=True):
        metrics = read_json_dict(run / "metrics.json")
        config = read_json_dict(run / "config.json")
        job = jobs.get(run.name)
        history = read_history(run / "history.csv")
        found.append({"name": run.name, "state": job.state if job else ("done" if metrics else "stopped"),
                      "recipe": config.get("recipe"), "model": config.get("model"), "epochs": config.get("epochs"),
                      "epochs_run": len(history), "image_size": _side(config.get("image_size")),
                      "augment": config.get("augment") or None,
                      "test_accuracy": metrics.get("test_accuracy"), "val_accuracy": metrics.get("val_accuracy"),
                      "test_loss": metrics.get("test_loss"), "train_seconds": metrics.get("train_seconds"),
                      "history": history,
                      "finished": bool(metrics), "exported": (run / ZIP_NAME).is_file()})
    return found


def _side(size: object) -> object:
    """A square image size as one number (`[128, 128]` -> 128), any other size as it is.

    >>> _side([128, 128]), _side([64, 32]), _side(None)
    (128, [64, 32], None)
    """
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        return size[0]
    return size


def run_studio(projects_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
               api_key: str | None = None, ready: Callable[[str], None] | None = None) -> None:
    """Check the address and key, bind, then serve the studio until interrupted.

    Everything that can fail at start-up fails before uvicorn starts, as one CnnlabError.

    >>> run_studio("projects", host="0.0.0.0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    cnnlab.errors.CnnlabError: --host 0.0.0.0 is reachable from other machines, and no API key was given; ...
    """
    server, sock = build_server(str(projects_dir), host, port, api_key, app_factory=create_studio_app, lock=True)
    serve_forever(server, sock, ready)
