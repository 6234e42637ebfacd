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


def test_drawing_webcam_side_by_side_filters_and_the_sliding_sandbox(browser, server, tmp_path, not_blank):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, explorer = server
    wait = WebDriverWait(browser, 30)
    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    title = lambda d: d.find_element(By.ID, "input-title").text  # noqa: E731

    # a drawing: a vertical stroke down the middle, drawn with the mouse, becomes the input the model sees
    browser.find_element(By.ID, "draw-open").click()
    canvas = browser.find_element(By.ID, "draw-canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    ActionChains(browser).move_to_element_with_offset(canvas, 0, -90).click_and_hold() \
        .move_by_offset(0, 60).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()
    browser.find_element(By.ID, "draw-use").click()
    wait.until(lambda d: title(d) == "drawing.png")
    key = browser.find_element(By.TAG_NAME, "body").get_attribute("data-input")
    pixels = explorer.inputs[key].pixels[0].numpy()
    assert pixels.shape == (28, 28) and pixels[4:24, 13:15].mean() > 150 and pixels[:, :6].max() < 50

    # a webcam frame (chromium's fake camera): one more input
    browser.find_element(By.ID, "cam-open").click()
    wait.until(lambda d: d.execute_script("return document.getElementById('cam-video').videoWidth") > 0)
    browser.find_element(By.ID, "cam-shot").click()
    wait.until(lambda d: title(d) == "webcam.png")
    browser.find_element(By.ID, "cam-stop").click()
    assert browser.execute_script("return document.getElementById('cam-video').srcObject.active") is False

    # side by side: a test digit, shifted and rotated; each column's top class is the model's for those pixels
    sample = browser.find_elements(By.CSS_SELECTOR, "#samples .sample")[5]
    sample.click()
    chosen = sample.get_attribute("data-key")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-input") == chosen)
    card = browser.find_element(By.ID, "compare-card")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", card)
    for n, variant in ((2, "shift_x=3"), (3, "rotate=90")):
        card.find_element(By.CSS_SELECTOR, f'[data-variant="{variant}"]').click()
        wait.until(lambda d, n=n: d.find_element(By.ID, "compare").get_attribute("data-count") == str(n))
    Select(browser.find_element(By.ID, "compare-layer")).select_by_value("conv2d")
    columns = "return [...document.querySelectorAll('#compare .col')].map(c => [c.dataset.key, c.dataset.top, " \
              "c.querySelector('img.grid') && c.querySelector('img.grid').naturalWidth]);"
    wait.until(lambda d: [c[2] for c in d.execute_script(columns)] == [161, 161, 161])
    shown = browser.execute_script(columns)
    assert shown[0][0] == sample.get_attribute("data-key") and "rotated 90°" in explorer.inputs[shown[2][0]].label
    for key, top, _ in shown:
        assert top == explorer.card.class_names[int(np.argmax(explorer.trace(key).probabilities))]
    _shot(browser, card, tmp_path / "explore-side-by-side.png")

    # a deeper filter as heat maps, and the sandbox's window sliding with its stride
    Select(browser.find_element(By.ID, "k-layer")).select_by_value("conv2d_1")
    wait.until(lambda d: d.find_element(By.ID, "kernels").get_attribute("data-key") == "conv2d_1|0")
    assert "one 3x3 kernel for each of its 32 input channels" in browser.find_element(By.ID, "k-note").text
    sandbox = browser.find_element(By.ID, "sandbox")
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", sandbox)
    for field, value in (("sb-size", "7"), ("sb-stride", "2")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
        browser.execute_script("arguments[0].dispatchEvent(new Event('change'));", box)
    Select(browser.find_element(By.ID, "sb-padding")).select_by_value("same")
    where = browser.find_element(By.ID, "sb-where")
    wait.until(lambda d: browser.find_element(By.ID, "sb-result").get_attribute("data-output") == "4")
    for position in ("0,1", "0,2", "0,3", "1,0"):
        browser.find_element(By.ID, "sb-next").click()
        wait.until(lambda d, p=position: where.get_attribute("data-position") == p)
    assert "starts at row 2, column 0 of the padded input and moves 2 cell(s)" in where.text
    _shot(browser, sandbox, tmp_path / "explore-sandbox.png")
    for shot in ("explore-side-by-side.png", "explore-sandbox.png"):
        not_blank(tmp_path / shot)
    assert not browser.find_element(By.ID, "error").is_displayed()


@pytest.mark.parametrize("kind", ["residual", "transfer"])
def test_a_functional_residual_model_and_a_transfer_model_in_the_page(kind, browser, live_server, tmp_path, not_blank):
    import sys

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from cnnlab import keras
    from cnnlab.explore.app import create_explore_app
    from cnnlab.explore.explorer import Explorer
    from cnnlab.keras import layers
    from cnnlab.models.files import ModelCard
    from cnnlab.models.transfer import transfer_model

    sys.path.insert(0, str(Path(__file__).parent / "keras_programs"))
    import seed_models

    torch.manual_seed(0)
    if kind == "residual":
        model, shape = seed_models.residual_model(keras, layers), (32, 32, 3)
    else:
        model, shape = transfer_model("efficientnet_lite0", 3, (64, 64, 3), pretrained=False), (64, 64, 3)
    explorer = Explorer(model, ModelCard({"name": kind}, ["cat", "dog", "fox", *"abcdefg"][:10 if kind == "residual"
                                                                                          else 3], list(shape)), kind)
    url = live_server(create_explore_app(explorer))
    wait = WebDriverWait(browser, 60)
    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    rows = [r.get_attribute("data-layer") for r in browser.find_elements(By.CSS_SELECTOR, "#layer-list .layer-row")]
    assert rows == [layer.name for layer in explorer.layers]

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(photo)
    browser.find_element(By.ID, "file-input").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "input-title").text == "photo.png"
               and d.find_element(By.TAG_NAME, "body").get_attribute("data-input"))  # set once its maps are laid out
    key = browser.find_element(By.TAG_NAME, "body").get_attribute("data-input")
    maps = [layer for layer in explorer.layers if layer.feature_map]
    loaded = "return [...document.querySelectorAll('#fmaps img.grid')].filter(i => i.complete && i.naturalWidth)" \
             ".length;"
    wait.until(lambda d: d.execute_script(loaded) == len(maps))
    read = "const b = document.getElementById('step-sum'); return [b.dataset.position, b.dataset.value, " \
           "b.dataset.torch];"
    wait.until(lambda d: d.execute_script(read)[0] == "0,0")
    layer = browser.find_element(By.ID, "step-layer").get_attribute("value")
    for position in ("0,1", "0,2", "0,3"):  # three steps of the first convolution: each sum is torch's value
        browser.find_element(By.ID, "step-next").click()
        wait.until(lambda d, p=position: d.execute_script(read)[0] == p)
        _, value, torch_value = browser.execute_script(read)
        assert float(value) == pytest.approx(float(torch_value), abs=1e-4)
        assert float(torch_value) == pytest.approx(float(explorer.trace(key).outputs[layer][0, 0, int(position[2])]),
                                                   abs=1e-5)
    top = browser.find_element(By.ID, "probs").get_attribute("data-top")
    assert top == explorer.card.class_names[int(np.argmax(explorer.trace(key).probabilities))]
    cam = browser.find_element(By.ID, "cam-img")  # Grad-CAM of another class: another picture
    wait.until(lambda d: cam.get_attribute("data-cls") is not None)
    first = browser.execute_script("return arguments[0].src;", cam)
    other = "1" if cam.get_attribute("data-cls") != "1" else "0"
    Select(browser.find_element(By.ID, "cam-class")).select_by_value(other)
    wait.until(lambda d: cam.get_attribute("data-cls") == other)
    assert browser.execute_script("return arguments[0].src;", cam) != first

    graph = browser.find_element(By.ID, "graph-box")
    if kind == "residual":  # the graph: every layer a box, the Add fed by two arrows; a click shows its feeders
        assert graph.is_displayed()
        nodes = browser.find_elements(By.CSS_SELECTOR, "#graph .node")
        assert len(nodes) == len(explorer.layers) + 1
        edges = browser.find_elements(By.CSS_SELECTOR, "#graph path.edge")
        assert len(edges) == sum(len(x.inputs) for x in explorer.layers)
        add = browser.find_element(By.CSS_SELECTOR, '#graph .node[data-layer="add"]')
        assert "merge" in add.get_attribute("class")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", add)
        add.click()
        assert "batch_normalization, conv2d" in browser.find_element(By.ID, "layer-details").text
        _shot(browser, graph, tmp_path / f"explore-{kind}-graph.png")
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(tmp_path / f"explore-{kind}.png"))
    if os.environ.get("CNNLAB_EXPLORE_SCREENSHOT"):
        shutil.copy(tmp_path / f"explore-{kind}.png", Path(os.environ["CNNLAB_EXPLORE_SCREENSHOT"]))
    not_blank(tmp_path / f"explore-{kind}.png")
    assert not browser.find_element(By.ID, "error").is_displayed()
