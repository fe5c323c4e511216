"""End to end in headless Chromium: the real server, the real page, a real slider drag."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

import lab_ui

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
    log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
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
        try:
            yield url
        except AssertionError as err:  # the page shows an exception's message; the server log has its trace
            tail = Path(log.name).read_text(errors="replace")[-6000:]
            raise AssertionError(f"{err}\n--- server log (end) ---\n{tail}") from None
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        Path(log.name).unlink(missing_ok=True)


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


def _wait_for_legend(page, text: str) -> str:
    """Charts render one by one: wait until the one named by `text` is drawn, not just any chart."""
    page.wait_for_function(
        "t => [...document.querySelectorAll('.js-plotly-plot .legendtext')].some(e => e.textContent.includes(t))",
        arg=text, timeout=60_000)
    return _legend(page)


def test_lesson_bits_slider_changes_the_chart(server, browser_page):
    page = browser_page
    page.goto(server, timeout=120_000)
    _settle(page)
    page.get_by_role("link", name=re.compile("Symmetric vs asymmetric")).first.click()
    page.wait_for_url(re.compile(r"/symmetric"))
    _settle(page)
    assert "symmetric grid (256 levels)" in _wait_for_legend(page, "levels)")  # the lesson opens at 8 bits

    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(4):
        thumb.press("ArrowLeft")
    _wait_for_legend(page, "16 levels")
    _settle(page)
    assert "asymmetric grid (16 levels)" in _legend(page)
    assert "sym_bits=4" in page.url  # the view is in the address, so the link can be shared
    assert page.locator("[data-testid='stException']").count() == 0


def test_deep_link_on_fresh_page_restores_state(server, browser_page):
    page = browser_page
    page.goto(f"{server}/symmetric?layer=encoder.layer.0.output.dense&sym_tensor=input&sym_bits=3", timeout=120_000)
    _settle(page)
    assert "(8 levels)" in _wait_for_legend(page, "levels)")
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


def _key_class(key: str) -> str:
    """The CSS class Streamlit's frontend gives a keyed element (every other character becomes '-')."""
    return ".st-key-" + re.sub(r"[^a-zA-Z0-9_-]", "-", key)


def test_a_check_reveals_the_measured_answer_and_counts_it(server, browser_page):
    """Predict, then reveal, as a learner clicks: the graded verdict and the page's progress line."""
    from playwright.sync_api import expect

    from quantlab.io import models
    from quantlab.lessons import checks, intro

    weight = models.load_tensor(models.ModelSource.embedded(), f"{models.DEFAULT_LAYER}.weight")
    item = checks.largest_code(intro.by_hand(weight, 0))
    wrong = "+8"  # INT4 has no code +8: never the measured answer
    context = browser_page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{server}/intro", timeout=120_000)
    _settle(page)
    page.locator(_key_class(f"check:{item.key}")).get_by_text(wrong, exact=True).click()
    _settle(page)
    page.locator(_key_class(f"reveal:{item.key}")).get_by_role("button").click()
    verdict = page.locator("[data-testid='stAlert']").filter(has_text="Measured:")
    expect(verdict).to_contain_text(f"Measured: {item.answer} (you said {wrong})", timeout=60_000)
    _settle(page)
    asked = page.get_by_text("Predict first:", exact=True).count()
    assert asked >= 2
    expect(page.get_by_text(re.compile("Checks on this page:"))).to_have_text(
        f"Checks on this page: 1 of {asked} answered, 0 right.", timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    context.close()


def test_a_room_opening_every_lesson_at_once_on_a_fresh_server(browser_page):
    """Sessions run in parallel threads: first loads of the model, activations and configs race."""
    with _streamlit_server() as url:
        context = browser_page.context.browser.new_context(viewport={"width": 1200, "height": 900})
        pages = [context.new_page() for _ in lab_ui.LESSONS]
        for page, lesson in zip(pages, lab_ui.LESSONS):
            page.goto(f"{url}/{lesson.url}", wait_until="commit", timeout=120_000)
        for page, lesson in zip(pages, lab_ui.LESSONS):
            _settle(page)
            page.wait_for_timeout(500)
            _settle(page)
            errors = [e.inner_text()[:2000] for e in page.locator("[data-testid='stException']").all()]
            assert not errors, (lesson.url, errors)
            assert lesson.title in page.locator("h1").first.inner_text()
        context.close()



# -- shared links, widget by widget -------------------------------------------------------------
# Per lesson: a link with several non-default controls (value in the URL -> what the widget shows,
# labels coming from format_func), then one control changed by a click: (key, how, what to click,
# the URL value it must write). tests/app/test_links.py covers every control in AppTest; this
# checks that a real browser shows what the link says and writes what a click changes.
LINKS = {
    "formats": ({"fmt_value": ("0.1", 0.1), "fmt_logx": ("1", True),
                 "fmt_gran": ("channel", "per-channel weight / per-token activation"),
                 "fmt_params": ("13.5", 13.5),
                 "layer": ("encoder.layer.1.attention.self.query",
                           lab_ui.layer_label("encoder.layer.1.attention.self.query"))},
                ("fmt_params", "step_up", None, "14.0", 14.0)),
    "symmetric": ({"sym_bits": ("3", 3), "sym_tensor": ("input", "input activation"),
                   "sym_mode": ("asymmetric", "asymmetric"), "sym_log": ("0", False)},
                  ("sym_mode", "button", "symmetric", "symmetric", "symmetric")),
    # (a layer change here would recompute every candidate of a 1536-wide layer: minutes on a loaded
    # 2-core CI machine; the layer's link is covered by the Compare and Why-and-what entries)
    "granularity": ({"gran_custom": ("64", 64), "gran_metric": ("weights", "weights"),
                     "gran_heat_g": ("64", 64), "gran_sym": ("0", False)},
                    ("gran_custom", "step_up", None, "65", 65)),
    "storage": ({"storage_arch": ("llama-3.1-8b", "llama-3.1-8b (config only)"),
                 "storage_scheme": ("w4a16-asym", "W4A16 asym g128"), "storage_g": ("64", 64),
                 "storage_claims_arch": ("qwen2.5-7b", "qwen2.5-7b")},
                ("storage_claims_arch", "radio", "llama-3.1-8b", "llama-3.1-8b", "llama-3.1-8b")),
    "clipping": ({"clip_bits": ("4", 4), "clip_ratio": ("0.6", 0.6), "clip_pct": ("99.99", 99.99),
                  "clip_eval": ("science", "science"), "clip_obs": ("mse", "MSE search"),
                  "clip_sentences": ("10", 10)},
                 ("clip_obs", "radio", "percentile", "percentile", "percentile")),
    "outliers": ({"out_mode": ("w8a8", "W8A8 (dynamic per-token)"), "out_alpha": ("0.8", 0.8),
                  "out_smooth": ("1", True), "out_heat": ("running", "running model")},
                 ("out_awq", "radio", "W3A16 g128", "w3a16", "W3A16 g128")),
    "kv_cache": ({"kv_arch": ("mistral-7b", "mistral-7b"), "kv_batch": ("16", 16),
                  "kv_unit": ("GB", "GB (10⁹ bytes)"), "kv_head": ("3", 3)},
                 ("kv_weights", "select", "W4A16 g128", "w4a16", "W4A16 g128")),
    "compare": ({"cmp_schemes": (["w4a16", "w8a16"], ["W4A16 g128", "W8A16"]),
                 "cmp_target": ("llama-3.1-8b", "llama-3.1-8b"), "layer": ("encoder.layer.1.output.dense",) * 2},
                ("cmp_target", "select", "mistral-7b", "mistral-7b", "mistral-7b")),
    "speed": ({"speed_shape": ("4096x4096", "K=4096 × N=4096"),
               "speed_methods": (["bf16", "w4a16"], ["bf16 cuBLAS (F.linear)", "quantlab W4A16 g128"]),
               "speed_m": ("64", 64)},
              ("speed_origin", "select", "Architecture: llama-3.1-8b", "llama-3.1-8b",
               "Architecture: llama-3.1-8b")),
    "intro": ({"intro_row": ("7", 7)}, ("layer", "select", "encoder.layer.0.output.dense",
                                          "encoder.layer.0.output.dense", "encoder.layer.0.output.dense")),
    "gptq": ({"gptq_eval": ("code", "code"), "gptq_calib": ("general", "general")},
             ("gptq_groups", "radio", "dynamic", "dynamic", "dynamic (scales as each group is reached)")),
    "choose": ({"ch_hw": ("ampere", "NVIDIA Ampere (A100, A10, RTX 30)"), "ch_batch": ("64", 64)},
               ("ch_priority", "radio", "Maximum compression", "compression", "Maximum compression")),
}

# What a keyed widget shows, read from the DOM the way a learner sees it: the slider's thumb
# label, the checked radio option's label, the pressed segment, the switch state, the selectbox
# text, the number field, the multiselect's tags. `.st-key-<key>` is Streamlit's class for a key.
SHOWN_JS = """keys => Object.fromEntries(keys.map(key => {
  const root = document.querySelector(`.st-key-${key}`);
  if (!root) return [key, "<missing>"];
  const q = s => root.querySelector(s);
  const texts = s => [...root.querySelectorAll(s)].map(e => e.innerText.trim());
  let v = "<unknown widget>";
  if (q("[data-testid='stSlider']")) v = q("[data-testid='stSliderThumbValue']").innerText.trim();
  else if (q("[data-testid='stRadio']")) {
    const c = q("input[type=radio]:checked");
    v = c && c.closest("label").innerText.trim();
  }
  else if (q("[data-testid='stButtonGroup']")) v = texts("button[aria-checked='true']").join("|");
  else if (q("[data-testid='stCheckbox']")) v = q("input[type=checkbox]").checked;
  else if (q("[data-testid='stMultiSelect']")) {
    v = [...root.querySelectorAll("[data-tag] span[title]")].map(s => s.title);  // the tags, full text
  }
  else if (q("[data-testid='stNumberInput']")) v = q("input").value;
  else if (q("[data-testid='stSelectbox']")) v = q("input[role=combobox]").value;
  return [key, v];
}))"""
# The page is done when the script is idle, every expected widget is drawn (not the skeleton the
# frontend shows while a widget's code loads, which a fresh context fetches anew) and nothing is stale.
READY_JS = """keys => !!document.querySelector("[data-testid='stApp'][data-test-script-state='notRunning']")
  && keys.every(k => document.querySelector(`.st-key-${k}`)
                     && !document.querySelector(`.st-key-${k} [data-testid='stSkeleton']`))
  && !document.querySelector("[data-stale='true']")"""
READY_PARTS_JS = """keys => ({
  script: document.querySelector("[data-testid='stApp']")?.getAttribute("data-test-script-state"),
  missing: keys.filter(k => !document.querySelector(`.st-key-${k}`)),
  loading: keys.filter(k => document.querySelector(`.st-key-${k} [data-testid='stSkeleton']`)),
  stale: [...document.querySelectorAll("[data-stale='true']")].map(e => e.innerText.slice(0, 80)),
  exceptions: [...document.querySelectorAll("[data-testid='stException']")].map(e => e.innerText.slice(0, 200))})"""


def _same(shown, expected) -> bool:
    # numbers are compared as numbers: a number field shows 13.50 for 13.5, a slider 0.60 for 0.6
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            return abs(float(shown) - expected) < 1e-9
        except (TypeError, ValueError):
            return False
    return shown == expected


def _open_fresh(browser, url: str, expected: dict[str, object]):
    """`url` in a new browser context (no cookies, no session), once the app has finished running."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url, timeout=120_000)
    _wait_ready(page, list(expected))
    _assert_shown(page, expected, url)
    return context, page


def _wait_ready(page, keys: list[str]) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(READY_JS, arg=keys, timeout=180_000)
    except PlaywrightTimeout:  # say which part of "ready" never came
        state = page.evaluate(READY_PARTS_JS, keys)
        pytest.fail(f"{page.url} not ready after 180 s: {state}")
    _settle(page)


def _assert_shown(page, expected: dict[str, object], url: str) -> None:
    """Every widget in `expected` shows its value. Polled for a while: on a loaded machine a widget
    that was drawn can fall back to its loading skeleton for seconds while other frontend code
    loads; a value that never comes fails with what the DOM shows."""
    for _ in range(60):
        shown = page.evaluate(SHOWN_JS, list(expected))
        wrong = {k: (shown[k], v) for k, v in expected.items() if not _same(shown[k], v)}
        if not wrong:
            break
        page.wait_for_timeout(500)
    html = {k: page.evaluate("k => document.querySelector(`.st-key-${k}`)?.innerText", k) for k in wrong}
    assert not wrong, f"{url}: widget shows (DOM, URL) {wrong}; text there: {html}"
    assert page.locator("[data-testid='stException']").count() == 0, url


def _click(page, key: str, how: str, target: str | None) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    widget = page.locator(f".st-key-{key}")
    if how == "radio":
        widget.locator("[data-testid='stRadioOption']").filter(has_text=target).click()
    elif how == "button":
        widget.get_by_role("radio", name=target, exact=True).click()
    elif how == "step_up":
        widget.locator("[data-testid='stNumberInputStepUp']").click()
    elif how == "select":
        # the open list closes if the frontend re-mounts the widget meanwhile (a lazily loaded
        # component arriving on a loaded machine): open it again rather than fail
        option = page.get_by_role("option", name=target, exact=True)
        for _ in range(3):
            widget.locator("input[role=combobox]").click()
            try:
                option.click(timeout=20_000)
                return
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        pytest.fail(f"option {target!r} of {key} never became clickable")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("lesson", [lesson.url for lesson in lab_ui.LESSONS])  # a new lesson needs a LINKS entry
def test_a_shared_link_shows_its_values_and_a_click_writes_a_new_link(server, browser_page, lesson):
    controls, (key, how, target, url_value, shown_value) = LINKS[lesson]
    browser = browser_page.context.browser
    url = f"{server}/{lesson}?" + urlencode({k: v for k, (v, _) in controls.items()}, doseq=True)
    context, page = _open_fresh(browser, url, {k: shown for k, (_, shown) in controls.items()})

    _click(page, key, how, target)
    page.wait_for_function("([k, v]) => new URL(location.href).searchParams.getAll(k).includes(v)",
                           arg=[key, url_value], timeout=120_000)
    _wait_ready(page, [key])
    assert url_value in parse_qs(urlparse(page.url).query)[key], page.url
    assert _same(page.evaluate(SHOWN_JS, [key])[key], shown_value), page.url
    link = page.url
    context.close()

    # the address after the click is a link too: a new visitor sees the clicked value
    context, _ = _open_fresh(browser, link, {**{k: shown for k, (_, shown) in controls.items()}, key: shown_value})
    context.close()
