"""The built site in a real browser: headless Chromium driven by Selenium.

    make book book-test      (or: .venv/bin/python -m pytest -q book/tests)

Serves _build/html on a local port and opens every page of the table of contents:
each loads without SEVERE console errors (a missing script, a failed request, a
JavaScript exception), every image has decoded (naturalWidth > 0), MathJax has typeset
the equations, saved widget views have been rendered into DOM elements by the vendored
widget manager, and the search page finds a word. Screenshots of every page go to
_build/screenshots/ (CI keeps them as artifacts).

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them when missing);
CHROMIUM / CHROMEDRIVER override their paths.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return pages


def widget_views(page: str) -> int:
    """How many widget views the page's notebook saved (0 for a Markdown page)."""
    path = ROOT / f"{page}.ipynb"
    if not path.exists():
        return 0
    nb = json.loads(path.read_text())
    return sum(WIDGET_VIEW in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
               for o in c.get("outputs", []))


def has_math(page: str) -> bool:
    for suffix in (".md", ".ipynb"):
        path = ROOT / f"{page}{suffix}"
        if path.exists():
            return "$$" in path.read_text()
    return False


PAGES = toc_pages()


@pytest.fixture(scope="module")
def site():
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML} has no built site: run `make book` first")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def start_chromium(*extra_args: str):
    """Headless Chromium at 1280 px with its console logged; `extra_args` are more switches."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.fail("the browser test needs Chromium and its driver: `apt-get install chromium chromium-driver` "
                    "(Debian), or set CHROMIUM and CHROMEDRIVER to their paths")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--hide-scrollbars", *extra_args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return driver


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 20.0, what: str = "a condition"):
    """Poll a JavaScript expression until it is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{driver.current_url}: timed out waiting for {what} ({script})")


def severe_console_messages(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_and_renders(site, browser, page):
    browser.get_log("browser")  # start from an empty console
    browser.get(f"{site}/{page}.html")
    wait_for(browser, "document.readyState === 'complete'", what="the page to load")
    title = browser.execute_script("return document.querySelector('main h1, article h1')?.textContent || ''")
    assert title.strip(), f"{page}: no heading rendered"

    if has_math(page):
        wait_for(browser, "document.querySelectorAll('mjx-container').length > 0", what="MathJax to typeset")
        assert not browser.execute_script("return document.querySelectorAll('mjx-merror').length"), \
            f"{page}: MathJax reported an error in an equation"

    views = widget_views(page)
    if views:
        # the vendored html-manager replaces each saved view's <script> with live DOM
        rendered = wait_for(browser, "document.querySelectorAll('.jupyter-widgets, .widget-box, .lm-Widget').length",
                            what="widget views to render")
        assert rendered >= views, f"{page}: {views} saved widget views, only {rendered} widget elements rendered"

    # images: give lazy ones a chance, then every <img> must have decoded
    browser.execute_script("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; });")
    wait_for(browser, "Array.from(document.images).every(i => i.complete)", what="images to finish loading")
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src.slice(0, 80))")
    assert not broken, f"{page}: images that did not render: {broken}"

    browser.save_screenshot(str(SHOTS / f"{page.replace('/', '__')}.png"))
    errors = severe_console_messages(browser)
    assert not errors, f"{page}: console errors:\n" + "\n".join(errors)


def test_chapter_figures_are_images(site, browser):
    """A chapter's figures reach the page as decoded PNGs of a real size."""
    browser.get(f"{site}/notebooks/05_sliding_window.html")
    wait_for(browser, "document.readyState === 'complete'", what="the page to load")
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('.cell_output img')).map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) >= 3 and all(w > 200 and h > 100 for w, h in sizes), sizes


def test_attention_mask_explorer_renders_its_controls_and_figure(site, browser):
    """Chapter 5's explorer: its labelled controls and the SVG of the mask, drawn by its ES module
    through the widget manager (book/tests/test_explorers.py drives it)."""
    browser.get(f"{site}/notebooks/05_sliding_window.html")
    root = '[data-explorer="attention_mask"]'
    wait_for(browser, f"document.querySelectorAll('{root} [data-control]').length >= 6", what="the explorer's controls")
    labels = browser.execute_script(f"return Array.from(document.querySelectorAll('{root} label')).map(e => e.textContent)")
    for expected in ("sequence length T", "window W", "layers N", "sinks", "causal"):
        assert any(expected in label for label in labels), f"no control labelled {expected!r}: {labels}"
    cells = wait_for(browser, f"document.querySelectorAll('{root} svg.mask rect[data-t]').length", what="the mask")
    assert cells > 0
    element = browser.find_element("css selector", root)
    browser.execute_script("arguments[0].scrollIntoView()", element)
    element.screenshot(str(SHOTS / "attention_mask_explorer.png"))
    assert not severe_console_messages(browser)


def test_search_finds_pages(site, browser):
    browser.get(f"{site}/search.html?q=RMSNorm")
    results = wait_for(browser, "document.querySelectorAll('#search-results ul.search li, ul.search li').length",
                       timeout=30, what="search results")
    assert results >= 2, f"searching RMSNorm found {results} pages"
    links = browser.execute_script("return Array.from(document.querySelectorAll('ul.search li a')).map(a => a.href)")
    assert any("02_rmsnorm" in link for link in links), links
    browser.save_screenshot(str(SHOTS / "search.png"))
    assert not severe_console_messages(browser)
