"""Every test sees a private data/cache directory, so no test reads or writes the user's real cache; the fixtures
the browser tests share."""

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.config import TrainConfig
from cnnlab.data.cache import DATA_DIR_ENV
from cnnlab.inference import CACHE_DIR_ENV


@pytest.fixture(scope="session")
def private_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cnnlab-data")


@pytest.fixture(autouse=True)
def _private_cache(private_data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(private_data_dir))
    monkeypatch.setenv(CACHE_DIR_ENV, str(private_data_dir / "cache"))  # ONNX twins (cnnlab.inference)


@pytest.fixture(scope="session")
def served_run(private_data_dir):
    """A seed-mnist run trained 1 epoch on the built-in digits (~84% test accuracy): the serve and browser tests."""
    from cnnlab.jobs import train_run

    run = private_data_dir / "serve-digits-run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_DIR_ENV, str(private_data_dir))
        train_run(TrainConfig(dataset="digits", model="seed-mnist", epochs=1, seed=0, run_dir=str(run)), verbose=0)
    return run


# The browser tests (test_browser.py, test_explore_browser.py, test_studio_browser.py): Debian's chromium,
# headless, driven by Selenium through its chromedriver, against a real uvicorn server in a thread.
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def live_server():
    """`start(app, stop_wait_s=10)` serves a FastAPI app on a free loopback port (a thread: a subprocess would import
    torch again) and returns its URL; every server started is stopped when the module's tests end."""
    import uvicorn

    running = []

    def start(app, stop_wait_s=10.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread, stop_wait_s))
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread, stop_wait_s in running:
        server.should_exit = True
        thread.join(timeout=stop_wait_s)


@pytest.fixture(scope="module")
def browser():
    """Headless chromium, 1400x1200, with a fake camera, for the module's tests (skipped where it is missing)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromedriver (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1200", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def not_blank():
    """`not_blank(png_path)`: fails unless a screenshot is large and shows a picture (not one flat colour)."""
    def check(path):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        assert pixels.shape[0] > 500 and pixels.shape[1] > 1000, path
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, path
    return check
