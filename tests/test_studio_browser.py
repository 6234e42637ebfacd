"""The studio's page in a real browser: Debian's chromium, headless, driven by Selenium (as test_explore_browser.py).

A learner's whole path on a real uvicorn server: create a project, make 2 classes, upload 30 real
Imagenette photos to each (and a text file posing as a photo, refused with its reason on the page),
check the photos, train with one click, see the accuracy, open the confusion matrix and click a
cell, relabel a photo, predict an uploaded photo, export. Screenshots of each screen stay in the
test's tmp_path and are checked not blank (set CNNLAB_STUDIO_SCREENSHOT to a folder to keep copies).
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_studio import CLASSES, IMAGENETTE, PER_CLASS, photos  # noqa: E402  (the photos the API tests use)

pytestmark = pytest.mark.skipif(not IMAGENETTE.is_file(), reason="needs ../shared/datasets/imagenette-224")


@pytest.fixture
def server(tmp_path, live_server):
    from cnnlab.studio.app import create_studio_app

    app = create_studio_app(tmp_path / "projects")
    return live_server(app, stop_wait_s=90), app.state.store.root


def _shot(browser, path: Path, not_blank) -> None:
    time.sleep(0.3)
    browser.save_screenshot(str(path))
    if os.environ.get("CNNLAB_STUDIO_SCREENSHOT"):
        shutil.copy(path, Path(os.environ["CNNLAB_STUDIO_SCREENSHOT"]) / path.name)
    not_blank(path)


def test_a_learner_trains_evaluates_tests_and_exports_a_classifier(browser, server, tmp_path, not_blank):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = server
    found = photos(tmp_path / "photos")
    wait = WebDriverWait(browser, 30)
    slow = WebDriverWait(browser, 240)
    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    _shot(browser, tmp_path / "studio-1-welcome.png", not_blank)

    browser.find_element(By.ID, "new-project-name").send_keys("places")
    browser.find_element(By.CSS_SELECTOR, "#new-project button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-project") == "places")
    bad = tmp_path / "notes.jpg"
    bad.write_text("I am a shopping list, not a photo")
    for name in CLASSES:
        browser.find_element(By.ID, "new-class-name").send_keys(name)
        browser.find_element(By.CSS_SELECTOR, "#new-class button").click()
        wait.until(lambda d, n=name: d.find_element(By.TAG_NAME, "body").get_attribute("data-class") == n)
        files = [str(p) for p in found[name]] + ([str(bad)] if name == CLASSES[0] else [])
        browser.find_element(By.ID, "file-input").send_keys("\n".join(files))
        status = browser.find_element(By.ID, "upload-status")
        slow.until(lambda d, status=status: status.get_attribute("data-added") is not None and
                   len(d.find_elements(By.CSS_SELECTOR, "#grid .thumb")) == PER_CLASS)
        assert status.get_attribute("data-added") == str(PER_CLASS)
        if name == CLASSES[0]:  # the text file: refused, with serve's reason on the page
            assert status.get_attribute("data-refused") == "1"
            assert "notes.jpg: file 'notes.jpg' is not a JPEG, PNG, WebP, BMP or GIF image" in status.text
    assert sorted(p.name for p in (root / "places" / "data").iterdir()) == list(CLASSES)
    assert len(list((root / "places" / "data" / CLASSES[0]).iterdir())) == PER_CLASS
    loaded = "return [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0);"
    wait.until(lambda d: d.execute_script(loaded))
    browser.find_element(By.ID, "run-check").click()
    wait.until(lambda d: d.find_element(By.ID, "check-result").get_attribute("data-ok") == "true")
    browser.execute_script("window.scrollTo(0, 0);")
    _shot(browser, tmp_path / "studio-2-images.png", not_blank)

    # train with one click: the default model, progress, then the accuracy on the page
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="train"]').click()
    assert browser.find_element(By.ID, "recipe").get_attribute("value") == "transfer"
    assert browser.find_elements(By.CSS_SELECTOR, '#recipe option[value="seed:lenet5"]')  # any registered model
    browser.find_element(By.ID, "train").click()
    accuracy = slow.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.job[data-state="done"] .acc'))[0]
    shown = float(accuracy.get_attribute("data-accuracy"))
    assert shown >= 0.9 and f"{100 * shown:.1f}% test accuracy" == accuracy.text
    # the loss curve beside the accuracy one: the validation colour's lines, drawn only once epochs exist
    drawn = ("const c = document.querySelector('.job[data-state=done] canvas.curve-loss'); "
             "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; "
             "for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - 79) + Math.abs(d[i + 1] - 70) + "
             "Math.abs(d[i + 2] - 229) < 60 && d[i + 3] > 200) n++; return n;")
    assert browser.execute_script(drawn) > 400  # a line across the chart: ~490 px long, 4 px wide
    # the runs table, read in one go (the page redraws it as jobs change)
    done_row = ("return [...document.querySelectorAll('#runs tr')].map(r => [...r.cells].map(c => c.textContent))"
                ".find(cells => cells[5] === 'done') || null;")
    cells = wait.until(lambda d: d.execute_script(done_row))
    assert len(cells) == 9 and cells[3] == "224px" and cells[4] == "none" and cells[6] == f"{100 * shown:.1f}%"
    metrics = json.loads((root / "places" / "runs" / cells[0] / "metrics.json").read_text())
    assert float(cells[7]) == pytest.approx(metrics["test_loss"], rel=0.05)  # shown to 2 significant digits
    assert cells[8] == f"{int(metrics['train_seconds'] + 0.5)} s"  # Math.round
    _shot(browser, tmp_path / "studio-3-train.png", not_blank)

    # evaluate: the confusion matrix; a cell shows its photos; relabel one
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="evaluate"]').click()
    wait.until(lambda d: d.find_element(By.ID, "eval-accuracy").get_attribute("data-value"))
    assert float(browser.find_element(By.ID, "eval-accuracy").get_attribute("data-value")) == pytest.approx(shown)
    cell = browser.find_element(By.CSS_SELECTOR, '#matrix td[data-cell="1,1"]')
    count = int(cell.text)
    cell.click()
    figures = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cell-images .figure"))
    assert len(figures) == count
    assert "golf_ball that the model called golf_ball" in browser.find_element(By.ID, "cell-title").text
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#cell-images img')].every(i => i.complete && i.naturalWidth > 0);"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", cell)
    _shot(browser, tmp_path / "studio-4-evaluate.png", not_blank)
    moved = figures[0].get_attribute("data-name")
    figures[0].find_element(By.CSS_SELECTOR, "button.relabel").click()
    wait.until(lambda d: (root / "places" / "data" / "church" / moved).is_file())
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '#matrix td[data-cell="1,1"]').text == str(count - 1))

    # test: a photo, its classes as bars
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="test"]').click()
    browser.find_element(By.ID, "test-input").send_keys(str(found["church"][-1]))
    wait.until(lambda d: d.find_element(By.ID, "test-answer").get_attribute("data-top"))
    assert browser.find_element(By.ID, "test-answer").get_attribute("data-top") == "church"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#test-bars .bar")) == 2
    _shot(browser, tmp_path / "studio-5-test.png", not_blank)
    # live from the webcam (chromium's fake camera): a frame tested about every 700 ms until it is stopped
    tested = int(browser.find_element(By.ID, "test-result").get_attribute("data-tested"))
    browser.find_element(By.ID, "test-cam").click()
    slow.until(lambda d: int(d.find_element(By.ID, "test-result").get_attribute("data-tested")) >= tested + 2)
    browser.find_element(By.ID, "test-cam").click()
    assert browser.find_element(By.ID, "test-cam").text == "◉ Live from the webcam"
    assert not browser.find_element(By.ID, "test-video").is_displayed()

    # export: checked, then three downloads
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="export"]').click()
    browser.find_element(By.ID, "export").click()
    slow.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#export-result .downloads a")) == 3)
    assert "100.0%" in browser.find_element(By.ID, "export-result").text
    _shot(browser, tmp_path / "studio-6-export.png", not_blank)

    # back to evaluate: the relabelled photo is now a confident mistake; delete it from the list
    browser.find_element(By.CSS_SELECTOR, '#tabs [data-tab="evaluate"]').click()
    mistake = f'#mistakes .figure[data-name="{moved}"]'
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, mistake))
    said = browser.execute_script(f"const f = document.querySelector('{mistake}'); return f && f.textContent;")
    assert "church, said golf_ball" in said
    browser.find_element(By.CSS_SELECTOR, f"{mistake} button.delete").click()
    wait.until(lambda d: (root / "places" / ".trash" / "images" / "church" / moved).is_file())
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, mistake))
    assert not (root / "places" / "data" / "church" / moved).exists()
    assert not browser.find_element(By.ID, "error").is_displayed()


def test_photos_from_the_webcam_and_an_import_from_the_disk(browser, server, tmp_path, not_blank):
    import tarfile

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = server
    wait = WebDriverWait(browser, 60)
    browser.get(url + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    browser.find_element(By.ID, "new-project-name").send_keys("desk")
    browser.find_element(By.CSS_SELECTOR, "#new-project button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-project") == "desk")
    browser.find_element(By.ID, "new-class-name").send_keys("me")
    browser.find_element(By.CSS_SELECTOR, "#new-class button").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-class") == "me")

    # hold the button about 1.5 s at 5 photos a second: the frames are added to the class when it is let go
    browser.find_element(By.ID, "cam-toggle").click()
    wait.until(lambda d: d.execute_script("return document.getElementById('cam-video').videoWidth") > 0)
    ActionChains(browser).click_and_hold(browser.find_element(By.ID, "cam-hold")).pause(1.5).release().perform()
    status = browser.find_element(By.ID, "upload-status")
    wait.until(lambda d: status.get_attribute("data-added") is not None)
    added = int(status.get_attribute("data-added"))
    stored = sorted((root / "desk" / "data" / "me").iterdir())
    assert 4 <= added <= 10 and len(stored) == added, (added, stored)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .thumb")) == added)
    _shot(browser, tmp_path / "studio-webcam.png", not_blank)
    browser.find_element(By.ID, "cam-toggle").click()
    assert not browser.find_element(By.ID, "cam-video").is_displayed()

    # import an archive from the server's disk: two classes of real photos, followed to its end on the page
    found = photos(tmp_path / "photos")
    archive = tmp_path / "more.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in CLASSES:
            for path in found[name][:6]:
                tar.add(path, arcname=f"more/{name}/{path.name}")
    browser.find_element(By.ID, "import-path").send_keys(str(archive))
    browser.find_element(By.CSS_SELECTOR, "#import-form button").click()
    box = browser.find_element(By.ID, "import-status")
    wait.until(lambda d: box.get_attribute("data-state") == "done")
    assert box.get_attribute("data-added") == "12" and "12 photos added" in box.text
    chips = "#class-list .class-chip"
    wait.until(lambda d: {c.get_attribute("data-class") for c in d.find_elements(By.CSS_SELECTOR, chips)}
               == {"me", *CLASSES})
    assert all(len(list((root / "desk" / "data" / name).iterdir())) == 6 for name in CLASSES)
    # files copied into the folders from outside: the health check shows them, and one click trashes one
    data = root / "desk" / "data"
    (data / CLASSES[0] / "broken.jpg").write_text("not a photo")
    first = sorted((data / CLASSES[0]).glob("*.jpg"))[0]
    (data / CLASSES[1] / "copy.jpg").write_bytes(first.read_bytes())
    browser.find_element(By.ID, "run-check").click()
    check = browser.find_element(By.ID, "check-result")
    wait.until(lambda d: check.get_attribute("data-ok") is not None)
    shown = {f.get_attribute("data-path") for f in check.find_elements(By.CSS_SELECTOR, ".figure")}
    assert shown == {f"{CLASSES[0]}/{first.name}", f"{CLASSES[1]}/copy.jpg", f"{CLASSES[0]}/broken.jpg"}, shown
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", check)
    _shot(browser, tmp_path / "studio-check.png", not_blank)
    check.find_element(By.CSS_SELECTOR, f'.figure[data-path="{CLASSES[0]}/broken.jpg"] button.delete').click()
    wait.until(lambda d: (root / "desk" / ".trash" / "images" / CLASSES[0] / "broken.jpg").is_file())
    assert not (data / CLASSES[0] / "broken.jpg").exists()
    browser.find_element(By.ID, "import-path").clear()
    browser.find_element(By.ID, "import-path").send_keys("photos/relative")
    browser.find_element(By.CSS_SELECTOR, "#import-form button").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "is not absolute" in browser.find_element(By.ID, "error-text").text
