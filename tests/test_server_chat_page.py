"""The chat page at `/`, driven in a real headless chromium (Debian's
`chromium` and `chromium-driver`, through Selenium): type a question, see
the answer stream in with tokens/s, stop a long reply and go on talking."""
import shutil
import signal
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="the page test needs selenium "
                                                            "(the `test` extra)")
pytest.importorskip("fastapi", reason="the server needs the `server` extra")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serverproc import ServerProcess  # noqa: E402


def _browser_paths():
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no chromium and chromedriver on PATH (Debian: apt-get install chromium "
                    "chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def server(smollm2_path):
    proc = ServerProcess("--model", str(smollm2_path), "--model_alias", "smol")
    yield proc
    assert proc.stop() == -signal.SIGTERM, proc.log()


@pytest.fixture(scope="module")
def page(server):
    browser, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.get(f"{server.url}/")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def ask(driver, question, temperature, max_tokens):
    for field, value in (("temperature", temperature), ("max_tokens", max_tokens)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(str(value))
    driver.find_element(By.ID, "prompt").send_keys(question)
    driver.find_element(By.ID, "send").click()


def replies(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")


# Records every text the last reply shows, as the page changes it.
WATCH_REPLIES = """
window.replyTexts = [];
new MutationObserver(() => {
  const all = document.querySelectorAll('.msg.assistant');
  const text = all.length ? all[all.length - 1].textContent : '';
  if (text && text !== window.replyTexts[window.replyTexts.length - 1]) window.replyTexts.push(text);
}).observe(document.getElementById('messages'), {childList: true, subtree: true,
                                                 characterData: true});
"""


def test_a_question_streams_an_answer(page):
    page.execute_script(WATCH_REPLIES)
    ask(page, "What is the capital of France? Answer in English.", 0, 24)
    wait(page, lambda d: replies(d) and not d.find_element(By.ID, "send").get_attribute(
        "disabled"))
    assert "Paris" in replies(page)[-1].text
    texts = page.execute_script("return window.replyTexts")
    assert len(texts) > 3, "the answer appeared at once instead of streaming"
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))   # it grew piece by piece
    assert "tokens/s" in page.find_element(By.ID, "stats").text
    assert [m.text for m in page.find_elements(By.CSS_SELECTOR, ".msg.user")] == [
        "What is the capital of France? Answer in English."]


def test_stop_a_reply_and_go_on(page, server):
    ask(page, "Write a very long story about a dragon.", 0.7, 1500)
    wait(page, lambda d: len(replies(d)) == 2 and len(replies(d)[-1].text) > 20)
    page.find_element(By.ID, "stop").click()
    wait(page, lambda d: not d.find_element(By.ID, "send").get_attribute("disabled"))
    stopped = replies(page)[-1].text
    assert stopped.endswith("stopped")
    assert "(stopped)" in page.find_element(By.ID, "stats").text
    time.sleep(0.5)
    assert replies(page)[-1].text == stopped   # nothing more arrives
    wait(page, lambda d: "cancelled (client gone or server stopping)" in server.log(), 10)

    # the conversation goes on, with the stopped reply in it
    ask(page, "What is the capital of France? Answer in English.", 0, 8)
    wait(page, lambda d: len(replies(d)) == 3 and not d.find_element(
        By.ID, "send").get_attribute("disabled"))
    assert replies(page)[-1].text
    assert len(page.find_elements(By.CSS_SELECTOR, ".msg.user")) == 3


def test_api_docs_render_without_internet(page, server):
    """/docs draws its operations from scripts the server itself serves (this
    machine reaches no CDN); the chat page is reloaded afterwards."""
    try:
        page.get(f"{server.url}/docs")
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
        paths = {e.text.strip() for e in page.find_elements(By.CSS_SELECTOR,
                                                            ".opblock-summary-path")}
        assert {"/v1/completions", "/v1/chat/completions", "/v1/embeddings"} <= paths
    finally:
        page.get(f"{server.url}/")
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
