"""End to end in headless Chromium: the real server, the real page, a real slider drag."""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    # CI installs Debian's chromium; elsewhere a missing browser skips instead of failing.
    pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"), reason="needs /usr/bin/chromium"),
]


@contextmanager
def _streamlit_server():
    """`streamlit run app.py` on a free port, as a user starts it; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.25)
        else:
            pytest.fail("streamlit did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def server():
    with _streamlit_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _settle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=120_000)


def _legend(page) -> str:
    return page.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot .legendtext')].map(e => e.textContent).join(' | ')")


def test_lesson_bits_slider_changes_the_chart(server, browser_page):
    page = browser_page
    page.goto(server, timeout=120_000)
    _settle(page)
    page.get_by_role("link", name=re.compile("Symmetric vs asymmetric")).first.click()
    page.wait_for_url(re.compile(r"/symmetric"))
    _settle(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .legendtext').length > 0", timeout=60_000)
    assert "symmetric grid (16 levels)" in _legend(page)

    thumb = page.get_by_role("slider").first
    thumb.focus()
    thumb.press("ArrowRight")
    thumb.press("ArrowRight")
    page.wait_for_function(
        "[...document.querySelectorAll('.js-plotly-plot .legendtext')].some(e => e.textContent.includes('64 levels'))",
        timeout=60_000,
    )
    _settle(page)
    assert "asymmetric grid (64 levels)" in _legend(page)
    assert "bits=6" in page.url  # the view is in the address, so the link can be shared
    assert page.locator("[data-testid='stException']").count() == 0


def test_deep_link_on_fresh_page_restores_state(server, browser_page):
    page = browser_page
    page.goto(f"{server}/symmetric?layer=encoder.layer.0.output.dense&tensor=input+activation&bits=3", timeout=120_000)
    _settle(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .legendtext').length > 0", timeout=60_000)
    assert "(8 levels)" in _legend(page)
    sidebar = page.locator("[data-testid='stSidebar']").inner_text()
    assert "encoder.layer.0.output.dense" in sidebar


def test_bad_upload_is_one_line_and_the_lesson_stays(server, browser_page, tmp_path):
    page = browser_page
    page.goto(f"{server}/symmetric", timeout=120_000)
    _settle(page)
    page.locator("[data-testid='stSidebar']").get_by_text("Upload", exact=True).click()
    _settle(page)
    bogus = tmp_path / "weights.safetensors"
    bogus.write_bytes(b"\x80\x04\x95 this is a pickle, not safetensors")
    page.locator("[data-testid='stSidebar'] input[type='file']").set_input_files(str(bogus))
    page.wait_for_selector("[data-testid='stSidebar'] [data-testid='stAlert']", timeout=60_000)
    _settle(page)
    alert = page.locator("[data-testid='stSidebar'] [data-testid='stAlert'] [data-testid='stMarkdownContainer']")
    message = alert.first.inner_text().strip()
    assert "not a safetensors file" in message and "\n" not in message
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Symmetric vs asymmetric" in page.locator("h1").first.inner_text()


def test_a_room_opening_every_lesson_at_once_on_a_fresh_server(browser_page):
    """Sessions run in parallel threads: first loads of the model, activations and configs race."""
    import lab_ui

    with _streamlit_server() as url:
        context = browser_page.context.browser.new_context(viewport={"width": 1200, "height": 900})
        pages = [context.new_page() for _ in lab_ui.LESSONS]
        for page, lesson in zip(pages, lab_ui.LESSONS):
            page.goto(f"{url}/{lesson.url}", wait_until="commit", timeout=120_000)
        for page, lesson in zip(pages, lab_ui.LESSONS):
            _settle(page)
            page.wait_for_timeout(500)
            _settle(page)
            assert page.locator("[data-testid='stException']").count() == 0, lesson.url
            assert lesson.title in page.locator("h1").first.inner_text()
        context.close()
