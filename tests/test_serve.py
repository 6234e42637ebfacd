"""`cnnlab serve`: the JSON API's contract, its refusals (always 4xx, one line), batching and API keys."""

import asyncio
import io
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset, read_image
from cnnlab.errors import CnnlabError
from cnnlab.serve import LoadedModel, MicroBatcher, check_bind, create_app, load_predictor
from cnnlab.serve.app import STATIC
from cnnlab.serve.uploads import Upload, decode_upload

FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}


@pytest.fixture(scope="module")
def client(served_run):
    app = create_app(served_run, max_files=6, max_bytes=1_000_000, max_pixels=1_000_000)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def digit(served_run, tmp_path_factory):
    """A test-set digit the model classifies correctly, saved in all five formats: (label, {ext: path})."""
    test = load_dataset("digits", split="test")
    model = load_predictor(served_run)
    probs = model.predict_proba(test.images[:50])
    index = next(i for i in range(50) if probs[i].argmax() == int(test.labels[i]))
    folder = tmp_path_factory.mktemp("digit")
    image = Image.fromarray(test.images[index, 0].numpy())  # (28, 28) uint8, white digit on black
    paths = {}
    for ext, fmt in FORMATS.items():
        paths[ext] = folder / f"digit.{ext}"
        image.save(paths[ext], fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return test.class_names[int(test.labels[index])], paths


def _png(size, mode="L"):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def _files(*items):
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def test_health_and_model_card_describe_the_run(client, served_run):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == served_run.name and health["api_key_required"] is False
    card = client.get("/model").json()
    assert card["class_names"] == [str(i) for i in range(10)]
    assert card["input_size"] == {"height": 28, "width": 28, "channels": 1}
    saved = json.loads((served_run / "model.json").read_text())
    assert card["metrics"]["test_accuracy"] == saved["metrics"]["test_accuracy"] > 0.5
    assert {"cnnlab", "torch"} <= set(card["versions"]) and card["runtime"] == "torch"
    curves = client.get(card["curves"])
    assert curves.headers["content-type"] == "image/png"
    assert curves.content == (served_run / "curves.png").read_bytes()


def test_a_bare_model_file_has_no_curves(served_run, tmp_path):
    for name in ("model.safetensors", "model.json"):
        (tmp_path / name).write_bytes((served_run / name).read_bytes())
    with TestClient(create_app(tmp_path / "model.safetensors")) as c:
        assert c.get("/model").json()["curves"] is None
        response = c.get("/model/curves.png")
        assert response.status_code == 404 and "curves.png" in response.json()["detail"]


def test_all_five_formats_in_one_request_give_the_same_answer_as_predict(client, digit, served_run):
    label, paths = digit
    response = client.post("/predict", params={"top_k": 10},
                           files=_files(*((p.name, p.read_bytes()) for p in paths.values())))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["filename"] for p in predictions] == [p.name for p in paths.values()]
    model = load_predictor(served_run)
    for prediction, path in zip(predictions, paths.values(), strict=True):
        probs = [t["probability"] for t in prediction["top"]]
        assert len(probs) == 10 and probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
        assert prediction["top"][0]["class"] == label  # every format, JPEG's loss included
        reference = model.predict_proba(read_image(path, channels=1, size=(28, 28))[None])[0]
        by_class = {t["class"]: t["probability"] for t in prediction["top"]}
        if path.suffix != ".jpg":  # lossless formats: exactly the pixels `cnnlab predict` sees
            assert [by_class[str(i)] for i in range(10)] == pytest.approx(reference.tolist(), abs=1e-6)


def test_uploads_decode_exactly_like_read_image(tmp_path):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF: rotate 90 degrees when shown
    variants = {"rot.jpg": (photo, {"exif": exif}), "rgba.png": (photo.convert("RGBA"), {}),
                "palette.gif": (photo.convert("P"), {}), "gray.bmp": (photo.convert("L"), {}),
                "photo.webp": (photo, {})}
    for name, (image, options) in variants.items():
        image.save(tmp_path / name, **options)
        data = (tmp_path / name).read_bytes()
        for channels, size in ((1, (28, 28)), (3, (32, 32))):
            assert torch.equal(decode_upload(Upload(name, data), channels, size, 10_000),
                               read_image(tmp_path / name, channels=channels, size=size)), name
    upright = decode_upload(Upload("rot.jpg", (tmp_path / "rot.jpg").read_bytes()), 3, (40, 30), 10_000)
    assert upright.shape == (3, 40, 30)


def _bomb():
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, "PNG")  # 400 megapixels in ~50 KB
    return buf.getvalue()


def _truncated_png():
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(data, "PNG")
    return data.getvalue()[:2000]


BAD_REQUESTS = {
    "json body": (415, dict(json={"files": "x"})),
    "form-urlencoded": (415, dict(data={"files": "x"})),
    "empty body": (400, dict(content=b"", headers={"content-type": "multipart/form-data; boundary=abc"})),
    "no boundary": (400, dict(content=b"--abc--", headers={"content-type": "multipart/form-data"})),
    "garbage multipart": (400, dict(content=b"garbage", headers={"content-type": "multipart/form-data; boundary=x"})),
    "not an image": (415, dict(files=_files(("notes.png", b"hello, I am text")))),
    "empty file": (400, dict(files=_files(("empty.png", b"")))),
    "truncated png": (400, dict(files=_files(("cut.png", _truncated_png())))),
    "truncated header": (400, dict(files=_files(("head.png", _png((28, 28))[:20])))),
    "too many pixels": (413, dict(files=_files(("wide.png", _png((1001, 1000)))))),
    "decompression bomb": (413, dict(files=_files(("bomb.png", _bomb())))),
    "too many files": (413, dict(files=_files(*[(f"{i}.png", _png((28, 28))) for i in range(7)]))),
    "body too large": (413, dict(files=_files(("big.png", b"\x89PNG" + bytes(1_100_000))))),
    "text field": (400, dict(data={"note": "hi"}, files=_files(("a.png", _png((28, 28)))))),
    "top_k zero": (422, dict(params={"top_k": 0}, files=_files(("a.png", _png((28, 28)))))),
    "top_k text": (422, dict(params={"top_k": "many"}, files=_files(("a.png", _png((28, 28)))))),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_with_a_one_line_reason(client, case):
    status, request = BAD_REQUESTS[case]
    response = client.post("/predict", **request)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and 10 < len(detail) < 300


def test_uploads_stay_in_memory_even_when_large(served_run, monkeypatch):
    import tempfile

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (900, 900, 3), dtype=np.uint8)).save(buf, "PNG")
    assert len(buf.getvalue()) > 2 * 1024 * 1024  # over Starlette's 1 MB spooling threshold
    with TestClient(create_app(served_run, max_bytes=4 * 1024 * 1024)) as c:
        response = c.post("/predict", files=_files(("big.png", buf.getvalue())))
    assert response.status_code == 200, response.text


def test_top_k_defaults_to_the_servers_and_can_be_asked_for(served_run, digit):
    data = digit[1]["png"].read_bytes()
    with TestClient(create_app(served_run, top_k=2)) as c:
        assert len(c.post("/predict", files=_files(("a.png", data))).json()["predictions"][0]["top"]) == 2
        assert len(c.post("/predict?top_k=4", files=_files(("a.png", data))).json()["predictions"][0]["top"]) == 4
        assert len(c.post("/predict?top_k=50", files=_files(("a.png", data))).json()["predictions"][0]["top"]) == 10


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(served_run, digit):
    real = load_predictor(served_run)
    calls = []

    def counting(images):
        calls.append(len(images))
        return real.predict_proba(images)

    app = create_app(LoadedModel(real.card, counting, real.path, real.curves, "torch"), max_wait_ms=200)
    test = load_dataset("digits", split="test")
    pngs = []
    for i in range(8):
        buf = io.BytesIO()
        Image.fromarray(test.images[i, 0].numpy()).save(buf, "PNG")
        pngs.append(buf.getvalue())

    async def eight_clients():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/predict?top_k=10", files=_files((f"{i}.png", p)))
                                          for i, p in enumerate(pngs)))

    responses = asyncio.run(eight_clients())
    assert sum(calls) == 8 and len(calls) < 8  # grouped: fewer model calls than requests
    expected = real.predict_proba(test.images[:8])
    for i, response in enumerate(responses):
        top = {t["class"]: t["probability"] for t in response.json()["predictions"][0]["top"]}
        assert [top[str(c)] for c in range(10)] == pytest.approx(expected[i].tolist(), abs=1e-5)


def test_batcher_never_exceeds_max_images_and_passes_model_errors_on():
    sizes = []

    def model(x):
        sizes.append(len(x))
        if len(x) == 1:
            raise RuntimeError("model broke")
        return np.arange(len(x), dtype=np.float32)[:, None]

    async def submit(batcher, counts):
        jobs = [batcher.predict(torch.zeros(n, 1, 2, 2, dtype=torch.uint8)) for n in counts]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(submit(MicroBatcher(model, max_images=5, max_wait_ms=50), [2, 2, 2, 2]))
    assert sizes == [4, 4]  # 2+2 fit into 5, a third 2 would not
    assert [r[:, 0].tolist() for r in results] == [[0, 1], [2, 3], [0, 1], [2, 3]]  # each job gets its rows
    sizes.clear()
    results = asyncio.run(submit(MicroBatcher(model, max_images=5, max_wait_ms=0), [1]))
    assert sizes == [1] and isinstance(results[0], RuntimeError)


def test_api_key_is_required_on_everything_that_reveals_the_model(served_run, digit):
    data = digit[1]["png"].read_bytes()
    with TestClient(create_app(served_run, api_key="s3cret")) as c:
        assert c.get("/health").json()["api_key_required"] is True
        for shell in ("/", "/docs", "/static/app.js"):  # page shells: no model data, they ask for the key
            assert c.get(shell).status_code == 200, shell
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cre"}, {"Authorization": "Bearer nope"},
                        {"Authorization": "Basic s3cret"}):
            response = c.post("/predict", files=_files(("a.png", data)), headers=headers)
            assert response.status_code == 401 and "API key" in response.json()["detail"], headers
            for path in ("/model", "/model/curves.png", "/openapi.json"):
                response = c.get(path, headers=headers)
                assert response.status_code == 401 and "API key" in response.json()["detail"], (path, headers)
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"}):
            assert c.post("/predict", files=_files(("a.png", data)), headers=headers).status_code == 200
            for path in ("/model", "/model/curves.png", "/openapi.json"):
                assert c.get(path, headers=headers).status_code == 200, path


def test_binding_beyond_loopback_needs_a_key(served_run, monkeypatch, capsys):
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        check_bind(host, None)
    check_bind("0.0.0.0", "k")
    for host, key in (("0.0.0.0", None), ("192.168.1.5", None), ("example.org", None), ("0.0.0.0", " ")):
        with pytest.raises(CnnlabError):
            check_bind(host, key)
    monkeypatch.delenv("CNNLAB_API_KEY", raising=False)
    assert main(["serve", str(served_run), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key" in err
    started = {}
    monkeypatch.setattr("cnnlab.serve.run_server", lambda *a, **k: started.update(args=a, options=k))
    monkeypatch.setenv("CNNLAB_API_KEY", "from-env")
    assert main(["serve", str(served_run), "--host", "0.0.0.0", "--port", "9123"]) == 0
    assert started["args"] == (str(served_run), "0.0.0.0", 9123, "from-env")


def test_page_and_docs_are_served_without_any_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    for name in ("index.html", "app.js", "style.css", "docs.html", "docs.js"):
        text = (STATIC / name).read_text()
        external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|"""
                              r"""(?:fetch|import)\(\s*["'`](?:https?:)?//|@import""", text)
        assert not external, (name, external)
        assert client.get(f"/static/{name}").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/docs.js" in docs.text
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_schemathesis_finds_no_server_errors(client):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    statuses = []
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = list(GenerationMode) if operation.path == "/predict" else [GenerationMode.POSITIVE]  # others: no input
        for mode in modes:

            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def no_5xx(case):
                response = case.call()
                statuses.append(response.status_code)
                assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"

            no_5xx()
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)


def test_onnx_files_are_served_through_onnxruntime(served_run, digit, tmp_path):
    export = pytest.importorskip("cnnlab.export", reason="cnnlab.export is not available")
    onnx_path = _export_onnx(export, served_run, tmp_path)
    data = digit[1]["png"].read_bytes()
    with TestClient(create_app(onnx_path)) as c:
        card = c.get("/model").json()
        assert card["runtime"] == "onnxruntime" and card["class_names"] == [str(i) for i in range(10)]
        top = c.post("/predict?top_k=10", files=_files(("a.png", data))).json()["predictions"][0]["top"]
    from cnnlab.models.files import load_model
    from cnnlab.training.devices import Runtime
    from cnnlab.training.scoring import Scorer

    fp32 = Scorer(load_model(served_run)[0], Runtime(torch.device("cpu"), "fp32", False))  # as the graph computes
    reference = fp32.probabilities(torch.as_tensor(read_image(digit[1]["png"], 1, (28, 28))[None]))[0]
    by_class = {t["class"]: t["probability"] for t in top}
    assert [by_class[str(i)] for i in range(10)] == pytest.approx(reference.tolist(), abs=1e-4)


def _export_onnx(export, run: Path, folder: Path) -> Path:
    pixels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)  # parity images: no dataset needed
    return Path(export.export_onnx(run, folder / "model.onnx", parity_images=pixels).path)
