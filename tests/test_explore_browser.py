"""The explorer's page in a real browser: Debian's chromium, headless, driven by Selenium (as tests/test_browser.py).

A real uvicorn server on a free loopback port serves a trained seed-mnist run; the test uploads a
digit, reads the layer list, opens a feature map, steps the convolution, switches Grad-CAM's class,
and checks that screenshots of the page are not blank (they stay in the test's tmp_path; set
CNNLAB_EXPLORE_SCREENSHOT to a folder to keep copies).
"""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset

@pytest.fixture(scope="module")
def server(served_run, live_server):
    from cnnlab.explore.app import create_explore_app

    app = create_explore_app(served_run)
    return live_server(app), app.state.explorer


def _shot(browser, element, path: Path) -> None:
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", element)
    time.sleep(0.2)
    browser.save_screenshot(str(path))
    if os.environ.get("CNNLAB_EXPLORE_SCREENSHOT"):
        shutil.copy(path, Path(os.environ["CNNLAB_EXPLORE_SCREENSHOT"]) / path.name)


def test_a_learner_explores_a_trained_digit_model(browser, server, tmp_path, not_blank):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def grid_of(driver, layer):
        return driver.find_element(By.CSS_SELECTOR, f'.fmap-layer[data-layer="{layer}"] img.grid')

    def click_tile(grid, natural: int, step: int, tile: int) -> None:  # the middle of a tile of the first row
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", grid)
        size, centre = grid.size, tile * step + step // 2  # step: a tile's width plus the 1-pixel gap
        ActionChains(browser).move_to_element_with_offset(grid, -size["width"] / 2 + size["width"] * centre / natural,
                                                          -size["height"] / 2 + size["height"] * 13 / natural
                                                          ).click().perform()

    url, explorer = server
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#layer-list .layer-row")
    shapes = [(r.get_attribute("data-layer"), r.find_element(By.CLASS_NAME, "shape").text) for r in rows]
    assert shapes[:4] == [("conv2d", "26x26x32"), ("max_pooling2d", "13x13x32"), ("conv2d_1", "11x11x64"),
                          ("max_pooling2d_1", "5x5x64")]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#samples .sample")) == 40

    # upload a test digit: it becomes the input, and every layer's grid loads
    digit = load_dataset("digits", split="test").images[3, 0].numpy()
    path = tmp_path / "digit.png"
    Image.fromarray(digit).save(path)
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    wait.until(lambda d: d.find_element(By.ID, "input-title").text == "digit.png")
    key = browser.find_element(By.TAG_NAME, "body").get_attribute("data-input")
    assert key in explorer.inputs and explorer.inputs[key].label == "digit.png"
    loaded = "return [...document.querySelectorAll('#fmaps img.grid')].map(i => i.complete && i.naturalWidth);"
    wait.until(lambda d: len(d.execute_script(loaded)) == 4 and all(d.execute_script(loaded)))
    assert browser.execute_script(loaded) == [161, 83, 95, 47]
    top = browser.find_element(By.ID, "probs").get_attribute("data-top")
    assert top == explorer.card.class_names[int(np.argmax(explorer.trace(key).probabilities))]

    # click a layer: its arithmetic
    browser.find_element(By.CSS_SELECTOR, '.layer-row[data-layer="conv2d"]').click()
    details = browser.find_element(By.ID, "layer-details").text
    assert "floor((28 + 2*0 - 3) / 1) + 1 = 26" in details and "(3*3*1 + 1) * 32 = 320" in details
    assert "3x3 input pixels" in details

    # open a feature map: the enlarged channel and its value range
    grid = browser.find_element(By.CSS_SELECTOR, '.fmap-layer[data-layer="conv2d"] img.grid')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", grid)
    size = grid.size  # click the middle of the second tile of the first row: channel 1
    ActionChains(browser).move_to_element_with_offset(grid, -size["width"] / 2 + size["width"] * 40 / 161,
                                                      -size["height"] / 2 + size["height"] * 13 / 161).click().perform()
    wait.until(lambda d: d.find_element(By.ID, "enlarged").get_attribute("naturalWidth") == "26")
    assert browser.find_element(By.ID, "modal").get_attribute("data-channel") == "1"
    maps = explorer.trace(key).outputs["conv2d"][1]
    shown = browser.find_element(By.ID, "enlarged-range").text
    assert f"max {float(maps.max()):.3f}" in shown, shown
    # conv2d is a ReLU convolution: the modal shows its map before and after, with how many values ReLU zeroed
    inside = browser.find_element(By.ID, "inside")
    wait.until(lambda d: inside.get_attribute("data-kind") == "relu" and inside.is_displayed())
    module, x = explorer.modules["conv2d"], explorer.trace(key).conv_inputs["conv2d"][None]
    before = torch.nn.functional.conv2d(x, module.weight, module.bias)[0, 1]
    assert f"ReLU sets the {int((before <= 0).sum())} of 676" in browser.find_element(By.ID, "inside-note").text
    _shot(browser, browser.find_element(By.ID, "modal"), tmp_path / "explore-feature-map.png")
    browser.find_element(By.ID, "modal-close").click()

    # sorted by mean activation, the second tile is the channel with the second highest mean
    browser.find_element(By.ID, "sort-mean").click()
    wait.until(lambda d: grid_of(d, "conv2d").get_attribute("data-order") == "mean"
               and d.execute_script(loaded) == [161, 83, 95, 47])  # the sorted grids drawn before a click
    means = explorer.trace(key).outputs["conv2d"].double().mean(dim=(1, 2))
    second = sorted(range(32), key=lambda c: -float(means[c]))[1]
    click_tile(grid_of(browser, "conv2d"), 161, 27, 1)
    wait.until(lambda d: d.find_element(By.ID, "modal").get_attribute("data-channel") == str(second))
    browser.find_element(By.ID, "modal-close").click()

    # max pooling: the windows and the value each keeps, 13x13 of 26x26
    click_tile(grid_of(browser, "max_pooling2d"), 83, 14, 0)
    wait.until(lambda d: inside.get_attribute("data-kind") == "pool" and inside.is_displayed())
    assert "13x13 values survive of 676" in browser.find_element(By.ID, "inside-note").text
    _shot(browser, browser.find_element(By.ID, "modal"), tmp_path / "explore-pooling.png")
    browser.find_element(By.ID, "modal-close").click()

    # the output-size sandbox: seed 001's 10x10 with a 3x3 kernel shrinks to 8x8, with 'same' it stays 10x10
    result = browser.find_element(By.ID, "sb-result")
    wait.until(lambda d: result.get_attribute("data-output") == "8")
    assert "floor((10 - 3) / 1) + 1 = 8" in result.text
    Select(browser.find_element(By.ID, "sb-padding")).select_by_value("same")
    wait.until(lambda d: result.get_attribute("data-output") == "10")

    # the run's mistakes and least confident test images, beside the samples by class
    assert len(browser.find_elements(By.CSS_SELECTOR, "#mistakes .sample")) == 12
    assert len(browser.find_elements(By.CSS_SELECTOR, "#least-confident .sample")) == 12

    # the convolution, three steps: each sum is torch's value at the next position
    stepper = browser.find_element(By.ID, "stepper-card")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", stepper)
    read = ("const b = document.getElementById('step-sum'); "
            "return [b.dataset.position, b.dataset.value, b.dataset.torch];")
    wait.until(lambda d: d.execute_script(read)[0] == "0,0")
    sums = []
    for position in ("0,1", "0,2", "0,3"):
        browser.find_element(By.ID, "step-next").click()
        wait.until(lambda d, p=position: d.execute_script(read)[0] == p)
        where, value, torch_value = browser.execute_script(read)
        row, col = map(int, where.split(","))
        assert float(value) == pytest.approx(float(explorer.trace(key).outputs["conv2d"][0, row, col]), abs=1e-5)
        assert float(value) == pytest.approx(float(torch_value), abs=1e-6)
        sums.append(browser.find_element(By.ID, "step-sum").text)
    assert all("✓ equal" in text for text in sums), sums
    assert len(browser.find_elements(By.CSS_SELECTOR, "#m-products td")) == 9
    _shot(browser, stepper, tmp_path / "explore-stepper.png")

    # Grad-CAM: another class, another picture
    cam = browser.find_element(By.ID, "cam-img")
    wait.until(lambda d: cam.get_attribute("data-cls") is not None)
    first = browser.execute_script("return arguments[0].src;", cam)
    other = "0" if top != "0" else "1"
    Select(browser.find_element(By.ID, "cam-class")).select_by_value(other)
    wait.until(lambda d: cam.get_attribute("data-cls") == other)
    assert browser.execute_script("return arguments[0].src;", cam) != first
    assert cam.get_attribute("naturalWidth") == "224"

    browser.execute_script("window.scrollTo(0, 0);")
    whole = tmp_path / "explore-page.png"
    browser.save_screenshot(str(whole))
    if os.environ.get("CNNLAB_EXPLORE_SCREENSHOT"):
        shutil.copy(whole, Path(os.environ["CNNLAB_EXPLORE_SCREENSHOT"]) / whole.name)
    for shot in ("explore-page.png", "explore-feature-map.png", "explore-stepper.png", "explore-pooling.png"):
        not_blank(tmp_path / shot)
    assert not browser.find_element(By.ID, "error").is_displayed()
