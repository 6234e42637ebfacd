"""The studio at scale (issue 21): 3,500 real photos through the upload API, and a 10,000-photo class grid.

A real `cnnlab studio` process on a free loopback port, in a fresh projects folder, driven as the page
drives it:

1. upload: the Imagenette subset (../shared/datasets/imagenette-224, 300 train + 50 val photos a class,
   extracted: `--imagenette DIR` with DIR/train/<class>/ and DIR/val/<class>/) as `POST
   /api/projects/P/classes/C/images` multipart batches of the server's own file limit, as studio.js
   sends them; photos per second, and the server process's resident memory before and after;
2. import: CIFAR-10's 10,000 test JPEGs put in one class by `POST /api/projects/P/import` (a folder on
   the server's disk); seconds to the job's end;
3. training: the studio's training (recipe fast, 10 epochs, 64 px) against `cnnlab train` with the same
   flags, 4 rounds, the order alternating: each run's train_seconds;
4. grid: in headless Chromium (Debian's chromium and chromium-driver), the page opened on that
   10,000-photo class: milliseconds from the click on the class to its first page of 120 names laid out
   and every thumbnail on the first screen of the grid decoded, the first time (thumbnails made on the
   server) and again (served from its cache);
   and the server's answer for a page of 120 names at the start and the end of the class.

    .venv/bin/python benchmarks/studio_scale.py --imagenette /tmp/imnet/imagenette-224 \\
        --cifar-archive ../shared/datasets/cifar10-jpg/cifar10-jpg.tar.gz --json benchmarks/results/studio-scale.json
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

import report
from cnnlab.studio.jobs import TrainSettings

PAGE = 120  # studio.js asks for pages of 120 names
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def start_studio(folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "studio", "--dir", str(folder), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    sys.exit("the studio did not start within 60 s")


def upload(client: httpx.Client, pid: int, imagenette: Path) -> dict:
    limits = client.get("/api/settings").json()["limits"]
    client.post("/api/projects", json={"name": "photos"}).raise_for_status()
    classes = sorted(p.name for p in (imagenette / "train").iterdir() if p.is_dir())
    for name in classes:
        client.post("/api/projects/photos/classes", json={"name": name}).raise_for_status()
    before = rss_mb(pid)
    started, sent, added, peak = time.perf_counter(), 0, 0, before
    for name in classes:
        files = sorted((imagenette / "train" / name).iterdir()) + sorted((imagenette / "val" / name).iterdir())
        batch: list[Path] = []
        for path in files + [None]:  # type: ignore[list-item]
            if path is not None and len(batch) < limits["max_files"] and \
                    sum(p.stat().st_size for p in batch) + path.stat().st_size < 0.9 * limits["max_bytes"]:
                batch.append(path)
                continue
            if batch:
                parts = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch]
                answer = client.post(f"/api/projects/photos/classes/{name}/images", files=parts)
                answer.raise_for_status()
                sent, added = sent + len(batch), added + answer.json()["added"]
                peak = max(peak, rss_mb(pid))
            batch = [path] if path is not None else []
    seconds = time.perf_counter() - started
    return {"photos": sent, "added": added, "seconds": round(seconds, 2), "photos_per_second": round(sent / seconds, 1),
            "batch_files": limits["max_files"], "server_rss_mb": {"before": before, "peak": peak,
                                                                   "after": rss_mb(pid)}}


def import_folder(client: httpx.Client, source: Path) -> dict:
    client.post("/api/projects", json={"name": "grid"}).raise_for_status()
    started = time.perf_counter()
    job = client.post("/api/projects/grid/import", json={"path": str(source)}).json()
    name = job["id"].split("/", 1)[1]
    while job["state"] == "running":
        time.sleep(0.2)
        job = client.get(f"/api/projects/grid/imports/{name}").json()
    seconds = time.perf_counter() - started
    return {"files": job["total"], "added": job["added"], "state": job["state"], "seconds": round(seconds, 2),
            "photos_per_second": round(job["total"] / seconds, 1)}


def training(client: httpx.Client, projects: Path, epochs: int, rounds: int = 4) -> dict:
    """The studio's one-click training against `cnnlab train` with the same flags on the same photos, the order
    alternating by round: each run's own train_seconds (metrics.json: data decoding is not in it) and the
    thread decisions it recorded. The studio's job is followed as the page follows it (GET /api/jobs)."""
    import json

    settings = {"recipe": "fast", "epochs": epochs, "image_size": 64}
    data = projects / "photos" / "data"
    flags = TrainSettings(**settings).flags()  # what the studio passes to `cnnlab train` for these settings
    found: dict[str, list] = {"studio": [], "cli": []}
    threads: dict[str, list] = {"studio": [], "cli": []}

    def studio_run() -> Path:
        job = client.post("/api/projects/photos/train", json=settings).json()
        while job["state"] in ("queued", "running"):
            time.sleep(0.5)
            job = next(j for j in client.get("/api/jobs").json()["jobs"] if j["run"] == job["run"])
        return projects / "photos" / "runs" / job["run"]

    def cli_run(round_: int) -> Path:
        mine = projects.parent / f"cli-run-{round_}"
        subprocess.run([sys.executable, "-m", "cnnlab", "train", str(data), *flags, "--run-dir", str(mine), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        return mine

    for round_ in range(rounds):
        for side in (("studio", "cli") if round_ % 2 == 0 else ("cli", "studio")):
            run = studio_run() if side == "studio" else cli_run(round_)
            found[side].append(round(json.loads((run / "metrics.json").read_text())["train_seconds"], 2))
            records = json.loads((run / "history.json").read_text()).get("threads") or []  # one per phase
            threads[side].append([f"{d['threads']}: {d['reason'][:40]}" for r in records for d in r["decisions"]])
    return {"settings": settings, "studio_train_seconds": found["studio"], "cli_train_seconds": found["cli"],
            "thread_decisions": threads,
            "ratio_of_medians": round(statistics.median(found["studio"]) / statistics.median(found["cli"]), 3)}


def names_ms(client: httpx.Client, offset: int) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        client.get("/api/projects/grid/classes/all/images", params={"offset": offset, "limit": PAGE}).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def grid_in_chromium(url: str) -> dict:
    """Milliseconds from the click on the 10,000-photo class to its first page of thumbnails decoded, twice."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    # the thumbnails are lazy images: the page loads those on screen, so the grid is brought to the top of the
    # window (as the user scrolls to it) and every thumbnail then on screen must be decoded
    shown = ("const all = [...document.querySelectorAll('#grid img')]; if (all.length < 120) return false;"
             "document.getElementById('grid').scrollIntoView({block: 'start'});"
             "const seen = all.filter(i => i.getBoundingClientRect().top < innerHeight);"
             "return seen.length > 0 && seen.every(i => i.complete && i.naturalWidth > 0) && seen.length;")
    found = {}
    try:
        for when in ("cold", "warm"):
            driver.get(url + "/")
            wait = WebDriverWait(driver, 120, poll_frequency=0.01)
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
            driver.find_element(By.CSS_SELECTOR, '#project-list [data-project="grid"]').click()
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-class") == "a-first")
            chip = driver.find_element(By.CSS_SELECTOR, '#class-list [data-class="all"]')
            started = time.perf_counter()
            chip.click()
            visible = wait.until(lambda d: d.execute_script(shown))
            found[when] = round((time.perf_counter() - started) * 1000, 1)
            found["thumbnails_on_screen"] = visible
    finally:
        driver.quit()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenette", type=Path, required=True, help="the extracted imagenette-224 folder")
    parser.add_argument("--cifar-archive", type=Path, required=True, help="cifar10-jpg.tar.gz (its test/ split)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--train-epochs", type=int, default=10, help="epochs of each training run compared")
    args = parser.parse_args()
    record = {"machine": report.machine(thread_policy="the studio server's own")}
    with tempfile.TemporaryDirectory() as scratch:
        process, url = start_studio(Path(scratch) / "projects")
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                record["upload"] = upload(client, process.pid, args.imagenette)
                print("upload:", record["upload"], flush=True)
                record["training"] = training(client, Path(scratch) / "projects", args.train_epochs)
                print("training:", record["training"], flush=True)
                flat = Path(scratch) / "cifar-test" / "all"
                flat.mkdir(parents=True)
                with tarfile.open(args.cifar_archive) as tar:
                    for member in tar:
                        if member.isfile() and member.name.startswith("test/"):
                            klass, photo = member.name.split("/")[1:3]
                            (flat / f"{klass}-{photo}").write_bytes(tar.extractfile(member).read())
                record["import"] = import_folder(client, flat.parent)
                # a class that sorts first: the project page opens it, so the first click on "all" is cold
                client.post("/api/projects/grid/classes", json={"name": "a-first"}).raise_for_status()
                print("import:", record["import"], flush=True)
                names = {"start": names_ms(client, 0), "end": names_ms(client, 10_000 - PAGE)}
                record["grid"] = {"class_images": len(list(flat.iterdir())), "page_of_names_ms": names,
                                  "first_screen_in_chromium_ms": grid_in_chromium(url)}
                print("grid:", record["grid"], flush=True)
                record["server_rss_mb_end"] = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    if args.json:
        report.write_json(args.json, record)


if __name__ == "__main__":
    main()
