"""The web page in a real browser: Debian's chromium, headless, driven by Selenium through /usr/bin/chromedriver.

A real uvicorn server on a free loopback port; the tests upload an image, draw on the
canvas, use chromium's fake camera, and check that a screenshot of the page is not blank.
"""

import io
import json
import os
import shutil
import urllib.request

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import load_dataset

@pytest.fixture(scope="module")
def server(served_run, live_server):
    from cnnlab.serve import create_app

    return live_server(create_app(served_run))


@pytest.fixture(scope="module")
def digit_png(server, tmp_path_factory):
    """A test-set digit and the server's own JSON answer for it: (path, top class from /predict)."""
    test = load_dataset("digits", split="test")
    path = tmp_path_factory.mktemp("page") / "digit.png"
    Image.fromarray(test.images[3, 0].numpy()).save(path)
    boundary = "cnnlabtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"digit.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{server}/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return path, json.load(response)["predictions"][0]["top"][0]["class"]


def _open(browser, server, tab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    browser.find_element(By.CSS_SELECTOR, f'.tab-button[data-tab="{tab}"]').click()


def _wait_prediction(browser, filename):
    """The first shown prediction for `filename`, read at once (live drawing and camera re-render the results)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        blocks = d.find_elements(By.CSS_SELECTOR, "#results .prediction")
        if not blocks or filename not in blocks[0].text:
            return False
        return {"data_top": blocks[0].get_attribute("data-top-class"),
                "top": blocks[0].find_element(By.CLASS_NAME, "top-class").text,
                "bars": len(blocks[0].find_elements(By.CSS_SELECTOR, ".bar-row"))}

    return WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException]).until(shown)


def test_uploaded_image_shows_the_apis_top_class_and_the_model_card(browser, server, digit_png, tmp_path):
    from selenium.webdriver.common.by import By

    path, api_top = digit_png
    _open(browser, server, "upload")
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    shown = _wait_prediction(browser, "digit.png")
    assert shown["data_top"] == shown["top"] == api_top
    assert shown["bars"] == 5  # the server's default top-k
    assert "seed-mnist" in browser.find_element(By.ID, "card").text
    curves_loaded = browser.execute_script("const i = document.getElementById('curves'); "
                                           "return i.complete && i.naturalWidth > 0;")
    assert curves_loaded
    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("CNNLAB_SCREENSHOT"):
        shutil.copy(shot, os.environ["CNNLAB_SCREENSHOT"])
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, bars, curves: many colours


def test_a_stroke_drawn_on_the_canvas_is_predicted(browser, server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open(browser, server, "draw")
    pad = browser.find_element(By.ID, "pad")
    chain = ActionChains(browser).move_to_element_with_offset(pad, 10, -80).click_and_hold()
    for _ in range(8):  # a vertical stroke: a "1"
        chain = chain.move_by_offset(-2, 20)
    chain.release().perform()
    shown = _wait_prediction(browser, "drawing.png")
    assert shown["top"] in [str(i) for i in range(10)] and shown["bars"] == 5
    seen = browser.execute_script(
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        "let lit = 0; for (let i = 0; i < d.data.length; i += 4) lit += d.data[i] > 128;"
        "return [c.width, c.height, lit];")
    assert seen[:2] == [28, 28] and 10 < seen[2] < 28 * 28 / 2  # white stroke on black at the model's size


def test_fake_camera_gives_live_predictions(browser, server):
    from selenium.webdriver.common.by import By

    _open(browser, server, "camera")
    browser.find_element(By.ID, "cam-start").click()
    first = _wait_prediction(browser, "camera.jpg")
    assert first["top"] in [str(i) for i in range(10)]
    assert browser.find_element(By.ID, "cam-status").text == "live"
    browser.find_element(By.ID, "cam-stop").click()


def test_a_refused_upload_shows_the_servers_reason(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    broken = tmp_path / "broken.png"
    buf = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buf, "PNG")
    broken.write_bytes(buf.getvalue()[:60])
    _open(browser, server, "upload")
    browser.find_element(By.ID, "file-input").send_keys(str(broken))
    error = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").text)
    assert "broken.png" in error and "truncated" in error
