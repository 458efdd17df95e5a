"""``eyegc serve`` in a real browser: Debian's headless Chromium, driven by Selenium.

Nothing is downloaded at run time: the browser and its driver are Debian's packages
(``scripts/test.sh`` installs them), and Selenium Manager is kept offline. Without them the test
is skipped, except under CI, where a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from eyegc.common.inference import predict_folder
from eyegc.common.registry import get_task
from eyegc.common.report.overlays import display_factor, display_image
from eyegc.common.serve.app import create_app
from eyegc.common.serve.predictions import PredictionService, load_choices
from PIL import Image
from pypdf import PdfReader
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

TASK = "drac22-task1"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
WAIT_S = 120


def _browser_missing() -> str | None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    return f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)" if missing else None


@pytest.fixture(scope="module")
def server_url(drac22_run: Path) -> Iterator[str]:
    """The app on a free loopback port, served by uvicorn in a thread for the module's tests."""
    app = create_app(PredictionService(load_choices([drac22_run]), "cpu"), 8 * 2**20)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[webdriver.Chrome, Path]]:
    """Headless Chromium that saves downloads into a folder of the test's own."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch a browser or a driver
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def _wait(driver: webdriver.Chrome, condition: Callable, seconds: float = WAIT_S):
    return WebDriverWait(driver, seconds).until(condition)


def _downloaded(folder: Path, suffix: str) -> Path:
    """The finished download with that suffix (Chromium writes ``.crdownload`` until it is complete)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix)]
        if done and not any(p.name.endswith(".crdownload") for p in folder.iterdir()):
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} download in {folder}: {sorted(p.name for p in folder.iterdir())}")


def _upload(driver: webdriver.Chrome, url: str, image: Path) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.find_element(By.ID, "model").get_attribute("value"))
    driver.find_element(By.ID, "file").send_keys(str(image))
    driver.find_element(By.ID, "predict").click()


def test_the_page_predicts_an_upload_and_offers_what_eyegc_predict_writes(
    server_url: str, browser: tuple, drac22_run: Path, drac22_data: Path, tmp_path: Path
) -> None:
    driver, downloads = browser
    plugin = get_task(TASK)
    image = plugin.list_cases(drac22_data, "test")[0].image
    _upload(driver, server_url, image)
    _wait(driver, expected_conditions.visibility_of_element_located((By.ID, "result")))
    layers = driver.find_elements(By.CSS_SELECTOR, "#overlay img.layer")
    assert [e.get_attribute("id") for e in layers] == [f"layer-{c.key}" for c in plugin.classes]
    assert _wait(driver, lambda d: d.execute_script("return document.getElementById('base').naturalWidth")) == 1024
    assert image.name in driver.find_element(By.ID, "timing").text

    first = plugin.classes[0].key
    driver.find_element(By.ID, f"toggle-{first}").click()
    assert not driver.find_element(By.ID, f"layer-{first}").is_displayed()
    driver.find_element(By.ID, f"toggle-{first}").click()
    assert driver.find_element(By.ID, f"layer-{first}").is_displayed()
    driver.execute_script(
        "const o = document.getElementById('opacity'); o.value = 80; o.dispatchEvent(new Event('input'));"
    )
    assert driver.find_element(By.ID, f"layer-{first}").value_of_css_property("opacity") == "0.8"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "serve.png"))

    driver.find_element(By.ID, "download-prediction").click()
    zipped = _downloaded(downloads, ".zip")
    with zipfile.ZipFile(zipped) as archive:
        offered = {name: archive.read(name) for name in archive.namelist()}
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(image, one / image.name)
    predict_folder(plugin, [drac22_run], one, tmp_path / "predicted", tta="flip", device="cpu")
    predicted = tmp_path / "predicted"
    assert offered == {p.relative_to(predicted).as_posix(): p.read_bytes() for p in predicted.rglob("*") if p.is_file()}

    driver.find_element(By.ID, "download-report").click()
    [page] = PdfReader(_downloaded(downloads, ".pdf")).pages
    shown = np.asarray(Image.open(io.BytesIO(page.images[0].data)).convert("RGB"))
    expected = display_image(plugin.read_image(image), display_factor((1024, 1024)))
    # matplotlib's PDF writer stores an image's rows bottom-up and draws them with a flipping matrix
    assert np.array_equal(shown[::-1], expected)  # the page shows the uploaded image, pixel for pixel


def test_a_bad_upload_shows_its_message_on_the_page(server_url: str, browser: tuple, tmp_path: Path) -> None:
    driver, _ = browser
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    _upload(driver, server_url, notes)
    error = _wait(driver, expected_conditions.visibility_of_element_located((By.ID, "error")))
    assert error.text.startswith("notes.txt: not an image type")
    assert not driver.find_element(By.ID, "result").is_displayed()
