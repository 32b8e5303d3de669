"""report.html and the demo in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver (.ci/run installs both when missing). Screenshots go to each test's temporary folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import easy_vqa
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.report_checks import sections_of_a_self_contained_page
from tests.helpers.train_command import FAST, ROOT, run_train
from vqa.inspection.attention import explain
from vqa.inspection.predict import top_answers
from vqa.model.loading import load_checkpoint

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)
QUESTION = "what shape is in the image?"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, environment: dict[str, str]) -> Path:
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    result = run_train([*FAST, "report=true", f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1300,1400")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request the page makes
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """The URLs the browser requested since the last call (Chrome's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def rendered(driver: webdriver.Chrome, image: object) -> bool:
    return bool(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image))


def test_report_page_renders_offline(trained_run: Path, browser: webdriver.Chrome, tmp_path: Path) -> None:
    page = trained_run / "report.html"
    requested_urls(browser)  # start the log here
    browser.get(page.as_uri())
    headings = [heading.text for heading in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == [
        "Summary",
        "Learning curves",
        "Accuracy per answer type and question type",
        "Baselines and the shuffled-image check",
        "Sample predictions",
    ]
    images = browser.find_elements(By.TAG_NAME, "img")
    # The learning curves, the two per-type bar charts and the six gallery overlays.
    assert len(images) == 9 and all(rendered(browser, image) for image in images)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".gallery .card.wrong")) == 6  # four steps: nothing right
    assert sections_of_a_self_contained_page(page.read_text())
    assert all(url.startswith(("file://", "data:")) for url in requested_urls(browser))
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert Image.open(tmp_path / "report.png").size[0] > 0


def shows_image(component: str) -> Callable[[webdriver.Chrome], bool]:
    """A wait condition: the component (a CSS selector) shows a loaded image. Gradio replaces the element as values
    arrive, so each check looks it up again."""
    return lambda driver: any(
        rendered(driver, image) for image in driver.find_elements(By.CSS_SELECTOR, f"{component} img")
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the demo exited: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not answer at {url} in {timeout:.0f} s: {log.read_text()[-3000:]}")


def test_demo_answers_a_typed_question_with_its_attention(
    trained_run: Path, browser: webdriver.Chrome, environment: dict[str, str], tmp_path: Path
) -> None:
    image_path = easy_vqa.get_test_image_paths()[0]
    model, processor = load_checkpoint(trained_run / "checkpoint", "cpu")
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    expected_answer = explain(model, processor, image, QUESTION).answer or "(empty)"
    expected_top = top_answers(model, processor, image, QUESTION, k=5)[0][0] or "(empty answer)"

    port, log = free_port(), tmp_path / "demo.log"
    command = [sys.executable, "-m", "vqa.inspection.demo", "--checkpoint", str(trained_run), "--port", str(port)]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_server(url, server, log)
        requested_urls(browser)
        browser.get(url)
        # Gradio replaces elements as values arrive: look each one up again rather than hold a stale one.
        wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,))
        try:
            question = wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "#question textarea"))
            browser.find_element(By.CSS_SELECTOR, "#image input[type=file]").send_keys(image_path)
            # The page's scripts read the upload, and a loaded machine may still be starting them: submit only once
            # the image shows (a submit without it gets the app's "upload an image" error instead of an answer).
            wait.until(shows_image("#image"))
            question.send_keys(QUESTION)
            browser.find_element(By.CSS_SELECTOR, "#submit").click()
            wait.until(shows_image("#overlay"))
            wait.until(lambda driver: "Greedy answer" in driver.find_element(By.CSS_SELECTOR, "#note").text)
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "demo_timeout.png"))
            raise AssertionError(
                f"the demo did not answer in time (screenshot {tmp_path / 'demo_timeout.png'}); its log: "
                f"{log.read_text()[-2000:]}"
            ) from None
        assert f"Greedy answer: {expected_answer};" in browser.find_element(By.CSS_SELECTOR, "#note").text
        assert expected_top in browser.find_element(By.CSS_SELECTOR, "#answers").text
        words = browser.find_element(By.CSS_SELECTOR, "#words").text
        assert "shape" in words and "%" in words
        browser.save_screenshot(str(tmp_path / "demo.png"))
        local = (url, "data:", "blob:")
        assert [url for url in requested_urls(browser) if not url.startswith(local)] == []
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "127.0.0.1" in log.read_text()
