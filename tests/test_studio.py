"""`cnnlab studio` (issue 21): the API a learner's browser uses, on real photos.

Contracts: names that could leave the projects folder are refused; uploads follow `cnnlab serve`'s
rules (its hostile files are refused with the same statuses) and are stored under content-hash
names, once; nothing is deleted, only moved to a trash folder; a project trained from the studio
reaches a high accuracy on real Imagenette photos and the Evaluate page's accuracy is the run's own
test accuracy; the queue runs one job at a time and survives a restart; a studio killed during a
training leaves the run training, and a run killed too resumes from its checkpoint when the studio
starts again; the exported zip's predict.py gives onnxruntime's answer for the exported model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.studio.app import create_studio_app
from cnnlab.studio.jobs import JobQueue, TrainSettings
from cnnlab.studio.projects import THUMBNAIL_SIZE, stored_name

sys.path.insert(0, str(Path(__file__).parent))
import test_serve as serve_tests  # noqa: E402  (its hostile uploads, written once)

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "imagenette-224" / "imagenette-224.tar.gz"
CLASSES = ("church", "golf_ball")
PER_CLASS = 30
needs_photos = pytest.mark.skipif(not IMAGENETTE.is_file(), reason="needs ../shared/datasets/imagenette-224")


def photos(folder: Path, per_class: int = PER_CLASS) -> dict[str, list[Path]]:
    """The first `per_class` Imagenette val photos of CLASSES, extracted into `folder` (each class once per folder)."""
    found: dict[str, list[Path]] = {}
    with tarfile.open(IMAGENETTE) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        for name in CLASSES:
            chosen = [m for m in members if m.name.startswith(f"imagenette-224/val/{name}/")][:per_class]
            tar.extractall(folder, members=chosen, filter="data")
            found[name] = [folder / m.name for m in chosen]
    return found


def _png(color: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _files(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _upload(client: TestClient, project: str, name: str, paths: list[Path]) -> int:
    added = 0
    for start in range(0, len(paths), 16):  # serve's 16 files a request
        response = client.post(f"/api/projects/{project}/classes/{name}/images",
                               files=_files(*[(p.name, p.read_bytes()) for p in paths[start:start + 16]]))
        assert response.status_code == 200, response.text
        added += response.json()["added"]
    return added


def _wait_job(client: TestClient, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = next(j for j in client.get("/api/jobs").json()["jobs"] if j["id"] == job_id)
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture
def client(tmp_path):
    with TestClient(create_studio_app(tmp_path / "projects", max_files=6, max_bytes=1_000_000,
                                      max_pixels=1_000_000)) as c:
        yield c


BAD_NAMES = ["", "a/b", "..", ".", ".hidden", "a\\b", " lead", "trail ", "x" * 65, "tab\tname", "nul\0", "_under"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_are_not_plain_folder_names_get_a_one_line_400(client, name):
    response = client.post("/api/projects", json={"name": name})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "\n" not in detail and "is not allowed" in detail and "e.g. 'my-flowers'" in detail
    client.post("/api/projects", json={"name": "ok"})
    response = client.post("/api/projects/ok/classes", json={"name": name})
    assert response.status_code == 400 and "class name" in response.json()["detail"]
    assert [p.name for p in client.app.state.store.root.iterdir() if not p.name.startswith(".")] == ["ok"]


def test_projects_are_listed_created_renamed_and_deleted_into_the_trash(client):
    root = client.app.state.store.root
    assert client.post("/api/projects", json={"name": "flowers"}).status_code == 201
    assert client.post("/api/projects", json={"name": "flowers"}).status_code == 409
    assert client.post("/api/projects/flowers/classes", json={"name": "tulip"}).status_code == 201
    client.post("/api/projects/flowers/classes/tulip/images", files=_files(("t.png", _png("red"))))
    assert client.get("/api/projects").json()["projects"] == [{"name": "flowers", "classes": 1, "images": 1, "runs": 0}]
    assert client.patch("/api/projects/flowers", json={"name": "garden"}).status_code == 200
    assert (root / "garden" / "data" / "tulip").is_dir() and not (root / "flowers").exists()
    assert client.get("/api/projects/flowers").status_code == 404
    assert client.delete("/api/projects/garden").status_code == 200
    assert client.get("/api/projects").json()["projects"] == []
    kept = list((root / ".trash").iterdir())  # deleted, not erased: the photo is still there
    assert len(kept) == 1 and kept[0].name.startswith("garden-")
    assert len(list((kept[0] / "data" / "tulip").iterdir())) == 1


@pytest.mark.parametrize("case", [c for c in serve_tests.BAD_REQUESTS if not c.startswith("top_k")])
def test_hostile_uploads_are_refused_as_serve_refuses_them(client, case):
    status, request = serve_tests.BAD_REQUESTS[case]
    client.post("/api/projects", json={"name": "p"})
    client.post("/api/projects/p/classes", json={"name": "c"})
    response = client.post("/api/projects/p/classes/c/images", **request)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and 10 < len(detail) < 300
    assert list((client.app.state.store.root / "p" / "data" / "c").iterdir()) == []  # nothing written


def test_uploads_get_server_made_names_are_stored_once_and_listed_in_pages(client):
    root = client.app.state.store.root
    client.post("/api/projects", json={"name": "p"})
    for name in ("red", "blue"):
        client.post("/api/projects/p/classes", json={"name": name})
    red = _png("red")
    first = client.post("/api/projects/p/classes/red/images",
                        files=_files(("../../escape.png", red), ("a.png", _png("orange")), ("b.png", _png("pink"))))
    assert first.status_code == 200 and first.json()["added"] == 3
    stored = sorted(p.name for p in (root / "p" / "data" / "red").iterdir())
    assert all(len(name) == 24 and name.endswith(".png") for name in stored)  # 20 hex digits + .png
    assert not list(root.parent.glob("escape*")) and not list(root.glob("**/escape*"))
    again = client.post("/api/projects/p/classes/blue/images",
                        files=_files(("copy.png", red), ("new.png", _png("navy"))))
    body = again.json()
    assert body["added"] == 1 and body["stored"][0]["duplicate_of"].startswith("red/")  # in another class: once
    assert len(list((root / "p" / "data" / "blue").iterdir())) == 1

    page = client.get("/api/projects/p/classes/red/images", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 3 and page["images"] == stored[1:3]
    assert client.get("/api/projects/p/classes/red/images", params={"limit": 0}).status_code == 422

    thumb = client.get(f"/api/projects/p/classes/red/thumbs/{stored[0]}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= THUMBNAIL_SIZE
    cached = list((root / "p" / ".thumbs").glob("*/*.jpg"))
    assert len(cached) == 1
    made = cached[0].stat().st_mtime_ns
    client.get(f"/api/projects/p/classes/red/thumbs/{stored[0]}")
    assert cached[0].stat().st_mtime_ns == made  # made once
    assert client.get("/api/projects/p/classes/red/thumbs/..%2F..%2Fx.png").status_code in (400, 404)

    moved = client.post("/api/projects/p/classes/red/move", json={"images": stored[:1], "to": "blue"})
    assert moved.json()["moved"] == 1 and (root / "p" / "data" / "blue" / stored[0]).is_file()
    assert client.post("/api/projects/p/classes/red/delete", json={"images": stored[1:2]}).json()["deleted"] == 1
    assert (root / "p" / ".trash" / "images" / "red" / stored[1]).is_file()  # in the trash, not erased
    classes = client.get("/api/projects/p").json()["classes"]
    assert classes == [{"name": "blue", "images": 2}, {"name": "red", "images": 1}]
    missing = client.post("/api/projects/p/classes/red/move", json={"images": ["nope.png"], "to": "blue"})
    assert missing.status_code == 404


def test_the_health_check_reports_a_photo_in_two_classes(client):
    root = client.app.state.store.root
    client.post("/api/projects", json={"name": "p"})
    for name in ("a", "b"):
        client.post("/api/projects/p/classes", json={"name": name})
        client.post(f"/api/projects/p/classes/{name}/images", files=_files(("x.png", _png("green"))))
    # the studio stores a photo once; one copied in from the command line is found by the check
    data = _png("green")
    (root / "p" / "data" / "b" / "copied.png").write_bytes(data)
    report = client.get("/api/projects/p/check").json()
    assert report["root"] == "p" and report["duplicates"]["across_classes"]
    assert any("same image in different classes" in p and "b/copied.png" in p for p in report["problems"])


def test_training_needs_two_classes_with_photos(client):
    client.post("/api/projects", json={"name": "p"})
    client.post("/api/projects/p/classes", json={"name": "only"})
    response = client.post("/api/projects/p/train", json={})
    assert response.status_code == 409 and "at least 2" in response.json()["detail"]


# importing a folder or archive on the server's disk -----------------------------------------------------------
def _wait_import(client: TestClient, project: str, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/projects/{project}/imports/{name}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    pytest.fail(f"import {name} did not finish in {timeout} s")


def _stored(path: Path) -> str:
    return stored_name(path.read_bytes(), "JPEG")  # Imagenette photos are JPEGs


@needs_photos
def test_a_folder_is_imported_with_hostile_files_refused_and_duplicates_stored_once(client, tmp_path):
    found = photos(tmp_path / "photos", 12)
    val = tmp_path / "photos" / "imagenette-224" / "val"
    (val / "church" / "notes.jpg").write_text("hello, I am text")
    (val / "church" / "bomb.png").write_bytes(serve_tests._bomb())
    (val / "church" / "link.jpg").symlink_to("/etc/passwd")
    (val / "golf_ball" / "cut.png").write_bytes(serve_tests._truncated_png())
    (val / "golf_ball" / "huge.png").write_bytes(b"\x89PNG" + bytes(1_100_000))  # over the client's 1 MB
    (val / "golf_ball" / "copy.JPEG").write_bytes(found["church"][3].read_bytes())  # a church photo, again
    (tmp_path / "photos" / "stray.png").write_bytes(_png("red"))
    (val / "_bad").mkdir()
    (val / "_bad" / "x.png").write_bytes(_png("blue"))
    client.post("/api/projects", json={"name": "places"})
    client.post("/api/projects/places/classes", json={"name": "church"})
    _upload(client, "places", "church", found["church"][:1])  # uploaded before: the import stores it once
    assert client.post("/api/projects/places/import", json={"path": "photos"}).status_code == 422
    assert client.post("/api/projects/places/import", json={"path": str(tmp_path / "no")}).status_code == 404
    assert client.post("/api/projects/places/import", json={"path": str(val / "church" / "notes.jpg")}
                       ).status_code == 422
    response = client.post("/api/projects/places/import", json={"path": str(tmp_path / "photos")})
    assert response.status_code == 202 and response.json()["total"] == 32
    job = _wait_import(client, "places", response.json()["id"].split("/")[1])
    assert job["state"] == "done" and job["done"] == 32 and job["error"] is None
    assert (job["added"], job["duplicates"], job["refused_count"], job["missing_count"]) == (23, 2, 7, 0)
    reasons = {r["file"].rsplit("/", 1)[-1]: r["reason"] for r in job["refused"]}
    assert sorted(reasons) == ["bomb.png", "cut.png", "huge.png", "link.jpg", "notes.jpg", "stray.png", "x.png"]
    assert "is not a JPEG, PNG, WebP, BMP or GIF image" in reasons["notes.jpg"]
    assert "too many pixels" in reasons["bomb.png"] and "damaged or truncated" in reasons["cut.png"]
    assert "is a link" in reasons["link.jpg"] and "not inside a class folder" in reasons["stray.png"]
    assert "class name '_bad' is not allowed" in reasons["x.png"]
    assert "over the limit of 1,000,000 bytes" in reasons["huge.png"]
    assert all("\n" not in r for r in reasons.values())
    church, golf = _stored(found["church"][3]), _stored(found["church"][0])
    assert sorted((d["file"].rsplit("/", 1)[-1], d["duplicate_of"]) for d in job["duplicate_files"]) == sorted(
        [("copy.JPEG", f"church/{church}"), (found["church"][0].name, f"church/{golf}")])
    data = client.app.state.store.root / "places" / "data"
    for name, paths in found.items():  # exactly the photos, under their content names, nothing else
        assert sorted(p.name for p in (data / name).iterdir()) == sorted(_stored(p) for p in paths)
    assert sorted(p.name for p in data.iterdir()) == ["church", "golf_ball"]
    listed = client.get("/api/projects/places/imports").json()["imports"]
    assert [i["id"] for i in listed] == [job["id"]] and "files" not in listed[0]


@needs_photos
def test_an_archive_is_read_without_extracting_and_an_interrupted_import_continues_at_the_next_start(tmp_path):
    found = photos(tmp_path / "photos", 10)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, paths in found.items():
            for p in paths:
                z.write(p, f"{name}/{p.name}")
        z.writestr("../../outside.png", _png("red"))  # a hostile member name: only ever a name
    root = tmp_path / "projects"
    with TestClient(create_studio_app(root)) as client:
        client.post("/api/projects", json={"name": "places"})
        importer = client.app.state.importer
        handled = []
        real_one = importer._one

        def stop_after_8(job, reader, name, label):  # the studio stops after the 8th file ...
            real_one(job, reader, name, label)
            handled.append(name)
            if len(handled) == 8:
                importer.closing = True
        importer._one = stop_after_8
        job = importer.submit("places", str(archive))
        importer.wait(job, 60)
        saved = json.loads((root / "places" / ".studio" / "imports" / f"{job.id.split('/')[1]}.json").read_text())
        assert saved["state"] == "running" and saved["done"] == 8 and (saved["added"], saved["refused_count"]) == (7, 1)
    # ... and while it is stopped, three files not yet imported leave the archive
    gone = [f"golf_ball/{p.name}" for p in found["golf_ball"][-3:]]
    smaller = tmp_path / "smaller.zip"
    with zipfile.ZipFile(archive) as z, zipfile.ZipFile(smaller, "w") as out:
        for info in z.infolist():
            if info.filename not in gone:
                out.writestr(info, z.read(info))
    os.replace(smaller, archive)
    with TestClient(create_studio_app(root)) as client:  # the next start continues where it stopped
        view = _wait_import(client, "places", job.id.split("/")[1])
    assert view["state"] == "incomplete" and view["done"] == view["total"] == 21
    assert sorted(view["missing"]) == sorted(gone) and view["missing_count"] == 3
    assert (view["added"], view["duplicates"], view["refused_count"]) == (17, 0, 1)
    assert view["refused"][0]["file"] == "../../outside.png"
    assert not (tmp_path / "outside.png").exists() and not (root / "outside.png").exists()
    data = root / "places" / "data"
    kept = {name: [p for p in paths if f"{name}/{p.name}" not in gone] for name, paths in found.items()}
    for name, paths in kept.items():
        assert sorted(p.name for p in (data / name).iterdir()) == sorted(_stored(p) for p in paths)


# a project trained from the studio --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project of 2 x 30 real photos uploaded through the API and trained with the default settings."""
    folder = tmp_path_factory.mktemp("studio-trained")
    found = photos(folder / "photos")
    with TestClient(create_studio_app(folder / "projects")) as client:
        assert client.post("/api/projects", json={"name": "places"}).status_code == 201
        for name, paths in found.items():
            client.post("/api/projects/places/classes", json={"name": name})
            assert _upload(client, "places", name, paths) == PER_CLASS
        job = client.post("/api/projects/places/train", json={}).json()
        assert job["settings"]["recipe"] == "transfer"  # the default, its weights are installed here
        done = _wait_job(client, job["id"])
        yield client, done, found


@needs_photos
def test_one_click_training_learns_real_photos_and_evaluate_shows_the_runs_own_accuracy(trained):
    client, job, _ = trained
    assert job["state"] == "done", job
    run = client.app.state.store.root / "places" / "runs" / job["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert job["test_accuracy"] == metrics["test_accuracy"] >= 0.9
    with open(run / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == len(job["history"]) >= 1
    evaluation = client.get(f"/api/projects/places/runs/{job['run']}/evaluation").json()
    assert evaluation["test_images"] == 12  # 20% of 60
    assert evaluation["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    confusion = np.array(evaluation["confusion"])
    assert confusion.sum() == 12 and np.trace(confusion) == round(12 * metrics["test_accuracy"])
    for key, images in evaluation["cells"].items():
        actual, predicted = map(int, key.split(","))
        assert len(images) == confusion[actual, predicted]
        assert all(i["class"] == CLASSES[actual] and i["predicted"] == CLASSES[predicted] for i in images)
    project = client.get("/api/projects/places").json()
    assert project["runs"][0]["name"] == job["run"] and project["runs"][0]["finished"]


@needs_photos
def test_a_photo_is_predicted_as_the_run_predicts_it(trained):
    client, job, found = trained
    photo = found["golf_ball"][-1]
    response = client.post(f"/api/projects/places/runs/{job['run']}/predict",
                           files=_files((photo.name, photo.read_bytes())))
    top = response.json()["top"]
    assert top[0]["class"] == "golf_ball" and top[0]["probability"] > 0.5
    assert sum(t["probability"] for t in top) == pytest.approx(1, abs=1e-4)
    bad = client.post(f"/api/projects/places/runs/{job['run']}/predict", files=_files(("x.png", b"text")))
    assert bad.status_code == 415


@needs_photos
def test_the_export_zips_predict_py_gives_onnxruntimes_answer(trained, tmp_path):
    from cnnlab.export.runtime import OnnxClassifier
    from cnnlab.data.images import read_pixels

    client, job, found = trained
    report = client.post(f"/api/projects/places/runs/{job['run']}/export").json()
    assert report["parity"]["top1_agreement"] == 1.0 and report["parity"]["max_abs_diff"] < 1e-3
    archive = client.get(f"/api/projects/places/runs/{job['run']}/files/studio-export.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert sorted(z.namelist()) == ["README.txt", "classes.txt", "model.onnx", "predict.py"]
        assert len(z.read("predict.py").decode().splitlines()) <= 25
        z.extractall(tmp_path / "bundle")
    assert (tmp_path / "bundle" / "classes.txt").read_text().split() == list(CLASSES)
    shots = [found["church"][0], found["golf_ball"][0]]
    # predict.py alone: no cnnlab, no torch on its path (-I: isolated, only the site packages)
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "bundle" / "predict.py"), *map(str, shots)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    onnx = OnnxClassifier(tmp_path / "bundle" / "model.onnx")
    for line, shot in zip(lines, shots, strict=True):
        probs = onnx.predict_proba(read_pixels(shot, 3, (224, 224))[None])[0]
        best = int(np.argmax(probs))
        name, value = line.split(": ")[1].split(", ")[0].split(" ")
        assert name == CLASSES[best] and float(value) == pytest.approx(float(probs[best]), abs=1e-3)


@needs_photos
def test_relabelling_a_test_photo_moves_it_and_evaluation_counts_it_under_its_new_class(trained):
    client, job, _ = trained
    before = client.get(f"/api/projects/places/runs/{job['run']}/evaluation").json()
    photo = before["cells"]["0,0"][0]  # a church photo: pretend it was mislabelled
    moved = client.post(f"/api/projects/places/classes/{photo['class']}/move",
                        json={"images": [photo["name"]], "to": "golf_ball"})
    assert moved.status_code == 200
    after = client.get(f"/api/projects/places/runs/{job['run']}/evaluation").json()
    assert after["test_images"] == before["test_images"]
    rows_before, rows_after = np.array(before["confusion"]).sum(1), np.array(after["confusion"]).sum(1)
    assert list(rows_after) == [rows_before[0] - 1, rows_before[1] + 1]
    assert any(i["name"] == photo["name"] for i in after["cells"]["1,0"])  # a golf ball the model calls a church


@needs_photos
def test_the_int8_export_reports_its_parity_on_the_runs_test_photos(trained, tmp_path):
    from cnnlab.export.runtime import OnnxClassifier

    client, job, _ = trained
    url = f"/api/projects/places/runs/{job['run']}/export"
    assert client.post(url, json={"quantize": "fp16"}).status_code == 422
    answer = client.post(url, json={"quantize": "int8"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    parity = report["parity"]
    metrics = json.loads((client.app.state.store.root / "places" / "runs" / job["run"] / "metrics.json").read_text())
    assert parity["test_images"] == 12 and parity["calibration_images"] > 0  # the run's own test split: 20% of 60
    assert parity["top1_agreement"] >= 11 / 12 and parity["accuracy"]["int8"] >= 0.8  # one borderline photo may flip
    # the run scored its 12 test photos in bf16; the fp32 ONNX graph may read a borderline one otherwise, and the
    # relabelling test before this one moved one of them to the other class: two photos' worth of difference
    assert parity["accuracy"]["fp32"] == pytest.approx(metrics["test_accuracy"], abs=2 / 12 + 1e-9)
    assert report["int8_bytes"] < parity["fp32_bytes"] / 2  # int8 weights: about a quarter of fp32's
    download = client.get(f"/api/projects/places/runs/{job['run']}/files/model-int8.onnx")
    assert download.status_code == 200 and len(download.content) == report["int8_bytes"]
    (tmp_path / "m.onnx").write_bytes(download.content)
    probs = OnnxClassifier(tmp_path / "m.onnx").predict_proba(np.zeros((1, 3, 224, 224), np.uint8))
    assert probs.shape == (1, 2)
    assert client.post(url, json={"quantize": "int8"}).json() == report  # kept: asked again, the same answer


@needs_photos
def test_the_runs_table_compares_runs_by_settings_accuracy_loss_and_time(trained):
    client, first, _ = trained
    second = client.post("/api/projects/places/train",
                         json={"recipe": "fast", "epochs": 2, "image_size": 64, "augment": "light"}).json()
    second = _wait_job(client, second["id"])
    assert second["state"] == "done", second
    runs = {r["name"]: r for r in client.get("/api/projects/places").json()["runs"]}
    root = client.app.state.store.root / "places" / "runs"
    for job in (first, second):
        row, run = runs[job["run"]], root / job["run"]
        metrics = json.loads((run / "metrics.json").read_text())
        with open(run / "history.csv") as f:
            history = list(csv.DictReader(f))
        assert (row["epochs"], row["image_size"], row["augment"]) == (
            job["settings"]["epochs"], job["settings"]["image_size"], job["settings"]["augment"])
        assert row["test_accuracy"] == metrics["test_accuracy"] and row["test_loss"] == metrics["test_loss"]
        assert row["train_seconds"] == metrics["train_seconds"] > 0
        assert row["epochs_run"] == len(history) == len(row["history"]) >= 1
        for key in ("loss", "val_loss", "accuracy", "val_accuracy"):  # the curves drawn on the Train screen
            assert [h[key] for h in row["history"]] == [float(r[key]) for r in history]
    assert runs[second["run"]]["epochs_run"] == 2 and runs[second["run"]]["model"] != runs[first["run"]]["model"]
    assert list(runs)[:2] == [second["run"], first["run"]]  # newest first


@needs_photos
def test_the_most_confident_mistakes_are_listed_and_one_deleted_leaves_the_evaluation(trained):
    client, job, _ = trained
    url = f"/api/projects/places/runs/{job['run']}/evaluation"
    sure = max(client.get(url).json()["cells"]["1,1"], key=lambda i: i["confidence"])  # a golf ball, surely
    client.post("/api/projects/places/classes/golf_ball/move", json={"images": [sure["name"]], "to": "church"})
    before = client.get(url).json()
    mistakes = before["mistakes"]
    wrong = [i for key, cell in before["cells"].items() if key[0] != key[2] for i in cell]
    assert len(mistakes) == min(12, len(wrong)) and {m["name"] for m in mistakes} <= {i["name"] for i in wrong}
    assert [m["confidence"] for m in mistakes] == sorted((i["confidence"] for i in wrong), reverse=True)[:12]
    assert all(m["class"] != m["predicted"] for m in mistakes)
    # the relabelled photo is now a mistake at its old confidence; the model's most confident correct golf ball
    # ranks at or near the top of the mistakes (a run may hold another mistake as confident, so look it up)
    first = next(m for m in mistakes if m["name"] == sure["name"])
    assert (first["class"], first["predicted"]) == ("church", "golf_ball")
    assert first["confidence"] == pytest.approx(sure["confidence"], abs=1e-9)
    deleted = client.post(f"/api/projects/places/classes/{first['class']}/delete", json={"images": [first["name"]]})
    assert deleted.json() == {"deleted": 1}
    after = client.get(url).json()
    assert after["test_images"] == before["test_images"] - 1
    assert first["name"] not in {m["name"] for m in after["mistakes"]}
    trash = client.app.state.store.root / "places" / ".trash" / "images" / "church" / first["name"]
    assert trash.is_file()  # nothing is lost: the photo is in the project's trash


# the queue -----------------------------------------------------------------------------------------------------
def _small_project(root: Path, name: str, per_class: int = 12) -> None:
    """A project made on disk, as the command line would: two classes of coloured squares."""
    rng = np.random.default_rng(0)
    for cls, channel in (("reds", 0), ("blues", 2)):
        folder = root / name / "data" / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 80, (24, 24, 3), dtype=np.uint8)
            pixels[..., channel] = 160 + rng.integers(0, 90, (24, 24))
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / name / "runs").mkdir()


def test_the_queue_trains_one_job_at_a_time_and_is_restored_from_disk(tmp_path):
    root = tmp_path / "projects"
    _small_project(root, "a")
    _small_project(root, "b")
    queue = JobQueue(root)
    settings = TrainSettings("fast", 2, 24)
    jobs = [queue.submit("a", settings), queue.submit("b", settings), queue.submit("a", settings)]
    assert len({j.id for j in jobs}) == 3
    queue.stop(jobs[2].id)  # taken off the queue before it starts
    queue.start()
    seen_running = []
    deadline = time.monotonic() + 180
    while any(j.state in ("queued", "running") for j in queue.jobs) and time.monotonic() < deadline:
        seen_running.append(sum(j.state == "running" for j in queue.jobs))
        time.sleep(0.1)
    queue.close()
    assert max(seen_running) == 1
    assert [j.state for j in queue.jobs] == ["done", "done", "stopped"]
    assert jobs[0].started < jobs[0].finished <= jobs[1].started  # the second waited for the first
    again = JobQueue(root)  # a studio started later sees the same queue
    assert [(j.id, j.state) for j in again.jobs] == [(j.id, j.state) for j in queue.jobs]
    assert (root / "a" / "runs" / jobs[0].run / "metrics.json").is_file()


# kill the studio during a training ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_studio(root: Path, port: int, log: Path) -> subprocess.Popen:
    """`cnnlab studio` in its own process group, once it answers: its port listens before the app exists."""
    # -X faulthandler: a SIGABRT from _stop_studio writes every thread's stack to the log
    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "cnnlab", "studio", "--dir", str(root),
                                "--port", str(port)], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            _get(port, "/api/projects")
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"the studio did not start: {log.read_text()[-2000:]}")


def _stop_studio(process: subprocess.Popen, log: Path, wait_s: float = 90) -> int:
    """Ctrl-C to the studio's process group; its exit code. A studio still running after `wait_s` fails the
    test with its threads' stacks."""
    try:
        os.killpg(process.pid, signal.SIGINT)
    except ProcessLookupError:  # it ended already
        pass
    try:
        return process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGABRT)
        process.wait(timeout=30)
        pytest.fail(f"the studio did not stop {wait_s:.0f} s after Ctrl-C: {log.read_text()[-6000:]}")


def _get(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def _post(port: int, path: str, body: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@needs_photos
def test_a_killed_studio_leaves_its_run_training_and_a_killed_run_resumes_at_the_next_start(tmp_path):
    root, log = tmp_path / "projects", tmp_path / "studio.log"
    found = photos(tmp_path / "photos", 24)
    for name, paths in found.items():  # a project made on disk: the studio reads the folders
        (root / "places" / "data" / name).mkdir(parents=True)
        for p in paths:
            (root / "places" / "data" / name / p.name).write_bytes(p.read_bytes())
    (root / "places" / "runs").mkdir()
    port = _free_port()
    studio = _start_studio(root, port, log)
    try:
        job = _post(port, "/api/projects/places/train", {"recipe": "fast", "epochs": 20, "image_size": 128})
        run = root / "places" / "runs" / job["run"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            view = next(j for j in _get(port, "/api/jobs")["jobs"] if j["id"] == job["id"])
            if (run / "checkpoint.json").is_file() and len(view["history"]) >= 3:
                break
            time.sleep(0.2)
        training = view["pid"]
        assert view["state"] == "running" and 3 <= len(view["history"]) < 20, view
        os.kill(studio.pid, signal.SIGKILL)  # the studio crashes ...
        studio.wait(timeout=10)
        time.sleep(1)
        assert Path(f"/proc/{training}").exists()  # ... and the run goes on training
        os.killpg(training, signal.SIGKILL)  # then the machine loses the run too
        time.sleep(1)
        assert not (run / "metrics.json").exists() and (run / "checkpoint.json").is_file()
        studio = _start_studio(root, port, log)  # the next start resumes it from its checkpoint
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            view = next(j for j in _get(port, "/api/jobs")["jobs"] if j["id"] == job["id"])
            if view["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        assert view["state"] == "done", view
        log_text = (root / "places" / ".studio" / "logs" / f"{job['run']}.log").read_text()
        assert view["resume"] is True and "--resume" in log_text
        with open(run / "history.csv") as f:
            assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(20))  # every epoch once
    finally:
        _stop_studio(studio, log)


def test_duplicate_detection_lists_the_project_once_per_change_not_once_per_file(tmp_path, monkeypatch):
    from cnnlab.studio import projects as projects_module
    from cnnlab.studio.projects import ProjectStore

    store = ProjectStore(tmp_path)
    store.create_project("p")
    store.create_class("p", "a")
    listings = []
    listed = projects_module._image_names
    monkeypatch.setattr(projects_module, "_image_names", lambda folder: listings.append(folder.name) or listed(folder))
    colours = [f"#{i:02x}{255 - i:02x}40" for i in range(40)]
    for colour in colours:  # one file per call, as an import stores them: one listing in all
        store.add_images("p", "a", [(f"{colour}.png", _png(colour))])
    assert len(listings) == 1 and len(list((tmp_path / "p" / "data" / "a").iterdir())) == 40
    again = store.add_images("p", "a", [("copy.png", _png(colours[7]))])[0]
    assert again.duplicate_of is not None and len(listings) == 1
    # a file put in the folder by someone else (the CLI user copying photos in) is seen: the folder changed
    outside = _png("#123456")
    time.sleep(0.05)  # past the file system's timestamp granularity, as a person copying files in would be
    (tmp_path / "p" / "data" / "a" / stored_name(outside, "PNG")).write_bytes(outside)
    assert store.add_images("p", "a", [("same.png", outside)])[0].duplicate_of is not None
    assert len(listings) == 2


@needs_photos
def test_any_registered_model_trains_from_scratch_with_the_tutorials_recipe(trained):
    client, _, _ = trained
    assert "lenet5" in client.get("/api/settings").json()["models"]
    for body, words in (({"recipe": "seed"}, "recipe seed needs one"),
                        ({"recipe": "fast", "model": "lenet5"}, "with recipe seed"),
                        ({"recipe": "seed", "model": "nope"}, "'nope' is not registered; choose one of: seed-mnist")):
        refused = client.post("/api/projects/places/train", json={"epochs": 1, "image_size": 32, **body})
        assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    job = client.post("/api/projects/places/train",
                      json={"recipe": "seed", "model": "lenet5", "epochs": 1, "image_size": 32}).json()
    job = _wait_job(client, job["id"])
    assert job["state"] == "done", job
    config = json.loads((client.app.state.store.root / "places" / "runs" / job["run"] / "config.json").read_text())
    assert (config["model"], config["recipe"], config["epochs"]) == ("lenet5", "seed", 1)
    row = next(r for r in client.get("/api/projects/places").json()["runs"] if r["name"] == job["run"])
    assert row["model"] == "lenet5" and row["test_accuracy"] is not None


def test_a_studio_killed_during_an_import_continues_it_at_the_next_start_and_stores_each_photo_once(tmp_path):
    root, log, source = tmp_path / "projects", tmp_path / "studio.log", tmp_path / "source"
    rng = np.random.default_rng(0)
    for klass in ("a", "b"):
        (source / klass).mkdir(parents=True)
        for i in range(1500):  # distinct small photos: each is stored once
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(source / klass / f"{i}.png")
    port = _free_port()
    studio = _start_studio(root, port, log)
    try:
        _post(port, "/api/projects", {"name": "p"})
        job = _post(port, "/api/projects/p/import", {"path": str(source)})
        name = job["id"].split("/", 1)[1]
        progress = root / "p" / ".studio" / "imports" / f"{name}.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and json.loads(progress.read_text())["done"] == 0:
            time.sleep(0.02)  # until the job has recorded some progress on disk (it does so every second)
        os.kill(studio.pid, signal.SIGKILL)  # mid-import
        studio.wait(timeout=10)
        saved = json.loads(progress.read_text())
        assert saved["state"] == "running" and 0 < saved["done"] < 3000, saved
        studio = _start_studio(root, port, log)  # the next start continues from the last file recorded
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = _get(port, f"/api/projects/p/imports/{name}")
            if job["state"] != "running":
                break
            time.sleep(0.2)
        assert job["state"] == "done" and job["done"] == job["total"] == 3000, job
        assert job["added"] + job["duplicates"] == 3000 and job["refused_count"] == job["missing_count"] == 0
        for klass in ("a", "b"):  # every photo once: those redone after the kill were found already stored
            assert len(list((root / "p" / "data" / klass).iterdir())) == 1500
    finally:
        _stop_studio(studio, log)


def test_a_second_studio_on_the_same_folder_is_refused_in_one_line(tmp_path):
    root, log = tmp_path / "projects", tmp_path / "studio.log"
    studio = _start_studio(root, _free_port(), log)
    try:
        second = subprocess.run([sys.executable, "-m", "cnnlab", "studio", "--dir", str(root), "--port",
                                 str(_free_port())], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"another cnnlab studio (process {studio.pid}) serves --dir {root}" in lines[0]
        assert studio.poll() is None  # the first goes on
    finally:
        _stop_studio(studio, log)
    _stop_studio(_start_studio(root, _free_port(), log), log)  # once it stopped, the folder is free


def test_pages_of_a_class_list_its_folder_once_per_change(tmp_path, monkeypatch):
    from cnnlab.studio import projects as projects_module
    from cnnlab.studio.projects import ProjectStore

    store = ProjectStore(tmp_path)
    store.create_project("p")
    store.create_class("p", "a")
    store.add_images("p", "a", [(f"{i}.png", _png(f"#{i:02x}8040")) for i in range(30)])
    listings = []
    listed = projects_module._image_names
    monkeypatch.setattr(projects_module, "_image_names", lambda folder: listings.append(folder.name) or listed(folder))
    pages = [store.images("p", "a", offset, 10)["images"] for offset in (0, 10, 20)]
    assert len(listings) == 1 and len({n for page in pages for n in page}) == 30
    time.sleep(0.05)  # past the file system's timestamp granularity
    store.delete_images("p", "a", pages[0][:3])
    assert store.images("p", "a", 0, 100)["total"] == 27 and len(listings) == 2
