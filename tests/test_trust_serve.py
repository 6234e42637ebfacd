"""`cnnlab serve` under hostile load (issue 18, causes 4 and 14-17): every failure bounded, answered, one line.

- an ONNX file whose metadata disagrees with its graph never starts serving (create_app, the CLI,
  OnnxClassifier);
- pixels being decoded and body bytes held are budgets shared by all requests: the budget is never
  exceeded, a request that cannot get room in time is a 503 with Retry-After, memory is handed back;
- slow clients are timed out (headers, body) and open connections are capped without locking good
  clients out; repeated log lines are rate-limited;
- an abandoned upload is one log line, not a traceback;
- start-up failures (port, address, model) are one `error:` line and uvicorn never starts.

Real-server tests run uvicorn in a thread on a free loopback port with timeouts of a second or less.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.serve import ConnectionLimits, create_app
from cnnlab.serve.app import build_server
from cnnlab.serve.connections import _REFUSED, RepeatFilter, connection_cap

pytestmark = pytest.mark.timeout(120)


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_error_line(code: int, out: str, err: str, *expected: str) -> str:
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert all(e in lines[0] for e in expected), lines[0]
    return lines[0]


@pytest.fixture
def no_uvicorn(monkeypatch):
    """uvicorn must never start in these tests: if it would, the test fails instead of serving forever."""
    import uvicorn

    def refuse(*args, **kwargs):
        raise AssertionError("uvicorn started serving")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)


# ---------------------------------------------------------------- cause 4: ONNX metadata vs graph

@pytest.fixture(scope="module")
def onnx_file(served_run, tmp_path_factory):
    export = pytest.importorskip("cnnlab.export", reason="cnnlab.export is not available")
    import torch

    folder = tmp_path_factory.mktemp("onnx")
    pixels = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    return Path(export.export_onnx(served_run, folder / "model.onnx", parity_images=pixels).path)


def _tampered(source: Path, target: Path, **changes: object) -> Path:
    onnx = pytest.importorskip("onnx")
    from cnnlab.export import METADATA_KEY

    model = onnx.load(str(source))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    entry.value = json.dumps({**json.loads(entry.value), **changes})
    onnx.save(model, str(target))
    return target


MISMATCHES = {
    "three class names for ten outputs": ({"class_names": ["a", "b", "c"]}, "3 class names"),
    "another input size": ({"input_shape": [32, 32, 1]}, "32x32x1"),
    "another channel count": ({"input_shape": [28, 28, 3]}, "28x28x3"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_onnx_metadata_that_disagrees_with_its_graph_is_refused_on_load(onnx_file, tmp_path, case, capsys,
                                                                        no_uvicorn):
    from cnnlab.export import OnnxClassifier

    changes, named = MISMATCHES[case]
    bad = _tampered(onnx_file, tmp_path / "bad.onnx", **changes)
    for load in (OnnxClassifier, create_app):
        with pytest.raises(CnnlabError) as caught:
            load(bad)
        message = str(caught.value)
        assert "\n" not in message and str(bad) in message and named in message, message
    code = main(["serve", str(bad), "--port", str(_free_port())])
    _one_error_line(code, *capsys.readouterr(), str(bad), named)


# ---------------------------------------------------------------- cause 14: budgets across requests

def _spy_decoding(monkeypatch, seconds: float) -> dict[str, int]:
    """Replace the pixel decoding with a slow one that records how many pixels are decoded at once."""
    import cnnlab.serve.app as app_module

    real, lock, seen = app_module.decode_pixels, threading.Lock(), {"now": 0, "peak": 0}

    def slow(upload, channels, size):
        with Image.open(io.BytesIO(upload.data)) as image:
            pixels = image.width * image.height
        with lock:
            seen["now"] += pixels
            seen["peak"] = max(seen["peak"], seen["now"])
        time.sleep(seconds)
        with lock:
            seen["now"] -= pixels
        return real(upload, channels, size)

    monkeypatch.setattr(app_module, "decode_pixels", slow)
    return seen


async def _concurrently(app, requests: list[list[tuple[str, bytes]]], stagger_s: float = 0) -> list[httpx.Response]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
        async def post(i: int, files: list[tuple[str, bytes]]) -> httpx.Response:
            await asyncio.sleep(i * stagger_s)
            return await c.post("/predict", files=_files(*files))

        return await asyncio.gather(*(post(i, files) for i, files in enumerate(requests)))


def test_pixels_decoded_at_once_never_exceed_the_budget(served_run, monkeypatch):
    seen = _spy_decoding(monkeypatch, 0.1)
    app = create_app(served_run, decode_budget=3 * 64 * 64, budget_wait_s=30)
    image = _png((64, 64))
    responses = asyncio.run(_concurrently(app, [[("a.png", image), ("b.png", image)]] * 6))
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    assert seen["peak"] == 3 * 64 * 64  # full use of the budget, never more (4 decoding threads could)
    assert app.state.decoder.budget.in_use == 0 and app.state.decoder.budget.peak == 3 * 64 * 64


def test_a_request_that_cannot_get_room_in_time_is_503_with_retry_after(served_run, monkeypatch):
    _spy_decoding(monkeypatch, 0.5)
    app = create_app(served_run, decode_budget=64 * 64, budget_wait_s=0.1)
    responses = asyncio.run(_concurrently(app, [[("a.png", _png((64, 64)))]] * 3))
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert int(busy.headers["retry-after"]) >= 1
    detail = busy.json()["detail"]
    assert "\n" not in detail and "busy" in detail and "pixels being decoded" in detail
    assert app.state.decoder.budget.in_use == 0


def test_body_bytes_held_at_once_are_a_budget_too(served_run, monkeypatch):
    _spy_decoding(monkeypatch, 0.5)
    buf = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).save(buf, "BMP")  # 5 KB: the multipart frame is small
    image = buf.getvalue()
    app = create_app(served_run, body_budget=3 * len(image), budget_wait_s=0.1)
    # The second arrives while the first, its body read, is still decoding (0.5 s per image).
    responses = asyncio.run(_concurrently(app, [[("a.png", image), ("b.png", image)]] * 2, stagger_s=0.2))
    assert [r.status_code for r in responses] == [200, 503]
    assert "bytes of request bodies" in next(r for r in responses if r.status_code == 503).json()["detail"]
    assert app.state.bodies.in_use == 0


def test_running_out_of_memory_while_decoding_is_503_not_a_bad_image(served_run, monkeypatch):
    def no_memory(*args):
        raise MemoryError

    monkeypatch.setattr("cnnlab.serve.uploads._decode", no_memory)
    app = create_app(served_run)
    (response,) = asyncio.run(_concurrently(app, [[("a.png", _png((28, 28)))]]))
    assert response.status_code == 503 and "retry-after" in response.headers, response.text
    assert app.state.decoder.budget.in_use == 0


def test_memory_is_handed_back_once_decoding_is_idle(served_run, monkeypatch):
    trims = []
    monkeypatch.setattr("cnnlab.serve.app.trim_memory", lambda: trims.append(1))
    monkeypatch.setattr("cnnlab.serve.app.TRIM_AFTER_PIXELS", 2 * 64 * 64)
    app = create_app(served_run)
    asyncio.run(_concurrently(app, [[("a.png", _png((64, 64)))]]))
    assert trims == []  # under the threshold: no trim for every small image
    asyncio.run(_concurrently(app, [[("a.png", _png((64, 64)))]]))
    for _ in range(100):
        if trims:
            break
        time.sleep(0.02)
    assert trims == [1]


# ---------------------------------------------------------------- cause 16: abandoned uploads

def test_an_abandoned_upload_is_one_log_line_not_a_traceback(served_run):
    app = create_app(served_run)
    messages = [{"type": "http.request", "body": b"--x\r\n", "more_body": True}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"5000")],
             "client": ("192.0.2.7", 4321), "server": ("127.0.0.1", 8000)}
    # A handler on the logger itself: once a real uvicorn has configured logging in this process (an
    # earlier test), "uvicorn" stops propagating to the root logger that caplog listens on.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        asyncio.run(app(scope, receive, send))  # no exception escapes to uvicorn (its 59-line traceback)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(records) == 1 and records[0].exc_info is None, [r.getMessage() for r in records]
    assert "192.0.2.7" in records[0].getMessage() and "went away" in records[0].getMessage()


# ---------------------------------------------------------------- cause 15: slow clients, a real server

class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def live(served_run):
    """Start a real server with the given ConnectionLimits: (server, url, log records); stopped afterwards."""
    started: list[tuple[object, threading.Thread]] = []
    lines = _Lines()
    logger = logging.getLogger("uvicorn.error")

    def start(limits: ConnectionLimits):
        server, sock = build_server(served_run, "127.0.0.1", 0, connections=limits)
        logger.addHandler(lines)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        started.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        return server, f"http://127.0.0.1:{sock.getsockname()[1]}", lines.records

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(10)
    logger.removeHandler(lines)


def _connect(url: str, data: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset, when it closed with our bytes unread, ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_slow_headers_and_slow_bodies_are_timed_out(live):
    server, url, records = live(ConnectionLimits(header_timeout_s=0.5, body_timeout_s=1.0, max_connections=64))
    started = time.monotonic()
    silent = _connect(url)  # connects, never sends a byte
    slow_headers = _connect(url, b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
    slow_body = _connect(url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                              b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")  # 99,995 bytes never come
    assert _read_all(silent).startswith(b"HTTP/1.1 408")
    assert _read_all(slow_headers).startswith(b"HTTP/1.1 408")
    assert 0.4 < time.monotonic() - started < 5
    assert _read_all(slow_body).startswith(b"HTTP/1.1 408")
    assert 0.9 < time.monotonic() - started < 6
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # the server is fine
    messages = [r.getMessage() for r in records]
    assert any("headers did not arrive within 0.5 s" in m for m in messages), messages
    assert any("body did not arrive within 1 s" in m for m in messages), messages
    assert not any(r.exc_info or r.levelno >= logging.ERROR for r in records), messages  # cause 16 too


def test_connections_over_the_cap_push_out_the_slowest_and_good_clients_get_in(live):
    server, url, records = live(ConnectionLimits(header_timeout_s=60, body_timeout_s=60, max_connections=8))
    stalled = [_connect(url, b"GET /health HTTP/1.1\r\n") for _ in range(20)]  # slow clients holding connections
    time.sleep(0.3)
    assert len(server.server_state.connections) <= 8
    with httpx.Client(base_url=url, timeout=10) as good:
        for _ in range(5):
            assert good.get("/health").status_code == 200
    assert len(server.server_state.connections) <= 8
    still_open = 0
    for sock in stalled:
        sock.settimeout(0.2)
        try:
            answer = _read_all(sock)
            assert answer in (b"", _REFUSED) or answer.startswith(b"HTTP/1.1 503"), answer
        except TimeoutError:  # still open: one of the newest
            still_open += 1
        sock.close()
    assert still_open <= 8 - 1, still_open  # the good client's connection took a place too
    assert any("to make room" in r.getMessage() for r in records)


def test_a_flood_of_timeouts_logs_a_few_lines_not_one_per_connection(live):
    server, url, records = live(ConnectionLimits(header_timeout_s=0.3, body_timeout_s=1.0, max_connections=200))
    stalled = [_connect(url, b"GET / HTTP/1.1\r\n") for _ in range(40)]
    for sock in stalled:
        _read_all(sock)
        sock.close()
    timeouts = [r for r in records if "did not arrive" in r.getMessage()]
    assert 1 <= len(timeouts) <= 10, len(timeouts)


def test_repeat_filter_keeps_the_first_traceback_and_counts_what_it_held_back(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("cnnlab.serve.connections.time.monotonic", lambda: clock[0])
    quiet = RepeatFilter(per_minute=3)
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        import sys

        exc_info = sys.exc_info()
    records = [logging.LogRecord("asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource", (),
                                 exc_info) for _ in range(1000)]
    passed = [r for r in records if quiet.filter(r)]
    assert len(passed) == 3 and passed[0].exc_info is not None and passed[1].exc_info is None
    assert "Too many open files" in passed[1].getMessage()
    clock[0] = 61.0
    later = logging.LogRecord("asyncio", logging.ERROR, "", 0, "socket.accept() out of system resource", (), None)
    assert quiet.filter(later) and "997 more like this" in later.getMessage()


def test_the_connection_cap_stays_below_the_file_descriptor_limit(monkeypatch):
    monkeypatch.setattr("cnnlab.serve.connections.resource.getrlimit", lambda _: (1024, 4096))
    assert connection_cap(1000, 128) == 1024 - 64 - 2 * 128 and connection_cap(100, 128) == 100


# ---------------------------------------------------------------- cause 17: start-up failures

def test_start_up_failures_are_one_error_line(served_run, capsys, monkeypatch, no_uvicorn):
    code = main(["serve", str(served_run), "--port", "70000"])
    _one_error_line(code, *capsys.readouterr(), "--port 70000", "1 to 65535")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code = main(["serve", str(served_run), "--port", port])
        _one_error_line(code, *capsys.readouterr(), f"--port {port}", "already in use", "choose another --port")
    monkeypatch.setenv("CNNLAB_API_KEY", "k")
    code = main(["serve", str(served_run), "--host", "no-such-host.invalid"])
    _one_error_line(code, *capsys.readouterr(), "--host 'no-such-host.invalid'", "127.0.0.1")
    code = main(["serve", str(served_run), "--host", "192.0.2.1"])  # TEST-NET: never this machine's
    _one_error_line(code, *capsys.readouterr(), "--host 192.0.2.1", "not an address of this machine")
    code = main(["serve", str(served_run / "missing"), "--port", str(_free_port())])
    _one_error_line(code, *capsys.readouterr(), "missing")


def test_api_key_on_the_command_line_of_a_public_server_gets_a_warning(served_run, capsys, monkeypatch):
    monkeypatch.setattr("cnnlab.serve.run_server", lambda *a, **k: None)
    monkeypatch.delenv("CNNLAB_API_KEY", raising=False)
    assert main(["serve", str(served_run), "--host", "0.0.0.0", "--api-key", "s3cret"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --api-key") and "$CNNLAB_API_KEY" in err and err.count("\n") == 1
    monkeypatch.setenv("CNNLAB_API_KEY", "s3cret")
    assert main(["serve", str(served_run), "--host", "0.0.0.0"]) == 0
    assert main(["serve", str(served_run), "--api-key", "s3cret"]) == 0  # loopback: nobody else sees it
    assert capsys.readouterr().err == ""
